//! Kernel floors for the control-plane rows (issue 17 target 6, issue 16):
//! the netlink and BPF requests an attach or detach cannot do without,
//! made in process (no process started, one netlink connection per
//! namespace, mvnet's own netlink layer and its tcx attach), timed in the
//! same run as the rows they bound.
//!
//! * **make**: a macvlan of the lab's `eth0` made directly in the sandbox
//!   (RTM_NEWLINK with IFLA_NET_NS_FD), its IPv6 off (as on mvnet's and
//!   Docker's IPv4-only endpoints), an IPv4 address, up: what the reference
//!   plugin does too, less its processes.
//! * **make + tcx**: the same, with the source checks mvnet puts on its own
//!   endpoints' devices (`datapath::devices::attach` through tcx, the
//!   classifier's pinned program): `tcx_prog_attach` waits for a full RCU
//!   grace period under the RTNL lock (`tcx_entry_sync`).
//! * **delete**: RTM_DELLINK of the device, which returns after
//!   `unregister_netdevice_many` and `netdev_run_todo`'s `rcu_barrier`; with
//!   a tcx program on the device, `tcx_uninstall` waits for one more grace
//!   period first.
//!
//! A target below its floor cannot be met by any tool that leaves the
//! device made (or gone) when the command returns; the bench says so.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use mvnet::{
    datapath::devices::{self, CheckHook},
    model::MacvlanMode,
    netlink,
    netns::NetNs,
};

/// The interface name in the sandbox, as in every other row.
const IFNAME: &str = "eth0";

/// The ifindex of `eth0` in the calling thread's namespace (the lab's
/// host, where the parent is).
pub fn parent_index() -> Result<u32> {
    let link = netlink::run(None, |nl| async move { nl.require_link(IFNAME).await })
        .context("finding the lab's eth0")?;
    Ok(link.index)
}

/// Makes the floor's device in `ns` (see the module's text): from the
/// calling thread, which must be in the parent's namespace. With `checks`
/// (the classifier's pin directory), the device gets mvnet's tcx source
/// checks as endpoint `slot`. Returns the time it took.
pub fn make(
    ns: &NetNs,
    parent: u32,
    addr: Ipv4Addr,
    checks: Option<(&Path, u32)>,
) -> Result<Duration> {
    let t = Instant::now();
    let target = ns.clone();
    let mac = mvnet::ipam::random_mac();
    netlink::run(None, move |nl| async move {
        nl.add_macvlan_in(IFNAME, parent, MacvlanMode::Bridge, Some(mac), &target)
            .await
    })
    .with_context(|| format!("floor: macvlan in {}", ns.path().display()))?;
    let checks = checks.map(|(dir, slot)| (dir.to_owned(), slot));
    netlink::run(Some(ns), move |nl| async move {
        let link = nl.require_link(IFNAME).await?;
        if let Some((dir, slot)) = &checks {
            devices::attach(dir, link.index, IFNAME, CheckHook::Tcx, *slot).map_err(|e| {
                netlink::NetlinkError::Request {
                    op: "floor: tcx source checks".into(),
                    message: e.to_string(),
                    errno: None,
                }
            })?;
        }
        // In this thread's namespace, as mvnet writes it (through a procfs
        // of its own: the cheapest way the kernel has).
        let _ = mvnet::netns::write_net_sysctl(&format!("ipv6/conf/{IFNAME}/disable_ipv6"), "1");
        nl.add_address(link.index, IpAddr::V4(addr), 16).await?;
        nl.set_up(link.index).await
    })
    .with_context(|| format!("floor: plumbing eth0 in {}", ns.path().display()))?;
    Ok(t.elapsed())
}

/// Deletes the floor's device in `ns` (one RTM_DELLINK by name); the time
/// it took.
pub fn delete(ns: &NetNs) -> Result<Duration> {
    let t = Instant::now();
    let gone = netlink::run(Some(ns), |nl| async move { nl.delete_named(IFNAME).await })
        .with_context(|| format!("floor: deleting eth0 in {}", ns.path().display()))?;
    anyhow::ensure!(gone, "floor: no eth0 in {} to delete", ns.path().display());
    Ok(t.elapsed())
}
