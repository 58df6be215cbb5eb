//! Processes and their resources: signals, reaping, sessions, the
//! effective uid, the open-file limit, allocator tuning.
use std::{io, process::Command};

/// Sends `sig` to `pid`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: a plain signal syscall.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `pid` exists (signal 0).
pub fn exists(pid: libc::pid_t) -> bool {
    kill(pid, 0).is_ok()
}

/// Reaps `pid` if it is our child and has exited; harmless otherwise.
pub fn reap_nohang(pid: libc::pid_t) {
    // SAFETY: a plain syscall with a null status pointer (allowed).
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
}

/// Makes `cmd`'s child start a new session (setsid) before it execs.
pub fn new_session_on_exec(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec and only calls
    // setsid, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Installs `handler` for each signal of `signals`.
pub fn on_signals(signals: &[libc::c_int], handler: extern "C" fn(libc::c_int)) {
    for &sig in signals {
        // SAFETY: installing a handler is sound as long as the handler is
        // async-signal-safe, which callers guarantee (ours only store to an
        // atomic).
        unsafe { libc::signal(sig, handler as *const () as libc::sighandler_t) };
    }
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Raises the soft limit on open files to the hard limit when it can, and
/// returns the soft limit in force.
pub fn raise_nofile_limit() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid output pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid input pointer; failure leaves the old limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    lim.rlim_cur
}

/// One malloc arena for all threads (glibc otherwise gives each thread
/// one of its own).
#[cfg(target_env = "gnu")]
pub fn malloc_single_arena() {
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Hands free heap pages back to the kernel.
#[cfg(target_env = "gnu")]
pub fn malloc_trim() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and output pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
