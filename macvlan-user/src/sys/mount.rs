//! mount(2), umount2(2) and statfs(2): bind mounts of namespace files,
//! shared propagation of /run/netns, bpffs.
use std::{ffi::CString, io, path::Path};

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
