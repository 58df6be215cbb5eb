//! Persistent state: one JSON document under the state directory, written
//! atomically (temp file, fsync, rename, fsync of the directory) and guarded
//! by an exclusive `flock` so that concurrent writers serialise instead of
//! corrupting it. Writers hold the lock only while they change state (not
//! while a foreground container runs); readers take no lock and read the
//! old or the new file, never a torn one. The lock file holds the current
//! holder's pid, so a waiting writer can say whom it waits for.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::{fd::AsRawFd, unix::fs::FileExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
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

/// The state directory. Writers hold its exclusive lock only while they
/// change state ([`Store::open`], [`Store::unlock`], [`Store::relock`]);
/// readers use [`peek`] and take no lock.
pub struct Store {
    dir: PathBuf,
    lock: Option<File>,
}

/// How long a writer waits silently for the lock before it says whom it
/// waits for.
const LOCK_PATIENCE: Duration = Duration::from_secs(1);

impl Store {
    /// Opens (creating if needed) and locks the state directory. Waits
    /// while another `mvnet` holds the lock, saying so (with its pid) after
    /// a second.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut store = Store {
            dir: dir.to_owned(),
            lock: None,
        };
        store.relock()?;
        Ok(store)
    }

    /// The state directory without the lock, for a reader.
    pub fn unlocked(dir: &Path) -> Store {
        Store {
            dir: dir.to_owned(),
            lock: None,
        }
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
        if self.lock.is_none() {
            self.lock = Some(lock(&self.dir.join(LOCK_FILE))?);
        }
        Ok(())
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

/// Takes the exclusive lock on `path`, recording our pid in it for a
/// writer that waits.
fn lock(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let try_lock = || -> io::Result<bool> {
        // SAFETY: valid fd; the lock is released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(false),
            _ => Err(e),
        }
    };
    let start = Instant::now();
    let mut announced = false;
    while !try_lock().map_err(io_err(path))? {
        if !announced && start.elapsed() >= LOCK_PATIENCE {
            let holder = fs::read_to_string(path).unwrap_or_default();
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown" } else { holder };
            eprintln!(
                "mvnet: waiting for the state lock held by pid {holder} ({})",
                path.display()
            );
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The holder's pid, for the message above in the next writer.
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        .map_err(io_err(path))?;
    Ok(file)
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
