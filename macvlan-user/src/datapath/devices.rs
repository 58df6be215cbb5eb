//! The source checks on endpoint devices: each endpoint's macvlan gets
//! `mvnet_tc_endpoint` on its TC egress, and ENDPOINT_DEVICES says what
//! that device (by ifindex) may send as.
//!
//! Ifindexes are per namespace, and a fresh container namespace numbers
//! its first device 2, so the ifindex alone would not tell two endpoints
//! of one root apart. `bpf_get_netns_cookie` would, but TC programs may
//! call it only from Linux 6.14 (the VM kernel is 6.1). So the controller
//! creates each endpoint device with an ifindex of its own choosing
//! ([`candidate`]): distinct slots of a root never share one, whatever the
//! namespace, and a taken number (another root's endpoint in the same
//! container, any other device) is skipped for the next candidate.
//!
//! Attaching costs no load and no pin: the program was loaded and pinned
//! with the classifier (`pinned::PROG_TC_ENDPOINT`), and the attachment
//! lives as long as the device. It takes one of two forms ([`CheckHook`]):
//! * **tcx** (Linux 6.6+), for mvnet's own endpoints: detaching it takes
//!   `CAP_BPF` and `CAP_NET_ADMIN` in the initial user namespace, so a
//!   container that administers its own namespace cannot remove it. But
//!   every tcx attach swaps the device's program array and waits, under the
//!   RTNL lock, for a full RCU grace period (`tcx_entry_sync` in
//!   `tcx_prog_attach`), so attaches serialise on grace periods: on 6.18
//!   (this machine, idle) 50 tcx attaches took 10.1 ms each, 29 ms under
//!   load. One per `run` or `connect` is affordable.
//! * **a cls_bpf filter on the device's clsact qdisc** (every kernel; the
//!   only form before 6.6), for endpoints mvnet adopts from another runtime
//!   (Docker, CNI), which come by the thousand in one `docker sync`: 50
//!   clsact qdiscs with a filter each took 0.2 ms per device (`tc -batch`),
//!   a 1000-endpoint sync in a fraction of a second instead of 10 to 30 s.
//!   Whoever administers the container's namespace (`CAP_NET_ADMIN` there,
//!   which that runtime's containers do not hold by default) can delete
//!   it; the device's frames then reach the parent unstamped, and its
//!   egress counts them spoofed and, under enforce, drops them (see
//!   `mvnet_tc_parent_egress`). Only bridge-mode frames to another
//!   endpoint of the same parent, which never pass the parent, go
//!   unchecked then.
use std::{os::fd::AsFd as _, path::Path};

use aya::{
    programs::{tc, SchedClassifier, TcAttachType},
    util::KernelVersion,
};
use macvlan_common::MAX_ENDPOINTS;

use super::{pinned::PROG_TC_ENDPOINT, sys, DatapathError};

/// First ifindex of endpoint devices: far above what the kernel hands out
/// (it counts up from 1 per namespace), below `i32::MAX`.
pub const IFINDEX_BASE: u32 = 0x6d76_0000;
/// Candidates tried per endpoint before giving up.
pub const CANDIDATES: u32 = 16;

/// The `k`-th candidate ifindex for the device of endpoint `slot`: equal
/// modulo [`MAX_ENDPOINTS`] to the slot, so two slots never meet.
pub const fn candidate(slot: u32, k: u32) -> u32 {
    IFINDEX_BASE + k * MAX_ENDPOINTS + slot
}

/// How a device's check is attached (see the module's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckHook {
    /// tcx where the kernel has it (6.6+), else a clsact filter.
    Tcx,
    /// A clsact filter on every kernel.
    Clsact,
}

/// Whether TC programs attach through tcx (6.6+).
fn uses_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// The endpoint program's name as the kernel keeps it (BPF_OBJ_NAME_LEN:
/// 15 characters).
const KERNEL_NAME: &str = "mvnet_tc_endpoi";

/// Detaches every endpoint program from TC egress of device `ifindex`
/// (`ifname`, calling thread's namespace), tcx or clsact: ones a
/// classifier whose pins are gone left behind, still checking against its
/// orphaned maps. Returns how many were attached.
pub fn detach_all(ifindex: u32, ifname: &str) -> Result<usize, DatapathError> {
    let n = detach_tcx(ifindex, ifname)?;
    Ok(n + detach_filters(ifname))
}

/// The tcx half of [`detach_all`].
fn detach_tcx(ifindex: u32, ifname: &str) -> Result<usize, DatapathError> {
    if !uses_tcx() {
        return Ok(0);
    }
    let name = macvlan_common::program_names::TC_ENDPOINT;
    let (_, programs) = SchedClassifier::query_tcx(ifname, TcAttachType::Egress)
        .map_err(|source| DatapathError::Program { name, source })?;
    let mut n = 0;
    for p in programs
        .iter()
        .filter(|p| p.name_as_str() == Some(KERNEL_NAME))
    {
        let fd = p
            .fd()
            .map_err(|source| DatapathError::Program { name, source })?;
        sys::prog_detach(ifindex, fd.as_fd(), sys::BPF_TCX_EGRESS).map_err(|e| {
            DatapathError::Pin(format!("detaching a stale source check from {ifname}: {e}"))
        })?;
        n += 1;
    }
    Ok(n)
}

/// The clsact half of [`detach_all`]: the filters are named as the pinned
/// program's kernel name (aya takes it from the program's info); none
/// attached is fine.
fn detach_filters(ifname: &str) -> usize {
    usize::from(tc::qdisc_detach_program(ifname, TcAttachType::Egress, KERNEL_NAME).is_ok())
}

/// Attaches the pinned endpoint program of the classifier in `dir` to TC
/// egress of device `ifindex` (named `ifname`) in the calling thread's
/// namespace, through `hook`, in place of any endpoint program attached
/// before (see [`detach_all`]).
pub fn attach(
    dir: &Path,
    ifindex: u32,
    ifname: &str,
    hook: CheckHook,
) -> Result<(), DatapathError> {
    let path = dir.join(PROG_TC_ENDPOINT);
    let name = macvlan_common::program_names::TC_ENDPOINT;
    detach_tcx(ifindex, ifname)?;
    if hook == CheckHook::Tcx && uses_tcx() {
        detach_filters(ifname);
        let prog = sys::obj_get(&path).map_err(|e| {
            DatapathError::Pin(format!(
                "opening {}: {e}; run `mvnet restore`",
                path.display()
            ))
        })?;
        return sys::prog_attach(ifindex, prog.as_fd(), sys::BPF_TCX_EGRESS).map_err(|e| {
            DatapathError::Pin(format!(
                "attaching the source checks to {ifname} (tcx egress): {e}"
            ))
        });
    }
    // Adding a qdisc to a device whose qlen is 0 makes it 1000 (seen on
    // 6.1 and 6.18): the clsact must not change what the device shows, so
    // its qlen goes back (0 on mvnet's endpoints, as on Docker's).
    let qlen = crate::sys::net::tx_queue_len(ifname)
        .map_err(|e| DatapathError::Pin(format!("reading the qlen of {ifname}: {e}")))?;
    // A qdisc made now has no filters to look for; EEXIST: the runtime or
    // an earlier attach made it, maybe with a stale check.
    if tc::qdisc_add_clsact(ifname).is_err() {
        detach_filters(ifname);
    }
    if crate::sys::net::tx_queue_len(ifname).ok() != Some(qlen) {
        crate::sys::net::set_tx_queue_len(ifname, qlen).map_err(|e| {
            DatapathError::Pin(format!("setting the qlen of {ifname} back to {qlen}: {e}"))
        })?;
    }
    let mut prog = SchedClassifier::from_pin(&path).map_err(|e| {
        DatapathError::Pin(format!(
            "opening {}: {e}; run `mvnet restore`",
            path.display()
        ))
    })?;
    let id = prog
        .attach_with_options(
            ifname,
            TcAttachType::Egress,
            tc::TcAttachOptions::Netlink(tc::NlOptions::default()),
        )
        .map_err(|source| DatapathError::AttachTc {
            iface: ifname.to_owned(),
            direction: "egress",
            source,
        })?;
    let link = prog
        .take_link(id)
        .map_err(|source| DatapathError::Program { name, source })?;
    // Dropping the link would delete the filter.
    std::mem::forget(link);
    Ok(())
}
