//! mount(2), umount2(2) and statfs(2): bind mounts of namespace files,
//! shared propagation of /run/netns, bpffs, and the private /sys of a
//! container's command; fsopen(2) and fsmount(2) for a procfs mounted
//! nowhere.
use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
};

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// mount(2) with no data argument.
pub fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong) -> io::Result<()> {
    let src = CString::new(src)?;
    let target = c_path(target)?;
    let fstype = CString::new(fstype)?;
    // SAFETY: valid NUL-terminated strings that outlive the call; a null
    // data argument is allowed.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Lazily unmounts `path` (MNT_DETACH); EINVAL means it was not mounted.
pub fn umount_detach(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The filesystem magic (`f_type`) of the filesystem holding `path`.
pub fn fs_type(path: &Path) -> io::Result<i64> {
    let c = c_path(path)?;
    // SAFETY: all-zero bytes are a valid `struct statfs` (integers only).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and an output pointer of the right type.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 {
        Ok(st.f_type as i64)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the calling thread a mount namespace of its own whose /sys is a
/// sysfs of the thread's network namespace, as `ip netns exec` does:
/// processes it starts see their namespace's links under
/// /sys/class/net. Mounts made in it do not propagate back (slave), and
/// the thread's end takes the namespace with it (unless a child holds it).
/// /sys stays read-only if it was.
pub fn private_sysfs() -> io::Result<()> {
    let sys = Path::new("/sys");
    let read_only = {
        let c = c_path(sys)?;
        // SAFETY: all-zero bytes are a valid `struct statvfs` (integers only).
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid path and an output pointer of the right type.
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        rc == 0 && st.f_flag & libc::ST_RDONLY != 0
    };
    // SAFETY: a plain syscall; CLONE_NEWNS (with the CLONE_FS it implies)
    // affects this thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    mount(
        "none",
        Path::new("/"),
        "none",
        libc::MS_SLAVE | libc::MS_REC,
    )?;
    // EINVAL: /sys was not a mount point; mount over it anyway.
    match umount_detach(sys) {
        Err(e) if e.raw_os_error() != Some(libc::EINVAL) => return Err(e),
        _ => {}
    }
    let flags = if read_only { libc::MS_RDONLY } else { 0 };
    mount("sysfs", sys, "sysfs", flags)
}

/// A procfs instance of its own, attached nowhere (fsopen(2), fsconfig(2)
/// and fsmount(2), Linux 5.2): a descriptor of its root, to open paths
/// under with `openat`. Its dentries are its own and go with the last
/// descriptor. Fails where the kernel lacks the calls (ENOSYS) or the
/// caller may not mount (EPERM, an LSM's EACCES).
pub fn detached_proc() -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let fstype = c"proc";
    // SAFETY: a NUL-terminated name that outlives the call; the result is
    // a new descriptor or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fs` is a descriptor this call just got and owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fs);
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux argument.
    if unsafe { libc::syscall(libc::SYS_fsconfig, raw, FSCONFIG_CMD_CREATE, null, null, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a configured filesystem context; no mount attributes.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, raw, FSMOUNT_CLOEXEC, 0) };
    if mnt < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `mnt` is a descriptor this call just got and owns.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as i32) })
}
