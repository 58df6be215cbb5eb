//! Driving the kernel's packet generator through `/proc/net/pktgen`.
//!
//! pktgen is per network namespace: the files seen through
//! `/proc/thread-self/net/pktgen` belong to the calling thread's namespace,
//! so every step runs on a thread inside the sending device's namespace.
//! One pktgen "device" per flow (`wire0@0`, `wire0@1`, ...), spread over
//! the kernel threads `kpktgend_0..N-1`; each has its own count, size,
//! destination MAC, VLAN tag and inter-frame delay. Writing `start` to
//! `pgctrl` blocks until every device has sent its count; a deadline
//! writes `stop` from a second thread.
//!
//! A run takes pktgen over in that namespace: it starts by removing every
//! pktgen device there and ends by removing its own. Removal is
//! asynchronous in the kernel: `rem_device_all` (and `pgctrl reset`) only
//! sets a flag that the kernel thread acts on when it next wakes, up to
//! 100 ms later and longer on a loaded machine. A device added before then
//! is removed with the old ones, so every removal here waits until the
//! thread files list no device, and a device file that vanishes during
//! setup makes the whole setup start again.
//! pktgen has no flow control of its own: where it outruns the receiver,
//! the frames the kernel drops show in the report's drop counters; `--rate`
//! paces it.
use std::{
    fs,
    io::{Read as _, Seek as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::{fallback::Sent, mix::Flow};
use mvnet::netns::NetNs;

fn dir() -> PathBuf {
    PathBuf::from("/proc/thread-self/net/pktgen")
}

/// Whether pktgen is there in `ns` (loading the module if it is not yet):
/// `Err` says why not.
pub fn probe(ns: Option<&NetNs>) -> Result<(), String> {
    mvnet::netns::run_in(ns, || {
        if dir().join("pgctrl").exists() {
            return Ok(());
        }
        let modprobe = Command::new("modprobe").arg("pktgen").output();
        if dir().join("pgctrl").exists() {
            return Ok(());
        }
        let why = match modprobe {
            Ok(o) if o.status.success() => {
                "`modprobe pktgen` succeeded but /proc/net/pktgen did not appear".to_owned()
            }
            Ok(o) => format!(
                "/proc/net/pktgen is missing and `modprobe pktgen` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("/proc/net/pktgen is missing and modprobe could not run: {e}"),
        };
        Err(why)
    })
    .map_err(|e| e.to_string())?
}

fn write(path: &Path, line: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // pgctrl drops the last byte of a write (meant to be the newline).
    f.write_all(format!("{line}\n").as_bytes())
        .with_context(|| format!("pktgen refused `{line}` in {}", path.display()))
}

/// One pktgen device's counters, from its proc file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceResult {
    /// Frames the device driver accepted.
    pub sent: u64,
    /// Frames the driver refused (dropped).
    pub errors: u64,
}

/// Parses the `pkts-sofar: N  errors: E` line of a pktgen device file.
pub fn parse_device(text: &str) -> Option<DeviceResult> {
    let line = text.lines().find(|l| l.contains("pkts-sofar:"))?;
    let mut words = line.split_whitespace();
    let mut r = DeviceResult::default();
    while let Some(w) = words.next() {
        match w {
            "pkts-sofar:" => r.sent = words.next()?.parse().ok()?,
            "errors:" => r.errors = words.next()?.parse().ok()?,
            _ => {}
        }
    }
    Some(r)
}

/// pktgen's settings for one run.
pub struct Plan<'a> {
    pub device: &'a str,
    pub flows: &'a [Flow],
    /// Frame length without FCS (pktgen's `pkt_size`).
    pub size: usize,
    /// Frames per second over all flows (0: as fast as pktgen goes).
    pub rate: u64,
    /// Kernel threads to spread the flows over.
    pub threads: usize,
    pub deadline: Duration,
}

/// Sends `plan` with pktgen in `ns`. Returns frames sent per flow and the
/// driver's refusals (pktgen `errors`) summed over flows.
pub fn send(ns: Option<&NetNs>, plan: &Plan<'_>) -> Result<(Sent, u64)> {
    mvnet::netns::run_in(ns, || run_here(plan))?
}

/// Whether `e` is a pktgen device file that was not there.
fn vanished(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    })
}

/// Adds one pktgen device per flow and sets it up; returns their files.
fn add_devices(d: &Path, plan: &Plan<'_>, threads: usize) -> Result<Vec<PathBuf>> {
    let flows = plan.flows.len() as u64;
    // Each device paces itself: the total rate split evenly over the flows.
    let delay_ns = (1_000_000_000u64 * flows)
        .checked_div(plan.rate)
        .unwrap_or(0);
    let mut names = Vec::new();
    for (i, flow) in plan.flows.iter().enumerate() {
        let thread = d.join(format!("kpktgend_{}", i % threads));
        let name = format!("{}@{i}", plan.device);
        write(&thread, &format!("add_device {name}"))
            .with_context(|| format!("adding {} to pktgen", plan.device))?;
        let dev = d.join(&name);
        let mut settings = vec![
            format!("count {}", flow.count),
            "clone_skb 0".to_owned(),
            format!("pkt_size {}", plan.size.max(60)),
            format!("delay {delay_ns}"),
            format!("dst_mac {}", flow.dst),
            "dst 192.0.2.2".to_owned(),
            "src_min 192.0.2.1".to_owned(),
            "src_max 192.0.2.1".to_owned(),
            "udp_src_min 40000".to_owned(),
            "udp_src_max 40000".to_owned(),
            "udp_dst_min 9".to_owned(),
            "udp_dst_max 9".to_owned(),
        ];
        if flow.vlan != 0 {
            settings.push(format!("vlan_id {}", flow.vlan));
        }
        for s in settings {
            write(&dev, &s)?;
        }
        names.push(dev);
    }
    // Every device must still be there: a late removal shows here.
    for dev in &names {
        fs::metadata(dev).with_context(|| format!("opening {}", dev.display()))?;
    }
    Ok(names)
}

/// The devices a pktgen thread file lists (`Running: a b` / `Stopped: c`).
fn thread_devices(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("Running:")
                .or_else(|| l.strip_prefix("Stopped:"))
        })
        .flat_map(|rest| rest.split_whitespace().map(str::to_owned))
        .collect()
}

/// Every `kpktgend_N` file in this namespace's pktgen directory.
fn thread_files(d: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in fs::read_dir(d).with_context(|| format!("listing {}", d.display()))? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with("kpktgend_") {
            files.push(e.path());
        }
    }
    Ok(files)
}

/// Removes every pktgen device in this namespace and waits until the
/// kernel threads have done it (see the module comment).
fn remove_all_devices(d: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for thread in thread_files(d)? {
        let listed = |thread: &Path| -> Result<Vec<String>> {
            let text = fs::read_to_string(thread)
                .with_context(|| format!("reading {}", thread.display()))?;
            Ok(thread_devices(&text))
        };
        if listed(&thread)?.is_empty() {
            continue;
        }
        write(&thread, "rem_device_all")?;
        loop {
            let left = listed(&thread)?;
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "pktgen did not remove its devices {} from {} within 20 s",
                    left.join(" "),
                    thread.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn run_here(plan: &Plan<'_>) -> Result<(Sent, u64)> {
    let d = dir();
    let threads = plan.threads.max(1);
    for t in 0..threads {
        if !d.join(format!("kpktgend_{t}")).exists() {
            bail!(
                "pktgen has no thread kpktgend_{t} (one per CPU); use --threads {} or fewer",
                t.max(1)
            );
        }
    }
    let mut attempt = 0;
    let names = loop {
        remove_all_devices(&d)?;
        match add_devices(&d, plan, threads) {
            Ok(names) => break names,
            // A removal still pending in a kernel thread took a device
            // we had just added: clear again and set up from the start.
            Err(e) if attempt < 3 && vanished(&e) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    };
    // `start` blocks until all devices are done; `stop` ends it early.
    let ctrl = d.join("pgctrl");
    let mut stop = fs::OpenOptions::new().write(true).open(&ctrl)?;
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let started = std::thread::scope(|scope| -> Result<bool> {
        // pgctrl acts on the writer's namespace: a thread spawned here
        // inherits this thread's, the sending device's.
        let mut start_file = fs::OpenOptions::new().write(true).open(&ctrl)?;
        scope.spawn(move || {
            let r = start_file.write_all(b"start\n");
            let _ = tx.send(r);
        });
        match rx.recv_timeout(plan.deadline) {
            Ok(r) => r.context("pktgen start").map(|()| false),
            Err(_) => {
                let _ = stop.write_all(b"stop\n");
                let _ = rx.recv_timeout(Duration::from_secs(10));
                Ok(true)
            }
        }
    })?;
    let elapsed = start.elapsed();
    let mut sent = Sent {
        per_flow: Vec::new(),
        elapsed,
        timed_out: started,
        ..Sent::default()
    };
    let mut errors = 0;
    for dev in &names {
        let mut text = String::new();
        let mut f = fs::File::open(dev)?;
        f.rewind()?;
        f.read_to_string(&mut text)?;
        let r = parse_device(&text)
            .ok_or_else(|| anyhow!("no pkts-sofar line in {}:\n{text}", dev.display()))?;
        sent.per_flow.push(r.sent);
        errors += r.errors;
    }
    remove_all_devices(&d)?;
    Ok((sent, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_device_file() {
        let text = "Params: count 1000  min_pkt_size: 60  max_pkt_size: 60\n\
             \x20    frags: 0  delay: 100000  clone_skb: 0  ifname: wire0@0\n\
             Current:\n\
             \x20    pkts-sofar: 998  errors: 2\n\
             \x20    started: 1us  stopped: 2us idle: 0us\n\
             Result: OK: 1234(c1200+d34) usec, 998 (60byte,0frags)\n\
             \x20 810pps 0Mb/sec (388800bps) errors: 2\n";
        assert_eq!(
            parse_device(text),
            Some(DeviceResult {
                sent: 998,
                errors: 2
            })
        );
        assert_eq!(parse_device("Result: Idle\n"), None);
    }

    #[test]
    fn lists_a_threads_devices() {
        let text = "Running: wire0@0 \nStopped: wire0@2 wire0@4 \nResult: OK: add_device=wire0@4\n";
        assert_eq!(thread_devices(text), ["wire0@0", "wire0@2", "wire0@4"]);
        assert!(thread_devices("Running: \nStopped: \nResult: NA\n").is_empty());
    }
}
