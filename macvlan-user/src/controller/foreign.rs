//! Another runtime's macvlan networks and containers (Docker's own driver,
//! CNI): *foreign* records in the same state, with an [`Owner`], so that
//! `stats`, `verify`, `top`, `serve`, `inspect` and `restore` treat them
//! as mvnet's own. The runtime keeps creating and deleting their links and
//! namespaces; mvnet attaches the classifier to their root device, keeps
//! their endpoints in its table (and their devices' source checks), and
//! forgets them when they go.
//!
//! Crash order: the state is saved first and the kernel follows. A command
//! killed in between leaves the state ahead of the kernel, which
//! `mvnet restore` converges (it re-attaches classifiers, re-adds missing
//! entries, removes stale ones and unused pins); no intent is needed, as
//! nothing here allocates what a crash could leak.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{anyhow, bail, Result};

use super::{
    datapath::{attachment, Attachment},
    network::{link_index, vlan_parent},
    Controller,
};
use crate::{
    model::{
        self, Container, Endpoint, Mac, MacvlanMode, Network, Owner, ParentOrigin, Policy, XdpMode,
    },
    netlink,
    netns::NetNs,
};

/// A network of another runtime, as that runtime describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignNetwork {
    pub owner: Owner,
    /// The runtime's id of the network.
    pub id: String,
    /// Its name, as `stats`, `top`, `serve` and `ls` show it.
    pub name: String,
    /// `eth0`, or `eth0.10` (root `eth0`, VLAN 10); a link in mvnet's
    /// namespace.
    pub parent: String,
    pub mode: MacvlanMode,
    pub policy: Policy,
    pub xdp_mode: XdpMode,
    /// `--max-endpoints` of the root's classifier (`None`: the root's, else
    /// the default); another value than an attached root's is refused.
    pub max_endpoints: Option<u32>,
    /// Shown in inspect (e.g. Docker's `Options`).
    pub options: BTreeMap<String, String>,
}

/// A container of another runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignContainer {
    pub owner: Owner,
    pub id: String,
    pub name: String,
    /// Its network namespace (Docker's SandboxKey, CNI_NETNS).
    pub netns: PathBuf,
    /// `NAMESPACE/NAME` of a Kubernetes pod.
    pub pod: Option<String>,
}

/// One interface of a foreign container on a foreign network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignEndpoint {
    pub network_id: String,
    /// Its name inside the container.
    pub ifname: String,
    /// The MAC the device really has.
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// What [`Controller::converge_foreign`] changed, one line each.
#[derive(Debug, Default)]
pub struct ConvergeReport {
    pub lines: Vec<String>,
}

impl fmt::Display for ConvergeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines.is_empty() {
            return writeln!(f, "nothing to do");
        }
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// The unicast frames the kernel has delivered to `ifname` in `netns`, if
/// the device is there: what [`Endpoint::rx_base`] records.
pub(super) fn kernel_unicast_rx(netns: &std::path::Path, ifname: &str) -> Option<u64> {
    let ns = NetNs::from_path(netns);
    let ifname = ifname.to_owned();
    netlink::run(Some(&ns), move |nl| async move {
        let Some(link) = nl.link(&ifname).await? else {
            return Ok(None);
        };
        let s = nl.stats(link.index).await?;
        Ok(Some(s.rx_packets.saturating_sub(s.multicast)))
    })
    .ok()
    .flatten()
}

impl Controller {
    /// Records another runtime's network, attaches the classifier to its
    /// root device unless one is, and applies its policy. Idempotent: a
    /// network already recorded as it is changes nothing.
    pub fn adopt_network(&mut self, n: ForeignNetwork) -> Result<()> {
        if !n.owner.is_foreign() {
            bail!("internal error: adopt_network of a network owned by mvnet");
        }
        if n.id.is_empty() || n.name.is_empty() {
            bail!("{} network without an id or a name", n.owner.describe());
        }
        let vlan = vlan_parent(&n.parent)?;
        let root = vlan.as_ref().map_or(n.parent.clone(), |(b, _)| b.clone());
        let root = root.as_str();
        let parent_ifindex = link_index(&n.parent).map_err(|_| {
            anyhow!(
                "{} network {}: its parent {} is not a link in this network namespace (inode {}); run mvnet in the namespace where {}'s parent links are (e.g. `nsenter --net=/proc/PID/ns/net mvnet ...` with the PID of the {} daemon)",
                n.owner.describe(),
                n.name,
                n.parent,
                crate::netns::current_inode().unwrap_or_default(),
                n.owner.tool(),
                n.owner.tool()
            )
        })?;
        if let Some(old) = self.state.networks.get(&n.id) {
            if old.owner != n.owner {
                bail!(
                    "network id {} is already {}'s network {}; not adopting it for {}",
                    n.id,
                    old.owner.describe(),
                    old.name,
                    n.owner.describe()
                );
            }
        }
        // The first network on a root decides how XDP is attached.
        let xdp_mode = self
            .state
            .networks
            .values()
            .find(|o| o.root().0 == root && o.id != n.id)
            .map_or(n.xdp_mode, |o| o.xdp_mode);
        let old = self.state.networks.get(&n.id).cloned();
        let network = Network {
            id: n.id.clone(),
            name: n.name.clone(),
            created: old
                .as_ref()
                .map_or_else(model::now_rfc3339, |o| o.created.clone()),
            parent: n.parent.clone(),
            parent_origin: ParentOrigin::Existing,
            vlan,
            mode: n.mode,
            internal: false,
            enable_ipv6: false,
            pools: Vec::new(),
            options: n.options.clone(),
            policy: n.policy,
            xdp_mode,
            max_endpoints: self.endpoint_capacity(root, n.max_endpoints, Some(&n.id))?,
            drop_broadcast: false,
            drop_multicast: false,
            labels: BTreeMap::new(),
            netns_inode: crate::netns::current_inode().ok(),
            parent_ifindex: Some(parent_ifindex),
            owner: n.owner.clone(),
        };
        let unchanged = old.as_ref().is_some_and(|o| same_network(o, &network));
        if unchanged && attachment(root)? == Attachment::Attached {
            return Ok(());
        }
        if let Some(o) = &old {
            if o.root() != network.root() {
                // Moved to another parent: its endpoints were on the old one.
                self.forget_network(&n.id)?;
            }
        }
        self.state.networks.insert(n.id.clone(), network.clone());
        self.save()?;
        let applied = (|| -> Result<()> {
            self.attach_datapath(&network)?;
            self.apply_policy(&network)
        })();
        if let Err(e) = applied {
            match old {
                Some(o) => self.state.networks.insert(n.id.clone(), o),
                None => self.state.networks.remove(&n.id),
            };
            self.save()?;
            let _ = self.detach_datapath_if_unused(root);
            return Err(e.context(format!(
                "adopting {} network {}",
                n.owner.describe(),
                n.name
            )));
        }
        Ok(())
    }

    /// Forgets a foreign network and its containers' endpoints on it, and
    /// detaches the classifier from its root if no network uses it any
    /// more. An unknown id is not an error.
    pub fn forget_network(&mut self, id: &str) -> Result<()> {
        let Some(net) = self.state.networks.get(id).cloned() else {
            return Ok(());
        };
        refuse_mvnet_network(&net)?;
        let users: Vec<String> = self
            .state
            .containers
            .values()
            .filter(|c| c.endpoints.contains_key(id))
            .map(|c| c.id.clone())
            .collect();
        for cid in users {
            self.forget_endpoint(&cid, id)?;
        }
        self.state.networks.remove(id);
        self.save()?;
        let (root, vid) = net.root();
        self.detach_datapath_if_unused(root)?;
        if self.state.networks.values().any(|n| n.root().0 == root) {
            self.apply_root_policy(root, Some(vid))?;
        }
        Ok(())
    }

    /// Adds (or replaces) one endpoint of a foreign container, creating the
    /// container's record: puts it in the classifier's table and registers
    /// its device's source checks where the device's ifindex allows.
    /// Idempotent.
    pub fn adopt_endpoint(&mut self, c: &ForeignContainer, ep: ForeignEndpoint) -> Result<()> {
        if !c.owner.is_foreign() {
            bail!("internal error: adopt_endpoint of a container owned by mvnet");
        }
        if c.id.is_empty() {
            bail!("{} container without an id", c.owner.describe());
        }
        let net = match self.state.networks.get(&ep.network_id) {
            Some(n) if n.owner.is_foreign() => n.clone(),
            Some(n) => bail!(
                "network {} is mvnet's own; attach containers to it with `mvnet run` or `mvnet network connect`",
                n.name
            ),
            None => bail!(
                "network {} of {} container {} is not adopted (internal error: adopt the network first)",
                ep.network_id,
                c.owner.describe(),
                c.name
            ),
        };
        if ep.mac.is_multicast() || ep.mac.octets() == [0; 6] {
            bail!(
                "{} container {}: {} has the MAC {}, which is not a unicast address",
                c.owner.describe(),
                c.name,
                ep.ifname,
                ep.mac
            );
        }
        if let Some(old) = self.state.containers.get(&c.id) {
            if old.owner != c.owner {
                bail!(
                    "container id {} is already {}'s container {}; not adopting it for {}",
                    c.id,
                    old.owner.describe(),
                    old.name,
                    c.owner.describe()
                );
            }
        }
        let old_container = self.state.containers.get(&c.id).cloned();
        let old_ep = old_container
            .as_ref()
            .and_then(|o| o.endpoints.get(&ep.network_id).cloned());
        let unchanged = old_container
            .as_ref()
            .is_some_and(|o| o.name == c.name && o.netns == c.netns && o.pod == c.pod)
            && old_ep.as_ref().is_some_and(|o| {
                o.ifname == ep.ifname && o.mac == ep.mac && o.ipv4 == ep.ipv4 && o.ipv6 == ep.ipv6
            });
        // The common case of a re-sync first: nothing to scan or change.
        if unchanged && self.has_entry(&net, ep.mac)? {
            return Ok(());
        }
        let (root, vlan) = net.root();
        // Another endpoint with this MAC on the root and VLAN would share
        // its classifier entry.
        for other in self.state.containers.values() {
            for e in other.endpoints.values() {
                if other.id == c.id && e.network_id == ep.network_id {
                    continue;
                }
                let Some(on) = self.state.networks.get(&e.network_id) else {
                    continue;
                };
                if e.mac == ep.mac && on.root() == (root, vlan) {
                    bail!(
                        "{} container {}: MAC {} on {root} (VLAN {vlan}) is already endpoint {} of container {} ({}); the classifier tells endpoints apart by MAC and VLAN",
                        c.owner.describe(),
                        c.name,
                        ep.mac,
                        e.ifname,
                        other.name,
                        other.owner.describe()
                    );
                }
            }
        }
        if let Some(o) = &old_ep {
            // Replaced (another MAC, a re-created device): out with the old.
            self.datapath_remove(&net, o)?;
        }
        let mut container = old_container.clone().unwrap_or_else(|| Container {
            id: c.id.clone(),
            created: model::now_rfc3339(),
            netns_owned: false,
            running: true,
            ..Default::default()
        });
        container.name = c.name.clone();
        container.netns = c.netns.clone();
        container.netns_inode = crate::netns::inode(&c.netns);
        container.pod = c.pod.clone();
        container.owner = c.owner.clone();
        let endpoint = Endpoint {
            id: model::new_id(),
            network_id: ep.network_id.clone(),
            ifname: ep.ifname.clone(),
            mac: ep.mac,
            ipv4: ep.ipv4,
            ipv6: ep.ipv6,
            // Read before the entry exists: a frame in between is counted
            // by the kernel only (verify then sees one more, not one less).
            rx_base: kernel_unicast_rx(&c.netns, &ep.ifname).unwrap_or(0),
        };
        container
            .endpoints
            .insert(ep.network_id.clone(), endpoint.clone());
        self.state.containers.insert(c.id.clone(), container);
        self.save()?;
        if let Err(e) = self.datapath_add(&net, &endpoint) {
            match old_container {
                Some(o) => self.state.containers.insert(c.id.clone(), o),
                None => self.state.containers.remove(&c.id),
            };
            self.save()?;
            let _ = self.datapath_remove(&net, &endpoint);
            return Err(e.context(format!(
                "adding {}/{} of {} container {} to the classifier of {root}",
                c.name,
                ep.ifname,
                c.owner.describe(),
                c.name
            )));
        }
        Ok(())
    }

    /// Removes one endpoint of a foreign container, and the container once
    /// it has none left. Unknown ones are not an error.
    pub fn forget_endpoint(&mut self, container_id: &str, network_id: &str) -> Result<()> {
        let Some(c) = self.state.containers.get(container_id).cloned() else {
            return Ok(());
        };
        refuse_mvnet_container(&c)?;
        let Some(ep) = c.endpoints.get(network_id).cloned() else {
            return Ok(());
        };
        let container = self
            .state
            .containers
            .get_mut(container_id)
            .expect("present");
        container.endpoints.remove(network_id);
        if container.endpoints.is_empty() {
            self.state.containers.remove(container_id);
        }
        self.save()?;
        if let Some(net) = self.state.networks.get(network_id).cloned() {
            self.datapath_remove(&net, &ep)?;
        }
        Ok(())
    }

    /// Removes a foreign container and all its endpoints.
    pub fn forget_container(&mut self, container_id: &str) -> Result<()> {
        let Some(c) = self.state.containers.get(container_id).cloned() else {
            return Ok(());
        };
        refuse_mvnet_container(&c)?;
        for nid in c.endpoints.keys() {
            self.forget_endpoint(container_id, nid)?;
        }
        // One without endpoints is gone with the last of them; one that
        // never had any goes here.
        if self.state.containers.remove(container_id).is_some() {
            self.save()?;
        }
        Ok(())
    }

    /// Makes the state and the classifiers hold exactly `networks` and
    /// `containers` among the foreign records whose owner is `mine`: what
    /// `mvnet docker sync` and CNI's GC do. Endpoints whose network is not
    /// in `networks` are skipped with a line saying so; one that cannot be
    /// adopted is reported and the rest go on.
    pub fn converge_foreign(
        &mut self,
        mine: impl Fn(&Owner) -> bool,
        networks: Vec<ForeignNetwork>,
        containers: Vec<(ForeignContainer, Vec<ForeignEndpoint>)>,
    ) -> Result<ConvergeReport> {
        let mut report = ConvergeReport::default();
        let want_nets: BTreeSet<String> = networks.iter().map(|n| n.id.clone()).collect();
        let want_eps: BTreeSet<(String, String)> = containers
            .iter()
            .flat_map(|(c, eps)| {
                eps.iter()
                    .filter(|e| want_nets.contains(&e.network_id))
                    .map(|e| (c.id.clone(), e.network_id.clone()))
            })
            .collect();
        // Out first: a MAC may move from a gone endpoint to a new one.
        let stale: Vec<(String, String, String, String)> = self
            .state
            .containers
            .values()
            .filter(|c| c.owner.is_foreign() && mine(&c.owner))
            .flat_map(|c| {
                c.endpoints.keys().map(|nid| {
                    (
                        c.id.clone(),
                        nid.clone(),
                        c.name.clone(),
                        c.owner.describe(),
                    )
                })
            })
            .filter(|(cid, nid, ..)| !want_eps.contains(&(cid.clone(), nid.clone())))
            .collect();
        for (cid, nid, name, owner) in stale {
            let net = self
                .state
                .networks
                .get(&nid)
                .map_or(nid.clone(), |n| n.name.clone());
            self.forget_endpoint(&cid, &nid)?;
            report.lines.push(format!(
                "removed {owner} container {name} from network {net}"
            ));
        }
        let stale_nets: Vec<(String, String, String)> = self
            .state
            .networks
            .values()
            .filter(|n| n.owner.is_foreign() && mine(&n.owner) && !want_nets.contains(&n.id))
            .map(|n| (n.id.clone(), n.name.clone(), n.owner.describe()))
            .collect();
        for (id, name, owner) in stale_nets {
            self.forget_network(&id)?;
            report.lines.push(format!("removed {owner} network {name}"));
        }
        let mut adopted = BTreeSet::new();
        for n in networks {
            if !mine(&n.owner) {
                bail!(
                    "internal error: converging {} network {} with another owner",
                    n.owner.describe(),
                    n.name
                );
            }
            let known = self.state.networks.get(&n.id).cloned();
            let (id, name, owner) = (n.id.clone(), n.name.clone(), n.owner.describe());
            match self.adopt_network(n) {
                Ok(()) => {
                    adopted.insert(id.clone());
                    let now = &self.state.networks[&id];
                    match known {
                        None => report.lines.push(format!(
                            "added {owner} network {name} on {} ({})",
                            now.parent,
                            now.policy.as_str()
                        )),
                        Some(k) if !same_network(&k, now) => report.lines.push(format!(
                            "updated {owner} network {name} on {} ({})",
                            now.parent,
                            now.policy.as_str()
                        )),
                        Some(_) => {}
                    }
                }
                Err(e) => report
                    .lines
                    .push(format!("skipped {owner} network {name}: {e:#}")),
            }
        }
        for (c, eps) in containers {
            for ep in eps {
                if !adopted.contains(&ep.network_id) {
                    continue;
                }
                let net = self.state.networks[&ep.network_id].name.clone();
                let before = self
                    .state
                    .containers
                    .get(&c.id)
                    .and_then(|o| o.endpoints.get(&ep.network_id))
                    .map(|o| o.mac);
                let what = format!(
                    "{} container {} ({} {}) on network {net}",
                    c.owner.describe(),
                    c.name,
                    ep.ifname,
                    ep.mac
                );
                let mac = ep.mac;
                match self.adopt_endpoint(&c, ep) {
                    Ok(()) if before.is_none() => report.lines.push(format!("added {what}")),
                    Ok(()) if before != Some(mac) => report.lines.push(format!("updated {what}")),
                    Ok(()) => {}
                    Err(e) => report.lines.push(format!("skipped {what}: {e:#}")),
                }
            }
        }
        Ok(report)
    }

    /// Whether the classifier of `net`'s root has an entry for `mac` on
    /// its VLAN.
    fn has_entry(&self, net: &Network, mac: Mac) -> Result<bool> {
        let (root, vlan) = net.root();
        let dir = super::datapath::pin_dir(root)?;
        let Ok(maps) = crate::datapath::pinned::PinnedMaps::open(&dir) else {
            return Ok(false);
        };
        Ok(maps
            .endpoints_ro()
            .and_then(|t| t.get(mac.octets(), vlan))
            .is_some())
    }
}

/// Whether two records of one foreign network say the same.
fn same_network(a: &Network, b: &Network) -> bool {
    a.name == b.name
        && a.parent == b.parent
        && a.mode == b.mode
        && a.policy == b.policy
        && a.options == b.options
        && a.owner == b.owner
}

fn refuse_mvnet_network(n: &Network) -> Result<()> {
    if n.owner.is_foreign() {
        return Ok(());
    }
    bail!(
        "network {} is mvnet's own, not another runtime's; remove it with `mvnet network rm {}`",
        n.name,
        n.name
    )
}

fn refuse_mvnet_container(c: &Container) -> Result<()> {
    if c.owner.is_foreign() {
        return Ok(());
    }
    bail!(
        "container {} is mvnet's own, not another runtime's; remove it with `mvnet rm {}`",
        c.name,
        c.name
    )
}

/// For mvnet's own commands: refuses to change another runtime's network.
pub fn refuse_foreign_network(n: &Network, doing: &str) -> Result<()> {
    if !n.owner.is_foreign() {
        return Ok(());
    }
    bail!(
        "network {} belongs to {}, which creates and removes it: {doing} it with {}, not mvnet",
        n.name,
        n.owner.describe(),
        n.owner.tool()
    )
}

/// For mvnet's own commands: refuses to change another runtime's container.
pub fn refuse_foreign_container(c: &Container, doing: &str) -> Result<()> {
    if !c.owner.is_foreign() {
        return Ok(());
    }
    bail!(
        "container {} belongs to {}, which creates and removes it: {doing} it with {}, not mvnet",
        c.name,
        c.owner.describe(),
        c.owner.tool()
    )
}

/// Registers the device of a foreign endpoint: its ifindex is the
/// runtime's, not one mvnet chose (see `datapath::devices`), so another
/// device may hold the same number in another namespace. Then its source
/// checks are left off, and this says so.
pub(super) fn foreign_device_note(c: &Container, ep: &Endpoint, index: u32) -> String {
    format!(
        "source checks not attached to {}/{} ({}): ifindex {index} is another endpoint's device; the classifier on the parent still counts and enforces its traffic",
        c.name,
        ep.ifname,
        c.owner.describe()
    )
}
