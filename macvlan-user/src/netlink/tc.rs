//! The one TC request aya's attach cannot make: a cls_bpf filter in
//! direct-action mode with a classid (`TCA_BPF_CLASSID`), which the
//! endpoint program reads back from `skb->tc_classid` to find its device's
//! identity (see `datapath::devices`).
//!
//! Synchronous, on a socket of its own, in the calling thread's namespace:
//! it runs where the device's check is attached, on a thread that has
//! entered the container's namespace (often inside another `run`), one
//! request and its ACK.
use std::os::fd::{AsRawFd as _, BorrowedFd};

use rtnetlink::{
    packet_core::{
        NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
    },
    packet_route::{
        tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
        RouteNetlinkMessage,
    },
    sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
};

use super::{NetlinkError, Result};

/// `ETH_P_ALL`: the filter sees every protocol.
const ETH_P_ALL: u16 = 0x0003;

/// Adds a cls_bpf filter running `prog` (named `name`, which is how
/// filters are found again) in direct-action mode, with classid `classid`,
/// to the egress of the clsact qdisc of device `ifindex` in the calling
/// thread's namespace. The kernel picks its priority and handle.
pub fn add_egress_bpf_filter(
    ifindex: u32,
    prog: BorrowedFd<'_>,
    name: &str,
    classid: TcHandle,
) -> Result<()> {
    let op = || format!("add the bpf filter {name} to the egress of link {ifindex}");
    let io = |e: std::io::Error| NetlinkError::Request {
        op: op(),
        message: e.to_string(),
        errno: e.raw_os_error(),
    };
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_EGRESS,
    };
    // Priority 0 (the kernel's choice), protocol in network order.
    msg.header.info = u32::from(TcHandle {
        major: 0,
        minor: ETH_P_ALL.to_be(),
    });
    msg.attributes.push(TcAttribute::Kind("bpf".to_owned()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog.as_raw_fd() as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_owned())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        TcOption::Bpf(TcFilterBpfOption::ClassId(classid)),
    ]));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewTrafficFilter(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
    socket.bind_auto().map_err(NetlinkError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(NetlinkError::Socket)?;
    socket.send(&buf, 0).map_err(io)?;
    loop {
        let (reply, _) = socket.recv_from_full().map_err(io)?;
        let mut offset = 0;
        while offset < reply.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..])
                .map_err(|e| NetlinkError::Request {
                    op: op(),
                    message: format!("cannot parse the kernel's answer: {e}"),
                    errno: None,
                })?;
            let len = msg.header.length as usize;
            if let NetlinkPayload::Error(e) = msg.payload {
                return match e.code {
                    None => Ok(()),
                    Some(code) => {
                        let errno = -code.get();
                        Err(NetlinkError::Request {
                            op: op(),
                            message: std::io::Error::from_raw_os_error(errno).to_string(),
                            errno: Some(errno),
                        })
                    }
                };
            }
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
        }
    }
}
