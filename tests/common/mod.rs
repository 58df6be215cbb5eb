#![allow(dead_code)]
//! Shared by the host and VM test binaries.

pub mod cli;
pub mod cni;
pub mod docker;
pub mod http;
pub mod podman;

use std::{
    io::Read,
    process::{Command, Output, Stdio},
    sync::OnceLock,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use mvnet::netns;

/// Fails the test with a clear message unless root: these tests build real
/// namespaces, links and BPF programs, and must not pass by skipping.
pub fn require_root() {
    if let Err(e) = mvnet::require_root("the integration tests") {
        panic!("{e}; run `cargo xtask test` as root");
    }
}

/// Lab namespaces of this process still present.
pub fn leftover_namespaces() -> Vec<String> {
    let mine = format!("{}{}-", mvnet_lab::lab::PREFIX, std::process::id());
    netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect()
}

/// The `p`-quantile of `v` (0.0 = min, 1.0 = max), the nearest sample.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The points `k` of `n` occurrences to try: all up to `max`, else `max`
/// spread evenly, the first and the last included.
pub fn spread(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (1..=n).collect();
    }
    let mut v: Vec<usize> = (0..max).map(|i| 1 + i * (n - 1) / (max - 1)).collect();
    v.dedup();
    v
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// Runs `cmd` (stdin from /dev/null, output captured) and waits at most
/// `wait`. A command still running then is killed, and its output ends
/// with a line saying so and `diagnose()`'s account of what the machine
/// was doing: a hang fails the test with evidence instead of stopping the
/// suite.
pub fn output_within(
    cmd: &mut Command,
    wait: Duration,
    what: &str,
    diagnose: impl FnOnce() -> String,
) -> Output {
    let started = Instant::now();
    trace(&format!("start {what}"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{what}`: {e}"));
    // Both pipes are read on threads, so that a chatty command cannot
    // block on a full pipe while we wait for it.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + wait;
    let mut late = None;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() > deadline {
            KILLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            late = Some(diagnose());
            let _ = child.kill();
            break child.wait().expect("waiting for a killed child");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = err.join().unwrap_or_default();
    trace(&format!(
        "done  {what}: {} in {:.1} s",
        status,
        started.elapsed().as_secs_f64()
    ));
    if let Some(diagnosis) = late {
        let told = format!(
            "`{what}` did not finish within {} s and was killed\n{diagnosis}",
            wait.as_secs()
        );
        // Now, not only in the caller's report: a caller that goes on to
        // the next call may itself be stopped before it reports.
        eprintln!("{told}");
        stderr.extend_from_slice(format!("\n{told}").as_bytes());
    }
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr,
    }
}

/// Reads a child's pipe to its end on a thread.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// `ps`'s listing of every process: pid, parent, state, run time, CPU
/// time, kernel wait channel and command line, with its header.
fn ps() -> String {
    Command::new("ps")
        .args(["-eo", "pid,ppid,stat,etimes,time,wchan:32,args"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The header and the lines of `ps` whose command line contains one of
/// `names`, with each process's state, run time and kernel wait channel.
pub fn processes(names: &[&str]) -> String {
    ps().lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || names.iter().any(|n| l.contains(n)))
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How many commands [`output_within`] has killed for overrunning.
static KILLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many commands this process has killed for not finishing in time.
pub fn killed_calls() -> usize {
    KILLED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Whether commands run through [`output_within`] are traced on stderr:
/// in the VM (where a run is long and a hang must show where it is), or
/// with MVNET_TRACE set.
pub fn tracing() -> bool {
    std::env::var_os("MVNET_IN_VM").is_some() || std::env::var_os("MVNET_TRACE").is_some()
}

/// When this process first traced (or asked for the time).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Prints `[+SECONDS] line` on stderr when [`tracing`].
pub fn trace(line: &str) {
    if tracing() {
        eprintln!("[+{:.1}s] {line}", epoch().elapsed().as_secs_f64());
    }
}

/// What the kernel says about a machine that stopped making progress:
/// every process's state and wait channel, the kernel stacks of the tasks
/// in uninterruptible sleep, and the end of the kernel log (where the
/// hung-task detector reports).
pub fn kernel_diagnosis() -> String {
    let ps = ps();
    // Command lines cut at 160 characters: enough to tell the processes
    // apart, without every environment-laden command line in full.
    let ps: String = ps
        .lines()
        .map(|l| format!("{}\n", l.chars().take(160).collect::<String>()))
        .collect();
    let mut blocked = String::new();
    for line in ps.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(pid), Some(_), Some(stat)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if stat.starts_with('D') {
            let stack = std::fs::read_to_string(format!("/proc/{pid}/stack"))
                .unwrap_or_else(|e| format!("(no stack: {e})\n"));
            blocked += &format!("{line}\n{stack}");
        }
    }
    if blocked.is_empty() {
        blocked = "(none)\n".into();
    }
    let dmesg = Command::new("dmesg")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!(
        "every process:\n{ps}\ntasks in uninterruptible sleep and their kernel stacks:\n{blocked}\
         the end of the kernel log:\n{}",
        tail(&dmesg, 60)
    )
}
