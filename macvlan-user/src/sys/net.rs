//! Network devices by name.

/// The ifindex of device `name` in the calling thread's namespace; `None`
/// if there is none (or the name cannot be one).
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}
