//! The metrics of one snapshot, encoded by prometheus-client: a collector
//! that owns the snapshot and writes every series straight from it (no
//! per-series allocation in a registry), in the Prometheus text format
//! (0.0.4) or OpenMetrics text, as the scraper asks.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mvnet_endpoint_frames_total`, `mvnet_endpoint_bytes_total` | counter | network, endpoint, ifname, mac, vlan, direction (rx, tx), path (wire, local) |
//! | `mvnet_endpoint_tx_invalid_frames_total`, `mvnet_endpoint_tx_invalid_bytes_total` | counter | network, endpoint, ifname, mac, vlan |
//! | `mvnet_vlan_frames_total`, `mvnet_vlan_bytes_total` | counter | root, vlan, hook, direction |
//! | `mvnet_verdict_frames_total`, `mvnet_verdict_bytes_total` | counter | root, hook, direction, verdict |
//! | `mvnet_network_endpoints` | gauge | network, root, vlan, policy |
//! | `mvnet_classifier_attached` | gauge | root |
//! | `mvnet_endpoint_map_entries`, `mvnet_endpoint_map_capacity` | gauge | root |
//! | `mvnet_endpoint_map_fill_ratio` | gauge | root |
//! | `mvnet_scrape_read_seconds` | gauge | (none) |
//! | `mvnet_scrape_errors_total` | counter | (none) |
//! | `mvnet_build_info` | gauge (always 1) | version |
use macvlan_common::{Counter, Hook, Verdict};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use crate::{
    model::Mac,
    stats::{json::direction, EndpointStats, NetworkStats, Snapshot},
};

/// Text formats a scrape can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (promtool, older Prometheus).
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The format for an HTTP `Accept` header.
    pub fn for_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What a scrape knows about itself and the exporter.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScrapeInfo {
    /// How long reading the state and every map took.
    pub read_secs: f64,
    /// Scrapes that failed before this one, since the exporter started.
    pub scrape_errors: u64,
}

/// A snapshot, and the scrape that read it.
#[derive(Debug)]
struct SnapshotCollector {
    snap: Snapshot,
    info: ScrapeInfo,
}

fn counter<S: EncodeLabelSet>(
    enc: &mut MetricEncoder<'_>,
    labels: &S,
    v: u64,
) -> Result<(), std::fmt::Error> {
    enc.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge<S: EncodeLabelSet>(
    enc: &mut MetricEncoder<'_>,
    labels: &S,
    v: f64,
) -> Result<(), std::fmt::Error> {
    enc.encode_family(labels)?.encode_gauge(&v)
}

/// Frames or bytes of a counter.
#[derive(Clone, Copy)]
enum Field {
    Frames,
    Bytes,
}

impl Field {
    fn of(self, c: Counter) -> u64 {
        match self {
            Field::Frames => c.frames,
            Field::Bytes => c.bytes,
        }
    }
}

/// The labels naming endpoint `e` of network `n` (`vlan`: its VLAN as
/// text), in the order every endpoint series has them.
fn endpoint_labels<'a>(
    n: &'a NetworkStats,
    vlan: &'a str,
    e: &'a EndpointStats,
    mac: &'a MacText,
) -> [(&'static str, &'a str); 5] {
    [
        ("network", n.name.as_str()),
        ("endpoint", &*e.container),
        ("ifname", &*e.ifname),
        ("mac", mac.as_str()),
        ("vlan", vlan),
    ]
}

/// A MAC written `aa:bb:cc:dd:ee:ff`, on the stack.
struct MacText([u8; 17]);

impl MacText {
    fn of(mac: Mac) -> MacText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b':'; 17];
        for (i, byte) in mac.octets().iter().enumerate() {
            text[3 * i] = HEX[usize::from(byte >> 4)];
            text[3 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        MacText(text)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits and colons are ASCII")
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = &self.snap;
        // Label values: the VLAN once per network, the MAC on the stack (no
        // allocation per endpoint: at 65,536 endpoints they added up).
        let vlans: Vec<String> = snap.networks.iter().map(|n| n.vlan.to_string()).collect();
        for (field, name, help) in [
            (
                Field::Frames,
                "mvnet_endpoint_frames",
                "Frames the classifier counted for an endpoint: received from the wire (XDP, or TC ingress where XDP did not see them) or from a neighbour on the same parent (path=local, TC ingress), sent (TC egress). Each frame once.",
            ),
            (
                Field::Bytes,
                "mvnet_endpoint_bytes",
                "Bytes the classifier counted for an endpoint, by direction and path.",
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            let endpoints = snap.networks.iter().zip(&vlans).flat_map(|(n, vlan)| {
                n.endpoints.iter().map(move |e| (n, vlan, e))
            });
            for (n, vlan, e) in endpoints {
                let mac = MacText::of(e.mac);
                for (direction, path, c) in [
                    ("rx", "wire", e.counters.rx_wire),
                    ("rx", "local", e.counters.rx_local),
                    ("tx", "wire", e.counters.tx),
                ] {
                    let labels = (
                        endpoint_labels(n, vlan, e, &mac),
                        [("direction", direction), ("path", path)],
                    );
                    counter(&mut m, &labels, field.of(c))?;
                }
            }
        }

        // One series per endpoint, zeros included: an alert on
        // `increase(...[5m]) > 0` sees the first invalid frame only if the
        // series existed before it.
        for (field, name, help) in [
            (
                Field::Frames,
                "mvnet_endpoint_tx_invalid_frames",
                "Frames an endpoint's own device sent that failed the source checks (another endpoint's or a stranger's MAC or address, a VLAN tag, a header cut short): dropped under enforce, passed under observe; not in mvnet_endpoint_frames_total.",
            ),
            (
                Field::Bytes,
                "mvnet_endpoint_tx_invalid_bytes",
                "Bytes of the frames an endpoint's own device sent that failed the source checks.",
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (n, vlan) in snap.networks.iter().zip(&vlans) {
                for e in &n.endpoints {
                    let mac = MacText::of(e.mac);
                    let labels = endpoint_labels(n, vlan, e, &mac);
                    counter(&mut m, &labels, field.of(e.tx_invalid))?;
                }
            }
        }

        for (field, name, help) in [
            (
                Field::Frames,
                "mvnet_vlan_frames",
                "Frames per VLAN (0 = untagged) counted by each hook of the classifier on a root device; each frame at one hook only (TC ingress counts what XDP did not), so sums over hooks count each frame once.",
            ),
            (
                Field::Bytes,
                "mvnet_vlan_bytes",
                "Bytes per VLAN (0 = untagged) counted by each hook of the classifier on a root device: frame lengths on the wire, VLAN tags included.",
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for r in snap.roots.iter().filter(|r| r.attached) {
                for (vid, c) in &r.vlans {
                    let vid = vid.to_string();
                    for (hook, c) in [
                        (Hook::XdpIngress, c.rx_xdp),
                        (Hook::TcIngress, c.rx_tc),
                        (Hook::TcEgress, c.tx_tc),
                    ] {
                        let labels = [
                            ("root", r.root.as_str()),
                            ("vlan", vid.as_str()),
                            ("hook", hook.name()),
                            ("direction", direction(hook)),
                        ];
                        counter(&mut m, &labels, field.of(c))?;
                    }
                }
            }
        }

        for (field, name, help) in [
            (
                Field::Frames,
                "mvnet_verdict_frames",
                "Frames per classifier verdict (delivered, unknown_mac, vlan_mismatch, malformed, broadcast, multicast, spoofed) and hook; each frame at one hook only (TC ingress counts what XDP did not).",
            ),
            (
                Field::Bytes,
                "mvnet_verdict_bytes",
                "Bytes per classifier verdict and hook: frame lengths on the wire, VLAN tags included.",
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for r in snap.roots.iter().filter(|r| r.attached) {
                for hook in Hook::ALL {
                    for verdict in Verdict::ALL {
                        let labels = [
                            ("root", r.root.as_str()),
                            ("hook", hook.name()),
                            ("direction", direction(hook)),
                            ("verdict", verdict.name()),
                        ];
                        counter(&mut m, &labels, field.of(r.verdicts.get(hook, verdict)))?;
                    }
                }
            }
        }

        let mut m = encoder.encode_descriptor(
            "mvnet_network_endpoints",
            "Endpoints (container attachments) of a network.",
            None,
            MetricType::Gauge,
        )?;
        for n in &snap.networks {
            let vlan = n.vlan.to_string();
            let labels = [
                ("network", n.name.as_str()),
                ("root", n.root.as_str()),
                ("vlan", vlan.as_str()),
                ("policy", n.policy.as_str()),
            ];
            gauge(&mut m, &labels, n.endpoints.len() as f64)?;
        }

        let roots = |m: &mut MetricEncoder<'_>, v: &dyn Fn(&crate::stats::RootStats) -> f64| {
            for r in &snap.roots {
                gauge(m, &[("root", r.root.as_str())], v(r))?;
            }
            Ok::<(), std::fmt::Error>(())
        };
        let mut m = encoder.encode_descriptor(
            "mvnet_classifier_attached",
            "1 when the classifier is attached (pinned) to the root device, 0 when a network needs it but it is missing (run `mvnet restore`).",
            None,
            MetricType::Gauge,
        )?;
        roots(&mut m, &|r| f64::from(u8::from(r.attached)))?;
        let mut m = encoder.encode_descriptor(
            "mvnet_endpoint_map_entries",
            "Endpoints in the classifier's table of a root device.",
            None,
            MetricType::Gauge,
        )?;
        roots(&mut m, &|r| r.endpoints as f64)?;
        let mut m = encoder.encode_descriptor(
            "mvnet_endpoint_map_capacity",
            "Endpoint slots of the classifier's table of a root device.",
            None,
            MetricType::Gauge,
        )?;
        roots(&mut m, &|r| f64::from(r.capacity))?;
        let mut m = encoder.encode_descriptor(
            "mvnet_endpoint_map_fill_ratio",
            "Endpoints in the classifier's table divided by its capacity (0..1).",
            None,
            MetricType::Gauge,
        )?;
        roots(&mut m, &|r| {
            r.endpoints as f64 / f64::from(r.capacity.max(1))
        })?;

        let mut m = encoder.encode_descriptor(
            "mvnet_scrape_read_seconds",
            "Time this scrape took to read the state file and every pinned map.",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&self.info.read_secs)?;

        let mut m = encoder.encode_descriptor(
            "mvnet_scrape_errors",
            "Scrapes that failed (reading the state file or a pinned map, encoding) since the exporter started; each is logged to its standard error.",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&self.info.scrape_errors, None)?;

        let mut m = encoder.encode_descriptor(
            "mvnet_build_info",
            "Always 1; the version label is the mvnet that serves these metrics.",
            None,
            MetricType::Gauge,
        )?;
        m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1i64)?;
        Ok(())
    }
}

/// The exposition of `snap` in `format`, whole.
pub fn encode(
    snap: Snapshot,
    info: &ScrapeInfo,
    format: Format,
) -> Result<String, std::fmt::Error> {
    // Roughly 200 bytes per series; one allocation up front.
    let endpoints: usize = snap.networks.iter().map(|n| n.endpoints.len()).sum();
    let mut out = String::with_capacity(16 * 1024 + 8 * 200 * endpoints);
    encode_into(snap, info, format, &mut out)?;
    Ok(out)
}

/// Writes the exposition of `snap` in `format` to `out` as it is encoded
/// (the exporter streams it: see `serve::body`).
pub fn encode_into(
    snap: Snapshot,
    info: &ScrapeInfo,
    format: Format,
    out: &mut impl std::fmt::Write,
) -> Result<(), std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector { snap, info: *info }));
    match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(out, &registry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_labelled_series() {
        let snap = crate::stats::json::tests::snapshot(7, std::time::Instant::now());
        let info = ScrapeInfo {
            read_secs: 0.001,
            scrape_errors: 3,
        };
        let text = encode(snap, &info, Format::Prometheus).unwrap();
        assert!(
            text.contains("# TYPE mvnet_endpoint_frames_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP mvnet_endpoint_frames_total "),
            "{text}"
        );
        assert!(text.contains(
            "mvnet_endpoint_frames_total{network=\"net\",endpoint=\"c1\",ifname=\"eth0\",mac=\"02:42:0a:00:00:02\",vlan=\"0\",direction=\"rx\",path=\"wire\"} 7\n"
        ), "{text}");
        assert!(text.contains(
            "mvnet_endpoint_tx_invalid_frames_total{network=\"net\",endpoint=\"c1\",ifname=\"eth0\",mac=\"02:42:0a:00:00:02\",vlan=\"0\"} 3\n"
        ), "{text}");
        assert!(text.contains(
            "mvnet_endpoint_tx_invalid_bytes_total{network=\"net\",endpoint=\"c1\",ifname=\"eth0\",mac=\"02:42:0a:00:00:02\",vlan=\"0\"} 180\n"
        ), "{text}");
        assert!(text.contains(
            "mvnet_vlan_bytes_total{root=\"eth0\",vlan=\"0\",hook=\"xdp_ingress\",direction=\"rx\"} 420\n"
        ), "{text}");
        assert!(text.contains(
            "mvnet_verdict_frames_total{root=\"eth0\",hook=\"tc_egress\",direction=\"tx\",verdict=\"spoofed\"} 0\n"
        ), "{text}");
        assert!(text.contains("mvnet_network_endpoints{network=\"net\",root=\"eth0\",vlan=\"0\",policy=\"observe\"} 1"), "{text}");
        assert!(
            text.contains("mvnet_endpoint_map_capacity{root=\"eth0\"} 4096"),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE mvnet_scrape_errors_total counter\nmvnet_scrape_errors_total 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "# TYPE mvnet_build_info gauge\nmvnet_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        let om = encode(
            crate::stats::json::tests::snapshot(7, std::time::Instant::now()),
            &info,
            Format::OpenMetrics,
        )
        .unwrap();
        assert!(
            om.contains("# TYPE mvnet_endpoint_frames counter\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn mac_text_is_display() {
        for mac in [[0u8; 6], [0x02, 0x42, 0xac, 0x10, 0x56, 0x02], [0xff; 6]] {
            let mac = Mac::new(mac);
            assert_eq!(MacText::of(mac).as_str(), mac.to_string());
        }
    }

    #[test]
    fn openmetrics_only_when_asked() {
        assert_eq!(Format::for_accept(None), Format::Prometheus);
        assert_eq!(Format::for_accept(Some("text/plain")), Format::Prometheus);
        assert_eq!(
            Format::for_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
