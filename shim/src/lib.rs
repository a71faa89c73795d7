//! `libregionheap.so`: region-heap behind the C allocation ABI.
//!
//! Load it with `LD_PRELOAD=.../libregionheap.so program` or link against
//! it (`-lregionheap`): every `malloc`, `free`, `calloc`, `realloc`,
//! `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`,
//! `pvalloc` and `malloc_usable_size` of the process then goes to the
//! per-CPU region heaps of `region_heap_hosted`, whose `malloc` module
//! holds the semantics (glibc's errno and NULL rules). This crate only
//! exports them and installs the process hooks:
//! - a constructor registers a `pthread_atfork` child handler and reads
//!   `REGIONHEAP_STATS`. Nothing is locked before `fork` (that deadlocks
//!   with stdio and with signal handlers that fork); the child handler
//!   abandons every heap whose lock the child inherited held, so the
//!   child never waits for a thread it does not have (see
//!   `region_heap_hosted::global` for what the child may do);
//! - a destructor prints `get_stat()` to stderr at exit when
//!   `REGIONHEAP_STATS` is set to anything but `0` (`2` adds one line per
//!   heap and the large-block cache).
//!
//! Thread exit is handled by the hosted crate (a `pthread` key whose
//! destructor flushes the thread's cache).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU8, Ordering};

use region_heap_hosted::global;
use region_heap_hosted::malloc as c;
use region_heap_hosted::stats::Stat;

/// `malloc(3)`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    c::malloc(size).cast()
}

/// `free(3)`.
///
/// # Safety
/// `ptr` is null or a block of this allocator that nothing uses any more.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { c::free(ptr.cast()) }
}

/// `calloc(3)`.
#[no_mangle]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    c::calloc(count, size).cast()
}

/// `realloc(3)`.
///
/// # Safety
/// `ptr` is null or a live block of this allocator owned by the caller.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { c::realloc(ptr.cast(), size) }.cast()
}

/// `reallocarray(3)`.
///
/// # Safety
/// As for `realloc`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { c::reallocarray(ptr.cast(), count, size) }.cast()
}

/// `posix_memalign(3)`.
///
/// # Safety
/// `out` is valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: forwarded.
    unsafe { c::posix_memalign(out.cast(), align, size) }
}

/// `aligned_alloc(3)`.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    c::aligned_alloc(align, size).cast()
}

/// `memalign(3)`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    c::memalign(align, size).cast()
}

/// `valloc(3)`.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    c::valloc(size).cast()
}

/// `pvalloc(3)`.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    c::pvalloc(size).cast()
}

/// `malloc_usable_size(3)`.
///
/// # Safety
/// `ptr` is null or a pointer this allocator handed out.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // SAFETY: forwarded.
    unsafe { c::malloc_usable_size(ptr.cast()) }
}

/// `struct regionheap_stat get_stat(void)` (see `include/regionheap.h`).
#[no_mangle]
pub extern "C" fn get_stat() -> Stat {
    c::get_stat()
}

extern "C" {
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
}

unsafe extern "C" fn fork_child() {
    // SAFETY: registered as the atfork child handler only.
    unsafe { global::fork_child() };
}

/// 0: no report at exit; 1: the counters; 2: also one line per heap.
static PRINT_STATS: AtomicU8 = AtomicU8::new(0);

/// Runs when the library is loaded.
extern "C" fn on_load() {
    // SAFETY: a child handler with the expected signature.
    unsafe { pthread_atfork(None, None, Some(fork_child)) };
    // SAFETY: a NUL-terminated name; `getenv` does not allocate.
    let value = unsafe { libc::getenv(c"REGIONHEAP_STATS".as_ptr()) };
    // SAFETY: a non-null result is a NUL-terminated string.
    let level = if value.is_null() {
        0
    } else {
        // SAFETY: as above.
        match unsafe { *value } as u8 {
            0 | b'0' => 0,
            b'2' => 2,
            _ => 1,
        }
    };
    PRINT_STATS.store(level, Ordering::Relaxed);
}

/// Runs at exit (and when the library is unloaded).
extern "C" fn on_unload() {
    match PRINT_STATS.load(Ordering::Relaxed) {
        0 => {}
        level => global::print_stat(level == 2),
    }
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

#[used]
#[link_section = ".fini_array"]
static ON_UNLOAD: extern "C" fn() = on_unload;
