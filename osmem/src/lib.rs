//! # osmem: `libosmem.so`, seed 004's allocator from region-heap's parts
//!
//! A shared library exporting exactly `os_malloc`, `os_calloc`,
//! `os_realloc` and `os_free` (C header: `include/osmem.h`) that behaves as
//! the seed's specification and its 40 reference traces say, down to each
//! `brk`, `mmap` and `munmap` call. It is a compatibility *policy* on top of
//! region-heap, not a separate allocator:
//!
//! | part | from | here |
//! |---|---|---|
//! | list algorithms (insert, unlink, consistency) | `region_heap::clist` | [`list`]: `Link` implemented for the seed's header |
//! | memory sources (`brk`, `mmap`, `munmap`, page size, rounding) | `region_heap_hosted::source` | [`memory`]: forwarded one to one |
//! | header layout, split, coalesce, best fit, prealloc, realloc rules | seed 004 | [`meta`], [`policy`] |
//!
//! The header is the seed's `struct block_meta` (32 bytes, read by the
//! seed's tests), not region-heap's 16-byte header, and the search is the
//! seed's exhaustive best fit, not the core's segregated lists: the seed's
//! tests check addresses that only these rules produce.
//!
//! Invariants of the exported functions: they make no system call but the
//! seed's (`brk`, `mmap`, `munmap` through [`memory::System`]); the break
//! is not queried or moved before the first heap use; one lock serialises
//! them (a spin lock: no system call either).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod list;
pub mod memory;
pub mod meta;
pub mod policy;
pub mod valgrind;

use core::ffi::c_void;

use memory::System;
use policy::Osmem;

/// The process's allocator.
// SAFETY: the only `Osmem` of the library (and so the only owner of the
// block list head).
static OSMEM: spin::Mutex<Osmem<System>> = spin::Mutex::new(unsafe { Osmem::new(System::new()) });

/// Allocates `size` bytes; NULL for 0 or when memory runs out.
#[no_mangle]
pub extern "C" fn os_malloc(size: usize) -> *mut c_void {
    OSMEM.lock().malloc(size).cast()
}

/// Allocates `nmemb * size` zeroed bytes; NULL when either is 0.
#[no_mangle]
pub extern "C" fn os_calloc(nmemb: usize, size: usize) -> *mut c_void {
    OSMEM.lock().calloc(nmemb, size).cast()
}

/// Resizes the block at `ptr` (see [`Osmem::realloc`]).
///
/// # Safety
/// `ptr` is NULL or a pointer returned by these functions and not given
/// back to the system (a heap block freed before is allowed: NULL).
#[no_mangle]
pub unsafe extern "C" fn os_realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded from the caller.
    unsafe { OSMEM.lock().realloc(ptr.cast(), size) }.cast()
}

/// Frees the block at `ptr` (NULL is ignored).
///
/// # Safety
/// As for [`os_realloc`].
#[no_mangle]
pub unsafe extern "C" fn os_free(ptr: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { OSMEM.lock().free(ptr.cast()) }
}
