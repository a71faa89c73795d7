//! `BuddyBackend<ORDER>`: `buddy_system_allocator::Heap<ORDER>` 0.13
//! behind the [`Backend`] interface (feature `buddy`).

use super::*;

const MAX_RANGES: usize = crate::heap::MAX_REGIONS;

/// `buddy_system_allocator::Heap<ORDER>` behind the [`Backend`]
/// interface; blocks are powers of two up to `2^(ORDER - 1)` bytes.
///
/// Every block is `max(size.next_power_of_two(), align, 8)` bytes and
/// naturally aligned to that size, with no header: fast on small
/// uniform sizes, up to 2x internal waste on others.
///
/// What the upstream allocator cannot do, and what the adapter does
/// about it:
/// - **O(n) free**: merging looks for the buddy by scanning the whole
///   free list of the block's size class; freeing a full arena block by
///   block takes seconds;
/// - **ranges never merge**: ranges added separately stay separate, even
///   when they touch, so no block spans two of them. The adapter records
///   up to [`BuddyBackend::MAX_RANGES`] ranges (more: `TooManyRegions`) to refuse an
///   overlapping one (`RegionOverlap`); upstream would corrupt itself;
/// - **no error detection**: upstream trusts `dealloc`'s pointer and
///   layout (a double free puts the block on a list twice). The adapter
///   refuses a pointer outside every range (`NotFromHeap`) or not
///   aligned to its size class (`LayoutMismatch`);
/// - **realloc in place only within a size class**: a block grows in
///   place up to its power of two and never beyond; otherwise `realloc`
///   allocates, copies and frees. To keep upstream's byte counter
///   consistent across such in-place resizes, the adapter always passes
///   upstream the rounded class size;
/// - **requests above `2^(ORDER - 1)` bytes** cannot be served at all
///   (`SizeOverflow`);
/// - statistics: bytes in use and total only (plus the adapter's operation
///   counters); no free-block count, largest free block or check.
pub struct BuddyBackend<const ORDER: usize = 32> {
    heap: buddy_system_allocator::Heap<ORDER>,
    ranges: [(usize, usize); MAX_RANGES],
    count: usize,
    ops: Ops,
}

impl<const ORDER: usize> BuddyBackend<ORDER> {
    /// Most separate ranges the adapter remembers (for its pointer and
    /// overlap checks): [`crate::MAX_REGIONS`].
    pub const MAX_RANGES: usize = MAX_RANGES;

    /// An empty heap.
    pub const fn new() -> Self {
        BuddyBackend {
            heap: buddy_system_allocator::Heap::new(),
            ranges: [(0, 0); MAX_RANGES],
            count: 0,
            ops: Ops::ZERO,
        }
    }

    /// The upstream heap, for direct use.
    pub fn upstream(&mut self) -> &mut buddy_system_allocator::Heap<ORDER> {
        &mut self.heap
    }

    /// The layout upstream sees for `layout`: size rounded to its block
    /// (so in-place resizes within a class keep its counters right), or
    /// `None` when the block exceeds the largest order.
    fn class_layout(layout: Layout) -> Option<Layout> {
        let size = layout
            .size()
            .checked_next_power_of_two()?
            .max(layout.align())
            .max(core::mem::size_of::<usize>());
        if size.trailing_zeros() as usize >= ORDER {
            return None;
        }
        Layout::from_size_align(size, layout.align()).ok()
    }

    fn range_of(&self, addr: usize) -> Option<(usize, usize)> {
        self.ranges[..self.count]
            .iter()
            .copied()
            .find(|&(start, end)| start <= addr && addr < end)
    }

    /// Refuses a pointer outside every range, or one that cannot be the
    /// start of a block of `layout`'s class; returns that class layout.
    fn vet(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<Layout, HeapError> {
        let addr = ptr.as_ptr().addr();
        let mismatch = HeapError::LayoutMismatch {
            addr,
            size: layout.size(),
            align: layout.align(),
        };
        let result = match (self.range_of(addr), Self::class_layout(layout)) {
            (None, _) => Err(HeapError::NotFromHeap { addr }),
            (Some(_), None) => Err(mismatch),
            (Some((_, end)), Some(class)) => {
                if addr.is_multiple_of(class.size()) && end - addr >= class.size() {
                    Ok(class)
                } else {
                    Err(mismatch)
                }
            }
        };
        if result.is_err() {
            self.ops.misuses += 1;
        }
        result
    }
}

impl<const ORDER: usize> Default for BuddyBackend<ORDER> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: upstream hands out naturally aligned power-of-two blocks of at
// least the layout's size and alignment from the ranges it was given,
// disjoint while live; the adapter gives it only disjoint ranges and
// frees blocks with the class layout they were allocated with.
unsafe impl<const ORDER: usize> Backend for BuddyBackend<ORDER> {
    const EMPTY: Self = Self::new();
    const NAME: &'static str = "buddy_system_allocator";

    /// # Safety
    /// As `Backend::add_memory` requires: the range is valid for reads and
    /// writes, used by nothing else, and stays so while the heap (or any block
    /// it handed out) is in use.
    unsafe fn add_memory(&mut self, start: *mut u8, size: usize) -> Result<(), HeapError> {
        let word = core::mem::size_of::<usize>();
        let too_small = HeapError::RegionTooSmall {
            start: start.addr(),
            size,
        };
        let addr = start.addr();
        let end = addr.checked_add(size).ok_or(too_small)?;
        // Upstream keeps only the word-aligned part of the range.
        let first = addr.checked_next_multiple_of(word).ok_or(too_small)?;
        let last = end & !(word - 1);
        if start.is_null() || last <= first || last - first < 2 * word {
            return Err(too_small);
        }
        if self.ranges[..self.count]
            .iter()
            .any(|&(s, e)| first < e && s < last)
        {
            return Err(HeapError::RegionOverlap { start: addr, size });
        }
        if self.count == MAX_RANGES {
            return Err(HeapError::TooManyRegions);
        }
        self.ranges[self.count] = (first, last);
        self.count += 1;
        // SAFETY: a word-aligned range disjoint from every range of this
        // heap, which the caller gives to it for as long as it lives.
        unsafe { self.heap.add_to_heap(first, last) };
        Ok(())
    }

    #[inline]
    fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        let Some(class) = Self::class_layout(layout) else {
            self.ops.failures += 1;
            return Err(HeapError::SizeOverflow {
                size: layout.size(),
            });
        };
        match self.heap.alloc(class) {
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
    #[inline]
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        let class = self.vet(ptr, layout)?;
        // SAFETY: the caller promises a live block allocated with a layout
        // of this class; upstream got exactly `class` at allocation.
        unsafe { self.heap.dealloc(ptr, class) };
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
        let class = self.vet(ptr, layout)?;
        let new_layout = Layout::from_size_align(new_size, layout.align())
            .map_err(|_| HeapError::SizeOverflow { size: new_size })?;
        if Self::class_layout(new_layout) == Some(class) {
            // Same block size: resized in place.
            self.ops.resized_in_place(layout.size(), new_size);
            return Ok(ptr);
        }
        let new = self.allocate(new_layout)?;
        // SAFETY: both blocks are live and disjoint.
        unsafe { new.copy_from_nonoverlapping(ptr, layout.size().min(new_size)) };
        // SAFETY: the caller gives up the old block, allocated as `class`.
        unsafe { self.heap.dealloc(ptr, class) };
        self.ops.moved(layout.size());
        Ok(new)
    }

    /// # Safety
    /// As `Backend::usable_size` requires: `ptr` is a live block of this heap
    /// allocated with `layout`.
    unsafe fn usable_size(&self, ptr: NonNull<u8>, layout: Layout) -> Result<usize, HeapError> {
        let addr = ptr.as_ptr().addr();
        if self.range_of(addr).is_none() {
            return Err(HeapError::NotFromHeap { addr });
        }
        Self::class_layout(layout)
            .map(|class| class.size())
            .ok_or(HeapError::SizeOverflow {
                size: layout.size(),
            })
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats {
            regions: self.count,
            chunks: self.count,
            total_bytes: self.heap.stats_total_bytes(),
            in_use_bytes: self.heap.stats_alloc_actual(),
            ..Stats::default()
        };
        stats.free_bytes = stats.total_bytes - stats.in_use_bytes;
        self.ops.fill(&mut stats);
        stats
    }

    fn growth_hint(&self, layout: Layout) -> usize {
        // Twice the block guarantees a naturally aligned block inside.
        Self::class_layout(layout).map_or(usize::MAX, |class| 2 * class.size())
    }
}

impl<const ORDER: usize> core::fmt::Debug for BuddyBackend<ORDER> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        super::debug_backend(self, f)
    }
}
