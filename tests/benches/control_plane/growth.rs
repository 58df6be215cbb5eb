//! The growth rows of the control-plane bench (issue 17, target 6): the
//! time of one `mvnet run -d` and one `mvnet container rm -f` with 1, 100,
//! 1000 and 4000 endpoints already on the network, and the growth from 1
//! to 4000 (target: at most [`GROWTH_TARGET`]).
//!
//! One lab, one network on its `eth0` with `--max-endpoints 8192`. The
//! population is made with `mvnet run -d` (one process per container,
//! the cheapest way the product has to make mvnet's own endpoints), grown
//! from one size to the next within [`FILL_BUDGET`]. At each size,
//! [`SAMPLES`] times: `run -d` of a probe container, then `container rm
//! -f` of it (so the population stays at the size); reported are the
//! medians. The population is counted (`mvnet ps -a -q`) at every size,
//! and the probe's address checked once per size.
//!
//! At each size, as many times again, the kernel floor of a probe
//! (control_plane/floor.rs), in process: a new named namespace with `lo`
//! up, a macvlan in it made, addressed and up with mvnet's tcx source
//! checks (the "run" floor); the device deleted and the namespace removed
//! (the "rm" floor). Its growth is what the kernel's own work grows by
//! with the population, whatever the tool.
//!
//! `MVNET_BENCH_GROWTH_MAX=N` stops at sizes up to N (for a quick run; the
//! target is then not judged).
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use mvnet::netns::NetNs;
use mvnet_lab::lab::Lab;

use super::{check_attached, execute, execute_within, floor, ms, percentile, Cleanup, Mvnet};

/// Endpoints already on the network when a probe runs.
const SIZES: [usize; 4] = [1, 100, 1000, 4000];
/// Probes (one `run`, one `rm`) per size.
const SAMPLES: usize = 31;
/// Time at 4000 divided by time at 1 must not exceed this.
const GROWTH_TARGET: f64 = 1.5;
/// Longest the making of the population may take in all (with a state
/// rewritten whole on every command, 4000 take about 25 minutes here).
const FILL_BUDGET: Duration = Duration::from_secs(45 * 60);
const NET: &str = "growthnet";
const SUBNET: &str = "10.80.0.0/16";
/// Classifier slots: room for the largest size and the probe.
const MAX_ENDPOINTS: &str = "8192";
/// Names per `container rm -f` at teardown, and how long one may take.
const RM_BATCH: usize = 200;
const RM_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest size to measure: `MVNET_BENCH_GROWTH_MAX`, else all.
fn largest() -> usize {
    std::env::var("MVNET_BENCH_GROWTH_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX)
}

/// One size's medians.
struct Row {
    size: usize,
    run: Duration,
    rm: Duration,
    /// The kernel floors of `run` and `rm`.
    floor_run: Duration,
    floor_rm: Duration,
    /// Seconds spent growing the population to this size.
    fill: Duration,
}

pub fn bench() -> Result<()> {
    mvnet::require_root("the control-plane bench")?;
    let bin = super::common::cli::mvnet_bin();
    let dir = PathBuf::from(format!(
        "/var/tmp/mvnet-bench-growth-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lab = Lab::new().context("building the lab")?;
    let _cleanup = Cleanup {
        run_prefix: format!("{}-g", lab.id()),
        dir: dir.clone(),
    };
    let mvnet = Mvnet {
        bin,
        state_dir: dir.join("mvnet-state"),
    };
    let host = lab.host().clone();
    let sizes: Vec<usize> = SIZES.into_iter().filter(|n| *n <= largest()).collect();
    ensure!(!sizes.is_empty(), "MVNET_BENCH_GROWTH_MAX is below 1");
    println!(
        "\ngrowth: one `mvnet run -d` and one `mvnet container rm -f` with N endpoints already on network {NET} (median of {SAMPLES}; lab {})",
        lab.id()
    );
    let rows = host.run(|| measure(&mvnet, lab.id(), &sizes))??;

    println!("{HEADER}");
    for r in &rows {
        r.print();
    }
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    let judged = first.size == SIZES[0] && last.size == SIZES[SIZES.len() - 1];
    for (what, a, b, fa, fb) in [
        ("run", first.run, last.run, first.floor_run, last.floor_run),
        (
            "container rm",
            first.rm,
            last.rm,
            first.floor_rm,
            last.floor_rm,
        ),
    ] {
        let growth = b.as_secs_f64() / a.as_secs_f64();
        println!(
            "growth {what} {}/{}: {growth:.2}x -> {} (target <= {GROWTH_TARGET:.1}x)",
            last.size,
            first.size,
            match (judged, growth <= GROWTH_TARGET) {
                (false, _) => "not judged (not every size was measured)",
                (true, true) => "PASS",
                (true, false) => "FAIL",
            }
        );
        // mvnet's time above the floor: what mvnet itself adds.
        let own = |t: Duration, f: Duration| t.saturating_sub(f).as_secs_f64() * 1e3;
        let floor_growth = fb.as_secs_f64() / fa.as_secs_f64();
        println!(
            "  kernel floor {:.2} -> {:.2} ms: {floor_growth:.2}x ({}); mvnet above it {:.2} -> {:.2} ms: {:.2}x",
            ms(fa),
            ms(fb),
            if floor_growth > GROWTH_TARGET {
                "the kernel's own work grows past the target"
            } else {
                "within the target"
            },
            own(a, fa),
            own(b, fb),
            own(b, fb) / own(a, fa).max(1e-3),
        );
    }
    Ok(())
}

/// In the lab's host namespace: makes the network, grows the population
/// through `sizes`, probes each, and removes everything again.
fn measure(mvnet: &Mvnet, lab: &str, sizes: &[usize]) -> Result<Vec<Row>> {
    let subnet = format!("--subnet={SUBNET}");
    let args = [
        "network",
        "create",
        &subnet,
        "--max-endpoints",
        MAX_ENDPOINTS,
        "-o",
        "parent=eth0",
        NET,
    ];
    execute("mvnet network create", mvnet.cmd(&args), None)?;
    let parent = floor::parent_index()?;
    let dir = mvnet::controller::datapath::pin_dir("eth0")?;
    let name = |i: usize| format!("{lab}-g{i}");
    let probe = format!("{lab}-gprobe");
    let fill_deadline = Instant::now() + FILL_BUDGET;
    let mut rows = Vec::new();
    let mut have = 0;
    let result = (|| -> Result<()> {
        for &size in sizes {
            let start = Instant::now();
            while have < size {
                ensure!(
                    Instant::now() < fill_deadline,
                    "making {size} containers took longer than {} s (made {have}); aborted",
                    FILL_BUDGET.as_secs()
                );
                let args = ["run", "-d", "--network", NET, "--name", &name(have)];
                execute("mvnet run (population)", mvnet.cmd(&args), None)?;
                have += 1;
                if have % 500 == 0 {
                    eprintln!(
                        "growth: {have} containers ({:.0} s)",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
            let fill = start.elapsed();
            let listed = execute("mvnet ps", mvnet.cmd(&["ps", "-a", "-q"]), None)?;
            let listed = String::from_utf8_lossy(&listed.stdout).lines().count();
            ensure!(
                listed == size,
                "mvnet ps lists {listed} containers, not the {size} made"
            );
            let (mut runs, mut rms) = (Vec::new(), Vec::new());
            for s in 0..SAMPLES {
                let args = ["run", "-d", "--network", NET, "--name", &probe];
                let t = Instant::now();
                execute("mvnet run (probe)", mvnet.cmd(&args), None)?;
                runs.push(t.elapsed());
                if s == 0 {
                    let addr = check_attached(&NetNs::named(&probe)?, "10.80.")?;
                    eprintln!("growth: N={size}: probe has eth0 {addr}");
                }
                let t = Instant::now();
                execute(
                    "mvnet container rm -f (probe)",
                    mvnet.cmd(&["container", "rm", "-f", &probe]),
                    None,
                )?;
                rms.push(t.elapsed());
            }
            ensure!(
                NetNs::named(&probe).is_err(),
                "container rm -f left the probe's namespace {probe}"
            );
            let (mut floor_runs, mut floor_rms) = (Vec::new(), Vec::new());
            for _ in 0..SAMPLES {
                let (run, rm) = floor_probe(&format!("{lab}-gfloor"), parent, &dir)?;
                floor_runs.push(run);
                floor_rms.push(rm);
            }
            let row = Row {
                size,
                run: percentile(&runs, 50),
                rm: percentile(&rms, 50),
                floor_run: percentile(&floor_runs, 50),
                floor_rm: percentile(&floor_rms, 50),
                fill,
            };
            // As measured: a later size may fail or run out of time.
            row.print();
            rows.push(row);
        }
        Ok(())
    })();
    // Teardown, also after an error: the containers, then the network
    // (which takes the classifier off the lab's eth0).
    let names: Vec<String> = (0..have).map(name).collect();
    for batch in names.chunks(RM_BATCH) {
        let mut cmd: Command = mvnet.cmd(&["container", "rm", "-f"]);
        cmd.args(batch);
        execute_within("mvnet container rm -f (teardown)", cmd, None, RM_TIMEOUT)?;
    }
    execute("mvnet network rm", mvnet.cmd(&["network", "rm", NET]), None)?;
    result?;
    Ok(rows)
}

const HEADER: &str = "     N     run ms      rm ms  floor run   floor rm     fill s";

impl Row {
    fn print(&self) {
        println!(
            "{:>6} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.1}",
            self.size,
            ms(self.run),
            ms(self.rm),
            ms(self.floor_run),
            ms(self.floor_rm),
            self.fill.as_secs_f64()
        );
    }
}

/// One kernel-floor probe (see the module's text) in a namespace called
/// `name`, from the calling thread (in the parent's namespace): the time
/// of its "run" and of its "rm".
fn floor_probe(name: &str, parent: u32, dir: &std::path::Path) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    let ns = mvnet::netns::create(name).with_context(|| format!("floor: namespace {name}"))?;
    let made = (|| -> Result<()> {
        // As mvnet's sandboxes on an IPv4-only network.
        mvnet::controller::endpoint::loopback_up(&ns, false)?;
        floor::make(
            &ns,
            parent,
            std::net::Ipv4Addr::new(10, 81, 0, 2),
            Some((dir, 0)),
        )?;
        Ok(())
    })();
    let run = t.elapsed();
    let t = Instant::now();
    let deleted = made.and_then(|()| floor::delete(&ns).map(|_| ()));
    let removed = mvnet::netns::delete(name).with_context(|| format!("floor: removing {name}"));
    deleted?;
    removed?;
    Ok((run, t.elapsed()))
}
