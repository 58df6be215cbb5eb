//! The controller: Docker's macvlan driver rules over our store, netlink
//! and namespaces. Split by lifecycle, as Docker's driver is:
//! * [`network`] — create and remove networks, resolve and own parents;
//! * [`container`] — run, stop and remove containers; connect, disconnect;
//! * [`endpoint`] — plumb one endpoint (macvlan, addresses, routes);
//! * [`foreign`] — other runtimes' networks and containers (Docker, CNI),
//!   counted and enforced, not created; [`adopt`] registers their
//!   endpoints in batches;
//! * [`inspect`] — the Docker-shaped JSON views;
//! * [`intent`] — intent before action: what a killed command left is
//!   rolled back or finished;
//! * [`restore`] — bring links back after a reboot or a lost parent.
pub mod adopt;
pub mod container;
pub mod datapath;
pub mod endpoint;
pub mod foreign;
pub mod inspect;
pub mod intent;
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

/// The controller: the state, and (for writers) the state lock.
pub struct Controller {
    store: Store,
    pub state: State,
}

impl Controller {
    /// For writers: locks the state directory and loads the state.
    pub fn open(dir: &Path) -> Result<Controller> {
        let store = Store::open(dir).map_err(store_error)?;
        let state = store.load()?;
        Ok(Controller { store, state })
    }

    /// For readers (`ls`, `inspect`, `verify`, `top`, `pktgen`, `exec`): a
    /// consistent snapshot of the state, without the lock, so that they
    /// never wait behind a writer. It cannot be saved.
    pub fn snapshot(dir: &Path) -> Result<Controller> {
        Ok(Controller {
            store: Store::unlocked(dir)?,
            state: crate::store::peek(dir)?,
        })
    }

    /// For a command whose process ends next: leaves the state (and the
    /// store's record of it) to the process's exit instead of freeing it
    /// piece by piece, which took 2.5 ms of a `container rm` at 4000
    /// containers. The lock and the files are let go of as usual.
    pub fn leave_state_to_exit(&mut self) {
        std::mem::forget(std::mem::take(&mut self.state));
        self.store.leave_baseline_to_exit();
    }

    pub fn save(&self) -> Result<()> {
        if !self.store.is_locked() {
            bail!("internal error: state changed without the state lock");
        }
        self.store.save(&self.state).map_err(store_error)
    }

    /// Saves without fsync from now on (see [`Store::skip_fsync`]): for
    /// CNI ADD and DEL, whose runtime waits on every one.
    pub fn skip_fsync(&mut self) {
        self.store.skip_fsync();
    }

    /// Lets go of the state lock while a foreground container runs.
    pub(crate) fn unlock(&mut self) {
        self.store.unlock();
    }

    /// Takes the state lock again and re-reads the state, which other
    /// writers may have changed meanwhile.
    pub(crate) fn relock(&mut self) -> Result<()> {
        self.store.relock()?;
        self.state = self.store.load()?;
        Ok(())
    }

    pub fn state_dir(&self) -> &Path {
        self.store.dir()
    }

    /// The state directory's files (the containers' logs).
    pub fn state_files(&self) -> Result<&StateDir> {
        self.store.files().map_err(store_error)
    }

    /// Fails unless this command runs in the network namespace the state
    /// lives in (where its parents are): from another one it would see
    /// other links and no classifier, and "repair" the wrong namespace.
    pub fn check_namespace(&self) -> Result<()> {
        let here = crate::netns::current_inode()?;
        let Some(net) = self
            .state
            .networks
            .values()
            .find(|n| n.netns_inode.is_some_and(|i| i != here))
        else {
            return Ok(());
        };
        let ino = net.netns_inode.unwrap_or_default();
        let named = crate::netns::list().into_iter().find(|n| {
            crate::netns::inode(&Path::new(crate::netns::NETNS_RUN_DIR).join(n)) == Some(ino)
        });
        let how = match &named {
            Some(n) => format!("`nsenter --net=/run/netns/{n} mvnet ...`"),
            None => "mvnet inside it (e.g. `nsenter --net=/proc/PID/ns/net mvnet ...` with the PID of a process there)".to_owned(),
        };
        bail!(
            "the state in {} belongs to network namespace {ino}{}, where network {} and its parent {} live, but this command runs in namespace {here}, which has other links and no classifier of this state; run {how}",
            self.state_dir().display(),
            named.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
            net.name,
            net.parent
        )
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
        let id = find("container", key, self.state.containers.names())?;
        Ok(&self.state.containers[&id])
    }
}

/// A state directory error, with the fix for a full or read-only one.
fn store_error(e: crate::store::StoreError) -> anyhow::Error {
    use crate::{state_dir::StateDirError, store::StoreError};
    let errno = match &e {
        StoreError::Io { source, .. } => source.raw_os_error(),
        StoreError::Dir(StateDirError::Io { err, .. }) => err.raw_os_error(),
        _ => None,
    };
    let hint = match (&e, errno) {
        // The state directory's own message already says how to fix it.
        (StoreError::Dir(_), Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)) => {
            "; nothing was changed"
        }
        (_, Some(libc::ENOSPC | libc::EDQUOT)) => {
            "; free space there (or give another --state-dir), then retry: nothing was changed"
        }
        (_, Some(libc::EROFS)) => {
            "; remount it read-write (or give another --state-dir), then retry: nothing was changed"
        }
        _ => "",
    };
    anyhow::anyhow!("{e}{hint}")
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
