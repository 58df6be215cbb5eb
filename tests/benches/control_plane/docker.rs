//! The Docker rows of the control-plane bench (issue 15): Debian's dockerd
//! (20.10) in a lab of its own, with `PARENTS` macvlan networks (Docker
//! takes one per parent), and:
//! * `sync`: as many Docker endpoints as the machine makes within
//!   [`CREATE_BUDGET`] (up to [`WANT_ENDPOINTS`]: containers on the first
//!   network, each then connected to the others), then one `mvnet docker
//!   sync` from an empty state (every endpoint adopted) and
//!   [`STEADY_RUNS`] more with nothing to do; target < 1 s for 1000
//!   endpoints, judged on the adopting run scaled to 1000 when fewer could
//!   be made (said so);
//! * `watch`: with `mvnet docker watch` running, [`LATENCY_RUNS`] times
//!   `docker run -d --mac-address M`, then the time from its return until M
//!   is in the classifier's table (polled every 0.2 ms in the pinned map;
//!   0 when it already was); target p99 < 100 ms.
use std::{
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use mvnet::{
    datapath::pinned::{self, PinnedMaps},
    model::Mac,
};
use mvnet_lab::lab::Lab;

use crate::common::docker::{add_parent, Dockerd, IMAGE};

/// Macvlan networks, one per parent (`eth0`, and `eth1..` made here).
const PARENTS: usize = 4;
/// Endpoints the sync row asks for (the 1000); the target is
/// stated for this many.
const WANT_ENDPOINTS: usize = 1000;

/// Endpoints to make: [`WANT_ENDPOINTS`], or `MVNET_BENCH_DOCKER_ENDPOINTS`
/// (for a quick run).
fn endpoints_to_make() -> usize {
    std::env::var("MVNET_BENCH_DOCKER_ENDPOINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(WANT_ENDPOINTS)
}
/// Longest the making of containers and connections may take.
const CREATE_BUDGET: Duration = Duration::from_secs(6 * 60);
/// Docker CLI processes at once while making them.
const CREATE_THREADS: usize = 4;
/// `mvnet docker sync` runs with nothing to do.
const STEADY_RUNS: usize = 5;
/// `docker run`s timed under watch.
const LATENCY_RUNS: usize = 40;
/// Longest an endpoint may take to appear under watch before the bench
/// fails.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);
const SYNC_TARGET: Duration = Duration::from_secs(1);
const LATENCY_TARGET: Duration = Duration::from_millis(100);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `mvnet docker watch`, killed on drop.
struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lab, engine and state of the rows; everything Docker made is
/// removed on drop.
struct Rig {
    state_dir: std::path::PathBuf,
    d: Dockerd,
    lab: Lab,
}

impl Rig {
    fn docker(&self, args: &[&str]) -> Result<String> {
        let out = self.d.docker(args);
        if !out.status.success() {
            bail!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn mvnet(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::common::cli::mvnet_bin());
        cmd.arg("--state-dir").arg(&self.state_dir).args(args);
        cmd
    }

    /// Runs `mvnet ARGS` in the lab's host namespace; its wall time and
    /// output (its log of where the time went included).
    fn timed_mvnet(&self, args: &[&str]) -> Result<(Duration, String)> {
        let mut cmd = self.mvnet(args);
        cmd.env("RUST_LOG", "mvnet::docker=info");
        let out = self.lab.host().run(move || {
            let t = Instant::now();
            let out = cmd.stdin(Stdio::null()).output();
            (t.elapsed(), out)
        })?;
        let (took, out) = (out.0, out.1.context("running mvnet")?);
        if !out.status.success() {
            bail!(
                "mvnet {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            if let Some((_, what)) = line.split_once("docker sync: ") {
                println!("  mvnet: {what}");
            }
        }
        Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    fn pins(&self) -> Result<std::path::PathBuf> {
        Ok(pinned::pin_dir(
            pinned::netns_inode(Some(self.lab.host()))?,
            "eth0",
        ))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Many containers: remove them in one call, then let mvnet forget.
        if let Ok(ids) = self.docker(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
            for chunk in ids.chunks(100) {
                let mut args = vec!["rm", "-f"];
                args.extend_from_slice(chunk);
                let _ = self.d.docker(&args);
            }
        }
        for i in 0..PARENTS {
            let _ = self.d.docker(&["network", "rm", &format!("bnet{i}")]);
        }
        let mut cmd = self.mvnet(&["docker", "sync", "--docker-host", &self.d.host()]);
        let _ = self.lab.host().run(move || cmd.output());
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Adds `ethI` ⇄ `wireI` (I = 1..PARENTS-1) to the lab.
fn add_parents(lab: &Lab) -> Result<()> {
    for i in 1..PARENTS {
        add_parent(lab, &format!("eth{i}"), &format!("wire{i}"))?;
    }
    Ok(())
}

/// Runs `op(i)` for i in 0..n on [`CREATE_THREADS`] threads until done or
/// `deadline`; returns how many succeeded (a prefix is not guaranteed).
fn in_parallel(
    n: usize,
    deadline: Instant,
    op: impl Fn(usize) -> Result<()> + Sync,
) -> Result<usize> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failure = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..CREATE_THREADS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() > deadline || failure.lock().unwrap().is_some() {
                    return;
                }
                match op(i) {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => *failure.lock().unwrap() = Some(e),
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    Ok(done.into_inner())
}

pub fn bench() -> Result<()> {
    println!();
    println!("docker rows: dockerd (Debian docker.io) in a lab, {PARENTS} macvlan networks, one per parent");
    let lab = Lab::new().context("building the Docker lab")?;
    add_parents(&lab)?;
    let d = Dockerd::start(lab.host().path(), lab.id())?;
    println!("Docker engine {}", d.version);
    let rig = Rig {
        state_dir: std::path::PathBuf::from(format!(
            "/var/tmp/mvnet-bench-docker-{}",
            std::process::id()
        )),
        d,
        lab,
    };
    let _ = std::fs::remove_dir_all(&rig.state_dir);
    for i in 0..PARENTS {
        // 10.{100+i}.0.0/16: room for every container on every network.
        rig.docker(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            &format!("10.{}.0.0/16", 100 + i),
            "-o",
            &format!("parent=eth{i}"),
            &format!("bnet{i}"),
        ])?;
    }

    // The sync row: make the endpoints.
    let containers = endpoints_to_make().div_ceil(PARENTS);
    let deadline = Instant::now() + CREATE_BUDGET;
    let started = Instant::now();
    let made = in_parallel(containers, deadline, |i| {
        rig.docker(&[
            "run",
            "-d",
            "--name",
            &format!("b{i}"),
            "--network",
            "bnet0",
            IMAGE,
            "sleep",
            "7200",
        ])
        .map(drop)
    })?;
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for net in 1..PARENTS {
        for c in 0..made {
            pairs.push((c, net));
        }
    }
    let connected = in_parallel(pairs.len(), deadline, |k| {
        let (c, net) = pairs[k];
        rig.docker(&[
            "network",
            "connect",
            &format!("bnet{net}"),
            &format!("b{c}"),
        ])
        .map(drop)
    })?;
    let endpoints = made + connected;
    println!(
        "made {made} containers and {connected} more connections ({endpoints} endpoints) in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let host = rig.d.host();
    let (first, out) = rig.timed_mvnet(&["docker", "sync", "--docker-host", &host])?;
    let summary =
        format!("{PARENTS} macvlan network(s), {endpoints} endpoint(s) of {made} container(s)");
    ensure!(
        out.contains(&summary),
        "the first sync did not adopt every endpoint ({summary}):\n{out}"
    );
    let maps = PinnedMaps::open(&rig.pins()?)?;
    ensure!(
        maps.endpoints_ro()
            .context("no endpoint table")?
            .entries()?
            .len()
            == made,
        "eth0's table does not hold the {made} endpoints of bnet0"
    );
    let mut steady = Vec::new();
    for _ in 0..STEADY_RUNS {
        let (t, out) = rig.timed_mvnet(&["docker", "sync", "--docker-host", &host])?;
        ensure!(
            out.starts_with("nothing to do"),
            "a steady-state sync changed something:\n{out}"
        );
        steady.push(t);
    }
    steady.sort();
    let per_ep = first / endpoints.max(1) as u32;
    let scaled = per_ep * WANT_ENDPOINTS as u32;
    println!(
        "docker sync, {endpoints} endpoints, from an empty state: {:.0} ms ({:.3} ms per endpoint); \
         nothing to do: median {:.0} ms, max {:.0} ms ({STEADY_RUNS} runs)",
        ms(first),
        ms(per_ep),
        ms(steady[STEADY_RUNS / 2]),
        ms(steady[STEADY_RUNS - 1])
    );
    let judged = if endpoints >= WANT_ENDPOINTS {
        format!("{:.0} ms for {endpoints}", ms(first))
    } else {
        format!(
            "{endpoints} endpoints made (of {} asked for, within {} s); scaled to \
             {WANT_ENDPOINTS}: {:.0} ms",
            endpoints_to_make(),
            CREATE_BUDGET.as_secs(),
            ms(scaled)
        )
    };
    println!(
        "docker sync of {WANT_ENDPOINTS} endpoints: {judged} -> {} (target < {} ms)",
        if scaled < SYNC_TARGET { "PASS" } else { "FAIL" },
        SYNC_TARGET.as_millis()
    );

    // The watch row.
    let mut cmd = rig.mvnet(&["docker", "watch", "--docker-host", &host]);
    let child = rig.lab.host().run(move || {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })??;
    let _watch = Watch(child);
    let mut lat = Vec::new();
    let mut already = 0;
    for i in 0..LATENCY_RUNS {
        // Locally administered, outside Docker's 02:42 range.
        let mac = Mac::new([0x06, 0x42, 0x0a, 0x64, (i >> 8) as u8, i as u8]);
        let table = || -> Result<bool> {
            Ok(maps
                .endpoints_ro()
                .context("no endpoint table")?
                .get(mac.octets(), 0)
                .is_some())
        };
        let name = format!("w{i}");
        let mac_s = mac.to_string();
        rig.docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "bnet0",
            "--mac-address",
            &mac_s,
            IMAGE,
            "sleep",
            "7200",
        ])?;
        let returned = Instant::now();
        if table()? {
            already += 1;
            lat.push(Duration::ZERO);
            continue;
        }
        loop {
            if table()? {
                lat.push(returned.elapsed());
                break;
            }
            if returned.elapsed() > APPEAR_TIMEOUT {
                bail!(
                    "{name} ({mac}) not in the table {} s after docker run returned",
                    APPEAR_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let p99 = pct(0.99);
    println!(
        "docker run -> endpoint in the table under watch, {LATENCY_RUNS} runs ({already} already there when docker run returned): \
         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms -> {} (target p99 < {} ms)",
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(p99),
        ms(pct(1.0)),
        if p99 < LATENCY_TARGET { "PASS" } else { "FAIL" },
        LATENCY_TARGET.as_millis()
    );
    Ok(())
}
