//! Guard zones and scrambling: the byte patterns around and inside blocks
//! (features `guard` and `scramble`; every function is a no-op without them).
//!
//! **Guards** (`guard`). A used block is laid out as
//! `[header][front guard][data: requested bytes][tail guard]`: the front
//! guard is [`crate::GUARD_SIZE`] bytes of [`GUARD_FRONT`]; the tail guard is
//! [`GUARD_TAIL`] from the end of the *requested* size to the end of the
//! block, so it also covers the rounding slack that MutekH leaves
//! unguarded: a one-byte overrun is caught. The header records the
//! requested size. Guards are verified on free, realloc, `usable_size` and
//! in `check()`.
//!
//! **Scrambling** (`scramble`). Data handed out is filled with
//! [`ALLOC_PATTERN`], freed memory with [`FREE_PATTERN`]. Invariant: in a
//! free block, every byte after its header and free-list link holds
//! [`FREE_PATTERN`]; the header of a block absorbed by a merge is
//! scrambled too, so a late double free finds a header made of the free
//! pattern, which `Region::validate` reports as a double free (without
//! `scramble`, the absorbed header is kept, marked absorbed, instead).
//! The first and last `depth` bytes of that area are verified when the
//! block is reused and in `check()`: a write after free is reported as
//! [`crate::Corruption::Poison`]. The depth is a run-time setting of the heap
//! (`Heap::set_scramble_check_depth`, default
//! [`DEFAULT_SCRAMBLE_CHECK_DEPTH`]; `usize::MAX` checks whole blocks).
//! Resizing in place fills only bytes that were not part of the block's
//! live data: unlike MutekH, it never overwrites what the caller stored.

use core::ptr::NonNull;

use crate::block::Block;
#[cfg(feature = "scramble")]
use crate::block::GRANULE;
#[cfg(feature = "guard")]
use crate::block::GUARD_SIZE;
#[cfg(any(feature = "guard", feature = "scramble"))]
use crate::block::{DATA_OFFSET, HEADER_SIZE};
#[cfg(any(feature = "guard", feature = "scramble"))]
use crate::error::Corruption;
use crate::error::HeapError;
#[cfg(feature = "scramble")]
use crate::freelist::FreeLink;

/// Fill of the front guard, right after the header (MutekH's value).
pub const GUARD_FRONT: u8 = 0x55;
/// Fill of the tail guard, from the requested end to the block's end.
pub const GUARD_TAIL: u8 = 0xaa;
/// Fill of freshly allocated data (feature `scramble`).
pub const ALLOC_PATTERN: u8 = 0x5a;
/// Fill of freed memory (feature `scramble`).
pub const FREE_PATTERN: u8 = 0xa5;
/// Bytes verified at each end of a free block by default (feature
/// `scramble`).
pub const DEFAULT_SCRAMBLE_CHECK_DEPTH: usize = 64;

/// Offset of a free block's scrambled area: after its header and link.
#[cfg(feature = "scramble")]
const FREE_AREA: usize = HEADER_SIZE + core::mem::size_of::<FreeLink>();

/// Writes `byte` over `len` bytes at `offset` from the block's header.
///
/// # Safety
/// The range lies inside the block's chunk and belongs to the heap (not to
/// a caller's live data).
#[cfg(any(feature = "guard", feature = "scramble"))]
#[inline]
unsafe fn fill(block: Block, offset: usize, len: usize, byte: u8) {
    // SAFETY: the range is heap-owned chunk memory (caller).
    unsafe { block.at_offset(offset).write_bytes(byte, len) }
}

/// Offset of the first byte in `offset..end` (from the block's header)
/// that is not `byte`.
#[cfg(any(feature = "guard", feature = "scramble"))]
fn mismatch(block: Block, offset: usize, end: usize, byte: u8) -> Option<usize> {
    mismatch_at(block.as_bytes(), offset, end, byte)
}

/// Offset of the first byte in `offset..end` from `base` that is not
/// `byte`. `base` is 8-aligned and the range lies in a chunk of a live
/// region: readable memory the heap wrote.
#[cfg(any(feature = "guard", feature = "scramble"))]
fn mismatch_at(base: NonNull<u8>, offset: usize, end: usize, byte: u8) -> Option<usize> {
    let byte_at = |i: usize| {
        // SAFETY: callers pass ranges inside a block or slab, which lies in
        // a chunk of a live region: readable memory the heap wrote.
        unsafe { base.add(i).read() }
    };
    let find = |from: usize, to: usize| (from..to).find(|&i| byte_at(i) != byte);
    // `base` is 8-aligned (a block's data or a slab object), so offsets
    // aligned to 8 are aligned words.
    let first_word = offset.next_multiple_of(8).min(end);
    if let Some(bad) = find(offset, first_word) {
        return Some(bad);
    }
    let words_end = first_word + (end - first_word) / 8 * 8;
    let pattern = u64::from_ne_bytes([byte; 8]);
    let mut i = first_word;
    while i < words_end {
        // SAFETY: an aligned word inside the range (see above).
        let word = unsafe { base.add(i).cast::<u64>().read() };
        if word != pattern {
            return find(i, i + 8);
        }
        i += 8;
    }
    find(words_end, end)
}

#[cfg(any(feature = "guard", feature = "scramble"))]
fn corrupted(block: Block, what: Corruption) -> HeapError {
    HeapError::Corrupted {
        addr: block.addr(),
        what,
    }
}

/// Prepares a block just handed out for `requested` bytes: records the
/// size and writes the guards (`guard`), fills the data with
/// [`ALLOC_PATTERN`] (`scramble`).
///
/// # Safety
/// `block` is a used block of an exclusively borrowed region, of at least
/// `block_size_for(requested)` bytes, whose data nobody uses yet.
#[inline]
pub(crate) unsafe fn on_allocate(block: Block, requested: usize) {
    #[cfg(feature = "guard")]
    {
        block.set_requested(requested);
        // SAFETY: the guards lie in the block, outside the requested data.
        unsafe {
            fill(block, HEADER_SIZE, GUARD_SIZE, GUARD_FRONT);
            let tail = DATA_OFFSET + requested;
            fill(block, tail, block.size() - tail, GUARD_TAIL);
        }
    }
    #[cfg(feature = "scramble")]
    {
        let len = if cfg!(feature = "guard") {
            requested
        } else {
            block.size() - DATA_OFFSET
        };
        // SAFETY: the block's data, not handed to the caller yet.
        unsafe { fill(block, DATA_OFFSET, len, ALLOC_PATTERN) };
    }
    let _ = (block, requested);
}

/// Verifies both guards of a used block (always `Ok` without `guard`).
#[inline]
pub(crate) fn check_guards(block: Block) -> Result<(), HeapError> {
    #[cfg(feature = "guard")]
    {
        // A damaged `requested` word must not overflow: saturate, and the
        // check below reports it.
        let tail = DATA_OFFSET.saturating_add(block.requested());
        let bad = if tail > block.size() {
            Some(tail.min(block.size()))
        } else {
            mismatch(block, HEADER_SIZE, DATA_OFFSET, GUARD_FRONT)
                .or_else(|| mismatch(block, tail, block.size(), GUARD_TAIL))
        };
        if let Some(offset) = bad {
            return Err(corrupted(
                block,
                Corruption::Guard {
                    at: block.addr() + offset,
                },
            ));
        }
    }
    let _ = block;
    Ok(())
}

/// After an in-place resize of a used block to `requested` bytes: fills
/// the bytes the block gained beyond its old live data with
/// [`ALLOC_PATTERN`] (`scramble`) and rewrites the tail guard (`guard`).
/// The first `min(old, new)` requested bytes are never written.
///
/// `old_requested` is the block's usable size before the resize and
/// `old_end` its end address.
///
/// # Safety
/// `block` is a used block of an exclusively borrowed region that was just
/// resized from `old_end`, and can hold `requested` bytes.
#[inline]
pub(crate) unsafe fn on_resize(
    block: Block,
    old_requested: usize,
    old_end: usize,
    requested: usize,
) {
    #[cfg(feature = "scramble")]
    {
        // Without guards the old live data may extend to the old end.
        let live_end = if cfg!(feature = "guard") {
            DATA_OFFSET + old_requested
        } else {
            old_end - block.addr()
        };
        let new_end = if cfg!(feature = "guard") {
            DATA_OFFSET + requested
        } else {
            block.size()
        };
        if new_end > live_end {
            // SAFETY: bytes the block gained, past its old live data.
            unsafe { fill(block, live_end, new_end - live_end, ALLOC_PATTERN) };
        }
    }
    #[cfg(feature = "guard")]
    {
        block.set_requested(requested);
        let tail = DATA_OFFSET + requested;
        // SAFETY: past the new requested end: the guard, not live data.
        unsafe { fill(block, tail, block.size() - tail, GUARD_TAIL) };
    }
    let _ = (block, old_requested, old_end, requested);
}

/// Extends a used block's tail over `gap` bytes it just received at its
/// end (from a neighbour's alignment gap): guard or allocation pattern.
///
/// # Safety
/// `block` is a used block whose last `gap` bytes were just given to it.
#[inline]
pub(crate) unsafe fn on_grown_by_gap(block: Block, gap: usize) {
    #[cfg(any(feature = "guard", feature = "scramble"))]
    {
        let at = block.size() - gap;
        let byte = if cfg!(feature = "guard") {
            GUARD_TAIL
        } else {
            ALLOC_PATTERN
        };
        // SAFETY: the gap is heap memory past the block's live data.
        unsafe { fill(block, at, gap, byte) };
    }
    let _ = (block, gap);
}

/// Scrambles a block that is becoming free, before it merges: everything
/// after its header gets [`FREE_PATTERN`] (`scramble`).
///
/// # Safety
/// `block` is a block of an exclusively borrowed region whose data nobody
/// uses any more, on no free list.
#[inline]
pub(crate) unsafe fn on_free(block: Block) {
    #[cfg(feature = "scramble")]
    // SAFETY: the block's data is dead (caller).
    unsafe {
        fill(block, HEADER_SIZE, block.size() - HEADER_SIZE, FREE_PATTERN)
    };
    let _ = block;
}

/// Scrambles the header and free-list link of a block that a merge just
/// absorbed (`scramble`; without it the header stays, marked absorbed).
///
/// # Safety
/// `absorbed` was just absorbed into a free block of an exclusively
/// borrowed region.
#[inline]
pub(crate) unsafe fn on_absorb(absorbed: Block) {
    #[cfg(feature = "scramble")]
    // SAFETY: the header and link lie inside the merged free block.
    unsafe {
        fill(absorbed, 0, FREE_AREA, FREE_PATTERN)
    };
    let _ = absorbed;
}

/// Whether the would-be header at `block` is made of the free pattern:
/// the pointer designates freed memory (`scramble`; always false without).
#[inline]
pub(crate) fn is_scrambled_free(block: Block) -> bool {
    #[cfg(feature = "scramble")]
    return mismatch(block, 0, HEADER_SIZE, FREE_PATTERN).is_none();
    #[cfg(not(feature = "scramble"))]
    {
        let _ = block;
        false
    }
}

/// Fills a fresh free block (a new chunk) with [`FREE_PATTERN`].
///
/// # Safety
/// As for [`on_free`].
#[inline]
pub(crate) unsafe fn on_new_free(block: Block) {
    // SAFETY: forwarded.
    unsafe { on_free(block) }
}

/// Verifies the free pattern of a free block over `depth` bytes at each
/// end of its scrambled area (always `Ok` without `scramble`).
pub(crate) fn check_free(block: Block, depth: usize) -> Result<(), HeapError> {
    #[cfg(feature = "scramble")]
    {
        let end = block.size();
        let depth = depth.min(end).next_multiple_of(GRANULE);
        let head_end = (FREE_AREA + depth).min(end);
        let tail_start = end.saturating_sub(depth).max(head_end);
        let bad = mismatch(block, FREE_AREA, head_end, FREE_PATTERN)
            .or_else(|| mismatch(block, tail_start, end, FREE_PATTERN));
        if let Some(offset) = bad {
            return Err(corrupted(
                block,
                Corruption::Poison {
                    at: block.addr() + offset,
                },
            ));
        }
    }
    let _ = (block, depth);
    Ok(())
}

// ---- slab objects (see `slab`): the same patterns, without a header ----

/// Prepares a slab object just handed out: verifies the free pattern of
/// its first and last `depth` bytes (`scramble`; a write after free is
/// `Poison`), fills it with [`ALLOC_PATTERN`] (`scramble`) and writes its
/// tail guard (`guard`: [`GUARD_SIZE`](crate::GUARD_SIZE) bytes of
/// [`GUARD_TAIL`] after the class's size). On `Poison` only the guard is
/// written.
///
/// # Safety
/// `object` is an object of `class` of a slab of an exclusively borrowed
/// region, just taken, whose bytes nobody uses yet.
#[inline]
pub(crate) unsafe fn on_object_allocate(
    object: NonNull<u8>,
    class: usize,
    depth: usize,
) -> Result<(), HeapError> {
    let size = crate::slab::class_size(class);
    #[cfg(feature = "guard")]
    // SAFETY: the guard after the object, inside its stride. Written even
    // when the pattern check fails: the object stays taken then, and a
    // taken object's guard is checked.
    unsafe {
        object.add(size).write_bytes(GUARD_TAIL, GUARD_SIZE)
    };
    check_free_object(object, class, depth)?;
    #[cfg(feature = "scramble")]
    // SAFETY: the object's bytes, not handed to the caller yet.
    unsafe {
        object.write_bytes(ALLOC_PATTERN, size)
    };
    let _ = (object, size);
    Ok(())
}

/// Scrambles a slab object being freed, guard included (`scramble`).
///
/// # Safety
/// `object` is a live object of `class` whose bytes nobody uses any more.
#[inline]
pub(crate) unsafe fn on_object_free(object: NonNull<u8>, class: usize) {
    #[cfg(feature = "scramble")]
    // SAFETY: the object's stride is dead (caller).
    unsafe {
        object.write_bytes(FREE_PATTERN, crate::slab::stride_of(class))
    };
    let _ = (object, class);
}

/// Scrambles every object of a new slab (`scramble`).
///
/// # Safety
/// `slab` was just initialised; its objects are the heap's.
#[inline]
pub(crate) unsafe fn on_new_slab(slab: crate::slab::Slab) {
    #[cfg(feature = "scramble")]
    {
        let first = slab.object(0);
        let len = crate::slab::SLAB_DATA - crate::slab::OBJECTS_OFFSET;
        // SAFETY: the objects area of a fresh slab (caller).
        unsafe { first.write_bytes(FREE_PATTERN, len) };
    }
    let _ = slab;
}

/// Verifies a live slab object's tail guard (`guard`; `Ok` without).
pub(crate) fn check_object_guard(object: NonNull<u8>, class: usize) -> Result<(), HeapError> {
    #[cfg(feature = "guard")]
    {
        let size = crate::slab::class_size(class);
        if let Some(bad) = mismatch_at(object, size, size + GUARD_SIZE, GUARD_TAIL) {
            let addr = object.as_ptr().addr();
            return Err(HeapError::Corrupted {
                addr,
                what: Corruption::Guard { at: addr + bad },
            });
        }
    }
    let _ = (object, class);
    Ok(())
}

/// Verifies the free pattern of a free slab object over `depth` bytes at
/// each end of its class's size (`scramble`; `Ok` without).
pub(crate) fn check_free_object(
    object: NonNull<u8>,
    class: usize,
    depth: usize,
) -> Result<(), HeapError> {
    #[cfg(feature = "scramble")]
    {
        let end = crate::slab::class_size(class);
        let depth = depth.min(end).next_multiple_of(GRANULE);
        let head_end = depth.min(end);
        let tail_start = end.saturating_sub(depth).max(head_end);
        let bad = mismatch_at(object, 0, head_end, FREE_PATTERN)
            .or_else(|| mismatch_at(object, tail_start, end, FREE_PATTERN));
        if let Some(offset) = bad {
            let addr = object.as_ptr().addr();
            return Err(HeapError::Corrupted {
                addr,
                what: Corruption::Poison { at: addr + offset },
            });
        }
    }
    let _ = (object, class, depth);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_distinct() {
        let all = [GUARD_FRONT, GUARD_TAIL, ALLOC_PATTERN, FREE_PATTERN];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| b != a));
        }
    }
}
