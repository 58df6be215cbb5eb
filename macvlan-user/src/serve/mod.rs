//! `mvnet serve`: a Prometheus exporter. Every scrape of `/metrics` reads
//! the state file (without the state lock) and every pinned map of every
//! root device, so the exporter starts and stops independently of the
//! datapath and shows networks created after it started. The classifier's
//! anomaly events (aya-log) are streamed to its standard error.
pub mod http;
pub mod metrics;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{datapath::monitor, stats, store};
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

/// Reads everything and encodes it: the body of one scrape.
pub fn scrape(state_dir: &Path, format: Format) -> Result<String> {
    let started = Instant::now();
    let state = store::peek(state_dir)?;
    let snap = stats::collect(&state, None)?;
    let read = started.elapsed().as_secs_f64();
    metrics::encode(snap, read, format).context("encoding the metrics")
}

const INDEX: &str = "<html><head><title>mvnet exporter</title></head><body>\
<h1>mvnet exporter</h1><p><a href=\"/metrics\">/metrics</a></p></body></html>\n";

fn handle(mut stream: TcpStream, state_dir: &Path) {
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
            match scrape(state_dir, format) {
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

/// Serves until killed.
pub fn run(opts: ServeOptions) -> Result<()> {
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
    for conn in listener.incoming() {
        let Ok(mut stream) = conn else { continue };
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
        let (done, state_dir) = (busy.clone(), state_dir.clone());
        let spawned = std::thread::Builder::new()
            .name("scrape".into())
            .stack_size(1024 * 1024)
            .spawn(move || {
                handle(stream, &state_dir);
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Ordering::AcqRel);
            eprintln!("mvnet serve: cannot start a thread for a connection: {e}");
        }
    }
    Ok(())
}
