//! Putting frames on a lab wire and counting what arrives: AF_PACKET
//! sockets opened inside a lab namespace, every loop bounded in count and
//! time.
use std::{
    io,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use mvnet::{
    netns::NetNs,
    sys::{net::if_index, packet::PacketSocket},
};

/// A raw AF_PACKET socket bound to one device.
struct WireSocket {
    sock: PacketSocket,
    ifindex: i32,
}

impl WireSocket {
    /// Opens a raw AF_PACKET socket bound to `iface` (in the calling
    /// thread's namespace), receiving `protocol` (0 = nothing).
    fn open(iface: &str, protocol: u16) -> Result<Self> {
        let Some(ifindex) = if_index(iface) else {
            bail!("interface {iface} not found in the lab namespace");
        };
        let ifindex = ifindex as i32;
        let sock = PacketSocket::new(protocol)?;
        sock.bind(ifindex, protocol)?;
        Ok(WireSocket { sock, ifindex })
    }

    /// Sends one frame. The skb's protocol is taken from the frame's
    /// Ethertype (as the kernel's own stack would set it): with protocol 0,
    /// frames leaving through a macvlan skip the parent's egress hooks.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let proto = if frame.len() >= 14 {
            u16::from_be_bytes([frame[12], frame[13]])
        } else {
            0
        };
        let mut dst = [0u8; 6];
        if frame.len() >= 6 {
            dst.copy_from_slice(&frame[..6]);
        }
        let n = self.sock.send_to(frame, self.ifindex, proto, dst)?;
        if n != frame.len() {
            Err(io::Error::other("short send"))
        } else {
            Ok(())
        }
    }
}

/// How to send a batch of frames.
pub struct SendPlan<'a> {
    pub frames: &'a [Vec<u8>],
    /// Times to send each frame (the frames go out round-robin).
    pub rounds: u64,
    /// Give up after this long.
    pub deadline: Duration,
    /// Frames sent between two calls of `settled`.
    pub burst: u64,
}

/// Sends `plan` out of `iface` in `ns`. After every burst, `settled(sent)`
/// is polled until it returns true (the receiver has accounted for `sent`
/// frames) so that no queue overflows and every frame is counted; pass a
/// closure returning `true` to send open-loop. Returns frames sent.
pub fn send(
    ns: &NetNs,
    iface: &str,
    plan: &SendPlan<'_>,
    mut settled: impl FnMut(u64) -> bool + Send,
) -> Result<u64> {
    let iface = iface.to_owned();
    ns.run(move || -> Result<u64> {
        let sock = WireSocket::open(&iface, 0)?;
        let start = Instant::now();
        let total = plan.rounds * plan.frames.len() as u64;
        let mut sent = 0u64;
        while sent < total {
            let frame = &plan.frames[(sent % plan.frames.len() as u64) as usize];
            match sock.send(frame) {
                Ok(()) => sent += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                Err(e) => return Err(e).context(format!("sending on {iface}")),
            }
            if sent.is_multiple_of(plan.burst.max(1)) || sent == total {
                while !settled(sent) {
                    if start.elapsed() > plan.deadline {
                        bail!(
                            "receiver accounted for fewer than {sent} frames within {:?}",
                            plan.deadline
                        );
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            if start.elapsed() > plan.deadline {
                bail!("sent {sent} of {total} frames within {:?}", plan.deadline);
            }
        }
        Ok(sent)
    })?
}

/// Traffic that keeps flowing until told to stop: bursts of `burst`
/// frames, `gap` apart, at most `max` frames or for `deadline`.
pub struct Paced {
    pub burst: u64,
    pub gap: Duration,
    pub max: u64,
    pub deadline: Duration,
}

/// Sends `frame` out of `iface` in `ns` as `pace` says until `stop` is set
/// (or its bounds are reached); frames the device has no room for
/// (ENOBUFS) are not sent again. Returns the frames sent.
pub fn send_until(
    ns: &NetNs,
    iface: &str,
    frame: &[u8],
    pace: &Paced,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<u64> {
    let iface = iface.to_owned();
    ns.run(move || -> Result<u64> {
        let sock = WireSocket::open(&iface, 0)?;
        let start = Instant::now();
        let mut sent = 0;
        while sent < pace.max
            && start.elapsed() < pace.deadline
            && !stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            for _ in 0..pace.burst.min(pace.max - sent) {
                match sock.send(frame) {
                    Ok(()) => sent += 1,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                    Err(e) => return Err(e).context(format!("sending on {iface}")),
                }
            }
            std::thread::sleep(pace.gap);
        }
        Ok(sent)
    })?
}

/// Sends `frame` `count` times out of `iface` in `ns`, once each: a frame
/// the egress path drops (a TC program returning SHOT, which AF_PACKET
/// reports as ENOBUFS) is counted as dropped, never sent again. Use it where
/// drops are the behaviour under test; [`send`] retries ENOBUFS, which is
/// right for a full veth ring. Returns (accepted, dropped).
pub fn send_each_once(ns: &NetNs, iface: &str, frame: &[u8], count: u64) -> Result<(u64, u64)> {
    send_each_once_with(ns, iface, frame, count, false)
}

/// As [`send_each_once`], with PACKET_QDISC_BYPASS set on the socket when
/// `bypass_qdisc`: the kernel then transmits through `dev_direct_xmit`,
/// which skips the device's qdisc and TC egress hook (what a process with
/// CAP_NET_RAW can do to dodge a device's egress program).
pub fn send_each_once_with(
    ns: &NetNs,
    iface: &str,
    frame: &[u8],
    count: u64,
    bypass_qdisc: bool,
) -> Result<(u64, u64)> {
    let iface = iface.to_owned();
    let frame = frame.to_vec();
    ns.run(move || -> Result<(u64, u64)> {
        let sock = WireSocket::open(&iface, 0)?;
        if bypass_qdisc {
            sock.sock
                .set_qdisc_bypass()
                .context("PACKET_QDISC_BYPASS")?;
        }
        let (mut ok, mut dropped) = (0, 0);
        for _ in 0..count {
            match sock.send(&frame) {
                Ok(()) => ok += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => dropped += 1,
                Err(e) => return Err(e).context(format!("sending on {iface}")),
            }
        }
        Ok((ok, dropped))
    })?
}

/// Counts frames arriving on `iface` in `ns` that `filter` accepts, until
/// `want` have arrived or `timeout` passes. Returns the count.
pub fn capture(
    ns: &NetNs,
    iface: &str,
    want: u64,
    timeout: Duration,
    filter: impl Fn(&[u8]) -> bool + Send,
) -> Result<u64> {
    capture_with_vlan(ns, iface, want, timeout, move |frame, _| filter(frame))
}

/// A VLAN tag the kernel took out of a captured frame's bytes (RX VLAN
/// offload, or untagging before the tap) and reported in PACKET_AUXDATA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrippedTag {
    pub tpid: u16,
    pub vid: u16,
}

/// Like [`capture`], but also hands `filter` the tag the kernel stripped
/// from the frame, if any. A tag still in the bytes stays in the bytes.
pub fn capture_with_vlan(
    ns: &NetNs,
    iface: &str,
    want: u64,
    timeout: Duration,
    filter: impl Fn(&[u8], Option<StrippedTag>) -> bool + Send,
) -> Result<u64> {
    capture_when_ready(ns, iface, want, timeout, filter, || {})
}

/// Like [`capture_with_vlan`], calling `ready` once the socket is bound
/// and receiving: frames sent after that are all seen, however slowly
/// this thread was scheduled (a fixed sleep before sending is not enough
/// on a loaded machine).
pub fn capture_when_ready(
    ns: &NetNs,
    iface: &str,
    want: u64,
    timeout: Duration,
    filter: impl Fn(&[u8], Option<StrippedTag>) -> bool + Send,
    ready: impl FnOnce() + Send,
) -> Result<u64> {
    let iface = iface.to_owned();
    ns.run(move || -> Result<u64> {
        const ETH_P_ALL: u16 = 0x0003;
        let sock = WireSocket::open(&iface, ETH_P_ALL)?;
        let _ = sock.sock.set_auxdata();
        let _ = sock.sock.set_recv_timeout(Duration::from_millis(100));
        // A large buffer, so a burst is queued rather than dropped while
        // this loop catches up (root may exceed rmem_max with *FORCE).
        let _ = sock.sock.set_recv_buffer_force(16 << 20);
        ready();
        let start = Instant::now();
        let mut buf = vec![0u8; 65536];
        let mut count = 0;
        while count < want && start.elapsed() < timeout {
            let (n, aux) = match sock.sock.recv(&mut buf) {
                Ok((n, aux)) if n > 0 => (n, aux),
                _ => continue,
            };
            let tag = aux.map(|a| StrippedTag {
                tpid: a.tpid,
                vid: a.tci & 0x0fff,
            });
            if filter(&buf[..n], tag) {
                count += 1;
            }
        }
        Ok(count)
    })?
}
