//! The C allocation functions with glibc's semantics, as Rust functions:
//! the shim exports them under their C names.
//!
//! glibc behaviour kept (glibc 2.36, plus 2.38's stricter `aligned_alloc`):
//! - `malloc(0)` returns a unique pointer (a 16-byte block);
//! - a request above `PTRDIFF_MAX`, or one the system cannot back, returns
//!   NULL with `errno = ENOMEM`; `calloc` and `reallocarray` check their
//!   multiplication for overflow (ENOMEM);
//! - `free(NULL)` does nothing; `realloc(NULL, n)` is `malloc(n)`;
//!   `realloc(p, 0)` frees `p` and returns NULL; a failed `realloc` leaves
//!   the block untouched;
//! - `posix_memalign` returns EINVAL (and leaves `*out` alone) unless the
//!   alignment is a power of two multiple of `sizeof(void *)`, ENOMEM on
//!   failure, and never sets `errno`;
//! - `aligned_alloc` fails with EINVAL unless the alignment is a power of
//!   two (glibc >= 2.38); `memalign` rounds an alignment that is not a
//!   power of two up to one (EINVAL only beyond `SIZE_MAX / 2 + 1`);
//!   `valloc(n)` is `memalign(page, n)`, `pvalloc(n)` also rounds `n` up to
//!   pages (ENOMEM on overflow);
//! - `malloc_usable_size(NULL)` is 0 and the result is at least the size
//!   asked for;
//! - an invalid or double free aborts after naming the address on stderr.
//!
//! Every function sets `errno` only when it fails, and every call is
//! counted (failed ones too) in the `get_stat` counters.

use core::ptr::{null_mut, NonNull};

use crate::global;
use crate::source::page_size;
use crate::stats::{Counter, Stat};

#[cold]
fn set_errno(value: libc::c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno.
    unsafe { *libc::__errno_location() = value };
}

#[inline(always)]
fn or_enomem(ptr: Option<NonNull<u8>>) -> *mut u8 {
    match ptr {
        Some(p) => p.as_ptr(),
        None => {
            set_errno(libc::ENOMEM);
            null_mut()
        }
    }
}

/// `malloc(size)`.
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    or_enomem(global::allocate(size, Some(Counter::Malloc)).map(|(p, _)| p))
}

/// `free(ptr)`.
///
/// # Safety
/// `ptr` is null or a block of this allocator nothing uses any more
/// (anything else is reported and aborts, as far as it can be detected).
#[inline]
pub unsafe fn free(ptr: *mut u8) {
    if let Some(p) = NonNull::new(ptr) {
        // SAFETY: forwarded.
        unsafe { global::release(p, "free", true) };
    }
}

/// `calloc(count, size)`: zeroed, overflow-checked.
pub fn calloc(count: usize, size: usize) -> *mut u8 {
    let Some(total) = count.checked_mul(size) else {
        global::count_call(Counter::Calloc);
        return or_enomem(None);
    };
    match global::allocate(total, Some(Counter::Calloc)) {
        Some((p, zeroed)) => {
            if !zeroed {
                // SAFETY: the block holds at least `total` writable bytes.
                unsafe { p.as_ptr().write_bytes(0, total) };
            }
            p.as_ptr()
        }
        None => or_enomem(None),
    }
}

/// `realloc(ptr, size)`.
///
/// # Safety
/// `ptr` is null or a live block of this allocator that the caller owns.
pub unsafe fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    let Some(p) = NonNull::new(ptr) else {
        return or_enomem(global::allocate(size, Some(Counter::Realloc)).map(|(p, _)| p));
    };
    global::count_call(Counter::Realloc);
    if size == 0 {
        // SAFETY: forwarded; glibc frees and returns NULL.
        unsafe { global::release(p, "realloc", true) };
        return null_mut();
    }
    // SAFETY: forwarded.
    or_enomem(unsafe { global::resize(p, size, "realloc") })
}

/// `reallocarray(ptr, count, size)`: `realloc` with an overflow check.
///
/// # Safety
/// As for [`realloc`].
pub unsafe fn reallocarray(ptr: *mut u8, count: usize, size: usize) -> *mut u8 {
    match count.checked_mul(size) {
        // SAFETY: forwarded.
        Some(total) => unsafe { realloc(ptr, total) },
        None => {
            global::count_call(Counter::Realloc);
            or_enomem(None)
        }
    }
}

/// `posix_memalign(out, align, size)`: 0, EINVAL or ENOMEM.
///
/// # Safety
/// `out` is valid for a pointer write.
pub unsafe fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> libc::c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<*mut u8>()) {
        global::count_call(Counter::Malloc);
        return libc::EINVAL;
    }
    match global::allocate_aligned(size, align, Counter::Malloc) {
        Some(p) => {
            // SAFETY: writable (caller).
            unsafe { out.write(p.as_ptr()) };
            0
        }
        None => libc::ENOMEM,
    }
}

/// `aligned_alloc(align, size)`: EINVAL unless `align` is a power of two.
pub fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        global::count_call(Counter::Malloc);
        set_errno(libc::EINVAL);
        return null_mut();
    }
    or_enomem(global::allocate_aligned(size, align, Counter::Malloc))
}

/// `memalign(align, size)`: an alignment that is not a power of two is
/// rounded up to one.
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    let Some(align) = align.max(1).checked_next_power_of_two() else {
        global::count_call(Counter::Malloc);
        set_errno(libc::EINVAL);
        return null_mut();
    };
    or_enomem(global::allocate_aligned(size, align, Counter::Malloc))
}

/// `valloc(size)`: page-aligned.
pub fn valloc(size: usize) -> *mut u8 {
    or_enomem(global::allocate_aligned(size, page_size(), Counter::Malloc))
}

/// `pvalloc(size)`: page-aligned, size rounded up to pages.
pub fn pvalloc(size: usize) -> *mut u8 {
    let page = page_size();
    match size.checked_add(page - 1) {
        Some(s) => valloc(s & !(page - 1)),
        None => {
            global::count_call(Counter::Malloc);
            or_enomem(None)
        }
    }
}

/// `malloc_usable_size(ptr)`.
///
/// # Safety
/// `ptr` is null or a pointer this allocator handed out.
pub unsafe fn malloc_usable_size(ptr: *mut u8) -> usize {
    match NonNull::new(ptr) {
        // SAFETY: forwarded.
        Some(p) => unsafe { global::usable(p) },
        None => 0,
    }
}

/// `get_stat()`: the counters (see [`Stat`]).
pub fn get_stat() -> Stat {
    global::stat()
}
