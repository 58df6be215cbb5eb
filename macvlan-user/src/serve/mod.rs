//! `mvnet serve`: a Prometheus exporter. Every scrape of `/metrics` reads
//! every pinned map of every root device, and the state file (without the
//! state lock) when it changed since the last scrape, so the exporter starts and stops independently of the
//! datapath and shows networks created after it started. The classifier's
//! anomaly events (aya-log) are streamed to its standard error.
pub mod http;
pub mod metrics;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{datapath::monitor, model::State, stats, store};
use metrics::Format;

/// The default listen address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9435";
/// Connections served at once; more get 503.
const MAX_CONNECTIONS: usize = 16;

pub struct ServeOptions {
    pub state_dir: PathBuf,
    pub addr: SocketAddr,
    /// Stream the classifier's anomaly events to standard error.
    pub events: bool,
}

/// The state file as last parsed, and which file that was. Every save
/// replaces the file (a rename), so a new inode, size or mtime means a new
/// state; an unchanged file is not parsed again (at 4096 endpoints parsing
/// costs more than reading every map).
#[derive(Default)]
pub struct StateCache {
    seen: Mutex<Option<(FileKey, Arc<State>)>>,
}

type FileKey = (u64, u64, i64, i64);

impl StateCache {
    /// The current state of `state_dir`.
    pub fn get(&self, state_dir: &Path) -> Result<Arc<State>> {
        // Looked at before reading: a file replaced meanwhile has another
        // key next time and is read again then.
        let key = std::fs::metadata(state_dir.join(store::STATE_FILE))
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(key), Some((k, state))) = (key, seen.as_ref()) {
            if *k == key {
                return Ok(state.clone());
            }
        }
        let state = Arc::new(store::peek(state_dir)?);
        *seen = key.map(|k| (k, state.clone()));
        Ok(state)
    }
}

/// Reads every counter and encodes it: the body of one scrape.
pub fn scrape(state_dir: &Path, cache: &StateCache, format: Format) -> Result<String> {
    let started = Instant::now();
    let state = cache.get(state_dir)?;
    let snap = stats::collect(&state, None)?;
    drop(state);
    let read = started.elapsed().as_secs_f64();
    metrics::encode(snap, read, format).context("encoding the metrics")
}

const INDEX: &str = "<html><head><title>mvnet exporter</title></head><body>\
<h1>mvnet exporter</h1><p><a href=\"/metrics\">/metrics</a></p></body></html>\n";

fn handle(mut stream: TcpStream, state_dir: &Path, cache: &StateCache) {
    let req = match http::read_request(&mut stream) {
        Ok(Some(r)) => r,
        Ok(None) => {
            let _ = http::respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                b"bad request\n",
                false,
            );
            return;
        }
        Err(_) => return,
    };
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        let _ = http::respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"only GET and HEAD\n",
            false,
        );
        return;
    }
    let _ = match req.path.as_str() {
        "/metrics" => {
            let format = Format::for_accept(req.accept.as_deref());
            match scrape(state_dir, cache, format) {
                Ok(body) => http::respond(
                    &mut stream,
                    "200 OK",
                    format.content_type(),
                    body.as_bytes(),
                    head_only,
                ),
                Err(e) => {
                    eprintln!("mvnet serve: scrape failed: {e:#}");
                    http::respond(
                        &mut stream,
                        "500 Internal Server Error",
                        "text/plain",
                        format!("mvnet: {e:#}\n").as_bytes(),
                        head_only,
                    )
                }
            }
        }
        "/" => http::respond(
            &mut stream,
            "200 OK",
            "text/html",
            INDEX.as_bytes(),
            head_only,
        ),
        _ => http::respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"not found; metrics are at /metrics\n",
            head_only,
        ),
    };
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
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }

    pub fn trim() {
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(not(target_env = "gnu"))]
mod footprint {
    pub fn init() {}
    pub fn trim() {}
}

/// Serves until killed.
pub fn run(opts: ServeOptions) -> Result<()> {
    footprint::init();
    let listener = TcpListener::bind(opts.addr).with_context(|| {
        format!(
            "cannot listen on {}; pick another address with --metrics-addr",
            opts.addr
        )
    })?;
    let addr = listener.local_addr()?;
    eprintln!("mvnet serve: metrics at http://{addr}/metrics");
    if !addr.ip().is_loopback() {
        eprintln!(
            "mvnet serve: warning: {addr} is not a loopback address; the metrics (MACs, IPs, \
             container names) are readable from other hosts"
        );
    }
    if opts.events {
        std::thread::Builder::new()
            .name("events".into())
            .spawn(stream_events)
            .context("starting the event thread")?;
    }
    let busy = Arc::new(AtomicUsize::new(0));
    let state_dir: Arc<Path> = opts.state_dir.into();
    let cache = Arc::new(StateCache::default());
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                eprintln!("mvnet serve: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = http::respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                b"too many scrapes at once\n",
                false,
            );
            continue;
        }
        let (done, state_dir, cache) = (busy.clone(), state_dir.clone(), cache.clone());
        let spawned = std::thread::Builder::new()
            .name("scrape".into())
            .stack_size(1024 * 1024)
            .spawn(move || {
                handle(stream, &state_dir, &cache);
                if done.fetch_sub(1, Ordering::AcqRel) == 1 {
                    footprint::trim();
                }
            });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Ordering::AcqRel);
            eprintln!("mvnet serve: cannot start a thread for a connection: {e}");
        }
    }
    Ok(())
}
