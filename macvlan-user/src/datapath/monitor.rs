//! `mvnet monitor`: streams the classifier's anomaly events (aya-log
//! records: unknown MAC, VLAN mismatch, spoofed source) from every root
//! device of this namespace, one line each.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::programs::ProgramInfo;
use aya_log::EbpfLogger;

use super::{
    pinned::{self, PIN_ROOT, PROG_TC_INGRESS, PROG_XDP},
    DatapathError,
};

/// Where the event lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// `mvnet monitor`: the events are its output.
    Stdout,
    /// `mvnet serve`: the events go to its log.
    Stderr,
}

/// Prints each record as `<time> <root> <level> <message>`.
struct LinePrinter {
    root: String,
    sink: Sink,
}

impl log::Log for LinePrinter {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!(
            "{} {} {} {}\n",
            crate::model::now_rfc3339(),
            self.root,
            record.level().as_str().to_lowercase(),
            record.args()
        );
        let _ = match self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|_| out.flush())
            }
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}

/// The pin directories of this namespace's roots, by root name.
fn roots() -> Result<BTreeMap<String, PathBuf>, DatapathError> {
    let ino = pinned::netns_inode(None)?;
    let prefix = format!("{ino}-");
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(PIN_ROOT) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(root) = name.strip_prefix(&prefix) {
                out.insert(root.to_owned(), e.path());
            }
        }
    }
    Ok(out)
}

/// Streams events until `duration` passes (forever without one). Roots
/// attached later are picked up within a second.
pub fn run(duration: Option<Duration>) -> Result<(), DatapathError> {
    run_to(duration, Sink::Stdout)
}

/// As [`run`], writing the events to `sink`.
pub fn run_to(duration: Option<Duration>, sink: Sink) -> Result<(), DatapathError> {
    let start = Instant::now();
    let mut loggers: BTreeMap<String, EbpfLogger<LinePrinter>> = BTreeMap::new();
    let mut last_scan: Option<Instant> = None;
    loop {
        if last_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            for (root, dir) in roots()? {
                if loggers.contains_key(&root) {
                    continue;
                }
                // The XDP program, or on TC alone the TC ingress program:
                // either holds the log ring.
                let Ok(info) = ProgramInfo::from_pin(dir.join(PROG_XDP))
                    .or_else(|_| ProgramInfo::from_pin(dir.join(PROG_TC_INGRESS)))
                else {
                    continue;
                };
                match EbpfLogger::init_from_id_with_logger(
                    info.id(),
                    LinePrinter {
                        root: root.clone(),
                        sink,
                    },
                ) {
                    Ok(l) => {
                        eprintln!("monitoring the classifier on {root}");
                        loggers.insert(root, l);
                    }
                    Err(e) => eprintln!("mvnet: cannot read the events of {root}: {e}"),
                }
            }
            // Roots whose classifier went away.
            let live = roots()?;
            loggers.retain(|root, _| live.contains_key(root));
            last_scan = Some(Instant::now());
        }
        for l in loggers.values_mut() {
            l.flush();
        }
        if duration.is_some_and(|d| start.elapsed() >= d) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
