//! The state's journal: the changes saved since the state file was last
//! written whole, one JSON record per line, so that a command saves what
//! it changed (a container, a network's new address) instead of every
//! container there is.
//!
//! The first line is a [`Header`] naming the state file the records apply
//! to (its inode and size): the journal is written afresh (by a rename)
//! right after the state file is, so a journal whose header names another
//! file predates that state file, which already holds its records. Each
//! record after it holds whole networks and containers as they now are
//! (`null` for a removed one), a network's address changes alone when
//! nothing else of it changed, and the pending intents: applying a record
//! twice gives what applying it once gave. A record is saved when its line
//! and the newline after it are written and synced; a last line without
//! its newline (a writer killed in the middle) was never saved and is
//! ignored.
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    ipam::Pool,
    model::{Id, Intent, Network, Saved, State, Unread},
};

/// What a journal holds records for.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The journal format (1).
    pub journal: u32,
    /// The state file the records apply to.
    pub base_inode: u64,
    pub base_size: u64,
}

impl Header {
    pub const VERSION: u32 = 1;

    /// The header line (with its newline).
    pub fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a header serialises");
        line.push(b'\n');
        line
    }
}

/// The addresses handed out and given back in one pool of a network.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PoolChange {
    /// Index in the network's pools.
    pub pool: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocated: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<IpAddr>,
}

/// One save: what changed from the state before it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Record {
    /// Networks added or changed (`null`: removed), by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Option<Network>>,
    /// Networks of which only the addresses handed out changed, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, Vec<PoolChange>>,
    /// Containers added or changed (`null`: removed), by id, as their JSON
    /// (read: parsed when applied).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub containers: BTreeMap<String, Option<Box<RawValue>>>,
    /// The pending intents after the save (all of them: a handful).
    #[serde(default)]
    pub pending: Vec<Intent>,
    /// The containers' JSON as the state now shares it (a save's, for its
    /// baseline).
    #[serde(skip)]
    shared: BTreeMap<String, Saved>,
}

impl Record {
    /// The record's line (with its newline). Compact JSON escapes every
    /// newline inside strings, so the line has no other.
    pub fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a state record serialises");
        line.push(b'\n');
        line
    }
}

/// The state as saved (state file and journal), which the next save
/// records the changes from: the networks, and each container's JSON.
pub struct Baseline {
    pub networks: BTreeMap<String, Network>,
    containers: SavedContainers,
}

enum SavedContainers {
    /// The same JSON the state's unchanged containers hold, so that an
    /// unchanged container is found by comparing pointers.
    All(BTreeMap<Id, Saved>),
    /// While the state's containers are unread (`model::unread`): the
    /// state file's, and those added, changed or removed (`None`) since.
    /// Made into `All` by the first save after the state read them.
    Unread {
        file: Option<Arc<Unread>>,
        changed: BTreeMap<Id, Option<Saved>>,
    },
}

impl Baseline {
    /// The baseline of `state` as just read or written whole.
    pub fn of(state: &State) -> Baseline {
        let containers = match state.containers.changed_since_file() {
            Some(changed) => SavedContainers::Unread {
                file: state.containers.unread_file().flatten().cloned(),
                changed: changed
                    .map(|(id, slot)| {
                        let raw = slot.map(|saved| match saved {
                            Some(raw) => raw.clone(),
                            None => json_of(state, id),
                        });
                        (id.clone(), raw)
                    })
                    .collect(),
            },
            // The JSON each container holds as it walks them: a lookup by
            // id per container (`json_of`) was most of this at 4000.
            None => SavedContainers::All(
                state
                    .containers
                    .saved_all()
                    .map(|(id, saved)| {
                        let raw = match saved {
                            Some(raw) => raw.clone(),
                            None => json_of(state, id),
                        };
                        (id.clone(), raw)
                    })
                    .collect(),
            ),
        };
        Baseline {
            networks: state.networks.clone(),
            containers,
        }
    }

    /// Every container's JSON (the state file's read now, if unread).
    fn all(&mut self) -> &mut BTreeMap<Id, Saved> {
        if let SavedContainers::Unread { file, changed } = &mut self.containers {
            let mut all: BTreeMap<Id, Saved> = file
                .as_ref()
                .map(|f| f.saved().into_iter().collect())
                .unwrap_or_default();
            for (id, raw) in std::mem::take(changed) {
                match raw {
                    Some(raw) => all.insert(id, raw),
                    None => all.remove(id.as_str()),
                };
            }
            self.containers = SavedContainers::All(all);
        }
        match &mut self.containers {
            SavedContainers::All(all) => all,
            SavedContainers::Unread { .. } => unreachable!("read above"),
        }
    }
}

/// Container `id` of `state` as JSON: as read or last saved when it is
/// unchanged since, else serialised (and shared with the state from now).
fn json_of(state: &State, id: &str) -> Saved {
    if let Some(raw) = state.containers.saved(id) {
        return raw.clone();
    }
    let raw =
        Saved::own(serde_json::to_string(&state.containers[id]).expect("a container serialises"));
    state.containers.mark_saved(id, raw.clone());
    raw
}

/// What changed from `old` to `new`. A container that still holds the
/// JSON it was read from is unchanged without a look at it; the others
/// (the few a command changed) are serialised and compared. A network
/// whose addresses alone changed is recorded as those addresses, not as
/// its pools of every address handed out.
pub fn diff(old: &mut Baseline, new: &State) -> Record {
    // Every field of the state, so that a new one cannot be forgotten here.
    let State {
        networks,
        containers,
        pending,
    } = new;
    let mut record = Record {
        pending: pending.clone(),
        ..Record::default()
    };
    for (id, net) in networks {
        match old.networks.get(id) {
            None => {
                record.networks.insert(id.clone(), Some(net.clone()));
            }
            Some(before) => match address_changes(before, net) {
                Some(changes) if changes.is_empty() => {}
                Some(changes) => {
                    record.addresses.insert(id.clone(), changes);
                }
                None => {
                    record.networks.insert(id.clone(), Some(net.clone()));
                }
            },
        }
    }
    for id in old.networks.keys() {
        if !networks.contains_key(id) {
            record.networks.insert(id.clone(), None);
        }
    }
    if diff_unread(old, new, &mut record) {
        return record;
    }
    // Both sorted by id: one walk over the two, no lookups.
    let mut baseline = old.all().iter().peekable();
    for (id, saved) in containers.saved_all() {
        while let Some((gone, _)) = baseline.next_if(|(b, _)| b.as_str() < id.as_str()) {
            record.containers.insert(gone.to_string(), None);
        }
        let before = baseline.next_if(|(b, _)| *b == id).map(|(_, raw)| raw);
        record_if_changed(&mut record, new, id, before, saved);
    }
    for (gone, _) in baseline {
        record.containers.insert(gone.to_string(), None);
    }
    record
}

/// Records container `id` of `new` unless it is the same as `before`
/// (by pointer, from `saved`, the JSON it holds while unchanged; or by
/// its JSON).
fn record_if_changed(
    record: &mut Record,
    new: &State,
    id: &Id,
    before: Option<&Saved>,
    saved: Option<&Saved>,
) {
    if let (Some(a), Some(b)) = (before, saved) {
        if a.same(b) {
            return;
        }
    }
    let now = json_of(new, id);
    if before.is_some_and(|b| b.get() == now.get()) {
        return;
    }
    let copy = RawValue::from_string(now.get().to_owned()).expect("JSON stays JSON");
    record.containers.insert(id.to_string(), Some(copy));
    record.shared.insert(id.to_string(), now);
}

/// [`diff`]'s containers while both the baseline's and the state's are
/// unread: what changed is among those the state changed since the file,
/// and nothing else is looked at. `false` (and nothing recorded) when
/// either was read since.
fn diff_unread(old: &Baseline, new: &State, record: &mut Record) -> bool {
    let SavedContainers::Unread { file, changed } = &old.containers else {
        return false;
    };
    let Some(now) = new.containers.changed_since_file() else {
        return false;
    };
    let now: BTreeMap<&Id, Option<Option<&Saved>>> = now.collect();
    // Either never happens (the state reads the file's containers before
    // it changes one, and keeps what it removes as removed): a container
    // the baseline had changed and the state has not, or one of the
    // file's that the state changed. Read both then.
    let in_file = |id: &Id| file.as_ref().is_some_and(|f| f.contains(id));
    if changed.keys().any(|id| !now.contains_key(id))
        || now
            .keys()
            .any(|id| !changed.contains_key(*id) && in_file(id))
    {
        return false;
    }
    for (id, saved) in now {
        // Not among the baseline's changes: one the state added.
        let before = changed.get(id).and_then(Option::as_ref);
        match saved {
            None if before.is_none() => {}
            None => {
                record.containers.insert(id.to_string(), None);
            }
            Some(saved) => record_if_changed(record, new, id, before, saved),
        }
    }
    true
}

/// The address changes from `old` to `new` when nothing else of the
/// network changed (empty: nothing changed); `None` when something else
/// did.
fn address_changes(old: &Network, new: &Network) -> Option<Vec<PoolChange>> {
    if old.pools.len() != new.pools.len()
        || old
            .pools
            .iter()
            .zip(&new.pools)
            .any(|(a, b)| a.config != b.config)
        || !same_but_pools(old, new)
    {
        return None;
    }
    let mut changes = Vec::new();
    for (i, (a, b)) in old.pools.iter().zip(&new.pools).enumerate() {
        if a == b {
            continue;
        }
        let (allocated, released) = set_difference(b, a);
        changes.push(PoolChange {
            pool: i,
            allocated,
            released,
        });
    }
    Some(changes)
}

/// Whether `a` and `b` are the same network but for their pools: field
/// by field (every field named, so that a new one cannot be forgotten),
/// without serialising the addresses handed out (4000 of them took 1.2 ms
/// of each save when the network was serialised to leave its pools out).
fn same_but_pools(a: &Network, b: &Network) -> bool {
    let Network {
        id,
        name,
        created,
        parent,
        parent_origin,
        vlan,
        mode,
        internal,
        enable_ipv6,
        pools: _,
        options,
        policy,
        xdp_mode,
        max_endpoints,
        drop_broadcast,
        drop_multicast,
        labels,
        netns_inode,
        parent_ifindex,
        owner,
    } = a;
    *id == b.id
        && *name == b.name
        && *created == b.created
        && *parent == b.parent
        && *parent_origin == b.parent_origin
        && *vlan == b.vlan
        && *mode == b.mode
        && *internal == b.internal
        && *enable_ipv6 == b.enable_ipv6
        && *options == b.options
        && *policy == b.policy
        && *xdp_mode == b.xdp_mode
        && *max_endpoints == b.max_endpoints
        && *drop_broadcast == b.drop_broadcast
        && *drop_multicast == b.drop_multicast
        && *labels == b.labels
        && *netns_inode == b.netns_inode
        && *parent_ifindex == b.parent_ifindex
        && *owner == b.owner
}

/// Addresses handed out in `new` and not in `old`, and the reverse: one
/// walk over both sorted sets.
fn set_difference(new: &Pool, old: &Pool) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let mut a = new.allocated().peekable();
    let mut b = old.allocated().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x == y => {
                a.next();
                b.next();
            }
            (Some(x), Some(y)) if x < y => added.extend(a.next()),
            (Some(_), Some(_)) => removed.extend(b.next()),
            (Some(_), None) => added.extend(a.next()),
            (None, Some(_)) => removed.extend(b.next()),
            (None, None) => break,
        }
    }
    (added, removed)
}

/// Applies `record` to `state`. Fails (the journal is corrupt) when it
/// changes the addresses of a network or pool that is not there, or holds
/// a container that is not one.
pub fn apply(state: &mut State, record: Record) -> Result<(), String> {
    apply_networks(&mut state.networks, record.networks, record.addresses)?;
    for (id, c) in record.containers {
        state.containers.apply_saved(id, c.map(Saved::from))?;
    }
    state.pending = record.pending;
    Ok(())
}

/// Applies `record`, which a save just wrote, to the baseline.
pub fn apply_to_baseline(base: &mut Baseline, record: Record) {
    apply_networks(&mut base.networks, record.networks, record.addresses)
        .expect("a record of ours applies");
    let mut shared = record.shared;
    for (id, c) in record.containers {
        let raw = c.map(|raw| shared.remove(&id).unwrap_or_else(|| Saved::from(raw)));
        match &mut base.containers {
            SavedContainers::Unread { changed, .. } => {
                changed.insert(id.into(), raw);
            }
            SavedContainers::All(all) => {
                match raw {
                    Some(raw) => all.insert(id.into(), raw),
                    None => all.remove(id.as_str()),
                };
            }
        }
    }
}

fn apply_networks(
    networks: &mut BTreeMap<String, Network>,
    changed: BTreeMap<String, Option<Network>>,
    addresses: BTreeMap<String, Vec<PoolChange>>,
) -> Result<(), String> {
    for (id, net) in changed {
        match net {
            Some(n) => networks.insert(id, n),
            None => networks.remove(&id),
        };
    }
    for (id, changes) in addresses {
        let net = networks.get_mut(&id).ok_or_else(|| {
            format!("a record changes the addresses of network {id}, which is not there")
        })?;
        let pools = net.pools.len();
        for change in changes {
            let pool = net.pools.get_mut(change.pool).ok_or_else(|| {
                format!(
                    "a record changes the addresses of pool {} of network {id}, which has {pools}",
                    change.pool
                )
            })?;
            for ip in change.released {
                pool.release(ip);
            }
            for ip in change.allocated {
                pool.mark_allocated(ip);
            }
        }
    }
    Ok(())
}

/// A journal as read: its header and records, and the length of what is
/// whole (the header and every complete line).
pub struct Parsed {
    pub header: Header,
    pub records: Vec<Record>,
    pub valid_len: u64,
}

/// Reads a journal's bytes. A last line without its newline is left out
/// (never saved); a complete line that is not a record is corruption.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut lines = bytes.split_inclusive(|b| *b == b'\n');
    let first = lines
        .next()
        .filter(|l| l.ends_with(b"\n"))
        .ok_or("it has no header line")?;
    let header: Header =
        serde_json::from_slice(first).map_err(|e| format!("its header is not one: {e}"))?;
    if header.journal != Header::VERSION {
        return Err(format!(
            "it is format {}, which this mvnet does not know (it knows {})",
            header.journal,
            Header::VERSION
        ));
    }
    let mut valid_len = first.len() as u64;
    let mut records = Vec::new();
    for (i, line) in lines.enumerate() {
        if !line.ends_with(b"\n") {
            break;
        }
        let record = serde_json::from_slice(line)
            .map_err(|e| format!("record {} (line {}) is not one: {e}", i + 1, i + 2))?;
        records.push(record);
        valid_len += line.len() as u64;
    }
    Ok(Parsed {
        header,
        records,
        valid_len,
    })
}
