//! The names in a [`Snapshot`](super::Snapshot): slices of one buffer
//! shared by every name of a listing, so that listing 65,536 endpoints
//! allocates one buffer instead of two strings per endpoint, and copying
//! a listing (each read of a [`Roster`](super::Roster)) counts references
//! to that one buffer instead of to 131,072 allocations all over the heap.
use std::{
    borrow::Borrow,
    cmp::Ordering,
    fmt,
    hash::{Hash, Hasher},
    ops::Deref,
    sync::Arc,
};

/// A string shared with the other names of the same listing; reads as a
/// `str`. 16 bytes: the buffer is an `Arc<String>` (a thin pointer), which
/// also takes a listing's buffer as it was built, without copying it.
#[derive(Clone)]
pub struct Name {
    buf: Arc<String>,
    start: u32,
    len: u32,
}

impl Name {
    /// Bytes `start..start + len` of `buf`, which must lie on character
    /// boundaries (reading it panics otherwise, as slicing a `str` does).
    /// Reads none of them: a listing makes its rows in name order, and its
    /// buffer holds the names in another, so checking each row's bytes here
    /// was a cache miss per row (most of the time spent making the rows of
    /// 65,536 endpoints, in a profile).
    pub(crate) fn in_buf(buf: &Arc<String>, start: u32, len: u32) -> Name {
        Name {
            buf: buf.clone(),
            start,
            len,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.buf[self.start as usize..(self.start + self.len) as usize]
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name::from(s.to_owned())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        let len = u32::try_from(s.len()).expect("a name under 4 GiB");
        Name {
            buf: Arc::new(s),
            start: 0,
            len,
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_one_buffer_read_compare_and_hash_as_their_strings() {
        let buf = Arc::new(String::from("web-1abcdeth0"));
        let (web, id) = (Name::in_buf(&buf, 0, 5), Name::in_buf(&buf, 5, 4));
        assert_eq!(web.as_str(), "web-1");
        assert_eq!(&*id, "abcd");
        assert_eq!(web, Name::from("web-1"));
        assert_eq!(web, "web-1");
        assert!(id < web);
        assert_eq!(format!("{web} {web:?}"), "web-1 \"web-1\"");
        let set: std::collections::HashSet<Name> = [web.clone(), "web-1".into()].into();
        assert_eq!(set.len(), 1);
        assert!(set.contains("web-1"));
        // The buffer, `web`, `id` and the clone of `web` in the set.
        assert_eq!(Arc::strong_count(&buf), 4);
    }

    #[test]
    #[should_panic(expected = "byte index")]
    fn a_slice_outside_the_buffer_panics_when_read() {
        let buf = Arc::new(String::from("eth0"));
        let name = Name::in_buf(&buf, 2, 3);
        let _ = name.as_str();
    }
}
