//! bpf(2) commands aya does not expose: open a pinned object, read a
//! link's info, open a program by id, replace the program of an attached
//! link in place (BPF_LINK_UPDATE: the hook never runs without a program,
//! and no frame sees the device detached), read a whole map in one call
//! (BPF_MAP_LOOKUP_BATCH), and map a `BPF_F_MMAPABLE` array into memory.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
    sync::atomic::AtomicU64,
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

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`, the `batch` member.
#[repr(C, align(8))]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// An opaque batch position (a u32 for arrays and hash tables; room for
/// more).
pub type BatchToken = [u64; 2];

/// One BPF_MAP_LOOKUP_BATCH call: reads up to `keys.len() / key_size`
/// elements after `in_batch` (from the start when `None`) into `keys` and
/// `values`, and sets `out_batch` to where the next call resumes. Returns
/// how many elements were read, and the error if the call failed (ENOENT
/// at the end of the map, with the count still valid).
pub fn map_lookup_batch(
    map: BorrowedFd<'_>,
    in_batch: Option<&BatchToken>,
    out_batch: &mut BatchToken,
    keys: &mut [u8],
    key_size: usize,
    values: &mut [u8],
    value_size: usize,
) -> (usize, Option<io::Error>) {
    let count = (keys.len() / key_size).min(values.len() / value_size);
    let mut attr = BatchAttr {
        in_batch: in_batch.map_or(0, |t| t.as_ptr().expose_provenance() as u64),
        out_batch: out_batch.as_mut_ptr().expose_provenance() as u64,
        keys: keys.as_mut_ptr().expose_provenance() as u64,
        values: values.as_mut_ptr().expose_provenance() as u64,
        count: count as u32,
        map_fd: map.as_raw_fd() as u32,
        ..Default::default()
    };
    // The kernel writes at most `count` keys and values, which both
    // buffers have room for; they and the tokens outlive the call.
    let err = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr).err();
    // SAFETY: a volatile read of an initialised local the kernel wrote
    // through the attr pointer (the compiler cannot see that write).
    let read = unsafe { std::ptr::read_volatile(&attr.count) } as usize;
    (read.min(count), err)
}

/// Reads a `T` from the start of `bytes` (any alignment).
///
/// # Panics
/// If `bytes` is shorter than a `T`.
pub fn read_pod<T: aya::Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>(), "short Pod read");
    // SAFETY: T is Pod (any bit pattern is a valid T); the assert keeps the
    // read in bounds; read_unaligned needs no alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// A `BPF_F_MMAPABLE` array of u64 mapped shared into our memory, each
/// word reachable as an atomic.
pub struct MappedWords {
    words: *mut AtomicU64,
    len: usize,
}

impl MappedWords {
    /// Maps the first `len` u64 words of the array map `map`.
    pub fn map(map: BorrowedFd<'_>, len: usize) -> io::Result<MappedWords> {
        let bytes = len * std::mem::size_of::<u64>();
        // SAFETY: a new shared mapping of a BPF array fd (no existing memory
        // is touched); the kernel checks that the map is mmapable and at
        // least `bytes` long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedWords {
            words: ptr.cast(),
            len,
        })
    }

    /// Word `index`.
    ///
    /// # Panics
    /// If `index` is out of bounds.
    pub fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.len);
        // SAFETY: in bounds of the live mapping; AtomicU64 has u64's layout
        // and the kernel only reads these words.
        unsafe { &*self.words.add(index) }
    }
}

impl Drop for MappedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.words.cast(), self.len * std::mem::size_of::<u64>()) };
    }
}
