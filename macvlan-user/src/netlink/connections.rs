//! The rtnetlink connections of this process: one runtime, and one
//! connection per network namespace (by inode), opened in that namespace
//! the first time a command needs it and reused for the rest of the
//! command.
//!
//! A netlink socket belongs to the namespace it was created in for its
//! whole life, whatever the thread that later sends on it, so a connection
//! is made once by a thread inside the namespace and then used from any
//! thread. Its [`Connection`](rtnetlink::proto::Connection) task (the
//! socket's reader and writer) runs on one background thread with a
//! current-thread tokio runtime, which also drives the timers of the
//! callers' futures; each caller runs its own future on its own thread
//! with that runtime's handle entered.
//!
//! A socket also holds its namespace alive: a namespace that everyone
//! else has let go of stays, with its links and their MAC addresses, until
//! the socket closes. So a connection into any namespace but this
//! process's own is closed once it has been idle for [`IDLE`], or at once
//! when mvnet deletes the namespace ([`forget`]); a long-running process
//! (`serve`, `top`) never holds a container's namespace for longer.
use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use tokio::{runtime::Handle, task::JoinHandle};

use super::{NetlinkError, Result};
use crate::netns;

/// How long a connection into another namespace outlives its last use.
/// A command's calls into one namespace follow each other within
/// milliseconds; a long-running process's come seconds apart.
pub const IDLE: Duration = Duration::from_millis(250);

struct Connection {
    handle: rtnetlink::Handle,
    /// The task that drives the socket; aborting it closes the socket.
    task: JoinHandle<()>,
    /// Calls using it now.
    in_use: usize,
    /// Bumped at every checkout: an idle timer armed before a later use
    /// leaves the connection alone.
    generation: u64,
}

fn connections() -> MutexGuard<'static, HashMap<u64, Connection>> {
    static CONNECTIONS: OnceLock<Mutex<HashMap<u64, Connection>>> = OnceLock::new();
    CONNECTIONS
        .get_or_init(Default::default)
        .lock()
        // A panic while the map was held left it consistent (every
        // change is one insert or remove).
        .unwrap_or_else(|e| e.into_inner())
}

/// The handle of the background runtime, started on first use.
pub fn runtime() -> Result<Handle> {
    static RUNTIME: OnceLock<Handle> = OnceLock::new();
    if let Some(h) = RUNTIME.get() {
        return Ok(h.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetlinkError::Runtime)?;
    let handle = rt.handle().clone();
    let mut started = false;
    let handle = RUNTIME
        .get_or_init(|| {
            started = true;
            handle
        })
        .clone();
    if started {
        std::thread::Builder::new()
            .name("mvnet-netlink".into())
            // Runs the spawned connection tasks and drives IO and timers
            // for the whole process, until it exits.
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(NetlinkError::Runtime)?;
    }
    Ok(handle)
}

/// The inode of this process's own namespace (its main thread's), whose
/// connection is never closed.
fn own_namespace() -> Option<u64> {
    static OWN: OnceLock<Option<u64>> = OnceLock::new();
    *OWN.get_or_init(|| netns::inode(std::path::Path::new("/proc/self/ns/net")))
}

/// A connection in use by one call; released on drop.
pub struct Lease {
    namespace: u64,
    pub handle: rtnetlink::Handle,
}

/// The connection of the calling thread's namespace, made now (inside
/// it) if there is none.
pub fn checkout() -> Result<Lease> {
    let namespace = netns::current_inode().map_err(NetlinkError::Socket)?;
    let rt = runtime()?;
    let mut all = connections();
    let conn = match all.entry(namespace) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            // The socket is created here, in this thread's namespace; its
            // registration needs the runtime's reactor.
            let _enter = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
            let task = rt.spawn(conn);
            v.insert(Connection {
                handle,
                task,
                in_use: 0,
                generation: 0,
            })
        }
    };
    conn.in_use += 1;
    conn.generation += 1;
    Ok(Lease {
        namespace,
        handle: conn.handle.clone(),
    })
}

impl Drop for Lease {
    fn drop(&mut self) {
        let namespace = self.namespace;
        let mut all = connections();
        let Some(conn) = all.get_mut(&namespace) else {
            return;
        };
        conn.in_use -= 1;
        if conn.in_use > 0 || Some(namespace) == own_namespace() {
            return;
        }
        let generation = conn.generation;
        drop(all);
        if let Ok(rt) = runtime() {
            rt.spawn(async move {
                tokio::time::sleep(IDLE).await;
                let mut all = connections();
                if all
                    .get(&namespace)
                    .is_some_and(|c| c.in_use == 0 && c.generation == generation)
                {
                    if let Some(c) = all.remove(&namespace) {
                        c.task.abort();
                    }
                }
            });
        }
    }
}

/// Closes the connection into the namespace with inode `namespace` unless
/// a call is using it (its idle timer closes it then): the namespace is
/// being deleted, and the socket would keep it alive.
pub fn forget(namespace: u64) {
    let mut all = connections();
    if all.get(&namespace).is_some_and(|c| c.in_use == 0) {
        if let Some(c) = all.remove(&namespace) {
            c.task.abort();
        }
    }
}

/// How many connections are open, and whether one is open into the
/// namespace with inode `namespace` (for tests).
pub fn open(namespace: u64) -> (usize, bool) {
    let all = connections();
    (all.len(), all.contains_key(&namespace))
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
        assert!(open(own).1);
        let again = link_names(None);
        assert_eq!(first, again);
        std::thread::sleep(IDLE * 2);
        assert!(open(own).1, "this process's own connection is kept");
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
        assert!(open(ino).1);
        assert_eq!(link_names(Some(&ns)), ["lo"]);
        assert!(open(ino).1);
        // Closed after IDLE without a call.
        let deadline = std::time::Instant::now() + IDLE * 8;
        while open(ino).1 {
            assert!(std::time::Instant::now() < deadline, "still open");
            std::thread::sleep(IDLE / 5);
        }
        // Reopened by the next call, closed by the delete.
        assert_eq!(link_names(Some(&ns)), ["lo"]);
        assert!(open(ino).1);
        netns::delete(&name).unwrap();
        assert!(!open(ino).1);
        assert!(!Path::new(&format!("/run/netns/{name}")).exists());
    }
}
