//! A scrape's response body, streamed: the encoder writes into [`Sink`],
//! which hands the connection chunks of [`CHUNK`] bytes (gzipped when
//! asked) through a channel of [`CHUNKS_IN_FLIGHT`], so a scrape holds a
//! few hundred kilobytes of its exposition at a time, not all of it (at
//! 65,536 endpoints the text is about 60 MB).
//!
//! The encoder runs on a blocking thread and waits for the connection to
//! take each chunk, until the scrape's deadline: a client that stops
//! reading holds a scrape thread no longer than that. A body cut short (the
//! deadline, an encoding error) ends in an error, so hyper drops the
//! connection without the final chunk and the client cannot take a
//! truncated exposition for a whole one.
use std::{
    io::{self, Write as _},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::{runtime::Handle, sync::mpsc, time::Instant};

/// Bytes per chunk handed to the connection.
pub const CHUNK: usize = 64 * 1024;
/// Chunks encoded ahead of the connection.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// A response body: a fixed text, or a scrape's chunks as they come.
pub enum Body {
    Once(Option<Bytes>),
    Chunks {
        rx: mpsc::Receiver<Bytes>,
        /// Set by [`Sink::finish`] after the last chunk: the channel
        /// closing without it means the body was cut short.
        done: Arc<AtomicBool>,
    },
}

impl Body {
    pub fn text(text: impl Into<Bytes>) -> Body {
        Body::Once(Some(text.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Once(text) => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
            Body::Chunks { rx, done } => match rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                Poll::Ready(None) if done.load(Ordering::Acquire) => Poll::Ready(None),
                Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::other(
                    "the scrape stopped before the end of the metrics",
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Once(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            // A known length: hyper sends it as Content-Length.
            Body::Once(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
            Body::Chunks { .. } => SizeHint::default(),
        }
    }
}

/// Collects bytes into chunks and sends each to the connection, waiting
/// for room until `deadline`.
struct Chunks {
    buf: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
    deadline: Instant,
    rt: Handle,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        // On a blocking-pool thread: the runtime's own thread drives the
        // timer while this one waits.
        match self
            .rt
            .block_on(tokio::time::timeout_at(self.deadline, self.tx.send(chunk)))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client closed the connection",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the metrics before the scrape's deadline",
            )),
        }
    }
}

impl io::Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Out {
    Plain(Chunks),
    Gzip(flate2::write::GzEncoder<Chunks>),
}

/// Where the text encoder writes a streamed body (a `fmt::Write`, as
/// prometheus-client wants); the first I/O error is kept in
/// [`Sink::error`].
pub struct Sink {
    out: Out,
    done: Arc<AtomicBool>,
    error: Option<io::Error>,
}

impl Sink {
    /// A sink and the body that streams what is written to it, gzipped if
    /// `gzip`; the sink waits for the connection until `deadline`. Call
    /// from a blocking-pool thread of the runtime `rt`.
    pub fn new(gzip: bool, deadline: Instant, rt: Handle) -> (Sink, Body) {
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let chunks = Chunks {
            buf: Vec::with_capacity(CHUNK),
            tx,
            deadline,
            rt,
        };
        let out = if gzip {
            Out::Gzip(flate2::write::GzEncoder::new(
                chunks,
                flate2::Compression::fast(),
            ))
        } else {
            Out::Plain(chunks)
        };
        let done = Arc::new(AtomicBool::new(false));
        let body = Body::Chunks {
            rx,
            done: done.clone(),
        };
        (
            Sink {
                out,
                done,
                error: None,
            },
            body,
        )
    }

    /// The I/O error that stopped the encoder, if one did.
    pub fn error(&mut self) -> Option<io::Error> {
        self.error.take()
    }

    /// Sends what is left and marks the body complete.
    pub fn finish(self) -> io::Result<()> {
        let mut chunks = match self.out {
            Out::Plain(c) => c,
            Out::Gzip(z) => z.finish()?,
        };
        chunks.send()?;
        self.done.store(true, Ordering::Release);
        Ok(())
    }
}

impl std::fmt::Write for Sink {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let r = match &mut self.out {
            Out::Plain(c) => c.write_all(s.as_bytes()),
            Out::Gzip(z) => z.write_all(s.as_bytes()),
        };
        r.map_err(|e| {
            self.error = Some(e);
            std::fmt::Error
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{fmt::Write as _, time::Duration};

    use http_body_util::BodyExt as _;

    use super::*;

    /// Writes `text` through a sink on the blocking pool (finishing it when
    /// `finish`), and collects the body on the runtime: its bytes, or the
    /// error it ended in.
    fn stream(text: String, gzip: bool, finish: bool) -> Result<Vec<u8>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            let handle = Handle::current();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let writer = tokio::task::spawn_blocking(move || {
                let (mut sink, body) = Sink::new(gzip, deadline, handle);
                if tx.send(body).is_err() {
                    panic!("the test's runtime is gone");
                }
                // Line by line, as the encoder writes.
                for line in text.split_inclusive('\n') {
                    sink.write_str(line).unwrap();
                }
                if finish {
                    sink.finish().unwrap();
                }
            });
            let body = rx.await.unwrap();
            let out = body.collect().await.map(|b| b.to_bytes().to_vec());
            writer.await.unwrap();
            out.map_err(|e| e.to_string())
        })
    }

    fn text() -> String {
        // Several chunks' worth, so that the channel fills and drains.
        (0..40_000)
            .map(|i| format!("series{{n=\"{i}\"}} {i}\n"))
            .collect()
    }

    #[test]
    fn streams_every_byte_in_order() {
        let text = text();
        assert!(text.len() > (CHUNKS_IN_FLIGHT + 2) * CHUNK);
        assert_eq!(stream(text.clone(), false, true).unwrap(), text.as_bytes());
        let z = stream(text.clone(), true, true).unwrap();
        assert!(z.len() < text.len() / 4, "{} bytes gzipped", z.len());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&z[..]), &mut back)
            .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn a_body_cut_short_ends_in_an_error() {
        let e = stream(text(), false, false).unwrap_err();
        assert_eq!(e, "the scrape stopped before the end of the metrics");
    }

    #[test]
    fn a_client_that_stops_reading_is_given_up_at_the_deadline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_millis(200);
            let handle = Handle::current();
            let started = std::time::Instant::now();
            let writer = tokio::task::spawn_blocking(move || {
                // The body is held and never read.
                let (mut sink, body) = Sink::new(false, deadline, handle);
                let r = text()
                    .split_inclusive('\n')
                    .try_for_each(|line| sink.write_str(line));
                (r, sink.error().map(|e| e.kind()), body)
            });
            let (r, kind, _body) = writer.await.unwrap();
            assert!(r.is_err());
            assert_eq!(kind, Some(io::ErrorKind::TimedOut));
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(190) && waited < Duration::from_secs(2),
                "{waited:?}"
            );
        });
    }
}
