//! bpf(2) commands aya does not expose: open a pinned object, read a
//! link's info, open a program by id, and replace the program of an
//! attached link in place (BPF_LINK_UPDATE: the hook never runs without a
//! program, and no frame sees the device detached).
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `enum bpf_link_type` values we name.
pub const BPF_LINK_TYPE_XDP: u32 = 6;
pub const BPF_LINK_TYPE_TCX: u32 = 11;

/// One bpf(2) call with `attr` (a `#[repr(C)]` prefix of `union bpf_attr`;
/// the kernel zero-extends a shorter attr but rejects non-zero unused
/// bytes, so every attr struct spells out its padding).
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, fully initialised attr for `cmd`, and any
    // pointer inside it outlives the call (guaranteed by the callers).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// # Safety
/// `rc` is a file descriptor the kernel just returned, owned by nobody else.
unsafe fn owned(rc: i64) -> OwnedFd {
    // SAFETY: per the function's contract.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

/// Opens the bpf object (map, program, link) pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    #[repr(C, align(8))]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut attr = ObjGet {
        // Exposed: the kernel reads through an address the compiler sees
        // only as an integer.
        pathname: cpath.as_ptr().expose_provenance() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    let rc = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: a fresh fd from BPF_OBJ_GET.
    Ok(unsafe { owned(rc) })
}

/// What `struct bpf_link_info` says about a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// `enum bpf_link_type`.
    pub kind: u32,
    pub id: u32,
    /// The program attached through the link.
    pub prog_id: u32,
    /// XDP and tcx links: the device's ifindex, 0 once the device is gone.
    pub ifindex: u32,
}

pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    #[repr(C, align(8))]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // struct bpf_link_info: type, id, prog_id, then a union (8-aligned)
    // whose xdp and tcx members both start with the ifindex.
    let mut info = [0u64; 16];
    let mut attr = InfoByFd {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr().expose_provenance() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // Read back without assuming the buffer is still what was written
    // before the call (the compiler cannot see the kernel's writes).
    // SAFETY: in-bounds reads of an initialised array.
    let (w0, w1, w2) = unsafe {
        (
            std::ptr::read_volatile(&info[0]),
            std::ptr::read_volatile(&info[1]),
            std::ptr::read_volatile(&info[2]),
        )
    };
    Ok(LinkInfo {
        kind: w0 as u32,
        id: (w0 >> 32) as u32,
        prog_id: w1 as u32,
        ifindex: w2 as u32,
    })
}

/// Opens the loaded program with id `id`.
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    #[repr(C, align(8))]
    struct GetById {
        id: u32,
        next_id: u32,
        open_flags: u32,
        _pad: u32,
    }
    let mut attr = GetById {
        id,
        next_id: 0,
        open_flags: 0,
        _pad: 0,
    };
    let rc = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: a fresh fd from BPF_PROG_GET_FD_BY_ID.
    Ok(unsafe { owned(rc) })
}

/// Replaces the program of `link` with `prog` (same program type and
/// attach type) without detaching.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C, align(8))]
    struct LinkUpdate {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let mut attr = LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

const BPF_PROG_ATTACH: libc::c_long = 8;
/// `enum bpf_attach_type`: tcx egress (Linux 6.6+).
pub const BPF_TCX_EGRESS: u32 = 47;

/// Attaches `prog` to device `ifindex` (of the calling thread's
/// namespace) at `attach_type` without a bpf_link (BPF_PROG_ATTACH): the
/// attachment needs no fd or pin to stay, and goes with the device.
pub fn prog_attach(ifindex: u32, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    #[repr(C, align(8))]
    struct ProgAttach {
        target_ifindex: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
        relative_fd: u32,
        expected_revision: u64,
    }
    let mut attr = ProgAttach {
        target_ifindex: ifindex,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: 0,
        replace_bpf_fd: 0,
        relative_fd: 0,
        expected_revision: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

const BPF_PROG_DETACH: libc::c_long = 9;

/// Detaches `prog` from device `ifindex` (of the calling thread's
/// namespace) at `attach_type`, as [`prog_attach`] attached it.
pub fn prog_detach(ifindex: u32, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    #[repr(C, align(8))]
    struct ProgDetach {
        target_ifindex: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
        relative_fd: u32,
        expected_revision: u64,
    }
    let mut attr = ProgDetach {
        target_ifindex: ifindex,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: 0,
        replace_bpf_fd: 0,
        relative_fd: 0,
        expected_revision: 0,
    };
    bpf(BPF_PROG_DETACH, &mut attr).map(|_| ())
}
