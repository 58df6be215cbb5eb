//! `mvnet verify`: holds what the classifier counted as delivered to each
//! endpoint against the kernel's own counters of that macvlan device, and
//! explains every difference it can.
//!
//! Unicast is reconciled exactly: the classifier's `rx_wire + rx_local` of an
//! endpoint against the kernel's `rx_packets - multicast` of its link (a
//! macvlan counts broadcast and multicast copies in `multicast`). Both start
//! at zero together: the endpoint enters the classifier's table just before
//! its link is created.
//!
//! A frame to the endpoint's MAC tagged with another VLAN is a VLAN
//! mismatch, not a delivery. Under observe the classifier passes it, and
//! when no VLAN device on the root takes that tag macvlan hands it to the
//! endpoint by MAC: the kernel counts it, the classifier did not. The
//! classifier counts such passed frames per endpoint (ENDPOINT_MISMATCH),
//! so a surplus up to that count is explained.
//!
//! Likewise a malformed frame to the endpoint's MAC (a QinQ frame cut
//! inside its inner tag): under observe the classifier passes it, the
//! kernel untags what it can and macvlan delivers it by MAC. The
//! classifier counts those per endpoint too (ENDPOINT_MALFORMED).
use anyhow::Result;

use super::{
    datapath::{attachment, pin_dir, Attachment},
    Controller,
};
use crate::{datapath::pinned::PinnedMaps, model::Mac, netlink, netns::NetNs};

/// One endpoint's reconciliation.
#[derive(Clone, Debug)]
pub struct EndpointCheck {
    pub container: String,
    pub network: String,
    pub ifname: String,
    pub mac: Mac,
    /// Unicast frames the classifier counted as delivered.
    pub classified: u64,
    /// Unicast frames the kernel delivered (`rx_packets - multicast`).
    pub kernel: u64,
    /// Broadcast/multicast copies the kernel delivered.
    pub kernel_multicast: u64,
    /// Frames to this endpoint's MAC on another VLAN that the classifier
    /// passed (observe); the kernel may have delivered them by MAC. Read
    /// only when the kernel counted more than the classifier (else 0).
    pub vlan_mismatch_passed: u64,
    /// Malformed frames to this endpoint's MAC that the classifier passed
    /// (observe); read like `vlan_mismatch_passed`.
    pub malformed_passed: u64,
    /// `kernel - classified`.
    pub diff: i64,
    /// Why they differ, when known.
    pub explanation: Option<String>,
    /// The kernel does not have the endpoint as the state does (no
    /// classifier entry, no link): nothing could be compared, and `mvnet
    /// restore` is the fix.
    pub needs_restore: bool,
}

impl EndpointCheck {
    pub fn unexplained(&self) -> bool {
        self.diff != 0 && self.explanation.is_none()
    }

    /// Whether `verify` fails on this endpoint: a difference without an
    /// explanation, or a state the kernel does not match.
    pub fn failed(&self) -> bool {
        self.unexplained() || self.needs_restore
    }
}

impl Controller {
    /// What the kernel says is wrong under the networks (of `network`, if
    /// given): a parent down, renamed, replaced or gone, a classifier not
    /// attached to its root. One line each, naming the fix.
    pub fn root_problems(&self, network: Option<&str>) -> Result<Vec<String>> {
        let only = match network {
            Some(n) => Some(self.network(n)?.id.clone()),
            None => None,
        };
        let links = netlink::run(None, |nl| async move { nl.links().await })?;
        let mut problems = Vec::new();
        let mut roots = std::collections::BTreeSet::new();
        for net in self.state.networks.values() {
            if only.as_ref().is_some_and(|id| *id != net.id) {
                continue;
            }
            let p = &net.parent;
            let by_name = links.iter().find(|l| l.name == *p);
            let by_index = net
                .parent_ifindex
                .and_then(|i| links.iter().find(|l| l.index == i));
            match (by_name, by_index) {
                (None, Some(renamed)) => problems.push(format!(
                    "network {}: parent {p} was renamed to {}; rename it back with `ip link set {} name {p}`",
                    net.name, renamed.name, renamed.name
                )),
                (None, None) => problems.push(format!(
                    "network {}: parent {p} is gone; bring it back, then run `mvnet restore`",
                    net.name
                )),
                (Some(l), _) if net.parent_ifindex.is_some_and(|i| i != l.index) => {
                    problems.push(format!(
                        "network {}: parent {p} was replaced (ifindex {} is now {}); run `mvnet restore` to attach the classifier to it",
                        net.name,
                        net.parent_ifindex.unwrap_or_default(),
                        l.index
                    ))
                }
                (Some(l), _) if !l.up => problems.push(format!(
                    "network {}: parent {p} is down, so its endpoints receive nothing; bring it up with `ip link set {p} up`",
                    net.name
                )),
                _ => {}
            }
            let (root, _) = net.root();
            if roots.insert(root.to_owned())
                && links.iter().any(|l| l.name == root)
                && attachment(root)? != Attachment::Attached
            {
                problems.push(format!(
                    "the classifier is not attached to {root} (the kernel has no mvnet program there); run `mvnet restore`"
                ));
            }
        }
        Ok(problems)
    }

    /// Reconciles every endpoint (of `network`, if given).
    pub fn verify(&self, network: Option<&str>) -> Result<Vec<EndpointCheck>> {
        let only = match network {
            Some(n) => Some(self.network(n)?.id.clone()),
            None => None,
        };
        let mut out = Vec::new();
        for c in self.state.containers.values() {
            for ep in c.endpoints.values() {
                if only.as_ref().is_some_and(|id| *id != ep.network_id) {
                    continue;
                }
                let Some(net) = self.state.networks.get(&ep.network_id) else {
                    continue;
                };
                let (root, vlan) = net.root();
                let mut check = EndpointCheck {
                    container: c.name.clone(),
                    network: net.name.clone(),
                    ifname: ep.ifname.to_string(),
                    mac: ep.mac,
                    classified: 0,
                    kernel: 0,
                    kernel_multicast: 0,
                    vlan_mismatch_passed: 0,
                    malformed_passed: 0,
                    diff: 0,
                    explanation: None,
                    needs_restore: false,
                };
                let maps = PinnedMaps::open(&pin_dir(root)?);
                let entry = maps
                    .as_ref()
                    .ok()
                    .and_then(|m| m.endpoints_ro().and_then(|t| t.get(ep.mac.octets(), vlan)));
                let (Ok(maps), Some(entry)) = (maps, entry) else {
                    check.explanation = Some(format!(
                        "the classifier on {root} has no entry for this endpoint; run `mvnet restore`"
                    ));
                    check.needs_restore = true;
                    out.push(check);
                    continue;
                };
                let counters = maps.counters()?.endpoint(entry.slot);
                check.classified = counters.rx_wire.frames + counters.rx_local.frames;
                let ns = NetNs::from_path(&c.netns);
                let ifname = ep.ifname.clone();
                let link = netlink::run(Some(&ns), move |nl| async move {
                    let Some(link) = nl.link(&ifname).await? else {
                        return Ok(None);
                    };
                    Ok(Some((link.up, nl.stats(link.index).await?)))
                });
                match link {
                    Ok(Some((up, stats))) => {
                        check.kernel_multicast = stats.multicast;
                        check.kernel = stats
                            .rx_packets
                            .saturating_sub(stats.multicast)
                            .saturating_sub(ep.rx_base);
                        check.diff = check.kernel as i64 - check.classified as i64;
                        if check.diff > 0 {
                            // Read after the kernel's count, so every
                            // mismatch the kernel delivered is in it.
                            check.vlan_mismatch_passed =
                                maps.mismatch(entry.slot)?.map_or(0, |c| c.frames);
                            check.malformed_passed =
                                maps.malformed(entry.slot)?.map_or(0, |c| c.frames);
                        }
                        let passed = check.vlan_mismatch_passed + check.malformed_passed;
                        if check.diff < 0 && !up {
                            check.explanation = Some(format!(
                                "{} is down: the kernel drops frames for a down macvlan without counting them",
                                ep.ifname
                            ));
                        } else if check.diff > 0 && check.diff as u64 <= passed {
                            check.explanation =
                                Some(passed_invalid(check.diff as u64, &check, root));
                        } else if check.diff < 0 && stats.rx_dropped > 0 {
                            check.explanation = Some(format!(
                                "the kernel dropped {} received frames on {}",
                                stats.rx_dropped, ep.ifname
                            ));
                        }
                    }
                    Ok(None) | Err(_) => {
                        check.explanation = Some(format!(
                            "{} is gone from the container; run `mvnet restore`",
                            ep.ifname
                        ));
                        check.needs_restore = true;
                    }
                }
                out.push(check);
            }
        }
        Ok(out)
    }
}

/// Why `diff` more frames reached the endpoint than the classifier
/// delivered: invalid frames to its MAC it passed under observe.
fn passed_invalid(diff: u64, check: &EndpointCheck, root: &str) -> String {
    const PASSED: &str = "were passed by the classifier (the network observes; \
                          `--policy enforce` drops them) and delivered by MAC";
    let mismatch = check.vlan_mismatch_passed.min(diff);
    let malformed = diff - mismatch;
    match (mismatch, malformed) {
        (m, 0) => format!(
            "{m} frames to this MAC tagged for another VLAN {PASSED}: no VLAN device on {root} \
             takes their tag"
        ),
        (0, b) => format!(
            "{b} malformed frames to this MAC (cut short inside a tag or header) {PASSED}: \
             the kernel untagged what it could"
        ),
        (m, b) => format!(
            "{m} frames to this MAC tagged for another VLAN and {b} malformed ones {PASSED}"
        ),
    }
}

/// The verify table, as printed.
pub fn render(checks: &[EndpointCheck]) -> String {
    let mut s = format!(
        "{:<24} {:<16} {:<17} {:>10} {:>10} {:>8} {:>9}  {}\n",
        "CONTAINER", "NETWORK", "MAC", "CLASSIFIED", "KERNEL", "DIFF", "MULTICAST", "EXPLANATION"
    );
    for c in checks {
        let why = match (&c.explanation, c.diff) {
            (Some(e), _) => e.clone(),
            (None, 0) => "ok".into(),
            (None, _) => "UNEXPLAINED".into(),
        };
        s.push_str(&format!(
            "{:<24} {:<16} {:<17} {:>10} {:>10} {:>8} {:>9}  {}\n",
            c.container,
            c.network,
            c.mac.to_string(),
            c.classified,
            c.kernel,
            c.diff,
            c.kernel_multicast,
            why
        ));
    }
    s
}
