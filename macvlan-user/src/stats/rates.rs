//! Rates between two snapshots, for `stats --watch`, `top` and tests.
use std::collections::{BTreeMap, HashMap};

use macvlan_common::{Counter, EndpointCounters, Hook, Verdict, VlanCounters};

use super::{EndpointStats, Snapshot};

/// Frames and bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    pub frames: f64,
    pub bytes: f64,
}

impl Rate {
    fn of(prev: Counter, cur: Counter, secs: f64) -> Rate {
        if secs <= 0.0 {
            return Rate::default();
        }
        // A counter that went backwards was reset (slot reused): no rate.
        let d = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        Rate {
            frames: d(prev.frames, cur.frames),
            bytes: d(prev.bytes, cur.bytes),
        }
    }
}

/// Per-second rates of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EndpointRates {
    pub rx_wire: Rate,
    pub rx_local: Rate,
    pub tx: Rate,
    /// Frames its device sent that failed the source checks.
    pub tx_invalid: Rate,
}

/// Per-second rates of one VLAN on a root.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VlanRates {
    pub rx_xdp: Rate,
    pub rx_tc: Rate,
    pub tx_tc: Rate,
}

/// Rates from `prev` to `cur`, keyed like the snapshots.
#[derive(Clone, Debug, Default)]
pub struct Rates {
    pub secs: f64,
    /// (network name, container name, ifname) → rates.
    pub endpoints: BTreeMap<(String, String, String), EndpointRates>,
    /// (root, VLAN id) → rates.
    pub vlans: BTreeMap<(String, u16), VlanRates>,
    /// (root, hook, verdict) → rate.
    pub verdicts: BTreeMap<(String, Hook, Verdict), Rate>,
}

impl Rates {
    /// The rates of endpoint `e` of network `net`: zero for one the
    /// previous snapshot did not have.
    pub fn endpoint(&self, net: &str, e: &EndpointStats) -> EndpointRates {
        let key = (
            net.to_owned(),
            e.container.to_string(),
            e.ifname.to_string(),
        );
        self.endpoints.get(&key).copied().unwrap_or_default()
    }

    /// Rates between two snapshots; entries only in `cur` get rates from
    /// zero.
    pub fn between(prev: &Snapshot, cur: &Snapshot) -> Rates {
        let secs = cur.at.saturating_duration_since(prev.at).as_secs_f64();
        let mut out = Rates {
            secs,
            ..Default::default()
        };
        for net in &cur.networks {
            // By (container id, ifname): a search per endpoint cost
            // seconds at 65,536 of them.
            let before: HashMap<(&str, &str), (EndpointCounters, Counter)> = prev
                .network(&net.name)
                .map(|n| {
                    n.endpoints
                        .iter()
                        .map(|e| ((&*e.container_id, &*e.ifname), (e.counters, e.tx_invalid)))
                        .collect()
                })
                .unwrap_or_default();
            for ep in &net.endpoints {
                let (p, p_invalid) = before
                    .get(&(&*ep.container_id, &*ep.ifname))
                    .copied()
                    .unwrap_or_default();
                let c = ep.counters;
                out.endpoints.insert(
                    (
                        net.name.clone(),
                        ep.container.to_string(),
                        ep.ifname.to_string(),
                    ),
                    EndpointRates {
                        rx_wire: Rate::of(p.rx_wire, c.rx_wire, secs),
                        rx_local: Rate::of(p.rx_local, c.rx_local, secs),
                        tx: Rate::of(p.tx, c.tx, secs),
                        tx_invalid: Rate::of(p_invalid, ep.tx_invalid, secs),
                    },
                );
            }
        }
        for root in &cur.roots {
            let before = prev.root(&root.root);
            for (vid, c) in &root.vlans {
                let p: VlanCounters = before
                    .and_then(|r| r.vlans.get(vid).copied())
                    .unwrap_or_default();
                out.vlans.insert(
                    (root.root.clone(), *vid),
                    VlanRates {
                        rx_xdp: Rate::of(p.rx_xdp, c.rx_xdp, secs),
                        rx_tc: Rate::of(p.rx_tc, c.rx_tc, secs),
                        tx_tc: Rate::of(p.tx_tc, c.tx_tc, secs),
                    },
                );
            }
            for hook in Hook::ALL {
                for verdict in Verdict::ALL {
                    let c = root.verdicts.get(hook, verdict);
                    let p = before
                        .map(|r| r.verdicts.get(hook, verdict))
                        .unwrap_or_default();
                    out.verdicts
                        .insert((root.root.clone(), hook, verdict), Rate::of(p, c, secs));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_delta_over_time_and_ignores_resets() {
        let a = Counter {
            frames: 10,
            bytes: 1000,
        };
        let b = Counter {
            frames: 30,
            bytes: 3000,
        };
        assert_eq!(
            Rate::of(a, b, 2.0),
            Rate {
                frames: 10.0,
                bytes: 1000.0
            }
        );
        assert_eq!(Rate::of(b, a, 2.0), Rate::default());
        assert_eq!(Rate::of(a, b, 0.0), Rate::default());
    }
}
