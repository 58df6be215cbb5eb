//! The rtnetlink connections of this process: one per network namespace
//! (by inode), opened in that namespace the first time a command needs it
//! and reused for the rest of the command; never a runtime or a socket per
//! call.
//!
//! A netlink socket belongs to the namespace it was created in for its
//! whole life, whatever the thread that later uses it, so a connection is
//! made once by a thread inside the namespace and then used from any
//! thread. Each connection has its own current-thread tokio runtime, which
//! drives its socket task; a call runs its future with `block_on` on that
//! runtime from the calling thread, so the request, the kernel's answer and
//! the future's wake-ups all stay on that one thread. (One runtime for the
//! whole process on a background thread costs two thread wake-ups per
//! request instead; on a loaded machine a call from a new thread then took
//! twice as long as a runtime and a socket of its own.) A call made while
//! the connection is busy with another (a call inside a call's closure, or
//! on another thread) gets a connection of its own for that call only.
//!
//! A socket also holds its namespace alive: a namespace that everyone
//! else has let go of stays, with its links and their MAC addresses, until
//! the socket closes. So a connection into any namespace but this
//! process's own is closed once it has been idle for [`IDLE`], or at once
//! when mvnet deletes the namespace ([`forget`]); a long-running process
//! (`serve`, `top`) never holds a container's namespace for longer.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    time::{Duration, Instant},
};

use tokio::runtime::Runtime;

use super::{NetlinkError, Result};
use crate::netns;

/// How long a connection into another namespace outlives its last use.
/// A command's calls into one namespace follow each other within
/// milliseconds; a long-running process's come seconds apart.
pub const IDLE: Duration = Duration::from_millis(250);

/// An rtnetlink connection and the runtime that drives its socket.
struct Connection {
    runtime: Arc<Runtime>,
    handle: rtnetlink::Handle,
    /// Set when the socket's task ends: netlink-proto closes the socket
    /// when a send fails (ENOMEM, ENOBUFS), and every request in flight
    /// then ends without an answer, which reads as "no such link" or an
    /// empty dump. A call during which it was set has no answer to trust.
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Opens a connection in the calling thread's namespace.
    fn open() -> Result<Connection> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetlinkError::Runtime)?;
        // The socket is created here, in this thread's namespace; it
        // registers with the runtime's reactor.
        let (conn, handle, _) = {
            let _enter = runtime.enter();
            rtnetlink::new_connection().map_err(NetlinkError::Socket)?
        };
        // Polled whenever a caller blocks on this runtime.
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        runtime.spawn(async move {
            conn.await;
            flag.store(true, Ordering::SeqCst);
        });
        Ok(Connection {
            runtime: Arc::new(runtime),
            handle,
            closed,
        })
    }

    /// Another handle on the same connection.
    fn share(&self) -> Connection {
        Connection {
            runtime: self.runtime.clone(),
            handle: self.handle.clone(),
            closed: self.closed.clone(),
        }
    }

    /// Closes the socket: its task goes with the runtime. Never blocks, so
    /// it may run anywhere, inside async code too.
    fn close(self) {
        drop(self.handle);
        if let Ok(rt) = Arc::try_unwrap(self.runtime) {
            rt.shutdown_background();
        }
    }
}

struct Pooled {
    conn: Connection,
    /// A call is using it.
    busy: bool,
    /// When the last call let go of it.
    idle_since: Instant,
}

fn pool() -> MutexGuard<'static, HashMap<u64, Pooled>> {
    static POOL: OnceLock<Mutex<HashMap<u64, Pooled>>> = OnceLock::new();
    POOL.get_or_init(Default::default)
        .lock()
        // A panic while the map was held left it consistent (every
        // change is one insert, update or remove).
        .unwrap_or_else(|e| e.into_inner())
}

/// The inode of this process's own namespace (its main thread's), whose
/// connection is never closed.
fn own_namespace() -> Option<u64> {
    static OWN: OnceLock<Option<u64>> = OnceLock::new();
    *OWN.get_or_init(|| netns::inode(std::path::Path::new("/proc/self/ns/net")))
}

/// A connection in use by one call; back to the pool (or closed) on drop.
pub struct Lease {
    /// The namespace of a pooled connection; `None` for one of this call's
    /// own.
    pooled: Option<u64>,
    conn: Option<Connection>,
}

impl Lease {
    pub fn handle(&self) -> rtnetlink::Handle {
        self.conn
            .as_ref()
            .expect("lease holds a connection")
            .handle
            .clone()
    }

    /// Runs `fut` to completion on the connection's runtime, from the
    /// calling thread (which must not be running async code); an error,
    /// whatever `fut` returned, if the connection closed before it ended
    /// (see [`Connection::closed`]).
    pub fn block_on<T, F>(&self, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let conn = self.conn.as_ref().expect("lease holds a connection");
        let out = conn.runtime.block_on(fut);
        if conn.closed.load(Ordering::SeqCst) {
            return Err(NetlinkError::Closed);
        }
        out
    }
}

/// The connection of the calling thread's namespace, whose inode the
/// caller says (`None`: unknown), made now (inside it) if there is none; a
/// connection for this call alone if the pooled one is busy or the
/// namespace unknown.
///
/// The caller finds the inode from the namespace's file, not from
/// `/proc/thread-self`: a short-lived thread that looked itself up in
/// /proc costs the kernel a flush of those entries when it exits (measured:
/// 0.35 ms a thread, more than the connection saves).
pub fn checkout(namespace: Option<u64>) -> Result<Lease> {
    let Some(namespace) = namespace else {
        return Ok(Lease {
            pooled: None,
            conn: Some(Connection::open()?),
        });
    };
    {
        let mut all = pool();
        if let Some(p) = all.get_mut(&namespace) {
            if p.busy {
                drop(all);
                return Ok(Lease {
                    pooled: None,
                    conn: Some(Connection::open()?),
                });
            }
            p.busy = true;
            return Ok(Lease {
                pooled: Some(namespace),
                conn: Some(p.conn.share()),
            });
        }
    }
    // Opened outside the lock; another thread may have pooled one meanwhile
    // (then this one serves this call only).
    let conn = Connection::open()?;
    let mut all = pool();
    if all.contains_key(&namespace) {
        return Ok(Lease {
            pooled: None,
            conn: Some(conn),
        });
    }
    all.insert(
        namespace,
        Pooled {
            conn: conn.share(),
            busy: true,
            idle_since: Instant::now(),
        },
    );
    Ok(Lease {
        pooled: Some(namespace),
        conn: Some(conn),
    })
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let closed = conn.closed.load(Ordering::SeqCst);
        // Our clone of the runtime goes first, so that closing the pooled
        // entry later finds it the last one.
        drop(conn);
        let Some(namespace) = self.pooled else {
            return;
        };
        let mut all = pool();
        if closed {
            // Of no use to the next call: it opens a new one.
            if let Some(p) = all.remove(&namespace) {
                p.conn.close();
            }
            return;
        }
        if let Some(p) = all.get_mut(&namespace) {
            p.busy = false;
            p.idle_since = Instant::now();
        }
        drop(all);
        if Some(namespace) != own_namespace() {
            start_reaper();
        }
    }
}

/// Whether this process lives for one short call ([`one_shot`]).
static ONE_SHOT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tells the pool that the process exits right after its one call (a CNI
/// plugin): its connections into other namespaces then close at exit, and
/// no reaper thread is started for them, a thread creation less on the
/// path of every call that visits a sandbox.
pub fn one_shot() {
    ONE_SHOT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Starts, unless it runs already or the process is [`one_shot`], the
/// thread that closes idle connections into other namespaces; it ends
/// when none is left.
fn start_reaper() {
    if ONE_SHOT.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    static RUNNING: Mutex<bool> = Mutex::new(false);
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if *running {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("mvnet-netlink-reaper".into())
        .spawn(|| loop {
            std::thread::sleep(IDLE / 2);
            let own = own_namespace();
            let mut all = pool();
            let idle: Vec<u64> = all
                .iter()
                .filter(|(ns, p)| Some(**ns) != own && !p.busy && p.idle_since.elapsed() >= IDLE)
                .map(|(ns, _)| *ns)
                .collect();
            for ns in idle {
                if let Some(p) = all.remove(&ns) {
                    p.conn.close();
                }
            }
            if all.keys().all(|ns| Some(*ns) == own) {
                // Under the pool's lock: a lease released after this sees
                // `false` and starts a new reaper.
                *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = false;
                return;
            }
        });
    *running = spawned.is_ok();
}

/// Closes the connection into the namespace with inode `namespace` unless
/// a call is using it (the reaper closes it then): the namespace is being
/// deleted, and the socket would keep it alive.
pub fn forget(namespace: u64) {
    let mut all = pool();
    if all.get(&namespace).is_some_and(|p| !p.busy) {
        if let Some(p) = all.remove(&namespace) {
            p.conn.close();
        }
    }
}

/// Whether a connection into the namespace with inode `namespace` is open
/// (for tests).
pub fn is_open(namespace: u64) -> bool {
    pool().contains_key(&namespace)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{netlink, netns::NetNs};

    fn link_names(ns: Option<&NetNs>) -> Vec<String> {
        netlink::run(ns, |nl| async move { nl.links().await })
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect()
    }

    #[test]
    fn calls_in_this_namespace_share_one_connection_that_stays() {
        let own = own_namespace().unwrap();
        let first = link_names(None);
        assert!(is_open(own));
        let again = link_names(None);
        assert_eq!(first, again);
        std::thread::sleep(IDLE * 2);
        assert!(is_open(own), "this process's own connection is kept");
    }

    #[test]
    fn a_call_inside_a_call_runs_on_a_thread_of_its_own() {
        let names = netlink::run(None, |nl| async move {
            let inner = link_names(None);
            let outer: Vec<String> = nl.links().await?.into_iter().map(|l| l.name).collect();
            Ok((inner, outer))
        })
        .unwrap();
        assert_eq!(names.0, names.1);
    }

    /// A namespace of our own (root only): its connection is made inside
    /// it, shared by the calls of one burst, closed when idle, and closed
    /// at once when the namespace is deleted.
    #[test]
    fn other_namespaces_get_their_own_connection_closed_when_idle_or_deleted() {
        if !crate::sys::process::is_root() {
            eprintln!("skipped: needs root to make a namespace");
            return;
        }
        let name = format!("mvl-{}-nlpool", std::process::id());
        let ns = netns::create(&name).unwrap();
        let ino = netns::inode(ns.path()).unwrap();
        // Only `lo`: the socket is the new namespace's, not ours.
        assert_eq!(link_names(Some(&ns)), ["lo"]);
        assert!(is_open(ino));
        assert_eq!(link_names(Some(&ns)), ["lo"]);
        assert!(is_open(ino));
        // Closed after IDLE without a call.
        let deadline = std::time::Instant::now() + IDLE * 8;
        while is_open(ino) {
            assert!(std::time::Instant::now() < deadline, "still open");
            std::thread::sleep(IDLE / 5);
        }
        // Reopened by the next call, closed by the delete.
        assert_eq!(link_names(Some(&ns)), ["lo"]);
        assert!(is_open(ino));
        netns::delete(&name).unwrap();
        assert!(!is_open(ino));
        assert!(!Path::new(&format!("/run/netns/{name}")).exists());
    }
}
