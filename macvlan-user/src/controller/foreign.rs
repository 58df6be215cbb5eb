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
    adopt::Adopted,
    datapath::{attachment, Attachment},
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

/// What a runtime has but could not be read this time: kept as recorded
/// by [`Controller::converge_foreign`] (not read is not gone).
#[derive(Clone, Debug, Default)]
pub struct Unreadable {
    /// Running containers whose report could not be read or mapped: their
    /// records are kept as they are.
    pub containers: BTreeSet<String>,
    /// Networks whose parent could not be read: kept, with every endpoint
    /// recorded on them.
    pub networks: BTreeSet<String>,
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
    kernel_unicast_rx_all(netns).ok()?.remove(ifname)
}

/// [`kernel_unicast_rx`] of every device in `netns`, in one visit: the
/// kernel's `/proc/net/dev` of the namespace (the counters netlink's
/// IFLA_STATS64 carries, from the same `dev_get_stats`), read from a
/// thread inside it. Cheaper than a netlink connection per namespace, which
/// a batch of a thousand endpoints in 250 containers notices.
pub(super) fn kernel_unicast_rx_all(netns: &std::path::Path) -> Result<BTreeMap<String, u64>> {
    let ns = NetNs::from_path(netns);
    crate::netns::run_in(Some(&ns), kernel_unicast_rx_here)?
}

/// [`kernel_unicast_rx_all`] of the calling thread's namespace.
pub(super) fn kernel_unicast_rx_here() -> Result<BTreeMap<String, u64>> {
    // thread-self: this thread's namespace, not the process's.
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    Ok(parse_net_dev(&text))
}

/// Tries [`baseline_here`] makes for a read that no frame crosses.
const BASELINE_TRIES: usize = 16;

/// The kernel's count of `ifname` (in the calling thread's namespace) at
/// the moment its classifier entry began counting, which is what
/// [`Endpoint::rx_base`] must hold for `verify` to compare like with like:
/// the kernel's count now less what the entry has counted, `classified`
/// (its frames, as `verify` sums them). The entry must exist already: a
/// count read before it was added leaves out the frames that arrive
/// between that read and the add (the kernel counts them, the entry does
/// not), and an adoption saves the state in between, which takes
/// milliseconds under traffic.
///
/// The classifier counts a frame before the kernel does (on the parent,
/// before macvlan hands it to the device, in the same softirq), so the
/// entry's count is read on both sides of the kernel's: when the two agree
/// no frame arrived during the read and the base is exact. Under traffic
/// that never pauses for a read (some tens of microseconds) it is off by
/// at most half the frames that arrived during the best of
/// [`BASELINE_TRIES`] reads. `None` if either count cannot be read.
pub(super) fn baseline_here(ifname: &str, classified: impl Fn() -> Option<u64>) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for _ in 0..BASELINE_TRIES {
        let before = classified()?;
        let kernel = *kernel_unicast_rx_here().ok()?.get(ifname)?;
        let after = classified()?;
        // The kernel's count holds the entry's frames up to its read: at
        // least `before`, at most `after`.
        let spread = after.saturating_sub(before);
        let base = kernel.saturating_sub(before + spread / 2);
        if spread == 0 {
            return Some(base);
        }
        if best.is_none_or(|(s, _)| spread < s) {
            best = Some((spread, base));
        }
    }
    best.map(|(_, base)| base)
}

/// Device → received packets less multicast, from `/proc/net/dev`.
fn parse_net_dev(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, fields) = line.split_once(':')?;
            let f: Vec<u64> = fields
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            // bytes packets errs drop fifo frame compressed multicast | tx...
            let (packets, multicast) = (*f.get(1)?, *f.get(7)?);
            Some((name.trim().to_owned(), packets.saturating_sub(multicast)))
        })
        .collect()
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
        let parent_link = parent_link(&n.parent).map_err(|_| {
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
        let parent_ifindex = parent_link.link.index;
        let vlan = real_device_and_vlan(&n.parent, &parent_link)?;
        let root = vlan.as_ref().map_or(n.parent.clone(), |(b, _)| b.clone());
        let root = root.as_str();
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
            // A root other networks keep: its policy as the state has it
            // again (apply_policy may have written this VLAN's bits, and
            // CONFIG's, before it failed).
            if self.state.networks.values().any(|o| o.root().0 == root) {
                let _ = self.apply_root_policy(root, Some(network.root().1));
            }
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
            .on_network(id)
            .map(|(cid, _)| cid.to_owned())
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
        detach_live_check(&c, &ep);
        if let Some(net) = self.state.networks.get(network_id).cloned() {
            if let Err(e) = self.datapath_remove(&net, &ep) {
                // The kernel keeps the entry: so does the state again, for
                // the runtime's retry (a DEL is retried until it succeeds)
                // to find and remove it. Forgotten, the retry would succeed
                // with the entry left, valid under enforce, until `restore`.
                self.state.containers.insert(container_id.to_owned(), c);
                if let Err(s) = self.save() {
                    eprintln!("mvnet: warning: {s:#}; run `mvnet restore` to converge");
                }
                return Err(e);
            }
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
    ///
    /// `read_at`: when the runtime was read, without the state's lock.
    /// What changed since is newer than the view: containers recorded
    /// since (a watcher adopted them meanwhile) are not forgotten, and
    /// containers whose namespace is gone by now (they stopped meanwhile)
    /// are left out instead of adopted.
    ///
    /// `unread`: containers and networks the runtime has whose report
    /// could not be read this time; their records (a network's with its
    /// endpoints) are kept as they are (not read is not gone).
    pub fn converge_foreign(
        &mut self,
        mine: impl Fn(&Owner) -> bool,
        networks: Vec<ForeignNetwork>,
        containers: Vec<(ForeignContainer, Vec<ForeignEndpoint>)>,
        read_at: Option<std::time::SystemTime>,
        unread: &Unreadable,
    ) -> Result<ConvergeReport> {
        // RFC 3339 of one width: ordered as text. A second of slack for
        // clocks that step.
        let newer = read_at.map(|t| {
            model::rfc3339(
                t.checked_sub(std::time::Duration::from_secs(1))
                    .unwrap_or(t),
            )
        });
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
            .filter(|c| {
                c.owner.is_foreign() && mine(&c.owner) && !unread.containers.contains(&c.id)
            })
            .filter(|c| newer.as_ref().is_none_or(|t| c.created < *t))
            .flat_map(|c| {
                c.endpoints.keys().map(|nid| {
                    (
                        c.id.clone(),
                        nid.to_string(),
                        c.name.clone(),
                        c.owner.describe(),
                    )
                })
            })
            .filter(|(cid, nid, ..)| {
                !unread.networks.contains(nid) && !want_eps.contains(&(cid.clone(), nid.clone()))
            })
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
            .filter(|n| {
                n.owner.is_foreign()
                    && mine(&n.owner)
                    && !want_nets.contains(&n.id)
                    && !unread.networks.contains(&n.id)
            })
            .map(|n| (n.id.clone(), n.name.clone(), n.owner.describe()))
            .collect();
        for (id, name, owner) in stale_nets {
            self.forget_network(&id)?;
            report.lines.push(format!("removed {owner} network {name}"));
        }
        self.attach_fresh_roots(&networks);
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
        // One batch: one save, each classifier opened once.
        let mut items = Vec::new();
        for (c, eps) in containers {
            if read_at.is_some() && !c.netns.exists() {
                report.lines.push(format!(
                    "left out {} container {}: it stopped since it was read (its namespace {} \
                     is gone)",
                    c.owner.describe(),
                    c.name,
                    c.netns.display()
                ));
                continue;
            }
            for ep in eps {
                if adopted.contains(&ep.network_id) {
                    items.push((c.clone(), ep));
                }
            }
        }
        let whats: Vec<String> = items
            .iter()
            .map(|(c, ep)| {
                format!(
                    "{} container {} ({} {}) on network {}",
                    c.owner.describe(),
                    c.name,
                    ep.ifname,
                    ep.mac,
                    self.state.networks[&ep.network_id].name
                )
            })
            .collect();
        for (what, result) in whats.iter().zip(self.adopt_endpoints(items)) {
            match result {
                Ok(Adopted::Added) => report.lines.push(format!("added {what}")),
                Ok(Adopted::Updated) => report.lines.push(format!("updated {what}")),
                Ok(Adopted::Unchanged) => {}
                Err(e) => report.lines.push(format!("skipped {what}: {e:#}")),
            }
        }
        Ok(report)
    }

    /// Attaches the classifiers of the roots of `networks` that no
    /// recorded network uses yet, side by side: each attach loads and
    /// verifies the programs anew (about 0.15 s on this machine) and roots
    /// do not share them. `adopt_network` then finds them attached; one
    /// that failed here it attaches again and reports. (Killed before
    /// `adopt_network` saves, this leaves pins of a root no network uses,
    /// which `mvnet restore` removes.)
    fn attach_fresh_roots(&self, networks: &[ForeignNetwork]) {
        let mut fresh: BTreeMap<String, (XdpMode, u32)> = BTreeMap::new();
        for n in networks {
            let Ok(vlan) = parent_link(&n.parent).and_then(|l| real_device_and_vlan(&n.parent, &l))
            else {
                continue;
            };
            let root = vlan.map_or(n.parent.clone(), |(b, _)| b);
            let capacity = n.max_endpoints.unwrap_or(macvlan_common::DEFAULT_ENDPOINTS);
            if crate::datapath::check_capacity(capacity).is_ok()
                && !self.state.networks.values().any(|o| o.root().0 == root)
            {
                fresh.entry(root).or_insert((n.xdp_mode, capacity));
            }
        }
        if fresh.len() < 2 {
            return;
        }
        std::thread::scope(|scope| {
            for (root, (mode, capacity)) in &fresh {
                scope.spawn(move || {
                    let _ = self.attach_root(root, *mode, *capacity);
                });
            }
        });
    }
}

/// The parent link `name` of a foreign network, with its kind and lower
/// device.
fn parent_link(name: &str) -> Result<netlink::LowerLink> {
    let name = name.to_owned();
    netlink::run(None, move |nl| async move {
        let found = nl.lower_link(&name).await?;
        found.ok_or(netlink::NetlinkError::LinkNotFound(name))
    })
    .map_err(|e| anyhow!(e))
}

/// The root device and VLAN of a foreign network's parent, from the link
/// as the kernel describes it (another runtime named it, so its name says
/// nothing): for an 802.1Q link, its real device (by name) and VLAN id;
/// `None` for any other link, which is its own root.
fn real_device_and_vlan(parent: &str, link: &netlink::LowerLink) -> Result<Option<(String, u16)>> {
    let Some((index, vid)) = vlan_of(parent, link)? else {
        return Ok(None);
    };
    let real = netlink::run(None, move |nl| async move { nl.link_by_index(index).await })
        .map_err(|e| anyhow!(e))?
        .ok_or_else(|| {
            anyhow!("the real device (ifindex {index}) of VLAN link {parent} is gone; recreate {parent}")
        })?;
    Ok(Some((real.name, vid)))
}

/// For a VLAN link: the ifindex of its real device (IFLA_LINK) and its id
/// (IFLA_VLAN_ID); `None` for any other kind of link. The classifier on
/// the real device reads 802.1Q tags, so 802.1ad links are refused.
fn vlan_of(parent: &str, link: &netlink::LowerLink) -> Result<Option<(u32, u16)>> {
    if link.kind.as_deref() != Some("vlan") {
        return Ok(None);
    }
    const ETH_P_8021Q: u16 = 0x8100;
    if let Some(p) = link.vlan_protocol.filter(|p| *p != ETH_P_8021Q) {
        bail!(
            "parent {parent} is a VLAN link with Ethertype {p:#06x} (802.1ad); mvnet's classifier reads 802.1Q tags: make the parent an 802.1Q link (`ip link add link DEV name {parent} type vlan id VID`)"
        );
    }
    let vid = match link.vlan_id {
        Some(v @ 1..=4094) => v,
        other => bail!(
            "parent {parent} is a VLAN link with the id {other:?}; the kernel reports ids 1-4094"
        ),
    };
    let Some(index) = link.lower_index else {
        bail!("the kernel reports no real device (IFLA_LINK) for VLAN link {parent}");
    };
    if link.lower_netnsid.is_some() {
        bail!(
            "the real device of VLAN link {parent} is in another network namespace; the classifier goes on the real device, so run mvnet where it is"
        );
    }
    Ok(Some((index, vid)))
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

/// Takes the source check off `ep`'s device if it still lives in `c`'s
/// namespace with `ep`'s MAC, before its slot is freed. The runtime deletes
/// the device on its own time (a CNI chain is deleted in reverse: the
/// macvlan plugin after mvnet-cni), and until then the check, a cls_bpf
/// filter keyed by that slot, would judge the device's frames by whichever
/// endpoint takes the slot next and charge that one for them. Without the
/// check its frames reach the parent as any stranger's. Best effort: a
/// device that cannot be read is left as it is.
fn detach_live_check(c: &Container, ep: &crate::model::Endpoint) {
    if !c.netns.exists() {
        return;
    }
    let ifname = ep.ifname.to_string();
    let mac = ep.mac.octets();
    let _ = crate::netns::run_in(Some(&crate::netns::NetNs::from_path(&c.netns)), move || {
        let Some(index) = crate::sys::net::if_index(&ifname) else {
            return;
        };
        if crate::sys::net::hw_addr(&ifname).is_ok_and(|m| m == mac) {
            let _ = crate::datapath::devices::detach_all(index, &ifname);
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn net_dev_gives_unicast_received_per_device() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
  eth0: 123456789012   5000000001    0    0    0     0          0        7  9 1 0 0 0 0 0 0
";
        let m = super::parse_net_dev(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m["lo"], 10);
        assert_eq!(m["eth0"], 4_999_999_994);
    }

    use rtnetlink::packet_route::link::{
        InfoData, InfoKind, InfoMacVlan, InfoVlan, LinkAttribute, LinkInfo, LinkMessage,
        MacVlanMode, VlanProtocol,
    };

    use super::*;

    /// A link message as the kernel sends it for `ip link show NAME`.
    fn message(name: &str, index: u32, lower: u32, info: Vec<LinkInfo>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Link(lower),
            LinkAttribute::LinkInfo(info),
        ];
        m
    }

    fn vlan(id: u16, protocol: VlanProtocol) -> Vec<LinkInfo> {
        vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![
                InfoVlan::Id(id),
                InfoVlan::Protocol(protocol),
            ])),
        ]
    }

    #[test]
    fn a_vlan_parent_is_its_real_device_and_id_from_the_link() {
        // eth0.10 on eth0 (ifindex 2): root 2, VLAN 10.
        let l =
            netlink::lower_link_of(&message("eth0.10", 7, 2, vlan(10, VlanProtocol::Ieee8021Q)));
        assert_eq!((l.vlan_id, l.vlan_protocol), (Some(10), Some(0x8100)));
        assert_eq!(vlan_of("eth0.10", &l).unwrap(), Some((2, 10)));
        // The name says nothing: "trunk" with id 300 on ifindex 4.
        let l = netlink::lower_link_of(&message("trunk", 8, 4, vlan(300, VlanProtocol::Ieee8021Q)));
        assert_eq!(vlan_of("trunk", &l).unwrap(), Some((4, 300)));
        // ...and a macvlan called eth0.10 is no VLAN.
        let l = netlink::lower_link_of(&message(
            "eth0.10",
            9,
            2,
            vec![
                LinkInfo::Kind(InfoKind::MacVlan),
                LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                    MacVlanMode::Bridge,
                )])),
            ],
        ));
        assert_eq!(l.macvlan_mode, Some(MacvlanMode::Bridge));
        assert_eq!(vlan_of("eth0.10", &l).unwrap(), None);
    }

    #[test]
    fn vlan_parents_the_classifier_cannot_serve_are_refused() {
        let qinq = netlink::lower_link_of(&message(
            "eth0.20",
            7,
            2,
            vlan(20, VlanProtocol::Ieee8021Ad),
        ));
        let e = vlan_of("eth0.20", &qinq).unwrap_err().to_string();
        assert!(
            e.starts_with("parent eth0.20 is a VLAN link with Ethertype 0x88a8 (802.1ad)"),
            "{e}"
        );
        let mut elsewhere =
            netlink::lower_link_of(&message("eth0.10", 7, 2, vlan(10, VlanProtocol::Ieee8021Q)));
        elsewhere.lower_netnsid = Some(3);
        let e = vlan_of("eth0.10", &elsewhere).unwrap_err().to_string();
        assert!(e.contains("is in another network namespace"), "{e}");
        let mut no_id = elsewhere.clone();
        no_id.lower_netnsid = None;
        no_id.vlan_id = None;
        let e = vlan_of("eth0.10", &no_id).unwrap_err().to_string();
        assert_eq!(
            e,
            "parent eth0.10 is a VLAN link with the id None; the kernel reports ids 1-4094"
        );
    }
}
