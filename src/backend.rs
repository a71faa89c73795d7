//! Backends: one small raw-heap interface over region-heap and reference
//! allocators, so a kernel (or a test, or a benchmark) can swap heaps by
//! changing one type.
//!
//! [`Backend`] is what a lock wrapper such as [`crate::LockedHeap`] needs
//! from a heap: a `const` empty value (for a `static`), a way to add memory,
//! `allocate` and `deallocate` with a [`Layout`], and optionally `realloc`,
//! usable sizes, statistics and a consistency check. It is implemented by
//! region-heap's own [`Heap`] and, behind cargo features, by adapters over
//! two upstream kernel heaps that serve as references:
//!
//! | type | feature | upstream |
//! |---|---|---|
//! | [`Heap<P>`](Heap) | always | region-heap |
//! | `LinkedListBackend` | `linked-list` | `linked_list_allocator::Heap` 0.10 |
//! | `BuddyBackend<ORDER>` | `buddy` | `buddy_system_allocator::Heap<ORDER>` 0.13 |
//!
//! The adapters translate every upstream failure (`Err(())`, or a call the
//! upstream allocator would panic on or silently mishandle) into a
//! [`HeapError`], and add the cheap checks the upstream allocators lack (a
//! pointer outside the managed ranges, a range overlapping the heap). What
//! each upstream allocator cannot do is listed on its adapter.
//!
//! # Invariants
//!
//! The trait is `unsafe` because callers, and the `GlobalAlloc`
//! implementation built on it, rely on these promises of every implementor:
//! - a block returned by `allocate`, `allocate_zeroed` or `realloc` lies
//!   inside memory given to the backend with `add_memory`, is aligned to the
//!   layout's alignment, holds at least the layout's size in writable bytes,
//!   and overlaps no other live block;
//! - `usable_size` never reports more bytes than the block really holds;
//! - a call that returns an error leaves every live block untouched (its
//!   address, size and contents), and `realloc` that fails leaves the old
//!   block live;
//! - `EMPTY` manages no memory and hands out nothing until memory is added.
//!
//! Adapters own their upstream heap exclusively; they never touch memory
//! that was not given to them.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use crate::error::HeapError;
use crate::heap::Heap;
use crate::policy::FitPolicy;
use crate::stats::Stats;

/// A raw heap: memory in, blocks out, no lock.
///
/// # Safety
/// Implementors keep the promises listed in the
/// [module documentation](crate::backend): blocks are in the heap's memory, aligned, large enough and
/// disjoint; refused calls change no live block; `EMPTY` is empty.
pub unsafe trait Backend: Send + Sized {
    /// A heap with no memory, usable to initialise a `static`.
    const EMPTY: Self;

    /// A short name for tables and messages.
    const NAME: &'static str;

    /// Gives `[start, start + size)` to the heap.
    ///
    /// Backends that cannot take a range where it lies refuse it with an
    /// error (see each adapter) and do not touch it.
    ///
    /// # Safety
    /// The range is valid for reads and writes, used by nothing else, and
    /// stays so while the heap (or any block it handed out) is in use.
    unsafe fn add_memory(&mut self, start: *mut u8, size: usize) -> Result<(), HeapError>;

    /// Allocates a block for `layout` (a zero-sized layout gets a unique,
    /// freeable block).
    fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError>;

    /// Allocates a block for `layout` with its first `layout.size()` bytes zeroed.
    fn allocate_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        let ptr = self.allocate(layout)?;
        // SAFETY: a fresh block holds at least `layout.size()` writable bytes
        // (trait invariant).
        unsafe { ptr.write_bytes(0, layout.size()) };
        Ok(ptr)
    }

    /// Frees the block at `ptr`, allocated with `layout` (or a layout of
    /// the same alignment whose size lies between the requested and the
    /// usable size).
    ///
    /// # Safety
    /// `ptr` was returned by this heap for `layout`, is live, and nothing
    /// uses it after the call. Backends that detect misuse (region-heap)
    /// refuse a bad pointer with an error; the adapters detect only a pointer
    /// outside their memory, and anything else is undefined behaviour there.
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError>;

    /// Resizes the block at `ptr` to `new_size` bytes (same alignment),
    /// keeping the first `min(layout.size(), new_size)` bytes. On failure the
    /// old block is intact and live.
    ///
    /// The default allocates a new block, copies and frees the old one.
    ///
    /// # Safety
    /// As for [`Backend::deallocate`]; on success the old pointer is dead
    /// unless it is the one returned.
    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, HeapError> {
        let new_layout = Layout::from_size_align(new_size, layout.align())
            .map_err(|_| HeapError::SizeOverflow { size: new_size })?;
        let new = self.allocate(new_layout)?;
        // SAFETY: both blocks are live and disjoint (trait invariant); the
        // old one holds `layout.size()` bytes, the new one `new_size`.
        unsafe { new.copy_from_nonoverlapping(ptr, layout.size().min(new_size)) };
        // SAFETY: the caller owns the old block and gives it up.
        if let Err(error) = unsafe { self.deallocate(ptr, layout) } {
            // Give the new block back so the call changes nothing.
            // SAFETY: `new` was just allocated with `new_layout`.
            let _ = unsafe { self.deallocate(new, new_layout) };
            return Err(error);
        }
        Ok(new)
    }

    /// Usable bytes of the block at `ptr` (at least `layout.size()`).
    ///
    /// The default is `layout.size()`.
    ///
    /// # Safety
    /// `ptr` is a live block of this heap allocated with `layout`.
    unsafe fn usable_size(&self, ptr: NonNull<u8>, layout: Layout) -> Result<usize, HeapError> {
        let _ = ptr;
        Ok(layout.size())
    }

    /// A statistics snapshot; the fields a backend cannot know are zero.
    fn stats(&self) -> Stats {
        Stats::default()
    }

    /// Walks the heap and reports the first inconsistency found; backends
    /// that cannot check return `Ok(())`.
    fn check(&self) -> Result<(), HeapError> {
        Ok(())
    }

    /// Writes what the backend can show of its memory to `out`: region-heap
    /// lists every region, chunk and block; the default writes the name and
    /// the [`Backend::stats`] table.
    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(out, "{}", Self::NAME)?;
        write!(out, "{}", self.stats())
    }

    /// Gives the blocks a backend keeps cached after a free back to its
    /// free memory (region-heap's quick lists), so that statistics show the
    /// heap fully merged; backends without caches do nothing.
    fn flush(&mut self) -> Result<(), HeapError> {
        Ok(())
    }

    /// Bytes a growth hook should supply, as one range, so that a failed
    /// `layout` request can succeed once the range is given to `add_memory`.
    fn growth_hint(&self, layout: Layout) -> usize {
        // Room for the block, a worst-case alignment shift and some metadata.
        layout
            .size()
            .saturating_add(layout.align())
            .saturating_add(256)
    }
}

// SAFETY: region-heap's `Heap` keeps every promise itself: blocks come from
// its regions, honour size and alignment, never overlap, and a refused call
// changes nothing (see `heap`).
unsafe impl<P: FitPolicy> Backend for Heap<P> {
    const EMPTY: Self = Heap::with_policy();
    const NAME: &'static str = "region-heap";

    /// Joins the range to a region it touches, else adds it as a chunk of
    /// the highest-priority region, else as the first region
    /// ([`Heap::add_memory`]).
    unsafe fn add_memory(&mut self, start: *mut u8, size: usize) -> Result<(), HeapError> {
        // SAFETY: forwarded from the caller.
        unsafe { Heap::add_memory(self, start, size) }
    }

    #[inline]
    fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        Heap::allocate(self, layout)
    }

    fn flush(&mut self) -> Result<(), HeapError> {
        self.flush_quick_lists()
    }

    fn allocate_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        Heap::allocate_zeroed(self, layout)
    }

    #[inline]
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        // SAFETY: forwarded from the caller; region-heap validates the
        // pointer and the layout and refuses misuse.
        unsafe { Heap::deallocate(self, ptr, layout) }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, HeapError> {
        // SAFETY: forwarded from the caller.
        unsafe { Heap::realloc(self, ptr, layout, new_size) }
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>, _layout: Layout) -> Result<usize, HeapError> {
        // SAFETY: forwarded; invalid pointers are reported, not followed.
        unsafe { Heap::usable_size(self, ptr) }
    }

    fn stats(&self) -> Stats {
        Heap::stats(self)
    }

    fn check(&self) -> Result<(), HeapError> {
        Heap::check(self)
    }

    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        Heap::dump(self, out)
    }

    fn growth_hint(&self, layout: Layout) -> usize {
        Heap::growth_hint(self, layout)
    }
}

/// Operation counters the adapters keep for [`Backend::stats`], since the
/// upstream allocators keep none.
#[cfg(any(feature = "linked-list", feature = "buddy"))]
#[derive(Clone, Copy, Debug, Default)]
struct Ops {
    allocations: u64,
    frees: u64,
    reallocations: u64,
    failures: u64,
    misuses: u64,
    requested: usize,
    used_blocks: usize,
}

#[cfg(any(feature = "linked-list", feature = "buddy"))]
impl Ops {
    const ZERO: Ops = Ops {
        allocations: 0,
        frees: 0,
        reallocations: 0,
        failures: 0,
        misuses: 0,
        requested: 0,
        used_blocks: 0,
    };

    /// Counts a reallocation that kept the block where it was.
    fn resized_in_place(&mut self, old_size: usize, new_size: usize) {
        self.reallocations += 1;
        self.requested = self.requested - old_size + new_size;
    }

    /// Counts a reallocation that moved the block: the new block was
    /// counted as an allocation, the old one is gone without a free.
    fn moved(&mut self, old_size: usize) {
        self.allocations -= 1;
        self.used_blocks -= 1;
        self.requested -= old_size;
        self.reallocations += 1;
    }

    fn fill(&self, stats: &mut Stats) {
        stats.allocations = self.allocations;
        stats.frees = self.frees;
        stats.reallocations = self.reallocations;
        stats.failures = self.failures;
        stats.misuses = self.misuses;
        stats.allocated_bytes = self.requested;
        stats.used_blocks = self.used_blocks;
    }
}

#[cfg(feature = "linked-list")]
pub use linked_list::LinkedListBackend;

#[cfg(feature = "linked-list")]
mod linked_list {
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

        unsafe fn usable_size(&self, ptr: NonNull<u8>, layout: Layout) -> Result<usize, HeapError> {
            let addr = ptr.as_ptr().addr();
            if self.is_empty() || addr < self.heap.bottom().addr() || addr >= self.heap.top().addr()
            {
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
}

#[cfg(feature = "buddy")]
pub use buddy::BuddyBackend;

#[cfg(feature = "buddy")]
mod buddy {
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
}
