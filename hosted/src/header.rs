//! The core's block header, read from outside the core.
//!
//! region-heap documents its header (see its `block` module); by default
//! it is 16 bytes right before the data:
//!
//! ```text
//! data - 16  next: i32   distance to the next header, in 16-byte granules
//! data - 12  prev: i32   distance to the previous header
//! data -  8  owner: usize  region address | state (3 low bits)
//! ```
//!
//! The core's integrity features move the data further away (32-byte
//! headers with `crc` or `guard`, plus a front guard with `guard`), so the
//! offsets here derive from the public `HEADER_SIZE` and `GUARD_SIZE`.
//! With `guard`, a block's usable size is the size that was asked for
//! (stored in the header, private to the core) and the bytes after it are
//! a guard zone: [`EXACT_USABLE`] is then false, callers ask the heap for
//! the usable size and do not cache blocks (a cache writes its links into
//! the data, which could be guard bytes).
//!
//! The malloc fast paths need two facts about a block without taking its
//! heap's lock: which region owns it (to find the per-CPU heap, and to tell
//! a region block from a large mapping) and its size (to pick a thread
//! cache bin). The core offers both only through `Heap` methods that need
//! the lock, so this module reads the documented words directly.
//!
//! Why reading without the lock is sound for a block the caller owns: the
//! owner word of a used block changes only when the block itself is freed
//! or resized, and its `next` distance only when the block itself is split,
//! merged or resized; freeing or merging its neighbours rewrites their
//! headers and at most its `prev` field, which is not read here.
//!
//! Large mappings (see `large`) put a header of their own before the data
//! whose last word is a tag in the same place as the owner word, so one
//! load tells the two kinds apart.

use region_heap::{GRANULE, GUARD_SIZE, HEADER_SIZE};

/// Distance from a block's data back to its header.
pub const DATA_OFFSET: usize = HEADER_SIZE + GUARD_SIZE;
/// Distance from a block's data back to its owner word.
pub const OWNER_OFFSET: usize = DATA_OFFSET - 8;
/// Whether [`usable_size`] is exact (no guard zones in the core).
pub const EXACT_USABLE: bool = GUARD_SIZE == 0;

/// State bits of a used block in the owner word (the core's `State::Used`).
pub const STATE_USED: usize = 1;
/// Mask of the state bits in the owner word.
pub const STATE_MASK: usize = 0b111;

/// The owner word of the block whose data starts at `data`.
///
/// # Safety
/// The word [`OWNER_OFFSET`] bytes before `data` is readable and `data` is
/// 8-aligned.
#[inline]
pub unsafe fn owner_word(data: *const u8) -> usize {
    // SAFETY: readable and aligned (caller).
    unsafe { data.sub(OWNER_OFFSET).cast::<usize>().read() }
}

/// The size in bytes (header included) of the used block whose data starts
/// at `data`, or `None` when the stored distance is not positive.
///
/// # Safety
/// `data` is the start of a used region-heap block the caller owns.
#[inline]
pub unsafe fn block_size(data: *const u8) -> Option<usize> {
    // SAFETY: the header lies right before the data (caller).
    let next = unsafe { data.sub(DATA_OFFSET).cast::<i32>().read() };
    (next > 0).then(|| next as usize * GRANULE)
}

/// Usable bytes of the used block whose data starts at `data`, when
/// [`EXACT_USABLE`] (else a bound that includes the tail guard).
///
/// # Safety
/// As for [`block_size`].
#[inline]
pub unsafe fn usable_size(data: *const u8) -> usize {
    // SAFETY: forwarded.
    unsafe { block_size(data) }.map_or(0, |size| size.saturating_sub(DATA_OFFSET + GUARD_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::alloc::Layout;
    use region_heap::Heap;

    #[repr(align(16))]
    struct Arena([u8; 1 << 16]);

    #[test]
    fn header_words_match_what_the_heap_reports() {
        let mut arena = Box::new(Arena([0; 1 << 16]));
        let mut heap = Heap::new();
        // SAFETY: the arena outlives the heap.
        unsafe { heap.add_region(arena.0.as_mut_ptr(), arena.0.len()) }.unwrap();
        let region = heap.region_ids().next().unwrap().addr();
        for size in [0, 1, 16, 17, 100, 1000, 4000] {
            let layout = Layout::from_size_align(size, 16).unwrap();
            let p = heap.allocate(layout).unwrap();
            // SAFETY: a live block of this heap.
            unsafe {
                assert_eq!(owner_word(p.as_ptr()), region | STATE_USED);
                if EXACT_USABLE {
                    assert_eq!(usable_size(p.as_ptr()), heap.usable_size(p).unwrap());
                }
                assert!(usable_size(p.as_ptr()) >= size);
                heap.free(p).unwrap();
                assert_ne!(owner_word(p.as_ptr()) & STATE_MASK, STATE_USED);
            }
        }
    }
}
