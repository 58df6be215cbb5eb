//! `mvnet stats --json`: the snapshot as a stable, versioned document for
//! scripts (schema in the README, "Observability"). Counts are exact
//! integers; under `--watch` every counted object also carries `rate`, the
//! same shape in per-second floats, over `interval_secs`.
use macvlan_common::{Counter, Hook, Verdict};
use serde::Serialize;

use super::{Rate, Rates, Snapshot};
use crate::model::rfc3339;

/// Bumped on any incompatible change of the shape below.
pub const VERSION: u32 = 1;

#[derive(Serialize)]
pub struct Document {
    pub version: u32,
    /// RFC 3339 UTC time of the read.
    pub taken: String,
    /// Seconds the rates are over (only under `--watch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<f64>,
    pub networks: Vec<Network>,
    pub roots: Vec<Root>,
}

#[derive(Serialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    /// `mvnet`, `docker`, `cni:NAME`: who made the network.
    pub owner: String,
    pub parent: String,
    pub root: String,
    pub vlan: u16,
    pub policy: &'static str,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Serialize)]
pub struct Endpoint {
    pub container: String,
    pub container_id: String,
    /// `mvnet`, `docker`, `cni:NAME`: who made the endpoint (for CNI, its
    /// network's).
    pub owner: String,
    pub ifname: String,
    pub mac: String,
    /// The endpoint's VLAN on the root (its network's; 0 = untagged).
    pub vlan: u16,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    /// Slot in the classifier; null when it has no entry (counts are 0).
    pub slot: Option<u32>,
    pub rx: EndpointRx<Count>,
    pub tx: Count,
    /// Sent by its own device and failed the source checks (another
    /// endpoint's or a stranger's MAC or address, a VLAN tag, a header cut
    /// short): dropped under enforce, passed under observe; not in `tx`.
    pub tx_invalid: Count,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<EndpointRate>,
}

#[derive(Serialize)]
pub struct EndpointRx<T> {
    /// From the wire (XDP on the root; TC ingress for frames XDP did not
    /// see). Each frame once.
    pub wire: T,
    /// From another endpoint on the same parent (bridge mode; TC ingress).
    pub local: T,
}

#[derive(Serialize)]
pub struct EndpointRate {
    pub rx: EndpointRx<PerSec>,
    pub tx: PerSec,
    pub tx_invalid: PerSec,
}

#[derive(Clone, Copy, Serialize)]
pub struct Count {
    pub frames: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Serialize)]
pub struct PerSec {
    pub frames: f64,
    pub bytes: f64,
}

#[derive(Serialize)]
pub struct Root {
    pub root: String,
    pub attached: bool,
    /// The hooks the classifier runs on (empty when not attached), and why.
    pub hooks: &'static [&'static str],
    pub hooks_reason: &'static str,
    /// Endpoints in the classifier's table, and its capacity.
    pub endpoints: usize,
    pub capacity: u32,
    pub vlans: Vec<Vlan>,
    /// Every hook and verdict, zeros included.
    pub verdicts: Vec<VerdictCount>,
}

#[derive(Serialize)]
pub struct Vlan {
    /// 0 = untagged.
    pub vlan: u16,
    /// Counted by XDP: the wire frames it saw.
    pub rx_xdp: Count,
    /// Counted by TC ingress: what XDP did not count (bridge-mode frames,
    /// no XDP or no XDP metadata, tags the NIC took out before XDP).
    pub rx_tc: Count,
    pub tx_tc: Count,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<VlanRate>,
}

#[derive(Serialize)]
pub struct VlanRate {
    pub rx_xdp: PerSec,
    pub rx_tc: PerSec,
    pub tx_tc: PerSec,
}

#[derive(Serialize)]
pub struct VerdictCount {
    pub hook: &'static str,
    /// rx for xdp_ingress and tc_ingress, tx for tc_egress.
    pub direction: &'static str,
    pub verdict: &'static str,
    pub frames: u64,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<PerSec>,
}

/// rx or tx: which way a hook sees frames.
pub fn direction(hook: Hook) -> &'static str {
    match hook {
        Hook::XdpIngress | Hook::TcIngress => "rx",
        Hook::TcEgress => "tx",
    }
}

fn count(c: Counter) -> Count {
    Count {
        frames: c.frames,
        bytes: c.bytes,
    }
}

fn per_sec(r: Rate) -> PerSec {
    PerSec {
        frames: r.frames,
        bytes: r.bytes,
    }
}

/// The document of `snap`, with `rates` (from the previous snapshot) under
/// `--watch`.
pub fn document(snap: &Snapshot, rates: Option<&Rates>) -> Document {
    let networks = snap
        .networks
        .iter()
        .map(|n| Network {
            name: n.name.clone(),
            id: n.id.clone(),
            owner: n.owner.describe(),
            parent: n.parent.clone(),
            root: n.root.clone(),
            vlan: n.vlan,
            policy: n.policy.as_str(),
            endpoints: n
                .endpoints
                .iter()
                .map(|e| Endpoint {
                    container: e.container.to_string(),
                    container_id: e.container_id.to_string(),
                    owner: e.owner.describe(),
                    ifname: e.ifname.to_string(),
                    mac: e.mac.to_string(),
                    vlan: n.vlan,
                    ipv4: e.ipv4.map(|a| a.to_string()),
                    ipv6: e.ipv6.map(|a| a.to_string()),
                    slot: e.slot,
                    rx: EndpointRx {
                        wire: count(e.counters.rx_wire),
                        local: count(e.counters.rx_local),
                    },
                    tx: count(e.counters.tx),
                    tx_invalid: count(e.tx_invalid),
                    rate: rates.map(|r| {
                        let r = r.endpoint(&n.name, e);
                        EndpointRate {
                            rx: EndpointRx {
                                wire: per_sec(r.rx_wire),
                                local: per_sec(r.rx_local),
                            },
                            tx: per_sec(r.tx),
                            tx_invalid: per_sec(r.tx_invalid),
                        }
                    }),
                })
                .collect(),
        })
        .collect();
    let roots = snap
        .roots
        .iter()
        .map(|r| Root {
            root: r.root.clone(),
            attached: r.attached,
            hooks: r.hooks.map_or(&[][..], |h| h.names()),
            hooks_reason: r.hooks.map_or("", |h| h.reason(r.xdp_mode)),
            endpoints: r.endpoints,
            capacity: r.capacity,
            vlans: r
                .vlans
                .iter()
                .map(|(vid, c)| Vlan {
                    vlan: *vid,
                    rx_xdp: count(c.rx_xdp),
                    rx_tc: count(c.rx_tc),
                    tx_tc: count(c.tx_tc),
                    rate: rates.map(|rates| {
                        let v = rates
                            .vlans
                            .get(&(r.root.clone(), *vid))
                            .copied()
                            .unwrap_or_default();
                        VlanRate {
                            rx_xdp: per_sec(v.rx_xdp),
                            rx_tc: per_sec(v.rx_tc),
                            tx_tc: per_sec(v.tx_tc),
                        }
                    }),
                })
                .collect(),
            verdicts: Hook::ALL
                .iter()
                .flat_map(|h| Verdict::ALL.iter().map(move |v| (*h, *v)))
                .map(|(hook, verdict)| {
                    let c = r.verdicts.get(hook, verdict);
                    VerdictCount {
                        hook: hook.name(),
                        direction: direction(hook),
                        verdict: verdict.name(),
                        frames: c.frames,
                        bytes: c.bytes,
                        rate: rates.map(|rates| {
                            per_sec(
                                rates
                                    .verdicts
                                    .get(&(r.root.clone(), hook, verdict))
                                    .copied()
                                    .unwrap_or_default(),
                            )
                        }),
                    }
                })
                .collect(),
        })
        .collect();
    Document {
        version: VERSION,
        taken: rfc3339(snap.taken),
        interval_secs: rates.map(|r| r.secs),
        networks,
        roots,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        collections::BTreeMap,
        time::{Duration, Instant, SystemTime},
    };

    use macvlan_common::{EndpointCounters, VlanCounters};

    use super::*;
    use crate::{
        datapath::hooks::HookSet,
        model::{Policy, XdpMode},
        stats::{EndpointStats, NetworkStats, RootStats},
    };

    /// One network with one endpoint that received `frames` from the wire
    /// and sent `frames / 2` invalid ones.
    pub(crate) fn snapshot(frames: u64, at: Instant) -> Snapshot {
        let c = Counter {
            frames,
            bytes: frames * 60,
        };
        Snapshot {
            taken: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400),
            at,
            roots: vec![RootStats {
                root: "eth0".into(),
                attached: true,
                hooks: Some(HookSet::TcOnly),
                xdp_mode: Some(XdpMode::Auto),
                endpoints: 1,
                capacity: 4096,
                vlans: BTreeMap::from([(
                    0,
                    VlanCounters {
                        rx_xdp: c,
                        ..Default::default()
                    },
                )]),
                verdicts: Default::default(),
            }],
            networks: vec![NetworkStats {
                id: "ab".repeat(32),
                name: "net".into(),
                owner: Default::default(),
                parent: "eth0".into(),
                root: "eth0".into(),
                vlan: 0,
                policy: Policy::Observe,
                endpoints: vec![EndpointStats {
                    container: "c1".into(),
                    container_id: "cd".repeat(32).into(),
                    owner: Default::default(),
                    ifname: "eth0".into(),
                    mac: crate::model::Mac::new([2, 0x42, 10, 0, 0, 2]),
                    ipv4: Some("10.0.0.2".parse().unwrap()),
                    ipv6: None,
                    slot: Some(0),
                    counters: EndpointCounters {
                        rx_wire: c,
                        ..Default::default()
                    },
                    tx_invalid: Counter {
                        frames: frames / 2,
                        bytes: frames / 2 * 60,
                    },
                }],
            }],
        }
    }

    #[test]
    fn document_has_the_documented_shape() {
        let v = serde_json::to_value(document(&snapshot(7, Instant::now()), None)).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["taken"], "1970-01-02T00:00:00.000000000Z");
        assert!(v.get("interval_secs").is_none());
        let e = &v["networks"][0]["endpoints"][0];
        assert_eq!(e["mac"], "02:42:0a:00:00:02");
        assert_eq!(e["ipv4"], "10.0.0.2");
        assert_eq!(e["vlan"], 0);
        assert_eq!(e["ipv6"], serde_json::Value::Null);
        assert_eq!(e["rx"]["wire"]["frames"], 7);
        assert_eq!(e["rx"]["wire"]["bytes"], 420);
        assert_eq!(e["tx"]["frames"], 0);
        assert_eq!(e["tx_invalid"]["frames"], 3);
        assert_eq!(e["tx_invalid"]["bytes"], 180);
        assert!(e.get("rate").is_none());
        let r = &v["roots"][0];
        assert_eq!(r["vlans"][0]["rx_xdp"]["frames"], 7);
        assert_eq!(r["hooks"], serde_json::json!(["tc_ingress", "tc_egress"]));
        assert_eq!(
            r["hooks_reason"],
            "tc only: veth parent, native XDP would switch its receive path to NAPI"
        );
        assert_eq!(r["verdicts"].as_array().unwrap().len(), 21);
        assert_eq!(r["verdicts"][20]["hook"], "tc_egress");
        assert_eq!(r["verdicts"][20]["direction"], "tx");
        assert_eq!(r["verdicts"][20]["verdict"], "spoofed");
    }

    #[test]
    fn watch_adds_rates_per_second() {
        let t = Instant::now();
        let (a, b) = (snapshot(10, t), snapshot(30, t + Duration::from_secs(2)));
        let rates = Rates::between(&a, &b);
        let v = serde_json::to_value(document(&b, Some(&rates))).unwrap();
        assert_eq!(v["interval_secs"], 2.0);
        let e = &v["networks"][0]["endpoints"][0];
        assert_eq!(e["rate"]["rx"]["wire"]["frames"], 10.0);
        assert_eq!(e["rate"]["rx"]["wire"]["bytes"], 600.0);
        assert_eq!(e["rate"]["tx_invalid"]["frames"], 5.0);
        assert_eq!(e["rate"]["tx_invalid"]["bytes"], 300.0);
        assert_eq!(v["roots"][0]["vlans"][0]["rate"]["rx_xdp"]["frames"], 10.0);
        assert_eq!(v["roots"][0]["verdicts"][0]["rate"]["frames"], 0.0);
        let table = crate::stats::table::render(&b, Some(&rates));
        assert!(table.contains("WIRE-F/S"), "{table}");
        let widest = table.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(widest <= 100, "{widest} columns:\n{table}");
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with("c1"))
            .unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["c1", "eth0", "10.0", "600.0", "0.0", "0.0", "0.0", "0.0"]
        );
        // Its invalid frames, in their own table under the endpoints.
        let invalid: Vec<Vec<&str>> = table
            .lines()
            .skip_while(|l| !l.contains("failed the source checks"))
            .skip(1)
            .take(2)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            invalid,
            [
                vec!["CONTAINER", "IFNAME", "INVALID-F/S", "INVALID-B/S"],
                vec!["c1", "eth0", "5.0", "300.0"]
            ],
            "{table}"
        );
        assert_eq!(super::super::table::per_second(1234.0), "1.2k");
        assert_eq!(super::super::table::per_second(60e6), "60.0M");
    }
}
