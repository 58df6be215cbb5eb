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
            late = Some(diagnose());
            let _ = child.kill();
            break child.wait().expect("waiting for a killed child");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = err.join().unwrap_or_default();
    if let Some(diagnosis) = late {
        stderr.extend_from_slice(
            format!(
                "\n`{what}` did not finish within {} s and was killed\n{diagnosis}",
                wait.as_secs()
            )
            .as_bytes(),
        );
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

/// The header and the lines of `ps` whose command line contains one of
/// `names`, with each process's state, run time and kernel wait channel.
pub fn processes(names: &[&str]) -> String {
    let ps = Command::new("ps")
        .args(["-eo", "pid,ppid,stat,etimes,time,wchan:32,args"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    ps.lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || names.iter().any(|n| l.contains(n)))
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}
