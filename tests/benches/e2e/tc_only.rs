//! Target 3 as `--xdp-mode auto` attaches the classifier on a veth: TC
//! alone (tcx ingress and egress), measured chunk by chunk against no
//! program at all, and target 2 against the nftables peer on the same
//! receive path (no XDP, so no NAPI switch for either).
//!
//! The classifier is attached by `Classifier::attach(.., XdpMode::Auto)`,
//! which on this veth must choose TC alone. Its two tcx links are then
//! detached, and its programs (same maps, same pins) and a pass-only TC
//! program are attached and detached without links (BPF_PROG_ATTACH with
//! BPF_TCX_INGRESS/EGRESS: the same tcx hook, a few microseconds) between
//! chunks. So every round has a `none` chunk, and the targets are medians
//! of per-round ratios, as issue 17 asks. (The XDP rows of the main table
//! cannot do this: attaching XDP switches veth's receive path to NAPI, so
//! their `none` stays measured before and after.)
//!
//! **bpf_stats off while measuring throughput.** With the kernel's
//! run-time statistics on, every program run reads the clock twice; the
//! throughput chunks run with them off, and each round adds one chunk of
//! pass-only, observe and enforce with them on (BPF_ENABLE_STATS held for
//! that chunk only) for the in-place ns per hook. Observe with stats on
//! against observe with them off, per round, is what the statistics
//! themselves cost.
use std::os::fd::{AsFd as _, OwnedFd};

use anyhow::{ensure, Context as _, Result};
use aya::{programs::SchedClassifier, Ebpf};
use macvlan_common::{program_names, Hook, Verdict};
use mvnet::{
    datapath::{self, pinned, sys, Classifier, EndpointEntry, XdpMode},
    netlink,
    netns::NetNs,
};
use mvnet_lab::{
    lab::{Lab, PARENT},
    traffic::rx::RxCounter,
};

use super::{mac, measure, median, percentile, InPlace, Nft, Run, Total, CHUNK};

/// Rounds: one chunk of each variant with statistics off, then pass-only,
/// observe and enforce with them on.
pub const TC_ROUNDS: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcVariant {
    None,
    Pass,
    Observe,
    Enforce,
    /// The nftables peer's ingress chain, no program attached.
    Nft,
}

const N: usize = 5;

pub const TC_VARIANTS: [TcVariant; N] = [
    TcVariant::None,
    TcVariant::Pass,
    TcVariant::Observe,
    TcVariant::Enforce,
    TcVariant::Nft,
];

/// Indexes into TC_VARIANTS.
pub const NONE: usize = 0;
pub const PASS: usize = 1;
pub const OBSERVE: usize = 2;
pub const ENFORCE: usize = 3;
pub const NFT: usize = 4;

/// Round r runs TC_ORDERS[r % 10], a Williams design: each variant runs in
/// each position equally often, and right after each other variant
/// equally often.
const TC_ORDERS: [[usize; N]; 2 * N] = {
    const FIRST: [usize; N] = [0, 1, 4, 2, 3];
    let mut out = [[0; N]; 2 * N];
    let mut r = 0;
    while r < N {
        let mut k = 0;
        while k < N {
            out[r][k] = (FIRST[k] + r) % N;
            out[N + r][N - 1 - k] = (FIRST[k] + r) % N;
            k += 1;
        }
        r += 1;
    }
    out
};

impl TcVariant {
    pub fn name(self) -> &'static str {
        match self {
            TcVariant::None => "TC only: none",
            TcVariant::Pass => "TC only: pass-only",
            TcVariant::Observe => "TC only: observe",
            TcVariant::Enforce => "TC only: enforce",
            TcVariant::Nft => "nftables (4096 MACs)",
        }
    }
}

/// The classifier as `--xdp-mode auto` attaches it on a veth, with its
/// programs attached and detached between chunks, and the nftables peer.
struct TcOnly<'l> {
    maps: Classifier,
    /// The lab's host namespace, where the parent is.
    host: NetNs,
    /// The parent's ifindex in the lab's host namespace.
    ifindex: u32,
    /// The classifier's TC ingress and egress programs.
    classifier: [OwnedFd; 2],
    /// The pass-only TC program (at both hooks).
    pass: OwnedFd,
    /// What is attached now.
    current: TcVariant,
    /// The nftables table with its set (the chain only in its chunks).
    nft: Nft<'l>,
    /// Seconds each `nft -f` adding or deleting the chain took.
    nft_calls: Vec<f64>,
    _pass_obj: Ebpf,
}

impl<'l> TcOnly<'l> {
    fn attach(lab: &'l Lab) -> Result<TcOnly<'l>> {
        let host = lab.host();
        let mut maps = Classifier::attach(Some(host), PARENT, XdpMode::Auto)?;
        let dir = maps.dir().to_owned();
        ensure!(
            maps.xdp_mode().is_none() && !dir.join(pinned::LINK_XDP).exists(),
            "--xdp-mode auto attached XDP on the lab's veth parent; it should choose TC alone"
        );
        for i in 0..3 {
            maps.add_endpoint(EndpointEntry {
                mac: mac(i),
                vlan: 0,
                ipv4: None,
                ipv6: None,
                enforce: false,
            })?;
        }
        maps.endpoints()?.insert_root(lab.mac_of(host, PARENT)?)?;
        let mut classifier = Vec::new();
        for name in [pinned::LINK_TC_INGRESS, pinned::LINK_TC_EGRESS] {
            let link = sys::obj_get(&dir.join(name)).with_context(|| format!("pinned {name}"))?;
            classifier.push(sys::prog_fd_by_id(sys::link_info(link.as_fd())?.prog_id)?);
            // The hook is free from now on; the programs stay loaded.
            sys::link_detach(link.as_fd()).context("BPF_LINK_DETACH of a tcx link")?;
        }
        let mut obj = datapath::load()?;
        let tc: &mut SchedClassifier = obj
            .program_mut(program_names::TC_PASS)
            .context("TC pass program")?
            .try_into()?;
        tc.load()?;
        let pass = tc.fd()?.as_fd().try_clone_to_owned()?;
        let ifindex = netlink::run(Some(host), |nl| async move {
            Ok(nl.require_link(PARENT).await?.index)
        })?;
        Ok(TcOnly {
            maps,
            host: host.clone(),
            ifindex,
            classifier: classifier.try_into().expect("two links"),
            pass,
            current: TcVariant::None,
            nft: Nft::setup(lab)?,
            nft_calls: Vec::new(),
            _pass_obj: obj,
        })
    }

    /// The programs of `v` at (TC ingress, TC egress), none for `none`.
    fn progs(&self, v: TcVariant) -> Option<[&OwnedFd; 2]> {
        match v {
            TcVariant::None | TcVariant::Nft => None,
            TcVariant::Pass => Some([&self.pass, &self.pass]),
            TcVariant::Observe | TcVariant::Enforce => {
                Some([&self.classifier[0], &self.classifier[1]])
            }
        }
    }

    /// Attaches `v`'s programs (after detaching the current ones), or
    /// nftables' chain, and puts its policy in the maps.
    fn set(&mut self, v: TcVariant) -> Result<()> {
        let hooks = [sys::BPF_TCX_INGRESS, sys::BPF_TCX_EGRESS];
        let ifindex = self.ifindex;
        if self.current == TcVariant::Nft && v != TcVariant::Nft {
            let t = std::time::Instant::now();
            self.nft.hook(false)?;
            self.nft_calls.push(t.elapsed().as_secs_f64());
        }
        // Observe and enforce share the classifier's programs.
        let programs = |v: TcVariant| match v {
            TcVariant::None | TcVariant::Nft => 0,
            TcVariant::Pass => 1,
            TcVariant::Observe | TcVariant::Enforce => 2,
        };
        if programs(self.current) != programs(v) {
            let (old, new) = (self.progs(self.current), self.progs(v));
            self.host.run(|| -> Result<()> {
                if let Some(old) = old {
                    for (p, h) in old.iter().zip(hooks) {
                        sys::prog_detach(ifindex, p.as_fd(), h).context("BPF_PROG_DETACH")?;
                    }
                }
                if let Some(new) = new {
                    for (p, h) in new.iter().zip(hooks) {
                        sys::prog_attach(ifindex, p.as_fd(), h).context("BPF_PROG_ATTACH")?;
                    }
                }
                Ok(())
            })??;
        }
        if v == TcVariant::Nft && self.current != TcVariant::Nft {
            let t = std::time::Instant::now();
            self.nft.hook(true)?;
            self.nft_calls.push(t.elapsed().as_secs_f64());
        }
        self.current = v;
        super::set_policy(&mut self.maps, v == TcVariant::Enforce)
    }

    /// Frames the classifier counted as delivered (XDP, TC ingress) and
    /// its endpoints' rx_wire.
    fn delivered(&self) -> Result<(u64, u64, u64)> {
        let c = self.maps.counters()?;
        Ok((
            c.verdicts.get(Hook::XdpIngress, Verdict::Delivered).frames,
            c.verdicts.get(Hook::TcIngress, Verdict::Delivered).frames,
            c.endpoints.iter().map(|e| e.rx_wire.frames).sum(),
        ))
    }

    /// Runs one chunk with `v` attached; checks that the classifier
    /// counted every frame once at TC ingress in its chunks and none in
    /// the others. With `in_place`, adds the programs' run time.
    fn measure(
        &mut self,
        v: TcVariant,
        in_place: Option<&mut InPlace>,
        chunk: impl FnOnce() -> Result<Run>,
    ) -> Result<Run> {
        self.set(v)?;
        let before = self.delivered()?;
        let stats = |s: &TcOnly<'_>| -> Result<[sys::ProgRunStats; 2]> {
            let mut out = [sys::ProgRunStats::default(); 2];
            if let Some(p) = s.progs(v) {
                for (o, f) in out.iter_mut().zip(p) {
                    *o = sys::prog_run_stats(f.as_fd())?;
                }
            }
            Ok(out)
        };
        let s0 = stats(self)?;
        let r = chunk().with_context(|| v.name())?;
        let s1 = stats(self)?;
        if let Some(ip) = in_place {
            // Pass-only sits at both hooks: one program, so its egress
            // runs (stray host frames only) count as ingress.
            let hooks = if v == TcVariant::Pass { 1 } else { 2 };
            for h in 0..hooks {
                ip.ns[h + 1] += s1[h].run_time_ns - s0[h].run_time_ns;
                ip.runs[h + 1] += s1[h].run_cnt - s0[h].run_cnt;
            }
            ip.frames += r.delivered;
        }
        let after = self.delivered()?;
        let counted = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        let n = r.delivered;
        let expect = match v {
            TcVariant::None | TcVariant::Pass | TcVariant::Nft => (0, 0, 0),
            TcVariant::Observe | TcVariant::Enforce => (0, n, n),
        };
        ensure!(
            counted == expect,
            "{}: counted {counted:?} delivered frames (at XDP, at TC ingress, the endpoints' \
             rx_wire) in a chunk of {n}; expected {expect:?}",
            v.name()
        );
        Ok(r)
    }

    fn detach(mut self) -> Result<()> {
        self.set(TcVariant::None)?;
        Ok(self.maps.detach()?)
    }
}

/// Whether the kernel's run-time statistics are on (someone holds
/// BPF_ENABLE_STATS, or kernel.bpf_stats_enabled=1).
fn stats_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

/// What [`run`] measured.
pub struct Report {
    /// Per variant: totals over the statistics-off chunks.
    pub totals: [Total; N],
    /// Per round, per variant: fps with statistics off.
    pub per_round: Vec<[f64; N]>,
    /// Per round, per variant: CPU ns per delivered frame, statistics off.
    pub cpu_round: Vec<[f64; N]>,
    /// Per variant (pass-only, observe, enforce at 1..=3): in-place ns
    /// from the statistics-on chunks.
    pub in_place: [InPlace; N],
    /// Per round: observe's fps with statistics on over with them off.
    pub stats_cost: Vec<f64>,
    /// Statistics-off chunks during which someone else had them on.
    pub stats_elsewhere: usize,
    /// Seconds per `nft -f` that added or deleted the chain.
    pub nft_calls: Vec<f64>,
    /// Frames nftables' set counted for the endpoints' MACs over the run.
    pub nft_counted: u64,
}

impl Report {
    /// Per-round ratios of variant `a`'s fps to variant `b`'s.
    pub fn ratios(&self, a: usize, b: usize) -> Vec<f64> {
        self.per_round.iter().map(|r| r[a] / r[b]).collect()
    }

    /// Per round: CPU ns per frame that variant `v` adds over `none`.
    pub fn added(&self, v: usize) -> Vec<f64> {
        self.cpu_round.iter().map(|r| r[v] - r[NONE]).collect()
    }

    /// Per-round ratios of the CPU ns per frame `a` adds over `none` to
    /// what `b` adds in the same round.
    pub fn added_ratios(&self, a: usize, b: usize) -> Vec<f64> {
        self.cpu_round
            .iter()
            .map(|r| (r[a] - r[NONE]) / (r[b] - r[NONE]))
            .collect()
    }

    pub fn print(&self) {
        let dash = "-";
        println!(
            "\nTC alone, as `--xdp-mode auto` attaches on a veth: {TC_ROUNDS} rounds of one \
             {CHUNK}-frame chunk each of none, pass-only, observe, enforce and nftables \
             (bpf_stats off), then pass-only, observe, enforce with bpf_stats on for the \
             in-place ns:"
        );
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>9} {:>9} {:>11} {:>10} {:>11}",
            "program",
            "fps",
            "x none med",
            "x pass med",
            "TC-in ns",
            "TC-eg ns",
            "ns/frame",
            "over pass",
            "CPU +ns/fr"
        );
        for (vi, v) in TC_VARIANTS.iter().enumerate() {
            let ip = &self.in_place[vi];
            let bpf = vi == PASS || vi == OBSERVE || vi == ENFORCE;
            let cell = |s: String| if bpf { s } else { dash.to_owned() };
            println!(
                "{:<24} {:>10.0} {:>10.3} {:>10} {:>9} {:>9} {:>11} {:>10} {:>11}",
                v.name(),
                self.totals[vi].fps(),
                median(&self.ratios(vi, NONE)),
                if vi == NONE {
                    dash.to_owned()
                } else {
                    format!("{:.3}", median(&self.ratios(vi, PASS)))
                },
                cell(format!("{:.1}", ip.per_run(1))),
                cell(if vi == PASS {
                    dash.to_owned()
                } else {
                    format!("{:.1}", ip.per_run(2))
                }),
                cell(format!("{:.1}", ip.per_frame())),
                cell(format!(
                    "{:.1}",
                    ip.per_frame() - self.in_place[PASS].per_frame()
                )),
                if vi == NONE {
                    dash.to_owned()
                } else {
                    format!("{:.1}", median(&self.added(vi)))
                },
            );
        }
        println!(
            "x none med, x pass med: medians of {TC_ROUNDS} per-round fps ratios. TC-in/TC-eg ns: \
             run_time_ns / run_cnt (BPF_ENABLE_STATS); ns/frame: both hooks per delivered frame. \
             CPU +ns/fr: median per-round growth of CPU ns per delivered frame (sending thread \
             with its inline softirq, plus ksoftirqd) over the none chunk of the same round, the \
             one measure that applies to nftables and the classifier alike."
        );
        let spread = |v: &[f64]| {
            let q = |p: f64| percentile(v, p);
            format!(
                "min {:.3}, p10 {:.3}, median {:.3}, p90 {:.3}, max {:.3}",
                q(0.0),
                q(0.1),
                q(0.5),
                q(0.9),
                q(1.0)
            )
        };
        println!(
            "per-round observe/none ratios (TC only): {}",
            spread(&self.ratios(OBSERVE, NONE))
        );
        println!(
            "per-round enforce/none ratios (TC only): {}",
            spread(&self.ratios(ENFORCE, NONE))
        );
        println!(
            "per-round observe/nftables ratios:       {}",
            spread(&self.ratios(OBSERVE, NFT))
        );
        println!(
            "per-round nftables' added CPU ns/frame:  {}",
            spread(&self.added(NFT))
        );
        println!(
            "per-round observe's added CPU ns/frame:  {}",
            spread(&self.added(OBSERVE))
        );
        let chunk_ms = median(
            &self
                .totals
                .iter()
                .map(|t| 1e3 * t.wall / TC_ROUNDS as f64)
                .collect::<Vec<_>>(),
        );
        println!(
            "nftables: its set counted {} frames to the endpoints' MACs, exactly the frames its \
             chunks delivered; adding or deleting its chain took {:.1} ms per `nft -f` (median \
             of {}, max {:.1}) against {chunk_ms:.0} ms per chunk",
            self.nft_counted,
            1e3 * median(&self.nft_calls),
            self.nft_calls.len(),
            1e3 * percentile(&self.nft_calls, 1.0),
        );
        println!(
            "bpf_stats' own cost: observe with bpf_stats on delivers {:.3}x observe with them off \
             (median of {} per-round ratios){}",
            median(&self.stats_cost),
            self.stats_cost.len(),
            if self.stats_elsewhere > 0 {
                format!(
                    "; note: another process had bpf_stats on during {} of the stats-off chunks",
                    self.stats_elsewhere
                )
            } else {
                String::new()
            }
        );
    }

    /// Target 2 (the nftables peer), on medians of per-round ratios.
    pub fn print_target_2(&self) {
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
        for (vi, name) in [(OBSERVE, "observe"), (ENFORCE, "enforce")] {
            let fps = median(&self.ratios(vi, NFT));
            let cost = median(&self.added_ratios(vi, NFT));
            println!(
                "target 2, nftables peer on TC alone ({name}): {fps:.3}x nftables' fps (target >= \
                 {}): {}; added CPU per frame over none {:.1} ns against nftables' {:.1} ns \
                 (medians), {cost:.2}x (median of per-round ratios; target <= {}x): {}",
                super::TARGET_VS_NFT_FPS,
                verdict(fps >= super::TARGET_VS_NFT_FPS),
                median(&self.added(vi)),
                median(&self.added(NFT)),
                super::TARGET_VS_NFT_COST,
                verdict(cost <= super::TARGET_VS_NFT_COST),
            );
        }
        // The same measure on the totals of all rounds: per-round values
        // swing by hundreds of ns with the machine's other work.
        let cpu_ns = |v: usize| 1e9 * self.totals[v].cpu / self.totals[v].frames as f64;
        let added = |v: usize| cpu_ns(v) - cpu_ns(NONE);
        println!(
            "(cross-check on totals of {TC_ROUNDS} rounds: CPU ns per frame over none: pass-only \
             {:.1}, observe {:.1}, enforce {:.1}, nftables {:.1}; observe/nftables {:.2}x, \
             enforce/nftables {:.2}x)",
            added(PASS),
            added(OBSERVE),
            added(ENFORCE),
            added(NFT),
            added(OBSERVE) / added(NFT),
            added(ENFORCE) / added(NFT),
        );
    }
}

/// Runs the TC-only rounds on `lab`'s parent (nothing else attached).
pub fn run(lab: &Lab, rx: &mut [RxCounter], frames: &[Vec<u8>]) -> Result<Report> {
    let mut tc = TcOnly::attach(lab)?;
    let mut report = Report {
        totals: [Total::default(); N],
        per_round: Vec::new(),
        cpu_round: Vec::new(),
        in_place: [InPlace::default(); N],
        stats_cost: Vec::new(),
        stats_elsewhere: 0,
        nft_calls: Vec::new(),
        nft_counted: 0,
    };
    let result = (|| -> Result<()> {
        let counted0 = tc.nft.counted()?;
        tc.measure(TcVariant::Observe, None, || measure(lab, rx, frames, CHUNK))?; // warm-up
        for round in 0..TC_ROUNDS {
            let (mut fps, mut cpu) = ([0f64; N], [0f64; N]);
            for vi in TC_ORDERS[round % TC_ORDERS.len()] {
                if stats_on() {
                    report.stats_elsewhere += 1;
                }
                let r = tc.measure(TC_VARIANTS[vi], None, || measure(lab, rx, frames, CHUNK))?;
                report.totals[vi].add(&r);
                fps[vi] = r.fps();
                cpu[vi] = r.cpu.as_secs_f64() * 1e9 / r.delivered as f64;
            }
            report.per_round.push(fps);
            report.cpu_round.push(cpu);
            // In place: BPF_ENABLE_STATS held for these chunks only.
            let stats =
                aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
            for vi in [PASS, OBSERVE, ENFORCE] {
                let r = tc.measure(TC_VARIANTS[vi], Some(&mut report.in_place[vi]), || {
                    measure(lab, rx, frames, CHUNK)
                })?;
                if vi == OBSERVE {
                    report.stats_cost.push(r.fps() / fps[OBSERVE]);
                }
            }
            drop(stats);
        }
        // The chain was there for nftables' chunks only: its counters grew
        // by exactly the frames those chunks delivered.
        report.nft_counted = tc.nft.counted()? - counted0;
        ensure!(
            report.nft_counted == report.totals[NFT].frames,
            "nftables counted {} frames to the endpoints' MACs in chunks that delivered {}",
            report.nft_counted,
            report.totals[NFT].frames
        );
        Ok(())
    })();
    report.nft_calls = std::mem::take(&mut tc.nft_calls);
    tc.detach()?;
    result?;
    Ok(report)
}
