//! setns(2), unshare(2) and the nsfs ioctl for network namespaces.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// Moves the calling thread into the network namespace `ns` (an open
/// namespace file).
pub fn setns_net(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid fd; it affects this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into a new network namespace.
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: a plain syscall; it affects this thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `ioctl(NS_GET_NSTYPE)` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = (0xb7 << 8) | 0x3;

/// The `CLONE_NEW*` type of the namespace file `file`; an error for a file
/// that is not a namespace.
pub fn ns_type(file: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(kind)
    }
}
