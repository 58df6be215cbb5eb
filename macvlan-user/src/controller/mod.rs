//! The controller: Docker's macvlan driver rules over our store, netlink
//! and namespaces. Split by lifecycle, as Docker's driver is:
//! * [`network`] — create and remove networks, resolve and own parents;
//! * [`container`] — run, stop and remove containers; connect, disconnect;
//! * [`endpoint`] — plumb one endpoint (macvlan, addresses, routes);
//! * [`inspect`] — the Docker-shaped JSON views;
//! * [`restore`] — bring links back after a reboot or a lost parent.
pub mod container;
pub mod datapath;
pub mod endpoint;
pub mod inspect;
pub mod lifecycle;
pub mod network;
pub mod restore;
pub mod verify;

use std::path::Path;

use anyhow::{bail, Result};

use crate::{
    model::{Container, Network, State},
    state_dir::StateDir,
    store::Store,
};

/// The controller, holding the state lock for its lifetime.
pub struct Controller {
    store: Store,
    pub state: State,
}

impl Controller {
    /// Locks the state directory and loads the state.
    pub fn open(dir: &Path) -> Result<Controller> {
        let store = Store::open(dir)?;
        let state = store.load()?;
        Ok(Controller { store, state })
    }

    pub fn save(&self) -> Result<()> {
        Ok(self.store.save(&self.state)?)
    }

    pub fn state_dir(&self) -> &Path {
        self.store.dir()
    }

    /// The state directory's files (the containers' logs).
    pub fn state_files(&self) -> &StateDir {
        self.store.files()
    }

    /// A network by exact name, exact id, or unambiguous id prefix.
    pub fn network(&self, key: &str) -> Result<&Network> {
        let id = find(
            "network",
            key,
            self.state
                .networks
                .values()
                .map(|n| (n.id.as_str(), n.name.as_str())),
        )?;
        Ok(&self.state.networks[&id])
    }

    /// A container by exact name, exact id, or unambiguous id prefix.
    pub fn container(&self, key: &str) -> Result<&Container> {
        let id = find(
            "container",
            key,
            self.state
                .containers
                .values()
                .map(|c| (c.id.as_str(), c.name.as_str())),
        )?;
        Ok(&self.state.containers[&id])
    }
}

/// Docker's lookup order: exact name, exact id, then id prefix (which must
/// be unambiguous).
fn find<'a>(
    kind: &str,
    key: &str,
    items: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Result<String> {
    if let Some((id, _)) = items.clone().find(|(_, name)| *name == key) {
        return Ok(id.to_owned());
    }
    if let Some((id, _)) = items.clone().find(|(id, _)| *id == key) {
        return Ok(id.to_owned());
    }
    let matches: Vec<&str> = if key.is_empty() {
        Vec::new()
    } else {
        items
            .filter(|(id, _)| id.starts_with(key))
            .map(|(id, _)| id)
            .collect()
    };
    match matches.as_slice() {
        [id] => Ok((*id).to_owned()),
        [] => bail!("{kind} {key} not found; list them with `mvnet {kind} ls`"),
        _ => bail!(
            "{kind} id prefix {key} is ambiguous ({} matches); give more characters",
            matches.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn lookup_by_name_id_and_prefix() {
        let items = [("abcdef01", "one"), ("abcd9999", "two"), ("1234", "abcd")];
        let it = || items.iter().copied();
        assert_eq!(find("network", "one", it()).unwrap(), "abcdef01");
        assert_eq!(find("network", "abcd9999", it()).unwrap(), "abcd9999");
        assert_eq!(find("network", "abcde", it()).unwrap(), "abcdef01");
        // A name wins over an id prefix.
        assert_eq!(find("network", "abcd", it()).unwrap(), "1234");
        let e = find("network", "abc", it()).unwrap_err().to_string();
        assert!(e.contains("ambiguous"), "{e}");
        let e = find("network", "zzz", it()).unwrap_err().to_string();
        assert_eq!(
            e,
            "network zzz not found; list them with `mvnet network ls`"
        );
    }
}
