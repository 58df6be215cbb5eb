//! The source checks on endpoint devices: each endpoint's macvlan gets
//! `mvnet_tc_endpoint` on its TC egress, and ENDPOINT_DEVICES says what
//! that device (by ifindex) may send as.
//!
//! Ifindexes are per namespace, and a fresh container namespace numbers
//! its first device 2, so the ifindex alone would not tell two endpoints
//! of one root apart. `bpf_get_netns_cookie` would, but TC programs may
//! call it only from Linux 6.14 (the VM kernels are 6.1 and 6.12). So a
//! device is known by one of two keys ([`key`]):
//! * checked from a cls_bpf filter: its endpoint's slot, which the filter
//!   carries as its classid (`TCA_BPF_CLASSID`) and `cls_bpf_classify`
//!   hands the program in `skb->tc_classid` (on every kernel mvnet runs
//!   on: the VM tests' 6.1 and 6.12 as this host's 6.18). This
//!   covers the devices other runtimes number (CNI's macvlan plugin makes
//!   every sandbox's device in the sandbox: ifindex 2 each).
//! * checked through tcx (no classid there): its ifindex, which mvnet
//!   chooses when it creates the device ([`candidate`]): distinct slots of
//!   a root never share one, whatever the namespace, and a taken number
//!   (another root's endpoint in the same container, any other device) is
//!   skipped for the next candidate.
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
use macvlan_common::{device_key_of_classid, DEVICE_CLASSID_MAJOR, MAX_ENDPOINTS};
use rtnetlink::packet_route::tc::TcHandle;

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

/// The ENDPOINT_DEVICES keys endpoint `slot`'s devices get when mvnet
/// makes them ([`key`]): its candidates under tcx, its classid otherwise.
/// A device registered under any other key (one that existed before its
/// slot did, registered again by `restore`) is a stray, counted beside
/// the direct index (`macvlan_common::direct::FILL`).
pub fn own_keys(slot: u32) -> impl Iterator<Item = u32> {
    (0..CANDIDATES)
        .map(move |k| candidate(slot, k))
        .chain(std::iter::once(device_key_of_classid(slot_minor(slot))))
}

/// Whether `key` is one of [`own_keys`] of `slot`.
pub fn is_own_key(key: u32, slot: u32) -> bool {
    if slot >= MAX_ENDPOINTS {
        return false;
    }
    let candidate = key
        .checked_sub(IFINDEX_BASE)
        .is_some_and(|k| k % MAX_ENDPOINTS == slot && k / MAX_ENDPOINTS < CANDIDATES);
    candidate || key == device_key_of_classid(slot_minor(slot))
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
/// egress of device `ifindex` (named `ifname`, endpoint `slot`'s) in the
/// calling thread's namespace, through `hook`, in place of any endpoint
/// program attached before (see [`detach_all`]). Its identity is in
/// ENDPOINT_DEVICES under [`key`] already.
pub fn attach(
    dir: &Path,
    ifindex: u32,
    ifname: &str,
    hook: CheckHook,
    slot: u32,
) -> Result<(), DatapathError> {
    let path = dir.join(PROG_TC_ENDPOINT);
    detach_tcx(ifindex, ifname)?;
    if runs_from_tcx(hook) {
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
    let prog = sys::obj_get(&path).map_err(|e| {
        DatapathError::Pin(format!(
            "opening {}: {e}; run `mvnet restore`",
            path.display()
        ))
    })?;
    // The slot as the classid's minor: the program's key (see `key`).
    let classid = TcHandle {
        major: DEVICE_CLASSID_MAJOR,
        minor: slot_minor(slot),
    };
    crate::netlink::tc::add_egress_bpf_filter(ifindex, prog.as_fd(), KERNEL_NAME, classid).map_err(
        |e| {
            DatapathError::Pin(format!(
                "attaching the source checks to {ifname} (clsact egress): {e}"
            ))
        },
    )
}

/// Whether a check attached through `hook` runs from tcx on this kernel
/// (else from a cls_bpf filter).
fn runs_from_tcx(hook: CheckHook) -> bool {
    hook == CheckHook::Tcx && uses_tcx()
}

/// `slot` as a classid's minor (slots are below [`MAX_ENDPOINTS`], 2^16).
fn slot_minor(slot: u32) -> u16 {
    debug_assert!(slot < MAX_ENDPOINTS);
    slot as u16
}

/// The ENDPOINT_DEVICES key of device `ifindex`, endpoint `slot`'s, with
/// its check attached through `hook`: its ifindex under tcx, its slot
/// through the classid of its cls_bpf filter otherwise (see
/// `macvlan_common::DEVICE_KEY_CLASSID`), which no other device of the
/// root shares, whatever its namespace and ifindex.
pub fn key(hook: CheckHook, ifindex: u32, slot: u32) -> u32 {
    if runs_from_tcx(hook) {
        ifindex
    } else {
        device_key_of_classid(slot_minor(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slots_own_keys_are_its_candidates_and_classid_and_no_others() {
        for slot in [0, 1, 4095, MAX_ENDPOINTS - 1] {
            let own: Vec<u32> = own_keys(slot).collect();
            assert_eq!(own.len(), CANDIDATES as usize + 1);
            assert!(own.iter().all(|k| is_own_key(*k, slot)), "{slot}");
            assert!(own.contains(&candidate(slot, 0)));
            assert!(own.contains(&(macvlan_common::DEVICE_KEY_CLASSID | slot)));
            // Another slot's keys, a kernel-numbered device (a sandbox's
            // first is 2), the candidate after the last.
            let other = (slot + 1) % MAX_ENDPOINTS;
            for k in own_keys(other).chain([2, 1, candidate(slot, CANDIDATES)]) {
                assert!(!is_own_key(k, slot), "{k:#x} for slot {slot}");
            }
        }
        assert!(!is_own_key(candidate(0, 0), MAX_ENDPOINTS));
    }
}
