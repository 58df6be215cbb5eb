//! Whole-map reads in one system call per map (`BPF_MAP_LOOKUP_BATCH`,
//! kernel 5.6+), which aya does not wrap. Reading the 4096-slot counter
//! arrays one element at a time costs a system call per slot, several
//! milliseconds per read; a batch costs one.
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{Map, MapData};

use super::DatapathError;

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

/// The map behind an untyped [`Map`].
pub(super) fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(m)
        | Map::PerCpuArray(m)
        | Map::HashMap(m)
        | Map::PerCpuHashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuLruHashMap(m) => m,
        Map::Unsupported(m) => m,
        other => unreachable!("no batch reads of {other:?}"),
    }
}

/// Raw keys and values of every element of `map`, `key_size` and
/// `value_size` bytes each (for per-CPU maps `value_size` is the whole
/// per-CPU row). `capacity` bounds the element count.
pub(super) fn lookup_all(
    map: &MapData,
    name: &'static str,
    key_size: usize,
    value_size: usize,
    capacity: usize,
) -> Result<(Vec<u8>, Vec<u8>, usize), DatapathError> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut keys = vec![0u8; key_size * capacity];
    let mut values = vec![0u8; value_size * capacity];
    // Batch tokens: a u32 for arrays and hash tables; room for more.
    let mut tokens = [[0u64; 2]; 2];
    let mut done = 0usize;
    let mut first = true;
    while done < capacity {
        let (cur, next) = tokens.split_at_mut(1);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cur[0].as_ptr() as u64 },
            out_batch: next[0].as_mut_ptr() as u64,
            keys: keys[done * key_size..].as_mut_ptr() as u64,
            values: values[done * value_size..].as_mut_ptr() as u64,
            count: (capacity - done) as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at buffers sized for `count` elements that
        // live across the call; the kernel writes at most that many.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        let err = (rc < 0).then(std::io::Error::last_os_error);
        done += attr.count as usize;
        match err {
            None => {}
            // The end of the map: `count` holds what this call read.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Some(e) => {
                return Err(DatapathError::Pin(format!(
                    "reading map {name} (BPF_MAP_LOOKUP_BATCH): {e}"
                )))
            }
        }
        tokens[0] = tokens[1];
        first = false;
    }
    keys.truncate(done * key_size);
    values.truncate(done * value_size);
    Ok((keys, values, done))
}

/// Every slot of the per-CPU array `map` of `len` elements of `V`, summed
/// over CPUs with `merge`.
pub(super) fn per_cpu_array_sum<V: aya::Pod + Default + Copy>(
    map: &MapData,
    name: &'static str,
    len: u32,
    merge: impl Fn(&mut V, &V),
) -> Result<Vec<V>, DatapathError> {
    let cpus =
        aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Pin(format!("counting CPUs: {e}")))?;
    // The kernel lays per-CPU values out at 8-byte strides.
    let stride = std::mem::size_of::<V>().next_multiple_of(8);
    let row = stride * cpus;
    let (_, values, n) = lookup_all(map, name, 4, row, len as usize)?;
    let mut out = vec![V::default(); len as usize];
    for (i, total) in out.iter_mut().enumerate().take(n) {
        for cpu in 0..cpus {
            let at = i * row + cpu * stride;
            // SAFETY: V is Pod; `at..at + size_of::<V>()` lies within
            // `values` (n rows of `row` bytes); read_unaligned needs no
            // alignment.
            let v: V = unsafe { std::ptr::read_unaligned(values[at..].as_ptr() as *const V) };
            merge(total, &v);
        }
    }
    Ok(out)
}

/// Every (key, value) of the hash map `map`.
pub(super) fn hash_entries<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    name: &'static str,
    capacity: u32,
) -> Result<Vec<(K, V)>, DatapathError> {
    let (ks, vs) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let (keys, values, n) = lookup_all(map, name, ks, vs, capacity as usize)?;
    Ok((0..n)
        .map(|i| {
            // SAFETY: K and V are Pod; the slices hold n elements each.
            unsafe {
                (
                    std::ptr::read_unaligned(keys[i * ks..].as_ptr() as *const K),
                    std::ptr::read_unaligned(values[i * vs..].as_ptr() as *const V),
                )
            }
        })
        .collect())
}
