//! The process's allocator: the system's (glibc malloc) for every block
//! under 2 MiB; a block of 2 MiB or more is a mapping of its own, aligned
//! to 2 MiB and advised `MADV_HUGEPAGE`, so that the kernel can back it
//! with transparent huge pages.
//!
//! Why: the blocks this size are a listing of 65,536 endpoints (12 MiB),
//! its names, the counters read from the kernel, a state file as read.
//! Each is fresh memory every time (glibc maps such blocks, or trims them
//! off its heap when freed), and touching fresh memory costs a page fault
//! per 4 KiB: about 3 us each on this project's VMs, 8.6 ms for 16 MiB,
//! against 0.9 ms with huge pages (one fault per 2 MiB), measured with a
//! small C program mapping and touching 16 MiB, five times each way. A
//! `stats::collect` at 65,536 endpoints touched some 16 MiB of such
//! blocks per read. Where transparent huge pages are off
//! (`/sys/kernel/mm/transparent_hugepage/enabled` = `never`), the advice
//! does nothing and the blocks fault as before.
//!
//! A block is mapped at its size rounded up to 4 KiB: the part of it past
//! its last 2 MiB boundary takes small pages, so no block holds more
//! memory than glibc would have given it. Growing one moves its pages to
//! a larger aligned range with `mremap` (no copy), as glibc's `realloc`
//! does for the blocks it maps.
use std::alloc::{GlobalAlloc, Layout, System};

/// The size of a transparent huge page on x86-64 and arm64 (4 KiB base
/// pages), from which a block is mapped on its own.
const HUGE: usize = 2 << 20;

const PAGE: usize = 4096;

/// See the module documentation.
pub struct Allocator;

/// Whether a block of `size` bytes aligned to `align` is mapped on its
/// own. `dealloc` and `realloc` tell from the layout, which is the one it
/// was allocated with (GlobalAlloc's contract).
fn mapped(size: usize, align: usize) -> bool {
    size >= HUGE && align <= HUGE
}

fn pages(size: usize) -> usize {
    size.next_multiple_of(PAGE)
}

/// A fresh range of `len` bytes (a multiple of 4 KiB) aligned to 2 MiB,
/// advised huge, or null.
fn map_aligned(len: usize) -> *mut u8 {
    // Map 2 MiB more than asked, then unmap what lies before the first
    // 2 MiB boundary and after the range.
    let span = len + HUGE;
    // SAFETY: an anonymous private mapping at an address the kernel picks.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE);
    let (head, tail) = (aligned - start, span - (aligned - start) - len);
    // SAFETY: both ranges lie in the mapping just made and outside the
    // range handed out; unmapping them cannot fail but for a bad range.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        // Advice only: where huge pages are off it fails or does nothing,
        // and the range works as any other.
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    aligned as *mut u8
}

// SAFETY: blocks under 2 MiB are the system allocator's, as they would be
// without this allocator; larger ones are private anonymous mappings of
// at least their size, aligned to 2 MiB (which satisfies any alignment up
// to it), zero-filled by the kernel, and unmapped only by `dealloc` or
// moved by `realloc` with the size they were mapped with.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !mapped(layout.size(), layout.align()) {
            // SAFETY: the caller's layout, passed on.
            return unsafe { System.alloc(layout) };
        }
        map_aligned(pages(layout.size()))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !mapped(layout.size(), layout.align()) {
            // SAFETY: the caller's layout, passed on.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // A fresh anonymous mapping reads as zeros.
        map_aligned(pages(layout.size()))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !mapped(layout.size(), layout.align()) {
            // SAFETY: allocated by System with this layout.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: the mapping `alloc` made for this layout.
        unsafe { libc::munmap(ptr.cast(), pages(layout.size())) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        match (mapped(layout.size(), align), mapped(new_size, align)) {
            // SAFETY: the caller's block and layout, passed on.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            // SAFETY: both blocks are ours, of these sizes.
            (true, true) => unsafe { remap(ptr, layout.size(), new_size) },
            // SAFETY: the caller's block and layout; the new one is made by
            // `alloc` with the new size and the same alignment.
            _ => unsafe {
                let new = self.alloc(Layout::from_size_align_unchecked(new_size, align));
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            },
        }
    }
}

/// Resizes a mapped block: a shrink unmaps its tail; a growth moves its
/// pages to a fresh aligned range of the new size (the kernel moves page
/// tables, huge pages whole, instead of copying), the old range then
/// unmapped by the move.
///
/// # Safety
/// `ptr` is a block of `old` bytes mapped by [`Allocator`].
unsafe fn remap(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
    let (old, new) = (pages(old), pages(new));
    if new <= old {
        if new < old {
            // SAFETY: the tail of the block, no longer part of it.
            unsafe { libc::munmap(ptr.add(new).cast(), old - new) };
        }
        return ptr;
    }
    let dst = map_aligned(new);
    if dst.is_null() {
        return dst;
    }
    // SAFETY: `ptr..ptr + old` is the block's mapping; `dst..dst + new` a
    // fresh mapping of ours, which MREMAP_FIXED replaces.
    let moved = unsafe {
        libc::mremap(
            ptr.cast(),
            old,
            new,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dst.cast::<libc::c_void>(),
        )
    };
    if moved != libc::MAP_FAILED {
        return dst;
    }
    // The kernel may have unmapped `dst` before it failed, and another
    // thread may since have been given that range: `dst` is left alone
    // (at worst an untouched range stays mapped) and the block is copied
    // into another fresh one.
    let fresh = map_aligned(new);
    if !fresh.is_null() {
        // SAFETY: the old block is still whole; `fresh` is ours.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr, fresh, old);
            libc::munmap(ptr.cast(), old);
        }
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_block_is_aligned_zeroed_grows_and_shrinks_keeping_its_bytes() {
        let a = Allocator;
        let layout = Layout::from_size_align(3 * HUGE + 123, 8).unwrap();
        // SAFETY: a valid layout; every block is freed with its layout.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE, 0);
            assert!((0..layout.size()).step_by(4093).all(|i| *p.add(i) == 0));
            for i in (0..layout.size()).step_by(1000) {
                *p.add(i) = (i % 251) as u8;
            }
            let grown = a.realloc(p, layout, 7 * HUGE + 5);
            assert_eq!(grown as usize % HUGE, 0);
            assert!((0..layout.size())
                .step_by(1000)
                .all(|i| *grown.add(i) == (i % 251) as u8));
            *grown.add(7 * HUGE + 4) = 9;
            let big = Layout::from_size_align(7 * HUGE + 5, 8).unwrap();
            let shrunk = a.realloc(grown, big, HUGE + 1);
            assert_eq!(shrunk, grown);
            assert_eq!(*shrunk.add(1000), (1000 % 251) as u8);
            // Back under 2 MiB: to the system allocator, bytes kept.
            let small = a.realloc(shrunk, Layout::from_size_align(HUGE + 1, 8).unwrap(), 5000);
            assert_eq!(*small.add(1000), (1000 % 251) as u8);
            let again = a.realloc(small, Layout::from_size_align(5000, 8).unwrap(), 2 * HUGE);
            assert_eq!(again as usize % HUGE, 0);
            assert_eq!(*again.add(1000), (1000 % 251) as u8);
            a.dealloc(again, Layout::from_size_align(2 * HUGE, 8).unwrap());
        }
    }

    #[test]
    fn vectors_past_two_mib_grow_through_the_process_allocator() {
        // The process allocator is this one (lib.rs): a Vec growing by
        // doubling past 2 MiB keeps its contents.
        let mut v: Vec<u64> = Vec::new();
        for i in 0..1_000_000u64 {
            v.push(i);
        }
        assert_eq!(v.as_ptr() as usize % HUGE, 0);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).collect::<Vec<u64>>());
    }
}
