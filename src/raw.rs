//! Reading a used block's header without the heap: for allocators built
//! on the core that must learn a block's owner and size on a fast path
//! that takes no lock (the hosted malloc's `free` and thread cache).
//!
//! The header layout is the core's own (see the `block` module) and may
//! change with the features (`crc` and `guard` make headers 32 bytes and
//! move the data further away): everything here is derived from the
//! header type, so a caller never hardcodes an offset, a state bit or the
//! unit of a link.
//!
//! What is exported:
//! - [`DATA_OFFSET`] and [`OWNER_OFFSET`]: where the header and its owner
//!   word lie before the data;
//! - [`owner_word`], [`used_owner`], [`owner_region`]: the owner word and
//!   what it says (the region address, and whether the block is used);
//! - [`used_block_size`], [`usable_size_unlocked`], [`EXACT_USABLE`]: the
//!   size of a used block the caller owns.
//!
//! # Why reading without the lock is sound
//!
//! Every header write happens under the owning heap's lock, and these
//! reads take no lock; they are sound only for a *used block the caller
//! owns* (it was handed out to the caller and not freed since), because
//! of which fields of such a block the heap may write meanwhile:
//! - its owner word changes only when that block itself is freed or
//!   resized (its state leaves `Used` on a free, and a resize that moves
//!   the block frees it), which its owner (the caller) alone may ask for;
//! - its `next` distance (its size) changes only when that block itself is
//!   split, merged or resized. A merge of a used block happens only when
//!   it is freed; splits and resizes only when its owner resizes it. With
//!   one exception: an over-aligned allocation of a *neighbour* may give
//!   the block the small gap (less than [`crate::MIN_BLOCK`]) it leaves
//!   before its own header (the core's placement: a gap that cannot be a
//!   free block of its own goes to a used predecessor). The block then
//!   grows behind its owner's back: a concurrent [`used_block_size`] is a
//!   race with that write, and returns either size (both are at least
//!   what was handed out). A caller that needs the exact size, or no race
//!   at all, asks [`Heap::usable_size`](crate::Heap::usable_size) under
//!   the lock; [`Heap::free`](crate::Heap::free) returns the size it freed;
//! - freeing or merging its neighbours rewrites their own headers and at
//!   most this block's `prev` distance (and, with `crc`, its checksum),
//!   which nothing here reads: each read below loads one field through a
//!   raw pointer, never a reference to the whole header.
//!
//! A block that is not used, or not the caller's, may be rewritten at any
//! time by another thread: [`owner_word`] on such a pointer (a misuse the
//! caller wants to diagnose) is the caller's risk, as glibc's `free` reads
//! a chunk header it cannot vouch for. Its value then means nothing until
//! the heap has validated the block under its lock.

use core::ptr::NonNull;

use crate::block::{self, Block, State, GUARD_SIZE, OWNER_FIELD, STATE_MASK};

/// Distance in bytes from a block's header to its data (the header, plus
/// the front guard with `guard`).
pub const DATA_OFFSET: usize = block::DATA_OFFSET;

/// Distance in bytes from a block's data back to its owner word.
pub const OWNER_OFFSET: usize = DATA_OFFSET - OWNER_FIELD;

/// Whether [`usable_size_unlocked`] is exact, i.e. matches
/// [`Heap::usable_size`](crate::Heap::usable_size): true without guard
/// zones. With `guard`, a block's usable size is the size that was asked
/// for (kept in the header for the heap's checks) and the bytes after it,
/// up to the block's end, are a guard zone that must not be written.
pub const EXACT_USABLE: bool = GUARD_SIZE == 0;

const _: () = assert!(OWNER_OFFSET <= DATA_OFFSET);
const _: () = assert!(OWNER_OFFSET.is_multiple_of(core::mem::align_of::<usize>()));

/// The owner word of the block whose data starts at `data`: its region's
/// address and its state bits (see [`used_owner`]).
///
/// # Safety
/// The `usize` [`OWNER_OFFSET`] bytes before `data` is readable, `data` is
/// aligned to `usize`, and no other thread writes that word meanwhile
/// (true of a used block the caller owns; see the module doc).
#[inline]
pub unsafe fn owner_word(data: *const u8) -> usize {
    // SAFETY: readable, aligned (OWNER_OFFSET is a multiple of the word
    // size) and not written concurrently (caller). `wrapping_sub` asks
    // nothing of the pointer but the read does.
    unsafe { data.wrapping_sub(OWNER_OFFSET).cast::<usize>().read() }
}

/// The region address an owner word names, if its state is used.
#[inline]
pub fn used_owner(word: usize) -> Option<usize> {
    (State::from_bits(word) == State::Used).then_some(owner_region(word))
}

/// The region address an owner word names, whatever its state (for a
/// caller that must route a block to its heap before the heap validates
/// it, e.g. to diagnose a double free).
#[inline]
pub fn owner_region(word: usize) -> usize {
    word & !STATE_MASK
}

/// The size in bytes, header included, of the used block whose data
/// starts at `data`: what [`Heap::free`](crate::Heap::free) would return.
/// `None` when the stored distance to the next header is not positive
/// (not a block).
///
/// # Safety
/// `data` is the start of a used block of a live heap, which the caller
/// owns (allocated to it and not freed since): see the module doc.
#[inline]
pub unsafe fn used_block_size(data: *const u8) -> Option<usize> {
    // SAFETY: a used block's header lies DATA_OFFSET bytes before its
    // data, initialised (caller); `data` is non-null, being a block's.
    let block = unsafe { Block::from_data(NonNull::new_unchecked(data.cast_mut())) };
    // `raw_next` loads the `next` field alone, which only this block's own
    // free, split, merge or resize (its owner's calls) or a neighbour's
    // alignment gap change (module doc).
    let next = block.raw_next();
    (next > 0).then(|| next as usize * block::GRANULE)
}

/// Usable bytes of the used block whose data starts at `data`: exactly
/// what [`Heap::usable_size`](crate::Heap::usable_size) reports when
/// [`EXACT_USABLE`]; with guard zones, the bytes up to the block's last
/// guard granule, which may exceed the usable size. 0 when the header
/// holds no positive size.
///
/// # Safety
/// As for [`used_block_size`].
#[inline]
pub unsafe fn usable_size_unlocked(data: *const u8) -> usize {
    // SAFETY: forwarded.
    unsafe { used_block_size(data) }.map_or(0, |size| size.saturating_sub(DATA_OFFSET + GUARD_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Arena;
    use crate::{Heap, HEADER_SIZE, MIN_BLOCK};
    use core::alloc::Layout;
    use std::vec::Vec;

    const SIZES: [usize; 7] = [0, 1, 16, 17, 100, 1000, 4000];

    fn heap_over(arena: &Arena) -> (Heap, usize) {
        // Raw reads are for blocks: no slabs.
        let mut heap = Heap::new().with_slabs(false);
        // SAFETY: the arena outlives the heap in every test.
        unsafe { heap.add_region(arena.ptr(), arena.len()) }.unwrap();
        let region = heap.region_ids().next().unwrap().addr();
        (heap, region)
    }

    #[test]
    fn offsets_follow_the_header_type() {
        assert_eq!(DATA_OFFSET, HEADER_SIZE + GUARD_SIZE);
        assert_eq!(DATA_OFFSET - OWNER_OFFSET, OWNER_FIELD);
        assert_eq!(EXACT_USABLE, !cfg!(feature = "guard"));
        if !cfg!(any(feature = "crc", feature = "guard")) {
            // The documented 16-byte header: owner word right before data.
            assert_eq!((DATA_OFFSET, OWNER_OFFSET), (16, 8));
        }
    }

    #[test]
    fn unlocked_reads_match_what_the_heap_reports() {
        let arena = Arena::new(1 << 16);
        let (mut heap, region) = heap_over(&arena);
        let mut live = Vec::new();
        for size in SIZES {
            let before = heap.stats().in_use_bytes;
            let p = heap
                .allocate(Layout::from_size_align(size, 16).unwrap())
                .unwrap();
            let grown = heap.stats().in_use_bytes - before;
            assert_eq!(heap.in_use_bytes(), heap.stats().in_use_bytes);
            // SAFETY: a live block of this heap, which this test owns.
            unsafe {
                assert_eq!(used_owner(owner_word(p.as_ptr())), Some(region));
                assert_eq!(owner_region(owner_word(p.as_ptr())), region);
                let block = used_block_size(p.as_ptr()).unwrap();
                assert_eq!(block, grown, "size {size}");
                assert!(block >= MIN_BLOCK && block >= size + DATA_OFFSET);
                let usable = heap.usable_size(p).unwrap();
                if EXACT_USABLE {
                    assert_eq!(usable_size_unlocked(p.as_ptr()), usable);
                }
                assert!(usable_size_unlocked(p.as_ptr()) >= usable.max(size));
            }
            live.push((p, grown));
        }
        // Free in an order that merges with both neighbours.
        for i in [1, 3, 5, 2, 0, 6, 4] {
            let (p, size) = live[i];
            // SAFETY: a live block, freed once; afterwards only its owner
            // word is read, in the arena this test owns.
            unsafe {
                assert_eq!(heap.free(p), Ok(size));
                assert_eq!(used_owner(owner_word(p.as_ptr())), None);
            }
        }
        assert_eq!(heap.stats().in_use_bytes, 0);
        heap.check().unwrap();
    }

    #[test]
    fn a_freed_block_no_longer_reads_as_used() {
        let arena = Arena::new(1 << 16);
        let (mut heap, _) = heap_over(&arena);
        for size in SIZES {
            let p = heap
                .allocate(Layout::from_size_align(size, 16).unwrap())
                .unwrap();
            // SAFETY: a live block, freed once; then its owner word is read
            // in the arena this test owns, with no other thread.
            unsafe {
                assert!(used_owner(owner_word(p.as_ptr())).is_some());
                heap.free(p).unwrap();
                assert_eq!(used_owner(owner_word(p.as_ptr())), None);
            }
        }
    }

    #[test]
    fn a_block_grown_by_a_neighbours_gap_reads_its_new_size() {
        // An aligned request carves from the end of a roomy free block, so
        // only a region too full for that (the slow search on the way to
        // failure) gives a gap to a neighbour: here, a free tail just big
        // enough for the aligned block once its first 16 bytes, too few
        // for a free block, go to the used block `a` before it.
        let arena = Arena::new(1 << 16);
        let (mut heap, _) = heap_over(&arena);
        heap.set_quick_depth(0).unwrap();
        let probe = heap.allocate(Layout::new::<u8>()).unwrap();
        let tail_start = probe.as_ptr().addr() - DATA_OFFSET;
        // SAFETY: a live block this test owns; it merges back.
        unsafe { heap.free(probe) }.unwrap();
        let tail_end = tail_start + heap.stats().free_bytes;
        // `b`'s data 32-aligned 16 bytes into the last free block.
        let mut b_request = 16;
        let last = |b_request: usize| crate::block::block_size_for(b_request).unwrap() + 16;
        if (tail_end - last(b_request) + DATA_OFFSET) % 32 != 16 {
            b_request += 16;
        }
        let b_block = last(b_request) - 16;
        let a_block = tail_end - last(b_request) - tail_start;
        let a = heap
            .allocate(Layout::from_size_align(a_block - crate::BLOCK_OVERHEAD, 16).unwrap())
            .unwrap();
        // SAFETY: a live block this test owns.
        let size = unsafe { used_block_size(a.as_ptr()) }.unwrap();
        assert_eq!(size, a_block);
        assert_eq!(heap.stats().free_bytes, b_block + 16);
        let before = heap.stats().in_use_bytes;
        let b = heap
            .allocate(Layout::from_size_align(b_request, 32).unwrap())
            .unwrap();
        // SAFETY: live blocks this test owns.
        unsafe {
            let b_size = used_block_size(b.as_ptr()).unwrap();
            assert_eq!(b_size, b_block);
            assert_eq!(
                used_block_size(a.as_ptr()),
                Some(size + 16),
                "a took the gap"
            );
            assert_eq!(heap.stats().in_use_bytes - before, b_size + 16);
            assert_eq!(heap.in_use_bytes(), heap.stats().in_use_bytes);
            // `free` returns the grown size, as the unlocked read says.
            assert_eq!(heap.free(a), Ok(size + 16));
            assert_eq!(heap.free(b), Ok(b_size));
        }
        heap.check().unwrap();
    }
}
