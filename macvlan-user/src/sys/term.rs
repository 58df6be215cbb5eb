//! The terminal and the clock, as `top` needs them.

/// Whether `fd` is a terminal that still answers (tcgetattr succeeds): a
/// hung-up tty fails every ioctl with EIO.
pub fn tty_answers(fd: libc::c_int) -> bool {
    // SAFETY: all-zero bytes are a valid termios (integers only).
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: any fd number and a valid output pointer.
    unsafe { libc::tcgetattr(fd, &mut t) == 0 }
}

/// Local wall-clock (hour, minute, second) of `secs` since the epoch.
pub fn local_hms(secs: libc::time_t) -> Option<(i32, i32, i32)> {
    // SAFETY: all-zero bytes are a valid `struct tm` (a null tm_zone is
    // allowed; localtime_r overwrites it).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r writes only into `tm`, which outlives the call.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return None;
    }
    Some((tm.tm_hour, tm.tm_min, tm.tm_sec))
}
