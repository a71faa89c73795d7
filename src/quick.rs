//! Quick lists: small blocks freed whole, kept for reuse at the same size.
//!
//! Kernels and programs free and allocate the same small sizes over and
//! over. Through the free index, each such pair costs a merge with the free
//! neighbours, a class lookup, a split and the list updates that go with
//! them. A region therefore keeps, for every exact block size up to
//! [`QUICK_MAX`], a LIFO of blocks freed whole (dlmalloc's "fastbins", in
//! the region model): a free of such a block pushes it, an allocation of
//! that size pops it, and neither touches a neighbour or the index.
//!
//! What stays true, so that the rest of the heap is not weakened:
//! - a cached block keeps its header, in state [`State::Cached`]: freeing it
//!   again is reported as a double free, and a neighbour's free never
//!   merges with it (only `Free` blocks merge);
//! - the list of class `q` holds only blocks of `class_size(q)` bytes of
//!   this region, at most `depth` of them; each block's link (where a free
//!   block keeps its free-list link) names the next block of the list;
//! - a popped block is vetted first: its owner word must name this region
//!   in state `Cached`, its size must be the class's, the link must lead
//!   into one of the region's chunks, and the `crc`/`scramble` checks of a
//!   free block apply (a cached block's data holds the free pattern);
//! - cached blocks are free memory for the counters (neither used nor on
//!   the index) and are counted apart (`cached_blocks`, `cached_bytes`);
//! - they are *flushed* (given back to the index through the ordinary
//!   merge) before the region reports that it has no room, before a
//!   reserve, and on request: the quick lists never make an allocation
//!   fail that the index alone would serve. A flush costs at most
//!   `QUICK_CLASSES × depth` merges, a bound fixed at build time.
//!
//! A damaged cached block stops a flush: it stays on its list and the
//! damage is returned (`Corrupted`). Until it is repaired, every request
//! that the region's index cannot serve reports that damage instead of
//! `OutOfMemory`, and the heap does not go on to lower-priority regions:
//! damage is reported, never silently worked around.
//!
//! The depth is a run-time setting of the heap (`Heap::set_quick_depth`,
//! default [`DEFAULT_QUICK_DEPTH`]; 0 turns the lists off).

use crate::block::{Block, State, GRANULE, MIN_BLOCK};

/// Exact block sizes that have a quick list.
pub(crate) const QUICK_CLASSES: usize = 32;
/// Largest block size (header included) a quick list keeps.
pub const QUICK_MAX: usize = MIN_BLOCK + (QUICK_CLASSES - 1) * GRANULE;
/// Blocks each quick list holds at most by default.
pub const DEFAULT_QUICK_DEPTH: u8 = 32;

/// The quick list of blocks of `size` bytes, if they have one.
#[inline]
pub(crate) fn quick_class(size: usize) -> Option<usize> {
    // `checked_sub`: a damaged header may claim less than a minimal block.
    let above = size.checked_sub(MIN_BLOCK)?;
    (size <= QUICK_MAX).then_some(above / GRANULE)
}

/// The block size of quick list `q`.
#[inline]
pub(crate) fn class_size(q: usize) -> usize {
    MIN_BLOCK + q * GRANULE
}

/// The quick lists of one region.
pub(crate) struct QuickLists {
    heads: [Option<Block>; QUICK_CLASSES],
    lens: [u8; QUICK_CLASSES],
    /// Most blocks per list; 0 turns the lists off.
    depth: u8,
    /// Blocks on all lists.
    pub(crate) blocks: usize,
    /// Bytes of those blocks, headers included.
    pub(crate) bytes: usize,
}

impl QuickLists {
    /// Empty lists that hold up to `depth` blocks each.
    pub(crate) const fn new(depth: u8) -> Self {
        QuickLists {
            heads: [None; QUICK_CLASSES],
            lens: [0; QUICK_CLASSES],
            depth,
            blocks: 0,
            bytes: 0,
        }
    }

    /// Most blocks per list.
    pub(crate) fn depth(&self) -> u8 {
        self.depth
    }

    /// Sets the most blocks per list; call only when the lists are empty.
    pub(crate) fn set_depth(&mut self, depth: u8) {
        debug_assert_eq!(self.blocks, 0);
        self.depth = depth;
    }

    /// The first block of list `q` (`q < QUICK_CLASSES`).
    #[inline]
    pub(crate) fn head(&self, q: usize) -> Option<Block> {
        self.heads[q]
    }

    /// Blocks on list `q`.
    pub(crate) fn len(&self, q: usize) -> usize {
        usize::from(self.lens[q])
    }

    /// A list holding a block, if any.
    pub(crate) fn any_nonempty(&self) -> Option<usize> {
        if self.blocks == 0 {
            return None;
        }
        self.heads.iter().position(Option::is_some)
    }

    /// Whether a block of `size` bytes has a quick list with room.
    #[inline]
    pub(crate) fn has_room(&self, size: usize) -> bool {
        quick_class(size).is_some_and(|q| self.lens[q] < self.depth)
    }

    /// Caches the block `block` of `size` bytes.
    ///
    /// # Safety
    /// `block` is a used block of the region owning these lists, of `size`
    /// bytes, whose data nobody uses any more, and `has_room(size)`.
    #[inline]
    pub(crate) unsafe fn push(&mut self, block: Block, size: usize) {
        let Some(q) = quick_class(size) else {
            return;
        };
        block.set_state(State::Cached);
        // SAFETY: the block's free link area is dead data (caller), large
        // enough for a pointer (MIN_BLOCK) and aligned (granules).
        unsafe { link_slot(block).write(self.heads[q]) };
        self.heads[q] = Some(block);
        self.lens[q] += 1;
        self.blocks += 1;
        self.bytes += size;
    }

    /// Takes the head of list `q`, whose link was read as `next` (and
    /// vetted by the caller), and marks it used.
    ///
    /// # Safety
    /// List `q` is not empty and `next` is its head's link.
    #[inline]
    pub(crate) unsafe fn pop(&mut self, q: usize, next: Option<Block>) -> Block {
        // SAFETY: the list is not empty (caller).
        let block = unsafe { self.heads[q].unwrap_unchecked() };
        self.heads[q] = next;
        self.lens[q] -= 1;
        self.blocks -= 1;
        self.bytes -= class_size(q);
        block.set_state(State::Used);
        block
    }
}

/// Where a cached block keeps its link: the start of its free area.
fn link_slot(block: Block) -> *mut Option<Block> {
    block.free_link().cast::<Option<Block>>().as_ptr()
}

/// The link of a cached block as an address (0 for the end of the list):
/// never followed as read, the region proves it first.
#[inline]
pub(crate) fn link_addr(block: Block) -> usize {
    // SAFETY: a cached block's link lies right after its header inside its
    // chunk (Block's invariant, MIN_BLOCK), on a granule: readable, aligned.
    unsafe { link_slot(block).cast::<usize>().read() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_exact_sizes_up_to_the_limit() {
        assert_eq!(quick_class(MIN_BLOCK), Some(0));
        assert_eq!(quick_class(MIN_BLOCK + GRANULE), Some(1));
        assert_eq!(quick_class(QUICK_MAX), Some(QUICK_CLASSES - 1));
        assert_eq!(quick_class(QUICK_MAX + GRANULE), None);
        for q in 0..QUICK_CLASSES {
            assert_eq!(quick_class(class_size(q)), Some(q));
        }
    }
}
