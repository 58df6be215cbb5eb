//! Network devices by name.

/// The ifindex of device `name` in the calling thread's namespace; `None`
/// if there is none (or the name cannot be one).
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// `ifreq` for device `name`, zeroed otherwise.
fn ifreq(name: &str) -> std::io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= req.ifr_name.len() || name.contains('\0') {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// `ioctl(request)` on a datagram socket of the calling thread's namespace.
fn device_ioctl(request: libc::c_ulong, req: &mut libc::ifreq) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned (and closed) below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `req` is a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The transmit queue length (`qlen`) of device `name` in the calling
/// thread's namespace (SIOCGIFTXQLEN).
pub fn tx_queue_len(name: &str) -> std::io::Result<u32> {
    let mut req = ifreq(name)?;
    device_ioctl(libc::SIOCGIFTXQLEN, &mut req)?;
    // SAFETY: the kernel filled ifr_qlen, an int at the union's start (as
    // ifru_ifindex is).
    Ok(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
}

/// The hardware address of Ethernet device `name` in the calling thread's
/// namespace (SIOCGIFHWADDR).
pub fn hw_addr(name: &str) -> std::io::Result<[u8; 6]> {
    let mut req = ifreq(name)?;
    device_ioctl(libc::SIOCGIFHWADDR, &mut req)?;
    // SAFETY: the kernel filled ifru_hwaddr, a sockaddr whose sa_data
    // starts with the address.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

/// Sets the transmit queue length of device `name` in the calling
/// thread's namespace (SIOCSIFTXQLEN).
pub fn set_tx_queue_len(name: &str, len: u32) -> std::io::Result<()> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_ifindex =
        i32::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    device_ioctl(libc::SIOCSIFTXQLEN, &mut req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_name_must_fit_ifreq() {
        for bad in ["", "sixteen-chars-xx", "a\0b"] {
            assert_eq!(
                tx_queue_len(bad).unwrap_err().raw_os_error(),
                Some(libc::EINVAL),
                "{bad:?}"
            );
        }
    }
}
