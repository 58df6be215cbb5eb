//! `cargo xtask bench e2e`: frames per second delivered to endpoints, end
//! to end through a veth parent and macvlan, on this machine's kernel:
//!
//! ```text
//!  upstream ns            host ns                    containers c0 c1 c2
//!  wire0 ── veth ── eth0 (programs here) ── macvlan ── eth0 (rx counted)
//! ```
//!
//! The same frames (60 bytes, round-robin to the three endpoints' MACs)
//! are sent from `wire0` by mvnet's AF_PACKET TX-ring generator with:
//! * `none`: no program on eth0;
//! * `pass`: a program that only passes, attached the way the classifier
//!   is (native XDP `mvnet_xdp_pass`, TC ingress and egress `mvnet_tc_pass`);
//! * `observe`: the classifier, attached and pinned as the control plane
//!   does, the three endpoints in its table, counting;
//! * `enforce`: the same with VLAN 0 enforced (drops invalid frames).
//!
//! Delivered = growth of the three endpoints' kernel rx_packets; the rate
//! is delivered frames over the time from the first frame sent to the last
//! one delivered. The sender keeps at most WINDOW frames in flight (by the
//! endpoints' counters), so it never outruns the receiver, and every run
//! must deliver every frame exactly (else the bench fails). Rounds rotate
//! the order of the variants; each reports its median. Target (issue):
//! observe >= 0.95x pass, measured in the same run.
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use aya::{
    programs::{tc, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode},
    Ebpf,
};
use macvlan_common::{config_flags, program_names, vlan_policy, Config};
use mvnet::{
    datapath::{
        pinned::{self, PinnedMaps},
        Datapath, EndpointEntry, XdpMode,
    },
    lab::{frames::FrameSpec, Lab, PARENT, UPSTREAM_IF},
    netns::NetNs,
    traffic::{fallback, rx::RxCounter},
};

/// Frames per measured run.
const FRAMES: u64 = 400_000;
const ROUNDS: usize = 7;
/// Frames in flight at most (the veth peer's ring holds 256).
const WINDOW: u64 = 192;
const TARGET: f64 = 0.95;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    None,
    Pass,
    Observe,
    Enforce,
}

const VARIANTS: [Variant; 4] = [
    Variant::None,
    Variant::Pass,
    Variant::Observe,
    Variant::Enforce,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::None => "no program",
            Variant::Pass => "pass-only (XDP + TC)",
            Variant::Observe => "classifier, observe",
            Variant::Enforce => "classifier, enforce",
        }
    }
}

fn mac(i: u8) -> [u8; 6] {
    [0x02, 0x42, 0x0a, 0xe2, 0x00, i]
}

/// What is attached to eth0 for one variant; detached by `detach`.
enum Attached {
    None,
    Pass(Box<Ebpf>),
    Classifier(std::path::PathBuf),
}

fn attach(lab: &Lab, v: Variant) -> Result<Attached> {
    let host = lab.host();
    match v {
        Variant::None => Ok(Attached::None),
        Variant::Pass => {
            let mut ebpf = Datapath::load()?;
            host.run(|| -> Result<()> {
                let xdp: &mut Xdp = ebpf
                    .program_mut(program_names::XDP_PASS)
                    .context("XDP pass program")?
                    .try_into()?;
                xdp.load()?;
                xdp.attach(PARENT, AyaXdpMode::Driver)?;
                let _ = tc::qdisc_add_clsact(PARENT);
                let p: &mut SchedClassifier = ebpf
                    .program_mut(program_names::TC_PASS)
                    .context("TC pass program")?
                    .try_into()?;
                p.load()?;
                p.attach(PARENT, TcAttachType::Ingress)?;
                p.attach(PARENT, TcAttachType::Egress)?;
                Ok(())
            })??;
            Ok(Attached::Pass(Box::new(ebpf)))
        }
        Variant::Observe | Variant::Enforce => {
            let dir = pinned::pin_dir(pinned::netns_inode(Some(host))?, PARENT);
            let d = dir.clone();
            host.run(move || pinned::attach(PARENT, &d, XdpMode::Native))??;
            let enforce = v == Variant::Enforce;
            let mut maps = PinnedMaps::open(&dir)?;
            for i in 0..3 {
                maps.add_endpoint(EndpointEntry {
                    mac: mac(i),
                    vlan: 0,
                    ipv4: None,
                    ipv6: None,
                    enforce,
                })?;
            }
            maps.endpoints()?.insert_root(lab.mac_of(host, PARENT)?)?;
            if enforce {
                maps.set_vlan_policy(0, vlan_policy::ENFORCE)?;
                maps.set_config(Config {
                    flags: config_flags::DROP_MALFORMED,
                    _pad: 0,
                })?;
            }
            Ok(Attached::Classifier(dir))
        }
    }
}

fn detach(lab: &Lab, a: Attached) -> Result<()> {
    match a {
        Attached::None => Ok(()),
        Attached::Pass(ebpf) => Ok(lab.host().run(move || drop(ebpf))?),
        Attached::Classifier(dir) => Ok(lab.host().run(move || pinned::detach(PARENT, &dir))??),
    }
}

/// One measured run: (delivered frames per second, delivered).
fn measure(lab: &Lab, containers: &[NetNs], frames: &[Vec<u8>], count: u64) -> Result<(f64, u64)> {
    let mut rx: Vec<RxCounter> = containers
        .iter()
        .map(|c| RxCounter::open(c, "eth0"))
        .collect::<Result<_>>()?;
    let mut total = move || -> u64 { rx.iter_mut().map(|r| r.read().unwrap_or(0)).sum() };
    let base = total();
    let per_flow = count / frames.len() as u64;
    let counts = vec![per_flow; frames.len()];
    let want = per_flow * frames.len() as u64;
    let start = Instant::now();
    let sent = fallback::send(
        Some(lab.upstream()),
        UPSTREAM_IF,
        &fallback::Plan {
            frames,
            counts: &counts,
            rate: 0,
            window: WINDOW,
            deadline: Duration::from_secs(60),
        },
        &mut total,
    )?;
    ensure!(!sent.timed_out, "the generator hit its deadline");
    // Until the last frame is delivered (or nothing moves for 0.5 s).
    let mut delivered = total() - base;
    let mut end = Instant::now();
    while delivered < want && end.elapsed() < Duration::from_millis(500) {
        let d = total() - base;
        if d != delivered {
            delivered = d;
            end = Instant::now();
        }
    }
    Ok((delivered as f64 / (end - start).as_secs_f64(), delivered))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut containers = Vec::new();
    for i in 0..3u8 {
        let c = lab.add_container(&format!("c{i}"))?;
        lab.add_macvlan(&c, mac(i))?;
        containers.push(c);
    }
    let src = lab.mac_of(lab.upstream(), UPSTREAM_IF)?;
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let mut f = FrameSpec::udp4(mac(i), src);
            f.data_len = 18; // 60 bytes
            f.build()
        })
        .collect();
    ensure!(frames.iter().all(|f| f.len() == 60));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "e2e bench: kernel {}, {} CPUs, {FRAMES} frames of 60 bytes per run to 3 macvlan \
         endpoints through a veth parent, AF_PACKET TX ring, window {WINDOW}, {ROUNDS} rounds, medians",
        kernel.trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    // Warm-up: caches, page allocator, the first attach.
    let a = attach(&lab, Variant::Observe)?;
    measure(&lab, &containers, &frames, FRAMES / 4)?;
    detach(&lab, a)?;

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    let mut pass_ratio = Vec::new();
    for round in 0..ROUNDS {
        let mut line = format!("round {}:", round + 1);
        let mut this = [0f64; 4];
        for k in 0..VARIANTS.len() {
            let vi = (k + round) % VARIANTS.len();
            let v = VARIANTS[vi];
            let a = attach(&lab, v)?;
            let r = measure(&lab, &containers, &frames, FRAMES);
            detach(&lab, a)?;
            let (fps, delivered) = r?;
            let want = FRAMES / 3 * 3;
            if delivered != want {
                bail!(
                    "{}: delivered {delivered} of {want} frames; the generator outran the receiver",
                    v.name()
                );
            }
            rates[vi].push(fps);
            this[vi] = fps;
            line += &format!(" {}={:.0}", v.name(), fps);
        }
        pass_ratio.push(this[2] / this[1]);
        println!("{line}");
    }
    let med: Vec<f64> = rates.iter().map(|r| median(r.clone())).collect();
    let pass = med[1];
    println!(
        "\n{:<24} {:>12} {:>10} {:>10}",
        "variant", "fps", "ns/frame", "x pass"
    );
    for (v, fps) in VARIANTS.iter().zip(&med) {
        println!(
            "{:<24} {:>12.0} {:>10.1} {:>10.3}",
            v.name(),
            fps,
            1e9 / fps,
            fps / pass
        );
    }
    let ratio = med[2] / pass;
    println!(
        "per-round observe/pass ratios: {}",
        pass_ratio
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "classifier (observe) delivers {ratio:.3}x the frames per second of the pass-only program \
         (target >= {TARGET}): {}; with no program at all: {:.0} fps ({:.3}x pass-only)",
        if ratio >= TARGET { "PASS" } else { "FAIL" },
        med[0],
        med[0] / pass
    );
    Ok(())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test` runs bench targets without --bench: nothing to do.
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "the e2e bench needs root (namespaces, XDP, TC); run `cargo xtask bench e2e` as root"
        );
        std::process::exit(1);
    }
    if let Err(e) = bench() {
        eprintln!("e2e bench: error: {e:#}");
        std::process::exit(1);
    }
}
