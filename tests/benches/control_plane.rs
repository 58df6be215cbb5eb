//! Control-plane benchmark: the `mvnet` binary against the CNI reference
//! macvlan plugin with host-local IPAM (Debian's `containernetworking-plugins`),
//! one process per operation, on the same lab and in the same run.
//!
//! Run it with `cargo xtask bench control-plane` (as root): xtask builds
//! `mvnet` in release mode, installs the CNI plugins when missing, holds the
//! lab lock and passes the binary in `MVNET_BIN`.
//!
//! One lab, with 100 pre-created namespaces for mvnet (`m0..m99`) and 100 for
//! CNI (`c0..c99`). A warm-up round of 10 operations per phase (not counted),
//! then 5 rounds of 100; each round, in turn:
//! * mvnet: `mvnet network connect --netns PATH benchnet mI` for every `mI`
//!   (attach), then `mvnet network disconnect benchnet mI` (detach);
//! * kernel floors (control_plane/floor.rs), in the same `mI`, in process:
//!   the device made, addressed and up, then deleted; then the same with
//!   mvnet's tcx source checks on it. Each row below is printed with its
//!   floor over the reference plugin's time: a target under the floor is
//!   out of reach of any tool that returns with the device made or gone;
//! * CNI: `/usr/lib/cni/macvlan` with `CNI_COMMAND=ADD` for every `cI`
//!   (attach), then `CNI_COMMAND=DEL` (detach);
//! * mvnet: `mvnet run --rm -d --network benchnet --name N` of 100 new
//!   containers, then `mvnet container stop N` of each (reported, no target);
//! * mvnet-cni, standalone (`"type": "mvnet"`, master eth0, host-local),
//!   paired with the reference plugin: in each `cI` in turn, the reference
//!   plugin's ADD and DEL and mvnet-cni's ADD and DEL (which goes first
//!   alternates), so that both see the same load however it drifts on a
//!   shared machine; mvnet-cni against these paired reference rows
//!   (target: at most half its time);
//! * Podman (4.3, CNI backend, runc; tests/common/podman.rs):
//!   `podman run --rm --network N IMAGE true`, 10 per round, with a conflist
//!   of macvlan + host-local, then with mvnet-cni chained after them
//!   (target: mvnet adds at most 10%).
//!
//! Every process is started from a thread inside the lab's host namespace
//! (where the parent `eth0` is), with a timeout; any failed or timed-out
//! operation fails the bench. Each round ends with everything detached, so
//! the next one starts clean. Reported: per-round totals, their median, ms
//! per operation, percentiles of single operations, and the ratios
//! mvnet/CNI of the medians (and per round). The targets (issue 17: mvnet
//! attach at most 0.3x the reference plugin's ADD, detach at most 0.15x its
//! DEL; mvnet-cni standalone at most half) are reported as PASS or FAIL; missing it does not fail the run: this is a measurement,
//! not a test.
//!
//! Then the Docker rows (control_plane/docker.rs): `mvnet docker sync`
//! over as many Docker endpoints as the machine makes (target: 1000 in
//! < 1 s) and, under `mvnet docker watch`, the time from `docker run`
//! returning to the endpoint being in the classifier's table (target: p99
//! < 100 ms).
//!
//! Then the growth rows (control_plane/growth.rs, issue 17): one `mvnet
//! run -d` and one `mvnet container rm -f` with 1, 100, 1000 and 4000
//! endpoints already on the network (target: at most 1.5x from 1 to 4000).
//!
//! `-- --bench cni` runs only the first part, `-- --bench docker` only the
//! Docker rows, `-- --bench growth` only the growth rows. Without `--bench`
//! (e.g. under `cargo test --benches`) it does nothing.
use std::{
    io::{ErrorKind, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use common::podman::{self, Podman};
use mvnet::netns::{self, NetNs};
use mvnet_lab::lab::Lab;

/// Operations per phase (namespaces per tool).
const OPS: usize = 100;
/// Rounds per tool, alternating mvnet and CNI.
const ROUNDS: usize = 5;
/// Operations per phase of the warm-up round before them (not counted).
const WARMUP_OPS: usize = 10;
/// Longest one operation (one process) may take.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the whole bench may take (checked before every operation).
const BENCH_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// mvnet-cni standalone's time divided by the reference plugin's must not
/// exceed this.
const TARGET_RATIO: f64 = 0.5;
/// `mvnet network connect` divided by the reference plugin's ADD must not
/// exceed this (issue 17).
const ATTACH_TARGET: f64 = 0.3;
/// `mvnet network disconnect` divided by the reference plugin's DEL must
/// not exceed this (issue 17).
const DETACH_TARGET: f64 = 0.15;
/// `podman run`s per round and per conflist (each takes most of a second).
const PODMAN_OPS: usize = 10;
/// ... in the warm-up round.
const PODMAN_WARMUP_OPS: usize = 2;
/// Podman with mvnet-cni chained, divided by Podman without, must not
/// exceed this.
const PODMAN_TARGET_RATIO: f64 = 1.10;
const STANDALONE_NET: &str = "cnibench-mv";
const STANDALONE_SUBNET: &str = "10.70.0.0/16";
const PODMAN_REF_NET: &str = "podbench-ref";
const PODMAN_MV_NET: &str = "podbench-mvnet";
const PODMAN_SUBNET_REF: &str = "10.71.0.0/16";
const PODMAN_SUBNET_MV: &str = "10.72.0.0/16";

const CNI_DIR: &str = "/usr/lib/cni";
const CNI_NET: &str = "cnibench";
const CNI_SUBNET: &str = "10.60.0.0/16";
/// cniVersions we can speak, preferred first.
const CNI_VERSIONS: &[&str] = &["1.0.0", "0.4.0", "0.3.1"];
const MVNET_NET: &str = "benchnet";
const MVNET_SUBNET: &str = "10.50.0.0/16";

#[path = "../common/mod.rs"]
mod common;
#[path = "control_plane/docker.rs"]
mod docker;
#[path = "control_plane/floor.rs"]
mod floor;
#[path = "control_plane/growth.rs"]
mod growth;

fn main() -> ExitCode {
    if !std::env::args().skip(1).any(|a| a == "--bench") {
        println!(
            "control_plane: skipped (not run with --bench); run it with `cargo xtask bench control-plane`"
        );
        return ExitCode::SUCCESS;
    }
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    let result = (|| {
        if wants("cni") {
            bench()?;
        }
        if wants("docker") {
            docker::bench()?;
        }
        if wants("growth") {
            growth::bench()?;
        }
        Ok::<_, anyhow::Error>(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Deadline for the whole bench.
struct Budget(Instant);

impl Budget {
    fn check(&self) -> Result<()> {
        ensure!(
            Instant::now() < self.0,
            "the bench ran longer than its limit of {} s; aborted",
            BENCH_TIMEOUT.as_secs()
        );
        Ok(())
    }
}

/// Waits for `child` to exit for at most `timeout`; `false` if it did not.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    // SAFETY: pidfd_open on our own child's pid; the fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        // Kernels before 5.3: poll, at a granularity fine enough for ms ops.
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        return Ok(child.try_wait()?.is_some());
    }
    // SAFETY: a fresh fd returned by pidfd_open, closed once, by OwnedFd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll on a pidfd");
        }
        return Ok(rc > 0);
    }
}

/// Runs `cmd` (with `stdin` on its standard input), bounded by
/// [`OP_TIMEOUT`]; fails unless it exits 0. Returns its output.
fn execute(what: &str, cmd: Command, stdin: Option<&[u8]>) -> Result<Output> {
    execute_within(what, cmd, stdin, OP_TIMEOUT)
}

/// [`execute`] bounded by `timeout`.
fn execute_within(
    what: &str,
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: starting {}", cmd.get_program().to_string_lossy()))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that exits without reading fails on its own: check below.
        match pipe.write_all(data) {
            Err(e) if e.kind() != ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).with_context(|| format!("{what}: writing its stdin"));
            }
            _ => {}
        }
    }
    if !wait_bounded(&mut child, timeout)? {
        let _ = child.kill();
        let out = child.wait_with_output()?;
        bail!(
            "{what}: timed out after {} s and was killed; stderr: {}",
            timeout.as_secs(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{what}: failed ({}); stdout: {} stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// The times of one phase: the wall clock of the whole loop and of each
/// operation (process start to exit).
struct Timing {
    total: Duration,
    ops: Vec<Duration>,
}

/// Runs `n` operations made by `make(i)` one after the other, on one thread
/// inside `ns`, and times them.
fn timed<F>(ns: &NetNs, budget: &Budget, n: usize, what: &str, make: F) -> Result<Timing>
where
    F: Fn(usize) -> (Command, Option<Vec<u8>>) + Sync,
{
    ns.run(|| -> Result<Timing> {
        let mut ops = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            budget.check()?;
            let (cmd, stdin) = make(i);
            let op = Instant::now();
            execute(&format!("{what} #{i}"), cmd, stdin.as_deref())?;
            ops.push(op.elapsed());
        }
        Ok(Timing {
            total: start.elapsed(),
            ops,
        })
    })?
}

/// How to run mvnet with the bench's state directory.
struct Mvnet {
    bin: PathBuf,
    state_dir: PathBuf,
}

impl Mvnet {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--state-dir").arg(&self.state_dir).args(args);
        cmd
    }

    /// The number of containers in the saved state.
    fn containers_in_state(&self) -> Result<usize> {
        let state = mvnet::store::peek(&self.state_dir)
            .with_context(|| format!("reading the state in {}", self.state_dir.display()))?;
        Ok(state.containers.len())
    }
}

/// How to run a CNI plugin (the reference macvlan plugin, or mvnet-cni
/// standalone) on one of the bench's networks.
struct Cni {
    plugin: PathBuf,
    config: Vec<u8>,
}

impl Cni {
    /// The reference macvlan plugin with host-local.
    fn new(version: &str, data_dir: &Path) -> Cni {
        let config = serde_json::json!({
            "cniVersion": version,
            "name": CNI_NET,
            "type": "macvlan",
            "master": "eth0",
            "mode": "bridge",
            "ipam": {
                "type": "host-local",
                "subnet": CNI_SUBNET,
                "dataDir": data_dir,
            },
        });
        Cni {
            plugin: Path::new(CNI_DIR).join("macvlan"),
            config: serde_json::to_vec(&config).expect("serialisable"),
        }
    }

    /// mvnet-cni standalone with host-local, recording into `state_dir`.
    fn standalone(plugin: PathBuf, version: &str, data_dir: &Path, state_dir: &Path) -> Cni {
        let config = serde_json::json!({
            "cniVersion": version,
            "name": STANDALONE_NET,
            "type": "mvnet",
            "master": "eth0",
            "mode": "bridge",
            "stateDir": state_dir,
            "ipam": {
                "type": "host-local",
                "subnet": STANDALONE_SUBNET,
                "dataDir": data_dir,
            },
        });
        Cni {
            plugin,
            config: serde_json::to_vec(&config).expect("serialisable"),
        }
    }

    fn cmd(&self, command: &str, container_id: &str, ns: &NetNs) -> (Command, Option<Vec<u8>>) {
        let mut cmd = Command::new(&self.plugin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_DIR);
        (cmd, Some(self.config.clone()))
    }
}

/// The cniVersion to use: the first of [`CNI_VERSIONS`] the plugin supports.
fn cni_version() -> Result<(String, Vec<String>)> {
    let mut cmd = Command::new(Path::new(CNI_DIR).join("macvlan"));
    cmd.env("CNI_COMMAND", "VERSION");
    let out = execute("CNI macvlan VERSION", cmd, Some(b"{}")).context(
        "fix: install the CNI plugins (`cargo xtask bench` does: containernetworking-plugins)",
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("the CNI macvlan plugin's VERSION output is not JSON")?;
    let supported: Vec<String> = v
        .get("supportedVersions")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let chosen = CNI_VERSIONS
        .iter()
        .find(|v| supported.iter().any(|s| s == *v))
        .ok_or_else(|| {
            anyhow!(
                "the CNI macvlan plugin supports cniVersion {supported:?}, none of {CNI_VERSIONS:?}"
            )
        })?;
    Ok((chosen.to_string(), supported))
}

/// The mount holding `path` (longest mount-point prefix in mountinfo):
/// (filesystem type, source).
fn filesystem_of(path: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in info.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?.replace("\\040", " ");
        let mut r = right.split(' ');
        let (fstype, source) = (r.next()?, r.next()?);
        if path.starts_with(&mount_point)
            && best
                .as_ref()
                .is_none_or(|(len, ..)| mount_point.len() >= *len)
        {
            best = Some((mount_point.len(), fstype.to_owned(), source.to_owned()));
        }
    }
    best.map(|(_, t, s)| (t, s))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `eth0` in `ns` must exist and be up, with an IPv4 address starting with
/// `prefix` (e.g. "10.50.").
fn check_attached(ns: &NetNs, prefix: &str) -> Result<String> {
    let link = mvnet::netlink::run(Some(ns), |nl| async move { nl.link("eth0").await })?
        .with_context(|| format!("no eth0 in {} after attach", ns.path().display()))?;
    ensure!(link.up, "eth0 in {} is down", ns.path().display());
    let name = ns.name().context("a named namespace")?;
    let mut cmd = Command::new("ip");
    cmd.args(["-n", name, "-4", "-o", "addr", "show", "dev", "eth0"]);
    let out = execute("ip addr show", cmd, None)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let addr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .with_context(|| format!("eth0 in {name} has no IPv4 address: {text}"))?;
    ensure!(
        addr.starts_with(prefix),
        "eth0 in {name} has {addr}, not an address in {prefix}*"
    );
    Ok(addr.to_owned())
}

/// None of `namespaces` may have an `eth0` left.
fn check_detached(namespaces: &[NetNs], what: &str) -> Result<()> {
    for ns in namespaces {
        let link = mvnet::netlink::run(Some(ns), |nl| async move { nl.link("eth0").await })?;
        ensure!(
            link.is_none(),
            "{what}: eth0 is still in {} after detach",
            ns.path().display()
        );
    }
    Ok(())
}

/// Removes what the bench made outside the lab: containers `mvnet run`
/// created (`<lab>-rN` namespaces) and the bench directory.
struct Cleanup {
    run_prefix: String,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in netns::list() {
            if name.starts_with(&self.run_prefix) {
                let _ = netns::delete(&name);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One phase over the measured rounds.
struct Series {
    name: &'static str,
    /// Operations per round.
    per_round: usize,
    /// Per round.
    totals: Vec<Duration>,
    /// Every operation of every round.
    ops: Vec<Duration>,
}

impl Series {
    fn new(name: &'static str) -> Series {
        Series {
            name,
            per_round: 0,
            totals: Vec::new(),
            ops: Vec::new(),
        }
    }

    fn push(&mut self, t: Timing) {
        self.per_round = t.ops.len();
        self.totals.push(t.total);
        self.ops.extend(t.ops);
    }

    fn median(&self) -> Duration {
        percentile(&self.totals, 50)
    }
}

/// The `p`th percentile (nearest rank) of `v`, which must not be empty.
fn percentile(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn bench() -> Result<()> {
    mvnet::require_root("the control-plane bench")?;
    let budget = Budget(Instant::now() + BENCH_TIMEOUT);
    let bin = common::cli::mvnet_bin();
    let release = bin.parent().and_then(Path::file_name) == Some("release".as_ref());
    let (cni_version, cni_supported) = cni_version()?;

    let dir = PathBuf::from(format!("/var/tmp/mvnet-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut lab = Lab::new().context("building the lab")?;
    let _cleanup = Cleanup {
        run_prefix: format!("{}-r", lab.id()),
        dir: dir.clone(),
    };
    let mvnet = Mvnet {
        bin: bin.clone(),
        state_dir: dir.join("mvnet-state"),
    };
    let cni_data = dir.join("cni-host-local");
    let cni = Cni::new(&cni_version, &cni_data);
    let plugin = bin.with_file_name("mvnet-cni");
    ensure!(
        plugin.exists(),
        "{} not found beside mvnet; `cargo xtask bench` builds it",
        plugin.display()
    );
    let standalone = Cni::standalone(
        plugin.clone(),
        &cni_version,
        &dir.join("cni-host-local-mvnet"),
        // One state (and so one classifier on eth0) for every mvnet front-end.
        &mvnet.state_dir,
    );

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let (fstype, source) = filesystem_of(&dir).unwrap_or(("unknown".into(), "?".into()));
    println!("control-plane bench: {OPS} operations per phase, {ROUNDS} rounds, mvnet and CNI alternating, one process per operation");
    println!("kernel {kernel}, {cpus} CPUs ({})", cpu_model());
    println!(
        "mvnet: {} ({})",
        bin.display(),
        if release {
            "release build"
        } else {
            "NOT a release build: numbers are not representative"
        }
    );
    println!(
        "CNI: {CNI_DIR}/macvlan + host-local, cniVersion {cni_version} (plugin supports {})",
        cni_supported.join(", ")
    );
    println!(
        "state: mvnet {} and host-local {} on {fstype} ({source}){}",
        mvnet.state_dir.display(),
        cni_data.display(),
        if matches!(fstype.as_str(), "tmpfs" | "ramfs") {
            ": NOT a real disk, fsync costs nothing here"
        } else {
            ""
        }
    );
    println!(
        "lab: {} (parent eth0 in {})",
        lab.id(),
        lab.host().path().display()
    );

    let host = lab.host().clone();
    let mut m_ns = Vec::with_capacity(OPS);
    let mut c_ns = Vec::with_capacity(OPS);
    for i in 0..OPS {
        m_ns.push(lab.add_container(&format!("m{i}"))?);
        c_ns.push(lab.add_container(&format!("c{i}"))?);
    }
    let paths: Vec<String> = m_ns
        .iter()
        .map(|n| n.path().to_string_lossy().into_owned())
        .collect();
    let run_names: Vec<String> = (0..OPS).map(|i| format!("{}-r{i}", lab.id())).collect();

    let podman = Podman::new(&host, dir.join("podman"), &plugin);
    let podman_state = mvnet.state_dir.clone();
    let ipam = |subnet: &str, name: &str| {
        serde_json::json!({"type": "host-local", "subnet": subnet,
                           "dataDir": dir.join(format!("podman-host-local-{name}"))})
    };
    podman.conflist(
        PODMAN_REF_NET,
        serde_json::json!([
            {"type": "macvlan", "master": "eth0", "ipam": ipam(PODMAN_SUBNET_REF, "ref")}
        ]),
    );
    podman.conflist(
        PODMAN_MV_NET,
        serde_json::json!([
            {"type": "macvlan", "master": "eth0", "ipam": ipam(PODMAN_SUBNET_MV, "mvnet")},
            {"type": "mvnet-cni", "stateDir": podman_state}
        ]),
    );
    println!(
        "Podman: {} (vfs storage, runc), {PODMAN_OPS} runs per round per conflist",
        podman.ok(&["--version"])
    );

    let subnet = format!("--subnet={MVNET_SUBNET}");
    let cmd = mvnet.cmd(&["network", "create", &subnet, "-o", "parent=eth0", MVNET_NET]);
    host.run(|| execute("mvnet network create", cmd, None))??;

    let ctx = Ctx {
        host,
        budget,
        mvnet,
        cni,
        standalone,
        podman,
        podman_state,
        m_ns,
        c_ns,
        paths,
        run_names,
    };
    eprintln!("warm-up: {WARMUP_OPS} operations of each phase (not counted)");
    ctx.round(0, WARMUP_OPS)?;
    let mut series = PHASES.map(Series::new);
    for round in 1..=ROUNDS {
        for (s, t) in series.iter_mut().zip(ctx.round(round, OPS)?) {
            s.push(t);
        }
    }
    // The CNI networks go with a GC that lists no attachment, so that the
    // classifier leaves eth0 with the last network.
    for net in [STANDALONE_NET, PODMAN_MV_NET] {
        let gc = serde_json::json!({"cniVersion": "1.1.0", "name": net,
            "stateDir": ctx.mvnet.state_dir, "cni.dev/valid-attachments": []});
        let mut cmd = Command::new(&plugin);
        cmd.env("CNI_COMMAND", "GC").env("CNI_PATH", CNI_DIR);
        let stdin = serde_json::to_vec(&gc)?;
        ctx.host
            .run(|| execute("mvnet-cni GC", cmd, Some(&stdin)))??;
    }
    let cmd = ctx.mvnet.cmd(&["network", "rm", MVNET_NET]);
    ctx.host.run(|| execute("mvnet network rm", cmd, None))??;
    let pinned = ctx
        .host
        .run(|| mvnet::controller::datapath::pin_dir("eth0").map(|d| d.exists()))??;
    ensure!(
        !pinned,
        "the classifier's pins on the lab's eth0 are still there after the last network went"
    );

    println!();
    print!("{:<34}", format!("phase ({OPS} ops*), seconds"));
    for r in 1..=ROUNDS {
        print!("{:>8}", format!("r{r}"));
    }
    println!(
        "{:>8}{:>8} | per op, ms: {:>6}{:>6}{:>6}",
        "median", "ms/op", "p50", "p90", "max"
    );
    for s in &series {
        print!("{:<34}", s.name);
        for t in &s.totals {
            print!("{:>8.3}", t.as_secs_f64());
        }
        let med = s.median();
        println!(
            "{:>8.3}{:>8.2} |             {:>6.1}{:>6.1}{:>6.1}",
            med.as_secs_f64(),
            ms(med) / s.per_round as f64,
            ms(percentile(&s.ops, 50)),
            ms(percentile(&s.ops, 90)),
            ms(percentile(&s.ops, 100)),
        );
    }
    println!();
    let [m_attach, c_attach, m_detach, c_detach, _, _, s_add, s_del, p_ref, p_mv, pc_add, pc_del, f_make, f_del, ft_make, ft_del] =
        &series;
    // Each row with the kernel floors that bound it (control_plane/floor.rs):
    // mvnet's own endpoints carry tcx source checks, mvnet-cni's devices a
    // cls_bpf filter (no grace period).
    let tcx = "with tcx checks, as mvnet's endpoints";
    for (what, m, c, target, floors) in [
        (
            "attach",
            m_attach,
            c_attach,
            ATTACH_TARGET,
            vec![("make", f_make), (tcx, ft_make)],
        ),
        (
            "detach",
            m_detach,
            c_detach,
            DETACH_TARGET,
            vec![("RTM_DELLINK", f_del), (tcx, ft_del)],
        ),
        (
            "plugin ADD (mvnet-cni standalone vs macvlan, paired)",
            s_add,
            pc_add,
            TARGET_RATIO,
            vec![("make", f_make)],
        ),
        (
            "plugin DEL (mvnet-cni standalone vs macvlan, paired)",
            s_del,
            pc_del,
            TARGET_RATIO,
            vec![("RTM_DELLINK", f_del)],
        ),
    ] {
        let r = ratio(m.median(), c.median());
        let rounds: Vec<String> = m
            .totals
            .iter()
            .zip(&c.totals)
            .map(|(a, b)| format!("{:.2}", ratio(*a, *b)))
            .collect();
        println!(
            "{what}: mvnet/CNI = {r:.2} (medians; per round {}) -> {} (target <= {target:.2})",
            rounds.join(" "),
            if r <= target { "PASS" } else { "FAIL" }
        );
        let bounds: Vec<String> = floors
            .iter()
            .map(|(name, f)| format!("{name} {:.2}", ratio(f.median(), c.median())))
            .collect();
        // The floor of the least the kernel must do (the first): above the
        // target, no tool that returns with the device made or gone meets it.
        let least = ratio(floors[0].1.median(), c.median());
        println!(
            "  kernel floor / CNI: {} -> {}",
            bounds.join(", "),
            if least > target {
                "the floor alone is above the target: unreachable by any tool that returns with the device made (or gone)"
            } else {
                "the target is above the floor"
            }
        );
    }
    let r = ratio(p_mv.median(), p_ref.median());
    let rounds: Vec<String> = p_mv
        .totals
        .iter()
        .zip(&p_ref.totals)
        .map(|(a, b)| format!("{:.2}", ratio(*a, *b)))
        .collect();
    println!(
        "podman run: mvnet-cni chained/macvlan alone = {r:.3} ({:+.1}%; medians; per round {}) -> {} (target <= {PODMAN_TARGET_RATIO:.2})",
        (r - 1.0) * 100.0,
        rounds.join(" "),
        if r <= PODMAN_TARGET_RATIO { "PASS" } else { "FAIL" }
    );
    Ok(())
}

/// The phases of a round, in the order they run and are reported.
const PHASES: [&str; 16] = [
    "mvnet network connect",
    "CNI macvlan ADD",
    "mvnet network disconnect",
    "CNI macvlan DEL",
    "mvnet run --rm -d",
    "mvnet container stop",
    "mvnet-cni ADD (standalone)",
    "mvnet-cni DEL (standalone)",
    "podman run (macvlan)*",
    "podman run (macvlan+mvnet-cni)*",
    "CNI macvlan ADD (paired)",
    "CNI macvlan DEL (paired)",
    "floor: make (in process)",
    "floor: delete (RTM_DELLINK)",
    "floor: make + tcx checks",
    "floor: delete, tcx attached",
];

/// Everything a round needs.
struct Ctx {
    /// The lab's host namespace (with the parent `eth0`).
    host: NetNs,
    budget: Budget,
    mvnet: Mvnet,
    cni: Cni,
    /// mvnet-cni standalone.
    standalone: Cni,
    podman: Podman,
    /// mvnet-cni's state directory in the chained conflist (mvnet's).
    podman_state: PathBuf,
    /// Namespaces for mvnet and for CNI.
    m_ns: Vec<NetNs>,
    c_ns: Vec<NetNs>,
    /// Paths of `m_ns`.
    paths: Vec<String>,
    /// Names of the containers `mvnet run` makes.
    run_names: Vec<String>,
}

impl Ctx {
    /// One round of `n` operations per phase (round 0: the warm-up), in
    /// [`PHASES`] order of the result; it runs mvnet attach/detach, CNI
    /// attach/detach, mvnet run/stop. Ends with everything detached.
    fn round(&self, round: usize, n: usize) -> Result<[Timing; 16]> {
        let tag = if round == 0 {
            "warm-up".to_owned()
        } else {
            format!("round {round}/{ROUNDS}")
        };
        let check = round <= 1;
        let (host, budget, mvnet) = (&self.host, &self.budget, &self.mvnet);

        eprintln!("{tag}: mvnet attach/detach");
        let m_attach = timed(host, budget, n, PHASES[0], |i| {
            let name = format!("m{i}");
            let args = [
                "network",
                "connect",
                "--netns",
                &self.paths[i],
                MVNET_NET,
                &name,
            ];
            (mvnet.cmd(&args), None)
        })?;
        ensure!(
            mvnet.containers_in_state()? == n,
            "mvnet's state file does not list {n} containers after attach"
        );
        if check {
            for ns in [&self.m_ns[0], &self.m_ns[n - 1]] {
                let addr = check_attached(ns, "10.50.")?;
                eprintln!("  checked: eth0 {addr} in {}", ns.path().display());
            }
        }
        let m_detach = timed(host, budget, n, PHASES[2], |i| {
            let name = format!("m{i}");
            (
                mvnet.cmd(&["network", "disconnect", MVNET_NET, &name]),
                None,
            )
        })?;
        check_detached(&self.m_ns[..n], "mvnet")?;
        ensure!(
            mvnet.containers_in_state()? == 0,
            "mvnet's state file still lists containers after detach"
        );

        eprintln!("{tag}: kernel floors (in process)");
        let [f_make, f_del, ft_make, ft_del] = self.floors(n)?;
        check_detached(&self.m_ns[..n], "floor")?;

        eprintln!("{tag}: CNI attach/detach");
        let pid = std::process::id();
        let cid = |i: usize| format!("mvnetbench-{pid}-{round}-{i}");
        let c_attach = timed(host, budget, n, PHASES[1], |i| {
            self.cni.cmd("ADD", &cid(i), &self.c_ns[i])
        })?;
        if check {
            for ns in [&self.c_ns[0], &self.c_ns[n - 1]] {
                let addr = check_attached(ns, "10.60.")?;
                eprintln!("  checked: eth0 {addr} in {}", ns.path().display());
            }
        }
        let c_detach = timed(host, budget, n, PHASES[3], |i| {
            self.cni.cmd("DEL", &cid(i), &self.c_ns[i])
        })?;
        check_detached(&self.c_ns[..n], "CNI")?;

        eprintln!("{tag}: mvnet run/stop");
        let r_run = timed(host, budget, n, PHASES[4], |i| {
            let name = &self.run_names[i];
            let args = ["run", "--rm", "-d", "--network", MVNET_NET, "--name", name];
            (mvnet.cmd(&args), None)
        })?;
        if check {
            let ns = NetNs::named(&self.run_names[0])?;
            let addr = check_attached(&ns, "10.50.")?;
            eprintln!("  checked: eth0 {addr} in {}", ns.path().display());
        }
        let r_stop = timed(host, budget, n, PHASES[5], |i| {
            (mvnet.cmd(&["container", "stop", &self.run_names[i]]), None)
        })?;
        let left: Vec<String> = netns::list()
            .into_iter()
            .filter(|name| self.run_names.contains(name))
            .collect();
        ensure!(
            left.is_empty(),
            "mvnet container stop left namespaces: {}",
            left.join(" ")
        );
        ensure!(
            mvnet.containers_in_state()? == 0,
            "mvnet's state file still lists containers after stop"
        );

        eprintln!("{tag}: mvnet-cni (standalone) ADD/DEL, paired with the reference plugin's");
        let [s_add, s_del, pc_add, pc_del] = self.paired(round, n, check)?;
        check_detached(&self.c_ns[..n], "mvnet-cni")?;

        eprintln!("{tag}: podman run, macvlan alone and with mvnet-cni chained");
        let p = if round == 0 {
            PODMAN_WARMUP_OPS
        } else {
            PODMAN_OPS
        };
        let run = |net: &'static str| {
            move |_: usize| {
                let args = ["run", "--rm", "--network", net, podman::IMAGE, "true"];
                (self.podman.command(&args), None)
            }
        };
        let p_ref = timed(host, budget, p, PHASES[8], run(PODMAN_REF_NET))?;
        let p_mv = timed(host, budget, p, PHASES[9], run(PODMAN_MV_NET))?;
        let left = self.podman.ok(&["ps", "-a", "-q"]);
        ensure!(left.is_empty(), "podman run --rm left containers: {left}");
        let state = mvnet::store::peek(&self.podman_state)?;
        ensure!(
            state.containers.is_empty(),
            "mvnet-cni's state still lists containers after podman run --rm"
        );
        Ok([
            m_attach, c_attach, m_detach, c_detach, r_run, r_stop, s_add, s_del, p_ref, p_mv,
            pc_add, pc_del, f_make, f_del, ft_make, ft_del,
        ])
    }

    /// The kernel floors (control_plane/floor.rs) in the namespaces
    /// `mI`: `n` devices made, then deleted; then the same with mvnet's tcx
    /// source checks. Returns make, delete, make + tcx, delete with tcx.
    fn floors(&self, n: usize) -> Result<[Timing; 4]> {
        let (budget, m_ns) = (&self.budget, &self.m_ns);
        self.host.run(|| -> Result<[Timing; 4]> {
            let parent = floor::parent_index()?;
            let dir = mvnet::controller::datapath::pin_dir("eth0")?;
            let mut ops: [Vec<Duration>; 4] = Default::default();
            for (k, tcx) in [(0, false), (2, true)] {
                for (i, ns) in m_ns[..n].iter().enumerate() {
                    budget.check()?;
                    let addr =
                        std::net::Ipv4Addr::new(10, 55, (i / 250) as u8, (i % 250 + 2) as u8);
                    // Any slot: nothing sends, and the table has no entry
                    // for the device.
                    let checks = tcx.then_some((dir.as_path(), i as u32));
                    ops[k].push(floor::make(ns, parent, addr, checks)?);
                }
                for ns in &m_ns[..n] {
                    budget.check()?;
                    ops[k + 1].push(floor::delete(ns)?);
                }
            }
            Ok(ops.map(|ops| Timing {
                total: ops.iter().sum(),
                ops,
            }))
        })?
    }

    /// mvnet-cni standalone against the reference plugin, side by side: in
    /// each namespace `cI` in turn, the reference plugin's ADD and DEL and
    /// mvnet-cni's ADD and DEL (which plugin goes first alternates), so that
    /// both see the same load, however it drifts during the round. Returns
    /// mvnet-cni's ADD and DEL and the reference plugin's ADD and DEL; a
    /// phase's total is the sum of its operations.
    fn paired(&self, round: usize, n: usize, check: bool) -> Result<[Timing; 4]> {
        let pid = std::process::id();
        let cid = |i: usize| format!("mvnetbench-{pid}-{round}-p{i}");
        let mut ops: [Vec<Duration>; 4] = Default::default();
        for i in 0..n {
            let ns = &self.c_ns[i];
            let mut pair = [(&self.standalone, 0, "10.70."), (&self.cni, 2, "10.60.")];
            if i % 2 == 1 {
                pair.reverse();
            }
            for (plugin, at, prefix) in pair {
                for (command, k) in [("ADD", at), ("DEL", at + 1)] {
                    let what = [PHASES[6], PHASES[7], PHASES[10], PHASES[11]][k];
                    let t = timed(&self.host, &self.budget, 1, what, |_| {
                        plugin.cmd(command, &cid(i), ns)
                    })?;
                    ops[k].extend(t.ops);
                    if command == "ADD" && check && (i == 0 || i == n - 1) {
                        let addr = check_attached(ns, prefix)?;
                        eprintln!("  checked: eth0 {addr} in {}", ns.path().display());
                    }
                }
            }
        }
        Ok(ops.map(|ops| Timing {
            total: ops.iter().sum(),
            ops,
        }))
    }
}
