//! `cargo xtask bench datapath`: the classifier's cost per frame, measured
//! in the kernel with BPF_PROG_TEST_RUN (its own per-run average), against
//! a program that only returns XDP_PASS, loaded from the same object and
//! measured in the same run; and against xdp-tools' xdp-filter Ethernet
//! program when the xdp-tools package is installed.
//!
//! Rounds alternate between the programs; each row reports the median of
//! its rounds. Target (issue 17): classifier at 4096 endpoints <= 0.5x
//! xdp-filter (the ratio to the pass-only baseline is printed, no longer
//! judged: issue 17 retired it), judged on the median of per-round
//! ratios: each compares runs a few milliseconds apart, so the drift of
//! this VM's speed between rounds (a quarter and more) cancels out.
//!
//! Scale (issue 17, item 5): the rows at 64, 4096 and 65,536 endpoints
//! (the last loaded with `--max-endpoints 65536`'s map sizes), and the
//! classifier at 65,536 against 64 endpoints, alternated round by round
//! in the same run, judged on the median of per-round ratios: target
//! <= 1.1x. A test run repeats one frame, so this measures the lookup
//! path at each table size (index word, hash fallback, counter slot), not
//! the cache misses of frames spread over all endpoints.
//!
//! The TC ingress rows run `mvnet_tc_ingress` on the same untagged frame
//! with no XDP mark (TC alone, what `--xdp-mode auto` attaches on a veth):
//! a test run has no NAPI id, so the classifier also checks whether the
//! frame's source is an endpoint's (bridge mode), against the pass-only
//! TC program; the scale judgement includes them.
//!
//! A reference row, `floor`, measures the least any per-endpoint counting
//! costs (`mvnet_xdp_floor`: an untagged destination MAC, one direct-index
//! lookup, one counter in its CPU's stripe), so the classifier's cost can be read
//! against what counting per endpoint needs at all, not only against a
//! program that does nothing.
use aya::{
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
    Ebpf,
};
use macvlan_common::program_names;
use mvnet::datapath::{self, EndpointEntry};
use mvnet_lab::lab::frames::{FrameSpec, Tag};

#[path = "../common/mod.rs"]
mod common;
use common::median;

const REPEAT: u32 = 5_000_000;
const ROUNDS: usize = 9;

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x42, b[0], b[1], b[2], b[3]]
}

/// Runs `frame` REPEAT times; returns (kernel-reported ns per run, wall
/// clock ns per run including the test-run loop's per-frame setup).
fn run<P>(prog: &P, frame: &[u8]) -> Result<(f64, f64), ProgramError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let start = std::time::Instant::now();
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat: REPEAT,
        ..TestRunOptions::new()
    })?;
    let wall = start.elapsed().as_nanos() as f64 / REPEAT as f64;
    Ok((r.duration.as_nanos() as f64, wall))
}

/// (kernel ns, wall ns) per run.
type Timing = (f64, f64);
/// A result line: name, its timing, the pass-only baseline of its round.
type Row = (String, Timing, Timing);
/// One round at 4096 endpoints, kernel ns: the classifier on untagged and
/// on tagged frames, the baseline, xdp-filter (when installed).
type Judged = ([f64; 2], f64, Option<f64>);

/// A classifier object with `n` endpoints (half untagged, half on VLAN
/// 10), in slots 0..n, with room for at least 4096 (the default).
fn classifier(n: u32) -> Ebpf {
    let capacity = n.max(macvlan_common::DEFAULT_ENDPOINTS);
    let mut ebpf = datapath::load_with_capacity(capacity).expect("load the classifier");
    {
        let mut table = datapath::endpoint_table(&mut ebpf).unwrap();
        for i in 0..n {
            let entry = EndpointEntry {
                mac: mac(i),
                vlan: if i % 2 == 0 { 0 } else { 10 },
                ipv4: None,
                ipv6: None,
                enforce: false,
            };
            table.insert_at(entry, i).unwrap();
            assert!(table.is_indexed(entry.mac, entry.vlan), "endpoint {i}");
        }
    }
    for name in [
        program_names::XDP,
        program_names::XDP_PASS,
        program_names::XDP_FLOOR,
    ] {
        let p: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
    }
    for name in [program_names::TC_INGRESS, program_names::TC_PASS] {
        let p: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
    }
    ebpf
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name).unwrap().try_into().unwrap()
}

fn tc<'a>(ebpf: &'a Ebpf, name: &str) -> &'a SchedClassifier {
    ebpf.program(name).unwrap().try_into().unwrap()
}

/// Where xdp-filter's maps are pinned while the bench runs, removed after.
/// Its object asks for pinning by name, which aya honours under
/// /sys/fs/bpf by default: without this every run would leave (and the
/// next reuse) `filter_ethernet` and `xdp_stats_map` there.
struct PinDir(std::path::PathBuf);

impl PinDir {
    fn new() -> std::io::Result<Self> {
        let dir =
            std::path::PathBuf::from(format!("/sys/fs/bpf/mvnet-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(PinDir(dir))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// xdp-filter's Ethernet-address program from xdp-tools, if installed,
/// with the directory its maps are pinned in (drop it after the program).
fn xdp_filter() -> Option<(Ebpf, String, PinDir)> {
    // Deny mode: frames pass unless a filter rule matches, as ours do.
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_eth.o",
        "/usr/lib/bpf/xdpfilt_dny_eth.o",
    ];
    let path = candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let pins = match PinDir::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xdp-filter: cannot make a pin directory in /sys/fs/bpf ({e}); not measured");
            return None;
        }
    };
    let mut ebpf = match aya::EbpfLoader::new()
        .allow_unsupported_maps()
        .default_map_pin_directory(&pins.0)
        .load_file(path)
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("xdp-filter: {path} does not load with aya ({e}); not measured");
            return None;
        }
    };
    let name = ebpf
        .programs()
        .map(|(n, _)| n.to_owned())
        .find(|n| n.starts_with("xdpfilt"))?;
    let p: &mut Xdp = ebpf.program_mut(&name)?.try_into().ok()?;
    if let Err(e) = p.load() {
        eprintln!("xdp-filter: program {name} does not load ({e}); not measured");
        return None;
    }
    Some((ebpf, format!("{path}:{name}"), pins))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test` runs bench targets without --bench: nothing to do.
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the datapath bench needs root (BPF_PROG_TEST_RUN); run `cargo xtask bench datapath` as root");
        std::process::exit(1);
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "datapath bench: kernel {}, {} CPUs, BPF_PROG_TEST_RUN repeat {REPEAT}, {ROUNDS} rounds, medians",
        kernel.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let src = [0x02, 0x99, 0, 0, 0, 1];
    let filter = xdp_filter();
    if let Some((_, name, _)) = &filter {
        println!("xdp-filter: {name}");
    }
    // (name, (kernel ns, wall ns), baseline of its run)
    let mut rows: Vec<Row> = Vec::new();
    let mut judged: Vec<Judged> = Vec::new();
    let med = |v: &[(f64, f64)]| {
        (
            median(&v.iter().map(|x| x.0).collect::<Vec<_>>()),
            median(&v.iter().map(|x| x.1).collect::<Vec<_>>()),
        )
    };
    let frames = |n: u32| {
        let untagged = FrameSpec::udp4(mac(0), src).build().unwrap();
        let tagged = FrameSpec::udp4(mac(n.saturating_sub(1) | 1), src)
            .tagged(&[Tag::dot1q(10)])
            .build()
            .unwrap();
        (untagged, tagged)
    };
    // Kept for the scale comparison after the table.
    let mut scale: Vec<(u32, Ebpf)> = Vec::new();
    for n in [1u32, 64, 4096, 65_536] {
        let ebpf = classifier(n);
        let (untagged, tagged) = frames(n);
        let cls = xdp(&ebpf, program_names::XDP);
        let pass = xdp(&ebpf, program_names::XDP_PASS);
        let floor = xdp(&ebpf, program_names::XDP_FLOOR);
        let (tc_cls, tc_pass) = (
            tc(&ebpf, program_names::TC_INGRESS),
            tc(&ebpf, program_names::TC_PASS),
        );
        let (mut b, mut u, mut t, mut f) = (vec![], vec![], vec![], vec![]);
        let (mut fl, mut tb, mut tu) = (vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            tb.push(run(tc_pass, &untagged).unwrap());
            tu.push(run(tc_cls, &untagged).unwrap());
            b.push(run(pass, &untagged).unwrap());
            fl.push(run(floor, &untagged).unwrap());
            u.push(run(cls, &untagged).unwrap());
            if n > 1 {
                t.push(run(cls, &tagged).unwrap());
            }
            if let Some((fe, _, _)) = &filter {
                let name = fe
                    .programs()
                    .map(|(n, _)| n)
                    .find(|n| n.starts_with("xdpfilt"))
                    .unwrap();
                f.push(run(xdp(fe, name), &untagged).unwrap());
            }
        }
        if n == 4096 {
            for i in 0..ROUNDS {
                judged.push(([u[i].0, t[i].0], b[i].0, f.get(i).map(|x| x.0)));
            }
        }
        let base = med(&b);
        rows.push((
            format!("xdp_pass baseline ({n} endpoints loaded)"),
            base,
            base,
        ));
        rows.push((
            format!("floor: 1 lookup + 1 counter ({n} endpoints)"),
            med(&fl),
            base,
        ));
        rows.push((
            format!("classifier, {n} endpoints, untagged"),
            med(&u),
            base,
        ));
        if n > 1 {
            rows.push((
                format!("classifier, {n} endpoints, 802.1Q tagged"),
                med(&t),
                base,
            ));
        }
        if !f.is_empty() {
            rows.push(("xdp-filter ethernet (deny mode)".to_string(), med(&f), base));
        }
        let tc_base = med(&tb);
        rows.push((
            format!("tc_pass baseline ({n} endpoints loaded)"),
            tc_base,
            tc_base,
        ));
        rows.push((
            format!("classifier at TC ingress, {n} endpoints, untagged"),
            med(&tu),
            tc_base,
        ));
        if n == 64 || n == 65_536 {
            scale.push((n, ebpf));
        }
    }
    println!(
        "{:<46} {:>9} {:>8} {:>9} {:>8}",
        "program (frame to a known MAC)", "kernel ns", "x pass", "wall ns", "x pass"
    );
    for (name, (k, w), (bk, bw)) in &rows {
        println!(
            "{name:<46} {k:>9.1} {:>8.2} {w:>9.1} {:>8.2}",
            k / bk,
            w / bw
        );
    }
    // Judged on the kernel's own per-run figure (the wall clock adds the
    // syscall, amortised over REPEAT runs), each round against the
    // baseline and xdp-filter of the same object and round; per frame
    // type (untagged, tagged), the one with the higher median ratio.
    let judge = |against: &dyn Fn(&Judged) -> Option<f64>| {
        (0..2)
            .map(|k| {
                judged
                    .iter()
                    .filter_map(|j| against(j).map(|d| j.0[k] / d))
                    .collect::<Vec<f64>>()
            })
            .filter(|r| !r.is_empty())
            .max_by(|a, b| median(a).total_cmp(&median(b)))
    };
    let vs_pass = judge(&|j| Some(j.1)).expect("rounds ran");
    let ratio = median(&vs_pass);
    println!(
        "classifier at 4096 endpoints: {ratio:.2}x the pass-only baseline (median of {ROUNDS} \
         per-round ratios, the worse frame type; XDP's mark for TC included)"
    );
    if let Some((_, (k, _), (bk, _))) = rows
        .iter()
        .find(|(n, _, _)| n.starts_with("floor") && n.contains("(4096"))
    {
        println!(
            "floor at 4096 endpoints: {k:.1} ns = {:.2}x the baseline ({:+.1} ns): the least \
             counting per endpoint costs",
            k / bk,
            k - bk
        );
    }
    judge_scale(&scale, &frames);
    if let Some(vs_filter) = judge(&|j| j.2) {
        let r = median(&vs_filter);
        println!(
            "classifier at 4096 endpoints / xdp-filter: {r:.2} (median of {} per-round ratios, \
             the worse frame type, range {:.2}..{:.2}; target <= 0.5): {}",
            vs_filter.len(),
            vs_filter.iter().cloned().fold(f64::INFINITY, f64::min),
            vs_filter.iter().cloned().fold(0.0, f64::max),
            if r <= 0.5 { "PASS" } else { "FAIL" }
        );
    } else {
        println!("xdp-filter: not installed or not loadable (Debian package xdp-tools); ratio not measured");
    }
}

/// The classifier at 65,536 endpoints against 64, side by side: each round
/// runs both objects on the same frame type one after the other, so the
/// ratio of a round cancels the VM's drift; per frame type the median of
/// the per-round ratios, judged on the worse one (target <= 1.1x).
fn judge_scale(objects: &[(u32, Ebpf)], frames: &dyn Fn(u32) -> (Vec<u8>, Vec<u8>)) {
    let [(small, a), (large, b)] = objects else {
        unreachable!("the 64 and 65,536 endpoint objects");
    };
    let (fa, fb) = (frames(*small), frames(*large));
    let (ca, cb) = (xdp(a, program_names::XDP), xdp(b, program_names::XDP));
    let (ta_, tb_) = (
        tc(a, program_names::TC_INGRESS),
        tc(b, program_names::TC_INGRESS),
    );
    let mut ratios = [vec![], vec![], vec![]];
    for _ in 0..ROUNDS {
        for (k, (x, y)) in [(&fa.0, &fb.0), (&fa.1, &fb.1)].into_iter().enumerate() {
            let ta = run(ca, x).unwrap().0;
            let tb = run(cb, y).unwrap().0;
            ratios[k].push(tb / ta);
        }
        // TC ingress with no XDP mark: it classifies, and checks the
        // source (a wire MAC) as on a device without NAPI.
        let ta = run(ta_, &fa.0).unwrap().0;
        let tb = run(tb_, &fb.0).unwrap().0;
        ratios[2].push(tb / ta);
    }
    let (kind, worst) = ratios
        .iter()
        .zip(["XDP untagged", "XDP 802.1Q tagged", "TC ingress untagged"])
        .map(|(r, kind)| (kind, median(r)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    println!(
        "classifier at {large} / {small} endpoints: {worst:.2}x (median of {ROUNDS} per-round \
         ratios, the worst of: {kind}; XDP untagged {:.2}x, XDP tagged {:.2}x, TC ingress \
         untagged {:.2}x; target <= 1.1): {}",
        median(&ratios[0]),
        median(&ratios[1]),
        median(&ratios[2]),
        if worst <= 1.1 { "PASS" } else { "FAIL" }
    );
}
