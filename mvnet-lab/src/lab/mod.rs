//! The lab: throwaway topologies in network namespaces, shared by the
//! integration tests, `cargo xtask run`/`lab` and the benchmarks.
//!
//! ```text
//!  upstream ns                 host ns                    container ns
//!  wire0 (gateway, traffic) ── eth0 (the parent) ── macvlan ── eth0
//!         veth pair                 XDP/TC here
//! ```
//!
//! Nothing of a lab lives in the root namespace: links are made inside the
//! lab's namespaces, and deleting the namespaces (on drop, on panic, or by
//! [`clean`] after a killed run) removes everything.
pub mod frames;
pub mod smoke;
pub mod tutorial;
pub mod wire;

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, Result};

use mvnet::{
    model::{Mac, MacvlanMode},
    netlink,
    netns::{self, NetNs},
};

/// Every lab namespace starts with this, then the creating process's pid.
pub const PREFIX: &str = "mvl-";

/// Name of the parent device in the host namespace.
pub const PARENT: &str = "eth0";
/// Name of the upstream end of the wire.
pub const UPSTREAM_IF: &str = "wire0";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A lab topology; removed on drop.
pub struct Lab {
    id: String,
    upstream: NetNs,
    host: NetNs,
    containers: Vec<NetNs>,
}

impl Lab {
    /// Builds `upstream` and `host` joined by a veth pair (`wire0` ⇄ `eth0`),
    /// both ends up, with [`PINNED_SYSCTLS`] (no forwarding, redirects or
    /// IPv6 traffic disturbs exact counts, whatever the host's settings).
    pub fn new() -> Result<Lab> {
        let id = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            upstream: netns::create(&format!("{id}-up"))?,
            // Pushed one at a time so a failure drops (and removes) what exists.
            host: NetNs::from_path("/nonexistent"),
            id,
            containers: Vec::new(),
        };
        lab.host = netns::create(&format!("{}-host", lab.id))?;
        lab.build_wire().context("building the lab wire")?;
        Ok(lab)
    }

    fn build_wire(&self) -> Result<()> {
        pin_sysctls(&self.upstream)?;
        pin_sysctls(&self.host)?;
        let upstream = self.upstream.clone();
        netlink::run(Some(&self.host), |nl| async move {
            nl.add_veth(PARENT, UPSTREAM_IF).await?;
            let peer = nl.require_link(UPSTREAM_IF).await?;
            nl.move_to(peer.index, &upstream).await?;
            let parent = nl.require_link(PARENT).await?;
            nl.set_up(parent.index).await
        })?;
        netlink::run(Some(&self.upstream), |nl| async move {
            let wire = nl.require_link(UPSTREAM_IF).await?;
            nl.set_up(wire.index).await
        })?;
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace holding the traffic source/sink and gateway.
    pub fn upstream(&self) -> &NetNs {
        &self.upstream
    }

    /// The namespace holding the parent `eth0`.
    pub fn host(&self) -> &NetNs {
        &self.host
    }

    /// Creates an empty container namespace `<lab>-<name>`, removed with the lab.
    pub fn add_container(&mut self, name: &str) -> Result<NetNs> {
        let ns = netns::create(&format!("{}-{name}", self.id))?;
        self.containers.push(ns.clone());
        pin_sysctls(&ns)?;
        Ok(ns)
    }

    /// Moves a macvlan child of the parent into `container` as `eth0`, up.
    /// (The controller does this for real networks; the lab uses it for
    /// datapath tests that need no IPAM.)
    pub fn add_macvlan(&self, container: &NetNs, mac: [u8; 6]) -> Result<()> {
        // Made in the container directly under a unique name, then renamed
        // there, as the controller's `endpoint::plumb` does.
        let tmp = format!("mv{}", NEXT_LAB.fetch_add(1, Ordering::Relaxed));
        let target = container.clone();
        let tmp2 = tmp.clone();
        netlink::run(Some(&self.host), |nl| async move {
            let parent = nl.require_link(PARENT).await?;
            nl.add_macvlan_in(
                &tmp2,
                parent.index,
                MacvlanMode::Bridge,
                Some(Mac::new(mac)),
                &target,
            )
            .await
        })?;
        netlink::run(Some(container), |nl| async move {
            let child = nl.require_link(&tmp).await?;
            nl.rename(child.index, "eth0").await?;
            nl.set_up(child.index).await
        })?;
        Ok(())
    }

    /// Kernel counters of `iface` inside `ns`.
    pub fn link_stats(&self, ns: &NetNs, iface: &str) -> Result<netlink::LinkStats> {
        let iface = iface.to_owned();
        Ok(netlink::run(Some(ns), |nl| async move {
            let link = nl.require_link(&iface).await?;
            nl.stats(link.index).await
        })?)
    }

    /// MAC of `iface` inside `ns`.
    pub fn mac_of(&self, ns: &NetNs, iface: &str) -> Result<[u8; 6]> {
        let iface = iface.to_owned();
        let link = netlink::run(Some(ns), |nl| async move { nl.require_link(&iface).await })?;
        link.mac.map(Mac::octets).context("link has no MAC address")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self
            .containers
            .iter()
            .chain([&self.host, &self.upstream])
            .rev()
        {
            // The classifiers pinned for roots in this namespace go with
            // it: their links die with its devices, and their directories,
            // named by its inode, would otherwise outlive it and be taken
            // for the pins of a later namespace that reuses the inode. They
            // are removed while the namespace still holds the inode.
            if let Some(ino) = netns::inode(ns.path()) {
                remove_pins_of(ino);
            }
            if let Some(name) = ns.name() {
                let _ = netns::delete(name);
            }
        }
    }
}

/// Removes the pin directories of every classifier of the namespace with
/// inode `ino` (`/sys/fs/bpf/mvnet/<ino>-<root>`).
fn remove_pins_of(ino: u64) {
    let prefix = format!("{ino}-");
    let Ok(dir) = std::fs::read_dir(mvnet::datapath::pinned::PIN_ROOT) else {
        return;
    };
    for entry in dir.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The sysctls every lab namespace pins, for this and future links:
/// `(path under /proc/sys/net, value)`.
///
/// A new namespace copies the IPv4 `all`/`default` settings of the root
/// namespace (net.core.devconf_inherit_init_net = 0). On a host where a
/// Docker engine runs, `net.ipv4.ip_forward` is 1, so every lab namespace
/// would be a router: a namespace that receives a frame for its MAC but not
/// its address routes it back out through its gateway, and the ARP exchange
/// for the gateway adds a frame to exact counts (pktgen's 101 of 100).
/// Redirects follow from forwarding. IPv6 (which a new namespace does not
/// inherit) is off: router solicitations, DAD and autoconfiguration would
/// add frames too; forwarding, router advertisements and autoconfiguration
/// are pinned off as well, for a kernel booted with inheritance on.
pub const PINNED_SYSCTLS: &[(&str, &str)] = &[
    ("ipv4/conf/all/forwarding", "0"),
    ("ipv4/conf/default/forwarding", "0"),
    ("ipv4/conf/all/send_redirects", "0"),
    ("ipv4/conf/default/send_redirects", "0"),
    ("ipv4/conf/all/accept_redirects", "0"),
    ("ipv4/conf/default/accept_redirects", "0"),
    ("ipv6/conf/all/disable_ipv6", "1"),
    ("ipv6/conf/default/disable_ipv6", "1"),
    ("ipv6/conf/all/forwarding", "0"),
    ("ipv6/conf/default/forwarding", "0"),
    ("ipv6/conf/all/accept_ra", "0"),
    ("ipv6/conf/default/accept_ra", "0"),
    ("ipv6/conf/all/autoconf", "0"),
    ("ipv6/conf/default/autoconf", "0"),
];

/// Pins [`PINNED_SYSCTLS`] in `ns`, so that what a lab counts does not
/// depend on the host's settings. The lab does it for every namespace it
/// creates; scenarios call it for the containers they start with `mvnet
/// run` (those namespaces are mvnet's, and inherit like Docker's do).
pub fn pin_sysctls(ns: &NetNs) -> Result<()> {
    ns.run(|| -> Result<()> {
        for (key, value) in PINNED_SYSCTLS {
            let path = format!("/proc/sys/net/{key}");
            match std::fs::write(&path, value) {
                Ok(()) => {}
                // A kernel without IPv6 has nothing to pin there.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && key.starts_with("ipv6/") => {}
                Err(e) => return Err(e).with_context(|| format!("writing {value} to {path}")),
            }
        }
        Ok(())
    })?
    .context("pinning the sysctls of a lab namespace")
}

/// Removes every lab namespace whose creating process is gone (all of them
/// with `all`). Returns the names removed.
pub fn clean(all: bool) -> Vec<String> {
    let mut removed = Vec::new();
    for name in netns::list() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if (all || !alive) && netns::delete(&name).is_ok() {
            removed.push(name);
        }
    }
    removed
}
