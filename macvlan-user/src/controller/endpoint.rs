//! Plumbing one endpoint: a macvlan on the network's parent, moved into the
//! container's namespace, renamed, addressed, up, with a default route via
//! the gateway (none on internal networks).
use std::net::IpAddr;

use anyhow::{anyhow, Result};

use super::datapath::DeviceRegistration;
use crate::{
    model::{Endpoint, MacvlanMode, Network},
    netlink,
    netns::NetNs,
};

/// The alias (IFLA_IFALIAS) mvnet marks `ep`'s link with, so that it is
/// recognised as its own whatever its name.
pub fn mark(ep: &Endpoint) -> String {
    format!("{MARK_PREFIX}{}", ep.id)
}

/// Prefix of [`mark`].
pub const MARK_PREFIX: &str = "mvnet:";

/// The name `ep`'s link has between its creation and its rename to
/// `ep.ifname` (a crashed `run` or `connect` may leave it).
pub fn temp_name(ep: &Endpoint) -> String {
    format!("mvt{}", &ep.id[..10])
}

/// Creates `ep` in `ns`. On error the half-made link is removed.
///
/// The macvlan is created directly inside the
/// container's namespace (IFLA_NET_NS_FD on RTM_NEWLINK), as the CNI plugin
/// does: moving a link between namespaces afterwards costs an
/// `rcu_barrier()` in the kernel, most of an attach's time.
pub fn plumb(net: &Network, ep: &Endpoint, ns: &NetNs) -> Result<()> {
    let parent = net.parent.clone();
    let macvlan_mode = net.mode;
    // passthru takes over the parent's MAC whatever is asked (set after);
    // the others get the endpoint's.
    let mac = (net.mode != MacvlanMode::Passthru).then_some(ep.mac);
    let target = ns.clone();
    // Created under a temporary name, renamed inside the container: kernels
    // before ~6.11 look the new name up in the *creating* namespace, where
    // the parent itself may well be called eth0 (EEXIST).
    let tmp = temp_name(ep);
    let name = tmp.clone();
    // The source checks on the device identify it by an ifindex of ours.
    let registration = DeviceRegistration::of(net, ep)?;
    let indexes: Vec<Option<u32>> = match &registration {
        Some(r) => r.ifindex_candidates().map(Some).collect(),
        None => vec![None],
    };
    if indexes.is_empty() {
        return Err(anyhow!(
            "every ifindex mvnet would give {}'s device is taken by a device the classifier \
             already knows; remove the endpoint and connect it again, or run `mvnet restore`",
            ep.ifname
        ));
    }
    netlink::run(None, move |nl| async move {
        let parent_link = nl.link(&parent).await?.ok_or_else(|| {
            netlink::NetlinkError::LinkNotFound(format!(
                "{parent} (the parent of this network; recreate it or run `mvnet restore`)"
            ))
        })?;
        let mut result = Ok(());
        for index in indexes {
            result = nl
                .add_macvlan_at(&name, parent_link.index, macvlan_mode, mac, &target, index)
                .await;
            // Taken in the container (or, for the lookup the kernel does
            // first, in ours): the next candidate.
            match &result {
                Err(e) if matches!(e.errno(), Some(libc::EEXIST | libc::EBUSY)) => continue,
                _ => break,
            }
        }
        result
    })
    .map_err(|e| anyhow!(e))?;

    let ifname = ep.ifname.clone();
    let alias = mark(ep);
    let addrs: Vec<_> = ep
        .addresses()
        .map(|a| {
            let pool = net
                .pools
                .iter()
                .find(|p| p.config.subnet.contains(a))
                .expect("endpoint address comes from a pool");
            (a, pool.config.subnet.prefix(), pool.config.gateway)
        })
        .collect();
    let internal = net.internal;
    let ipv6 = net.enable_ipv6;
    let passthru = net.mode == MacvlanMode::Passthru;
    let endpoint_mac = ep.mac;
    netlink::run(Some(ns), move |nl| async move {
        let child = nl.require_link(&tmp).await?;
        let result = async {
            nl.rename_marked(child.index, &ifname, &alias).await?;
            if passthru {
                // The kernel gave the device its parent's MAC; the
                // endpoint's goes on it, and through it on the parent (as
                // Docker sets it), so the MAC on the wire is the one in
                // inspect and the classifier's table.
                nl.set_mac(child.index, endpoint_mac).await?;
            }
            if let Some(r) = &registration {
                r.register(child.index, &ifname)
                    .map_err(|e| netlink::NetlinkError::Request {
                        op: format!("source checks on {ifname}"),
                        message: format!("{e:#}"),
                        errno: None,
                    })?;
            }
            if !ipv6 {
                // As Docker does on IPv4-only networks: no IPv6 on the
                // endpoint, so no autoconfiguration, DAD or MLD traffic.
                // (Set before the link is up, in this thread's namespace.)
                let _ = crate::netns::write_net_sysctl(
                    &format!("ipv6/conf/{ifname}/disable_ipv6"),
                    "1",
                );
            }
            for (addr, prefix, _) in &addrs {
                nl.add_address(child.index, *addr, *prefix).await?;
            }
            // EADDRINUSE: a removed endpoint with this MAC is still being
            // deleted in the background (tombstone or namespace cleanup).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                match nl.set_up(child.index).await {
                    Err(e)
                        if e.errno() == Some(libc::EADDRINUSE)
                            && std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await
                    }
                    other => break other?,
                }
            }
            if !internal {
                for (_, _, gw) in &addrs {
                    if let Some(gw) = gw {
                        // The first network of a container provides its
                        // default route (as in Docker); later ones keep it.
                        match nl.add_default_route(child.index, *gw).await {
                            Err(e) if e.errno() == Some(libc::EEXIST) => {}
                            other => other?,
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = nl.delete(child.index).await;
        }
        result
    })
    .map_err(|e| anyhow!(e))
}

/// The endpoint whose gateways give a container its default routes, as
/// Docker's sandbox picks it: of the endpoints on networks that are not
/// internal and have a gateway for the endpoint's address, the one on the
/// network whose name sorts first (libnetwork orders a sandbox's endpoints
/// by network name). Its link name and gateways.
pub fn gateway_endpoint<'a>(
    endpoints: impl IntoIterator<Item = (&'a Network, &'a Endpoint)>,
) -> Option<(String, Vec<IpAddr>)> {
    let mut candidates: Vec<(&Network, &Endpoint, Vec<IpAddr>)> = endpoints
        .into_iter()
        .filter(|(net, _)| !net.internal)
        .map(|(net, ep)| (net, ep, gateways(net, ep)))
        .filter(|(_, _, gws)| !gws.is_empty())
        .collect();
    candidates.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    candidates
        .into_iter()
        .next()
        .map(|(_, ep, gws)| (ep.ifname.to_string(), gws))
}

/// The gateways of the pools `ep`'s addresses come from.
fn gateways(net: &Network, ep: &Endpoint) -> Vec<IpAddr> {
    ep.addresses()
        .filter_map(|a| {
            net.pools
                .iter()
                .find(|p| p.config.subnet.contains(a))
                .and_then(|p| p.config.gateway)
        })
        .collect()
}

/// Makes `ns`'s default routes (per family) go via `gateway`'s gateways on
/// its link, replacing what is there, and removes those of a family it
/// has no gateway for (as Docker's sandbox does when its gateway endpoint
/// changes). For namespaces mvnet owns.
pub fn set_default_routes(ns: &NetNs, gateway: Option<(String, Vec<IpAddr>)>) -> Result<()> {
    netlink::run(Some(ns), move |nl| async move {
        for change in default_route_changes(&nl, gateway.as_ref()).await? {
            match change {
                RouteChange::Set {
                    index: Some(index),
                    gateway,
                    ..
                } => nl.replace_default_route(index, gateway).await?,
                RouteChange::Set {
                    ifname,
                    index: None,
                    ..
                } => return Err(netlink::NetlinkError::LinkNotFound(ifname)),
                RouteChange::Remove { ipv6 } => nl.del_default_routes(ipv6).await?,
            }
        }
        Ok(())
    })
    .map_err(|e| anyhow!(e))
}

/// What [`set_default_routes`] would change in `ns`, one line per family
/// (e.g. "IPv4 via 10.0.0.1 dev eth1", "no IPv6 default route"); empty
/// when the routes are already those `gateway` gives. A gateway link that
/// is missing counts as a change (`restore --check` before it recreates
/// the link).
pub fn default_route_drift(
    ns: &NetNs,
    gateway: Option<(String, Vec<IpAddr>)>,
) -> Result<Vec<String>> {
    netlink::run(Some(ns), move |nl| async move {
        let changes = default_route_changes(&nl, gateway.as_ref()).await?;
        Ok(changes.iter().map(RouteChange::to_string).collect())
    })
    .map_err(|e| anyhow!(e))
}

/// One family's default route as it should become.
enum RouteChange {
    /// Via `gateway` on link `ifname` (`index`: None while it is missing).
    Set {
        ifname: String,
        index: Option<u32>,
        gateway: IpAddr,
    },
    /// None of this family.
    Remove { ipv6: bool },
}

impl std::fmt::Display for RouteChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let family = |v6: bool| if v6 { "IPv6" } else { "IPv4" };
        match self {
            RouteChange::Set {
                ifname, gateway, ..
            } => write!(
                f,
                "{} via {gateway} dev {ifname}",
                family(gateway.is_ipv6())
            ),
            RouteChange::Remove { ipv6 } => write!(f, "no {} default route", family(*ipv6)),
        }
    }
}

/// Compares the default routes of the namespace `nl` speaks to with those
/// `gateway` (link name, gateways) gives.
async fn default_route_changes(
    nl: &netlink::Netlink,
    gateway: Option<&(String, Vec<IpAddr>)>,
) -> netlink::Result<Vec<RouteChange>> {
    let index = match gateway {
        Some((ifname, _)) => nl.link(ifname).await?.map(|l| l.index),
        None => None,
    };
    let mut changes = Vec::new();
    for ipv6 in [false, true] {
        let want = gateway.and_then(|(ifname, gws)| {
            let gw = gws.iter().find(|g| g.is_ipv6() == ipv6)?;
            Some((ifname, *gw))
        });
        let have = nl.default_routes(ipv6).await?;
        match want {
            Some((ifname, gw)) if index.is_none() || have != [(index, Some(gw))] => {
                changes.push(RouteChange::Set {
                    ifname: ifname.clone(),
                    index,
                    gateway: gw,
                })
            }
            Some(_) => {}
            None if have.is_empty() => {}
            None => changes.push(RouteChange::Remove { ipv6 }),
        }
    }
    Ok(changes)
}

/// Brings `lo` up in a namespace mvnet made for a container, as Docker's
/// sandbox does: 127.0.0.1/8, and ::1 only when the network has IPv6
/// (Docker's `lo` has no IPv6 otherwise).
pub fn loopback_up(ns: &NetNs, ipv6: bool) -> Result<()> {
    netlink::run(Some(ns), move |nl| async move {
        if !ipv6 {
            // Before lo is up, so ::1 is never added (in this thread's
            // namespace).
            let _ = crate::netns::write_net_sysctl("ipv6/conf/lo/disable_ipv6", "1");
        }
        let lo = nl.require_link("lo").await?;
        nl.set_up(lo.index).await
    })
    .map_err(|e| anyhow!(e))
}

/// Prefix of the links earlier mvnet versions renamed a removed endpoint's
/// link to while a background reaper deleted it; [`delete_links`] and
/// `restore` still delete any they find.
pub const TOMBSTONE_PREFIX: &str = "mvd";

/// How long `stop`, `rm` and `network disconnect` wait for the kernel to
/// delete a container's links.
pub const LINK_DELETE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Deletes the links of `endpoints` (and tombstones of earlier versions)
/// in `ns`, the namespace of container `container`, and returns once the
/// kernel is done: the macvlans are gone from their
/// parents, so a passthru endpoint (or one with the same MAC) can be made
/// there at once. Deleting the namespace alone leaves that to the kernel's
/// background cleanup. An error names the links after `timeout`.
pub fn delete_links<'a>(
    container: &str,
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    ns: &NetNs,
    timeout: std::time::Duration,
) -> Result<()> {
    let names: Vec<String> = endpoints
        .into_iter()
        .map(|e| e.ifname.to_string())
        .collect();
    let (done, wait) = std::sync::mpsc::channel();
    let (ns, doomed) = (ns.clone(), names.clone());
    // RTM_DELLINK is answered once the device is unregistered, which waits
    // for every reference to it; a leaked one would block it for good.
    std::thread::spawn(move || {
        let result = netlink::run(Some(&ns), move |nl| async move {
            for l in nl.links().await? {
                if doomed.contains(&l.name) || l.name.starts_with(TOMBSTONE_PREFIX) {
                    // ENODEV: an earlier version's reaper deleted the
                    // tombstone meanwhile.
                    match nl.delete(l.index).await {
                        Err(e) if e.errno() == Some(libc::ENODEV) => {}
                        other => other?,
                    }
                }
            }
            Ok(())
        });
        let _ = done.send(result);
    });
    match wait.recv_timeout(timeout) {
        Ok(result) => result.map_err(|e| anyhow!(e)),
        Err(_) => Err(anyhow!(
            "the kernel has not finished deleting the links of container {container} ({}) \
             after {} s: something still holds a reference to them (`dmesg` shows \
             \"unregister_netdevice: waiting for\"); retry once it is done",
            names.join(", "),
            timeout.as_secs()
        )),
    }
}
