//! Which endpoints sent invalid frames: ENDPOINT_TX_INVALID read for the
//! slots ENDPOINT_TX_INVALID_SEEN flags (see `macvlan_common::tx_seen`).
//! A full read of the per-CPU array would cost a `get_next_key`, a copy
//! from every CPU and two `copy_to_user` per slot, about 29 ms at 65,536
//! slots; the flags are read through one mapping (64 KiB at 65,536 slots)
//! and nearly all are zero, so a read costs a scan of them and a lookup
//! per flagged slot.
use std::{os::fd::AsFd as _, sync::atomic::Ordering};

use aya::maps::{Map, MapData, PerCpuArray};
use macvlan_common::{map_names, tx_seen, Counter};

use super::DatapathError;
use crate::sys::bpf::MappedWords;

/// A mapping of ENDPOINT_TX_INVALID_SEEN.
pub struct SeenFlags {
    words: MappedWords,
}

impl SeenFlags {
    pub fn map(map: &MapData) -> Result<SeenFlags, DatapathError> {
        let name = map_names::ENDPOINT_TX_INVALID_SEEN;
        let entries = map
            .info()
            .map_err(|source| DatapathError::Map { name, source })?
            .max_entries();
        // Each element is one u64 word: 8 flag bytes.
        let words = MappedWords::map_with(map.fd().as_fd(), entries as usize, true)
            .map_err(|e| DatapathError::Pin(format!("mapping {name}: {e}")))?;
        Ok(SeenFlags { words })
    }

    /// The flagged slots, ascending.
    pub fn slots(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, w) in self.words.words().iter().enumerate() {
            let w = w.load(Ordering::Relaxed);
            if w == 0 {
                continue;
            }
            for (b, flag) in w.to_le_bytes().into_iter().enumerate() {
                if flag != 0 {
                    out.push(i as u32 * tx_seen::SLOTS_PER_WORD + b as u32);
                }
            }
        }
        out
    }

    /// Clears `slot`'s flag: for a new endpoint, after its counter was
    /// zeroed and before its entry exists. An atomic AND of the element,
    /// so a byte the program stores meanwhile (another slot's) stays.
    pub fn clear(&self, slot: u32) {
        let (word, byte) = tx_seen::at(slot);
        if let Some(w) = self.words.words().get(word as usize) {
            w.fetch_and(!(0xffu64 << (8 * byte)), Ordering::Relaxed);
        }
    }
}

/// The ENDPOINT_TX_INVALID counters of `slots` (flagged, ascending), each
/// summed over CPUs, those that counted anything: one lookup per slot, or
/// one batch read of the whole array (`capacity` slots) where that is
/// cheaper (more than one slot in [`BATCH_SLOTS_PER_LOOKUP`] flagged).
pub fn counts(
    map: &Map,
    slots: &[u32],
    capacity: u32,
) -> Result<Vec<(u32, Counter)>, DatapathError> {
    let name = map_names::ENDPOINT_TX_INVALID;
    let array: PerCpuArray<&MapData, Counter> =
        PerCpuArray::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    if slots.len() as u64 * BATCH_SLOTS_PER_LOOKUP > u64::from(capacity) {
        let all = super::batch::per_cpu_array_sum(
            super::batch::map_data(map),
            name,
            capacity,
            Counter::merge,
        )?;
        return Ok(nonzero(
            all.into_iter().enumerate().map(|(s, c)| (s as u32, c)),
        ));
    }
    let mut out = Vec::with_capacity(slots.len());
    for &slot in slots {
        let mut total = Counter::default();
        let per_cpu = match array.get(&slot, 0) {
            Ok(v) => v,
            // A flag past the array (a map resized by hand): nothing to read.
            Err(aya::maps::MapError::OutOfBounds { .. }) => continue,
            Err(source) => return Err(DatapathError::Map { name, source }),
        };
        for c in per_cpu.iter() {
            total.merge(c);
        }
        out.push((slot, total));
    }
    Ok(nonzero(out.into_iter()))
}

/// Slots whose share of a batch read costs about what one lookup does (a
/// lookup is a system call of about a microsecond; a batch read takes
/// about 0.45 µs per slot): past one flagged slot in this many, reading
/// the whole array is cheaper.
const BATCH_SLOTS_PER_LOOKUP: u64 = 2;

fn nonzero(counts: impl Iterator<Item = (u32, Counter)>) -> Vec<(u32, Counter)> {
    counts.filter(|(_, c)| c.frames != 0).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_bytes_eight_to_an_element() {
        use macvlan_common::tx_seen;
        assert_eq!(tx_seen::at(0), (0, 0));
        assert_eq!(tx_seen::at(7), (0, 7));
        assert_eq!(tx_seen::at(8), (1, 0));
        assert_eq!(tx_seen::at(65_535), (8191, 7));
        assert_eq!(tx_seen::words(4096), 512);
        assert_eq!(tx_seen::words(65_536), 8192);
        assert_eq!(tx_seen::words(1), 1);
        assert_eq!(tx_seen::words(9), 2);
    }
}
