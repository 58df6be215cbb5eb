//! The controller's side of the direct endpoint index (see
//! `macvlan_common::direct`): the ENDPOINT_INDEX array mapped into our
//! memory, each word written with one atomic store so the classifier never
//! reads half an entry.
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use macvlan_common::{direct, mac_word};

use super::DatapathError;

pub struct DirectIndex {
    words: *mut AtomicU64,
    len: usize,
}

impl DirectIndex {
    /// Maps the ENDPOINT_INDEX array (created `BPF_F_MMAPABLE`).
    pub fn map(map: &MapData) -> Result<DirectIndex, DatapathError> {
        let len = direct::SLOTS as usize;
        let bytes = len * std::mem::size_of::<u64>();
        // SAFETY: a shared mapping of a BPF array fd; the kernel checks
        // that the map is mmapable and at least `bytes` long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DatapathError::Pin(format!(
                "mapping the endpoint index: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(DirectIndex {
            words: ptr.cast(),
            len,
        })
    }

    fn word(&self, index: u32) -> &AtomicU64 {
        assert!((index as usize) < self.len);
        // SAFETY: in bounds of the live mapping; AtomicU64 has u64's layout
        // and the kernel only reads these words.
        unsafe { &*self.words.add(index as usize) }
    }

    /// Puts (`mac`, `vlan`) → `slot` in the index unless its word belongs
    /// to another key (that endpoint then lives in the hash only). Returns
    /// whether it was indexed.
    pub fn claim(&self, mac: &[u8; 6], vlan: u16, slot: u32) -> bool {
        let mac = mac_word(mac);
        let w = self.word(direct::index(mac, vlan));
        let cur = w.load(Ordering::Acquire);
        if cur & direct::VALID != 0 && cur & direct::KEY_MASK != direct::key(mac, vlan) {
            return false;
        }
        w.store(direct::word(mac, vlan, slot), Ordering::Release);
        true
    }

    /// Takes (`mac`, `vlan`) out of the index if it is there.
    pub fn release(&self, mac: &[u8; 6], vlan: u16) {
        let mac = mac_word(mac);
        let w = self.word(direct::index(mac, vlan));
        let cur = w.load(Ordering::Acquire);
        if cur & direct::VALID != 0 && cur & direct::KEY_MASK == direct::key(mac, vlan) {
            w.store(0, Ordering::Release);
        }
    }

    /// The slot indexed for (`mac`, `vlan`), if any.
    pub fn get(&self, mac: &[u8; 6], vlan: u16) -> Option<u32> {
        let mac = mac_word(mac);
        let cur = self.word(direct::index(mac, vlan)).load(Ordering::Acquire);
        (cur & direct::KEY_MASK == direct::key(mac, vlan)).then(|| direct::slot(cur))
    }
}

impl Drop for DirectIndex {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.words.cast(), self.len * std::mem::size_of::<u64>()) };
    }
}
