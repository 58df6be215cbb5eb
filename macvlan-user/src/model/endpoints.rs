//! A container's endpoints by network id ([`Endpoints`]), and the network
//! ids they are keyed by ([`NetId`]).
//!
//! A listing of every endpoint (`mvnet stats`, the exporter's roster at
//! 65,536 containers) walks every container's endpoints and finds each
//! one's network. As a `BTreeMap<String, Endpoint>` that read three
//! allocations per container beside the container itself: the map's leaf
//! (1.5 KiB for one entry, its length at the far end of it), and the key's
//! 64 bytes to compare. Here the endpoints are one sorted vector (one entry
//! is one allocation of its own size) and a key is a pointer to the
//! process's one copy of that network id, so finding the network of the
//! next endpoint on it compares pointers.
use std::{
    borrow::Borrow,
    collections::HashMap,
    fmt,
    hash::{Hash, Hasher},
    ops::{Deref, Index},
    sync::{Arc, LazyLock, Mutex, Weak},
};

use serde::{
    de::{DeserializeSeed, MapAccess, Visitor},
    ser::SerializeMap,
    Deserialize, Deserializer, Serialize, Serializer,
};

use super::Endpoint;

/// A network id, shared: every [`NetId`] made from the same text while one
/// is alive is the same allocation. Compares, orders and hashes as its text.
#[derive(Clone)]
pub struct NetId(Arc<str>);

/// The live ids by their text. Weak: an id no container holds any more
/// (its network removed, in a process that runs for months) is freed, and
/// its entry dropped at the next sweep.
struct Interned {
    ids: HashMap<Box<str>, Weak<str>>,
    /// Entries after the last sweep: the next comes at twice as many.
    swept: usize,
}

static INTERNED: LazyLock<Mutex<Interned>> = LazyLock::new(|| {
    Mutex::new(Interned {
        ids: HashMap::new(),
        swept: 0,
    })
});

impl NetId {
    /// The shared id of text `id`.
    pub fn new(id: &str) -> NetId {
        let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = interned.ids.get(id).and_then(Weak::upgrade) {
            return NetId(live);
        }
        let new: Arc<str> = Arc::from(id);
        interned.ids.insert(Box::from(id), Arc::downgrade(&new));
        if interned.ids.len() > 2 * interned.swept.max(16) {
            interned.ids.retain(|_, w| w.strong_count() > 0);
            interned.swept = interned.ids.len();
        }
        NetId(new)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether both are the same allocation (then they are equal; equal
    /// ids made while neither was alive are not the same).
    pub fn same(a: &NetId, b: &NetId) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Deref for NetId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NetId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NetId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq for NetId {
    fn eq(&self, other: &NetId) -> bool {
        NetId::same(self, other) || self.0 == other.0
    }
}

impl Eq for NetId {}

impl PartialOrd for NetId {
    fn partial_cmp(&self, other: &NetId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NetId {
    fn cmp(&self, other: &NetId) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl Hash for NetId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl fmt::Debug for NetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container's endpoints by network id, in id order (as the
/// `BTreeMap` it replaces: the same API where mvnet used it, and the same
/// JSON, an object by id).
#[derive(Clone, Default, PartialEq)]
pub struct Endpoints(Vec<(NetId, Endpoint)>);

/// An endpoint and its network id, as [`Endpoints::iter`] gives them.
pub type Entry<'a> = (&'a NetId, &'a Endpoint);

type Pair = (NetId, Endpoint);

pub type Iter<'a> = std::iter::Map<std::slice::Iter<'a, Pair>, fn(&'a Pair) -> Entry<'a>>;

impl Endpoints {
    pub fn new() -> Endpoints {
        Endpoints::default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where `id` is, or would go. Ids come in order from a saved file:
    /// one past the last is found by one comparison.
    fn find(&self, id: &str) -> Result<usize, usize> {
        match self.0.last() {
            Some((last, _)) if last.as_str() < id => Err(self.0.len()),
            _ => self.0.binary_search_by(|(k, _)| k.as_str().cmp(id)),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Endpoint> {
        self.find(id).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Endpoint> {
        self.find(id).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.find(id).is_ok()
    }

    /// Sets the endpoint on network `id`, giving back the one it replaces.
    pub fn insert(&mut self, id: impl AsRef<str>, ep: Endpoint) -> Option<Endpoint> {
        let id = id.as_ref();
        self.put(self.find(id), || NetId::new(id), ep)
    }

    /// Puts `ep` at `at` (found by [`Endpoints::find`]); the shared id is
    /// made only when the id is new here.
    fn put(
        &mut self,
        at: Result<usize, usize>,
        shared: impl FnOnce() -> NetId,
        ep: Endpoint,
    ) -> Option<Endpoint> {
        match at {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, ep)),
            Err(i) => {
                self.0.insert(i, (shared(), ep));
                None
            }
        }
    }

    pub fn clear(&mut self) {
        self.0.clear()
    }

    pub fn remove(&mut self, id: &str) -> Option<Endpoint> {
        self.find(id).ok().map(|i| self.0.remove(i).1)
    }

    pub fn iter(&self) -> Iter<'_> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &NetId> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Endpoint> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn values_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = &mut Endpoint> + ExactSizeIterator {
        self.0.iter_mut().map(|(_, v)| v)
    }
}

impl<'a> IntoIterator for &'a Endpoints {
    type Item = Entry<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Endpoints {
    type Item = (NetId, Endpoint);
    type IntoIter = std::vec::IntoIter<(NetId, Endpoint)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// As a `BTreeMap` collects: by id, a later endpoint of an id replacing an
/// earlier one.
impl<K: AsRef<str>> FromIterator<(K, Endpoint)> for Endpoints {
    fn from_iter<I: IntoIterator<Item = (K, Endpoint)>>(iter: I) -> Endpoints {
        let mut all = Endpoints::new();
        for (k, ep) in iter {
            all.insert(k, ep);
        }
        all
    }
}

impl<K: AsRef<str>, const N: usize> From<[(K, Endpoint); N]> for Endpoints {
    fn from(all: [(K, Endpoint); N]) -> Endpoints {
        all.into_iter().collect()
    }
}

impl<K: AsRef<str>> Extend<(K, Endpoint)> for Endpoints {
    fn extend<I: IntoIterator<Item = (K, Endpoint)>>(&mut self, iter: I) {
        for (k, ep) in iter {
            self.insert(k, ep);
        }
    }
}

impl<Q: AsRef<str> + ?Sized> Index<&Q> for Endpoints {
    type Output = Endpoint;

    fn index(&self, id: &Q) -> &Endpoint {
        self.get(id.as_ref()).expect("no endpoint on that network")
    }
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Endpoints {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Endpoints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Endpoints, D::Error> {
        d.deserialize_map(EndpointsVisitor)
    }
}

struct EndpointsVisitor;

impl<'de> Visitor<'de> for EndpointsVisitor {
    type Value = Endpoints;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of endpoints by network id")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Endpoints, A::Error> {
        let mut all = Endpoints(Vec::with_capacity(map.size_hint().unwrap_or(1).min(64)));
        while let Some(id) = map.next_key_seed(IdSeed)? {
            let ep: Endpoint = map.next_value()?;
            let at = all.find(&id);
            all.put(at, || id, ep);
        }
        Ok(all)
    }
}

/// Reads a network id into its shared copy without allocating one of its
/// own.
struct IdSeed;

impl<'de> DeserializeSeed<'de> for IdSeed {
    type Value = NetId;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<NetId, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IdSeed {
    type Value = NetId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a network id")
    }

    fn visit_str<E>(self, v: &str) -> Result<NetId, E> {
        Ok(NetId::new(v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ep(n: u8) -> Endpoint {
        Endpoint {
            id: format!("ep{n}"),
            network_id: format!("net{n}"),
            ifname: format!("eth{n}").into(),
            mac: super::super::Mac::new([2, 0x42, 0, 0, 0, n]),
            ipv4: None,
            ipv6: None,
            rx_base: 0,
        }
    }

    #[test]
    fn keeps_id_order_and_replaces_as_a_btreemap() {
        let mut all = Endpoints::new();
        let mut map = BTreeMap::new();
        for (id, n) in [("b", 1), ("a", 2), ("c", 3), ("b", 4), ("ab", 5)] {
            assert_eq!(all.insert(id, ep(n)), map.insert(id.to_owned(), ep(n)));
        }
        let ids: Vec<&str> = all.keys().map(|k| k.as_str()).collect();
        assert_eq!(ids, ["a", "ab", "b", "c"]);
        assert_eq!(all.get("b"), Some(&ep(4)));
        assert_eq!(all.remove("a"), Some(ep(2)));
        assert_eq!(all.remove("a"), None);
        assert!(!all.contains_key("a") && all.contains_key("ab"));
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn reads_and_writes_the_json_of_a_btreemap() {
        let map: BTreeMap<String, Endpoint> = [("n2", 2), ("n1", 1), ("n10", 10)]
            .into_iter()
            .map(|(k, n)| (k.to_owned(), ep(n)))
            .collect();
        let json = serde_json::to_string(&map).unwrap();
        let all: Endpoints = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&all).unwrap(), json);
        // Out of order, and an id given twice (the last one holds).
        let all: Endpoints = serde_json::from_str(&format!(
            r#"{{"z": {}, "a": {}, "z": {}}}"#,
            serde_json::to_string(&ep(1)).unwrap(),
            serde_json::to_string(&ep(2)).unwrap(),
            serde_json::to_string(&ep(3)).unwrap()
        ))
        .unwrap();
        let ids: Vec<&str> = all.keys().map(|k| k.as_str()).collect();
        assert_eq!(ids, ["a", "z"]);
        assert_eq!(all.get("z"), Some(&ep(3)));
    }

    #[test]
    fn an_id_is_one_allocation_while_it_is_alive() {
        let text = "c0ffee".repeat(10) + "beef";
        let a = NetId::new(&text);
        let b = NetId::new(&text.clone());
        assert!(NetId::same(&a, &b));
        let parsed: Endpoints = serde_json::from_str(&format!(
            r#"{{"{text}": {}}}"#,
            serde_json::to_string(&ep(1)).unwrap()
        ))
        .unwrap();
        assert!(NetId::same(parsed.keys().next().unwrap(), &a));
        assert!(!NetId::same(&a, &NetId::new("other")));
        assert_eq!(a, NetId::new(&text));
    }
}
