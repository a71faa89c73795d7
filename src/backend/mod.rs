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
    ///
    /// # Safety
    /// As `Backend::add_memory` requires: the range is valid for reads and
    /// writes, used by nothing else, and stays so while the heap (or any block
    /// it handed out) is in use.
    unsafe fn add_memory(&mut self, start: *mut u8, size: usize) -> Result<(), HeapError> {
        // SAFETY: forwarded from the caller.
        unsafe { Heap::add_memory(self, start, size) }
    }

    #[inline(always)]
    fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        Heap::allocate(self, layout)
    }

    fn flush(&mut self) -> Result<(), HeapError> {
        self.flush_quick_lists()
    }

    fn allocate_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        Heap::allocate_zeroed(self, layout)
    }

    /// # Safety
    /// As `Backend::deallocate` requires: `ptr` was returned by this heap for
    /// `layout`, is live, and nothing uses it after the call.
    #[inline(always)]
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        // SAFETY: forwarded from the caller; region-heap validates the
        // pointer and the layout and refuses misuse.
        unsafe { Heap::deallocate(self, ptr, layout) }
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
        // SAFETY: forwarded from the caller.
        unsafe { Heap::realloc(self, ptr, layout, new_size) }
    }

    /// # Safety
    /// As `Backend::usable_size` requires: `ptr` is a live block of this heap
    /// allocated with `layout`.
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

/// The debug form of a backend: its name and a statistics snapshot.
fn debug_backend<B: Backend>(backend: &B, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct(B::NAME)
        .field("stats", &backend.stats())
        .finish_non_exhaustive()
}

impl<P: FitPolicy> fmt::Debug for Heap<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_backend(self, f)
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
mod linked_list;
#[cfg(feature = "linked-list")]
#[cfg_attr(docsrs, doc(cfg(feature = "linked-list")))]
pub use linked_list::LinkedListBackend;

#[cfg(feature = "buddy")]
mod buddy;
#[cfg(feature = "buddy")]
#[cfg_attr(docsrs, doc(cfg(feature = "buddy")))]
pub use buddy::BuddyBackend;
