//! Putting frames on a lab wire and counting what arrives: AF_PACKET
//! sockets opened inside a lab namespace, every loop bounded in count and
//! time.
use std::{
    ffi::CString,
    io,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use mvnet::netns::NetNs;

struct PacketSocket {
    fd: libc::c_int,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a raw AF_PACKET socket bound to `iface` (in the calling
    /// thread's namespace), receiving `protocol` (0 = nothing).
    fn open(iface: &str, protocol: u16) -> Result<Self> {
        let name = CString::new(iface)?;
        // SAFETY: valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            bail!("interface {iface} not found in the lab namespace");
        }
        let proto = protocol.to_be() as libc::c_int;
        // SAFETY: plain socket call.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        let sock = PacketSocket { fd, ifindex };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol.to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: addr is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("bind(AF_PACKET)");
        }
        Ok(sock)
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
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto.to_be();
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        if frame.len() >= 6 {
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        }
        // SAFETY: frame and addr are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else if n as usize != frame.len() {
            Err(io::Error::other("short send"))
        } else {
            Ok(())
        }
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
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
        let sock = PacketSocket::open(&iface, 0)?;
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
        let sock = PacketSocket::open(&iface, 0)?;
        if bypass_qdisc {
            const PACKET_QDISC_BYPASS: libc::c_int = 20;
            let one: libc::c_int = 1;
            // SAFETY: a valid option value of the right size.
            let rc = unsafe {
                libc::setsockopt(
                    sock.fd,
                    libc::SOL_PACKET,
                    PACKET_QDISC_BYPASS,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error()).context("PACKET_QDISC_BYPASS");
            }
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

// From <linux/if_packet.h>.
const PACKET_AUXDATA: libc::c_int = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

#[repr(C)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
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
    let iface = iface.to_owned();
    ns.run(move || -> Result<u64> {
        const ETH_P_ALL: u16 = 0x0003;
        let sock = PacketSocket::open(&iface, ETH_P_ALL)?;
        let one: libc::c_int = 1;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // A large buffer, so a burst is queued rather than dropped while
        // this loop catches up (root may exceed rmem_max with *FORCE).
        let rcvbuf: libc::c_int = 16 << 20;
        // SAFETY: valid option values of the right sizes.
        unsafe {
            libc::setsockopt(
                sock.fd,
                libc::SOL_PACKET,
                PACKET_AUXDATA,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
            libc::setsockopt(
                sock.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
            libc::setsockopt(
                sock.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &rcvbuf as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        let start = Instant::now();
        let mut buf = vec![0u8; 65536];
        let mut control = [0u64; 16];
        let mut count = 0;
        while count < want && start.elapsed() < timeout {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: zeroed msghdr is valid; pointers set below outlive the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: msg describes valid buffers.
            let n = unsafe { libc::recvmsg(sock.fd, &mut msg, 0) };
            if n <= 0 {
                continue;
            }
            let mut tag = None;
            // SAFETY: walking the control messages the kernel wrote into msg.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == PACKET_AUXDATA
                    {
                        let aux = std::ptr::read_unaligned(
                            libc::CMSG_DATA(cmsg) as *const TpacketAuxdata
                        );
                        if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                            let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                                aux.tp_vlan_tpid
                            } else {
                                0x8100
                            };
                            tag = Some(StrippedTag {
                                tpid,
                                vid: aux.tp_vlan_tci & 0x0fff,
                            });
                        }
                    }
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
            }
            if filter(&buf[..n as usize], tag) {
                count += 1;
            }
        }
        Ok(count)
    })?
}
