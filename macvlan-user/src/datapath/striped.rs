//! The per-endpoint counters (ENDPOINT_STATS) as the controller sees them:
//! an array striped by CPU (see `macvlan_common::stripes`), mapped into our
//! memory and summed over the stripes without a system call per element.
//! At 65,536 slots a per-CPU array's batch lookup took 29 ms; summing the
//! mapping takes about one.
use std::{os::fd::AsFd as _, sync::atomic::Ordering};

use aya::maps::MapData;
use macvlan_common::{map_names, stripes, Counter, EndpointCounters};

use super::DatapathError;
use crate::sys::bpf::MappedWords;

/// `u64` words of one [`EndpointCounters`]: rx_wire, rx_local, tx, each
/// frames then bytes.
const WORDS: usize = 6;
const _: () = assert!(std::mem::size_of::<EndpointCounters>() == WORDS * 8);

/// Stripes of a striped map: one per CPU id up to the highest possible one
/// (`/sys/devices/system/cpu/possible`), the kernel's `nr_cpu_ids`. The
/// program indexes the stripes by `bpf_get_smp_processor_id`, which is
/// below that, not below the count of possible CPUs (aya's `nr_cpus`, the
/// length of a per-CPU map's values): the two differ where the list has
/// gaps ("0-3,8-11": 12 stripes for 8 CPUs).
pub fn stripes() -> Result<u32, DatapathError> {
    const POSSIBLE: &str = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(POSSIBLE)
        .map_err(|e| DatapathError::Pin(format!("reading {POSSIBLE}: {e}")))?;
    stripes_of(&text).ok_or_else(|| {
        DatapathError::Pin(format!(
            "{POSSIBLE} holds {:?}, not a list of CPU ranges",
            text.trim()
        ))
    })
}

/// The highest CPU id in a kernel CPU list ("0-3,8-11") plus one.
fn stripes_of(list: &str) -> Option<u32> {
    list.trim().split(',').try_fold(0, |stripes, range| {
        let last = range.rsplit('-').next()?.parse::<u32>().ok()?;
        Some(u32::max(stripes, last.checked_add(1)?))
    })
}

/// A mapping of ENDPOINT_STATS.
pub struct StripedCounters {
    words: MappedWords,
    capacity: u32,
    stripes: u32,
}

impl StripedCounters {
    /// Maps `map`, every page faulted in at once when `populate` (for a
    /// mapping read whole).
    pub fn map(map: &MapData, populate: bool) -> Result<StripedCounters, DatapathError> {
        let name = map_names::ENDPOINT_STATS;
        let entries = map
            .info()
            .map_err(|source| DatapathError::Map { name, source })?
            .max_entries();
        let stripes = stripes()?;
        if entries % stripes != 0 {
            return Err(DatapathError::Pin(format!(
                "map {name} has {entries} elements, not one stripe per possible CPU ({stripes}); \
                 it was made on another machine: remove the parent's networks and create them again"
            )));
        }
        let words = MappedWords::map_with(map.fd().as_fd(), entries as usize * WORDS, populate)
            .map_err(|e| DatapathError::Pin(format!("mapping {name}: {e}")))?;
        Ok(StripedCounters {
            words,
            capacity: entries / stripes,
            stripes,
        })
    }

    /// Every slot's counters, summed over the stripes.
    pub fn sum(&self) -> Vec<EndpointCounters> {
        let capacity = self.capacity as usize;
        let mut totals = vec![[0u64; WORDS]; capacity];
        if capacity == 0 {
            return Vec::new();
        }
        for stripe in self.words.words().chunks_exact(capacity * WORDS) {
            for (total, element) in totals.iter_mut().zip(stripe.chunks_exact(WORDS)) {
                for (t, w) in total.iter_mut().zip(element) {
                    // The program adds with plain stores; an aligned u64
                    // load never sees half of one.
                    *t = t.wrapping_add(w.load(Ordering::Relaxed));
                }
            }
        }
        totals.into_iter().map(counters).collect()
    }

    /// The counters of `slot`, summed over the stripes: one endpoint's
    /// read, without summing every slot.
    pub fn slot(&self, slot: u32) -> Result<EndpointCounters, DatapathError> {
        self.check(slot)?;
        let mut total = [0u64; WORDS];
        for cpu in 0..self.stripes {
            let at = stripes::index(cpu, self.capacity, slot) as usize * WORDS;
            for (t, w) in total.iter_mut().zip(&self.words.words()[at..at + WORDS]) {
                *t = t.wrapping_add(w.load(Ordering::Relaxed));
            }
        }
        Ok(counters(total))
    }

    fn check(&self, slot: u32) -> Result<(), DatapathError> {
        if slot >= self.capacity {
            return Err(DatapathError::Pin(format!(
                "slot {slot} is past the {} slots of {}",
                self.capacity,
                map_names::ENDPOINT_STATS
            )));
        }
        Ok(())
    }

    /// Zeroes `slot` in every stripe: for a new endpoint, before its entry
    /// exists, so no program writes it meanwhile.
    pub fn zero(&self, slot: u32) -> Result<(), DatapathError> {
        self.check(slot)?;
        for cpu in 0..self.stripes {
            let at = stripes::index(cpu, self.capacity, slot) as usize * WORDS;
            for w in &self.words.words()[at..at + WORDS] {
                w.store(0, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

fn counters(w: [u64; WORDS]) -> EndpointCounters {
    let c = |i: usize| Counter {
        frames: w[i],
        bytes: w[i + 1],
    };
    EndpointCounters {
        rx_wire: c(0),
        rx_local: c(2),
        tx: c(4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stripe_per_cpu_id_gaps_included() {
        assert_eq!(stripes_of("0\n"), Some(1));
        assert_eq!(stripes_of("0-1\n"), Some(2));
        assert_eq!(stripes_of("0-3,8-11\n"), Some(12));
        assert_eq!(stripes_of("0,2,5"), Some(6));
        assert_eq!(stripes_of(""), None);
        assert_eq!(stripes_of("0-x"), None);
        // This machine: at least as many as aya counts.
        let here = stripes().unwrap();
        assert!(here as usize >= aya::util::nr_cpus().unwrap(), "{here}");
    }

    #[test]
    fn words_are_the_fields_in_order() {
        let c = counters([1, 2, 3, 4, 5, 6]);
        assert_eq!(
            c.rx_wire,
            Counter {
                frames: 1,
                bytes: 2
            }
        );
        assert_eq!(
            c.rx_local,
            Counter {
                frames: 3,
                bytes: 4
            }
        );
        assert_eq!(
            c.tx,
            Counter {
                frames: 5,
                bytes: 6
            }
        );
        // The same as the bytes of the map's element, read as the type.
        let bytes: Vec<u8> = (1u64..=6).flat_map(u64::to_le_bytes).collect();
        let read: EndpointCounters = crate::sys::bpf::read_pod(&bytes);
        assert_eq!(read, c);
    }
}
