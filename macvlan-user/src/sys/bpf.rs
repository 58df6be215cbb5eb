//! bpf(2) commands aya does not expose: open a pinned object, read a
//! link's info or a program's run-time statistics, open a program by id, replace the program of an attached
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

use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type, bpf_prog_info,
};

/// `enum bpf_link_type` values we name.
pub const BPF_LINK_TYPE_XDP: u32 = bpf_link_type::BPF_LINK_TYPE_XDP as u32;
pub const BPF_LINK_TYPE_TCX: u32 = bpf_link_type::BPF_LINK_TYPE_TCX as u32;
/// `enum bpf_attach_type`: tcx egress (Linux 6.6+).
pub const BPF_TCX_EGRESS: u32 = bpf_attach_type::BPF_TCX_EGRESS as u32;
pub const BPF_TCX_INGRESS: u32 = bpf_attach_type::BPF_TCX_INGRESS as u32;

/// An all-zero `union bpf_attr`: the kernel rejects non-zero bytes past the
/// members a command uses.
fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of integer-only structs, for which
    // all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}

/// One bpf(2) call with `attr`.
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, fully initialised attr for `cmd`, and any
    // pointer inside it outlives the call (guaranteed by the callers).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as u32,
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
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut attr = zeroed_attr();
    // Exposed: the kernel reads through an address the compiler sees only
    // as an integer.
    attr.__bindgen_anon_4.pathname = cpath.as_ptr().expose_provenance() as u64;
    let rc = bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
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
    /// XDP and tcx links: the device's ifindex, 0 once the device is gone
    /// (0 for other link types).
    pub ifindex: u32,
}

/// The info of the link `link` (aya's `LinkInfo` does not give the
/// device of XDP and tcx links).
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    // SAFETY: bpf_link_info holds integers and unions of integer-only
    // structs, for which all-zero bytes are valid.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = link.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_link_info>() as u32;
    attr.info.info = (&mut info as *mut bpf_link_info).expose_provenance() as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // Read back without assuming `info` is still what was written before
    // the call (the compiler cannot see the kernel's writes).
    // SAFETY: a volatile read of an initialised local.
    let info: bpf_link_info = unsafe { std::ptr::read_volatile(&info) };
    // SAFETY: the union member read is the one the kernel filled for
    // `type_`; both are integer-only, so any bytes are valid anyway.
    let ifindex = unsafe {
        match info.type_ {
            BPF_LINK_TYPE_XDP => info.__bindgen_anon_1.xdp.ifindex,
            BPF_LINK_TYPE_TCX => info.__bindgen_anon_1.tcx.ifindex,
            _ => 0,
        }
    };
    Ok(LinkInfo {
        kind: info.type_,
        id: info.id,
        prog_id: info.prog_id,
        ifindex,
    })
}

/// What the kernel's run-time statistics say about a program (collected
/// while `kernel.bpf_stats_enabled` is 1 or a BPF_ENABLE_STATS fd is open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgRunStats {
    /// Nanoseconds spent in the program, all runs.
    pub run_time_ns: u64,
    /// Runs.
    pub run_cnt: u64,
}

/// The run-time statistics of the program `prog`.
pub fn prog_run_stats(prog: BorrowedFd<'_>) -> io::Result<ProgRunStats> {
    // SAFETY: bpf_prog_info holds integers only, for which all-zero bytes
    // are valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = prog.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = (&mut info as *mut bpf_prog_info).expose_provenance() as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // SAFETY: a volatile read of an initialised local (see link_info).
    let info: bpf_prog_info = unsafe { std::ptr::read_volatile(&info) };
    Ok(ProgRunStats {
        run_time_ns: info.run_time_ns,
        run_cnt: info.run_cnt,
    })
}

/// Opens the loaded program with id `id`.
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.prog_id = id;
    let rc = bpf(bpf_cmd::BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: a fresh fd from BPF_PROG_GET_FD_BY_ID.
    Ok(unsafe { owned(rc) })
}

/// Replaces the program of `link` with `prog` (same program type and
/// attach type) without detaching.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = zeroed_attr();
    attr.link_update.link_fd = link.as_raw_fd() as u32;
    attr.link_update.__bindgen_anon_1.new_prog_fd = prog.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// Detaches `link` from its hook now (BPF_LINK_DETACH, Linux 5.9+). Only
/// removing a link's last pin would detach it too, but late: bpffs frees
/// the inode, and with it the link, after an RCU grace period, so the
/// program would stay on the device for a while after the pin is gone.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = zeroed_attr();
    attr.link_detach.link_fd = link.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// The attr of BPF_PROG_ATTACH and BPF_PROG_DETACH for `prog` on device
/// `ifindex` at `attach_type`.
fn attach_attr(ifindex: u32, prog: BorrowedFd<'_>, attach_type: u32) -> bpf_attr {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_5.__bindgen_anon_1.target_ifindex = ifindex;
    attr.__bindgen_anon_5.attach_bpf_fd = prog.as_raw_fd() as u32;
    attr.__bindgen_anon_5.attach_type = attach_type;
    attr
}

/// Attaches `prog` to device `ifindex` (of the calling thread's
/// namespace) at `attach_type` without a bpf_link (BPF_PROG_ATTACH): the
/// attachment needs no fd or pin to stay, and goes with the device.
pub fn prog_attach(ifindex: u32, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    let mut attr = attach_attr(ifindex, prog, attach_type);
    bpf(bpf_cmd::BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

/// Detaches `prog` from device `ifindex` (of the calling thread's
/// namespace) at `attach_type`, as [`prog_attach`] attached it.
pub fn prog_detach(ifindex: u32, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    let mut attr = attach_attr(ifindex, prog, attach_type);
    bpf(bpf_cmd::BPF_PROG_DETACH, &mut attr).map(|_| ())
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
    let mut attr = zeroed_attr();
    attr.batch.in_batch = in_batch.map_or(0, |t| t.as_ptr().expose_provenance() as u64);
    attr.batch.out_batch = out_batch.as_mut_ptr().expose_provenance() as u64;
    attr.batch.keys = keys.as_mut_ptr().expose_provenance() as u64;
    attr.batch.values = values.as_mut_ptr().expose_provenance() as u64;
    attr.batch.count = count as u32;
    attr.batch.map_fd = map.as_raw_fd() as u32;
    // The kernel writes at most `count` keys and values, which both
    // buffers have room for; they and the tokens outlive the call.
    let err = bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr).err();
    // SAFETY: reading the `batch` member written above (and updated by the
    // kernel; volatile, as the compiler cannot see that write).
    let read = unsafe { std::ptr::read_volatile(&attr.batch.count) } as usize;
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
        Self::map_with(map, len, false)
    }

    /// [`MappedWords::map`], with every page faulted in at once
    /// (`MAP_POPULATE`) when `populate`: for a mapping read whole, one
    /// system call instead of a page fault per page.
    pub fn map_with(map: BorrowedFd<'_>, len: usize, populate: bool) -> io::Result<MappedWords> {
        let bytes = len * std::mem::size_of::<u64>();
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a new shared mapping of a BPF array fd (no existing memory
        // is touched); the kernel checks that the map is mmapable and at
        // least `bytes` long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
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

    /// Every word.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `len` words of the live mapping, as in `word`.
        unsafe { std::slice::from_raw_parts(self.words, self.len) }
    }
}

// SAFETY: the mapping stays valid until `drop` unmaps it, and every access
// goes through `&AtomicU64`, so it may move to and be shared by threads as
// an `AtomicU64` array may.
unsafe impl Send for MappedWords {}
// SAFETY: as for Send.
unsafe impl Sync for MappedWords {}

impl Drop for MappedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.words.cast(), self.len * std::mem::size_of::<u64>()) };
    }
}
