//! Just enough HTTP/1.1 for a scraper: one request per connection, read
//! with a deadline and a size bound, answered with `Connection: close`.
use std::{
    io::{self, Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// Longest a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a client may take to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// The parts of a request the exporter looks at.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Without the query string.
    pub path: String,
    pub accept: Option<String>,
}

/// Parses a request head (request line and headers, up to the blank line).
pub fn parse(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.trim().to_owned());
    Some(Request {
        method,
        path,
        accept,
    })
}

/// Reads one request head from `stream`; `None` for a malformed or
/// oversized one, or a client that went away.
pub fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    // A client that stops reading must not hold a thread forever.
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(std::str::from_utf8(&buf[..end]).ok().and_then(parse));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes a complete response (headers only for HEAD).
pub fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_line_and_accept() {
        let r = parse("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text;version=1.0.0\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert_eq!(
            r.accept.as_deref(),
            Some("application/openmetrics-text;version=1.0.0")
        );
        assert_eq!(parse("GET /metrics\r\n"), None);
        assert_eq!(parse("nonsense"), None);
    }
}
