//! Plumbing one endpoint: a macvlan on the network's parent, moved into the
//! container's namespace, renamed, addressed, up, with a default route via
//! the gateway (none on internal networks).
use anyhow::{anyhow, Result};

use crate::{
    model::{Endpoint, Mode, Network},
    netlink::{self, MacvlanMode},
    netns::NetNs,
};

fn mode(m: Mode) -> MacvlanMode {
    match m {
        Mode::Bridge => MacvlanMode::Bridge,
        Mode::Vepa => MacvlanMode::Vepa,
        Mode::Private => MacvlanMode::Private,
        Mode::Passthru => MacvlanMode::Passthru,
    }
}

/// Creates `ep` in `ns`. On error the half-made link is removed.
pub fn plumb(net: &Network, ep: &Endpoint, ns: &NetNs) -> Result<()> {
    // A temporary name that cannot clash in the parent's namespace.
    let tmp = format!("mvt{}", &ep.id[..10]);
    let parent = net.parent.clone();
    let macvlan_mode = mode(net.mode);
    // passthru takes over the parent's MAC; the others get the endpoint's.
    let mac = (net.mode != Mode::Passthru).then_some(ep.mac);
    let target = ns.clone();
    let tmp2 = tmp.clone();
    netlink::run(None, move |nl| async move {
        let parent_link = nl.link(&parent).await?.ok_or_else(|| {
            netlink::NetlinkError::LinkNotFound(format!(
                "{parent} (the parent of this network; recreate it or run `mvnet restore`)"
            ))
        })?;
        nl.add_macvlan(&tmp2, parent_link.index, macvlan_mode, mac)
            .await?;
        let child = nl.require_link(&tmp2).await?;
        if let Err(e) = nl.move_to(child.index, &target).await {
            let _ = nl.delete(child.index).await;
            return Err(e);
        }
        Ok(())
    })
    .map_err(|e| anyhow!(e))?;

    let ifname = ep.ifname.clone();
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
    netlink::run(Some(ns), move |nl| async move {
        let child = nl.require_link(&tmp).await?;
        let result = async {
            nl.rename(child.index, &ifname).await?;
            if !ipv6 {
                // As Docker does on IPv4-only networks: no IPv6 on the
                // endpoint, so no autoconfiguration, DAD or MLD traffic.
                // (Set before the link is up; /proc/sys/net follows this
                // thread's namespace.)
                let _ = std::fs::write(
                    format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
                    "1",
                );
            }
            for (addr, prefix, _) in &addrs {
                nl.add_address(child.index, *addr, *prefix).await?;
            }
            nl.set_up(child.index).await?;
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

/// Removes `ep`'s link from `ns` (for namespaces we do not own; owned ones
/// are deleted whole).
pub fn unplumb(ep: &Endpoint, ns: &NetNs) -> Result<()> {
    let ifname = ep.ifname.clone();
    netlink::run(Some(ns), move |nl| async move {
        if let Some(link) = nl.link(&ifname).await? {
            nl.delete(link.index).await?;
        }
        Ok(())
    })
    .map_err(|e| anyhow!(e))
}
