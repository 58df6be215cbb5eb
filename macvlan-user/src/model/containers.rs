//! The containers of a [`State`](super::State), by id, each parsed from
//! its saved JSON only when a command reads it. A command that touches one
//! container (`run`, `rm`, `connect`, `disconnect`) then parses that one,
//! not every container there is: what it needs of the others (their
//! names, and their endpoints' ids and MACs, to refuse a clash) is in a
//! small [`Head`] per container, saved beside the records (the state
//! file's `index`).
//!
//! A container keeps the saved JSON it was read from (shared with the
//! store's record of what is on disk) until it is borrowed mutably, so
//! that a save finds what changed by comparing pointers, not containers.
//! That JSON is a slice of the state file as read ([`Saved`]): reading
//! the state copies no container.
//!
//! A head also holds what a listing of the endpoints shows (their
//! interface names and addresses, the container's owner): `mvnet stats`
//! and the exporter list every endpoint without parsing any container
//! ([`Containers::listed`]).
use std::{
    borrow::{Borrow, Cow},
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    ops::Index,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{is_mvnet, unread::Unread, Container, Endpoints, IfName, Mac, NetId, Owner};
use crate::sys::{cache::prefetch, text::FileText};

/// A container's id as the map keys it: a slice of a shared text, as a
/// [`Saved`] is (of the state file as read, or its own for a container
/// made since or a journal's). Reading the state then makes no string per
/// container for its key, and the save baseline's copy of every key is a
/// count taken on the text, not a string each (some 8,000 allocations at
/// 4000 containers).
#[derive(Clone)]
pub struct Id(Saved);

impl Id {
    /// `id`, which is a slice of `text`.
    pub(crate) fn within(text: &Arc<FileText>, id: &str) -> Id {
        Id(Saved::within(text, id))
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl From<String> for Id {
    fn from(s: String) -> Id {
        Id(Saved::own(s))
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Id {
        Id(Saved::own(s.to_owned()))
    }
}

impl std::ops::Deref for Id {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Id {}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Id) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Id {
    fn cmp(&self, other: &Id) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container's JSON as read or last saved: a slice of a shared text (the
/// state file as read, or the container's own serialisation). Two are the
/// same save when they are the same slice of the same text.
#[derive(Clone, Debug)]
pub struct Saved {
    text: Arc<FileText>,
    span: Span,
}

impl Saved {
    /// A container's own JSON text.
    pub fn own(json: String) -> Saved {
        let text = Arc::new(FileText::from(json));
        Saved {
            span: Span::within(&text, &text),
            text,
        }
    }

    /// `json`, which is a slice of `text`.
    pub fn within(text: &Arc<FileText>, json: &str) -> Saved {
        Saved {
            span: Span::within(text, json),
            text: text.clone(),
        }
    }

    pub fn get(&self) -> &str {
        self.span.of(&self.text)
    }

    /// Whether both are slices of one text (tests: a read copies none).
    #[cfg(test)]
    pub(crate) fn shares_text(&self, other: &Saved) -> bool {
        Arc::ptr_eq(&self.text, &other.text)
    }

    /// Whether both are the same save (not merely equal text).
    pub fn same(&self, other: &Saved) -> bool {
        Arc::ptr_eq(&self.text, &other.text) && self.span.start == other.span.start
    }
}

/// A journal record's container, as its own text (no copy).
impl From<Box<RawValue>> for Saved {
    fn from(raw: Box<RawValue>) -> Saved {
        Saved::own(Box::<str>::from(raw).into())
    }
}

/// What finding a container by name, endpoint or MAC needs, and what a
/// listing of its endpoints shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub name: String,
    pub netns: PathBuf,
    /// Only meaningful in a head whose endpoints have their `ifname` (an
    /// older mvnet's index has neither).
    #[serde(default, skip_serializing_if = "is_mvnet")]
    pub owner: Owner,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<HeadEndpoint>,
}

/// One endpoint of a [`Head`] (of `Container::endpoints`; a stopped
/// container's endpoints hold no MAC on the network).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadEndpoint {
    pub network: String,
    pub id: String,
    pub mac: Mac,
    /// `None` in an older mvnet's index, which does not hold what a
    /// listing shows: its container is parsed to be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<IfName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
}

impl Head {
    pub fn of(c: &Container) -> Head {
        Head {
            name: c.name.clone(),
            netns: c.netns.clone(),
            owner: c.owner.clone(),
            endpoints: c
                .endpoints
                .iter()
                .map(|(net, ep)| HeadEndpoint {
                    network: net.to_string(),
                    id: ep.id.clone(),
                    mac: ep.mac,
                    ifname: Some(ep.ifname.clone()),
                    ipv4: ep.ipv4,
                    ipv6: ep.ipv6,
                })
                .collect(),
        }
    }

    /// Whether it holds what a listing shows.
    fn listable(&self) -> bool {
        self.endpoints.iter().all(|e| e.ifname.is_some())
    }
}

/// A string of the state file as read: borrowed from its text unless it
/// holds an escape.
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A [`Head`] as the state file's index holds it, read without a copy of
/// each string first.
#[derive(Deserialize)]
pub(crate) struct HeadIn<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    netns: Text<'a>,
    #[serde(default)]
    owner: Owner,
    #[serde(default, borrow)]
    endpoints: Vec<HeadEndpointIn<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct HeadEndpointIn<'a> {
    #[serde(borrow)]
    network: Text<'a>,
    #[serde(borrow)]
    id: Text<'a>,
    mac: Mac,
    #[serde(default)]
    ifname: Option<IfName>,
    #[serde(default)]
    ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    ipv6: Option<Ipv6Addr>,
}

impl<'a> HeadEndpointIn<'a> {
    /// An endpoint of a head read by hand (`store::index`).
    pub(crate) fn new(
        network: &'a str,
        id: &'a str,
        mac: Mac,
        ifname: Option<IfName>,
        ipv4: Option<Ipv4Addr>,
        ipv6: Option<Ipv6Addr>,
    ) -> HeadEndpointIn<'a> {
        HeadEndpointIn {
            network: Text(Cow::Borrowed(network)),
            id: Text(Cow::Borrowed(id)),
            mac,
            ifname,
            ipv4,
            ipv6,
        }
    }
}

impl HeadIn<'_> {
    /// The head as kept: slices of `text` (the state file as read, which
    /// `self` was read from) unless a string of it held an escape; its
    /// network ids shared ([`NetId`]), `last` the one of the head before
    /// (nearly always the same network, found without the shared table).
    pub(crate) fn kept(self, text: &Arc<FileText>, last: &mut Option<NetId>) -> Kept {
        match Kept::within(
            text,
            &self.name,
            &self.netns,
            &self.owner,
            &self.endpoints,
            last,
        ) {
            Some(kept) => kept,
            None => Kept::Own(Head::from(self)),
        }
    }
}

impl From<HeadIn<'_>> for Head {
    fn from(h: HeadIn<'_>) -> Head {
        Head {
            name: h.name.0.into_owned(),
            netns: PathBuf::from(h.netns.0.into_owned()),
            owner: h.owner,
            endpoints: h
                .endpoints
                .into_iter()
                .map(|e| HeadEndpoint {
                    network: e.network.0.into_owned(),
                    id: e.id.0.into_owned(),
                    mac: e.mac,
                    ifname: e.ifname,
                    ipv4: e.ipv4,
                    ipv6: e.ipv6,
                })
                .collect(),
        }
    }
}

/// Where a slice of a text is in it (of a [`Saved`] JSON, a string of a
/// [`Kept`] head).
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Where `s`, a slice of `text`, is in it.
    fn within(text: &str, s: &str) -> Span {
        let start = (s.as_ptr() as usize)
            .checked_sub(text.as_ptr() as usize)
            .filter(|start| start + s.len() <= text.len())
            .expect("a slice of the text it is said to be within");
        // The state file is at most `MAX_FILE_SIZE` (< 4 GiB).
        Span {
            start: start as u32,
            end: (start + s.len()) as u32,
        }
    }

    fn of(self, text: &str) -> &str {
        &text[self.start as usize..self.end as usize]
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Spans {
    name: Span,
    netns: Span,
    owner: Owner,
    /// Empty: no allocation; one (the usual): one.
    endpoints: Box<[EndpointSpans]>,
}

#[derive(Clone, Debug)]
struct EndpointSpans {
    /// Shared with the other heads': a listing finds an endpoint's network
    /// by comparing pointers, reading no text.
    network: NetId,
    id: Span,
    mac: Mac,
    ifname: Option<IfName>,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
}

/// A container's head as a [`Slot`] keeps it: its own, or slices of the
/// state file's text as read (its index), so that reading the index makes
/// no string of it.
#[derive(Clone, Debug)]
pub(crate) enum Kept {
    Own(Head),
    In(Arc<FileText>, Spans),
}

impl Default for Kept {
    fn default() -> Kept {
        Kept::Own(Head::default())
    }
}

impl Kept {
    /// A head whose strings are all slices of `text` (the state file as
    /// read) as kept: `None` if one is not (it held an escape). The state
    /// file's index read by hand (`store::index`) makes its heads with
    /// this directly, with no [`HeadIn`] of its own per head.
    pub(crate) fn within(
        text: &Arc<FileText>,
        name: &Text,
        netns: &Text,
        owner: &Owner,
        endpoints: &[HeadEndpointIn],
        last: &mut Option<NetId>,
    ) -> Option<Kept> {
        let span = |t: &Text| match &t.0 {
            Cow::Borrowed(s) => Some(Span::within(text, s)),
            Cow::Owned(_) => None,
        };
        let mut spans = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let network = match last.take() {
                Some(id) if *id == *e.network.0 => id,
                _ => NetId::new(&e.network.0),
            };
            *last = Some(network.clone());
            spans.push(EndpointSpans {
                network,
                id: span(&e.id)?,
                mac: e.mac,
                ifname: e.ifname.clone(),
                ipv4: e.ipv4,
                ipv6: e.ipv6,
            });
        }
        let spans = Spans {
            name: span(name)?,
            netns: span(netns)?,
            owner: owner.clone(),
            endpoints: spans.into_boxed_slice(),
        };
        Some(Kept::In(text.clone(), spans))
    }

    fn name(&self) -> &str {
        match self {
            Kept::Own(h) => &h.name,
            Kept::In(text, s) => s.name.of(text),
        }
    }

    fn netns(&self) -> &Path {
        match self {
            Kept::Own(h) => &h.netns,
            Kept::In(text, s) => Path::new(s.netns.of(text)),
        }
    }

    /// Whether `f` holds for one of its endpoints (network id, endpoint
    /// id, MAC).
    fn any_endpoint(&self, mut f: impl FnMut(&str, &str, Mac) -> bool) -> bool {
        match self {
            Kept::Own(h) => h.endpoints.iter().any(|e| f(&e.network, &e.id, e.mac)),
            Kept::In(text, s) => s
                .endpoints
                .iter()
                .any(|e| f(&e.network, e.id.of(text), e.mac)),
        }
    }

    pub(crate) fn to_head(&self) -> Head {
        match self {
            Kept::Own(h) => h.clone(),
            Kept::In(text, s) => Head {
                name: s.name.of(text).to_owned(),
                netns: PathBuf::from(s.netns.of(text)),
                owner: s.owner.clone(),
                endpoints: s
                    .endpoints
                    .iter()
                    .map(|e| HeadEndpoint {
                        network: e.network.to_string(),
                        id: e.id.of(text).to_owned(),
                        mac: e.mac,
                        ifname: e.ifname.clone(),
                        ipv4: e.ipv4,
                        ipv6: e.ipv6,
                    })
                    .collect(),
            },
        }
    }

    /// Whether it holds what a listing shows (an older mvnet's index does
    /// not).
    fn listable(&self) -> bool {
        match self {
            Kept::Own(h) => h.listable(),
            Kept::In(_, s) => s.endpoints.iter().all(|e| e.ifname.is_some()),
        }
    }

    /// Its owner and endpoints as listed, if it holds them.
    fn listed(&self) -> Option<(&Owner, ListedEndpoints<'_>)> {
        if !self.listable() {
            return None;
        }
        Some(match self {
            Kept::Own(h) => (&h.owner, ListedEndpoints(Source::Own(h.endpoints.iter()))),
            Kept::In(_, s) => (&s.owner, ListedEndpoints(Source::In(s.endpoints.iter()))),
        })
    }
}

/// A container as a listing of endpoints shows it ([`Containers::listed`]).
pub struct Listed<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// The container's (see `Owner::of_endpoint_on` for its
    /// endpoints').
    pub owner: &'a Owner,
    pub endpoints: ListedEndpoints<'a>,
}

/// One endpoint as a listing shows it.
pub struct ListedEndpoint<'a> {
    /// Its network's id.
    pub network: &'a str,
    pub ifname: &'a IfName,
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// A listed container's endpoints: from the container when it is parsed,
/// from its head while it is not.
pub struct ListedEndpoints<'a>(Source<'a>);

enum Source<'a> {
    Parsed(super::endpoints::Iter<'a>),
    Own(std::slice::Iter<'a, HeadEndpoint>),
    In(std::slice::Iter<'a, EndpointSpans>),
}

impl<'a> ListedEndpoints<'a> {
    fn of(endpoints: &'a Endpoints) -> ListedEndpoints<'a> {
        ListedEndpoints(Source::Parsed(endpoints.iter()))
    }
}

impl<'a> Iterator for ListedEndpoints<'a> {
    type Item = ListedEndpoint<'a>;

    fn next(&mut self) -> Option<ListedEndpoint<'a>> {
        // A head is listed only when every endpoint has its ifname
        // ([`Kept::listable`]).
        Some(match &mut self.0 {
            Source::Parsed(i) => {
                let (net, ep) = i.next()?;
                ListedEndpoint {
                    network: net.as_str(),
                    ifname: &ep.ifname,
                    mac: ep.mac,
                    ipv4: ep.ipv4,
                    ipv6: ep.ipv6,
                }
            }
            Source::Own(i) => {
                let e = i.next()?;
                ListedEndpoint {
                    network: &e.network,
                    ifname: e.ifname.as_ref()?,
                    mac: e.mac,
                    ipv4: e.ipv4,
                    ipv6: e.ipv6,
                }
            }
            Source::In(i) => {
                let e = i.next()?;
                ListedEndpoint {
                    network: e.network.as_str(),
                    ifname: e.ifname.as_ref()?,
                    mac: e.mac,
                    ipv4: e.ipv4,
                    ipv6: e.ipv6,
                }
            }
        })
    }
}

/// How many containers ahead of a listing's walk it asks for their heads
/// ([`Containers::listed`]).
const LISTING_AHEAD: usize = 8;

/// One container: its saved JSON and head, parsed on first read.
#[derive(Clone, Debug)]
struct Slot {
    /// The JSON it was read from or last saved as, while nothing can have
    /// changed it (set by a save through a shared borrow).
    saved: OnceLock<Saved>,
    /// Read from the index; what [`Slot::container`] says once parsed.
    head: Kept,
    /// Boxed: a slot is 120 bytes, not 430, in a map of every container
    /// (a read's first touch of that memory is a page fault per 4 KiB).
    parsed: OnceLock<Box<Container>>,
}

impl Slot {
    fn new(c: Container) -> Slot {
        Slot {
            saved: OnceLock::new(),
            head: Kept::default(),
            parsed: OnceLock::from(Box::new(c)),
        }
    }

    fn container(&self) -> &Container {
        self.parsed.get_or_init(|| {
            let raw = self
                .saved
                .get()
                .expect("an unparsed container has its JSON");
            // The record was checked to be JSON when the state was read;
            // only a state file edited by hand can make this fail.
            Box::new(serde_json::from_str(raw.get()).unwrap_or_else(|e| {
                panic!(
                    "the saved record of container {} is not one ({e}); move the state \
                     directory's state.json and state.journal away to start afresh",
                    self.head.name()
                )
            }))
        })
    }

    fn container_mut(&mut self) -> &mut Container {
        self.container();
        self.saved.take();
        self.parsed.get_mut().expect("parsed above")
    }

    fn into_container(self) -> Container {
        self.container();
        *self.parsed.into_inner().expect("parsed above")
    }

    fn name(&self) -> &str {
        match self.parsed.get() {
            Some(c) => &c.name,
            None => self.head.name(),
        }
    }

    fn netns(&self) -> &Path {
        match self.parsed.get() {
            Some(c) => &c.netns,
            None => self.head.netns(),
        }
    }

    /// It as a listing shows it: from its head while unparsed, unless the
    /// head is an older mvnet's (then parsed).
    fn listed<'a>(&'a self, id: &'a str) -> Listed<'a> {
        if self.parsed.get().is_none() {
            if let Some((owner, endpoints)) = self.head.listed() {
                return Listed {
                    id,
                    name: self.head.name(),
                    owner,
                    endpoints,
                };
            }
        }
        let c = self.container();
        Listed {
            id,
            name: &c.name,
            owner: &c.owner,
            endpoints: ListedEndpoints::of(&c.endpoints),
        }
    }

    /// Asks the CPU for what [`Slot::listed`] reads beyond the slot
    /// itself (see [`Containers::listed`]).
    fn prefetch_listed(&self) {
        match (self.parsed.get(), &self.head) {
            (None, Kept::In(text, s)) => {
                prefetch(&text.as_bytes()[s.name.start as usize..s.name.end as usize]);
                prefetch(&*s.endpoints);
            }
            (None, Kept::Own(h)) => prefetch(h.endpoints.as_slice()),
            (Some(c), _) => prefetch(&**c),
        }
    }

    /// Whether it has an endpoint on network `network` (from its head
    /// while unparsed).
    fn on_network(&self, network: &str) -> bool {
        match self.parsed.get() {
            Some(c) => c.endpoints.contains_key(network),
            None => self.head.any_endpoint(|n, _, _| n == network),
        }
    }

    /// Whether `f` holds for one of its endpoints (network id, endpoint
    /// id, MAC).
    fn any_endpoint(&self, mut f: impl FnMut(&str, &str, Mac) -> bool) -> bool {
        match self.parsed.get() {
            Some(c) => c.endpoints.iter().any(|(n, ep)| f(n, &ep.id, ep.mac)),
            None => self.head.any_endpoint(f),
        }
    }
}

/// The containers by id (the API of the `BTreeMap` it replaces).
///
/// Read from a state file whose layout is known, they stay unread (its
/// text, [`Unread`]) until a command asks for more than whether a name or
/// a MAC is taken, whether an id is there, or the containers it adds or
/// changes itself: those live in `changed` meanwhile. The first look at
/// more reads the file's containers into the map, with `changed` over
/// them (see `model::unread`).
#[derive(Clone, Debug, Default)]
pub struct Containers {
    /// Every container, once read.
    all: OnceLock<BTreeMap<Id, Slot>>,
    /// While `all` is unset: the state file's containers (none if there
    /// is no file).
    unread: Option<Arc<Unread>>,
    /// While `all` is unset: the containers added or changed since the
    /// file (`None`: removed), by id.
    changed: BTreeMap<Id, Option<Slot>>,
}

/// What a container is while the file's containers are unread.
enum Lazily<'a> {
    /// Added or changed since the file (`None`: removed).
    Changed(Option<&'a Slot>),
    /// As the file has it (maybe not there).
    InFile,
}

impl Containers {
    /// The containers of a state file, unread.
    pub(crate) fn unread(unread: Unread) -> Containers {
        Containers {
            all: OnceLock::new(),
            unread: Some(Arc::new(unread)),
            changed: BTreeMap::new(),
        }
    }

    /// All of them, read (the file's first, if still unread).
    fn map(&self) -> &BTreeMap<Id, Slot> {
        self.all.get_or_init(|| {
            let mut map = match &self.unread {
                // The file's bytes are the ones its CRCs were taken of, as
                // mvnet wrote them: only a bug makes this fail.
                Some(unread) => unread.read().map(Containers::into_map).unwrap_or_else(|e| {
                    panic!(
                        "the state file's containers cannot be read ({e}); move the state \
                         directory's state.json and state.journal away to start afresh"
                    )
                }),
                None => BTreeMap::new(),
            };
            for (id, slot) in &self.changed {
                match slot {
                    Some(slot) => map.insert(id.clone(), slot.clone()),
                    None => map.remove(id.as_str()),
                };
            }
            map
        })
    }

    fn map_mut(&mut self) -> &mut BTreeMap<Id, Slot> {
        self.map();
        self.unread = None;
        self.changed.clear();
        self.all.get_mut().expect("read above")
    }

    fn into_map(mut self) -> BTreeMap<Id, Slot> {
        self.map();
        self.all.take().expect("read above")
    }

    /// `None` once read; else what `id` is.
    fn lazily(&self, id: &str) -> Option<Lazily<'_>> {
        if self.all.get().is_some() {
            return None;
        }
        Some(match self.changed.get(id) {
            Some(slot) => Lazily::Changed(slot.as_ref()),
            None => Lazily::InFile,
        })
    }

    /// Whether the (unread) file holds `id`.
    fn in_file(&self, id: &str) -> bool {
        self.unread.as_ref().is_some_and(|u| u.contains(id))
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    pub fn contains_key(&self, id: &str) -> bool {
        match self.lazily(id) {
            Some(Lazily::Changed(slot)) => slot.is_some(),
            Some(Lazily::InFile) => self.in_file(id),
            None => self.map().contains_key(id),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Container> {
        match self.lazily(id) {
            Some(Lazily::Changed(slot)) => slot.map(Slot::container),
            Some(Lazily::InFile) if !self.in_file(id) => None,
            _ => self.map().get(id).map(Slot::container),
        }
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Container> {
        match self.lazily(id) {
            Some(Lazily::Changed(_)) => self
                .changed
                .get_mut(id)
                .and_then(Option::as_mut)
                .map(Slot::container_mut),
            Some(Lazily::InFile) if !self.in_file(id) => None,
            _ => self.map_mut().get_mut(id).map(Slot::container_mut),
        }
    }

    pub fn insert(&mut self, id: String, c: Container) -> Option<Container> {
        match self.lazily(&id) {
            // A new container (every `run`'s): the file is not read.
            Some(Lazily::Changed(_)) => self.insert_changed(id, c),
            Some(Lazily::InFile) if !self.in_file(&id) => self.insert_changed(id, c),
            _ => self
                .map_mut()
                .insert(id.into(), Slot::new(c))
                .map(Slot::into_container),
        }
    }

    fn insert_changed(&mut self, id: String, c: Container) -> Option<Container> {
        self.changed
            .insert(id.into(), Some(Slot::new(c)))
            .flatten()
            .map(Slot::into_container)
    }

    pub fn remove(&mut self, id: &str) -> Option<Container> {
        match self.lazily(id) {
            // Kept as removed (a save compares the changes alone).
            Some(Lazily::Changed(_)) => self
                .changed
                .insert(id.into(), None)
                .flatten()
                .map(Slot::into_container),
            Some(Lazily::InFile) if !self.in_file(id) => None,
            _ => self.map_mut().remove(id).map(Slot::into_container),
        }
    }

    /// Parses every container that a listing would parse ([`Containers::
    /// listed`]: those whose head, from an older mvnet's index, does not
    /// hold what a listing shows), at once, before a reader allocates what
    /// it keeps (see `stats::RosterCache`).
    pub fn parse_unlisted(&self) {
        for slot in self.map().values() {
            if slot.parsed.get().is_none() && !slot.head.listable() {
                slot.container();
            }
        }
    }

    /// Every container as a listing of its endpoints shows it, in id
    /// order: from the heads read with the state, parsing none (but those
    /// an older mvnet indexed). The heads lie in memory in this order, so
    /// at 65,536 containers the walk reads memory in order instead of
    /// each container's records.
    pub fn listed(&self) -> impl Iterator<Item = Listed<'_>> + '_ {
        // In order, but in some ten allocations per container (its slot,
        // its id, its head's endpoints, its name in the file's text), too
        // many streams for the CPU's own prefetching: the slot
        // 2 × LISTING_AHEAD on is asked for, then, once it is in cache,
        // LISTING_AHEAD on, what it points to (some 40% of a listing's
        // time at 65,536 containers was waiting for those).
        let map = self.map();
        let mut far = map.values().skip(2 * LISTING_AHEAD);
        let mut near = map.iter().skip(LISTING_AHEAD);
        map.iter().map(move |(id, s)| {
            if let Some(slot) = far.next() {
                prefetch(slot);
            }
            if let Some((id, slot)) = near.next() {
                prefetch(id.as_bytes());
                slot.prefetch_listed();
            }
            s.listed(id)
        })
    }

    pub fn clear(&mut self) {
        *self = Containers {
            all: OnceLock::from(BTreeMap::new()),
            ..Containers::default()
        };
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.map().keys().map(Id::as_str)
    }

    /// Every container, parsed: for commands that look at all of them.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Container> + '_ {
        self.map().values().map(Slot::container)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Container> + '_ {
        self.map_mut().values_mut().map(Slot::container_mut)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &Container)> + '_ {
        self.map()
            .iter()
            .map(|(id, s)| (id.as_str(), s.container()))
    }

    pub fn into_values(self) -> impl Iterator<Item = Container> {
        self.into_map().into_values().map(Slot::into_container)
    }

    /// (id, name) of every container, without parsing any.
    pub fn names(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        self.map().iter().map(|(id, s)| (id.as_str(), s.name()))
    }

    /// The id of the container called `name`.
    pub fn id_by_name(&self, name: &str) -> Option<&str> {
        if self.all.get().is_some() {
            return self.names().find(|(_, n)| *n == name).map(|(id, _)| id);
        }
        let named = |s: &Slot| (s.name() == name).then_some(());
        self.first_unread(named, |u| u.named(name))
            .map(|(id, ())| id)
    }

    /// While unread: of the changed containers those `changed` gives
    /// something of, and of the file's those `in_file` finds (but the
    /// changed ones, whose file record is stale), the first by id, as a
    /// walk of the map finds it.
    fn first_unread<'a, T>(
        &'a self,
        changed: impl Fn(&'a Slot) -> Option<T>,
        in_file: impl FnOnce(&'a Unread) -> Vec<(&'a str, T)>,
    ) -> Option<(&'a str, T)> {
        let changed = self
            .changed
            .iter()
            .filter_map(|(id, s)| Some((id.as_str(), changed(s.as_ref()?)?)));
        let in_file = self.unread.as_deref().map(in_file).unwrap_or_default();
        changed
            .chain(
                in_file
                    .into_iter()
                    .filter(|(id, _)| !self.changed.contains_key(*id)),
            )
            .min_by_key(|(id, _)| *id)
    }

    /// The id of the container in network namespace `netns` (its path).
    pub fn id_by_netns(&self, netns: &Path) -> Option<&str> {
        self.map()
            .iter()
            .find(|(_, s)| s.netns() == netns)
            .map(|(id, _)| id.as_str())
    }

    /// The name of the container with an endpoint of MAC `mac` on network
    /// `network`.
    pub fn mac_holder(&self, network: &str, mac: Mac) -> Option<&str> {
        let holds = |s: &Slot| s.any_endpoint(|n, _, m| n == network && m == mac);
        if self.all.get().is_some() {
            return self.map().values().find(|s| holds(s)).map(Slot::name);
        }
        self.first_unread(
            |s| holds(s).then(|| s.name()),
            |u| u.mac_holders(network, mac),
        )
        .map(|(_, name)| name)
    }

    /// (id, name) of the containers with an endpoint on network `network`
    /// (its id), in id order, without parsing any: what "is the network in
    /// use" and "who uses it" need, at every size of the state.
    pub fn on_network<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.map()
            .iter()
            .filter(move |(_, s)| s.on_network(network))
            .map(|(id, s)| (id.as_str(), s.name()))
    }

    /// The id of the container holding endpoint `endpoint_id`.
    pub fn holder_of_endpoint(&self, endpoint_id: &str) -> Option<&str> {
        let holds = |s: &Slot| s.any_endpoint(|_, id, _| id == endpoint_id);
        if self.all.get().is_some() {
            return self
                .map()
                .iter()
                .find(|(_, s)| holds(s))
                .map(|(id, _)| id.as_str());
        }
        self.first_unread(
            |s| holds(s).then_some(()),
            |u| u.endpoint_holders(endpoint_id),
        )
        .map(|(id, ())| id)
    }

    /// From the state file: each container's JSON, and the index of their
    /// heads (`None` in a state file of an older mvnet: every container is
    /// parsed for its head).
    pub(crate) fn from_saved<K: AsRef<str>>(
        records: impl IntoIterator<Item = (Id, Saved)>,
        index: Option<impl IntoIterator<Item = (K, Kept)>>,
    ) -> Result<Containers, String> {
        // Both sorted by id: one walk over the two, and the map built in
        // bulk. The index's ids are only compared (borrowed from the
        // file's text: no string made and dropped per container).
        let mut heads = index.map(|i| i.into_iter().peekable());
        let records = records.into_iter();
        let mut map = Vec::with_capacity(records.size_hint().0);
        for (id, raw) in records {
            let slot = match heads.as_mut() {
                Some(heads) => {
                    while heads.next_if(|(h, _)| h.as_ref() < id.as_str()).is_some() {}
                    let Some((_, head)) = heads.next_if(|(h, _)| h.as_ref() == id.as_str()) else {
                        return Err(format!("container {id} is not in the state file's index"));
                    };
                    Slot {
                        saved: OnceLock::from(raw),
                        head,
                        parsed: OnceLock::new(),
                    }
                }
                None => saved_slot(&id, raw)?,
            };
            map.push((id, slot));
        }
        Ok(Containers {
            all: OnceLock::from(map.into_iter().collect::<BTreeMap<_, _>>()),
            ..Containers::default()
        })
    }

    /// Applies a journal record's container (`None`: removed).
    pub(crate) fn apply_saved(&mut self, id: String, raw: Option<Saved>) -> Result<(), String> {
        let slot = raw.map(|raw| saved_slot(&id, raw)).transpose()?;
        if self.all.get().is_none() {
            self.changed.insert(id.into(), slot);
            return Ok(());
        }
        let map = self.map_mut();
        match slot {
            None => map.remove(id.as_str()),
            Some(slot) => map.insert(id.into(), slot),
        };
        Ok(())
    }

    /// The state file's containers while they are unread.
    pub(crate) fn unread_file(&self) -> Option<Option<&Arc<Unread>>> {
        self.all.get().is_none().then_some(self.unread.as_ref())
    }

    /// While the file's containers are unread: those added, changed or
    /// removed since (`None`), with the JSON each was read from or last
    /// saved as, while unchanged since.
    #[allow(clippy::type_complexity)]
    pub(crate) fn changed_since_file(
        &self,
    ) -> Option<impl Iterator<Item = (&Id, Option<Option<&Saved>>)> + '_> {
        self.all.get().is_none().then(|| {
            self.changed
                .iter()
                .map(|(id, s)| (id, s.as_ref().map(|s| s.saved.get())))
        })
    }

    /// The JSON `id` was read from or last saved as, while unchanged since.
    pub(crate) fn saved(&self, id: &str) -> Option<&Saved> {
        match self.lazily(id) {
            Some(Lazily::Changed(slot)) => slot.and_then(|s| s.saved.get()),
            _ => self.map().get(id).and_then(|s| s.saved.get()),
        }
    }

    /// Every container's id and the JSON it was read from or last saved as
    /// (while unchanged since), sorted by id.
    pub(crate) fn saved_all(&self) -> impl Iterator<Item = (&Id, Option<&Saved>)> + '_ {
        self.map().iter().map(|(id, s)| (id, s.saved.get()))
    }

    /// Records that `id`, unchanged since it was serialised as `raw`, is
    /// saved as that (a save's, through a shared borrow of the state).
    pub(crate) fn mark_saved(&self, id: &str, raw: Saved) {
        let slot = match self.lazily(id) {
            Some(Lazily::Changed(slot)) => slot,
            _ => self.map().get(id),
        };
        if let Some(s) = slot {
            let _ = s.saved.set(raw);
        }
    }

    /// Whether the key of `id` is a slice of the state file as read (tests:
    /// a read makes no string per key).
    #[cfg(test)]
    pub(crate) fn key_in_text(&self, id: &str) -> bool {
        self.map()
            .get_key_value(id)
            .is_some_and(|(k, s)| s.saved.get().is_some_and(|raw| k.0.shares_text(raw)))
    }

    /// Whether the state file's containers are still unread (tests).
    #[cfg(test)]
    pub(crate) fn is_unread(&self) -> bool {
        self.all.get().is_none() && self.unread.is_some()
    }

    /// How many containers were parsed (tests: a command parses what it
    /// touches).
    #[cfg(test)]
    pub(crate) fn parsed(&self) -> usize {
        self.map()
            .values()
            .filter(|s| s.parsed.get().is_some())
            .count()
    }

    /// Every container's head, for the state file's index.
    pub(crate) fn index(&self) -> BTreeMap<&str, Head> {
        self.map()
            .iter()
            .map(|(id, s)| {
                // An older mvnet's head is completed from the container,
                // once: the next index lists it without a parse.
                let head = match s.parsed.get() {
                    None if s.head.listable() => s.head.to_head(),
                    _ => Head::of(s.container()),
                };
                (id.as_str(), head)
            })
            .collect()
    }
}

/// A container read from a record: parsed (for its head and to check it),
/// its JSON kept.
fn saved_slot(id: &str, raw: Saved) -> Result<Slot, String> {
    let c: Container =
        serde_json::from_str(raw.get()).map_err(|e| format!("container {id} is not one: {e}"))?;
    Ok(Slot {
        saved: OnceLock::from(raw),
        head: Kept::Own(Head::of(&c)),
        parsed: OnceLock::from(Box::new(c)),
    })
}

impl<Q: Borrow<str> + ?Sized> Index<&Q> for Containers {
    type Output = Container;

    fn index(&self, id: &Q) -> &Container {
        self.get(id.borrow()).expect("no container with that id")
    }
}

impl<'a> IntoIterator for &'a Containers {
    type Item = (&'a str, &'a Container);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a Container)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl FromIterator<(String, Container)> for Containers {
    fn from_iter<I: IntoIterator<Item = (String, Container)>>(iter: I) -> Self {
        Containers {
            all: OnceLock::from(
                iter.into_iter()
                    .map(|(id, c)| (id.into(), Slot::new(c)))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Containers::default()
        }
    }
}

/// As the map it replaces: a container that was read and not changed is
/// written as it was read.
impl Serialize for Containers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let all = self.map();
        let mut map = s.serialize_map(Some(all.len()))?;
        for (id, slot) in all {
            // A saved text is JSON (checked when it was read or made);
            // the look at it here is what gives serde a `RawValue`.
            match slot
                .saved
                .get()
                .map(|raw| serde_json::from_str::<&RawValue>(raw.get()))
            {
                Some(Ok(raw)) => map.serialize_entry(id, raw)?,
                _ => map.serialize_entry(id, slot.container())?,
            }
        }
        map.end()
    }
}

impl Containers {
    /// Writes the containers as [`Serialize`] does, as a JSON object with
    /// each entry on a line of its own: `{`, then per container a newline
    /// and `"ID":RECORD` (a comma after all but the last), then a newline
    /// and `}`. A record never spans lines (JSON strings hold no raw
    /// newline, and a saved text that has one outside its strings, from a
    /// state file written by hand, is written again compactly), so a
    /// reader finds each record's bounds by its line, without scanning it
    /// as JSON (`store::fast_sections`).
    pub(crate) fn write_lines(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (n, (id, slot)) in self.map().iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.push(b'\n');
            serde_json::to_writer(&mut *out, id).expect("a string serialises");
            out.push(b':');
            // A saved text is JSON (checked when it was read or made).
            match slot.saved.get().map(Saved::get) {
                Some(raw) if !raw.contains('\n') => out.extend_from_slice(raw.as_bytes()),
                _ => serde_json::to_writer(&mut *out, slot.container())
                    .expect("a container serialises"),
            }
        }
        out.extend_from_slice(b"\n}");
    }
}

/// From any format (the store reads its own files with
/// [`Containers::from_saved`]): every container parsed.
impl<'de> Deserialize<'de> for Containers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, Container>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str, mac: &str) -> Container {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "created": "2026-12-01T00:00:00Z", "netns": "/run/netns/x",
            "netns_owned": true, "auto_remove": false, "command": [], "pid": null,
            "running": true,
            "endpoints": { "n1": { "id": format!("ep-{id}"), "network_id": "n1",
                "ifname": "eth0", "mac": mac, "ipv4": "10.9.0.2", "ipv6": null, "rx_base": 0 } },
        }))
        .unwrap()
    }

    fn saved(cs: &[Container]) -> Containers {
        let records = cs.iter().map(|c| {
            (
                Id::from(c.id.as_str()),
                Saved::own(serde_json::to_string(c).unwrap()),
            )
        });
        let index = cs.iter().map(|c| (c.id.clone(), Kept::Own(Head::of(c))));
        Containers::from_saved(records, Some(index)).unwrap()
    }

    #[test]
    fn containers_are_written_a_line_each_as_the_json_they_were_read_as() {
        let a = container("a1", "web", "02:42:0a:09:00:02");
        let b = container("b2", "db", "02:42:0a:09:00:03");
        // b2 as read from a file written by hand over several lines.
        let pretty = serde_json::to_string_pretty(&b).unwrap();
        let records = [
            (
                Id::from("a1"),
                Saved::own(serde_json::to_string(&a).unwrap()),
            ),
            (Id::from("b2"), Saved::own(pretty)),
        ];
        let index = [&a, &b].map(|c| (c.id.clone(), Kept::Own(Head::of(c))));
        let cs = Containers::from_saved(records, Some(index)).unwrap();
        let mut out = Vec::new();
        cs.write_lines(&mut out);
        let text = String::from_utf8(out).unwrap();
        let want = format!(
            "{{\n\"a1\":{},\n\"b2\":{}\n}}",
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_eq!(text, want);
        // What serde writes, but for the lines.
        let as_serde: serde_json::Value = serde_json::to_value(&cs).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            as_serde
        );
        // No containers: the braces on two lines.
        let mut out = Vec::new();
        Containers::default().write_lines(&mut out);
        assert_eq!(out, b"{\n}");
    }

    #[test]
    fn lists_a_networks_containers_without_parsing_and_after_a_change() {
        let a = container("a1", "web", "02:42:0a:09:00:02");
        let b = container("b2", "db", "02:42:0a:09:00:03");
        let mut c = container("c3", "cache", "02:42:0a:09:00:04");
        let ep = c.endpoints.remove("n1").unwrap();
        c.endpoints.insert("n2", ep);
        let mut cs = saved(&[a, b, c]);
        assert_eq!(
            cs.on_network("n1").collect::<Vec<_>>(),
            [("a1", "web"), ("b2", "db")]
        );
        assert_eq!(cs.on_network("n2").collect::<Vec<_>>(), [("c3", "cache")]);
        assert_eq!(cs.on_network("n3").next(), None);
        assert!(cs.map().values().all(|s| s.parsed.get().is_none()));
        // A change made after the load counts, not the head read with it.
        let moved = cs.get_mut("a1").unwrap().endpoints.remove("n1").unwrap();
        cs.get_mut("a1").unwrap().endpoints.insert("n2", moved);
        assert_eq!(cs.on_network("n1").collect::<Vec<_>>(), [("b2", "db")]);
        assert_eq!(
            cs.on_network("n2").collect::<Vec<_>>(),
            [("a1", "web"), ("c3", "cache")]
        );
    }

    #[test]
    fn finds_by_name_mac_and_endpoint_without_parsing() {
        let a = container("a1", "web", "02:42:0a:09:00:02");
        let b = container("b2", "db", "02:42:0a:09:00:03");
        let cs = saved(&[a.clone(), b.clone()]);
        assert_eq!(cs.id_by_name("db"), Some("b2"));
        assert_eq!(cs.id_by_name("nope"), None);
        assert_eq!(cs.mac_holder("n1", b.endpoints["n1"].mac), Some("db"));
        assert_eq!(cs.mac_holder("n2", b.endpoints["n1"].mac), None);
        assert_eq!(cs.holder_of_endpoint("ep-a1"), Some("a1"));
        assert!(cs.map().values().all(|s| s.parsed.get().is_none()));
        // Read on demand, the one asked for only.
        assert_eq!(cs["b2"], b);
        assert_eq!(
            cs.map()
                .values()
                .filter(|s| s.parsed.get().is_some())
                .count(),
            1
        );
    }

    #[test]
    fn a_renamed_container_is_found_by_its_new_name() {
        let mut cs = saved(&[container("a1", "web", "02:42:0a:09:00:02")]);
        cs.get_mut("a1").unwrap().name = "web2".into();
        assert!(cs.saved("a1").is_none(), "changed: no longer as saved");
        assert_eq!(cs.id_by_name("web2"), Some("a1"));
        assert_eq!(cs.id_by_name("web"), None);
        assert_eq!(cs.index()["a1"].name, "web2");
    }

    #[test]
    fn an_index_that_misses_a_container_is_corruption() {
        let a = container("a1", "web", "02:42:0a:09:00:02");
        let records = [(
            Id::from("a1"),
            Saved::own(serde_json::to_string(&a).unwrap()),
        )];
        let e = Containers::from_saved(records, Some(Vec::<(String, Kept)>::new())).unwrap_err();
        assert_eq!(e, "container a1 is not in the state file's index");
    }

    #[test]
    fn serialises_as_the_map_it_replaces() {
        let a = container("a1", "web", "02:42:0a:09:00:02");
        let mut cs = saved(std::slice::from_ref(&a));
        let b = container("b2", "db", "02:42:0a:09:00:03");
        cs.insert("b2".into(), b.clone());
        let map: BTreeMap<String, Container> = [("a1".into(), a), ("b2".into(), b)].into();
        assert_eq!(
            serde_json::to_value(&cs).unwrap(),
            serde_json::to_value(&map).unwrap()
        );
        let back: Containers = serde_json::from_value(serde_json::to_value(&map).unwrap()).unwrap();
        assert_eq!(
            back.values().cloned().collect::<Vec<_>>(),
            map.into_values().collect::<Vec<_>>()
        );
    }
}
