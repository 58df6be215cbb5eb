//! Persistent state: one JSON document under the state directory, written
//! atomically (temp file, fsync, rename, fsync of the directory) and guarded
//! by an exclusive `flock` so that concurrent writers serialise instead of
//! corrupting it. Writers hold the lock only while they change state (not
//! while a foreground container runs); readers take no lock and read the
//! old or the new file, never a torn one. The lock file holds the current
//! holder's pid, so a waiting writer can say whom it waits for. Every file
//! access goes through [`StateDir`].
use std::{
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
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

/// The state directory. Writers hold its exclusive lock only while they
/// change state ([`Store::open`], [`Store::unlock`], [`Store::relock`]);
/// readers use [`peek`] or [`Store::unlocked`] and take no lock.
pub struct Store {
    path: PathBuf,
    /// Opened (and created if needed) by a writer; a reader's is `None`
    /// when the directory does not exist yet.
    dir: Option<StateDir>,
    lock: Option<Lock>,
    /// Whether [`Store::save`] fsyncs (see [`Store::skip_fsync`]).
    durable: bool,
}

/// How long a writer waits silently for the lock before it says whom it
/// waits for.
const LOCK_PATIENCE: Duration = Duration::from_secs(1);

impl Store {
    /// Opens (creating if needed) and locks the state directory. Waits
    /// while another `mvnet` holds the lock, saying so (with its pid) after
    /// a second.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let mut store = Store {
            path: dir.to_owned(),
            dir: Some(StateDir::open(dir)?),
            lock: None,
            durable: true,
        };
        store.relock()?;
        Ok(store)
    }

    /// The state directory without the lock, for a reader: checked, never
    /// created or changed.
    pub fn unlocked(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            path: dir.to_owned(),
            dir: StateDir::open_existing(dir)?,
            lock: None,
            durable: true,
        })
    }

    /// Whether this value holds the exclusive lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// Lets go of the lock (for a foreground container's lifetime); the
    /// state must be re-read after [`Store::relock`].
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// Takes the lock again (no-op if held).
    pub fn relock(&mut self) -> Result<(), StoreError> {
        if self.lock.is_some() {
            return Ok(());
        }
        if self.dir.is_none() {
            self.dir = Some(StateDir::open(&self.path)?);
        }
        let dir = self.files()?;
        let lock = lock(dir)?;
        self.lock = Some(lock);
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The state directory's files (logs, the lock); a writer's.
    pub fn files(&self) -> Result<&StateDir, StoreError> {
        self.dir.as_ref().ok_or_else(|| StoreError::Io {
            path: self.path.clone(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "the state directory does not exist yet; a command that writes creates it",
            ),
        })
    }

    /// Reads the state (empty if none was written yet).
    pub fn load(&self) -> Result<State, StoreError> {
        match &self.dir {
            Some(dir) => parse(dir),
            None => Ok(State::default()),
        }
    }

    /// Writes the state durably: a crash leaves the old or the new file,
    /// never a torn one.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        let files = self.files()?;
        if !self.durable {
            return Ok(files.write_atomic_unsynced(STATE_FILE, &bytes)?);
        }
        Ok(files.write_atomic(STATE_FILE, &bytes)?)
    }

    /// Saves from now on without fsync: a killed process still leaves the
    /// old or the new file (temporary file, then rename), but a power loss
    /// may bring back the state before the last saves. Only for callers
    /// whose records are of kernel state that a power loss takes too (CNI
    /// ADD and DEL: the sandbox namespace and its link), which `mvnet
    /// restore` and the runtime's GC converge again.
    pub fn skip_fsync(&mut self) {
        self.durable = false;
    }
}

/// Takes the exclusive lock of `dir`, recording our pid in the lock file
/// for a writer that waits.
fn lock(dir: &StateDir) -> Result<Lock, StoreError> {
    let path = dir.path().join(LOCK_FILE);
    let start = Instant::now();
    let mut announced = false;
    let lock = loop {
        match sys::lock_exclusive(dir.open_lock(LOCK_FILE)?, false) {
            Ok(lock) => break lock,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        if !announced && start.elapsed() >= LOCK_PATIENCE {
            let holder = dir.read(LOCK_FILE).ok().flatten().unwrap_or_default();
            let holder = String::from_utf8_lossy(&holder);
            let holder = match holder.trim() {
                "" => "unknown",
                pid => pid,
            };
            eprintln!(
                "mvnet: waiting for the state lock held by pid {holder} ({})",
                path.display()
            );
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The holder's pid, for the message above in the next writer.
    let pid = format!("{}\n", std::process::id());
    lock.set_len(0)
        .and_then(|()| lock.write_all_at(pid.as_bytes(), 0))
        .map_err(io_err(&path))?;
    Ok(lock)
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
