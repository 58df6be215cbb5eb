//! Reading the counter arrays (per-CPU, or striped by CPU) into totals.
use aya::maps::{Map, MapData, PerCpuArray};
use macvlan_common::{
    map_names, Counter, EndpointCounters, Hook, Verdict, VlanCounters, VERDICT_SLOTS, VLAN_SLOTS,
};

use super::DatapathError;

/// Verdict counters per hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerdictTable {
    counts: Vec<Counter>,
}

impl VerdictTable {
    pub fn get(&self, hook: Hook, verdict: Verdict) -> Counter {
        self.counts
            .get(verdict.index(hook) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Sets one counter (tables built by hand, as in tests).
    pub fn set(&mut self, hook: Hook, verdict: Verdict, counter: Counter) {
        if self.counts.is_empty() {
            self.counts = vec![Counter::default(); VERDICT_SLOTS as usize];
        }
        self.counts[verdict.index(hook) as usize] = counter;
    }

    /// Frames classified by `hook`, all verdicts.
    pub fn total(&self, hook: Hook) -> Counter {
        let mut sum = Counter::default();
        for v in Verdict::ALL {
            sum.merge(&self.get(hook, v));
        }
        sum
    }
}

/// All counters at one moment, summed over CPUs.
#[derive(Clone, Debug, Default)]
pub struct CounterSnapshot {
    pub endpoints: Vec<EndpointCounters>,
    pub vlans: Vec<VlanCounters>,
    pub verdicts: VerdictTable,
}

fn per_cpu_sum<V: aya::Pod + Default + Copy>(
    map: &Map,
    name: &'static str,
    len: u32,
    merge: impl Fn(&mut V, &V),
) -> Result<Vec<V>, DatapathError> {
    // Check the map is what we think before reading it raw.
    PerCpuArray::<&MapData, V>::try_from(map)
        .map_err(|source| DatapathError::Map { name, source })?;
    super::batch::per_cpu_array_sum(super::batch::map_data(map), name, len, merge)
}

pub(super) fn merge_endpoint(a: &mut EndpointCounters, b: &EndpointCounters) {
    a.rx_wire.merge(&b.rx_wire);
    a.rx_local.merge(&b.rx_local);
    a.tx.merge(&b.tx);
}

fn merge_vlan(a: &mut VlanCounters, b: &VlanCounters) {
    a.rx_xdp.merge(&b.rx_xdp);
    a.rx_tc.merge(&b.rx_tc);
    a.tx_tc.merge(&b.tx_tc);
}

/// Every slot's counters in ENDPOINT_STATS (`map`, of a loaded object or
/// a pin), summed over CPUs: through a mapping of its stripes, or for pins
/// made before the stripes, a batch read of the per-CPU array.
pub fn endpoint_counters(map: &Map) -> Result<Vec<EndpointCounters>, DatapathError> {
    match map {
        Map::Array(data) => Ok(super::striped::StripedCounters::map(data, true)?.sum()),
        _ => per_cpu_sum(
            map,
            map_names::ENDPOINT_STATS,
            super::capacity_of(map)?,
            merge_endpoint,
        ),
    }
}

impl CounterSnapshot {
    /// Reads through `map`, which finds a map by name (loaded or pinned).
    pub(super) fn read_with<'m>(
        map: impl Fn(&'static str) -> Result<&'m Map, DatapathError>,
    ) -> Result<Self, DatapathError> {
        Ok(Self {
            endpoints: endpoint_counters(map(map_names::ENDPOINT_STATS)?)?,
            vlans: per_cpu_sum(
                map(map_names::VLAN_STATS)?,
                map_names::VLAN_STATS,
                VLAN_SLOTS,
                merge_vlan,
            )?,
            verdicts: Self::read_verdicts(&map)?,
        })
    }

    /// Only the verdict counters: a cheap read for polling.
    pub(super) fn read_verdicts<'m>(
        map: impl Fn(&'static str) -> Result<&'m Map, DatapathError>,
    ) -> Result<VerdictTable, DatapathError> {
        Ok(VerdictTable {
            counts: per_cpu_sum(
                map(map_names::VERDICT_STATS)?,
                map_names::VERDICT_STATS,
                VERDICT_SLOTS,
                Counter::merge,
            )?,
        })
    }

    pub fn endpoint(&self, slot: u32) -> EndpointCounters {
        self.endpoints
            .get(slot as usize)
            .copied()
            .unwrap_or_default()
    }

    pub fn vlan(&self, vlan: u16) -> VlanCounters {
        self.vlans.get(vlan as usize).copied().unwrap_or_default()
    }
}
