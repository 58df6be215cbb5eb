//! Reading every counter of every root device at one moment.
use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hasher},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime},
};

use anyhow::Result;
use macvlan_common::{EndpointCounters, VlanCounters, DEFAULT_ENDPOINTS, VLAN_SLOTS};

use crate::{
    controller::datapath::pin_dir,
    datapath::{
        hooks::{self, HookSet},
        pinned::PinnedMaps,
        VerdictTable,
    },
    model::{Mac, Network, Owner, Policy, State, XdpMode},
};

/// Counters of one endpoint, with who it is. The names are shared
/// (`Arc<str>`): a [`Roster`] hands them to every snapshot read from it
/// without copying them.
#[derive(Clone, Debug)]
pub struct EndpointStats {
    pub container: Arc<str>,
    pub container_id: Arc<str>,
    /// Who made the endpoint: mvnet, or the runtime it was adopted from
    /// (`cni:NAME`: its CNI network's).
    pub owner: Owner,
    /// Interface name inside the container.
    pub ifname: Arc<str>,
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
    /// The hooks it runs on, as its pinned links say (`None`: not
    /// attached), and the `--xdp-mode` of its first network (why).
    pub hooks: Option<HookSet>,
    pub xdp_mode: Option<XdpMode>,
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
/// id, if given): the endpoint counters through a mapping, the other
/// counters in one batch read per map, per root device.
pub fn collect(state: &State, only: Option<&str>) -> Result<Snapshot> {
    let (taken, at) = (SystemTime::now(), Instant::now());
    let nets = selected(state, only);
    let dirs = root_dirs(&nets)?;
    // The maps are read on another thread (on another CPU) while this one
    // lists the endpoints, which costs about as much at 4096 of them.
    let (reads, networks) = std::thread::scope(|s| {
        let reads = s.spawn(|| read_roots(&dirs));
        let networks = listed(state, &nets);
        let reads = reads
            .join()
            .map_err(|_| anyhow::anyhow!("reading the classifier's maps panicked"));
        (reads, networks)
    });
    Ok(joined(taken, at, reads??, networks))
}

/// Who is on which network: the networks and endpoints of a state, listed
/// and sorted once, with the pin directories of their root devices. Reads
/// from it ([`Roster::read`]) only read the maps: the exporter keeps one
/// per state file instead of the state itself, which at 65,536 endpoints
/// is several times larger.
#[derive(Clone, Debug)]
pub struct Roster {
    /// As in a [`Snapshot`], with no counters.
    networks: Vec<NetworkStats>,
    dirs: BTreeMap<String, RootDir>,
}

/// A root device's pin directory and the `--xdp-mode` of its first
/// network.
type RootDir = (PathBuf, XdpMode);

impl Roster {
    /// The roster of `state` (of network `only`, an id, if given). Pin
    /// directories are those of the calling thread's namespace.
    pub fn of(state: &State, only: Option<&str>) -> Result<Roster> {
        let nets = selected(state, only);
        Ok(Roster {
            dirs: root_dirs(&nets)?,
            networks: listed(state, &nets),
        })
    }

    /// Every counter of the roster's endpoints and root devices, now.
    pub fn read(&self) -> Result<Snapshot> {
        let (taken, at) = (SystemTime::now(), Instant::now());
        let reads = read_roots(&self.dirs)?;
        Ok(joined(taken, at, reads, self.networks.clone()))
    }
}

fn selected<'s>(state: &'s State, only: Option<&str>) -> Vec<&'s Network> {
    state
        .networks
        .values()
        .filter(|n| only.is_none_or(|id| n.id == id))
        .collect()
}

/// The root devices of `nets` and their pin directories, found in the
/// calling thread's namespace: the thread that reads the maps must not
/// depend on which namespace it starts in.
fn root_dirs(nets: &[&Network]) -> Result<BTreeMap<String, RootDir>> {
    let mut dirs = BTreeMap::new();
    for net in nets {
        let root = net.root().0;
        if !dirs.contains_key(root) {
            dirs.insert(root.to_owned(), (pin_dir(root)?, net.xdp_mode));
        }
    }
    Ok(dirs)
}

fn read_roots(dirs: &BTreeMap<String, RootDir>) -> Result<BTreeMap<String, RootRead>> {
    dirs.iter()
        .map(|(root, (dir, mode))| {
            let mut read = read_root(root, dir)?;
            read.1.xdp_mode = Some(*mode);
            Ok((root.clone(), read))
        })
        .collect()
}

/// The snapshot of `networks` (listed, without counters) with the counters
/// of their roots.
fn joined(
    taken: SystemTime,
    at: Instant,
    mut roots: BTreeMap<String, RootRead>,
    mut networks: Vec<NetworkStats>,
) -> Snapshot {
    for net in &mut networks {
        let (slots, stats, counters) = roots
            .get_mut(&net.root)
            .expect("every network's root was read");
        stats.vlans.entry(net.vlan).or_default();
        for ep in &mut net.endpoints {
            ep.slot = slots.slot(ep.mac, net.vlan);
            ep.counters = ep
                .slot
                .and_then(|s| counters.get(s as usize).copied())
                .unwrap_or_default();
        }
    }
    Snapshot {
        taken,
        at,
        roots: roots.into_values().map(|(_, r, _)| r).collect(),
        networks,
    }
}

/// `nets` and their endpoints, sorted (networks by name), without
/// counters yet.
fn listed(state: &State, nets: &[&Network]) -> Vec<NetworkStats> {
    // Most endpoints share a handful of interface names (eth0): one
    // allocation each.
    let mut ifnames: HashMap<&str, Arc<str>> = HashMap::new();
    let mut networks: Vec<NetworkStats> = nets
        .iter()
        .map(|net| {
            let (root, vlan) = net.root();
            let mut endpoints = Vec::with_capacity(state.containers.len());
            for c in state.containers.values() {
                let Some(ep) = c.endpoints.get(&net.id) else {
                    continue;
                };
                let ifname = ifnames
                    .entry(ep.ifname.as_str())
                    .or_insert_with(|| Arc::from(ep.ifname.as_str()))
                    .clone();
                endpoints.push(EndpointStats {
                    container: Arc::from(c.name.as_str()),
                    container_id: Arc::from(c.id.as_str()),
                    owner: c.endpoint_owner(net),
                    ifname,
                    mac: ep.mac,
                    ipv4: ep.ipv4,
                    ipv6: ep.ipv6,
                    slot: None,
                    counters: EndpointCounters::default(),
                });
            }
            endpoints.shrink_to_fit();
            endpoints
                .sort_unstable_by(|a, b| (&a.container, &a.ifname).cmp(&(&b.container, &b.ifname)));
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
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    networks
}

/// The slots of a classifier's endpoints by [`slot_key`].
type Slots = HashMap<u64, u32, BuildHasherDefault<KeyHash>>;

type RootRead = (SlotFinder, RootStats, Vec<EndpointCounters>);

/// Index misses after which [`SlotFinder`] reads the whole hash once
/// instead of looking each endpoint up (a system call each, about a
/// microsecond; the batch read walks every bucket, some 50 ms at 65,536
/// slots).
const LOOKUPS_BEFORE_BATCH: usize = 4096;

/// Finds endpoints' slots in a classifier's table: in the mapped direct
/// index (no system call), which holds nearly every endpoint; the few it
/// does not hold (their word taken by another endpoint) in the ENDPOINTS
/// hash, one lookup each, or, past [`LOOKUPS_BEFORE_BATCH`] of them, in
/// one batch read of the whole hash.
struct SlotFinder {
    /// `None`: the classifier is not attached.
    maps: Option<PinnedMaps>,
    lookups: usize,
    all: Option<Slots>,
}

impl SlotFinder {
    fn slot(&mut self, mac: Mac, vlan: u16) -> Option<u32> {
        if let Some(all) = &self.all {
            return all.get(&slot_key(mac, vlan)).copied();
        }
        let maps = self.maps.as_ref()?;
        if let Ok(Some(slot)) = maps.indexed_slot(mac.octets(), vlan) {
            return Some(slot);
        }
        let view = maps.endpoints_ro()?;
        self.lookups += 1;
        if self.lookups > LOOKUPS_BEFORE_BATCH {
            if let Ok(entries) = view.entries() {
                let all: Slots = entries
                    .into_iter()
                    .map(|(k, v)| (slot_key(Mac::new(k.mac), k.vlan), v.slot))
                    .collect();
                let slot = all.get(&slot_key(mac, vlan)).copied();
                self.all = Some(all);
                return slot;
            }
        }
        view.get(mac.octets(), vlan).map(|e| e.slot)
    }
}

/// (MAC, VLAN) in one word: the MAC's 48 bits and the VLAN above them.
fn slot_key(mac: Mac, vlan: u16) -> u64 {
    let m = mac.octets();
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]) | u64::from(vlan) << 48
}

/// A multiplicative hash of a [`slot_key`]: SipHash, the default, cost
/// more than the rest of the join at 65,536 endpoints, and these keys come
/// from the kernel's table, not from anyone who could choose them to
/// collide.
#[derive(Default)]
struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The high bits of the product mix every bit of the key; hashbrown
        // takes its buckets from the low bits and its tags from the top.
        let h = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

/// The table and counters of the classifier on `root`; all zero when it
/// is not attached.
fn read_root(root: &str, dir: &Path) -> Result<RootRead> {
    let mut stats = RootStats {
        root: root.to_owned(),
        attached: false,
        hooks: None,
        xdp_mode: None,
        endpoints: 0,
        capacity: DEFAULT_ENDPOINTS,
        vlans: BTreeMap::new(),
        verdicts: VerdictTable::default(),
    };
    let unattached = SlotFinder {
        maps: None,
        lookups: 0,
        all: None,
    };
    let Some(hooks) = hooks::in_use(dir) else {
        return Ok((unattached, stats, Vec::new()));
    };
    stats.hooks = Some(hooks);
    let maps = PinnedMaps::open(dir)?;
    // No walk of the ENDPOINTS hash: the count is the fill word beside the
    // direct index, and the endpoints' slots are found in the index as
    // they are joined (see SlotFinder).
    let counters = maps.counters()?;
    stats.attached = true;
    stats.capacity = maps.capacity()?;
    stats.endpoints = maps.endpoint_count()?;
    stats.verdicts = counters.verdicts.clone();
    for vid in 0..VLAN_SLOTS as u16 {
        let v = counters.vlan(vid);
        if v != VlanCounters::default() {
            stats.vlans.insert(vid, v);
        }
    }
    let slots = SlotFinder {
        maps: Some(maps),
        ..unattached
    };
    Ok((slots, stats, counters.endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_keys_keep_mac_and_vlan_apart() {
        let mac = |last: u8| Mac::new([0x02, 0x42, 0, 0, 0, last]);
        let mut slots = Slots::default();
        for (i, vlan) in [0u16, 1, 10, 4094, 0xffff].into_iter().enumerate() {
            for last in 0..=255 {
                slots.insert(slot_key(mac(last), vlan), i as u32 * 256 + u32::from(last));
            }
        }
        assert_eq!(slots.len(), 5 * 256);
        assert_eq!(slots.get(&slot_key(mac(7), 4094)), Some(&(3 * 256 + 7)));
        assert_eq!(slots.get(&slot_key(mac(7), 4093)), None);
        assert_eq!(
            slot_key(Mac::new([1, 2, 3, 4, 5, 6]), 0x0a0b),
            0x0a0b_0605_0403_0201
        );
    }
}
