//! The report of one traffic run: what was sent, what the classifier
//! counted (by endpoint, VLAN and verdict), what the endpoints' kernel
//! counters received, what the kernel dropped, and the exact-accounting
//! check: for valid frames, sent = counted = delivered, and every invalid
//! frame counted under its verdict. Rendered as a table or as JSON.
use std::collections::BTreeMap;

use serde::Serialize;

use super::mix::FlowKind;

#[derive(Clone, Debug, Serialize)]
pub struct FlowRow {
    pub kind: FlowKind,
    pub dst_mac: String,
    /// The tag on the wire (0 = untagged).
    pub vlan: u16,
    /// The container owning `dst_mac`, if any.
    pub endpoint: Option<String>,
    pub requested: u64,
    pub sent: u64,
}

/// Valid frames of one endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointRow {
    pub container: String,
    pub network: String,
    pub mac: String,
    pub vlan: u16,
    /// Valid frames sent to it.
    pub sent: u64,
    /// Counted by the classifier as delivered to it (from the wire, at XDP).
    pub counted: u64,
    /// Unicast frames its macvlan received (kernel rx_packets - multicast).
    pub delivered: u64,
    /// Wrong-VLAN frames to its MAC that the kernel is expected to deliver
    /// too: the classifier passed them (its per-endpoint count), and their
    /// tag has no VLAN device on the root.
    pub wrong_vlan_delivered: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VlanRow {
    pub vlan: u16,
    /// Frames sent with this tag (0 = untagged).
    pub sent: u64,
    /// Seen by the classifier at XDP on this VLAN.
    pub counted_xdp: u64,
    /// Seen by the classifier at TC ingress on this VLAN.
    pub counted_tc: u64,
}

/// What the kernel reported dropping during the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Drops {
    /// Transmissions the sending device's driver refused (pktgen `errors`,
    /// e.g. a veth whose peer's ring was full). pktgen sends the frame
    /// again, and counts as sent only what the driver took: pushback, not
    /// loss.
    pub generator_errors: u64,
    /// The sending device's tx_dropped (a veth counts its refusals here).
    pub generator_tx_dropped: u64,
    /// The root device's rx_dropped.
    pub root_rx_dropped: u64,
}

impl Drops {
    /// Frames lost after the sender counted them as sent: drops at the
    /// sending device beyond the refusals the generator saw (and retried),
    /// plus drops at the root.
    pub fn lost(&self) -> u64 {
        self.generator_tx_dropped
            .saturating_sub(self.generator_errors)
            + self.root_rx_dropped
    }
}

/// `mvnet verify`'s line for an endpoint of the run.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyRow {
    pub container: String,
    pub network: String,
    pub classified: u64,
    pub kernel: u64,
    pub diff: i64,
    pub explanation: Option<String>,
}

/// One comparison of the exact-accounting check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub expected: u64,
    pub actual: u64,
    pub ok: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `pktgen` or `af_packet_tx_ring`.
    pub generator: String,
    /// Why this generator was chosen.
    pub generator_reason: String,
    pub device: String,
    pub netns: Option<String>,
    pub root: String,
    /// The hook that classifies the frames from the wire: `xdp` where the
    /// classifier is attached with XDP, `tc_ingress` where it runs on TC
    /// alone (`--xdp-mode auto` on a veth), as its pinned links say;
    /// [`WIRE_HOOKS_BOTH`] where XDP leaves tagged frames and its slow path
    /// to TC (`config_flags::VLANS_AT_TC`: 802.1Q networks on the root),
    /// each frame counted at one of them.
    pub wire_hook: String,
    pub frame_size: usize,
    /// Frames per second asked for (0 = as fast as the generator goes).
    pub rate_target: u64,
    pub threads: usize,
    pub elapsed_s: f64,
    /// Frames sent per second, over the whole run.
    pub rate_achieved: f64,
    pub timed_out: bool,
    pub requested: u64,
    pub sent: u64,
    pub sent_valid: u64,
    pub counted_valid: u64,
    pub delivered_valid: u64,
    pub flows: Vec<FlowRow>,
    pub endpoints: Vec<EndpointRow>,
    pub vlans: Vec<VlanRow>,
    /// Verdict counts during the run, per hook (`xdp`, `tc_ingress`).
    pub verdicts: BTreeMap<String, BTreeMap<String, u64>>,
    pub kernel_drops: Drops,
    pub verify: Vec<VerifyRow>,
    pub verify_ok: bool,
    pub checks: Vec<Check>,
    /// Explanations of differences, where the numbers give one.
    pub notes: Vec<String>,
    /// Every check holds.
    pub exact: bool,
}

/// [`Report::wire_hook`] of a root whose wire frames XDP and TC ingress
/// share.
pub const WIRE_HOOKS_BOTH: &str = "xdp+tc_ingress";

impl Report {
    fn verdict(&self, hook: &str, verdict: &str) -> u64 {
        self.verdicts
            .get(hook)
            .and_then(|v| v.get(verdict))
            .copied()
            .unwrap_or(0)
    }

    fn sent_of(&self, kind: FlowKind) -> u64 {
        self.flows
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.sent)
            .sum()
    }

    /// Fills `checks` and `exact` from the numbers.
    pub fn check(&mut self) {
        let mut checks = Vec::new();
        let mut push = |what: String, expected: u64, actual: u64| {
            checks.push(Check {
                ok: expected == actual,
                what,
                expected,
                actual,
            })
        };
        push(
            "frames sent = frames requested".into(),
            self.requested,
            self.sent,
        );
        for e in &self.endpoints {
            push(
                format!("{}: classifier counted = valid frames sent", e.container),
                e.sent,
                e.counted,
            );
            if e.wrong_vlan_delivered == 0 {
                push(
                    format!("{}: kernel delivered = valid frames sent", e.container),
                    e.sent,
                    e.delivered,
                );
            } else {
                push(
                    format!(
                        "{}: kernel delivered = valid frames sent + wrong-VLAN frames to its MAC (see note)",
                        e.container
                    ),
                    e.sent + e.wrong_vlan_delivered,
                    e.delivered,
                );
            }
        }
        let (hooks, hook_name): (&[&str], _) = match self.wire_hook.as_str() {
            "tc_ingress" => (&["tc_ingress"], "TC ingress"),
            WIRE_HOOKS_BOTH => (&["xdp", "tc_ingress"], "XDP + TC ingress"),
            _ => (&["xdp"], "XDP"),
        };
        let counted = |v: &str| hooks.iter().map(|h| self.verdict(h, v)).sum::<u64>();
        for (kind, verdict) in [
            (FlowKind::Valid, "delivered"),
            (FlowKind::UnknownMac, "unknown_mac"),
            (FlowKind::WrongVlan, "vlan_mismatch"),
        ] {
            push(
                format!(
                    "{hook_name} verdict {verdict} = {} frames sent",
                    kind.as_str()
                ),
                self.sent_of(kind),
                counted(verdict),
            );
        }
        push(
            format!("{hook_name} verdict malformed"),
            0,
            counted("malformed"),
        );
        for v in &self.vlans {
            push(
                format!(
                    "VLAN {}: {hook_name} counted = frames sent with this tag",
                    v.vlan
                ),
                v.sent,
                hooks
                    .iter()
                    .map(|h| match *h {
                        "xdp" => v.counted_xdp,
                        _ => v.counted_tc,
                    })
                    .sum(),
            );
        }
        push(
            "frames the kernel dropped after they were sent".into(),
            0,
            self.kernel_drops.lost(),
        );
        push(
            "mvnet verify: endpoints with an unexplained difference".into(),
            0,
            self.verify
                .iter()
                .filter(|v| v.diff != 0 && v.explanation.is_none())
                .count() as u64,
        );
        self.exact = checks.iter().all(|c| c.ok) && !self.timed_out;
        self.checks = checks;
    }

    /// The report as a table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let at = match &self.netns {
            Some(ns) => format!("{} in {ns}", self.device),
            None => self.device.clone(),
        };
        s += &format!(
            "generator: {}\nsending device: {at}; classifier on {}\n",
            self.generator, self.root
        );
        let target = if self.rate_target == 0 {
            "unpaced".to_owned()
        } else {
            format!("target {} fps", self.rate_target)
        };
        s += &format!(
            "sent {} of {} frames ({} bytes) in {:.3} s: {:.0} fps ({target}){}\n\n",
            self.sent,
            self.requested,
            self.frame_size,
            self.elapsed_s,
            self.rate_achieved,
            if self.timed_out {
                ", STOPPED AT THE DEADLINE"
            } else {
                ""
            }
        );
        s += &format!(
            "{:<12} {:<17} {:>5} {:<28} {:>10} {:>10}\n",
            "FLOW", "DST MAC", "VLAN", "ENDPOINT", "REQUESTED", "SENT"
        );
        for f in &self.flows {
            s += &format!(
                "{:<12} {:<17} {:>5} {:<28} {:>10} {:>10}\n",
                f.kind.as_str(),
                f.dst_mac,
                f.vlan,
                f.endpoint.as_deref().unwrap_or("-"),
                f.requested,
                f.sent
            );
        }
        s += &format!(
            "\n{:<28} {:<16} {:<17} {:>5} {:>10} {:>10} {:>10}\n",
            "ENDPOINT", "NETWORK", "MAC", "VLAN", "SENT", "COUNTED", "DELIVERED"
        );
        for e in &self.endpoints {
            s += &format!(
                "{:<28} {:<16} {:<17} {:>5} {:>10} {:>10} {:>10}\n",
                e.container, e.network, e.mac, e.vlan, e.sent, e.counted, e.delivered
            );
        }
        s += &format!(
            "{:<28} {:<16} {:<17} {:>5} {:>10} {:>10} {:>10}\n",
            "total (valid frames)",
            "",
            "",
            "",
            self.sent_valid,
            self.counted_valid,
            self.delivered_valid
        );
        s += &format!(
            "\n{:>5} {:>10} {:>10} {:>10}\n",
            "VLAN", "SENT", "XDP", "TC"
        );
        for v in &self.vlans {
            s += &format!(
                "{:>5} {:>10} {:>10} {:>10}\n",
                v.vlan, v.sent, v.counted_xdp, v.counted_tc
            );
        }
        s += &format!("\n{:<14} {:>10} {:>10}\n", "VERDICT", "XDP", "TC INGRESS");
        for v in [
            "delivered",
            "unknown_mac",
            "vlan_mismatch",
            "malformed",
            "broadcast",
            "multicast",
        ] {
            s += &format!(
                "{:<14} {:>10} {:>10}\n",
                v,
                self.verdict("xdp", v),
                self.verdict("tc_ingress", v)
            );
        }
        let d = &self.kernel_drops;
        s += &format!(
            "\nkernel drops: refused by the sending driver and sent again {}, sending device \
             tx_dropped {}, root rx_dropped {}; lost after sending: {}\n",
            d.generator_errors,
            d.generator_tx_dropped,
            d.root_rx_dropped,
            d.lost()
        );
        s += &format!(
            "mvnet verify: {}\n",
            if self.verify_ok {
                "every endpoint agrees".to_owned()
            } else {
                self.verify
                    .iter()
                    .filter(|v| v.diff != 0)
                    .map(|v| {
                        format!(
                            "{} differs by {} ({})",
                            v.container,
                            v.diff,
                            v.explanation.as_deref().unwrap_or("UNEXPLAINED")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        );
        if self.exact {
            s += &format!(
                "exact accounting: PASS (sent = counted = delivered = {} valid frames; {} invalid frames counted under their verdicts{})\n",
                self.sent_valid,
                self.sent - self.sent_valid,
                match self.endpoints.iter().map(|e| e.wrong_vlan_delivered).sum::<u64>() {
                    0 => String::new(),
                    n => format!("; {n} wrong-VLAN frames also delivered by MAC, as expected under observe: see the note"),
                }
            );
            for note in &self.notes {
                s += &format!("  note: {note}\n");
            }
        } else {
            s += "exact accounting: FAIL\n";
            for c in self.checks.iter().filter(|c| !c.ok) {
                s += &format!("  {}: expected {}, got {}\n", c.what, c.expected, c.actual);
            }
            if self.timed_out {
                s += "  the run hit its deadline before every frame was sent\n";
            }
            for note in &self.notes {
                s += &format!("  note: {note}\n");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(d: u64, u: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([
            ("delivered".to_owned(), d),
            ("unknown_mac".to_owned(), u),
            ("vlan_mismatch".to_owned(), 0),
            ("malformed".to_owned(), 0),
        ])
    }

    fn report() -> Report {
        Report {
            generator: "af_packet_tx_ring".into(),
            generator_reason: String::new(),
            device: "wire0".into(),
            netns: None,
            root: "eth0".into(),
            wire_hook: "xdp".into(),
            frame_size: 60,
            rate_target: 0,
            threads: 1,
            elapsed_s: 1.0,
            rate_achieved: 30.0,
            timed_out: false,
            requested: 30,
            sent: 30,
            sent_valid: 20,
            counted_valid: 20,
            delivered_valid: 20,
            flows: vec![
                FlowRow {
                    kind: FlowKind::Valid,
                    dst_mac: "02:42:00:00:00:01".into(),
                    vlan: 0,
                    endpoint: Some("c1".into()),
                    requested: 20,
                    sent: 20,
                },
                FlowRow {
                    kind: FlowKind::UnknownMac,
                    dst_mac: "06:fe:00:00:00:00".into(),
                    vlan: 0,
                    endpoint: None,
                    requested: 10,
                    sent: 10,
                },
            ],
            endpoints: vec![EndpointRow {
                container: "c1".into(),
                network: "n".into(),
                mac: "02:42:00:00:00:01".into(),
                vlan: 0,
                sent: 20,
                counted: 20,
                delivered: 20,
                wrong_vlan_delivered: 0,
            }],
            vlans: vec![VlanRow {
                vlan: 0,
                sent: 30,
                counted_xdp: 30,
                counted_tc: 30,
            }],
            verdicts: BTreeMap::from([
                ("xdp".to_owned(), verdicts(20, 10)),
                ("tc_ingress".to_owned(), verdicts(20, 10)),
            ]),
            kernel_drops: Drops::default(),
            verify: Vec::new(),
            verify_ok: true,
            checks: Vec::new(),
            notes: Vec::new(),
            exact: false,
        }
    }

    #[test]
    fn exact_when_every_count_matches() {
        let mut r = report();
        r.check();
        assert!(r.exact, "{:#?}", r.checks);
        assert!(r.render().contains("exact accounting: PASS"));
    }

    #[test]
    fn a_tc_only_classifier_is_held_to_its_tc_ingress_counts() {
        // TC alone (`--xdp-mode auto` on a veth): XDP sees nothing.
        let mut r = report();
        r.wire_hook = "tc_ingress".into();
        r.verdicts
            .get_mut("xdp")
            .unwrap()
            .values_mut()
            .for_each(|n| *n = 0);
        r.vlans[0].counted_xdp = 0;
        r.check();
        assert!(r.exact, "{:#?}", r.checks);
        // One frame off at TC ingress is caught and named.
        r.vlans[0].counted_tc = 29;
        r.check();
        assert!(!r.exact);
        assert!(
            r.render().contains(
                "VLAN 0: TC ingress counted = frames sent with this tag: expected 30, got 29"
            ),
            "{}",
            r.render()
        );
        // XDP leaving tagged frames to TC: each frame at one hook, the
        // sum held to what was sent.
        let mut r = report();
        r.wire_hook = WIRE_HOOKS_BOTH.into();
        r.verdicts.insert("xdp".into(), verdicts(12, 0));
        r.verdicts.insert("tc_ingress".into(), verdicts(8, 10));
        (r.vlans[0].counted_xdp, r.vlans[0].counted_tc) = (12, 18);
        r.check();
        assert!(r.exact, "{:#?}", r.checks);
        r.vlans[0].counted_tc = 17;
        r.check();
        assert!(r.render().contains(
            "VLAN 0: XDP + TC ingress counted = frames sent with this tag: expected 30, got 29"
        ));
        // And an XDP classifier is still held to XDP's.
        let mut r = report();
        r.verdicts
            .get_mut("xdp")
            .unwrap()
            .insert("delivered".into(), 19);
        r.check();
        assert!(!r.exact);
        assert!(r
            .render()
            .contains("XDP verdict delivered = valid frames sent: expected 20, got 19"));
    }

    #[test]
    fn expected_wrong_vlan_deliveries_keep_the_run_exact() {
        let mut r = report();
        r.generator_reason = "said on standard error".into();
        r.endpoints[0].delivered = 25;
        r.endpoints[0].wrong_vlan_delivered = 5;
        r.notes.push("why".into());
        r.check();
        assert!(r.exact, "{:#?}", r.checks);
        let text = r.render();
        assert!(text.starts_with("generator: af_packet_tx_ring\n"), "{text}");
        assert!(!text.contains("said on standard error"), "{text}");
        assert!(
            text.contains("5 wrong-VLAN frames also delivered by MAC, as expected under observe"),
            "{text}"
        );
        assert!(text.contains("  note: why\n"), "{text}");
        // One more than expected is caught.
        r.endpoints[0].delivered = 26;
        r.check();
        assert!(!r.exact);
    }

    #[test]
    fn one_frame_off_anywhere_fails_and_is_named() {
        let mut r = report();
        r.endpoints[0].delivered = 19;
        r.check();
        assert!(!r.exact);
        let text = r.render();
        assert!(
            text.contains("c1: kernel delivered = valid frames sent: expected 20, got 19"),
            "{text}"
        );
        let mut r = report();
        r.kernel_drops.generator_tx_dropped = 1;
        r.check();
        assert!(!r.exact);
        // Refusals pktgen saw and retried are pushback, not loss.
        let mut r = report();
        r.kernel_drops.generator_tx_dropped = 7;
        r.kernel_drops.generator_errors = 7;
        r.check();
        assert!(r.exact, "{:#?}", r.checks);
        let mut r = report();
        r.verdicts
            .get_mut("xdp")
            .unwrap()
            .insert("unknown_mac".into(), 9);
        r.check();
        assert!(!r.exact);
    }
}
