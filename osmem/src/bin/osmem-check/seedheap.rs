//! The heap as the seed's tests see it: `struct block_meta` headers.
//!
//! The checker reads the library's memory through the seed's documented
//! layout only (its own copy of the struct, not the library's code): the
//! heap must be a run of headers from `HeapStart` to the current break,
//! each followed by its payload, linked in address order with NULL at both
//! ends, every status free or allocated; every block the replay holds must
//! be one of the allocated ones (heap) or carry `STATUS_MAPPED` (mapped).

use crate::replay::Live;

/// The seed's `struct block_meta`.
#[repr(C)]
struct SeedMeta {
    size: usize,
    status: i32,
    prev: *const SeedMeta,
    next: *const SeedMeta,
}

const META_SIZE: usize = std::mem::size_of::<SeedMeta>();
const STATUS_FREE: i32 = 0;
const STATUS_ALLOC: i32 = 1;
const STATUS_MAPPED: i32 = 2;

/// What is wrong with the heap, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The rule broken.
    pub what: &'static str,
    /// The header (or payload) concerned.
    pub at: usize,
}

fn fault(what: &'static str, at: usize) -> Result<(), Fault> {
    Err(Fault { what, at })
}

/// The current program break (a query: `brk(0)` moves nothing).
pub fn current_break() -> usize {
    // SAFETY: `brk(0)` only reports the break.
    unsafe { libc::syscall(libc::SYS_brk, 0 as libc::c_long) as usize }
}

/// Header of the block whose payload is at `payload`.
///
/// # Safety
/// `payload` is a payload the library handed out and did not unmap.
unsafe fn header(payload: usize) -> &'static SeedMeta {
    // SAFETY: a header precedes every payload (caller).
    unsafe { &*((payload - META_SIZE) as *const SeedMeta) }
}

/// Checks the heap between `heap_start` and the current break, and the
/// headers of the `live` blocks (sorted by address). With `all_free`,
/// every heap block must be free.
///
/// # Safety
/// The library is not running; `live` holds only payloads it handed out.
pub unsafe fn check(heap_start: usize, live: &[Live], all_free: bool) -> Result<(), Fault> {
    let end = current_break();
    let in_heap = |p: usize| p >= heap_start && p < end;
    let mut live_heap = live.iter().filter(|l| in_heap(l.ptr));
    for block in live.iter().filter(|l| !in_heap(l.ptr)) {
        // SAFETY: a live mapped payload (caller).
        let meta = unsafe { header(block.ptr) };
        if meta.status != STATUS_MAPPED || meta.size < block.len {
            return fault("mapped block header", block.ptr);
        }
    }
    let mut at = heap_start;
    let mut prev: *const SeedMeta = std::ptr::null();
    while at < end {
        // SAFETY: `at` is below the break and was found by following
        // sizes from the first header, all checked to stay in the heap.
        let meta = unsafe { &*(at as *const SeedMeta) };
        let block_end = at
            .checked_add(META_SIZE)
            .and_then(|a| a.checked_add(meta.size))
            .unwrap_or(usize::MAX);
        if meta.prev != prev {
            return fault("prev is not the block before", at);
        }
        if meta.size % 8 != 0 || block_end > end {
            return fault("size not 8-aligned or past the break", at);
        }
        let next_expected = if block_end == end { 0 } else { block_end };
        if meta.next as usize != next_expected {
            return fault("next is not the block after (NULL at the end)", at);
        }
        match meta.status {
            STATUS_FREE => {}
            STATUS_ALLOC if !all_free => {
                let held = live_heap.next();
                if held.map(|l| l.ptr) != Some(at + META_SIZE) {
                    return fault("allocated block the replay does not hold", at);
                }
                if held.is_some_and(|l| meta.size < l.len) {
                    return fault("allocated block smaller than requested", at);
                }
            }
            _ => return fault("status", at),
        }
        prev = at as *const SeedMeta;
        at = block_end;
    }
    match live_heap.next() {
        Some(l) => fault("held block is not an allocated heap block", l.ptr),
        None => Ok(()),
    }
}
