//! The view model of `mvnet top`, without a terminal: which rows to show in
//! which order, each endpoint's recent history for its sparkline, and which
//! verdicts are alarming. Built from a [`Snapshot`] and the [`Rates`] since
//! the previous one.
use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, SystemTime},
};

use macvlan_common::{Counter, EndpointCounters, Hook, Verdict, VlanCounters};

use crate::stats::{EndpointRates, Rate, Rates, Snapshot, VlanRates};

/// (network name, container name, interface) — how [`Rates`] keys an
/// endpoint.
pub type EndpointId = (String, String, String);

/// The column the endpoint rows are sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Network,
    Rx,
    Tx,
    Local,
    Invalid,
    Container,
    Mac,
    Vlan,
}

impl SortKey {
    /// The order `s` / `→` cycles through (`←` goes back).
    pub const CYCLE: [SortKey; 8] = [
        SortKey::Network,
        SortKey::Rx,
        SortKey::Tx,
        SortKey::Local,
        SortKey::Invalid,
        SortKey::Container,
        SortKey::Mac,
        SortKey::Vlan,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SortKey::Network => "network",
            SortKey::Rx => "rx/s",
            SortKey::Tx => "tx/s",
            SortKey::Local => "local/s",
            SortKey::Invalid => "invalid/s",
            SortKey::Container => "container",
            SortKey::Mac => "mac",
            SortKey::Vlan => "vlan",
        }
    }

    /// Rates sort busiest first; names, MACs and VLANs ascending.
    pub const fn descending(self) -> bool {
        matches!(
            self,
            SortKey::Rx | SortKey::Tx | SortKey::Local | SortKey::Invalid
        )
    }

    fn step(self, by: isize) -> SortKey {
        let n = Self::CYCLE.len() as isize;
        let i = Self::CYCLE.iter().position(|k| *k == self).unwrap_or(0) as isize;
        Self::CYCLE[(i + by).rem_euclid(n) as usize]
    }
}

/// One endpoint row.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointRow {
    pub network: String,
    pub container: String,
    pub ifname: String,
    pub mac: crate::model::Mac,
    /// The network's VLAN on its root (0 = untagged).
    pub vlan: u16,
    /// Whether the classifier has an entry for it (else its counters are
    /// zero and `mvnet restore` is due).
    pub in_classifier: bool,
    /// Frames per second since the previous refresh; `None` on the first.
    pub rates: Option<EndpointRates>,
    /// Counters since the endpoint entered the classifier.
    pub totals: EndpointCounters,
    /// Frames its device sent that failed the source checks, since then.
    pub tx_invalid: Counter,
    /// Recent frames per second (rx from the wire + rx local + tx), oldest
    /// first.
    pub history: Vec<f64>,
}

impl EndpointRow {
    fn rate(&self, key: SortKey) -> f64 {
        let r = self.rates.unwrap_or_default();
        match key {
            SortKey::Tx => r.tx.frames,
            SortKey::Local => r.rx_local.frames,
            SortKey::Invalid => r.tx_invalid.frames,
            _ => r.rx_wire.frames,
        }
    }

    fn total(&self, key: SortKey) -> u64 {
        match key {
            SortKey::Tx => self.totals.tx.frames,
            SortKey::Local => self.totals.rx_local.frames,
            SortKey::Invalid => self.tx_invalid.frames,
            _ => self.totals.rx_wire.frames,
        }
    }
}

/// One VLAN of one root device.
#[derive(Clone, Debug, PartialEq)]
pub struct VlanRow {
    pub root: String,
    pub vlan: u16,
    pub rates: Option<VlanRates>,
    pub totals: VlanCounters,
}

/// One verdict, summed over root devices, per hook.
#[derive(Clone, Debug, PartialEq)]
pub struct VerdictRow {
    pub verdict: Verdict,
    /// Per hook (in [`Hook::ALL`] order): frames per second (`None` on the
    /// first refresh) and total frames.
    pub hooks: [(Option<f64>, u64); 3],
}

impl VerdictRow {
    /// Verdicts that mean traffic that should not be there.
    pub fn is_invalid_kind(verdict: Verdict) -> bool {
        matches!(
            verdict,
            Verdict::UnknownMac | Verdict::VlanMismatch | Verdict::Malformed | Verdict::Spoofed
        )
    }

    /// An invalid verdict that has been counted (now or ever): shown
    /// highlighted.
    pub fn alarm(&self) -> bool {
        Self::is_invalid_kind(self.verdict)
            && self
                .hooks
                .iter()
                .any(|(rate, total)| *total > 0 || rate.is_some_and(|r| r > 0.0))
    }
}

/// The header line's facts.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub taken: SystemTime,
    pub interval: Duration,
    /// Root devices of the shown networks, and how many have the classifier.
    pub roots: usize,
    pub attached: usize,
    /// Endpoints shown (after the network filter).
    pub endpoints: usize,
    /// The fullest classifier table: (root, entries, capacity).
    pub fullest: Option<(String, usize, u32)>,
}

/// Everything one screen (or one plain-text block) shows.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub header: Header,
    pub sort: SortKey,
    pub reverse: bool,
    /// The network filter (`n`), if any.
    pub network: Option<String>,
    pub endpoints: Vec<EndpointRow>,
    pub vlans: Vec<VlanRow>,
    pub verdicts: Vec<VerdictRow>,
}

impl View {
    /// Whether any invalid verdict has been counted.
    pub fn alarm(&self) -> bool {
        self.verdicts.iter().any(VerdictRow::alarm)
    }
}

/// What the user chose (sort, filter) and what was seen (histories).
#[derive(Clone, Debug)]
pub struct Model {
    pub sort: SortKey,
    pub reverse: bool,
    pub network: Option<String>,
    pub interval: Duration,
    /// Samples kept per endpoint.
    depth: usize,
    history: BTreeMap<EndpointId, VecDeque<f64>>,
}

impl Model {
    pub fn new(interval: Duration, depth: usize) -> Model {
        Model {
            sort: SortKey::Network,
            reverse: false,
            network: None,
            interval,
            depth: depth.max(1),
            history: BTreeMap::new(),
        }
    }

    pub fn next_sort(&mut self) {
        self.sort = self.sort.step(1);
    }

    pub fn prev_sort(&mut self) {
        self.sort = self.sort.step(-1);
    }

    pub fn toggle_reverse(&mut self) {
        self.reverse = !self.reverse;
    }

    /// Cycles the network filter: all, then each network of `snap` by name,
    /// then all again.
    pub fn next_network(&mut self, snap: &Snapshot) {
        let names: Vec<&str> = snap.networks.iter().map(|n| n.name.as_str()).collect();
        self.network = match &self.network {
            None => names.first().map(|s| s.to_string()),
            Some(cur) => match names.iter().position(|n| n == cur) {
                Some(i) => names.get(i + 1).map(|s| s.to_string()),
                None => names.first().map(|s| s.to_string()),
            },
        };
    }

    /// Records one refresh's rates into the endpoints' histories; forgets
    /// endpoints that are gone.
    pub fn record(&mut self, rates: &Rates) {
        self.history
            .retain(|id, _| rates.endpoints.contains_key(id));
        for (id, r) in &rates.endpoints {
            let h = self.history.entry(id.clone()).or_default();
            if h.len() == self.depth {
                h.pop_front();
            }
            h.push_back(r.rx_wire.frames + r.rx_local.frames + r.tx.frames);
        }
    }

    /// The rows to show for `snap`, with `rates` since the previous
    /// snapshot (`None` on the first).
    pub fn view(&self, snap: &Snapshot, rates: Option<&Rates>) -> View {
        let shown = |name: &str| self.network.as_deref().is_none_or(|n| n == name);
        let mut endpoints = Vec::new();
        let mut roots = BTreeSet::new();
        let mut vlans_shown = BTreeSet::new();
        for net in snap.networks.iter().filter(|n| shown(&n.name)) {
            roots.insert(net.root.clone());
            vlans_shown.insert((net.root.clone(), net.vlan));
            for ep in &net.endpoints {
                let id = (
                    net.name.clone(),
                    ep.container.to_string(),
                    ep.ifname.to_string(),
                );
                endpoints.push(EndpointRow {
                    rates: rates.map(|r| r.endpoints.get(&id).copied().unwrap_or_default()),
                    history: self
                        .history
                        .get(&id)
                        .map(|h| h.iter().copied().collect())
                        .unwrap_or_default(),
                    network: id.0,
                    container: id.1,
                    ifname: id.2,
                    mac: ep.mac,
                    vlan: net.vlan,
                    in_classifier: ep.slot.is_some(),
                    totals: ep.counters,
                    tx_invalid: ep.tx_invalid,
                });
            }
        }
        self.sort_rows(&mut endpoints);

        let mut vlans = Vec::new();
        let mut verdicts: Vec<VerdictRow> = Verdict::ALL
            .iter()
            .map(|v| VerdictRow {
                verdict: *v,
                hooks: [(rates.map(|_| 0.0), 0); 3],
            })
            .collect();
        let mut attached = 0;
        let mut fullest: Option<(String, usize, u32)> = None;
        for root in snap.roots.iter().filter(|r| roots.contains(&r.root)) {
            if root.attached {
                attached += 1;
            }
            let fill = |e: usize, c: u32| e as f64 / c.max(1) as f64;
            if fullest
                .as_ref()
                .is_none_or(|(_, e, c)| fill(root.endpoints, root.capacity) > fill(*e, *c))
            {
                fullest = Some((root.root.clone(), root.endpoints, root.capacity));
            }
            // With a network filter: its VLAN, and VLANs of no network
            // (stray traffic) only when showing everything.
            for (vid, totals) in &root.vlans {
                let known = vlans_shown.contains(&(root.root.clone(), *vid));
                let of_any_network = snap
                    .networks
                    .iter()
                    .any(|n| n.root == root.root && n.vlan == *vid);
                if !known && (self.network.is_some() || of_any_network) {
                    continue;
                }
                vlans.push(VlanRow {
                    root: root.root.clone(),
                    vlan: *vid,
                    rates: rates.map(|r| {
                        r.vlans
                            .get(&(root.root.clone(), *vid))
                            .copied()
                            .unwrap_or_default()
                    }),
                    totals: *totals,
                });
            }
            for row in verdicts.iter_mut() {
                for (i, hook) in Hook::ALL.iter().enumerate() {
                    let (rate, total) = &mut row.hooks[i];
                    *total += root.verdicts.get(*hook, row.verdict).frames;
                    if let (Some(rate), Some(r)) = (rate.as_mut(), rates) {
                        *rate += r
                            .verdicts
                            .get(&(root.root.clone(), *hook, row.verdict))
                            .copied()
                            .unwrap_or(Rate::default())
                            .frames;
                    }
                }
            }
        }

        View {
            header: Header {
                taken: snap.taken,
                interval: self.interval,
                roots: roots.len(),
                attached,
                endpoints: endpoints.len(),
                fullest,
            },
            sort: self.sort,
            reverse: self.reverse,
            network: self.network.clone(),
            endpoints,
            vlans,
            verdicts,
        }
    }

    fn sort_rows(&self, rows: &mut [EndpointRow]) {
        let key = self.sort;
        let by_name = |a: &EndpointRow, b: &EndpointRow| {
            (&a.network, &a.container, &a.ifname).cmp(&(&b.network, &b.container, &b.ifname))
        };
        rows.sort_by(|a, b| {
            let primary = match key {
                SortKey::Network => Ordering::Equal,
                SortKey::Container => (&a.container, &a.ifname).cmp(&(&b.container, &b.ifname)),
                SortKey::Mac => a.mac.cmp(&b.mac),
                SortKey::Vlan => a.vlan.cmp(&b.vlan),
                // Busiest now, then busiest since the start.
                SortKey::Rx | SortKey::Tx | SortKey::Local | SortKey::Invalid => b
                    .rate(key)
                    .total_cmp(&a.rate(key))
                    .then(b.total(key).cmp(&a.total(key))),
            };
            let o = primary.then_with(|| by_name(a, b));
            if self.reverse {
                o.reverse()
            } else {
                o
            }
        });
    }
}

/// Eight levels of a block sparkline.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` samples of `history` as a sparkline scaled to their own
/// maximum: a blank for zero, `▁` for the smallest non-zero rate, `█` for
/// the maximum; right-aligned (newest at the right edge).
pub fn sparkline(history: &[f64], width: usize) -> String {
    let tail = &history[history.len().saturating_sub(width)..];
    let max = tail.iter().copied().fold(0.0_f64, f64::max);
    let mut s = " ".repeat(width - tail.len());
    for v in tail {
        s.push(if *v <= 0.0 || max <= 0.0 {
            ' '
        } else {
            let level = ((v / max) * BARS.len() as f64).ceil() as usize;
            BARS[level.clamp(1, BARS.len()) - 1]
        });
    }
    s
}

/// A rate or count in at most 6 characters: `0`, `3.5`, `812`, `12.3k`,
/// `4.1M`, `1.0G`.
pub fn compact(v: f64) -> String {
    let (v, unit) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    if v == 0.0 {
        "0".into()
    } else if unit.is_empty() && (v.fract() == 0.0 || v.abs() >= 100.0) {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use macvlan_common::Counter;

    use super::*;
    use crate::{
        datapath::VerdictTable,
        stats::EndpointStats,
        top::fixtures::{self, endpoint, network},
    };

    fn frames(n: u64) -> Counter {
        Counter {
            frames: n,
            bytes: n * 60,
        }
    }

    fn ep(container: &str, mac_last: u8, rx: u64) -> EndpointStats {
        endpoint(container, [2, 0x42, 0, 0, 0, mac_last], rx)
    }

    /// a1 (101 frames), a2 (37) on `na`; b1 (59) on `nb`, VLAN 10.
    fn snapshot(scale: u64, verdicts: VerdictTable) -> Snapshot {
        fixtures::snapshot(
            &[0, 10],
            verdicts,
            vec![
                network(
                    "na",
                    0,
                    vec![ep("a1", 1, 101 * scale), ep("a2", 2, 37 * scale)],
                ),
                network("nb", 10, vec![ep("b1", 3, 59 * scale)]),
            ],
        )
    }

    fn order(v: &View) -> Vec<&str> {
        v.endpoints.iter().map(|r| r.container.as_str()).collect()
    }

    #[test]
    fn rows_sort_by_the_chosen_column() {
        let snap = snapshot(1, VerdictTable::default());
        let mut m = Model::new(Duration::from_secs(1), 10);
        assert_eq!(order(&m.view(&snap, None)), ["a1", "a2", "b1"]);
        // Rx: no rates yet, so by total frames, busiest first.
        m.next_sort();
        assert_eq!(m.sort, SortKey::Rx);
        assert_eq!(order(&m.view(&snap, None)), ["a1", "b1", "a2"]);
        m.toggle_reverse();
        assert_eq!(order(&m.view(&snap, None)), ["a2", "b1", "a1"]);
        m.toggle_reverse();
        // Rates win over totals.
        let mut rates = Rates::default();
        rates.endpoints.insert(
            ("na".into(), "a2".into(), "eth0".into()),
            EndpointRates {
                rx_wire: Rate {
                    frames: 5.0,
                    bytes: 300.0,
                },
                ..Default::default()
            },
        );
        assert_eq!(order(&m.view(&snap, Some(&rates))), ["a2", "a1", "b1"]);
        m.prev_sort();
        m.prev_sort();
        assert_eq!(m.sort, SortKey::Vlan);
        assert_eq!(order(&m.view(&snap, None)), ["a1", "a2", "b1"]);
        m.toggle_reverse();
        assert_eq!(order(&m.view(&snap, None)), ["b1", "a2", "a1"]);
        // The cycle comes back round.
        for _ in 0..SortKey::CYCLE.len() {
            m.next_sort();
        }
        assert_eq!(m.sort, SortKey::Vlan);
    }

    #[test]
    fn network_filter_cycles_and_hides_other_rows() {
        let snap = snapshot(1, VerdictTable::default());
        let mut m = Model::new(Duration::from_secs(1), 10);
        m.next_network(&snap);
        let v = m.view(&snap, None);
        assert_eq!(v.network.as_deref(), Some("na"));
        assert_eq!(order(&v), ["a1", "a2"]);
        assert_eq!(v.vlans.iter().map(|r| r.vlan).collect::<Vec<_>>(), [0]);
        m.next_network(&snap);
        assert_eq!(order(&m.view(&snap, None)), ["b1"]);
        m.next_network(&snap);
        assert_eq!(m.network, None);
        assert_eq!(m.view(&snap, None).endpoints.len(), 3);
    }

    #[test]
    fn history_is_a_ring_of_recent_rates() {
        let s0 = snapshot(0, VerdictTable::default());
        let mut m = Model::new(Duration::from_secs(1), 3);
        let mut prev = s0.clone();
        for scale in 1..=5 {
            let mut cur = snapshot(scale, VerdictTable::default());
            cur.at = prev.at + Duration::from_secs(1);
            m.record(&Rates::between(&prev, &cur));
            prev = cur;
        }
        let v = m.view(&prev, None);
        // 101 frames a second, every second; only the last 3 kept.
        assert_eq!(v.endpoints[0].container, "a1");
        assert_eq!(v.endpoints[0].history, [101.0, 101.0, 101.0]);
        // An endpoint that leaves loses its history.
        let mut gone = prev.clone();
        gone.networks[0].endpoints.remove(0);
        gone.at = prev.at + Duration::from_secs(1);
        m.record(&Rates::between(&prev, &gone));
        assert!(!m
            .history
            .contains_key(&("na".into(), "a1".into(), "eth0".into())));
        assert_eq!(m.history.len(), 2);
    }

    #[test]
    fn sparkline_scales_to_its_own_maximum() {
        assert_eq!(sparkline(&[], 4), "    ");
        assert_eq!(sparkline(&[0.0, 0.0], 4), "    ");
        assert_eq!(sparkline(&[1.0, 0.0, 7.0, 14.0], 4), "▁ ▄█");
        // Only the newest `width` samples, newest on the right.
        assert_eq!(sparkline(&[100.0, 1.0, 2.0], 2), "▄█");
    }

    #[test]
    fn invalid_verdicts_alarm_when_counted() {
        let snap = snapshot(1, VerdictTable::default());
        let m = Model::new(Duration::from_secs(1), 10);
        let v = m.view(&snap, None);
        assert!(!v.alarm());
        assert_eq!(v.verdicts.len(), 7);

        // Broadcast is not invalid; unknown_mac is, once counted.
        let mut table = VerdictTable::default();
        table.set(Hook::XdpIngress, Verdict::Broadcast, frames(9));
        let v = m.view(&snapshot(1, table.clone()), None);
        assert!(!v.alarm());
        table.set(Hook::XdpIngress, Verdict::UnknownMac, frames(23));
        let v = m.view(&snapshot(1, table), None);
        assert!(v.alarm());
        let alarms: Vec<Verdict> = v
            .verdicts
            .iter()
            .filter(|r| r.alarm())
            .map(|r| r.verdict)
            .collect();
        assert_eq!(alarms, [Verdict::UnknownMac]);
        let row = &v.verdicts[Verdict::UnknownMac as usize];
        assert_eq!(row.hooks[0], (None, 23));

        // A rate alone alarms too.
        let row = VerdictRow {
            verdict: Verdict::Spoofed,
            hooks: [(None, 0), (None, 0), (Some(0.5), 0)],
        };
        assert!(row.alarm());
    }

    #[test]
    fn compact_numbers_fit_six_columns() {
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(3.5), "3.5");
        assert_eq!(compact(101.0), "101");
        assert_eq!(compact(812.4), "812");
        assert_eq!(compact(9999.0), "9999");
        assert_eq!(compact(12_345.0), "12.3k");
        assert_eq!(compact(123_456.0), "123k");
        assert_eq!(compact(4_100_000.0), "4.1M");
        assert_eq!(compact(1.0e9), "1.0G");
    }
}
