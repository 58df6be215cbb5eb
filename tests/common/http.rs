//! HTTP/1.1 response bodies as the tests read them: by Content-Length, or
//! chunked (the exporter streams `/metrics` in chunks).
use std::io::Read;

/// Reads the body that follows the response head `head` from `c`:
/// Content-Length bytes, or every chunk up to the last one. `None` if the
/// stream breaks off first (a body cut short) or the framing is wrong.
pub fn read_body(c: &mut impl Read, head: &str) -> Option<Vec<u8>> {
    let head = head.to_ascii_lowercase();
    if head.contains("\r\ntransfer-encoding: chunked\r\n") {
        let mut body = Vec::new();
        loop {
            let line = read_line(c)?;
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // No trailers: the empty line that ends the body.
                return read_line(c)?.is_empty().then_some(body);
            }
            let at = body.len();
            body.resize(at + size, 0);
            c.read_exact(&mut body[at..]).ok()?;
            if !read_line(c)?.is_empty() {
                return None;
            }
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    let mut body = vec![0; len];
    c.read_exact(&mut body).ok()?;
    Some(body)
}

/// One line ending in CRLF, without it.
fn read_line(c: &mut impl Read) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        c.read_exact(&mut byte).ok()?;
        line.push(byte[0]);
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).ok()
}
