//! The controller's side of the direct endpoint index (see
//! `macvlan_common::direct`): the ENDPOINT_INDEX array mapped into our
//! memory, each word written with one atomic store so the classifier never
//! reads half an entry.
use std::{
    os::fd::AsFd as _,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use macvlan_common::{direct, mac_word};

use super::DatapathError;
use crate::sys::bpf::MappedWords;

/// The mapping is shared by clones: mapping the array (and faulting its
/// pages in) on every table access cost a 1000-endpoint `docker sync` a
/// fifth of its CPU time.
#[derive(Clone)]
pub struct DirectIndex {
    words: std::sync::Arc<MappedWords>,
    /// Whether the array has the fill word after the index
    /// (`direct::FILL`); pins made before it have none.
    has_fill: bool,
    /// Words of the source filter after the fill word
    /// (`direct::SOURCE_BASE`); 0 in pins made before it.
    source_words: u32,
}

impl DirectIndex {
    /// Maps the ENDPOINT_INDEX array (created `BPF_F_MMAPABLE`).
    pub fn map(map: &MapData) -> Result<DirectIndex, DatapathError> {
        let name = macvlan_common::map_names::ENDPOINT_INDEX;
        let entries = map
            .info()
            .map_err(|source| DatapathError::Map { name, source })?
            .max_entries();
        let has_fill = entries >= direct::WORDS;
        // The loader makes the filter a power of two; any other size is
        // not one we made, and is left alone.
        let extra = entries.saturating_sub(direct::WORDS);
        let source_words = if extra.is_power_of_two() { extra } else { 0 };
        let len = if has_fill {
            direct::WORDS + source_words
        } else {
            direct::SLOTS
        };
        let words = MappedWords::map(map.fd().as_fd(), len as usize)
            .map_err(|e| DatapathError::Pin(format!("mapping the endpoint index: {e}")))?;
        Ok(DirectIndex {
            words: std::sync::Arc::new(words),
            has_fill,
            source_words,
        })
    }

    /// How many endpoints the ENDPOINTS hash holds (`direct::FILL`), or
    /// `None` for pins made before the fill word.
    pub fn fill(&self) -> Option<u64> {
        self.fill_word().map(|w| w & direct::FILL_COUNT)
    }

    /// How many ENDPOINT_DEVICES entries are under a key not of their
    /// slot's own (`direct::FILL_STRAYS_SHIFT`), or `None` for pins made
    /// before the fill word.
    pub fn strays(&self) -> Option<u64> {
        self.fill_word().map(|w| w >> direct::FILL_STRAYS_SHIFT)
    }

    fn fill_word(&self) -> Option<u64> {
        self.has_fill
            .then(|| self.word(direct::FILL).load(Ordering::Acquire))
    }

    /// Counts an endpoint added to the hash (`added`) or removed from it.
    /// Atomic, so that two processes changing the table at once keep it
    /// exact.
    pub fn count(&self, added: bool) {
        if !self.has_fill {
            return;
        }
        let w = self.word(direct::FILL);
        if added {
            w.fetch_add(1, Ordering::AcqRel);
        } else {
            // Never below zero, whatever an older mvnet did to the table
            // (nor into the stray count above it).
            let _ = w.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n & direct::FILL_COUNT).checked_sub(1).map(|_| n - 1)
            });
        }
    }

    /// Counts `n` stray device keys added (`added`) or deleted (see
    /// `direct::FILL`); never below zero.
    pub fn count_strays(&self, added: bool, n: u64) {
        if !self.has_fill || n == 0 {
            return;
        }
        let _ = self
            .word(direct::FILL)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let strays = w >> direct::FILL_STRAYS_SHIFT;
                let strays = if added {
                    strays.saturating_add(n).min(u64::from(u32::MAX))
                } else {
                    strays.saturating_sub(n)
                };
                Some(w & direct::FILL_COUNT | strays << direct::FILL_STRAYS_SHIFT)
            });
    }

    /// Sets the fill count to `n`, the count read from the hash (by
    /// `restore`: a writer killed between its change of the hash and its
    /// count leaves the word one off). Returns the value it replaced, or
    /// `None` for pins made before the fill word.
    pub fn set_fill(&self, n: u64) -> Option<u64> {
        self.set_half(direct::FILL_COUNT, n & direct::FILL_COUNT)
            .map(|w| w & direct::FILL_COUNT)
    }

    /// Sets the stray device keys' count to `n`, the count read from the
    /// table (by `restore`). Returns the count it replaced, or `None` for
    /// pins made before the fill word.
    pub fn set_strays(&self, n: u64) -> Option<u64> {
        let n = n.min(u64::from(u32::MAX));
        self.set_half(!direct::FILL_COUNT, n << direct::FILL_STRAYS_SHIFT)
            .map(|w| w >> direct::FILL_STRAYS_SHIFT)
    }

    /// Replaces the bits `mask` of the fill word with `bits`; returns the
    /// word before.
    fn set_half(&self, mask: u64, bits: u64) -> Option<u64> {
        if !self.has_fill {
            return None;
        }
        self.word(direct::FILL)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w & !mask | bits)
            })
            .ok()
    }

    fn word(&self, index: u32) -> &AtomicU64 {
        self.words.word(index as usize)
    }

    /// Puts (`mac`, `vlan`) → `slot` in the index unless its word belongs
    /// to another key (that endpoint then lives in the hash only). Returns
    /// whether it was indexed.
    pub fn claim(&self, mac: &[u8; 6], vlan: u16, slot: u32) -> bool {
        let mac = mac_word(mac);
        let w = self.word(direct::index(mac, vlan));
        let cur = w.load(Ordering::Acquire);
        if cur & direct::VALID != 0 && cur & direct::KEY_MASK != direct::key(mac, vlan) {
            return false;
        }
        w.store(direct::word(mac, vlan, slot), Ordering::Release);
        true
    }

    /// Takes (`mac`, `vlan`) out of the index if it is there. The word
    /// becomes `direct::RESERVED`, never 0: it may be another MAC's source
    /// word (see [`DirectIndex::reserve_source`]).
    pub fn release(&self, mac: &[u8; 6], vlan: u16) {
        let mac = mac_word(mac);
        let w = self.word(direct::index(mac, vlan));
        let cur = w.load(Ordering::Acquire);
        if cur & direct::VALID != 0 && cur & direct::KEY_MASK == direct::key(mac, vlan) {
            w.store(direct::RESERVED, Ordering::Release);
        }
    }

    /// Marks `mac`'s source word (`direct::source_index`) non-zero and sets
    /// its bit in the source filter, before the MAC goes into the hash: TC
    /// ingress takes a clear bit (a zero word, in pins made before the
    /// filter) as proof that a frame's source is no endpoint's. Neither
    /// is ever cleared, so the mark outlives the endpoint (a later frame
    /// from that MAC then costs the hash lookup, and gets the right
    /// answer).
    pub fn reserve_source(&self, mac: &[u8; 6]) {
        let mac = mac_word(mac);
        let w = self.word(direct::source_index(mac));
        let _ = w.compare_exchange(0, direct::RESERVED, Ordering::AcqRel, Ordering::Acquire);
        // And its bit in the source filter, which the classifier reads
        // instead where there is one (`direct::SOURCE_BASE`).
        if self.source_words > 0 {
            let (at, bit) = direct::source_bit(mac, self.source_words);
            self.word(at).fetch_or(1 << bit, Ordering::AcqRel);
        }
    }

    /// Whether `mac`'s bit is set in the source filter (`None`: pins made
    /// before the filter). A set bit says "maybe an endpoint's MAC", a
    /// clear one "no endpoint's".
    pub fn source_marked(&self, mac: &[u8; 6]) -> Option<bool> {
        (self.source_words > 0).then(|| {
            let (at, bit) = direct::source_bit(mac_word(mac), self.source_words);
            self.word(at).load(Ordering::Acquire) >> bit & 1 == 1
        })
    }

    /// The slots of every endpoint in the hash, read from the index alone
    /// when it holds them all: as many valid words as the fill word counts.
    /// `None` otherwise (then the hash must be read): an endpoint whose
    /// word another key holds, a writer killed between its change of the
    /// hash and of the index or the count (each step's order leaves the
    /// two apart, never equal), pins made before the fill word.
    ///
    /// A scan of the 512 KiB mapped here takes some 0.1 ms; reading the
    /// hash at 4000 endpoints took 2.4-3.2 ms of a `run` (32768 buckets
    /// locked and copied out by BPF_MAP_LOOKUP_BATCH, `perf trace`).
    pub fn all_slots(&self) -> Option<Vec<u32>> {
        let fill = self.fill()?;
        let mut slots = Vec::with_capacity(fill as usize);
        for i in 0..direct::SLOTS {
            let w = self.word(i).load(Ordering::Acquire);
            if w & direct::VALID != 0 {
                slots.push(direct::slot(w));
            }
        }
        (slots.len() as u64 == fill).then_some(slots)
    }

    /// The slot indexed for (`mac`, `vlan`), if any.
    pub fn get(&self, mac: &[u8; 6], vlan: u16) -> Option<u32> {
        let mac = mac_word(mac);
        let cur = self.word(direct::index(mac, vlan)).load(Ordering::Acquire);
        (cur & direct::KEY_MASK == direct::key(mac, vlan)).then(|| direct::slot(cur))
    }
}
