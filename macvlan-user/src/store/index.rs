//! The state file's `index` read by hand, as mvnet writes it: the heads'
//! fields in their order, strings without escapes. At 4000 containers the
//! index is 1.45 MB of JSON that every command reads whole, and serde took
//! about 3 ms of a `run`'s 24 ms of CPU there (`perf record --call-graph
//! dwarf` of `run`/`rm` pairs); this reads the same heads in two thirds of
//! the time (4000 heads, 1.4 MB, medians of 60 alternated reads in one
//! process: 2.1-3.1 ms against serde's 3.2-4.8 ms). Anything else (a field
//! out of order or unknown, an escape, a head of an older mvnet) makes it
//! give up, and the index is read by serde as before: both read a head
//! alike, which a unit test holds them to.
use std::{borrow::Cow, sync::Arc};

use super::Cursor;
use crate::{
    model::{HeadEndpointIn, IfName, Kept, Mac, NetId, Owner, Text},
    sys::text::FileText,
};

/// The index that starts at `at` (in `text`, the state file as read), as
/// its ids and heads as kept, stepping over it; `None` (and `at` where it
/// was) when it is not laid out as mvnet writes it. `expected`: how many
/// heads there should be (the containers' count), for the list's size.
pub(super) fn read<'a>(
    at: &mut Cursor<'a>,
    text: &Arc<FileText>,
    expected: usize,
) -> Option<Vec<(&'a str, Kept)>> {
    let start = at.pos;
    let heads = heads(at, text, expected);
    if heads.is_none() {
        at.pos = start;
    }
    heads
}

fn heads<'a>(
    at: &mut Cursor<'a>,
    text: &Arc<FileText>,
    expected: usize,
) -> Option<Vec<(&'a str, Kept)>> {
    at.expect("{")?;
    // Sized once (the list was some 480 KB grown by doubling at 4000
    // containers, each step fresh pages to fault in and a copy).
    let mut out = Vec::with_capacity(expected);
    if at.expect("}").is_some() {
        return Some(out);
    }
    // One head's endpoints, read into the same list for every head.
    let mut endpoints = Vec::new();
    let mut last: Option<NetId> = None;
    loop {
        let id = at.string()?;
        at.expect(":{\"name\":")?;
        let name = at.string()?;
        at.expect(",\"netns\":")?;
        let netns = at.string()?;
        let owner = match at.expect(",\"owner\":") {
            // Another runtime's container: rare, read as JSON.
            Some(()) => at.value::<Owner>()?,
            None => Owner::Mvnet,
        };
        endpoints.clear();
        if at.expect(",\"endpoints\":[").is_some() {
            loop {
                endpoints.push(endpoint(at)?);
                if at.expect(",").is_none() {
                    at.expect("]")?;
                    break;
                }
            }
        }
        at.expect("}")?;
        let (name, netns) = (Text(Cow::Borrowed(name)), Text(Cow::Borrowed(netns)));
        out.push((
            id,
            Kept::within(text, &name, &netns, &owner, &endpoints, &mut last)?,
        ));
        if at.expect(",").is_none() {
            at.expect("}")?;
            return Some(out);
        }
    }
}

fn endpoint<'a>(at: &mut Cursor<'a>) -> Option<HeadEndpointIn<'a>> {
    at.expect("{\"network\":")?;
    let network = at.string()?;
    at.expect(",\"id\":")?;
    let id = at.string()?;
    at.expect(",\"mac\":")?;
    let mac: Mac = at.string()?.parse().ok()?;
    let ifname = match at.expect(",\"ifname\":") {
        Some(()) => Some(IfName::from(at.string()?)),
        None => None,
    };
    let ipv4 = match at.expect(",\"ipv4\":") {
        Some(()) => Some(at.string()?.parse().ok()?),
        None => None,
    };
    let ipv6 = match at.expect(",\"ipv6\":") {
        Some(()) => Some(at.string()?.parse().ok()?),
        None => None,
    };
    at.expect("}")?;
    Some(HeadEndpointIn::new(network, id, mac, ifname, ipv4, ipv6))
}

impl<'a> Cursor<'a> {
    /// The JSON string that starts here, if it holds no escape (nor a
    /// control character, which JSON does not allow unescaped).
    fn string(&mut self) -> Option<&'a str> {
        self.expect("\"")?;
        let rest = &self.text.as_bytes()[self.pos..];
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        // A fold, not `any`: without an early exit it is vectorised.
        let control = rest[..len].iter().fold(false, |c, b| c | (*b < 0x20));
        if rest[len] != b'"' || control {
            return None;
        }
        let s = &self.text[self.pos..self.pos + len];
        self.pos += len + 1;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{Head, HeadEndpoint};

    fn endpoint(network: &str, id: &str, last: u8) -> HeadEndpoint {
        HeadEndpoint {
            network: network.into(),
            id: id.into(),
            mac: Mac::new([2, 0x42, 10, 0, 0, last]),
            ifname: Some("eth0".into()),
            ipv4: Some([10, 0, 0, last].into()),
            ipv6: None,
        }
    }

    /// Heads of every shape mvnet writes.
    fn heads() -> BTreeMap<&'static str, Head> {
        let mut dual = endpoint("n1", "e2", 2);
        dual.ipv6 = Some("2001:db8::2".parse().unwrap());
        let mut v6_only = endpoint("n2", "e3", 3);
        v6_only.ipv4 = None;
        v6_only.ipv6 = Some("2001:db8::3".parse().unwrap());
        let mut older = endpoint("n1", "e4", 4);
        older.ifname = None;
        let head = |name: &str, owner: Owner, endpoints: Vec<HeadEndpoint>| Head {
            name: name.into(),
            netns: format!("/run/netns/{name}").into(),
            owner,
            endpoints,
        };
        BTreeMap::from([
            (
                "a1",
                head("web", Owner::Mvnet, vec![endpoint("n1", "e1", 1)]),
            ),
            ("a2", head("dual", Owner::Mvnet, vec![dual, v6_only])),
            ("a3", head("stopped", Owner::Mvnet, vec![])),
            ("a4", head("older", Owner::Mvnet, vec![older])),
            (
                "a5",
                head("pod", Owner::Docker, vec![endpoint("n1", "e5", 5)]),
            ),
            (
                "a6",
                head(
                    "sandbox",
                    Owner::Cni {
                        network: "macnet".into(),
                    },
                    vec![endpoint("n1", "e6", 6)],
                ),
            ),
        ])
    }

    /// What serde reads at `text` (the reader this one stands in for).
    fn by_serde(text: &str) -> Vec<(String, Head)> {
        let mut at = Cursor { text, pos: 0 };
        let index = at.value::<super::super::IndexIn>().unwrap().0;
        index
            .into_iter()
            .map(|super::super::Entry(id, h)| (id.0.into_owned(), Head::from(h)))
            .collect()
    }

    fn by_hand(text: &str) -> Option<(Vec<(String, Head)>, usize)> {
        let file = Arc::new(FileText::from(text.to_owned()));
        let mut at = Cursor {
            text: &file,
            pos: 0,
        };
        let index = read(&mut at, &file, 0)?;
        let heads = index
            .into_iter()
            .map(|(id, h)| (id.to_owned(), h.to_head()))
            .collect();
        Some((heads, at.pos))
    }

    #[test]
    fn heads_read_by_hand_are_those_serde_reads() {
        let heads = heads();
        let text = serde_json::to_string(&heads).unwrap() + ",\"pending\":[]";
        let (read, end) = by_hand(&text).expect("the layout mvnet writes");
        assert_eq!(read, by_serde(&text));
        let expected: Vec<(String, Head)> =
            heads.into_iter().map(|(id, h)| (id.into(), h)).collect();
        assert_eq!(read, expected);
        assert_eq!(&text[end..], ",\"pending\":[]");
        assert_eq!(by_hand("{}"), Some((vec![], 2)));
    }

    #[test]
    fn anything_else_is_left_to_serde_where_it_was() {
        let text = serde_json::to_string(&heads()).unwrap();
        let other = [
            // An escape in a name.
            text.replacen("\"web\"", "\"w\\\"eb\"", 1),
            // Fields in another order (written by hand).
            text.replacen(
                "{\"name\":\"web\",\"netns\":\"/run/netns/web\"",
                "{\"netns\":\"/run/netns/web\",\"name\":\"web\"",
                1,
            ),
            // A field this reader does not know.
            text.replacen("\"name\":\"web\",", "\"name\":\"web\",\"x\":1,", 1),
            // Pretty-printed.
            serde_json::to_string_pretty(&heads()).unwrap(),
        ];
        for text in other {
            let file = Arc::new(FileText::from(text.clone()));
            let mut at = Cursor {
                text: &file,
                pos: 0,
            };
            assert!(read(&mut at, &file, 6).is_none(), "{text}");
            assert_eq!(at.pos, 0);
            // serde reads them all the same.
            assert_eq!(by_serde(&text).len(), 6, "{text}");
        }
        // Not an address where one goes: serde refuses it as well.
        let bad = text.replacen("\"10.0.0.1\"", "\"10.0.0.999\"", 1);
        assert!(by_hand(&bad).is_none());
        // A raw control character, which JSON does not allow in a string.
        let bad = text.replacen("\"web\"", "\"w\teb\"", 1);
        assert!(by_hand(&bad).is_none());
        assert!(serde_json::from_str::<serde_json::Value>(&bad).is_err());
    }
}
