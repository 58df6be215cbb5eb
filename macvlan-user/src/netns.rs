//! Network namespaces: named ones under `/run/netns`, made the way iproute2
//! makes them (so `ip netns` sees ours and we see its), and running code
//! inside one.
//!
//! A namespace switch (`setns`) applies to the calling thread only, so code
//! that must run inside a namespace runs on a thread of its own
//! ([`run_in`]); sockets it creates there (netlink, AF_PACKET) stay bound to
//! that namespace for their whole life.
use std::{
    fs::{self, File, OpenOptions},
    io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use crate::sys::{self, mount::mount, process};

use thiserror::Error;

/// Where named namespaces are bind-mounted, as in iproute2.
pub const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("network namespace name {0:?} is invalid: use 1-64 characters of [A-Za-z0-9_.-], not starting with '.'")]
    InvalidName(String),
    #[error("network namespace {0} already exists; pick another name or remove it with `ip netns delete {0}`")]
    Exists(String),
    #[error("network namespace {0} not found; list namespaces with `ip netns list`")]
    NotFound(String),
    #[error("{what} failed for network namespace {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the thread running inside network namespace {0} panicked")]
    Panicked(PathBuf),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NetnsError {
    let path = path.to_owned();
    move |source| NetnsError::Io { what, path, source }
}

/// A handle on a network namespace, named (under [`NETNS_RUN_DIR`]) or given
/// by path (e.g. `/proc/PID/ns/net`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetNs {
    path: PathBuf,
}

impl NetNs {
    /// The namespace at `path` (a bind mount or a `/proc/PID/ns/net` file).
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The named namespace `name`, which must exist.
    pub fn named(name: &str) -> Result<Self, NetnsError> {
        validate_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        if !path.exists() {
            return Err(NetnsError::NotFound(name.to_owned()));
        }
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name, for a namespace under [`NETNS_RUN_DIR`].
    pub fn name(&self) -> Option<&str> {
        if self.path.parent() == Some(Path::new(NETNS_RUN_DIR)) {
            self.path.file_name().and_then(|n| n.to_str())
        } else {
            None
        }
    }

    /// Runs `f` on a new thread inside this namespace and returns its result.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        run_in(Some(self), f)
    }
}

/// Runs `f` on a new thread, inside `ns` if given (else in the caller's
/// namespace), and returns its result. The thread ends with `f`, so the
/// namespace switch never leaks to other code.
pub fn run_in<T, F>(ns: Option<&NetNs>, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|scope| spawn_in(scope, ns, f)?.join())
}

/// A thread started by [`spawn_in`].
pub struct Spawned<'scope, T> {
    handle: std::thread::ScopedJoinHandle<'scope, Result<T, NetnsError>>,
    path: PathBuf,
}

impl<T> Spawned<'_, T> {
    /// Waits for the thread and returns what `f` returned.
    pub fn join(self) -> Result<T, NetnsError> {
        self.handle
            .join()
            .map_err(|_| NetnsError::Panicked(self.path))?
    }
}

/// [`run_in`] without waiting: starts `f` on a new thread of `scope`,
/// inside `ns` if given, so that the caller works meanwhile (mvnet-cni's
/// DEL reads its state while the kernel deletes the sandbox's link).
pub fn spawn_in<'scope, T, F>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    ns: Option<&'scope NetNs>,
    f: F,
) -> Result<Spawned<'scope, T>, NetnsError>
where
    T: Send + 'scope,
    F: FnOnce() -> T + Send + 'scope,
{
    let file = match ns {
        Some(ns) => Some(File::open(&ns.path).map_err(io_err("open", &ns.path))?),
        None => None,
    };
    let handle = scope.spawn(move || -> Result<T, NetnsError> {
        if let (Some(file), Some(ns)) = (&file, ns) {
            if let Err(source) = sys::netns::setns_net(file.as_fd()) {
                return Err(NetnsError::Io {
                    what: "setns",
                    path: ns.path.clone(),
                    source,
                });
            }
        }
        Ok(f())
    });
    Ok(Spawned {
        handle,
        path: ns.map(|n| n.path.clone()).unwrap_or_default(),
    })
}

/// Checks a namespace name: iproute2 accepts any file name; we are stricter
/// so names are safe in paths, pins and logs.
pub fn validate_name(name: &str) -> Result<(), NetnsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NetnsError::InvalidName(name.to_owned()))
    }
}

/// Makes [`NETNS_RUN_DIR`] a shared mount point, as iproute2 does, so that
/// namespace bind mounts propagate to every mount namespace.
fn prepare_run_dir() -> Result<(), NetnsError> {
    let dir = Path::new(NETNS_RUN_DIR);
    fs::create_dir_all(dir).map_err(io_err("mkdir", dir))?;
    // Shared, so that a namespace's unmount propagates to other mount
    // namespaces and frees it sooner. Only the mount point itself once it
    // is one (iproute2 shares it recursively every time): the namespaces'
    // mounts made under a shared /run/netns are shared already, and the
    // walk over every one of them on every `create` took 0.1 to 0.7 ms
    // with 4000 containers (`invent_group_ids`).
    match mount("none", dir, "none", libc::MS_SHARED) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then share it
            // and whatever was mounted under it.
            mount(NETNS_RUN_DIR, dir, "none", libc::MS_BIND | libc::MS_REC)
                .map_err(io_err("bind mount", dir))?;
            mount("none", dir, "none", libc::MS_SHARED | libc::MS_REC)
                .map_err(io_err("make shared", dir))
        }
        Err(e) => Err(io_err("make shared", dir)(e)),
    }
}

/// Creates the named namespace `name` (like `ip netns add`). Fails if it
/// exists; leaves nothing behind on failure.
pub fn create(name: &str) -> Result<NetNs, NetnsError> {
    validate_name(name)?;
    prepare_run_dir()?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(NetnsError::Exists(name.to_owned()))
        }
        Err(e) => return Err(io_err("create", &path)(e)),
    }
    let bind = std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<()> {
                // Affects this (short-lived) thread only.
                sys::netns::unshare_net()?;
                mount("/proc/thread-self/ns/net", &path, "none", libc::MS_BIND)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if let Err(e) = bind {
        let _ = fs::remove_file(&path);
        return Err(io_err("unshare and bind mount", &path)(e));
    }
    Ok(NetNs { path })
}

/// Deletes the named namespace `name` (like `ip netns delete`). Links inside
/// it go with it once no process holds it.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    validate_name(name)?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    if !path.exists() {
        return Err(NetnsError::NotFound(name.to_owned()));
    }
    let ino = inode(&path);
    // EINVAL = not mounted, fine.
    let _ = sys::mount::umount_detach(&path);
    fs::remove_file(&path).map_err(io_err("remove", &path))?;
    // A netlink socket of ours in it would keep it, and its links, alive.
    if let Some(ino) = ino {
        crate::netlink::connections::forget(ino);
    }
    Ok(())
}

/// Whether a namespace named `name` is under [`NETNS_RUN_DIR`] (one look
/// at that entry, not a listing of every namespace there).
pub fn is_named(name: &str) -> bool {
    fs::symlink_metadata(Path::new(NETNS_RUN_DIR).join(name)).is_ok()
}

/// Names of the namespaces under [`NETNS_RUN_DIR`].
pub fn list() -> Vec<String> {
    let Ok(dir) = fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Whether `path` is a network namespace (`/proc/PID/ns/net`, a bind mount
/// under `/run/netns`): the kernel tells the type of an nsfs file; any
/// other file fails the ioctl.
pub fn is_network_namespace(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    Ok(sys::netns::ns_type(file.as_fd()).is_ok_and(|kind| kind == libc::CLONE_NEWNET))
}

/// `statfs` magic of nsfs, the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The inode of the network namespace at `path` (a bind mount under
/// [`NETNS_RUN_DIR`] or a `/proc/PID/ns/net` file); `None` unless `path`
/// really is a namespace (a file left by an interrupted `ip netns add` or
/// `delete` is not).
pub fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    if !is_namespace(path) {
        return None;
    }
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Whether `path` is a namespace file (on nsfs).
pub fn is_namespace(path: &Path) -> bool {
    sys::mount::fs_type(path).is_ok_and(|t| t == NSFS_MAGIC)
}

/// Writes `value` to `/proc/sys/net/<rel>` of the calling thread's
/// network namespace (as `ip netns exec NS sysctl -w` would).
///
/// Through a procfs instance of its own, not /proc: every namespace whose
/// /proc/sys/net anyone looked at keeps a `net` dentry under /proc/sys,
/// all on one hash chain whose entries the kernel compares one by one
/// under a global lock (`proc_sys_compare`), so the first lookup there in
/// a new namespace walks them all: 6.6 ms with 4000 containers on this
/// project's VM, and growing with every container made. A private
/// instance's dentries are its own and leave with it (0.27 ms, the mount
/// included). Where the kernel refuses the instance (before 5.2, or no
/// right to mount), /proc.
pub fn write_net_sysctl(rel: &str, value: &str) -> io::Result<()> {
    let path = format!("sys/net/{rel}");
    match sys::mount::detached_proc() {
        Ok(proc) => {
            use std::io::Write as _;
            sys::fs::open_at(&proc, &path, sys::fs::Open::Truncate, 0o644)?
                .write_all(value.as_bytes())
        }
        Err(_) => fs::write(format!("/proc/{path}"), value),
    }
}

/// The inode of the calling thread's network namespace.
pub fn current_inode() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino())
}

/// The named namespace `name` if it is not really one: a file left behind
/// when `create` or `delete` was interrupted between the file and the
/// mount. `None` if it is a namespace or does not exist.
pub fn stale_file(name: &str) -> Option<PathBuf> {
    let path = Path::new(NETNS_RUN_DIR).join(name);
    (path.exists() && !is_namespace(&path)).then_some(path)
}

/// Every process whose network namespace has inode `ino`, except this one.
pub fn pids_in(ino: u64) -> Vec<libc::pid_t> {
    use std::os::unix::fs::MetadataExt as _;
    let me = std::process::id() as libc::pid_t;
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino))
        .collect()
}

/// Ends every process in the namespace with inode `ino`: SIGTERM, then
/// SIGKILL after `grace`; returns once none is left (or after `grace` plus
/// five seconds, with the pids still there).
pub fn kill_all(ino: u64, grace: std::time::Duration) -> Vec<libc::pid_t> {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let mut killed = false;
    for pid in pids_in(ino) {
        let _ = process::kill(pid, libc::SIGTERM);
    }
    loop {
        let left = pids_in(ino);
        for &pid in &left {
            // Reap our own children (a foreground or detached command);
            // harmless for others.
            process::reap_nohang(pid);
        }
        let left: Vec<_> = left
            .into_iter()
            .filter(|&pid| {
                // A zombie keeps its /proc entry but not its namespace.
                fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    })
                    .unwrap_or(false)
            })
            .collect();
        if left.is_empty() {
            return left;
        }
        let elapsed = start.elapsed();
        if elapsed >= grace + Duration::from_secs(5) {
            return left;
        }
        if elapsed >= grace && !killed {
            for &pid in &left {
                let _ = process::kill(pid, libc::SIGKILL);
            }
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_files_are_told_from_plain_files() {
        let own = Path::new("/proc/self/ns/net");
        assert!(is_namespace(own));
        assert_eq!(inode(own), Some(current_inode().unwrap()));
        let dir = std::env::temp_dir().join(format!("mvnet-ns-test-{}", std::process::id()));
        fs::write(&dir, b"").unwrap();
        // What an interrupted `ip netns add` leaves: a file, no namespace.
        assert!(!is_namespace(&dir));
        assert_eq!(inode(&dir), None);
        fs::remove_file(&dir).unwrap();
        assert_eq!(inode(&dir), None);
    }

    #[test]
    fn this_process_is_never_listed_in_its_own_namespace() {
        let pids = pids_in(current_inode().unwrap());
        assert!(!pids.contains(&(std::process::id() as libc::pid_t)));
    }
}
