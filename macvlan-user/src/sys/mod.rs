//! The only layer that makes raw system calls; the rest of mvnet speaks in
//! `std` types.
pub mod fs;
