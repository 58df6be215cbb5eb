//! AF_PACKET sockets: one socket type on `OwnedFd` (bind, send, receive
//! with the kernel's PACKET_AUXDATA, options) and the TPACKET_V2 TX ring
//! mapped from it. Used by the lab wire and the pktgen fallback.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{fence, Ordering},
    time::Duration,
};

// From <linux/if_packet.h>.
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// `tp_status` of a TX ring slot: free for us to fill.
pub const TP_STATUS_AVAILABLE: u32 = 0;
/// `tp_status` of a TX ring slot: filled, for the kernel to send.
pub const TP_STATUS_SEND_REQUEST: u32 = 1;
/// `tp_status` of a TX ring slot: the kernel refused the frame.
pub const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): where a TX frame's bytes
/// start in its slot.
pub const TX_DATA_OFFSET: usize = 32;

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

#[repr(C)]
struct TpacketReq {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
}

/// A VLAN tag the kernel took out of a received frame's bytes (RX VLAN
/// offload, or untagging before the tap), as PACKET_AUXDATA reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuxTag {
    /// The TPID (0x8100 when the kernel did not report one).
    pub tpid: u16,
    /// The whole TCI.
    pub tci: u16,
}

fn cvt(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// A link-layer address on device `ifindex` for `protocol` (host order).
fn sockaddr(ifindex: i32, protocol: u16) -> libc::sockaddr_ll {
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    }
}

/// A raw AF_PACKET socket.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// A raw socket of the calling thread's namespace receiving `protocol`
    /// (an Ethertype in host order; 0 = nothing, 3 = ETH_P_ALL).
    pub fn new(protocol: u16) -> io::Result<PacketSocket> {
        let proto = protocol.to_be() as libc::c_int;
        // SAFETY: a plain socket call.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("socket(AF_PACKET): {e}")));
        }
        // SAFETY: a fresh fd the kernel just returned, owned by nobody else.
        Ok(PacketSocket {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Binds to device `ifindex`, receiving `protocol` (host order).
    pub fn bind(&self, ifindex: i32, protocol: u16) -> io::Result<()> {
        let addr = sockaddr(ifindex, protocol);
        // SAFETY: addr is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        cvt(rc, "bind(AF_PACKET)")
    }

    fn set_option<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` is a valid option value of its own size for
        // (`level`, `name`), as each caller below picks.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                std::mem::size_of::<T>() as u32,
            )
        };
        cvt(rc, "setsockopt")
    }

    /// Sends frames straight to the driver, past the qdisc.
    pub fn set_qdisc_bypass(&self) -> io::Result<()> {
        self.set_option(libc::SOL_PACKET, PACKET_QDISC_BYPASS, &(1 as libc::c_int))
    }

    /// Asks for PACKET_AUXDATA (the stripped VLAN tag) with each frame.
    pub fn set_auxdata(&self) -> io::Result<()> {
        self.set_option(libc::SOL_PACKET, PACKET_AUXDATA, &(1 as libc::c_int))
    }

    /// Makes `recv` return (EAGAIN) after `timeout` without a frame.
    pub fn set_recv_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        self.set_option(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
    }

    /// Sets the receive buffer to `bytes`, past rmem_max (root only).
    pub fn set_recv_buffer_force(&self, bytes: libc::c_int) -> io::Result<()> {
        self.set_option(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes)
    }

    /// Sends `frame` out of device `ifindex` with skb protocol `protocol`
    /// (host order) to link address `dst`. Returns the bytes sent.
    pub fn send_to(
        &self,
        frame: &[u8],
        ifindex: i32,
        protocol: u16,
        dst: [u8; 6],
    ) -> io::Result<usize> {
        let mut addr = sockaddr(ifindex, protocol);
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst);
        self.sendto(frame, &addr)
    }

    fn sendto(&self, data: &[u8], addr: &libc::sockaddr_ll) -> io::Result<usize> {
        // SAFETY: `data` and `addr` are valid for the given lengths (an
        // empty `data` is allowed: a TX ring flush).
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                0,
                (addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Receives one frame into `buf`; returns its length and the VLAN tag
    /// the kernel stripped from it, if any (needs [`Self::set_auxdata`]).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Option<AuxTag>)> {
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero
        // lengths); the fields set below point at buffers that outlive the
        // call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: msg describes valid buffers.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut tag = None;
        // SAFETY: walking the control messages the kernel wrote into
        // `control`, with the CMSG macros that keep within msg_controllen;
        // the auxdata payload is read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == PACKET_AUXDATA {
                    let aux =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const TpacketAuxdata);
                    if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                        let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                            aux.tp_vlan_tpid
                        } else {
                            0x8100
                        };
                        tag = Some(AuxTag {
                            tpid,
                            tci: aux.tp_vlan_tci,
                        });
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok((n as usize, tag))
    }
}

/// A TPACKET_V2 TX ring on a packet socket bound to one device: slots the
/// caller fills with frames, sent by [`TxRing::flush`].
pub struct TxRing {
    ring: *mut u8,
    len: usize,
    frame_size: usize,
    frames: usize,
    addr: libc::sockaddr_ll,
    // Dropped after the mapping (see Drop).
    sock: PacketSocket,
}

impl TxRing {
    /// A socket receiving nothing, with a ring of `frames` slots of
    /// `frame_size` bytes in blocks of `block_size`, bound to `ifindex`.
    pub fn open(ifindex: i32, frames: u32, frame_size: u32, block_size: u32) -> io::Result<TxRing> {
        let sock = PacketSocket::new(0)?;
        sock.set_option(libc::SOL_PACKET, PACKET_VERSION, &TPACKET_V2)
            .map_err(|e| io::Error::new(e.kind(), format!("PACKET_VERSION: {e}")))?;
        let req = TpacketReq {
            tp_block_size: block_size,
            tp_block_nr: frames * frame_size / block_size,
            tp_frame_size: frame_size,
            tp_frame_nr: frames,
        };
        sock.set_option(libc::SOL_PACKET, PACKET_TX_RING, &req)
            .map_err(|e| io::Error::new(e.kind(), format!("PACKET_TX_RING: {e}")))?;
        sock.bind(ifindex, 0)?;
        let len = (frames * frame_size) as usize;
        // SAFETY: a new shared mapping of the ring the kernel just set up
        // for this socket (no existing memory is touched).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                sock.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mmap of the TX ring: {e}"),
            ));
        }
        Ok(TxRing {
            ring: p.cast(),
            len,
            frame_size: frame_size as usize,
            frames: frames as usize,
            addr: sockaddr(ifindex, 0),
            sock,
        })
    }

    /// The start of slot `i` (taken modulo the ring).
    fn slot(&self, i: u64) -> *mut u8 {
        let offset = (i % self.frames as u64) as usize * self.frame_size;
        // SAFETY: `offset` is within the `len`-byte mapping.
        unsafe { self.ring.add(offset) }
    }

    /// The `tp_status` of slot `i`, as the kernel last wrote it.
    pub fn status(&self, i: u64) -> u32 {
        // SAFETY: tp_status is the first u32 of an aligned slot of the live
        // mapping, shared with the kernel: read it volatile.
        let s = unsafe { std::ptr::read_volatile(self.slot(i) as *const u32) };
        fence(Ordering::Acquire);
        s
    }

    /// Writes `frame` into slot `i` and marks it for sending.
    ///
    /// # Panics
    /// If the frame does not fit a slot (`frame_size - TX_DATA_OFFSET`).
    pub fn fill(&self, i: u64, frame: &[u8]) {
        assert!(frame.len() + TX_DATA_OFFSET <= self.frame_size);
        let p = self.slot(i);
        // SAFETY: the frame fits the slot (asserted); tp_len and tp_status
        // are at their tpacket2_hdr offsets (4 and 0), u32-aligned.
        unsafe {
            std::ptr::copy_nonoverlapping(frame.as_ptr(), p.add(TX_DATA_OFFSET), frame.len());
            std::ptr::write_volatile(p.add(4) as *mut u32, frame.len() as u32);
            fence(Ordering::Release);
            std::ptr::write_volatile(p as *mut u32, TP_STATUS_SEND_REQUEST);
        }
    }

    /// Asks the kernel to send every slot marked for sending; it returns
    /// once those it took are out of the ring.
    pub fn flush(&self) -> io::Result<()> {
        self.sock.sendto(&[], &self.addr).map(|_| ())
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once; the socket
        // (a field) closes after this.
        unsafe { libc::munmap(self.ring.cast(), self.len) };
    }
}
