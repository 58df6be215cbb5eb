//! Traffic runs with exact accounting (`mvnet pktgen`, the end-to-end
//! benchmark): frames from mvnet's own endpoints ([`mix`]), sent by the
//! kernel's pktgen ([`pktgen`]) or, on kernels without it, by an AF_PACKET
//! TX ring ([`fallback`]), then held against the classifier's counters and
//! the endpoints' kernel counters ([`report`]).
//!
//! The sending device is a lab's `wire0` (the veth peer of the root device,
//! in the lab's upstream namespace) or a device the user names; never one
//! mvnet picks on its own.
pub mod fallback;
pub mod limits;
pub mod mix;
pub mod pktgen;
pub mod report;
pub mod rx;

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use macvlan_common::{Hook, Verdict};

use mvnet::{
    controller::{datapath::pin_dir, Controller},
    datapath::{pinned::PinnedMaps, CounterSnapshot},
    model::Mac,
    netlink::{self, LinkStats},
    netns::NetNs,
};

use mix::{FlowKind, Mix, MixSpec};
use report::{Drops, EndpointRow, FlowRow, Report, VerifyRow, VlanRow};

/// Which generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    /// pktgen when the kernel has it, else the fallback.
    Auto,
    Pktgen,
    Fallback,
}

impl Generator {
    pub fn parse(s: &str) -> Option<Generator> {
        match s {
            "auto" => Some(Generator::Auto),
            "pktgen" => Some(Generator::Pktgen),
            "fallback" | "af_packet" => Some(Generator::Fallback),
            _ => None,
        }
    }
}

/// Name of the fallback generator in reports.
pub const FALLBACK_NAME: &str = "af_packet_tx_ring";

/// One traffic run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub mix: MixSpec,
    pub generator: Generator,
    /// The sending device (default `wire0` in a lab namespace).
    pub device: Option<String>,
    /// The namespace of the sending device: a name under /run/netns or a path.
    pub netns: Option<String>,
    /// Frame length in bytes, without FCS (in [`limits::SIZE`]).
    pub size: usize,
    /// Frames per second over all flows (0 = as fast as the generator goes).
    pub rate: u64,
    /// With a rate: send for this long (sets the count per flow).
    pub duration: Option<f64>,
    /// pktgen kernel threads.
    pub threads: usize,
    /// Fallback: frames in flight at most.
    pub window: u64,
    /// Stop sending after this long.
    pub deadline: Duration,
}

fn unicast_rx(s: &LinkStats) -> u64 {
    s.rx_packets.saturating_sub(s.multicast)
}

fn link_stats(ns: Option<&NetNs>, iface: &str) -> Result<LinkStats> {
    let iface = iface.to_owned();
    Ok(netlink::run(ns, move |nl| async move {
        let l = nl.require_link(&iface).await?;
        nl.stats(l.index).await
    })?)
}

/// Frames the classifier has classified on arrival: each is counted at
/// one hook, XDP or (on TC alone, or what XDP did not see) TC ingress.
fn ingress_frames(maps: &PinnedMaps) -> u64 {
    maps.verdicts()
        .map(|v| v.total(Hook::XdpIngress).frames + v.total(Hook::TcIngress).frames)
        .unwrap_or(0)
}

/// Runs `spec` against the endpoints in the state at `state_dir`.
/// `announce` gets one line on the generator chosen, before traffic starts.
pub fn run(state_dir: &Path, spec: &RunSpec, announce: impl Fn(&str)) -> Result<Report> {
    limits::check(spec)?;
    let state = Controller::snapshot(state_dir)?.state.clone();
    let mut mix = Mix::from_state(&state, &spec.mix)?;
    if let Some(secs) = spec.duration {
        if spec.rate == 0 {
            bail!("--duration needs --rate (frames per second over all flows)");
        }
        let per_flow = limits::count_for(spec.rate, secs, mix.flows.len())?;
        announce(&format!(
            "mvnet pktgen: --duration {secs} s at --rate {} fps sets {per_flow} frames per flow \
             over {} flows, in place of --count {}",
            spec.rate,
            mix.flows.len(),
            spec.mix.count
        ));
        for f in &mut mix.flows {
            f.count = per_flow;
        }
    }
    let ns = match &spec.netns {
        None => None,
        Some(n) if n.contains('/') => Some(NetNs::from_path(n)),
        Some(n) => Some(NetNs::named(n)?),
    };
    let device = match (&spec.device, &ns) {
        (Some(d), _) => d.clone(),
        (None, Some(ns)) if ns.name().is_some_and(|n| n.starts_with(crate::lab::PREFIX)) => {
            crate::lab::UPSTREAM_IF.to_owned()
        }
        _ => bail!(
            "name the sending device: --dev IFACE [--netns NS] (in a lab: --netns <lab>-up, \
             where the device is wire0, the root device's veth peer)"
        ),
    };
    if ns.is_none() && device == mix.root {
        bail!(
            "{device} is the root device itself: frames sent out of it leave it and are never \
             classified; send from its peer (the other end of the wire)"
        );
    }
    let dir = pin_dir(&mix.root)?;
    let maps = PinnedMaps::open(&dir).map_err(|e| {
        anyhow!(
            "the classifier of {} is not attached ({e}); run `mvnet restore`",
            mix.root
        )
    })?;
    let slots: Vec<u32> = mix
        .targets
        .iter()
        .map(|t| {
            maps.endpoints_ro()
                .and_then(|v| v.get(t.mac.octets(), t.vlan))
                .map(|e| e.slot)
                .ok_or_else(|| {
                    anyhow!(
                        "the classifier on {} has no entry for {} of {}; run `mvnet restore`",
                        mix.root,
                        t.mac,
                        t.container
                    )
                })
        })
        .collect::<Result<_>>()?;

    // Said here, once; the text report names the generator only.
    let (generator, reason) = choose(spec.generator, ns.as_ref())?;
    announce(&format!("mvnet pktgen: {reason}"));

    let target_stats = |mix: &Mix| -> Result<Vec<LinkStats>> {
        mix.targets
            .iter()
            .map(|t| {
                link_stats(Some(&NetNs::from_path(&t.netns)), &t.ifname)
                    .with_context(|| format!("reading the counters of {}", t.container))
            })
            .collect()
    };
    let passed_mismatches = |maps: &PinnedMaps| -> Result<Vec<u64>> {
        slots
            .iter()
            .map(|&slot| Ok(maps.mismatch(slot)?.map_or(0, |c| c.frames)))
            .collect()
    };
    let mismatch_before = passed_mismatches(&maps)?;
    let before = maps.counters()?;
    let kernel_before = target_stats(&mix)?;
    let wire_before = link_stats(ns.as_ref(), &device)?;
    let root_before = link_stats(None, &mix.root)?;

    let (sent, generator_errors) = match generator {
        Generator::Pktgen => pktgen::send(
            ns.as_ref(),
            &pktgen::Plan {
                device: &device,
                flows: &mix.flows,
                size: spec.size,
                rate: spec.rate,
                threads: spec.threads,
                deadline: spec.deadline,
            },
        )?,
        _ => {
            let dev = device.clone();
            let src = netlink::run(
                ns.as_ref(),
                move |nl| async move { nl.require_link(&dev).await },
            )
            .with_context(|| format!("sending device {device} not found"))?
            .mac
            .map_or([0x02, 0, 0, 0, 0, 1], Mac::octets);
            let frames: Vec<Vec<u8>> = mix
                .flows
                .iter()
                .map(|f| f.frame(src, spec.size))
                .collect::<Result<_>>()?;
            let counts: Vec<u64> = mix.flows.iter().map(|f| f.count).collect();
            let sent = fallback::send(
                ns.as_ref(),
                &device,
                &fallback::Plan {
                    frames: &frames,
                    counts: &counts,
                    rate: spec.rate,
                    window: spec.window,
                    deadline: spec.deadline,
                },
                || ingress_frames(&maps),
            )?;
            (sent, 0)
        }
    };
    let total_sent: u64 = sent.per_flow.iter().sum();
    settle(
        &maps,
        before.verdicts.total(Hook::XdpIngress).frames
            + before.verdicts.total(Hook::TcIngress).frames
            + total_sent,
    );

    let after = maps.counters()?;
    let mismatch_after = passed_mismatches(&maps)?;
    let kernel_after = target_stats(&mix)?;
    let wire_after = link_stats(ns.as_ref(), &device)?;
    let root_after = link_stats(None, &mix.root)?;
    let verify = Controller::snapshot(state_dir)?.verify(None)?;

    let mut report = Report {
        generator: match generator {
            Generator::Pktgen => "pktgen".into(),
            _ => FALLBACK_NAME.into(),
        },
        generator_reason: reason,
        device: device.clone(),
        netns: spec.netns.clone(),
        root: mix.root.clone(),
        wire_hook: match mvnet::datapath::hooks::in_use(&dir) {
            Some(mvnet::datapath::hooks::HookSet::TcOnly) => "tc_ingress".into(),
            _ if vlans_at_tc(&dir) => report::WIRE_HOOKS_BOTH.into(),
            _ => "xdp".into(),
        },
        frame_size: spec.size,
        rate_target: spec.rate,
        threads: if generator == Generator::Pktgen {
            spec.threads
        } else {
            1
        },
        elapsed_s: sent.elapsed.as_secs_f64(),
        rate_achieved: total_sent as f64 / sent.elapsed.as_secs_f64().max(1e-9),
        timed_out: sent.timed_out,
        requested: mix.total(),
        sent: total_sent,
        sent_valid: 0,
        counted_valid: 0,
        delivered_valid: 0,
        flows: mix
            .flows
            .iter()
            .zip(&sent.per_flow)
            .map(|(f, &n)| FlowRow {
                kind: f.kind,
                dst_mac: f.dst.to_string(),
                vlan: f.vlan,
                endpoint: f.target.map(|t| mix.targets[t].container.clone()),
                requested: f.count,
                sent: n,
            })
            .collect(),
        endpoints: Vec::new(),
        vlans: Vec::new(),
        verdicts: verdict_rows(&before, &after),
        kernel_drops: Drops {
            generator_errors,
            generator_tx_dropped: wire_after.tx_dropped - wire_before.tx_dropped,
            root_rx_dropped: root_after.rx_dropped - root_before.rx_dropped,
        },
        verify: Vec::new(),
        verify_ok: true,
        checks: Vec::new(),
        notes: Vec::new(),
        exact: false,
    };
    // The VLANs with a device on the root: those of its networks.
    let root_vlans: std::collections::BTreeSet<u16> = state
        .networks
        .values()
        .map(|n| n.root())
        .filter(|(root, vid)| *root == mix.root && *vid != 0)
        .map(|(_, vid)| vid)
        .collect();
    for (i, t) in mix.targets.iter().enumerate() {
        let sent_valid: u64 = mix
            .flows
            .iter()
            .zip(&sent.per_flow)
            .filter(|(f, _)| f.kind == FlowKind::Valid && f.target == Some(i))
            .map(|(_, n)| n)
            .sum();
        let row = EndpointRow {
            container: t.container.clone(),
            network: t.network.clone(),
            mac: t.mac.to_string(),
            vlan: t.vlan,
            sent: sent_valid,
            counted: after.endpoint(slots[i]).rx_wire.frames
                - before.endpoint(slots[i]).rx_wire.frames,
            delivered: unicast_rx(&kernel_after[i]) - unicast_rx(&kernel_before[i]),
            wrong_vlan_delivered: 0,
        };
        // Wrong-VLAN frames to this MAC that the kernel delivered anyway.
        let wrong: Vec<(u16, u64)> = mix
            .flows
            .iter()
            .zip(&sent.per_flow)
            .filter(|(f, _)| f.kind == FlowKind::WrongVlan && f.target == Some(i))
            .map(|(f, n)| (f.vlan, *n))
            .collect();
        let wrong_total: u64 = wrong.iter().map(|w| w.1).sum();
        // Expected too: the ones the classifier passed (by its own
        // per-endpoint count) on a tag with no VLAN device on the root,
        // which macvlan hands to the endpoint with that MAC.
        let no_device: u64 = wrong
            .iter()
            .filter(|(tag, _)| !root_vlans.contains(tag))
            .map(|w| w.1)
            .sum();
        let row = EndpointRow {
            wrong_vlan_delivered: no_device.min(mismatch_after[i] - mismatch_before[i]),
            ..row
        };
        if wrong_total > 0 && row.delivered == row.sent + wrong_total {
            let tags: Vec<String> = wrong.iter().map(|w| w.0.to_string()).collect();
            report.notes.push(format!(
                "the kernel delivered to {} the {wrong_total} frames sent to its MAC tagged {}: \
                 {} has no VLAN device for that tag (no 802.1Q in this kernel, or no network on \
                 that VLAN), so macvlan hands the tagged frames to the MAC's endpoint; the \
                 classifier counted them as vlan_mismatch and passed them because the endpoint's \
                 network only observes (`--policy enforce` drops them)",
                t.container,
                tags.join(","),
                mix.root
            ));
        }
        report.sent_valid += row.sent;
        report.counted_valid += row.counted;
        report.delivered_valid += row.delivered;
        report.endpoints.push(row);
    }
    let mut vlans: BTreeMap<u16, u64> = BTreeMap::new();
    for (f, n) in mix.flows.iter().zip(&sent.per_flow) {
        *vlans.entry(f.vlan).or_default() += n;
    }
    for (vlan, n) in vlans {
        let (a, b) = (after.vlan(vlan), before.vlan(vlan));
        report.vlans.push(VlanRow {
            vlan,
            sent: n,
            counted_xdp: a.rx_xdp.frames - b.rx_xdp.frames,
            counted_tc: a.rx_tc.frames - b.rx_tc.frames,
        });
    }
    for c in verify {
        if mix
            .targets
            .iter()
            .any(|t| t.container == c.container && t.network == c.network)
        {
            report.verify_ok &= !c.failed();
            report.verify.push(VerifyRow {
                container: c.container,
                network: c.network,
                classified: c.classified,
                kernel: c.kernel,
                diff: c.diff,
                explanation: c.explanation,
            });
        }
    }
    report.check();
    Ok(report)
}

/// Picks the generator, with the reason in words.
fn choose(want: Generator, ns: Option<&NetNs>) -> Result<(Generator, String)> {
    match want {
        Generator::Fallback => Ok((
            Generator::Fallback,
            "the AF_PACKET TX-ring generator, as asked (--generator fallback)".into(),
        )),
        Generator::Pktgen => match pktgen::probe(ns) {
            Ok(()) => Ok((Generator::Pktgen, "the kernel's pktgen, as asked".into())),
            Err(why) => bail!(
                "this kernel has no pktgen ({why}); use --generator fallback (an AF_PACKET TX ring) or auto"
            ),
        },
        Generator::Auto => match pktgen::probe(ns) {
            Ok(()) => Ok((Generator::Pktgen, "the kernel's pktgen".into())),
            Err(why) => Ok((
                Generator::Fallback,
                format!("this kernel has no pktgen ({why}): using the AF_PACKET TX-ring generator"),
            )),
        },
    }
}

/// Waits until the classifier has seen `want` frames at XDP in total, or
/// its count stops moving (frames lost on the way are then in the drop
/// counters), at most 5 s. Then a moment for delivery behind XDP.
fn settle(maps: &PinnedMaps, want: u64) {
    let start = Instant::now();
    let mut last = (ingress_frames(maps), Instant::now());
    while start.elapsed() < Duration::from_secs(5) {
        let now = ingress_frames(maps);
        if now >= want {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
}

fn verdict_rows(
    before: &CounterSnapshot,
    after: &CounterSnapshot,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (hook, name) in [(Hook::XdpIngress, "xdp"), (Hook::TcIngress, "tc_ingress")] {
        let row = Verdict::ALL
            .iter()
            .map(|v| {
                (
                    v.name().to_owned(),
                    after.verdicts.get(hook, *v).frames - before.verdicts.get(hook, *v).frames,
                )
            })
            .collect();
        out.insert(name.to_owned(), row);
    }
    out
}

/// Whether XDP leaves tagged frames and its slow path to TC ingress on the
/// classifier pinned in `dir` (`config_flags::VLANS_AT_TC`).
fn vlans_at_tc(dir: &std::path::Path) -> bool {
    mvnet::datapath::pinned::PinnedMaps::open(dir)
        .and_then(|m| m.config())
        .is_ok_and(|c| c.flags & macvlan_common::config_flags::VLANS_AT_TC != 0)
}
