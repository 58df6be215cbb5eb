//! The roster of a state directory, read again only when its state was
//! saved since: what every scrape of the exporter, every refresh of
//! `mvnet top` and every update of `mvnet stats --watch` reads the
//! counters through.
use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::Result;

use super::Roster;
use crate::{model::State, store};

/// The roster of the state as last read, and which saved state that was.
/// Every save replaces the state file (a rename) or appends to its
/// journal, so a new inode, size or mtime of either means a new state; an
/// unchanged one is not read again (at 65,536 endpoints reading the state
/// takes some 200 ms, reading every counter through the roster some 13:
/// `cargo xtask bench observability`). Only the roster is kept, not the
/// state, which at 65,536 endpoints takes about five times its memory.
#[derive(Default)]
pub struct RosterCache {
    seen: Mutex<Option<(FileKey, Arc<Roster>)>>,
}

/// The state file's and the journal's inode, size and mtime.
type FileKey = [(u64, u64, i64, i64); 2];

impl RosterCache {
    /// The roster of the current state of `state_dir`. `load` reads the
    /// state and says which network to list (an id; `None`: all), only
    /// when the state changed since the last call (or was never read).
    pub fn get(
        &self,
        state_dir: &Path,
        load: impl FnOnce() -> Result<(State, Option<String>)>,
    ) -> Result<Arc<Roster>> {
        // Looked at before reading: a file replaced meanwhile has another
        // key next time and is read again then.
        let key = store::fingerprint(state_dir);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(key), Some((k, roster))) = (key, seen.as_ref()) {
            if *k == key {
                return Ok(roster.clone());
            }
        }
        let (state, only) = load()?;
        // The roster is listed from the containers' heads, parsing none;
        // but a state file of an older mvnet has heads that cannot list,
        // and those containers are parsed before the roster takes a byte:
        // parses interleaved with the roster's rows would pin the heap
        // pages of the dropped state (at 65,536 containers the exporter
        // kept 107 MiB after `malloc_trim`, 32 MiB with this order).
        state.containers.parse_unlisted();
        let roster = Arc::new(Roster::of(&state, only.as_deref())?);
        drop(state);
        *seen = key.map(|k| (k, roster.clone()));
        Ok(roster)
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, fs, path::PathBuf};

    use super::*;
    use crate::{
        model::{Container, Endpoint, Mac, Network},
        store::Store,
    };

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn network(id: &str) -> Network {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": format!("net-{id}"), "created": "2026-12-01T00:00:00Z",
            "parent": "eth0", "parent_origin": "existing", "vlan": null, "mode": "bridge",
            "internal": false, "enable_ipv6": false, "pools": [], "options": {},
        }))
        .unwrap()
    }

    fn container(id: &str, net: &str, mac: u8) -> Container {
        let ep = Endpoint {
            id: format!("ep-{id}"),
            network_id: net.into(),
            ifname: "eth0".into(),
            mac: Mac::new([2, 0x42, 0, 0, 0, mac]),
            ipv4: None,
            ipv6: None,
            rx_base: 0,
        };
        Container {
            id: id.into(),
            name: format!("c-{id}"),
            endpoints: [(net, ep)].into(),
            ..Container::default()
        }
    }

    /// Per network name, its endpoints' containers.
    fn shown(roster: &Roster) -> Vec<(String, Vec<String>)> {
        let snap = roster.read().unwrap();
        snap.networks
            .iter()
            .map(|n| {
                let eps = n.endpoints.iter().map(|e| e.container.to_string());
                (n.name.clone(), eps.collect())
            })
            .collect()
    }

    #[test]
    fn reads_the_state_again_only_when_it_was_saved_since() {
        let dir = Scratch(
            std::env::temp_dir().join(format!("mvnet-roster-cache-unit-{}", std::process::id())),
        );
        let _ = fs::remove_dir_all(&dir.0);
        let store = Store::open(&dir.0).unwrap();
        let mut state = store.load().unwrap();
        state.networks.insert("n1".into(), network("n1"));
        state.networks.insert("n2".into(), network("n2"));
        state.containers.insert("a".into(), container("a", "n1", 1));
        store.save(&state).unwrap();
        let cache = RosterCache::default();
        let loads = Cell::new(0);
        let get = |only: Option<&str>| {
            cache
                .get(&dir.0, || {
                    loads.set(loads.get() + 1);
                    Ok((crate::store::peek(&dir.0)?, only.map(str::to_owned)))
                })
                .unwrap()
        };
        let first = get(None);
        assert_eq!(
            shown(&first),
            [
                ("net-n1".into(), vec!["c-a".into()]),
                ("net-n2".into(), vec![])
            ]
        );
        let again = get(None);
        assert!(Arc::ptr_eq(&first, &again), "the same roster");
        assert_eq!(loads.get(), 1, "the state was not read again");
        // A save (appended to the journal) is seen at the next read.
        state.containers.insert("b".into(), container("b", "n2", 2));
        store.save(&state).unwrap();
        let after = get(Some("n2"));
        assert_eq!(loads.get(), 2);
        assert_eq!(shown(&after), [("net-n2".into(), vec!["c-b".into()])]);
        // So is a container removed.
        state.containers.remove("b");
        store.save(&state).unwrap();
        assert_eq!(shown(&get(Some("n2"))), [("net-n2".into(), vec![])]);
        assert_eq!(loads.get(), 3);
        // A failed read is reported, and read again next time.
        let e = cache
            .get(&dir.0, || anyhow::bail!("unreadable"))
            .map(|_| ());
        assert!(e.is_ok(), "unchanged: not read");
        state.containers.remove("a");
        store.save(&state).unwrap();
        let e = cache
            .get(&dir.0, || anyhow::bail!("unreadable"))
            .unwrap_err();
        assert_eq!(e.to_string(), "unreadable");
        assert_eq!(shown(&get(None))[0].1, Vec::<String>::new());
    }
}
