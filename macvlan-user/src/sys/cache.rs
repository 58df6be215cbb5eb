//! Hints to the CPU's cache.

/// Asks the CPU to bring `t` (every cache line of it) into its cache,
/// without waiting for it: a hint, which neither faults nor changes what
/// the program does. For walks over memory in an order the hardware cannot
/// guess, a few steps ahead of the reads; unlike a read, a prefetch is not
/// held back by atomic instructions before it.
#[inline(always)]
pub fn prefetch<T: ?Sized>(t: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = (t as *const T).cast::<i8>();
        let len = size_of_val(t);
        // From the line `t` starts in to the one its last byte is in.
        let mut at = -((start as usize % LINE) as isize);
        while at < len as isize {
            // SAFETY: a prefetch reads nothing the program sees and cannot
            // fault (an address outside `t`, in its first line, included).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_offset(at)) };
            at += LINE as isize;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = t;
}

/// A cache line's size on x86-64.
#[cfg(target_arch = "x86_64")]
const LINE: usize = 64;
