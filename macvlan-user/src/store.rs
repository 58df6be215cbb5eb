//! Persistent state: one JSON document under the state directory, written
//! atomically (temp file, fsync, rename, fsync of the directory) and guarded
//! by an exclusive `flock` so that concurrent `mvnet` commands serialise
//! instead of corrupting it. Every file access goes through [`StateDir`].
use std::{
    io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::{
    model::State,
    state_dir::{StateDir, StateDirError},
    sys::fs::{self as sys, Lock},
};

/// Default state directory, like Docker's /var/lib/docker.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mvnet";
/// Environment override of the state directory (also `--state-dir`).
pub const STATE_DIR_ENV: &str = "MVNET_STATE_DIR";

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "state.json";
/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is corrupt ({source}); move it away to start afresh")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Dir(#[from] StateDirError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { path, source }
}

/// The state directory, locked for the lifetime of this value.
pub struct Store {
    dir: StateDir,
    _lock: Lock,
}

impl Store {
    /// Opens (creating if needed) and locks the state directory. Blocks
    /// while another `mvnet` holds the lock.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let dir = StateDir::open(dir)?;
        let lock = dir.open_lock(LOCK_FILE)?;
        let lock = sys::lock_exclusive(lock, true).map_err(io_err(&dir.path().join(LOCK_FILE)))?;
        Ok(Store { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The state directory's files (logs, the lock).
    pub fn files(&self) -> &StateDir {
        &self.dir
    }

    /// Reads the state (empty if none was written yet).
    pub fn load(&self) -> Result<State, StoreError> {
        parse(&self.dir)
    }

    /// Writes the state durably: a crash leaves the old or the new file,
    /// never a torn one.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        Ok(self.dir.write_atomic(STATE_FILE, &bytes)?)
    }
}

/// Reads the state in `dir` without taking the lock, for readers that must
/// not wait behind a running command (`stats`, `serve`): [`Store::save`]
/// replaces the file by a rename, so this sees the old or the new state,
/// never a torn one. Empty if there is no state yet.
pub fn peek(dir: &Path) -> Result<State, StoreError> {
    match StateDir::open_existing(dir)? {
        Some(dir) => parse(&dir),
        None => Ok(State::default()),
    }
}

/// The state file in `dir` (empty if none was written yet).
fn parse(dir: &StateDir) -> Result<State, StoreError> {
    match dir.read(STATE_FILE)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: dir.path().join(STATE_FILE),
            source,
        }),
        None => Ok(State::default()),
    }
}

/// The state directory to use: `--state-dir`, else `$MVNET_STATE_DIR`, else
/// [`DEFAULT_STATE_DIR`].
pub fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(STATE_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}
