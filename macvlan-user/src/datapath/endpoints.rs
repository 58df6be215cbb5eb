//! The endpoint table: which (MAC, VLAN) belongs to which endpoint slot.
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{HashMap, IterableMap as _, Map};
use macvlan_common::{map_names, Endpoint, EndpointKey, VLAN_ANY};

use super::{direct::DirectIndex, DatapathError};

/// `BPF_NOEXIST`: create the key, fail with EEXIST if it is there.
const BPF_NOEXIST: u64 = 1;

/// One endpoint as the classifier knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    pub mac: [u8; 6],
    pub vlan: u16,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub enforce: bool,
}

/// The ENDPOINTS hash and, in front of it, the direct index: every entry is
/// in the hash; the index holds those whose word is free.
pub struct EndpointTable<'a> {
    map: HashMap<&'a mut aya::maps::MapData, EndpointKey, Endpoint>,
    index: Option<DirectIndex>,
    /// Endpoint slots: the root's `--max-endpoints`.
    capacity: u32,
}

/// The slots of a table, taken or free, as read once.
pub struct Slots {
    taken: Vec<bool>,
}

impl Slots {
    /// Takes the lowest free slot.
    pub fn take(&mut self) -> Result<u32, DatapathError> {
        let slot = self
            .taken
            .iter()
            .position(|t| !t)
            .ok_or(DatapathError::Full(self.taken.len() as u32))?;
        self.taken[slot] = true;
        Ok(slot as u32)
    }
}

/// Every entry of the ENDPOINTS map, in one batched read.
fn all_entries(map: &aya::maps::MapData) -> Result<Vec<(EndpointKey, Endpoint)>, DatapathError> {
    let name = map_names::ENDPOINTS;
    let keys = map
        .info()
        .map_err(|source| DatapathError::Map { name, source })?
        .max_entries();
    super::batch::hash_entries(map, name, keys)
}

/// The slots of real endpoints (not the VLAN_ANY twins, not the root).
fn slots(entries: &[(EndpointKey, Endpoint)]) -> Vec<u32> {
    entries
        .iter()
        .filter(|(k, _)| k.vlan < 0x1000)
        .map(|(_, v)| v.slot)
        .collect()
}

/// What [`EndpointTable::resync`] found (and, fixing, corrected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resynced {
    /// The fill word and the count of the hash, when they differed.
    pub count: Option<(u64, u64)>,
    /// Endpoint MACs whose source-filter bit was clear.
    pub unmarked: usize,
}

impl<'a> EndpointTable<'a> {
    /// The table over the ENDPOINTS map (of a loaded object or a pin).
    pub(super) fn new(
        map: &'a mut Map,
        index: Option<DirectIndex>,
        capacity: u32,
    ) -> Result<Self, DatapathError> {
        let name = map_names::ENDPOINTS;
        let map = HashMap::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
        // Never hand out more slots than the hash holds keys for (two per
        // endpoint and the root's, see `endpoint_keys`).
        let fits = map.map().info().map_or(capacity, |i| {
            (i.max_entries().saturating_sub(1) / 2).min(capacity)
        });
        Ok(Self {
            map,
            index,
            capacity: fits,
        })
    }

    /// Endpoint slots in this table (the root's `--max-endpoints`).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Every entry of the hash: one batched read, or on kernels before
    /// 5.6 (no batch reads) a walk key by key.
    fn entries(&self) -> Vec<(EndpointKey, Endpoint)> {
        all_entries(self.map.map())
            .unwrap_or_else(|_| self.map.iter().filter_map(|r| r.ok()).collect())
    }

    /// The slots taken: from the direct index where it proves to hold every
    /// endpoint ([`DirectIndex::all_slots`]), else from the hash.
    fn used_slots(&self) -> Vec<u32> {
        if let Some(slots) = self.index.as_ref().and_then(DirectIndex::all_slots) {
            return slots;
        }
        slots(&self.entries())
    }

    /// Adds an endpoint and returns its slot (the lowest free one).
    pub fn insert(&mut self, entry: EndpointEntry) -> Result<u32, DatapathError> {
        let mut slots = self.slots();
        let slot = slots.take()?;
        self.insert_at(entry, slot)?;
        Ok(slot)
    }

    /// Which slots are taken, read once: for adding many endpoints
    /// without a read of the whole table per endpoint.
    pub fn slots(&self) -> Slots {
        let mut taken = vec![false; self.capacity as usize];
        for s in self.used_slots() {
            if let Some(t) = taken.get_mut(s as usize) {
                *t = true;
            }
        }
        Slots { taken }
    }

    /// Adds an endpoint at a given slot. An entry for (`mac`, `vlan`) that
    /// is there already is replaced; its slot, when another, is returned:
    /// its device entries are the caller's to remove.
    pub fn insert_at(
        &mut self,
        entry: EndpointEntry,
        slot: u32,
    ) -> Result<Option<u32>, DatapathError> {
        let value = Endpoint {
            slot,
            vlan: entry.vlan,
            flags: if entry.enforce {
                macvlan_common::endpoint_flags::ENFORCE
            } else {
                0
            },
            ipv4: entry.ipv4.map(|a| a.octets()).unwrap_or_default(),
            ipv6: entry.ipv6.map(|a| a.octets()).unwrap_or_default(),
        };
        let name = map_names::ENDPOINTS;
        let map_err = |source| DatapathError::Map { name, source };
        let key = EndpointKey::new(entry.mac, entry.vlan);
        // Before the hash: TC ingress takes a zero source word as proof
        // that a frame's source MAC is no endpoint's.
        if let Some(index) = &self.index {
            index.reserve_source(&entry.mac);
        }
        // Counted before the key is created, and taken back if it was
        // there: a writer killed between the two leaves the fill word
        // above the index's valid words, so readers of the taken slots
        // fall back to the hash (`DirectIndex::all_slots`). Counted after,
        // a kill in between would leave the fill word equal to the index's
        // words while the hash holds one more, and the new endpoint's slot
        // would look free.
        if let Some(index) = &self.index {
            index.count(true);
        }
        let replaced = match self.map.insert(key, value, BPF_NOEXIST) {
            Ok(()) => None,
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                if let Some(index) = &self.index {
                    index.count(false);
                }
                let old = self.map.get(&key, 0).ok();
                self.map.insert(key, value, 0).map_err(map_err)?;
                old.map(|o| o.slot).filter(|s| *s != slot)
            }
            Err(e) => {
                if let Some(index) = &self.index {
                    index.count(false);
                }
                return Err(map_err(e));
            }
        };
        self.map
            .insert(EndpointKey::new(entry.mac, VLAN_ANY), value, 0)
            .map_err(map_err)?;
        // In the hash first: a reader that misses the index finds it there.
        if let Some(index) = &self.index {
            index.claim(&entry.mac, entry.vlan, slot);
        }
        Ok(replaced)
    }

    /// Whether (`mac`, `vlan`) is on the fast path (the direct index).
    pub fn is_indexed(&self, mac: [u8; 6], vlan: u16) -> bool {
        self.index
            .as_ref()
            .is_some_and(|i| i.get(&mac, vlan).is_some())
    }

    /// Whether `mac`'s bit is set in the source filter: `Some(false)`
    /// proves no endpoint ever had `mac` (`None`: no filter, pins made
    /// before it).
    pub fn source_marked(&self, mac: [u8; 6]) -> Option<bool> {
        self.index.as_ref().and_then(|i| i.source_marked(&mac))
    }

    /// The endpoint with `mac` on `vlan`, if present.
    pub fn get(&self, mac: [u8; 6], vlan: u16) -> Option<Endpoint> {
        lookup(&self.map, mac, vlan).ok().flatten()
    }

    /// [`EndpointTable::get`], with a failed lookup an error rather than
    /// an absent entry: for writers, which act on the answer.
    pub fn lookup(&self, mac: [u8; 6], vlan: u16) -> Result<Option<Endpoint>, DatapathError> {
        lookup(&self.map, mac, vlan)
    }

    /// Records the root device's own MAC: its frames are not spoofed.
    pub fn insert_root(&mut self, mac: [u8; 6]) -> Result<(), DatapathError> {
        let name = map_names::ENDPOINTS;
        let value = Endpoint {
            slot: u32::MAX,
            ..Default::default()
        };
        self.map
            .insert(EndpointKey::new(mac, macvlan_common::VLAN_ROOT), value, 0)
            .map_err(|source| DatapathError::Map { name, source })
    }

    /// Number of endpoints in the table: the fill word the controller
    /// keeps beside the direct index, or for pins made before it, a walk
    /// of the hash.
    pub fn len(&self) -> usize {
        match self.index.as_ref().and_then(DirectIndex::fill) {
            Some(n) => n as usize,
            None => self.used_slots().len(),
        }
    }

    /// Makes what the controller keeps beside the direct index match the
    /// hash, from one read of it (with `fix` false, only compares):
    ///
    /// * the fill word: one off when a writer was killed between its
    ///   change of the hash and its count;
    /// * the source filter: mvnet sets a MAC's bit before the MAC enters
    ///   the hash, so only a writer that does not know the filter (an
    ///   older mvnet on a newer pin) leaves one clear, and TC ingress
    ///   would then count that endpoint's bridge-mode frames as wire
    ///   frames.
    ///
    /// Pins made before the index, the fill word or the filter have
    /// nothing of it to resync.
    pub fn resync(&self, fix: bool) -> Resynced {
        let mut out = Resynced::default();
        let Some(index) = self.index.as_ref() else {
            return out;
        };
        let entries = self.entries();
        let is = slots(&entries).len() as u64;
        if let Some(was) = index.fill().filter(|was| *was != is) {
            if fix {
                index.set_fill(is);
            }
            out.count = Some((was, is));
        }
        for (k, _) in &entries {
            if k.vlan == VLAN_ANY && index.source_marked(&k.mac) == Some(false) {
                out.unmarked += 1;
                if fix {
                    index.reserve_source(&k.mac);
                }
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets or clears the enforce flag of an endpoint.
    pub fn update_flags(
        &mut self,
        mac: [u8; 6],
        vlan: u16,
        enforce: bool,
    ) -> Result<(), DatapathError> {
        let name = map_names::ENDPOINTS;
        let map_err = |source| DatapathError::Map { name, source };
        for key in [EndpointKey::new(mac, vlan), EndpointKey::new(mac, VLAN_ANY)] {
            let mut v = match self.map.get(&key, 0) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let flags = if enforce {
                v.flags | macvlan_common::endpoint_flags::ENFORCE
            } else {
                v.flags & !macvlan_common::endpoint_flags::ENFORCE
            };
            // A live entry is rewritten only when it changes: the table is
            // a preallocated hash, whose update parks the old element as
            // this CPU's spare and hands it to the next update at once, so
            // a program still reading it could see another endpoint's
            // value.
            if flags == v.flags {
                continue;
            }
            v.flags = flags;
            self.map.insert(key, v, 0).map_err(map_err)?;
        }
        Ok(())
    }

    /// Marks the endpoint (`mac`, `vlan`) as checked on its device
    /// (`endpoint_flags::DEVICE_CHECKED`): from now on the parent's egress
    /// takes a frame with its MAC only with the device's stamp. Missing
    /// entries are skipped.
    pub fn mark_device_checked(&mut self, mac: [u8; 6], vlan: u16) -> Result<(), DatapathError> {
        let name = map_names::ENDPOINTS;
        let map_err = |source| DatapathError::Map { name, source };
        for key in [EndpointKey::new(mac, vlan), EndpointKey::new(mac, VLAN_ANY)] {
            let mut v = match self.map.get(&key, 0) {
                Ok(v) => v,
                Err(e) if super::not_found(&e) => continue,
                // Unmarked, the device's frames would pass unstamped.
                Err(e) => return Err(map_err(e)),
            };
            v.flags |= macvlan_common::endpoint_flags::DEVICE_CHECKED;
            self.map.insert(key, v, 0).map_err(map_err)?;
        }
        Ok(())
    }

    /// Removes an endpoint, on a root where no other endpoint has its MAC.
    pub fn remove(&mut self, mac: [u8; 6], vlan: u16) -> Result<(), DatapathError> {
        self.remove_among(mac, vlan, &[])
    }

    /// Removes endpoint (`mac`, `vlan`); `vlans` are the root's VLANs where
    /// another endpoint may have the same MAC (a MAC is unique per network
    /// only, so `--mac-address` can put one on two VLANs of a root). The
    /// MAC's `VLAN_ANY` entry, which tells a VLAN mismatch from an unknown
    /// MAC and a local source from the wire, is one per MAC: it stays when
    /// it is another endpoint's, goes to one that stays, and only then
    /// away. One lookup per VLAN given, none past the first found.
    pub fn remove_among(
        &mut self,
        mac: [u8; 6],
        vlan: u16,
        vlans: &[u16],
    ) -> Result<(), DatapathError> {
        // Out of the index first, so no reader finds it there after it has
        // left the hash.
        if let Some(index) = &self.index {
            index.release(&mac, vlan);
        }
        let name = map_names::ENDPOINTS;
        let map_err = |source| DatapathError::Map { name, source };
        // Not there is no error (a retry, or a writer killed between the
        // two keys): its VLAN_ANY twin is still seen to. Any other failure
        // is, or the entry would stay, valid under enforce.
        match self.map.remove(&EndpointKey::new(mac, vlan)) {
            Ok(()) => {
                if let Some(index) = &self.index {
                    index.count(false);
                }
            }
            Err(e) if super::not_found(&e) => {}
            Err(e) => return Err(map_err(e)),
        }
        let any = EndpointKey::new(mac, VLAN_ANY);
        match self.map.get(&any, 0) {
            Ok(v) if v.vlan == vlan => {}
            // Another endpoint's (it came after this one), or none.
            Ok(_) => return Ok(()),
            Err(e) if super::not_found(&e) => return Ok(()),
            Err(e) => return Err(map_err(e)),
        }
        let mut staying = None;
        for v in vlans.iter().filter(|v| **v != vlan) {
            if let Some(value) = lookup(&self.map, mac, *v)? {
                staying = Some(value);
                break;
            }
        }
        match staying {
            Some(value) => self.map.insert(any, value, 0).map_err(map_err)?,
            None => match self.map.remove(&any) {
                Ok(()) => {}
                Err(e) if super::not_found(&e) => {}
                Err(e) => return Err(map_err(e)),
            },
        }
        Ok(())
    }
}

/// A read-only view of the endpoint table.
pub struct EndpointView<'a> {
    map: HashMap<&'a aya::maps::MapData, EndpointKey, Endpoint>,
}

impl<'a> EndpointView<'a> {
    pub(super) fn new(map: &'a Map) -> Option<Self> {
        HashMap::try_from(map).ok().map(|map| Self { map })
    }

    /// The endpoint with `mac` on `vlan`, if present (and readable).
    pub fn get(&self, mac: [u8; 6], vlan: u16) -> Option<Endpoint> {
        lookup(&self.map, mac, vlan).ok().flatten()
    }

    /// [`EndpointView::get`], with a failed lookup an error rather than an
    /// absent entry: for writers, which act on the answer.
    pub fn lookup(&self, mac: [u8; 6], vlan: u16) -> Result<Option<Endpoint>, DatapathError> {
        lookup(&self.map, mac, vlan)
    }

    /// Every endpoint: (MAC, VLAN) → entry, without the VLAN_ANY twins and
    /// the root device's own MAC.
    pub fn entries(&self) -> Result<Vec<(EndpointKey, Endpoint)>, DatapathError> {
        let mut all = all_entries(self.map.map())?;
        all.retain(|(k, _)| k.vlan < 0x1000);
        Ok(all)
    }
}

/// One lookup of (`mac`, `vlan`): `None` when the key is not there; any
/// other failure (ENOMEM, a map that cannot be read) is an error.
fn lookup<T: std::borrow::Borrow<aya::maps::MapData>>(
    map: &HashMap<T, EndpointKey, Endpoint>,
    mac: [u8; 6],
    vlan: u16,
) -> Result<Option<Endpoint>, DatapathError> {
    match map.get(&EndpointKey::new(mac, vlan), 0) {
        Ok(e) => Ok(Some(e)),
        Err(e) if super::not_found(&e) => Ok(None),
        Err(source) => Err(DatapathError::Map {
            name: map_names::ENDPOINTS,
            source,
        }),
    }
}
