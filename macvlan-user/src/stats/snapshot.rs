//! Reading every counter of every root device at one moment.
use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use anyhow::Result;
use macvlan_common::{EndpointCounters, VlanCounters, DEFAULT_ENDPOINTS, VLAN_SLOTS};

use crate::{
    controller::datapath::pin_dir,
    datapath::{
        pinned::{self, PinnedMaps},
        VerdictTable,
    },
    model::{Mac, Network, Owner, Policy, State},
};

/// Counters of one endpoint, with who it is.
#[derive(Clone, Debug)]
pub struct EndpointStats {
    pub container: String,
    pub container_id: String,
    /// Who made the endpoint: mvnet, or the runtime it was adopted from
    /// (`cni:NAME`: its CNI network's).
    pub owner: Owner,
    /// Interface name inside the container.
    pub ifname: String,
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Its slot in the classifier, `None` when the classifier has no entry
    /// for it (not attached, or needs `mvnet restore`).
    pub slot: Option<u32>,
    /// rx from the wire, rx over the local bridge path, tx; zero when
    /// `slot` is `None`.
    pub counters: EndpointCounters,
}

/// One network and its endpoints.
#[derive(Clone, Debug)]
pub struct NetworkStats {
    pub id: String,
    pub name: String,
    /// Who made the network: mvnet, or the runtime it was adopted from.
    pub owner: Owner,
    pub parent: String,
    /// The device the classifier sits on.
    pub root: String,
    /// The network's VLAN id on the root (0 = untagged).
    pub vlan: u16,
    pub policy: Policy,
    /// Sorted by container name, then interface.
    pub endpoints: Vec<EndpointStats>,
}

/// The classifier of one root device: what is shared by the networks on it.
#[derive(Clone, Debug)]
pub struct RootStats {
    pub root: String,
    /// Whether its pins exist (the classifier is attached).
    pub attached: bool,
    /// Endpoints in its table, and the table's capacity.
    pub endpoints: usize,
    pub capacity: u32,
    /// Per VLAN id (0 = untagged): every VLAN with traffic, and every VLAN
    /// of a network on this root even when idle.
    pub vlans: BTreeMap<u16, VlanCounters>,
    /// Per hook and verdict.
    pub verdicts: VerdictTable,
}

/// Every counter at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Wall clock of the read, for reports.
    pub taken: SystemTime,
    /// Monotonic clock of the read, for rates between two snapshots.
    pub at: Instant,
    /// Sorted by root name.
    pub roots: Vec<RootStats>,
    /// Sorted by network name.
    pub networks: Vec<NetworkStats>,
}

impl Snapshot {
    pub fn root(&self, root: &str) -> Option<&RootStats> {
        self.roots.iter().find(|r| r.root == root)
    }

    pub fn network(&self, name: &str) -> Option<&NetworkStats> {
        self.networks.iter().find(|n| n.name == name)
    }
}

/// Reads the counters of every network's classifier (of `only`, a network
/// id, if given): one batched read per map and root device.
pub fn collect(state: &State, only: Option<&str>) -> Result<Snapshot> {
    let (taken, at) = (SystemTime::now(), Instant::now());
    let nets: Vec<_> = state
        .networks
        .values()
        .filter(|n| only.is_none_or(|id| n.id == id))
        .collect();

    // The root devices, with their pin directories found here: the reading
    // thread below must not depend on which namespace it starts in.
    let mut dirs: BTreeMap<&str, PathBuf> = BTreeMap::new();
    for net in &nets {
        let root = net.root().0;
        if !dirs.contains_key(root) {
            dirs.insert(root, pin_dir(root)?);
        }
    }

    // The maps are read on another thread (on another CPU) while this one
    // lists the endpoints, which costs about as much at 4096 of them.
    let (roots, mut networks) = std::thread::scope(|s| {
        let reads = s.spawn(|| -> Result<BTreeMap<String, RootRead>> {
            dirs.iter()
                .map(|(root, dir)| Ok(((*root).to_owned(), read_root(root, dir)?)))
                .collect()
        });
        let networks: Vec<NetworkStats> = nets.iter().map(|net| listed(state, net)).collect();
        let roots = reads
            .join()
            .map_err(|_| anyhow::anyhow!("reading the classifier's maps panicked"));
        (roots, networks)
    });
    // Root device → (its maps' slots by (MAC, VLAN), its stats, counters).
    let mut roots = roots??;
    for net in &mut networks {
        let (slots, stats, counters) = roots
            .get_mut(&net.root)
            .expect("every network's root was read");
        stats.vlans.entry(net.vlan).or_default();
        for ep in &mut net.endpoints {
            ep.slot = slots.get(&(ep.mac, net.vlan)).copied();
            ep.counters = ep
                .slot
                .and_then(|s| counters.get(s as usize).copied())
                .unwrap_or_default();
        }
    }
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Snapshot {
        taken,
        at,
        roots: roots.into_values().map(|(_, r, _)| r).collect(),
        networks,
    })
}

/// `net` and its endpoints, sorted, without counters yet.
fn listed(state: &State, net: &Network) -> NetworkStats {
    let (root, vlan) = net.root();
    let mut endpoints = Vec::with_capacity(state.containers.len());
    for c in state.containers.values() {
        let Some(ep) = c.endpoints.get(&net.id) else {
            continue;
        };
        endpoints.push(EndpointStats {
            container: c.name.clone(),
            container_id: c.id.clone(),
            owner: c.endpoint_owner(net),
            ifname: ep.ifname.clone(),
            mac: ep.mac,
            ipv4: ep.ipv4,
            ipv6: ep.ipv6,
            slot: None,
            counters: EndpointCounters::default(),
        });
    }
    endpoints.sort_unstable_by(|a, b| (&a.container, &a.ifname).cmp(&(&b.container, &b.ifname)));
    NetworkStats {
        id: net.id.clone(),
        name: net.name.clone(),
        owner: net.owner.clone(),
        parent: net.parent.clone(),
        root: root.to_owned(),
        vlan,
        policy: net.policy,
        endpoints,
    }
}

type RootRead = (HashMap<(Mac, u16), u32>, RootStats, Vec<EndpointCounters>);

/// The table and counters of the classifier on `root`; all zero when it
/// is not attached.
fn read_root(root: &str, dir: &Path) -> Result<RootRead> {
    let mut stats = RootStats {
        root: root.to_owned(),
        attached: false,
        endpoints: 0,
        capacity: DEFAULT_ENDPOINTS,
        vlans: BTreeMap::new(),
        verdicts: VerdictTable::default(),
    };
    if !pinned::is_attached(dir) {
        return Ok((HashMap::new(), stats, Vec::new()));
    }
    let maps = PinnedMaps::open(dir)?;
    // The table and the counter arrays are read at once, on two CPUs: each
    // batch costs about a millisecond of kernel time at 4096 endpoints.
    let (entries, counters) = std::thread::scope(|s| {
        let counters = s.spawn(|| maps.counters());
        let entries = match maps.endpoints_ro() {
            Some(view) => view.entries(),
            None => Ok(Vec::new()),
        };
        (entries, counters.join())
    });
    let entries = entries?;
    let counters = counters.map_err(|_| anyhow::anyhow!("reading the counters panicked"))??;
    stats.attached = true;
    stats.capacity = maps.capacity()?;
    stats.endpoints = entries.len();
    stats.verdicts = counters.verdicts.clone();
    for vid in 0..VLAN_SLOTS as u16 {
        let v = counters.vlan(vid);
        if v != VlanCounters::default() {
            stats.vlans.insert(vid, v);
        }
    }
    let slots = entries
        .into_iter()
        .map(|(k, v)| ((Mac::new(k.mac), k.vlan), v.slot))
        .collect();
    Ok((slots, stats, counters.endpoints))
}
