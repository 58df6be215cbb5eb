//! Persistent state: one JSON document under the state directory, written
//! atomically (temp file, fsync, rename, fsync of the directory) and guarded
//! by an exclusive `flock` so that concurrent `mvnet` commands serialise
//! instead of corrupting it.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::model::State;

/// Default state directory, like Docker's /var/lib/docker.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mvnet";
/// Environment override of the state directory (also `--state-dir`).
pub const STATE_DIR_ENV: &str = "MVNET_STATE_DIR";

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

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
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { path, source }
}

/// The state directory, locked for the lifetime of this value.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) and locks the state directory. Blocks
    /// while another `mvnet` holds the lock.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: valid fd; the lock is released when the file is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&lock_path)(io::Error::last_os_error()));
        }
        Ok(Store {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the state (empty if none was written yet).
    pub fn load(&self) -> Result<State, StoreError> {
        let path = self.dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes the state durably: a crash leaves the old or the new file,
    /// never a torn one.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }
}

/// Reads the state in `dir` without taking the lock, for readers that must
/// not wait behind a running command (`stats`, `serve`): [`Store::save`]
/// replaces the file by a rename, so this sees the old or the new state,
/// never a torn one. Empty if there is no state yet.
pub fn peek(dir: &Path) -> Result<State, StoreError> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path, source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// The state directory to use: `--state-dir`, else `$MVNET_STATE_DIR`, else
/// [`DEFAULT_STATE_DIR`].
pub fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(STATE_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}
