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
use macvlan_common::{Counter, EndpointCounters, VlanCounters, DEFAULT_ENDPOINTS, VLAN_SLOTS};

use super::Name;
use crate::{
    controller::datapath::pin_dir,
    datapath::{
        hooks::{self, HookSet},
        pinned::PinnedMaps,
        VerdictTable,
    },
    model::{IfName, Mac, Network, Owner, Policy, State, XdpMode},
};

/// Counters of one endpoint, with who it is. The names are shared
/// ([`Name`], slices of one buffer): a [`Roster`] hands them to every
/// snapshot read from it without copying them.
#[derive(Clone, Debug)]
pub struct EndpointStats {
    pub container: Name,
    pub container_id: Name,
    /// Who made the endpoint: mvnet, or the runtime it was adopted from
    /// (`cni:NAME`: its CNI network's).
    pub owner: Owner,
    /// Interface name inside the container.
    pub ifname: IfName,
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Its slot in the classifier, `None` when the classifier has no entry
    /// for it (not attached, or needs `mvnet restore`).
    pub slot: Option<u32>,
    /// rx from the wire, rx over the local bridge path, tx; zero when
    /// `slot` is `None`.
    pub counters: EndpointCounters,
    /// Frames its own device sent that failed the source checks
    /// (ENDPOINT_TX_INVALID): dropped under enforce, passed under observe,
    /// and not in `counters.tx` either way. Zero for endpoints without
    /// device checks (passthru, devices mvnet did not register).
    pub tx_invalid: Counter,
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
            read.stats.xdp_mode = Some(*mode);
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
        let read = roots
            .get_mut(&net.root)
            .expect("every network's root was read");
        read.stats.vlans.entry(net.vlan).or_default();
        for ep in &mut net.endpoints {
            ep.slot = read.slots.slot(ep.mac, net.vlan);
            let Some(slot) = ep.slot else { continue };
            ep.counters = read
                .counters
                .get(slot as usize)
                .copied()
                .unwrap_or_default();
            if let Ok(i) = read.tx_invalid.binary_search_by_key(&slot, |(s, _)| *s) {
                ep.tx_invalid = read.tx_invalid[i].1;
            }
        }
    }
    Snapshot {
        taken,
        at,
        roots: roots.into_values().map(|r| r.stats).collect(),
        networks,
    }
}

/// `nets` and their endpoints, sorted (networks by name), without
/// counters yet.
fn listed(state: &State, nets: &[&Network]) -> Vec<NetworkStats> {
    let (names, lists) = unsorted_endpoints(state, nets);
    let names = Arc::new(names);
    let mut networks: Vec<NetworkStats> = nets
        .iter()
        .zip(lists)
        .map(|(net, endpoints)| {
            let (root, vlan) = net.root();
            NetworkStats {
                id: net.id.clone(),
                name: net.name.clone(),
                owner: net.owner.clone(),
                parent: net.parent.clone(),
                root: root.to_owned(),
                vlan,
                policy: net.policy,
                endpoints: sorted(&names, endpoints),
            }
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    networks
}

/// The names' buffer and each network's endpoints, unsorted.
type Listing = (String, Vec<Vec<Unsorted>>);

/// Bytes of a container's name and id, for the first guess of the room
/// they take (ids are 64 hex digits).
const NAME_AND_ID_BYTES: usize = 80;

/// An endpoint listed, its container's name and id still offsets into
/// the names' buffer.
struct Unsorted {
    name: (u32, u32),
    id: (u32, u32),
    owner: Owner,
    ifname: IfName,
    mac: Mac,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
}

/// The containers' names and ids, one after the other (each container's
/// once), and the endpoints of each of `nets` (in the same order) in the
/// order of the containers: one walk over their heads ([`Containers::
/// listed`]), which parses no container and reads memory in order (at
/// 65,536 containers, walking the parsed records instead, some 100 MiB
/// in the heap, cost a cache miss or more per record and field), each
/// endpoint's network found by its id.
///
/// A network's list gets room for every container when it is the only one
/// listed (the usual case); otherwise it grows as it fills.
///
/// [`Containers::listed`]: crate::model::Containers::listed
fn unsorted_endpoints(state: &State, nets: &[&Network]) -> Listing {
    let n = state.containers.len();
    let per_net = if nets.len() == 1 { n } else { 0 };
    let mut names = String::with_capacity(n * NAME_AND_ID_BYTES);
    let mut lists: Vec<Vec<Unsorted>> = (0..nets.len())
        .map(|_| Vec::with_capacity(per_net))
        .collect();
    let mut by_id: Vec<usize> = (0..nets.len()).collect();
    by_id.sort_by(|&a, &b| nets[a].id.cmp(&nets[b].id));
    let mut push = |s: &str| {
        let start = u32::try_from(names.len()).expect("names under 4 GiB");
        names.push_str(s);
        (start, s.len() as u32)
    };
    // The previous endpoint's network id and where it is listed: the next
    // endpoint is nearly always on the same network, and its id then the
    // same shared text, so finding it compares two pointers.
    let mut last: Option<(&str, Option<usize>)> = None;
    for c in state.containers.listed() {
        let mut pushed = None;
        for ep in c.endpoints {
            let found = match last {
                Some((id, found)) if std::ptr::eq(id, ep.network) || id == ep.network => found,
                _ => {
                    let found = by_id
                        .binary_search_by(|&i| nets[i].id.as_str().cmp(ep.network))
                        .ok()
                        .map(|i| by_id[i]);
                    last = Some((ep.network, found));
                    found
                }
            };
            let Some(net) = found else {
                continue;
            };
            let (name, id) = *pushed.get_or_insert_with(|| (push(c.name), push(c.id)));
            lists[net].push(Unsorted {
                name,
                id,
                owner: c.owner.of_endpoint_on(nets[net]),
                ifname: ep.ifname.clone(),
                mac: ep.mac,
                ipv4: ep.ipv4,
                ipv6: ep.ipv6,
            });
        }
    }
    (names, lists)
}

/// `endpoints` sorted by container name, then interface: an order of
/// their indices sorted by the names' first 12 bytes as one number (the
/// names themselves compared only where those are equal). (Sorting the
/// endpoints by their names cost some 20 ms at 65,536 of them: a call to
/// memcmp and two loads from other allocations per comparison, and
/// 170-byte elements moved.)
fn sorted(names: &Arc<String>, endpoints: Vec<Unsorted>) -> Vec<EndpointStats> {
    let name = |e: &Unsorted| &names[e.name.0 as usize..(e.name.0 + e.name.1) as usize];
    // One number per endpoint, its name's key above its index: numbers
    // sort fastest (no comparator to call, 16 bytes moved). Then the runs
    // of equal keys, if any, by the names themselves.
    let mut order: Vec<u128> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| name_key(name(e)) | i as u128)
        .collect();
    order.sort_unstable();
    let index = |o: u128| o as u32 as usize;
    for run in order
        .chunk_by_mut(|a, b| a >> 32 == b >> 32)
        .filter(|r| r.len() > 1)
    {
        run.sort_unstable_by(|a, b| {
            let (a, b) = (&endpoints[index(*a)], &endpoints[index(*b)]);
            (name(a), &a.ifname).cmp(&(name(b), &b.ifname))
        });
    }
    // `Name::in_buf` reads no byte of the names: the rows are made in name
    // order, and the buffer holds the names in the containers' order.
    // The endpoints are read in that order too, from all over their list
    // (6 MiB at 65,536): each read a cache miss, and the two atomic
    // increments of each row (its names' shared buffer) keep the CPU from
    // running ahead to the next rows' reads, so every miss was waited for
    // in turn (most of the time of the rows, in a profile). Prefetches
    // are not held back by those increments: the rows [`PREFETCH_AHEAD`]
    // ahead are asked for first.
    order
        .iter()
        .enumerate()
        .map(|(k, &o)| {
            if let Some(&ahead) = order.get(k + PREFETCH_AHEAD) {
                crate::sys::cache::prefetch(&endpoints[index(ahead)]);
            }
            let e = &endpoints[index(o)];
            EndpointStats {
                container: Name::in_buf(names, e.name.0, e.name.1),
                container_id: Name::in_buf(names, e.id.0, e.id.1),
                owner: e.owner.clone(),
                ifname: e.ifname.clone(),
                mac: e.mac,
                ipv4: e.ipv4,
                ipv6: e.ipv6,
                slot: None,
                counters: EndpointCounters::default(),
                tx_invalid: Counter::default(),
            }
        })
        .collect()
}

/// How many rows ahead [`sorted`] asks for the endpoint it reads: enough
/// misses in flight to cover a miss's latency, few enough that what was
/// fetched is still in cache when read.
const PREFETCH_AHEAD: usize = 16;

/// The first 12 bytes of `name`, zero-padded, as a big-endian number in
/// the top 96 bits (the low 32 are 0): when two keys differ they order as
/// their names do (a name that ends within the 12 bytes is a prefix of the
/// other up to there, so the smaller).
fn name_key(name: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = name.len().min(12);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// The slots of a classifier's endpoints by [`slot_key`].
type Slots = HashMap<u64, u32, BuildHasherDefault<KeyHash>>;

/// What was read of one root's classifier.
struct RootRead {
    slots: SlotFinder,
    stats: RootStats,
    /// Per slot.
    counters: Vec<EndpointCounters>,
    /// The slots with invalid frames sent, ascending.
    tx_invalid: Vec<(u32, Counter)>,
}

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
        return Ok(RootRead {
            slots: unattached,
            stats,
            counters: Vec::new(),
            tx_invalid: Vec::new(),
        });
    };
    stats.hooks = Some(hooks);
    let maps = PinnedMaps::open(dir)?;
    // No walk of the ENDPOINTS hash: the count is the fill word beside the
    // direct index, and the endpoints' slots are found in the index as
    // they are joined (see SlotFinder).
    let counters = maps.counters()?;
    let tx_invalid = maps.tx_invalid_counts()?;
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
    Ok(RootRead {
        slots,
        stats,
        counters: counters.endpoints,
        tx_invalid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, Endpoint};

    fn network(id: &str, name: &str) -> Network {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "created": "2026-12-01T00:00:00Z",
            "parent": "eth0", "parent_origin": "existing", "vlan": null, "mode": "bridge",
            "internal": false, "enable_ipv6": false, "pools": [], "options": {},
        }))
        .unwrap()
    }

    /// Container `id` called `name` with an endpoint (interface, MAC's last
    /// byte) on each network id given.
    fn container(id: &str, name: &str, endpoints: &[(&str, &str, u8)]) -> (String, Container) {
        let endpoints = endpoints
            .iter()
            .map(|&(net, ifname, mac)| {
                let ep = Endpoint {
                    id: format!("ep-{id}-{net}"),
                    network_id: net.into(),
                    ifname: ifname.into(),
                    mac: Mac::new([2, 0x42, 0, 0, 0, mac]),
                    ipv4: Some(Ipv4Addr::new(10, 9, 0, mac)),
                    ipv6: None,
                    rx_base: 0,
                };
                (net.to_owned(), ep)
            })
            .collect();
        let c = Container {
            id: id.into(),
            name: name.into(),
            endpoints,
            ..Default::default()
        };
        (id.into(), c)
    }

    /// What `listed` printed before it walked the containers once: per
    /// network, the containers with an endpoint on it, sorted by
    /// (container name, interface).
    fn listed_per_network(state: &State, nets: &[&Network]) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = nets
            .iter()
            .map(|net| {
                let mut eps: Vec<(&str, &str, &Container)> = state
                    .containers
                    .values()
                    .filter_map(|c| {
                        Some((
                            c.name.as_str(),
                            c.endpoints.get(&net.id)?.ifname.as_str(),
                            c,
                        ))
                    })
                    .collect();
                eps.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
                let eps = eps
                    .into_iter()
                    .map(|(name, ifname, c)| {
                        let ep = &c.endpoints[&net.id];
                        format!("{name}/{}/{ifname}/{}/{:?}", c.id, ep.mac, ep.ipv4)
                    })
                    .collect();
                (net.name.clone(), eps)
            })
            .collect();
        out.sort();
        out
    }

    fn shown(networks: &[NetworkStats]) -> Vec<(String, Vec<String>)> {
        networks
            .iter()
            .map(|n| {
                let eps = n
                    .endpoints
                    .iter()
                    .map(|e| {
                        format!(
                            "{}/{}/{}/{}/{:?}",
                            e.container, e.container_id, e.ifname, e.mac, e.ipv4
                        )
                    })
                    .collect();
                (n.name.clone(), eps)
            })
            .collect()
    }

    #[test]
    fn lists_endpoints_by_network_name_then_container_and_interface() {
        let mut state = State::default();
        // Network names in another order than their ids.
        for (id, name) in [("n1", "zeta"), ("n2", "alpha"), ("n3", "mid")] {
            state.networks.insert(id.into(), network(id, name));
        }
        // Container ids in another order than their names; names that
        // share their first 12 bytes (and differ after), that are
        // prefixes of others, empty; containers on several networks.
        let long = "k8s_POD_web-7d4b9c-";
        state.containers = [
            container("c1", "bench-10000", &[("n1", "eth0", 1), ("n2", "eth1", 2)]),
            container("c2", "bench-1000", &[("n1", "eth0", 3)]),
            container(
                "c3",
                &format!("{long}2"),
                &[("n1", "eth0", 4), ("n3", "net1", 5)],
            ),
            container(
                "c4",
                &format!("{long}10"),
                &[("n1", "net2", 6), ("n2", "eth0", 7)],
            ),
            container("c5", long, &[("n1", "eth0", 8)]),
            container("c6", "", &[("n2", "eth0", 9)]),
            container(
                "c7",
                "bench-1000",
                &[("n2", "eth0", 10), ("n3", "eth0", 11)],
            ),
            container("c8", "stopped", &[]),
            container("c0", "bench-1000\0x", &[("n1", "eth0", 12)]),
        ]
        .into_iter()
        .collect();
        let all = selected(&state, None);
        let listed_all = listed(&state, &all);
        assert_eq!(shown(&listed_all), listed_per_network(&state, &all));
        assert_eq!(
            listed_all
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            ["alpha", "mid", "zeta"]
        );
        assert_eq!(
            listed_all[2]
                .endpoints
                .iter()
                .map(|e| &*e.container_id)
                .collect::<Vec<_>>(),
            ["c2", "c0", "c1", "c5", "c4", "c3"]
        );
        let one = selected(&state, Some("n2"));
        assert_eq!(
            shown(&listed(&state, &one)),
            listed_per_network(&state, &one)
        );
        assert_eq!(
            shown(&listed(&state, &one))[0].1,
            [
                "/c6/eth0/02:42:00:00:00:09/Some(10.9.0.9)",
                "bench-1000/c7/eth0/02:42:00:00:00:0a/Some(10.9.0.10)",
                "bench-10000/c1/eth1/02:42:00:00:00:02/Some(10.9.0.2)",
                "k8s_POD_web-7d4b9c-10/c4/eth0/02:42:00:00:00:07/Some(10.9.0.7)",
            ]
        );
    }

    #[test]
    fn many_containers_list_as_sorted_per_network() {
        let mut state = State::default();
        for (id, name) in [("n1", "one"), ("n2", "two")] {
            state.networks.insert(id.into(), network(id, name));
        }
        let n = 4103;
        state.containers = (0..n)
            .map(|i| {
                // Ids and names in different orders; every third container
                // on both networks, the rest on one; long names alike in
                // their first 12 bytes.
                let name = match i % 4 {
                    0 => format!("web-{i}"),
                    1 => format!("a-long-shared-prefix-{}", n - i),
                    _ => format!("{}", i * 7919 % n),
                };
                let last = (i % 250) as u8;
                let eps: &[(&str, &str, u8)] = match i % 3 {
                    0 => &[("n1", "eth0", last), ("n2", "eth1", last)],
                    1 => &[("n1", "net1", last)],
                    _ => &[("n2", "eth0", last)],
                };
                container(&format!("{:08x}", i * 2654435761 % (1 << 32)), &name, eps)
            })
            .collect();
        let all = selected(&state, None);
        let listed_all = listed(&state, &all);
        assert_eq!(shown(&listed_all), listed_per_network(&state, &all));
        let counts: Vec<usize> = listed_all.iter().map(|n| n.endpoints.len()).collect();
        assert_eq!(
            counts,
            [n / 3 + 1 + (n - 2) / 3 + 1, n / 3 + 1 + (n - 3) / 3 + 1]
        );
    }

    #[test]
    fn name_keys_order_as_the_names_where_they_differ() {
        let names = [
            "",
            "\0",
            "a",
            "a\0",
            "a\0\0b",
            "ab",
            "bench-1000",
            "bench-10000",
            "bench-1001",
            "0123456789abcdef",
            "0123456789abcdef0",
            "0123456789abcdeg",
            "0123456789ab",
            "0123456789ab0",
            "0123456789ac",
            "\u{ff}",
        ];
        for a in names {
            for b in names {
                let (ka, kb) = (name_key(a), name_key(b));
                if ka != kb {
                    assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} {b:?}");
                }
            }
        }
        assert_eq!(name_key("0123456789ab"), name_key("0123456789ab0"));
        assert_eq!(name_key("0123456789ab") as u32, 0, "room for an index");
    }

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
