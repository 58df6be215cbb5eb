//! The exporter's HTTP/1.1 server, on hyper and tokio: one task per
//! connection, with deadlines a slow or silent client cannot stretch.
//!
//! * A request head must arrive whole within [`HEADER_TIMEOUT`] of the
//!   connection opening, or of the previous response (keep-alive): a
//!   slow-loris client (1 byte every few seconds) or an idle one is cut off
//!   then, and holds nothing but its socket meanwhile.
//! * At most [`Limits::connections`] connections are open at once; past
//!   that, new ones are closed at once (counted, logged once a minute).
//! * A connection is asked to close after [`MAX_CONNECTION_AGE`] (after the
//!   response in flight), and dropped [`CLOSE_GRACE`] later if the client
//!   does not read it.
//! * Scrapes run on tokio's blocking pool, at most [`SCRAPE_THREADS`] at once
//!   (their memory is what the RSS target counts); each must finish within
//!   [`SCRAPE_TIMEOUT`], its body streamed to the client included (see
//!   [`super::body`]).
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::{
    body::{Body, Sink},
    metrics::{self, Format},
    Exporter,
};

/// Longest a client may take to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a scrape (reading the state and every map, encoding) may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Age at which a connection is asked to close.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
/// How long a closing connection may take to send its last response.
pub const CLOSE_GRACE: Duration = Duration::from_secs(30);
/// Scrapes encoded at once; more wait for a thread.
pub const SCRAPE_THREADS: usize = 2;
/// Largest request head accepted (hyper answers 431 beyond it).
const MAX_HEAD: usize = 16 * 1024;

/// How many connections the server holds open at once, and how long a
/// request head may take ([`HEADER_TIMEOUT`] in `mvnet serve`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connections: usize,
    pub header_timeout: Duration,
}

const INDEX: &str = "<html><head><title>mvnet exporter</title></head><body>\
<h1>mvnet exporter</h1><p><a href=\"/metrics\">/metrics</a></p></body></html>\n";

/// Whether an `Accept-Encoding` value accepts gzip (`gzip`, `x-gzip` or
/// `*`, without `q=0`).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(v) = accept_encoding else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let wanted = ["gzip", "x-gzip", "*"]
            .iter()
            .any(|c| coding.eq_ignore_ascii_case(c));
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        wanted && !refused
    })
}

#[cfg(test)]
fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::text(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Reads every counter on the blocking pool, then encodes them there into
/// the returned body as the connection takes it (gzipped when asked), all
/// within [`SCRAPE_TIMEOUT`]. A failed read is an error here (answered
/// 500); a failure after the head went out cuts the body short.
async fn scrape(exporter: Arc<Exporter>, format: Format, gzipped: bool) -> Result<Body> {
    let deadline = tokio::time::Instant::now() + SCRAPE_TIMEOUT;
    let rt = tokio::runtime::Handle::current();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<Body>>();
    let ex = exporter.clone();
    tokio::task::spawn_blocking(move || {
        ex.scraping(|| {
            let (snap, info) = match ex.read() {
                Ok(read) => read,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let (mut sink, body) = Sink::new(gzipped, deadline, rt);
            if ready_tx.send(Ok(body)).is_err() {
                return; // the request is gone
            }
            let sent = match metrics::encode_into(snap, &info, format, &mut sink) {
                Ok(()) => sink.finish(),
                Err(_) => Err(sink
                    .error()
                    .unwrap_or_else(|| std::io::Error::other("encoding the metrics failed"))),
            };
            match sent {
                // A client that went away (or a HEAD request, whose body
                // hyper drops) is no failure of the exporter's.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("mvnet serve: a scrape's response was cut short: {e}");
                }
                _ => {}
            }
        })
    });
    match tokio::time::timeout_at(deadline, ready_rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(anyhow::anyhow!("the scrape task failed")),
        Err(_) => Err(anyhow::anyhow!(
            "the scrape took longer than {} s",
            SCRAPE_TIMEOUT.as_secs()
        )),
    }
}

async fn handle(exporter: Arc<Exporter>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {}
        "/" => {
            let mut r = Response::new(Body::text(INDEX));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return r;
        }
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                "not found; metrics are at /metrics\n",
            )
        }
    }
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let format = Format::for_accept(header(header::ACCEPT));
    let gzipped = accepts_gzip(header(header::ACCEPT_ENCODING));
    match scrape(exporter.clone(), format, gzipped).await {
        Ok(body) => {
            let mut r = Response::new(body);
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            if gzipped {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
        Err(e) => {
            exporter.scrape_errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("mvnet serve: scrape failed: {e:#}");
            let mut r = Response::new(Body::text(format!("mvnet: {e:#}\n")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    }
}

/// Serves one connection until the client closes it, a deadline passes, or
/// it reaches [`MAX_CONNECTION_AGE`].
async fn connection(exporter: Arc<Exporter>, stream: tokio::net::TcpStream, limits: Limits) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    let service = service_fn(move |req| {
        let exporter = exporter.clone();
        async move { Ok::<_, Infallible>(handle(exporter, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Errors here are the client's (a reset, a timeout, a malformed
    // request): hyper has answered what could be answered.
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

/// Connections turned away at the limit, reported at most once a minute.
struct Refused {
    count: AtomicU64,
    last_report: std::sync::Mutex<Option<Instant>>,
}

impl Refused {
    fn note(&self, limit: usize) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            eprintln!(
                "mvnet serve: {limit} connections open, the limit: closed new ones ({n} so far)"
            );
        }
    }
}

/// Accepts connections on `listener` forever.
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>, limits: Limits) -> Result<()> {
    let permits = Arc::new(Semaphore::new(limits.connections));
    let refused = Refused {
        count: AtomicU64::new(0),
        last_report: std::sync::Mutex::new(None),
    };
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                eprintln!("mvnet serve: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.note(limits.connections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let exporter = exporter.clone();
        tokio::spawn(async move {
            connection(exporter, stream, limits).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves an empty state directory (no networks: nothing of the
    /// kernel is read) on an ephemeral loopback port, on a thread of its own.
    fn server(limits: Limits) -> (std::net::SocketAddr, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mvnet-http-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let state_dir = dir.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let ex = Arc::new(Exporter::new(state_dir));
                serve(l, ex, limits).await.unwrap();
            });
        });
        (rx.recv().unwrap(), dir)
    }

    fn read_all(c: &mut std::net::TcpStream) -> String {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(c, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn limits_deadlines_and_routes() {
        use std::{io::Write as _, net::TcpStream};
        let (addr, dir) = server(Limits {
            connections: 2,
            header_timeout: Duration::from_millis(300),
        });
        // Two idle clients fill the limit: a third is closed unanswered.
        let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        let mut third = TcpStream::connect(addr).unwrap();
        let _ = third.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(read_all(&mut third), "");
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        // The idle ones are cut off at the header deadline, unanswered.
        for mut c in idle {
            let t = Instant::now();
            assert_eq!(read_all(&mut c), "");
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
        let ask = |req: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(req.as_bytes()).unwrap();
            read_all(&mut c)
        };
        let ok = ask("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{ok}"
        );
        assert!(ok.contains("\nmvnet_scrape_errors_total 0\n"), "{ok}");
        let post = ask(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        assert!(post.contains("\r\nallow: GET, HEAD\r\n"), "{post}");
        let missing = ask("GET /x HTTP/1.0\r\n\r\n");
        assert!(
            missing.starts_with("HTTP/1.0 404 Not Found\r\n"),
            "{missing}"
        );
        let head = ask("HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.0 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn gzip_only_when_accepted() {
        assert!(!accepts_gzip(None));
        assert!(!accepts_gzip(Some("identity")));
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("x-gzip")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("gzip; q=0.0, identity")));
        assert!(!accepts_gzip(Some("gzipx, br")));
    }

    #[test]
    fn gzip_round_trips() {
        let body = "mvnet_build_info{version=\"0.1.0\"} 1\n".repeat(100);
        let z = gzip(body.as_bytes()).unwrap();
        assert!(z.len() < body.len() / 4, "{} bytes", z.len());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&z[..]), &mut back)
            .unwrap();
        assert_eq!(back, body);
    }
}
