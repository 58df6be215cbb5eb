//! Whole-map reads in one system call per map (`BPF_MAP_LOOKUP_BATCH`,
//! kernel 5.6+), which aya does not wrap. Reading the 4096-slot counter
//! arrays one element at a time costs a system call per slot, several
//! milliseconds per read; a batch costs one.
use std::os::fd::AsFd as _;

use aya::maps::{Map, MapData};

use super::DatapathError;
use crate::sys::bpf::{map_lookup_batch, read_pod, BatchToken};

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
    let fd = map.fd().as_fd();
    let mut keys = vec![0u8; key_size * capacity];
    let mut values = vec![0u8; value_size * capacity];
    let mut token: Option<BatchToken> = None;
    let mut done = 0usize;
    while done < capacity {
        let mut next = BatchToken::default();
        let (read, err) = map_lookup_batch(
            fd,
            token.as_ref(),
            &mut next,
            &mut keys[done * key_size..],
            key_size,
            &mut values[done * value_size..],
            value_size,
        );
        done += read;
        match err {
            None => {}
            // The end of the map: `read` is what this call read.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Some(e) => {
                return Err(DatapathError::Pin(format!(
                    "reading map {name} (BPF_MAP_LOOKUP_BATCH): {e}"
                )))
            }
        }
        token = Some(next);
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
            // `at..at + size_of::<V>()` lies within `values` (n rows of
            // `row` bytes).
            let v: V = read_pod(&values[at..]);
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
        .map(|i| (read_pod(&keys[i * ks..]), read_pod(&values[i * vs..])))
        .collect())
}
