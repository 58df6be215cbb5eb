//! Filesystem calls relative to a directory file descriptor, never following
//! a symbolic link in the last component (through `nix`, so nearly without
//! `unsafe`). [`crate::state_dir`] builds its checks on these.
use std::{
    fs::File,
    io,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use nix::{
    fcntl::{self, AtFlags, Flock, FlockArg, OFlag},
    sys::stat::{self, Mode, SFlag},
    unistd::{self, UnlinkatFlags},
};

/// An exclusive `flock` on a file, released when dropped.
pub type Lock = Flock<File>;

/// What kind of file a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl FileKind {
    fn of(st_mode: u32) -> FileKind {
        match SFlag::from_bits_truncate(st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => FileKind::Directory,
            SFlag::S_IFLNK => FileKind::Symlink,
            SFlag::S_IFIFO => FileKind::Fifo,
            SFlag::S_IFCHR => FileKind::CharDevice,
            SFlag::S_IFBLK => FileKind::BlockDevice,
            SFlag::S_IFSOCK => FileKind::Socket,
            _ => FileKind::Regular,
        }
    }

    /// "a FIFO", "a character device", ... for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
        }
    }
}

/// The fields of `stat` that the state directory's checks use.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub kind: FileKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub size: u64,
    /// The inode number: tells a file replaced by a rename from the one
    /// that was there.
    pub ino: u64,
}

impl From<stat::FileStat> for Stat {
    fn from(st: stat::FileStat) -> Stat {
        Stat {
            kind: FileKind::of(st.st_mode),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            size: st.st_size.max(0) as u64,
            ino: st.st_ino,
        }
    }
}

/// How [`open_at`] opens a file. Every mode adds `O_NOFOLLOW` (a symbolic
/// link fails with ELOOP), `O_NONBLOCK` (a FIFO opens at once instead of
/// waiting for a writer, so the caller's `fstat` can refuse it) and
/// `O_CLOEXEC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// Read an existing file.
    Read,
    /// Read and write, creating it if missing (a lock file).
    ReadWriteCreate,
    /// Write a file that must not exist yet (`O_EXCL`): a temporary file.
    CreateNew,
    /// Write from empty, creating it if missing (a log file).
    Truncate,
    /// Write at the end, creating it if missing (a restarted container's log).
    Append,
}

/// Opens `name` in `dir` with mode `perm` for files it creates (the umask
/// still applies; callers [`chmod`] to be exact).
pub fn open_at(dir: impl AsFd, name: &str, how: Open, perm: u32) -> io::Result<File> {
    let base = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let flags = match how {
        Open::Read => OFlag::O_RDONLY,
        Open::ReadWriteCreate => OFlag::O_RDWR | OFlag::O_CREAT,
        Open::CreateNew => OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
        Open::Truncate => OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC,
        Open::Append => OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND,
    };
    let fd = fcntl::openat(dir, name, base | flags, Mode::from_bits_truncate(perm))?;
    Ok(File::from(fd))
}

/// Opens the directory at `path`, refusing a symbolic link and anything
/// that is not a directory (both ENOTDIR; [`lstat`] tells which).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(fcntl::openat(fcntl::AT_FDCWD, path, flags, Mode::empty())?)
}

/// Creates the directory `path` with mode `perm` (minus the umask).
pub fn mkdir(path: &Path, perm: u32) -> io::Result<()> {
    Ok(stat::mkdirat(
        fcntl::AT_FDCWD,
        path,
        Mode::from_bits_truncate(perm),
    )?)
}

/// `fstat` of an open file or directory.
pub fn stat(fd: impl AsFd) -> io::Result<Stat> {
    Ok(stat::fstat(fd)?.into())
}

/// `fstatat` of `name` in `dir`, not following a symbolic link.
pub fn stat_at(dir: impl AsFd, name: &str) -> io::Result<Stat> {
    Ok(stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?.into())
}

/// `lstat` of `path`: what is there, without following a symbolic link.
pub fn lstat(path: &Path) -> io::Result<Stat> {
    Ok(stat::fstatat(fcntl::AT_FDCWD, path, AtFlags::AT_SYMLINK_NOFOLLOW)?.into())
}

/// Sets the permission bits of an open file or directory.
pub fn chmod(fd: impl AsFd, perm: u32) -> io::Result<()> {
    Ok(stat::fchmod(fd, Mode::from_bits_truncate(perm))?)
}

/// Renames `from` to `to`, both in `dir` (atomically replacing `to`; a
/// symbolic link at `to` is replaced, never followed).
pub fn rename_at(dir: impl AsFd + Copy, from: &str, to: &str) -> io::Result<()> {
    Ok(fcntl::renameat(dir, from, dir, to)?)
}

/// Removes the directory entry `name` in `dir` (a symbolic link itself,
/// never its target).
pub fn unlink_at(dir: impl AsFd, name: &str) -> io::Result<()> {
    Ok(unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?)
}

/// `fsync` of an open directory (makes a rename in it durable).
pub fn sync(fd: impl AsFd) -> io::Result<()> {
    Ok(unistd::fsync(fd)?)
}

/// Takes an exclusive `flock` on `file`; with `wait` false, fails with
/// `WouldBlock` at once when another process holds it.
pub fn lock_exclusive(file: File, wait: bool) -> io::Result<Lock> {
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    Flock::lock(file, arg).map_err(|(_, errno)| errno.into())
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail (nix has it only
    // behind its `user` feature).
    unsafe { libc::geteuid() }
}
