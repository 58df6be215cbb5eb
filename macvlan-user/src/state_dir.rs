//! The state directory (`/var/lib/mvnet`): opened once, checked the way
//! `ssh` checks `~/.ssh`, and every file in it reached relative to that
//! directory's descriptor without following symbolic links.
//!
//! * The directory must be a real directory (not a symbolic link), owned by
//!   the user running mvnet, and writable by nobody else; it is made 0700
//!   (and mvnet says so when it had to), its files 0600, whatever the umask:
//!   `state.json` holds command lines, which may carry secrets.
//! * Reads refuse anything but a regular file of ours (a FIFO would block,
//!   `/dev/zero` would never end) and anything over [`MAX_FILE_SIZE`].
//! * Writes go to a temporary file created with `O_EXCL|O_NOFOLLOW`, are
//!   synced, renamed over the target and the directory synced; on any error
//!   the temporary file is removed, so a full disk leaves the old file and
//!   nothing else.
use std::{
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::{
    store::{JOURNAL_FILE, LOCK_FILE, STATE_FILE},
    sys::fs::{self as sys, FileKind, Open, Stat},
    sys::text::{FileText, TextError},
};

/// Mode of the state directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file mvnet writes in it.
pub const FILE_MODE: u32 = 0o600;
/// The largest file mvnet reads from the state directory (a state with
/// thousands of containers is a few MiB).
pub const MAX_FILE_SIZE: u64 = 64 << 20;

#[derive(Debug, Error)]
pub enum StateDirError {
    #[error("state directory {path} is a symbolic link; mvnet refuses it so that nobody can redirect its files: point --state-dir (or MVNET_STATE_DIR) at the real directory (`readlink -f {path}`)")]
    DirIsSymlink { path: PathBuf },
    #[error("state directory {path} is not a directory; move it away or give another --state-dir")]
    NotADirectory { path: PathBuf },
    #[error("state directory {path} is owned by uid {owner}, not by uid {euid} which runs mvnet, so that user could change its files; if you trust its content, `chown -R {euid} {path}`, else give another --state-dir")]
    DirOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("state directory {path} is writable by {who} (mode {mode:04o}), who could plant or replace files in it; check its content, then `chmod 700 {path}`")]
    DirWritable {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error("state directory {path} is mode {mode:04o} (open to other users) but holds no state.json or lock, so it is not mvnet's and mvnet will not change it: give mvnet a directory of its own with --state-dir (it is created 0700), or `chmod 700 {path}` yourself")]
    NotOurs { path: PathBuf, mode: u32 },
    #[error("{path} is {}, not a regular file; mvnet refuses to use it: move it away (`mv {path} {path}.bad`) and retry", .kind.describe())]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("{path} is owned by uid {owner}, not by uid {euid} which runs mvnet; mvnet refuses to use it: move it away (`mv {path} {path}.bad`) and retry")]
    FileOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("{path} is larger than {cap} bytes, too large for an mvnet state file; move it away (`mv {path} {path}.bad`) and retry")]
    TooLarge { path: PathBuf, cap: u64 },
    // The OS error is part of the message (not a `source`), so that it is
    // printed once, before the hint.
    #[error("{what} {path}: {err}{}", hint(.err))]
    Io {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
}

/// Makes the open file `f` hold exactly `data`: written over what it held
/// from offset 0, then cut to length only if that was longer. (A
/// truncation to 0 first, as `O_TRUNC` or `set_len(0)` do, waits on ext4's
/// journal and makes the close start writeback (`auto_da_alloc`): 0.5-3 ms
/// a call on a busy disk.) Not atomic: for small files that one lock
/// guards, such as the state lock's pid and host-local's last reservation.
pub fn write_over(f: &File, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    f.write_all_at(data, 0)?;
    if f.metadata()?.len() > data.len() as u64 {
        f.set_len(data.len() as u64)?;
    }
    Ok(())
}

/// The fix for the errors a user can do something about.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "; free space on that filesystem and retry",
        Some(libc::EROFS) => {
            "; the filesystem is read-only: remount it read-write or give another --state-dir"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "; run mvnet as root (the state directory's owner)"
        }
        _ => "",
    }
}

type Result<T> = std::result::Result<T, StateDirError>;

/// An open, checked state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
    fixes: Vec<String>,
}

/// Whether a write waits for the disk (fsync) before it returns. Either
/// way a killed process leaves a whole file or record, never a torn one;
/// only a power loss can bring back an earlier state after an unsynced one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Synced,
    Unsynced,
}

impl StateDir {
    /// Opens the state directory for a command that writes: creates it
    /// (0700) if missing, checks it, and tightens the modes of the directory
    /// and of its files where they were looser than 0700/0600, saying so on
    /// standard error.
    pub fn open(path: &Path) -> Result<StateDir> {
        let (fd, created) = match sys::open_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create(path)?;
                (open_dir(path)?, true)
            }
            other => (other.map_err(|e| dir_error(path, e))?, false),
        };
        let st = check_dir(path, &fd)?;
        let mut dir = StateDir {
            path: path.to_owned(),
            fd,
            fixes: Vec::new(),
        };
        // A fresh directory is at most 0700 already (umask); only a looser
        // existing one is news, and only mvnet's own is changed: a
        // `--state-dir /var/lib` must not make /var/lib private.
        let loose = !created && st.mode & 0o077 != 0;
        if loose && !dir.is_mvnet_dir()? {
            return Err(StateDirError::NotOurs {
                path: path.to_owned(),
                mode: st.mode,
            });
        }
        if st.mode != DIR_MODE {
            sys::chmod(&dir.fd, DIR_MODE).map_err(dir.io("setting the mode of", None))?;
            if loose {
                dir.fixes.push(format!(
                    "state directory {} was mode {:04o}, open to other users; set it to 0700",
                    path.display(),
                    st.mode
                ));
            }
        }
        dir.tighten_files()?;
        for fix in &dir.fixes {
            eprintln!("mvnet: {fix}");
        }
        Ok(dir)
    }

    /// Opens the state directory for a command that only reads, with the
    /// same checks but changing nothing; `None` if it does not exist.
    pub fn open_existing(path: &Path) -> Result<Option<StateDir>> {
        let fd = match sys::open_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => other.map_err(|e| dir_error(path, e))?,
        };
        check_dir(path, &fd)?;
        Ok(Some(StateDir {
            path: path.to_owned(),
            fd,
            fixes: Vec::new(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What [`StateDir::open`] tightened (also printed on standard error).
    pub fn fixes(&self) -> &[String] {
        &self.fixes
    }

    /// The contents of the regular file `name` (at most [`MAX_FILE_SIZE`]
    /// bytes), or `None` if there is none.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.read_capped(name, MAX_FILE_SIZE)
    }

    /// [`StateDir::read`] with an explicit size cap.
    pub fn read_capped(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some((file, st)) = self.open_capped(name, cap)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(st.size as usize);
        // One byte over the cap tells a file that grew (or lied about its
        // size) from one that fits.
        (&file)
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(self.io("reading", Some(name)))?;
        if bytes.len() as u64 > cap {
            return Err(self.too_large(name, cap));
        }
        Ok(Some(bytes))
    }

    /// The regular file `name` as text, mapped rather than copied (see
    /// [`FileText`]), with what the file is (its inode); the text is as long as
    /// the file was when opened. The inner error: the file is not UTF-8.
    pub fn read_text(
        &self,
        name: &str,
        cap: u64,
    ) -> Result<Option<(std::result::Result<FileText, std::str::Utf8Error>, Stat)>> {
        let Some((file, st)) = self.open_capped(name, cap)? else {
            return Ok(None);
        };
        match FileText::of_file(&file, st.size) {
            Ok(text) => Ok(Some((Ok(text), st))),
            Err(TextError::NotUtf8(e)) => Ok(Some((Err(e), st))),
            Err(TextError::Io(e)) => Err(self.io("reading", Some(name))(e)),
        }
    }

    /// `name` opened for reading and checked, if it exists and is at most
    /// `cap` bytes.
    fn open_capped(&self, name: &str, cap: u64) -> Result<Option<(File, Stat)>> {
        let file = match sys::open_at(&self.fd, name, Open::Read, 0) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => other.map_err(|e| self.open_error(name, e))?,
        };
        let st = self.check_file(name, &file)?;
        if st.size > cap {
            return Err(self.too_large(name, cap));
        }
        Ok(Some((file, st)))
    }

    /// What `name` is now (without following a symbolic link), or `None`
    /// if there is none.
    pub fn stat(&self, name: &str) -> Result<Option<Stat>> {
        match sys::stat_at(&self.fd, name) {
            Ok(st) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("checking", Some(name))(e)),
        }
    }

    /// Replaces `name` with `bytes` durably and atomically: a crash or a
    /// full disk leaves the old file or the new one, never a torn or empty
    /// one, and no temporary file.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.replace(name, bytes, Durability::Synced).map(drop)
    }

    /// [`StateDir::write_atomic`], returning what the new file is (its
    /// inode); [`Durability::Unsynced`] leaves out the two fsyncs (still the
    /// old file or the new one after a killed process).
    pub fn replace(&self, name: &str, bytes: &[u8], durability: Durability) -> Result<Stat> {
        let synced = durability == Durability::Synced;
        let tmp = format!("{name}.tmp");
        // A temporary file left by a crash, or something planted there
        // (a symbolic link is removed, never followed).
        match sys::unlink_at(&self.fd, &tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(self.io("removing the stale", Some(&tmp))(e));
            }
            _ => {}
        }
        let written = (|| {
            let mut f = sys::open_at(&self.fd, &tmp, Open::CreateNew, FILE_MODE)
                .map_err(|e| self.open_error(&tmp, e))?;
            sys::chmod(&f, FILE_MODE).map_err(self.io("setting the mode of", Some(&tmp)))?;
            f.write_all(bytes).map_err(self.io("writing", Some(&tmp)))?;
            if synced {
                f.sync_all().map_err(self.io("syncing", Some(&tmp)))?;
            }
            let st = sys::stat(&f).map_err(self.io("checking", Some(&tmp)))?;
            sys::rename_at(&self.fd, &tmp, name).map_err(self.io("renaming over", Some(name)))?;
            Ok(st)
        })();
        let st = match written {
            Ok(st) => st,
            Err(e) => {
                let _ = sys::unlink_at(&self.fd, &tmp);
                return Err(e);
            }
        };
        if synced {
            sys::sync(&self.fd).map_err(self.io("syncing", None))?;
        }
        Ok(st)
    }

    /// Opens the existing file `name` for reading and writing in place
    /// (an append-only journal), checked and made 0600.
    pub fn open_in_place(&self, name: &str) -> Result<File> {
        self.open_own(name, Open::ReadWriteCreate)
    }

    /// Writes `bytes` at `offset` of `file` (the file `name`, opened with
    /// [`StateDir::open_in_place`]), after cutting off whatever is there
    /// from `offset` on, and syncs the data ([`Durability::Synced`]). On
    /// error it cuts the file at `offset` again, so that a half-written
    /// record never stays.
    pub fn write_at(
        &self,
        file: &File,
        name: &str,
        offset: u64,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<()> {
        use std::os::unix::fs::FileExt as _;
        let written = (|| {
            let len = sys::stat(file)
                .map_err(self.io("checking", Some(name)))?
                .size;
            if len != offset {
                file.set_len(offset)
                    .map_err(self.io("truncating", Some(name)))?;
            }
            file.write_all_at(bytes, offset)
                .map_err(self.io("writing", Some(name)))?;
            match durability {
                Durability::Synced => file.sync_data().map_err(self.io("syncing", Some(name))),
                Durability::Unsynced => Ok(()),
            }
        })();
        if written.is_err() {
            let _ = file.set_len(offset);
        }
        written
    }

    /// Creates (or empties) the log file `name`, mode 0600, for a
    /// container's output.
    pub fn create_log(&self, name: &str) -> Result<File> {
        self.open_own(name, Open::Truncate)
    }

    /// Opens the log file `name` for appending (creating it, mode 0600).
    pub fn append_log(&self, name: &str) -> Result<File> {
        self.open_own(name, Open::Append)
    }

    /// Opens (creating it if missing, mode 0600) the lock file `name`.
    pub fn open_lock(&self, name: &str) -> Result<File> {
        self.open_own(name, Open::ReadWriteCreate)
    }

    /// Removes `name`; false if there was none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        match sys::unlink_at(&self.fd, name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("removing", Some(name))(e)),
        }
    }

    /// Opens a file of ours for writing, checked and made 0600.
    fn open_own(&self, name: &str, how: Open) -> Result<File> {
        let file =
            sys::open_at(&self.fd, name, how, FILE_MODE).map_err(|e| self.open_error(name, e))?;
        let st = self.check_file(name, &file)?;
        if st.mode != FILE_MODE {
            sys::chmod(&file, FILE_MODE).map_err(self.io("setting the mode of", Some(name)))?;
        }
        Ok(file)
    }

    /// Whether this is an mvnet state directory: empty, or holding its
    /// state file or lock file.
    fn is_mvnet_dir(&self) -> Result<bool> {
        let mut entries = std::fs::read_dir(&self.path).map_err(self.io("listing", None))?;
        Ok(entries.next().is_none()
            || [STATE_FILE, JOURNAL_FILE, LOCK_FILE]
                .iter()
                .any(|f| sys::stat_at(&self.fd, f).is_ok()))
    }

    /// Makes mvnet's files in the directory 0600 (an older mvnet made them
    /// 0644), noting each one; other files are left alone.
    fn tighten_files(&mut self) -> Result<()> {
        let entries = std::fs::read_dir(&self.path).map_err(self.io("listing", None))?;
        for entry in entries {
            let entry = entry.map_err(self.io("listing", None))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_mvnet_file(&name) {
                continue;
            }
            // Only regular files, looked at without following links; the
            // rest is not ours and is refused when it is in the way.
            match sys::stat_at(&self.fd, &name) {
                Ok(st) if st.kind == FileKind::Regular && st.mode & 0o077 != 0 => {
                    let file = sys::open_at(&self.fd, &name, Open::Read, 0)
                        .map_err(|e| self.open_error(&name, e))?;
                    self.check_file(&name, &file)?;
                    sys::chmod(&file, FILE_MODE)
                        .map_err(self.io("setting the mode of", Some(&name)))?;
                    self.fixes.push(format!(
                        "{} was mode {:04o}, open to other users; set it to 0600",
                        self.path.join(&name).display(),
                        st.mode
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Refuses anything but a regular file owned by us.
    fn check_file(&self, name: &str, file: &File) -> Result<Stat> {
        let st = sys::stat(file).map_err(self.io("checking", Some(name)))?;
        let path = self.path.join(name);
        if st.kind != FileKind::Regular {
            return Err(StateDirError::NotRegular {
                path,
                kind: st.kind,
            });
        }
        let euid = sys::euid();
        if st.uid != euid {
            return Err(StateDirError::FileOwner {
                path,
                owner: st.uid,
                euid,
            });
        }
        Ok(st)
    }

    /// An open that failed: a symbolic link (ELOOP under O_NOFOLLOW) or a
    /// FIFO without a reader (ENXIO under O_NONBLOCK) is named as such.
    fn open_error(&self, name: &str, e: io::Error) -> StateDirError {
        let path = self.path.join(name);
        match e.raw_os_error() {
            Some(libc::ELOOP) => StateDirError::NotRegular {
                path,
                kind: FileKind::Symlink,
            },
            Some(libc::ENXIO) | Some(libc::EISDIR) => match sys::stat_at(&self.fd, name) {
                Ok(st) => StateDirError::NotRegular {
                    path,
                    kind: st.kind,
                },
                Err(_) => self.io("opening", Some(name))(e),
            },
            _ => self.io("opening", Some(name))(e),
        }
    }

    fn too_large(&self, name: &str, cap: u64) -> StateDirError {
        StateDirError::TooLarge {
            path: self.path.join(name),
            cap,
        }
    }

    /// An I/O error on `name` (or on the directory itself).
    fn io(
        &self,
        what: &'static str,
        name: Option<&str>,
    ) -> impl FnOnce(io::Error) -> StateDirError {
        let path = match name {
            Some(n) => self.path.join(n),
            None => self.path.clone(),
        };
        move |err| StateDirError::Io { what, path, err }
    }
}

/// mvnet's files in the state directory: the state, its journal, its
/// lock, and the containers' logs (`<64 hex digits>.log`).
fn is_mvnet_file(name: &str) -> bool {
    let log_of = |id: &str| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    name == STATE_FILE
        || name == JOURNAL_FILE
        || name == LOCK_FILE
        || name.strip_suffix(".log").is_some_and(log_of)
}

/// Creates the state directory 0700 (its missing parents 0755).
fn create(path: &Path) -> Result<()> {
    let io = |what| {
        move |err| StateDirError::Io {
            what,
            path: path.to_owned(),
            err,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io("creating the parents of"))?;
    }
    match sys::mkdir(path, DIR_MODE) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io("creating")(e)),
        _ => Ok(()),
    }
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    sys::open_dir(path).map_err(|e| dir_error(path, e))
}

fn dir_error(path: &Path, e: io::Error) -> StateDirError {
    let path = path.to_owned();
    // O_DIRECTORY|O_NOFOLLOW fails with ENOTDIR on a symbolic link too.
    match e.raw_os_error() {
        Some(libc::ELOOP) => StateDirError::DirIsSymlink { path },
        Some(libc::ENOTDIR) => match sys::lstat(&path) {
            Ok(st) if st.kind == FileKind::Symlink => StateDirError::DirIsSymlink { path },
            _ => StateDirError::NotADirectory { path },
        },
        _ => StateDirError::Io {
            what: "opening",
            path,
            err: e,
        },
    }
}

/// The directory must be ours and writable by nobody else.
fn check_dir(path: &Path, fd: &OwnedFd) -> Result<Stat> {
    let st = sys::stat(fd).map_err(|err| StateDirError::Io {
        what: "checking",
        path: path.to_owned(),
        err,
    })?;
    let euid = sys::euid();
    if st.uid != euid {
        return Err(StateDirError::DirOwner {
            path: path.to_owned(),
            owner: st.uid,
            euid,
        });
    }
    let who = match (st.mode & 0o020 != 0, st.mode & 0o002 != 0) {
        (true, true) => Some("its group and other users"),
        (true, false) => Some("its group"),
        (false, true) => Some("other users"),
        (false, false) => None,
    };
    if let Some(who) = who {
        return Err(StateDirError::DirWritable {
            path: path.to_owned(),
            who,
            mode: st.mode,
        });
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{symlink, PermissionsExt as _},
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;

    /// A scratch directory under the system's temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "mvnet-statedir-unit-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    }

    fn names(p: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_a_private_directory_and_private_files() {
        let s = Scratch::new();
        let path = s.0.join("a/b/state");
        let dir = StateDir::open(&path).unwrap();
        assert_eq!(mode(&path), 0o700);
        assert!(dir.fixes().is_empty(), "{:?}", dir.fixes());
        dir.write_atomic("state.json", b"{}").unwrap();
        drop(dir.create_log("x.log").unwrap());
        drop(dir.open_lock("lock").unwrap());
        for f in ["state.json", "x.log", "lock"] {
            assert_eq!(mode(&path.join(f)), 0o600, "{f}");
        }
        assert_eq!(names(&path), ["lock", "state.json", "x.log"]);
        assert_eq!(dir.read("state.json").unwrap().unwrap(), b"{}");
        assert_eq!(dir.read("missing").unwrap(), None);
    }

    #[test]
    fn tightens_a_loose_directory_and_its_files_and_says_so() {
        let s = Scratch::new();
        let log = format!("{}.log", "ab".repeat(32));
        chmod(&s.0, 0o755);
        for (f, m) in [
            ("state.json", 0o644),
            (log.as_str(), 0o640),
            ("lock", 0o600),
            ("notes.txt", 0o644),
        ] {
            fs::write(s.0.join(f), "x").unwrap();
            chmod(&s.0.join(f), m);
        }
        let dir = StateDir::open(&s.0).unwrap();
        assert_eq!(mode(&s.0), 0o700);
        assert_eq!(mode(&s.0.join("state.json")), 0o600);
        assert_eq!(mode(&s.0.join(&log)), 0o600);
        // Not mvnet's: left alone.
        assert_eq!(mode(&s.0.join("notes.txt")), 0o644);
        let p = s.0.display();
        let mut fixes = dir.fixes().to_vec();
        fixes.sort();
        assert_eq!(
            fixes,
            [
                format!("{p}/{log} was mode 0640, open to other users; set it to 0600"),
                format!("{p}/state.json was mode 0644, open to other users; set it to 0600"),
                format!("state directory {p} was mode 0755, open to other users; set it to 0700"),
            ]
        );
        // Only once: the next open has nothing to fix.
        assert!(StateDir::open(&s.0).unwrap().fixes().is_empty());
    }

    #[test]
    fn a_loose_directory_that_is_not_mvnets_is_refused_and_left_alone() {
        let s = Scratch::new();
        chmod(&s.0, 0o755);
        fs::write(s.0.join("script.sh"), "x").unwrap();
        chmod(&s.0.join("script.sh"), 0o755);
        let e = StateDir::open(&s.0).unwrap_err();
        let p = s.0.display();
        assert_eq!(e.to_string(), format!("state directory {p} is mode 0755 (open to other users) but holds no state.json or lock, so it is not mvnet's and mvnet will not change it: give mvnet a directory of its own with --state-dir (it is created 0700), or `chmod 700 {p}` yourself"));
        assert_eq!(mode(&s.0), 0o755);
        assert_eq!(names(&s.0), ["script.sh"]);
        // A private directory (say /root) is used, its other files untouched.
        chmod(&s.0, 0o700);
        let dir = StateDir::open(&s.0).unwrap();
        assert!(dir.fixes().is_empty());
        assert_eq!(mode(&s.0.join("script.sh")), 0o755);
    }

    #[test]
    fn readers_check_but_change_nothing() {
        let s = Scratch::new();
        let missing = s.0.join("none");
        assert!(StateDir::open_existing(&missing).unwrap().is_none());
        assert!(!missing.exists());
        chmod(&s.0, 0o755);
        let dir = StateDir::open_existing(&s.0).unwrap().unwrap();
        assert!(dir.fixes().is_empty());
        assert_eq!(mode(&s.0), 0o755);
    }

    #[test]
    fn refuses_a_symlinked_directory() {
        let s = Scratch::new();
        let real = s.0.join("real");
        fs::create_dir(&real).unwrap();
        let link = s.0.join("link");
        symlink(&real, &link).unwrap();
        for e in [
            StateDir::open(&link).unwrap_err(),
            StateDir::open_existing(&link).unwrap_err(),
        ] {
            assert!(matches!(e, StateDirError::DirIsSymlink { .. }), "{e:?}");
            assert_eq!(
                e.to_string(),
                format!("state directory {} is a symbolic link; mvnet refuses it so that nobody can redirect its files: point --state-dir (or MVNET_STATE_DIR) at the real directory (`readlink -f {}`)", link.display(), link.display())
            );
        }
        let file = s.0.join("file");
        fs::write(&file, "").unwrap();
        let e = StateDir::open(&file).unwrap_err();
        assert!(matches!(e, StateDirError::NotADirectory { .. }), "{e:?}");
    }

    #[test]
    fn refuses_a_directory_others_can_write_and_leaves_it_alone() {
        for (m, who) in [
            (0o770, "its group"),
            (0o703, "other users"),
            (0o777, "its group and other users"),
            (0o1777, "its group and other users"),
        ] {
            let s = Scratch::new();
            chmod(&s.0, m);
            let e = StateDir::open(&s.0).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "state directory {p} is writable by {who} (mode {m:04o}), who could plant or replace files in it; check its content, then `chmod 700 {p}`",
                    p = s.0.display()
                )
            );
            assert_eq!(mode(&s.0), m);
            assert!(names(&s.0).is_empty(), "created nothing");
        }
    }

    #[test]
    fn write_never_follows_a_planted_temporary_file() {
        let s = Scratch::new();
        let victim = s.0.join("victim");
        fs::write(&victim, "precious").unwrap();
        let dir = StateDir::open(&s.0.join("state")).unwrap();
        symlink(&victim, s.0.join("state/state.json.tmp")).unwrap();
        dir.write_atomic("state.json", b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read(s.0.join("state/state.json")).unwrap(), b"new");
        assert_eq!(names(&s.0.join("state")), ["state.json"]);
        assert_eq!(mode(&s.0.join("state/state.json")), 0o600);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_file() {
        let s = Scratch::new();
        let dir = StateDir::open(&s.0).unwrap();
        // A non-empty directory where the file should go: the rename fails.
        fs::create_dir(s.0.join("state.json")).unwrap();
        fs::write(s.0.join("state.json/keep"), "").unwrap();
        let e = dir.write_atomic("state.json", b"new").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("renaming over {}/state.json: ", s.0.display())),
            "{e}"
        );
        assert_eq!(names(&s.0), ["state.json"]);
    }

    #[test]
    fn refuses_special_files_symlinks_and_oversized_files() {
        let s = Scratch::new();
        let dir = StateDir::open(&s.0).unwrap();
        nix::unistd::mkfifo(
            &s.0.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        symlink("/dev/zero", s.0.join("zero")).unwrap();
        let p = s.0.display();
        let e = dir.read("fifo").unwrap_err();
        assert_eq!(e.to_string(), format!("{p}/fifo is a FIFO (named pipe), not a regular file; mvnet refuses to use it: move it away (`mv {p}/fifo {p}/fifo.bad`) and retry"));
        // Writers do not block on it either (no reader: ENXIO).
        let e = dir.create_log("fifo").unwrap_err();
        assert!(
            matches!(
                e,
                StateDirError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = dir.open_lock("fifo").unwrap_err();
        assert!(
            matches!(
                e,
                StateDirError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{e:?}"
        );
        for e in [
            dir.read("zero").unwrap_err(),
            dir.create_log("zero").unwrap_err(),
        ] {
            assert!(
                matches!(
                    e,
                    StateDirError::NotRegular {
                        kind: FileKind::Symlink,
                        ..
                    }
                ),
                "{e:?}"
            );
        }
        assert_eq!(
            fs::read_link(s.0.join("zero")).unwrap(),
            Path::new("/dev/zero")
        );

        fs::write(s.0.join("big"), [b'x'; 11]).unwrap();
        assert_eq!(dir.read_capped("big", 11).unwrap().unwrap().len(), 11);
        let e = dir.read_capped("big", 10).unwrap_err();
        assert_eq!(e.to_string(), format!("{p}/big is larger than 10 bytes, too large for an mvnet state file; move it away (`mv {p}/big {p}/big.bad`) and retry"));
        // A sparse file over the real cap is refused without reading it.
        let huge = fs::File::create(s.0.join("huge")).unwrap();
        huge.set_len(MAX_FILE_SIZE + 1).unwrap();
        let e = dir.read("huge").unwrap_err();
        assert!(
            matches!(
                e,
                StateDirError::TooLarge {
                    cap: MAX_FILE_SIZE,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn logs_are_private_and_truncated_and_removable() {
        let s = Scratch::new();
        let dir = StateDir::open(&s.0).unwrap();
        fs::write(s.0.join("a.log"), "old output").unwrap();
        chmod(&s.0.join("a.log"), 0o644);
        let mut f = dir.create_log("a.log").unwrap();
        f.write_all(b"new").unwrap();
        assert_eq!(fs::read_to_string(s.0.join("a.log")).unwrap(), "new");
        assert_eq!(mode(&s.0.join("a.log")), 0o600);
        assert!(dir.remove("a.log").unwrap());
        assert!(!dir.remove("a.log").unwrap());
        assert!(names(&s.0).is_empty());
    }
}
