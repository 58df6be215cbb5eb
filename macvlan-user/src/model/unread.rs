//! The containers of a state file before they are read: the file's text
//! and where its containers' records and their index are in it.
//!
//! A `run` needs, of the containers already there, only whether one has
//! its name and whether one has its MAC on its network; reading 4000
//! containers' records and index into a map took 2.5 ms of each `run` at
//! 4000 containers (and their save baseline 0.6 ms more), where the same
//! two questions asked of the index's text take a search of 1.4 MB for one
//! string each. [`Containers`](super::Containers) therefore reads the map
//! only when a command asks for more than that ([`Unread::read`]).
//!
//! The questions are asked of the text only where its layout is known: an
//! index written by this mvnet, unchanged since (its CRC-32 is in the
//! file, checked when the file was read) and without a backslash in it,
//! so that every `"` in it delimits a string and the fields of a head and
//! of an endpoint come in the order serde writes them:
//! `"ID":{"name":N,"netns":P[,"owner":O][,"endpoints":[{"network":NET,
//! "id":E,"mac":M,…},…]]}`. The store reads any other file whole.
use std::{ops::Range, sync::Arc};

use memchr::memmem;

use super::{Containers, Id, Mac, Saved};
use crate::sys::text::FileText;

/// A state file's containers, not read yet.
pub(crate) struct Unread {
    text: Arc<FileText>,
    /// The containers' object (`{`, a record per line, `\n}`).
    records: Range<usize>,
    /// The index's object.
    index: Range<usize>,
    /// Reads them all (the store's reader of records and index).
    read: fn(&Unread) -> Result<Containers, String>,
}

impl std::fmt::Debug for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unread")
            .field("records", &self.records)
            .field("index", &self.index)
            .finish()
    }
}

impl Unread {
    /// The containers whose records are `records` and index `index` in
    /// `text`; `read` reads them. `None` if the index holds a backslash
    /// (a string with an escape, which the searches below would not
    /// find as written).
    pub(crate) fn new(
        text: Arc<FileText>,
        records: Range<usize>,
        index: Range<usize>,
        read: fn(&Unread) -> Result<Containers, String>,
    ) -> Option<Unread> {
        if memchr::memchr(b'\\', &text.as_bytes()[index.clone()]).is_some() {
            return None;
        }
        Some(Unread {
            text,
            records,
            index,
            read,
        })
    }

    pub(crate) fn text(&self) -> &Arc<FileText> {
        &self.text
    }

    pub(crate) fn records(&self) -> Range<usize> {
        self.records.clone()
    }

    pub(crate) fn index(&self) -> Range<usize> {
        self.index.clone()
    }

    /// All of them, read.
    pub(crate) fn read(&self) -> Result<Containers, String> {
        (self.read)(self)
    }

    /// Every record's id and JSON, in the file's order (by id).
    pub(crate) fn saved(&self) -> Vec<(Id, Saved)> {
        record_lines(&self.text, self.records.clone())
            .expect("the records' lines were read when the file was")
            .into_iter()
            .map(|(id, json)| (Id::within(&self.text, id), Saved::within(&self.text, json)))
            .collect()
    }

    fn index_text(&self) -> &str {
        &self.text[self.index.clone()]
    }

    /// Whether the file holds container `id`.
    pub(crate) fn contains(&self, id: &str) -> bool {
        // An id is a head's key: `"ID":{"name":`, after `{` or `,`.
        let Some(key) = plain(id) else {
            return false;
        };
        let needle = format!("\"{key}\":{{\"name\":");
        let index = self.index_text().as_bytes();
        memmem::find_iter(index, needle.as_bytes())
            .any(|at| at > 0 && matches!(index[at - 1], b'{' | b','))
    }

    /// The ids of the containers named `name`.
    pub(crate) fn named<'a>(&'a self, name: &str) -> Vec<(&'a str, ())> {
        let Some(name) = plain(name) else {
            return Vec::new();
        };
        let needle = format!(":{{\"name\":\"{name}\",\"netns\":");
        let index = self.index_text();
        memmem::find_iter(index.as_bytes(), needle.as_bytes())
            .filter_map(|at| Some((string_before(index, at)?, ())))
            .collect()
    }

    /// The ids of the containers with endpoint `endpoint` (its id).
    pub(crate) fn endpoint_holders<'a>(&'a self, endpoint: &str) -> Vec<(&'a str, ())> {
        let Some(endpoint) = plain(endpoint) else {
            return Vec::new();
        };
        // `,"id":"E","mac":`: an endpoint's id (a head's key has none).
        let needle = format!(",\"id\":\"{endpoint}\",\"mac\":");
        let index = self.index_text();
        let head = memmem::FinderRev::new(b":{\"name\":\"");
        memmem::find_iter(index.as_bytes(), needle.as_bytes())
            .filter_map(|at| {
                let id = string_before(index, head.rfind(&index.as_bytes()[..at])?)?;
                Some((id, ()))
            })
            .collect()
    }

    /// (id, name) of the containers with an endpoint of MAC `mac` on
    /// network `network` (its id).
    pub(crate) fn mac_holders<'a>(&'a self, network: &str, mac: Mac) -> Vec<(&'a str, &'a str)> {
        let needle = format!(",\"mac\":\"{mac}\"");
        let index = self.index_text();
        let bytes = index.as_bytes();
        let endpoint = memmem::FinderRev::new(b"{\"network\":\"");
        let head = memmem::FinderRev::new(b":{\"name\":\"");
        let mut out = Vec::new();
        for at in memmem::find_iter(bytes, needle.as_bytes()) {
            // `{"network":"NET","id":"E","mac":…`: NET, then E, then the
            // MAC, with nothing else between.
            let Some(start) = endpoint.rfind(&bytes[..at]) else {
                continue;
            };
            let net_at = start + "{\"network\":\"".len();
            let Some(net) = string_at(index, net_at) else {
                continue;
            };
            let id_at = net_at + net.len() + "\",\"id\":\"".len();
            if index.get(net_at + net.len()..id_at) != Some("\",\"id\":\"") {
                continue;
            }
            if string_at(index, id_at).map(|e| id_at + e.len() + 1) != Some(at) || net != network {
                continue;
            }
            // Its head: the nearest `:{"name":"` before it.
            let Some(h) = head.rfind(&bytes[..start]) else {
                continue;
            };
            let (Some(id), Some(name)) = (
                string_before(index, h),
                string_at(index, h + ":{\"name\":\"".len()),
            ) else {
                continue;
            };
            out.push((id, name));
        }
        out
    }
}

/// `s` as it is written in a string of the index (which holds no escape):
/// `None` if it would need one.
fn plain(s: &str) -> Option<&str> {
    (!s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)).then_some(s)
}

/// The string whose closing `"` is just before `at` (which a `:` follows).
fn string_before(text: &str, at: usize) -> Option<&str> {
    let close = at.checked_sub(1)?;
    if text.as_bytes().get(close) != Some(&b'"') {
        return None;
    }
    let open = memchr::memrchr(b'"', &text.as_bytes()[..close])?;
    Some(&text[open + 1..close])
}

/// The string that starts at `at` (after its opening `"`).
fn string_at(text: &str, at: usize) -> Option<&str> {
    let len = memchr::memchr(b'"', text.as_bytes().get(at..)?)?;
    Some(&text[at..at + len])
}

/// The records of the containers' object at `range` of `text`, laid out
/// a record per line (`{`, then per container a newline and `"ID":RECORD`
/// with a comma after all but the last, then a newline and `}`): each
/// one's id and JSON. `None` for any other layout.
pub(crate) fn record_lines(text: &str, range: Range<usize>) -> Option<Vec<(&str, &str)>> {
    let object = text.get(range)?;
    let mut at = object.strip_prefix('{')?;
    let mut records = Vec::new();
    loop {
        at = at.strip_prefix('\n')?;
        if at == "}" {
            return Some(records);
        }
        // memchr's, not `str::find`'s: the records are megabytes.
        let line = &at[..memchr::memchr(b'\n', at.as_bytes())?];
        let body = line.strip_prefix('"')?;
        let close = memchr::memchr(b'"', body.as_bytes())?;
        let (id, record) = (&body[..close], body[close + 1..].strip_prefix(':')?);
        if id.contains('\\') {
            return None;
        }
        let (record, more) = match record.strip_suffix(',') {
            Some(r) => (r, true),
            None => (record, false),
        };
        if !record.starts_with('{') || !record.ends_with('}') {
            return None;
        }
        records.push((id, record));
        at = &at[line.len()..];
        if !more {
            return (at == "\n}").then_some(records);
        }
    }
}
