//! `mvnet serve`: a Prometheus exporter. Every scrape of `/metrics` reads
//! every pinned map of every root device, and the state file (without the
//! state lock) when it changed since the last scrape, so the exporter starts and stops independently of the
//! datapath and shows networks created after it started. The classifier's
//! anomaly events (aya-log) are streamed to its standard error.
//!
//! [`http`] is the server (hyper on tokio, deadlines and limits), [`addr`]
//! parses `--metrics-addr`, [`metrics`] encodes a snapshot, [`body`]
//! streams the encoding to the client.
pub mod addr;
pub mod body;
pub mod http;
pub mod metrics;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    datapath::monitor,
    stats::{RosterCache, Snapshot},
    store,
};

/// The default listen address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9435";
/// Connections held open at once; past that, new ones are closed. Idle and
/// slow ones are cut off after [`http::HEADER_TIMEOUT`], so only this many
/// clients stalling at the same moment can keep a scraper out.
pub const MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept for everything but connections (the listener,
/// pinned maps, the event stream's perf buffers, the state file).
const RESERVED_FDS: u64 = 128;

pub struct ServeOptions {
    pub state_dir: PathBuf,
    pub addr: SocketAddr,
    /// Stream the classifier's anomaly events to standard error.
    pub events: bool,
}

/// What every scrape shares: where the state is, its last parse, and the
/// exporter's own counters.
pub struct Exporter {
    pub state_dir: PathBuf,
    cache: RosterCache,
    /// Scrapes that failed since the exporter started.
    pub scrape_errors: AtomicU64,
    /// Scrapes being encoded right now.
    in_flight: AtomicUsize,
}

impl Exporter {
    pub fn new(state_dir: PathBuf) -> Exporter {
        Exporter {
            state_dir,
            cache: RosterCache::default(),
            scrape_errors: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Reads every counter (the roster of the state, every pinned map):
    /// the part of a scrape whose failure is answered 500.
    pub fn read(&self) -> Result<(Snapshot, metrics::ScrapeInfo)> {
        let started = Instant::now();
        let snap = self
            .cache
            .get(&self.state_dir, || {
                Ok((store::peek(&self.state_dir)?, None))
            })?
            .read()?;
        let info = metrics::ScrapeInfo {
            read_secs: started.elapsed().as_secs_f64(),
            scrape_errors: self.scrape_errors.load(Ordering::Relaxed),
        };
        Ok((snap, info))
    }

    /// Runs `scrape` as one scrape: the heap it used is handed back to the
    /// kernel when the last scrape running ends.
    pub fn scraping<T>(&self, scrape: impl FnOnce() -> T) -> T {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let out = scrape();
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            footprint::trim();
        }
        out
    }
}

/// Streams anomaly events forever, picking up roots attached later;
/// restarts the stream after an error.
fn stream_events() {
    loop {
        if let Err(e) = monitor::run_to(None, monitor::Sink::Stderr) {
            eprintln!("mvnet serve: event stream: {e}; retrying in 5 s");
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// Keeps the exporter small between scrapes: one malloc arena for all
/// threads (glibc otherwise gives each scrape thread one of its own), and
/// the megabytes of a scrape handed back to the kernel once it is answered.
#[cfg(target_env = "gnu")]
mod footprint {
    pub fn init() {
        crate::sys::process::malloc_single_arena();
    }

    pub fn trim() {
        crate::sys::process::malloc_trim();
    }
}

#[cfg(not(target_env = "gnu"))]
mod footprint {
    pub fn init() {}
    pub fn trim() {}
}

/// Raises the soft limit on open files to the hard limit, and returns how
/// many connections fit under it ([`MAX_CONNECTIONS`] at most).
fn connection_limit() -> usize {
    let soft = crate::sys::process::raise_nofile_limit();
    let usable = soft.saturating_sub(RESERVED_FDS).max(16);
    usize::try_from(usable).map_or(MAX_CONNECTIONS, |u| u.min(MAX_CONNECTIONS))
}

/// Serves until killed.
pub fn run(opts: ServeOptions) -> Result<()> {
    footprint::init();
    let limits = http::Limits {
        connections: connection_limit(),
        header_timeout: http::HEADER_TIMEOUT,
    };
    // One thread for every connection (they only wait), a small blocking
    // pool for the scrapes themselves.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(http::SCRAPE_THREADS)
        .thread_name("scrape")
        .thread_stack_size(1024 * 1024)
        .build()
        .context("starting the exporter's runtime")?;
    let listener = rt
        .block_on(async { tokio::net::TcpListener::bind(opts.addr).await })
        .with_context(|| {
            format!(
                "cannot listen on {}; pick another address with --metrics-addr",
                opts.addr
            )
        })?;
    let addr = listener.local_addr()?;
    eprintln!("mvnet serve: metrics at http://{addr}/metrics");
    if !addr.ip().is_loopback() {
        eprintln!(
            "mvnet serve: warning: {addr} is not a loopback address; the metrics (MACs, \
             container and network names) are readable from other hosts"
        );
    }
    if opts.events {
        std::thread::Builder::new()
            .name("events".into())
            .spawn(stream_events)
            .context("starting the event thread")?;
    }
    let exporter = Arc::new(Exporter::new(opts.state_dir));
    rt.block_on(http::serve(listener, exporter, limits))
}
