//! Which endpoints sent invalid frames: the flags of
//! ENDPOINT_TX_INVALID_SEEN (see `macvlan_common::tx_seen`), through which
//! `PinnedMaps::tx_invalid_counts` looks up only the flagged slots of
//! ENDPOINT_TX_INVALID. A full read of that per-CPU array costs a
//! `get_next_key`, a copy from every CPU and two `copy_to_user` per slot,
//! about 29 ms at 65,536 slots; the flags are read through one mapping
//! (64 KiB at 65,536 slots), and nearly all are zero.
use std::{os::fd::AsFd as _, sync::atomic::Ordering};

use aya::maps::MapData;
use macvlan_common::{map_names, tx_seen};

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
