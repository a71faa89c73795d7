//! `LinkedListBackend`: `linked_list_allocator::Heap` 0.10 behind the
//! [`Backend`] interface (feature `linked-list`).

use super::*;

/// Bytes of a hole header in `linked_list_allocator`: its smallest block
/// and the granule its sizes are rounded to (`2 * usize`, aligned to `usize`).
const HOLE: usize = 2 * core::mem::size_of::<usize>();
const WORD: usize = core::mem::align_of::<usize>();

/// `linked_list_allocator::Heap` behind the [`Backend`] interface.
///
/// An address-ordered first-fit list of holes, with no per-block header:
/// the tightest packing of the peers, at O(free holes) per allocation
/// and free.
///
/// What the upstream allocator cannot do, and what the adapter does
/// about it:
/// - **one contiguous range, growing only at its top**: the first
///   `add_memory` initialises the heap; later ranges are accepted only if
///   they start exactly at the current top (`Heap::extend`). A range
///   that overlaps the heap is refused with `RegionOverlap`, any other
///   with `TooManyRegions` (it would need a second region);
/// - **O(n) allocation and free**: both walk the address-ordered hole
///   list; freeing a full arena block by block takes tens of seconds;
/// - **no realloc in place**: `realloc` always allocates, copies, frees;
/// - **no error detection**: upstream trusts the pointer and layout of
///   `deallocate` (a double free corrupts the list or panics on an
///   internal assertion). The adapter refuses only a pointer outside
///   `[bottom, top)` (`NotFromHeap`) or a block that would run past the
///   top (`LayoutMismatch`);
/// - **no statistics** beyond bytes in use: the adapter counts operations;
///   `largest_free`, `free_blocks` and `metadata_bytes` stay zero, and
///   `in_use_bytes` is upstream's rounded `used()`;
/// - no consistency check (`check` always succeeds).
pub struct LinkedListBackend {
    heap: linked_list_allocator::Heap,
    ops: Ops,
}

impl LinkedListBackend {
    /// An empty heap.
    pub const fn new() -> Self {
        LinkedListBackend {
            heap: linked_list_allocator::Heap::empty(),
            ops: Ops::ZERO,
        }
    }

    /// The upstream heap, for direct use.
    pub fn upstream(&mut self) -> &mut linked_list_allocator::Heap {
        &mut self.heap
    }

    fn is_empty(&self) -> bool {
        self.heap.bottom().is_null()
    }

    /// Bytes upstream really reserves for `layout` (its `align_layout`).
    fn footprint(layout: Layout) -> usize {
        layout.size().max(HOLE).next_multiple_of(WORD)
    }

    /// Refuses a block that does not lie in `[bottom, top)`.
    fn vet(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        let addr = ptr.as_ptr().addr();
        let (bottom, top) = (self.heap.bottom().addr(), self.heap.top().addr());
        let result = if self.is_empty() || addr < bottom || addr >= top {
            Err(HeapError::NotFromHeap { addr })
        } else if !addr.is_multiple_of(layout.align()) || top - addr < Self::footprint(layout) {
            Err(HeapError::LayoutMismatch {
                addr,
                size: layout.size(),
                align: layout.align(),
            })
        } else {
            Ok(())
        };
        if result.is_err() {
            self.ops.misuses += 1;
        }
        result
    }
}

impl Default for LinkedListBackend {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: upstream hands out disjoint blocks of at least the layout's
// size and alignment inside the ranges it was given, and the adapter
// only forwards calls whose preconditions it or its caller established.
unsafe impl Backend for LinkedListBackend {
    const EMPTY: Self = Self::new();
    const NAME: &'static str = "linked_list_allocator";

    /// # Safety
    /// As `Backend::add_memory` requires: the range is valid for reads and
    /// writes, used by nothing else, and stays so while the heap (or any block
    /// it handed out) is in use.
    unsafe fn add_memory(&mut self, start: *mut u8, size: usize) -> Result<(), HeapError> {
        let range = HeapError::RegionTooSmall {
            start: start.addr(),
            size,
        };
        // Upstream aligns the start itself but asserts the range is large
        // enough and panics on overflow: check first.
        let addr = start.addr();
        let end = addr.checked_add(size).ok_or(range)?;
        let first = addr.checked_next_multiple_of(WORD).ok_or(range)?;
        if start.is_null() || end.saturating_sub(first) < 2 * HOLE {
            return Err(range);
        }
        if self.is_empty() {
            // SAFETY: the caller gives the range to the heap for as long
            // as it lives; it holds at least two holes (checked above).
            unsafe { self.heap.init(start, size) };
            return Ok(());
        }
        let (bottom, top) = (self.heap.bottom().addr(), self.heap.top().addr());
        if addr < top && bottom < end {
            return Err(HeapError::RegionOverlap { start: addr, size });
        }
        if addr != top {
            return Err(HeapError::TooManyRegions);
        }
        // SAFETY: the range starts at the heap's top and the caller gives
        // it to the heap for as long as it lives.
        unsafe { self.heap.extend(size) };
        Ok(())
    }

    fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        match self.heap.allocate_first_fit(layout) {
            Ok(ptr) => {
                self.ops.allocations += 1;
                self.ops.used_blocks += 1;
                self.ops.requested += layout.size();
                Ok(ptr)
            }
            Err(()) => {
                self.ops.failures += 1;
                Err(HeapError::OutOfMemory {
                    size: layout.size(),
                    align: layout.align(),
                })
            }
        }
    }

    /// # Safety
    /// As `Backend::deallocate` requires: `ptr` was returned by this heap for
    /// `layout`, is live, and nothing uses it after the call.
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        self.vet(ptr, layout)?;
        // SAFETY: the caller promises `ptr` is a live block allocated
        // with `layout`; it lies inside the heap (checked).
        unsafe { self.heap.deallocate(ptr, layout) };
        self.ops.frees += 1;
        self.ops.used_blocks -= 1;
        self.ops.requested -= layout.size();
        Ok(())
    }

    /// # Safety
    /// As `Backend::realloc` requires: as for `deallocate`; on success the old
    /// pointer is dead unless it is the one returned.
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, HeapError> {
        self.vet(ptr, layout)?;
        let new_layout = Layout::from_size_align(new_size, layout.align())
            .map_err(|_| HeapError::SizeOverflow { size: new_size })?;
        if Self::footprint(new_layout) == Self::footprint(layout) {
            // Same reserved bytes: nothing to move.
            self.ops.resized_in_place(layout.size(), new_size);
            return Ok(ptr);
        }
        let new = self.allocate(new_layout)?;
        // SAFETY: both blocks are live and disjoint.
        unsafe { new.copy_from_nonoverlapping(ptr, layout.size().min(new_size)) };
        // SAFETY: the caller gives up the old block, allocated with `layout`.
        unsafe { self.heap.deallocate(ptr, layout) };
        self.ops.moved(layout.size());
        Ok(new)
    }

    /// # Safety
    /// As `Backend::usable_size` requires: `ptr` is a live block of this heap
    /// allocated with `layout`.
    unsafe fn usable_size(&self, ptr: NonNull<u8>, layout: Layout) -> Result<usize, HeapError> {
        let addr = ptr.as_ptr().addr();
        if self.is_empty() || addr < self.heap.bottom().addr() || addr >= self.heap.top().addr() {
            return Err(HeapError::NotFromHeap { addr });
        }
        // Upstream never hands out a tail smaller than a hole: the block
        // is exactly its rounded footprint.
        Ok(Self::footprint(layout))
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        if !self.is_empty() {
            stats.regions = 1;
            stats.chunks = 1;
            stats.total_bytes = self.heap.size();
            stats.in_use_bytes = self.heap.used();
            stats.free_bytes = self.heap.free();
        }
        self.ops.fill(&mut stats);
        stats
    }

    fn growth_hint(&self, layout: Layout) -> usize {
        Self::footprint(layout)
            .saturating_add(layout.align())
            .saturating_add(2 * HOLE)
    }
}

impl core::fmt::Debug for LinkedListBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        super::debug_backend(self, f)
    }
}
