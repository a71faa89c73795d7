//! The heap: regions in priority order and the public allocation API.
//!
//! A [`Heap`] lists up to [`MAX_REGIONS`] regions, highest priority first.
//! Allocation asks each region in turn (one O(1) index lookup each); free
//! finds the region whose memory holds the pointer, validates the header
//! (owner, state, links both ways) and merges in O(1). Every refused call
//! returns a [`HeapError`] and changes nothing.
//!
//! Invariants: regions are disjoint and sorted by priority (stable for
//! equal priorities); `in_use` is the sum of the regions' used bytes and
//! `peak` its maximum so far; every region carries the heap's integrity
//! settings (scramble check depth, trace sink).

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::block::{block_size_for, Block, BLOCK_OVERHEAD, DATA_OFFSET, GRANULE, MAX_CHUNK_SIZE};
use crate::error::{Corruption, HeapError};
use crate::integrity;
use crate::policy::{FitPolicy, GoodFit};
use crate::quick::{self, DEFAULT_QUICK_DEPTH};
use crate::region::{Object, Proven, Region, MIN_CHUNK, REGION_SIZE, SENTINEL_SIZE};
use crate::slab::{self, SLAB_MAX};
use crate::stats::Stats;
#[cfg(feature = "trace")]
use crate::trace::{TraceEvent, TraceSink};

/// Most regions one heap can hold.
pub const MAX_REGIONS: usize = 16;

/// Whether a new heap serves small requests from slabs
/// ([`Heap::set_slabs`]).
pub const DEFAULT_SLABS: bool = false;

/// What a pointer handed to `free` designates once proven.
enum Found {
    /// A used block.
    Block(Proven),
    /// A live slab object.
    Object(Object),
}

/// A handle on a region of a heap, returned when the region is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionId(usize);

impl RegionId {
    /// The address of the region's control structure.
    pub fn addr(self) -> usize {
        self.0
    }
}

/// Operation counters of a heap.
#[derive(Clone, Copy, Debug, Default)]
struct Ops {
    allocations: u64,
    frees: u64,
    reallocations: u64,
    in_place: u64,
    failures: u64,
    misuses: u64,
}

/// A region heap: the raw allocator, without a lock.
///
/// `P` is the [`FitPolicy`]; [`Heap::new`] uses [`GoodFit`].
pub struct Heap<P: FitPolicy = GoodFit> {
    regions: [NonNull<Region>; MAX_REGIONS],
    count: usize,
    in_use: usize,
    peak: usize,
    ops: Ops,
    /// Most blocks per quick list, given to every region.
    quick_depth: u8,
    /// Whether requests up to `SLAB_MAX` bytes get slab objects.
    slabs: bool,
    /// Whether slabs are ruled out for good ([`Heap::without_slabs_ever`]).
    slabs_ruled_out: bool,
    /// Bytes of free pattern verified at each end of a free block.
    #[cfg(feature = "scramble")]
    scramble_depth: usize,
    /// Where every operation is reported.
    #[cfg(feature = "trace")]
    sink: Option<TraceSink>,
    policy: PhantomData<P>,
}

// SAFETY: a heap owns its regions' memory exclusively (`add_region`'s
// contract); nothing in it is tied to a thread.
unsafe impl<P: FitPolicy> Send for Heap<P> {}

impl Heap<GoodFit> {
    /// An empty heap with the default [`GoodFit`] policy.
    pub const fn new() -> Self {
        Self::with_policy()
    }
}

impl Default for Heap<GoodFit> {
    fn default() -> Self {
        Self::new()
    }
}

/// Aligns a caller's range to granules: `(start, len)`, or `None` if
/// nothing is left.
fn align_range(start: *mut u8, size: usize) -> Option<(NonNull<u8>, usize)> {
    let addr = start.addr();
    let end = addr.checked_add(size)?;
    let first = addr.checked_next_multiple_of(GRANULE)?;
    let last = end & !(GRANULE - 1);
    let len = last.checked_sub(first)?;
    let ptr = NonNull::new(start.wrapping_add(first - addr))?;
    Some((ptr, len))
}

impl<P: FitPolicy> Heap<P> {
    /// An empty heap with policy `P`.
    pub const fn with_policy() -> Self {
        Heap {
            regions: [NonNull::dangling(); MAX_REGIONS],
            count: 0,
            in_use: 0,
            peak: 0,
            ops: Ops {
                allocations: 0,
                frees: 0,
                reallocations: 0,
                in_place: 0,
                failures: 0,
                misuses: 0,
            },
            quick_depth: DEFAULT_QUICK_DEPTH,
            slabs: DEFAULT_SLABS,
            slabs_ruled_out: false,
            #[cfg(feature = "scramble")]
            scramble_depth: integrity::DEFAULT_SCRAMBLE_CHECK_DEPTH,
            #[cfg(feature = "trace")]
            sink: None,
            policy: PhantomData,
        }
    }

    /// Sets how many bytes of free pattern are verified at each end of a
    /// free block when it is reused and in [`Heap::check`] (feature
    /// `scramble`; default [`integrity::DEFAULT_SCRAMBLE_CHECK_DEPTH`],
    /// `usize::MAX` for whole blocks).
    #[cfg(feature = "scramble")]
    pub fn set_scramble_check_depth(&mut self, depth: usize) {
        self.scramble_depth = depth;
        for i in 0..self.count {
            self.region_mut(i).scramble_depth = depth;
        }
    }

    /// Sets the function every heap operation is reported to (feature
    /// `trace`), or `None` to stop tracing.
    #[cfg(feature = "trace")]
    pub fn set_trace_sink(&mut self, sink: Option<TraceSink>) {
        self.sink = sink;
        for i in 0..self.count {
            self.region_mut(i).sink = sink;
        }
    }

    /// Sets how many small blocks each quick list of each region keeps
    /// after they are freed, for reuse at the same size without merging
    /// (default [`DEFAULT_QUICK_DEPTH`]; 0 turns quick lists off, so that
    /// every free merges at once). The lists are flushed first.
    ///
    /// Fails, leaving the depth unchanged in the regions not yet flushed,
    /// if a flush finds a damaged block.
    pub fn set_quick_depth(&mut self, depth: u8) -> Result<(), HeapError> {
        for i in 0..self.count {
            if let Err(error) = self.region_mut(i).set_quick_depth(depth) {
                return Err(self.misuse(error));
            }
        }
        self.quick_depth = depth;
        Ok(())
    }

    /// Gives every block on a quick list and every empty slab back to the
    /// free lists, merged with their free neighbours, so that
    /// [`Heap::stats`] and [`Heap::dump`] show the heap as fully merged.
    /// Allocation does this by itself before it reports out of memory.
    pub fn flush_quick_lists(&mut self) -> Result<(), HeapError> {
        for i in 0..self.count {
            let region = self.region_mut(i);
            let before = region.c.used_bytes;
            let flushed = region
                .flush_quick()
                .and_then(|_| region.release_empty_slabs());
            let after = region.c.used_bytes;
            self.account_change(before, after);
            if let Err(error) = flushed {
                return Err(self.misuse(error));
            }
        }
        Ok(())
    }

    /// This heap with the slab front end on or off ([`Heap::set_slabs`]),
    /// for `const` contexts.
    pub const fn with_slabs(mut self, on: bool) -> Self {
        self.slabs = on && !self.slabs_ruled_out;
        self
    }

    /// This heap with slabs off for good: [`Heap::set_slabs`] and
    /// [`Heap::with_slabs`] leave them off. For an allocator whose `free`
    /// reads the word before a pointer without the heap's lock
    /// (`PerCpuHeap`, the hosted shim through [`raw`](crate::raw)): before
    /// a slab object lies the previous object's data, not a header.
    pub(crate) const fn without_slabs_ever(mut self) -> Self {
        self.slabs = false;
        self.slabs_ruled_out = true;
        self
    }

    /// Turns the slab front end on or off (default [`DEFAULT_SLABS`]; a
    /// `PerCpuHeap`'s heaps keep them off whatever this says).
    /// When on, a request of at most [`SLAB_MAX`] bytes aligned to at most
    /// a granule gets an object of a slab (see the README's "Slabs"): no
    /// header of its own, found from its address. When no region has room
    /// for a new slab, the request gets a block as it would with slabs
    /// off. Turning them off keeps the slabs that hold objects: their
    /// objects are freed, resized and checked as before, and slabs that
    /// empty go back to the free lists.
    pub fn set_slabs(&mut self, on: bool) {
        self.slabs = on && !self.slabs_ruled_out;
    }

    /// Whether small requests get slab objects ([`Heap::set_slabs`]).
    pub fn slabs(&self) -> bool {
        self.slabs
    }

    /// Gives a new region the heap's settings.
    fn configure(&self, region: NonNull<Region>) {
        // SAFETY: a region just created in memory given to this heap.
        let region = unsafe { &mut *region.as_ptr() };
        region.quick.set_depth(self.quick_depth);
        #[cfg(feature = "scramble")]
        {
            region.scramble_depth = self.scramble_depth;
        }
        #[cfg(feature = "trace")]
        {
            region.sink = self.sink;
        }
    }

    fn region_ptrs(&self) -> &[NonNull<Region>] {
        &self.regions[..self.count]
    }

    #[inline]
    fn region(&self, i: usize) -> &Region {
        // SAFETY: the first `count` entries are live regions owned by this
        // heap (add_region's contract).
        unsafe { self.regions[i].as_ref() }
    }

    #[inline]
    fn region_mut(&mut self, i: usize) -> &mut Region {
        // SAFETY: as in `region`; `&mut self` makes the access exclusive.
        unsafe { self.regions[i].as_mut() }
    }

    fn regions(&self) -> impl Iterator<Item = &Region> + '_ {
        (0..self.count).map(|i| self.region(i))
    }

    /// Adds `[start, start + size)` as a new region of priority 0.
    ///
    /// # Safety
    /// The range is valid for reads and writes, used by nothing else, and
    /// stays so while the heap (or any block it handed out) is in use. Its
    /// bytes are initialised (any values: RAM, or zeroed memory in a
    /// hosted test): to check a pointer a program hands back, the heap
    /// reads the words where a header would be, and after damage it scans
    /// the damaged range for cut-off headers.
    pub unsafe fn add_region(&mut self, start: *mut u8, size: usize) -> Result<(), HeapError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.add_region_with_priority(start, size, 0) }.map(|_| ())
    }

    /// Adds a region; allocation tries regions of higher `priority` first
    /// (regions of equal priority in the order they were added).
    ///
    /// # Safety
    /// As for [`Heap::add_region`].
    pub unsafe fn add_region_with_priority(
        &mut self,
        start: *mut u8,
        size: usize,
        priority: u8,
    ) -> Result<RegionId, HeapError> {
        let (ptr, len) = self.vet_range(start, size, REGION_SIZE + MIN_CHUNK)?;
        if self.count == MAX_REGIONS {
            return Err(HeapError::TooManyRegions);
        }
        // SAFETY: the range is aligned, large enough, disjoint from the
        // heap, and the caller gives it to the heap.
        let region = unsafe { Region::create(ptr, len, priority) };
        self.configure(region);
        trace!(
            self.sink,
            TraceEvent::RegionAdded {
                region: region.as_ptr().addr(),
                start: start.addr(),
                size,
                priority,
            }
        );
        let at = self
            .region_ptrs()
            .iter()
            // SAFETY: live regions of this heap.
            .position(|r| unsafe { r.as_ref() }.priority < priority)
            .unwrap_or(self.count);
        self.regions.copy_within(at..self.count, at + 1);
        self.regions[at] = region;
        self.count += 1;
        Ok(RegionId(region.as_ptr().addr()))
    }

    /// Checks a new range: aligned to granules, at least `min` bytes, and
    /// disjoint from every region.
    fn vet_range(
        &self,
        start: *mut u8,
        size: usize,
        min: usize,
    ) -> Result<(NonNull<u8>, usize), HeapError> {
        let too_small = HeapError::RegionTooSmall {
            start: start.addr(),
            size,
        };
        let (ptr, len) = align_range(start, size).ok_or(too_small)?;
        if len < min {
            return Err(too_small);
        }
        let begin = ptr.as_ptr().addr();
        if self.regions().any(|r| r.overlaps(begin, begin + len)) {
            return Err(HeapError::RegionOverlap {
                start: start.addr(),
                size,
            });
        }
        Ok((ptr, len))
    }

    fn position(&self, id: RegionId) -> Result<usize, HeapError> {
        self.region_ptrs()
            .iter()
            .position(|r| r.as_ptr().addr() == id.0)
            .ok_or(HeapError::UnknownRegion)
    }

    /// Extends a region with `[start, start + size)` as a new chunk, joined
    /// with a chunk of that region it touches.
    ///
    /// # Safety
    /// As for [`Heap::add_region`].
    pub unsafe fn extend(
        &mut self,
        region: RegionId,
        start: *mut u8,
        size: usize,
    ) -> Result<(), HeapError> {
        let i = self.position(region)?;
        let (ptr, len) = self.vet_range(start, size, MIN_CHUNK)?;
        // SAFETY: a vetted range the caller gives to the heap.
        unsafe { self.add_range(i, ptr, len) }
    }

    /// Adds a vetted range to region `i` as chunks; `TooManyChunks` when
    /// its chunk table has no room for them.
    ///
    /// # Safety
    /// `ptr, len` is a vetted range the caller gives to the heap.
    unsafe fn add_range(
        &mut self,
        i: usize,
        ptr: NonNull<u8>,
        len: usize,
    ) -> Result<(), HeapError> {
        if !self.region(i).has_room_for(len.div_ceil(MAX_CHUNK_SIZE)) {
            return Err(HeapError::TooManyChunks);
        }
        // SAFETY: forwarded.
        unsafe { self.region_mut(i).add_range(ptr, len) };
        trace!(
            self.sink,
            TraceEvent::Extended {
                region: self.regions[i].as_ptr().addr(),
                start: ptr.as_ptr().addr(),
                size: len,
            }
        );
        Ok(())
    }

    /// Adds memory wherever it fits best: joined to the region that has a
    /// chunk it touches, else as a new chunk of the highest-priority region
    /// (a region of its own when that region already has `MAX_CHUNKS`
    /// chunks), else as the heap's first region. This is what a growth hook
    /// calls.
    ///
    /// # Safety
    /// As for [`Heap::add_region`].
    pub unsafe fn add_memory(&mut self, start: *mut u8, size: usize) -> Result<(), HeapError> {
        if self.count == 0 {
            // SAFETY: forwarded from the caller.
            return unsafe { self.add_region(start, size) };
        }
        let (ptr, len) = self.vet_range(start, size, MIN_CHUNK)?;
        let begin = ptr.as_ptr().addr();
        let i = (0..self.count)
            .find(|&i| self.region(i).touches_chunk(begin, begin + len))
            .unwrap_or(0);
        // SAFETY: a vetted range the caller gives to the heap.
        match unsafe { self.add_range(i, ptr, len) } {
            // The region's chunk table is full of scattered chunks: the
            // memory becomes a region of its own.
            // SAFETY: forwarded from the caller.
            Err(HeapError::TooManyChunks) => unsafe { self.add_region(start, size) },
            result => result,
        }
    }

    /// Gives back every chunk that holds no live block (a chunk added by
    /// `extend` or `add_memory`, not the one that holds a region's control
    /// structure): each is taken out of its region and passed to `release`
    /// as `(start, len)`, for the kernel to unmap or reuse. Flushes the
    /// quick lists first. Returns the bytes given back. `talc`'s
    /// `truncate` and glibc's `malloc_trim` play this part.
    pub fn trim(
        &mut self,
        release: &mut dyn FnMut(NonNull<u8>, usize),
    ) -> Result<usize, HeapError> {
        self.trim_at_most(usize::MAX, release)
    }

    /// [`Heap::trim`], giving back at most `max` chunks (a caller that
    /// collects them in a fixed buffer calls it again until fewer come).
    pub fn trim_at_most(
        &mut self,
        max: usize,
        release: &mut dyn FnMut(NonNull<u8>, usize),
    ) -> Result<usize, HeapError> {
        self.flush_quick_lists()?;
        let (mut released, mut count) = (0, 0);
        for i in 0..self.count {
            while count < max {
                let Some((start, len)) = self.region_mut(i).take_free_chunk() else {
                    break;
                };
                release(start, len);
                released += len;
                count += 1;
            }
        }
        Ok(released)
    }

    /// Bytes a growth hook should supply so that a failed `layout` request
    /// can succeed once the memory is added with [`Heap::add_memory`].
    pub fn growth_hint(&self, layout: Layout) -> usize {
        let control = if self.count == 0 { REGION_SIZE } else { 0 };
        block_size_for(layout.size())
            .and_then(|s| s.checked_add(layout.align().max(GRANULE) + GRANULE))
            .and_then(|s| s.checked_add(SENTINEL_SIZE + control))
            .unwrap_or(usize::MAX)
    }

    /// Allocates a block for `layout`.
    ///
    /// Fails with `SizeOverflow` or `BadAlignment` for requests no heap can
    /// serve and `OutOfMemory` when no region has room.
    // Always inlined: the fast path is a few dozen instructions, and
    // inlined its `Result` needs no trip through memory; the rest of the
    // work is out of line (`allocate_object`, `allocate_block`).
    #[inline(always)]
    pub fn allocate(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        // Small requests, the common case, start inline: from slabs if
        // they are on, else from a quick list of the first region, which
        // is where `allocate_block` would look first. A miss changes
        // nothing, so `allocate_block` then goes on as if it had not run.
        if layout.size() <= SLAB_MAX && layout.align() <= GRANULE {
            if self.slabs {
                match self.allocate_object(layout) {
                    Ok(Some(object)) => return Ok(object),
                    Ok(None) => {}
                    Err(error) => return Err(error),
                }
            } else if let Some(q) = self.first_quick_list(layout) {
                let region = self.region_mut(0);
                let before = region.c.used_bytes;
                match region.pop_quick(q) {
                    Ok(Some(block)) => {
                        let after = region.c.used_bytes;
                        self.account_change(before, after);
                        return Ok(self.allocated(block, layout));
                    }
                    Ok(None) => {}
                    Err(error) => return Err(self.misuse(error)),
                }
            }
        }
        self.allocate_block(layout)
    }

    /// The quick list of the first region for `layout` (aligned to at most
    /// a granule), if its block size has one.
    #[inline(always)]
    fn first_quick_list(&self, layout: Layout) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        quick::quick_class(block_size_for(layout.size())?)
    }

    /// Counts and traces a block just allocated for `layout`; its data.
    #[inline(always)]
    fn allocated(&mut self, block: Block, layout: Layout) -> NonNull<u8> {
        // SAFETY: a block just allocated for `layout.size()` bytes.
        unsafe { integrity::on_allocate(block, layout.size()) };
        self.ops.allocations += 1;
        trace!(
            self.sink,
            TraceEvent::Allocated {
                addr: block.data().as_ptr().addr(),
                size: layout.size(),
                align: layout.align(),
                block: block.size(),
            }
        );
        block.data()
    }

    /// [`Heap::allocate`] past its fast path: a block from the first
    /// region in priority order with room.
    #[inline(never)]
    fn allocate_block(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        let align = layout.align();
        let Some(size) = block_size_for(layout.size()) else {
            self.ops.failures += 1;
            return Err(HeapError::SizeOverflow {
                size: layout.size(),
            });
        };
        if align > MAX_CHUNK_SIZE / 2 {
            self.ops.failures += 1;
            return Err(HeapError::BadAlignment { align });
        }
        for &region in &self.regions[..self.count] {
            // SAFETY: a live region of this heap; `&mut self` makes the
            // access exclusive.
            let region = unsafe { &mut *region.as_ptr() };
            let before = region.c.used_bytes;
            // SAFETY: a live region of this heap, borrowed exclusively.
            let result = unsafe { region.allocate(size, align, P::BEST_FIT) };
            // Also when it fails: making room may give empty slabs back.
            let after = region.c.used_bytes;
            account(&mut self.in_use, &mut self.peak, before, after);
            match result {
                Ok(Some(block)) => return Ok(self.allocated(block, layout)),
                Ok(None) => {}
                Err(error) => return Err(self.misuse(error)),
            }
        }
        self.ops.failures += 1;
        Err(HeapError::OutOfMemory {
            size: layout.size(),
            align,
        })
    }

    /// Allocates a slab object for `layout` (at most `SLAB_MAX` bytes,
    /// aligned to at most a granule) from the first region with one or
    /// with room for a new slab; `Ok(None)` when none has.
    #[inline(never)]
    fn allocate_object(&mut self, layout: Layout) -> Result<Option<NonNull<u8>>, HeapError> {
        let class = slab::class_of(layout.size(), layout.align());
        for &region in &self.regions[..self.count] {
            // SAFETY: a live region of this heap; `&mut self` makes the
            // access exclusive.
            let region = unsafe { &mut *region.as_ptr() };
            let before = region.c.used_bytes;
            // SAFETY: a live region of this heap, borrowed exclusively.
            let result = unsafe { region.slab_allocate(class) };
            // Also when it fails: making room may give empty slabs back.
            let after = region.c.used_bytes;
            account(&mut self.in_use, &mut self.peak, before, after);
            match result {
                Ok(Some(object)) => {
                    self.ops.allocations += 1;
                    trace!(
                        self.sink,
                        TraceEvent::Allocated {
                            addr: object.as_ptr().addr(),
                            size: layout.size(),
                            align: layout.align(),
                            block: slab::class_size(class),
                        }
                    );
                    return Ok(Some(object));
                }
                Ok(None) => {}
                Err(error) => return Err(self.misuse(error)),
            }
        }
        Ok(None)
    }

    /// Allocates up to `out.len()` blocks for `layout`, writing their
    /// addresses to the front of `out`, with what that many calls of
    /// [`Heap::allocate`] would do: the same regions in the same order, the
    /// same checks, the same counters (one `failures` if it ran out of
    /// memory before the end). Cheaper for the blocks that come from the
    /// free index: after the quick list of their size, a region carves
    /// runs of blocks one after the other from the front of a free block
    /// that holds two or more (one search and one proof per run, the blocks
    /// side by side), else takes them one by one. (So placement differs:
    /// a run takes the good fit of two blocks where `BestFit` single calls
    /// would fill one-block holes first.) This is what a cache in front of
    /// the heap (a thread cache's refill) wants.
    ///
    /// Returns how many it allocated: all of them unless memory ran out.
    /// An error only when it allocated none (what [`Heap::allocate`] would
    /// return). Damage met after some blocks were allocated is handled as
    /// `allocate` handles it (counted in [`Stats::misuses`], the damage
    /// quarantined) and ends the batch, which returns the blocks it has:
    /// the error itself is not returned then (a caller that must report
    /// every misuse watches `misuses`).
    pub fn allocate_batch(
        &mut self,
        layout: Layout,
        out: &mut [NonNull<u8>],
    ) -> Result<usize, HeapError> {
        if out.is_empty() {
            return Ok(0);
        }
        let small = self.slabs && layout.size() <= SLAB_MAX;
        let (Some(size), true, false) = (
            block_size_for(layout.size()),
            layout.align() <= GRANULE,
            small,
        ) else {
            // Oversized, aligned or a slab object: the single path says
            // why, or serves it.
            return self.allocate_each(layout, out);
        };
        let mut got = 0;
        for i in 0..self.count {
            // SAFETY: a live region of this heap; `&mut self` makes the
            // access exclusive.
            let region = unsafe { &mut *self.regions[i].as_ptr() };
            let before = region.c.used_bytes;
            let want = out.len() - got;
            let mut each = |block: Block| {
                // SAFETY: a block just allocated for `layout.size()` bytes.
                unsafe { integrity::on_allocate(block, layout.size()) };
                trace!(
                    self.sink,
                    TraceEvent::Allocated {
                        addr: block.data().as_ptr().addr(),
                        size: layout.size(),
                        align: layout.align(),
                        block: block.size(),
                    }
                );
                out[got] = block.data();
                got += 1;
            };
            // SAFETY: a live region of this heap, borrowed exclusively.
            let result = unsafe { region.allocate_many(size, want, P::BEST_FIT, &mut each) };
            let after = region.c.used_bytes;
            self.account_change(before, after);
            if let Err(error) = result {
                let error = self.misuse(error);
                self.ops.allocations += got as u64;
                return if got == 0 { Err(error) } else { Ok(got) };
            }
            if got == out.len() {
                break;
            }
        }
        self.ops.allocations += got as u64;
        if got < out.len() {
            self.ops.failures += 1;
        }
        if got == 0 {
            return Err(HeapError::OutOfMemory {
                size: layout.size(),
                align: layout.align(),
            });
        }
        Ok(got)
    }

    /// [`Heap::allocate_batch`] by single allocations.
    fn allocate_each(
        &mut self,
        layout: Layout,
        out: &mut [NonNull<u8>],
    ) -> Result<usize, HeapError> {
        for (got, slot) in out.iter_mut().enumerate() {
            match self.allocate(layout) {
                Ok(ptr) => *slot = ptr,
                Err(error) if got == 0 => return Err(error),
                Err(_) => return Ok(got),
            }
        }
        Ok(out.len())
    }

    /// Allocates `layout` with every byte zeroed.
    pub fn allocate_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        let ptr = self.allocate(layout)?;
        // SAFETY: the block holds at least `layout.size()` writable bytes.
        unsafe { ptr.write_bytes(0, layout.size()) };
        Ok(ptr)
    }

    /// Accounts for a region's used bytes going from `before` to `after`
    /// (see [`account`]).
    #[inline]
    fn account_change(&mut self, before: usize, after: usize) {
        account(&mut self.in_use, &mut self.peak, before, after);
    }

    /// Finds the region holding `ptr` and proves what it designates: a
    /// live object of one of its slabs, else a used block.
    #[inline(always)]
    fn locate(&self, ptr: NonNull<u8>) -> Result<(usize, Found), HeapError> {
        let addr = ptr.as_ptr().addr();
        let mut error = HeapError::NotFromHeap { addr };
        for i in 0..self.count {
            let region = self.region(i);
            if region.spans(addr) {
                match region.slab_object(addr) {
                    Some(Ok(object)) => return Ok((i, Found::Object(object))),
                    Some(Err(e)) => {
                        error = e;
                        continue;
                    }
                    None => {}
                }
                // SAFETY: a live region whose span holds `ptr`.
                match unsafe { region.validate(ptr) } {
                    Ok(block) => return Ok((i, Found::Block(block))),
                    Err(e) => error = e,
                }
            }
        }
        Err(error)
    }

    /// Like `locate`, counting a failure as a misuse.
    #[inline(always)]
    fn locate_mut(&mut self, ptr: NonNull<u8>) -> Result<(usize, Found), HeapError> {
        self.locate(ptr).map_err(|error| self.misuse(error))
    }

    /// Counts (and traces) a misuse or damage found by a call; returns it.
    #[cold]
    fn misuse(&mut self, error: HeapError) -> HeapError {
        self.ops.misuses += 1;
        self.quarantine(error);
        trace!(self.sink, TraceEvent::Misuse { error });
        error
    }

    /// Takes the damage an error names out of use (see `region::repair`):
    /// the region that holds it quarantines it and rebuilds its lists, so
    /// later calls do not meet it again. Only the error names it.
    #[cold]
    fn quarantine(&mut self, error: HeapError) {
        let HeapError::Corrupted { addr, what } = error else {
            return;
        };
        if matches!(what, Corruption::Quarantined | Corruption::Guard { .. }) {
            return;
        }
        // The region whose chunk holds the address (spans may interleave),
        // else the one whose control structure it names.
        let in_chunk = (0..self.count).find(|&i| self.region(i).chunk_of(addr).is_some());
        let Some(i) = in_chunk.or_else(|| (0..self.count).find(|&i| self.region(i).spans(addr)))
        else {
            return;
        };
        self.region_mut(i).repair(addr);
        self.in_use = self.regions().map(|r| r.c.used_bytes).sum();
    }

    /// Frees the block or slab object that starts at `ptr`; no region or
    /// layout needed. Returns what `stats().in_use_bytes` dropped by: the
    /// bytes the block occupied, header included, so that no caller needs
    /// to read the header of a block it no longer owns; for a slab object,
    /// 0 (its slab stays in use, empty slabs go back on a flush or when a
    /// region runs out of room).
    ///
    /// Fails, changing nothing, with `NotFromHeap`, `NotBlockStart`,
    /// `DoubleFree` or `Corrupted`.
    ///
    /// # Safety
    /// If `ptr` is a live block of this heap, nothing uses it any more.
    #[inline]
    pub unsafe fn free(&mut self, ptr: NonNull<u8>) -> Result<usize, HeapError> {
        let (i, found) = self.locate_mut(ptr)?;
        // SAFETY: `found` was proven in region `i` just now.
        unsafe { self.release_found(i, found) }
    }

    /// Frees what `locate` found.
    ///
    /// # Safety
    /// `found` was proven in region `i`, nothing changed since; nobody
    /// uses its data any more.
    #[inline(always)]
    unsafe fn release_found(&mut self, i: usize, found: Found) -> Result<usize, HeapError> {
        match found {
            // SAFETY: forwarded.
            Found::Block(used) => unsafe { self.release(i, used) },
            // SAFETY: forwarded.
            Found::Object(object) => unsafe { self.release_object(i, object) },
        }
    }

    /// Frees a slab object; returns what `in_use` dropped by.
    ///
    /// # Safety
    /// `object` was proven live in region `i`, nothing changed since.
    unsafe fn release_object(&mut self, i: usize, object: Object) -> Result<usize, HeapError> {
        #[cfg(feature = "trace")]
        let (addr, block) = (
            object.slab.object(object.index).as_ptr().addr(),
            slab::class_size(object.slab.class()),
        );
        let region = self.region_mut(i);
        let before = region.c.used_bytes;
        // SAFETY: forwarded.
        let result = unsafe { region.slab_free(object) };
        let dropped = before - region.c.used_bytes;
        if let Err(error) = result {
            return Err(self.misuse(error));
        }
        self.in_use -= dropped;
        self.ops.frees += 1;
        trace!(self.sink, TraceEvent::Freed { addr, block });
        Ok(dropped)
    }

    /// Frees `block`; returns its size in bytes. Fails, changing nothing,
    /// when a neighbour or list the free would touch is damaged.
    ///
    /// # Safety
    /// `used` was validated as a used block of region `i`, nothing changed
    /// since.
    #[inline(always)]
    unsafe fn release(&mut self, i: usize, used: Proven) -> Result<usize, HeapError> {
        let size = used.size();
        #[cfg(feature = "trace")]
        let addr = used.block.data().as_ptr().addr();
        // SAFETY: forwarded.
        if let Err(error) = unsafe { self.region_mut(i).release(used) } {
            return Err(self.misuse(error));
        }
        self.in_use -= size;
        self.ops.frees += 1;
        trace!(self.sink, TraceEvent::Freed { addr, block: size });
        Ok(size)
    }

    /// Frees a block allocated with `layout`, also checking that the layout
    /// fits the block (`LayoutMismatch` otherwise).
    ///
    /// # Safety
    /// As for [`Heap::free`].
    // Always inlined, like the free path it runs: the caller (a
    // `GlobalAlloc::dealloc`) is its only frame.
    #[inline(always)]
    pub unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), HeapError> {
        let (i, found) = self.locate_mut(ptr)?;
        self.check_layout(ptr, usable_of(&found), layout)?;
        // SAFETY: validated above.
        unsafe { self.release_found(i, found) }.map(|_| ())
    }

    #[inline(always)]
    fn check_layout(
        &mut self,
        ptr: NonNull<u8>,
        usable: usize,
        layout: Layout,
    ) -> Result<(), HeapError> {
        let addr = ptr.as_ptr().addr();
        // A mask, not `is_multiple_of`: the alignment is a power of two,
        // and a division would cost tens of cycles on every free.
        if layout.size() > usable || addr & (layout.align() - 1) != 0 {
            return Err(self.misuse(HeapError::LayoutMismatch {
                addr,
                size: layout.size(),
                align: layout.align(),
            }));
        }
        Ok(())
    }

    /// Resizes the block at `ptr` (allocated with `layout`) to `new_size`
    /// bytes, in place when the block or its free successor allows, else by
    /// moving the data to a new block. On failure the old block is intact.
    ///
    /// # Safety
    /// As for [`Heap::free`]: when the block moves, the old pointer dies.
    pub unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, HeapError> {
        let (i, found) = self.locate_mut(ptr)?;
        self.check_layout(ptr, usable_of(&found), layout)?;
        let used = match found {
            Found::Block(used) => used,
            // SAFETY: forwarded; `object` proven in region `i` just now.
            Found::Object(object) => {
                return unsafe { self.realloc_object(i, object, ptr, layout, new_size) }
            }
        };
        let block = used.block;
        let size = block_size_for(new_size).ok_or(HeapError::SizeOverflow { size: new_size })?;
        // SAFETY: a validated used block of region `i`.
        if unsafe { self.resize_block(i, used, size, new_size)? } {
            self.count_in_place(ptr, new_size);
            return Ok(ptr);
        }
        let new_layout = Layout::from_size_align(new_size, layout.align())
            .map_err(|_| HeapError::SizeOverflow { size: new_size })?;
        // Checked before anything changes: the old block's free must not
        // fail once the new one exists. A block its quick list has room for
        // is pushed there, which cannot fail: an allocation only makes more
        // room, and changes the old block only by giving it an aligned
        // carve's small gap (an aligned request, or a new slab), which may
        // change its quick list. Since aligned blocks are carved from the
        // end of a free block, only the slow search (a nearly full region)
        // still gives a gap; the proof stays for that case. Otherwise the
        // merge is proven now.
        let may_grow_old = layout.align() > GRANULE || (self.slabs && new_size <= SLAB_MAX);
        let region = self.region(i);
        if may_grow_old || !region.quick.has_room(used.size()) {
            if let Err(error) = region.plan_merge(block, used.size()) {
                return Err(self.misuse(error));
            }
        }
        let new = self.allocate(new_layout)?;
        self.ops.allocations -= 1;
        // SAFETY: both blocks are live and distinct; the old one holds at
        // least `layout.size()` bytes and the new one `new_size`.
        unsafe { new.copy_from_nonoverlapping(ptr, layout.size().min(new_size)) };
        // The allocation may have changed the block's neighbours (and given
        // it an aligned carve's small gap): prove it again; its header's
        // owner word is unchanged.
        // SAFETY: region `i` is live.
        let again = unsafe { self.region(i).validate(ptr) }.map_err(|error| self.misuse(error));
        // SAFETY: validated just now.
        let freed = again.and_then(|used| unsafe { self.release(i, used) });
        self.finish_move(ptr, new, new_size, freed)
    }

    /// Counts (and traces) a resize of the block or object at `ptr` to
    /// `new_size` bytes done in place.
    fn count_in_place(&mut self, ptr: NonNull<u8>, new_size: usize) {
        self.ops.in_place += 1;
        self.count_realloc(ptr, ptr, new_size);
    }

    /// Counts (and traces) a resize from `old` to `new` (the same address
    /// when done in place) of `new_size` bytes.
    fn count_realloc(&mut self, old: NonNull<u8>, new: NonNull<u8>, new_size: usize) {
        self.ops.reallocations += 1;
        trace!(
            self.sink,
            TraceEvent::Reallocated {
                old: old.as_ptr().addr(),
                new: new.as_ptr().addr(),
                size: new_size,
                in_place: old == new,
            }
        );
        let _ = (old, new, new_size);
    }

    /// Ends a realloc that moved: the old one's free result `freed` (on
    /// failure the new block goes back and the error is returned).
    fn finish_move(
        &mut self,
        ptr: NonNull<u8>,
        new: NonNull<u8>,
        new_size: usize,
        freed: Result<usize, HeapError>,
    ) -> Result<NonNull<u8>, HeapError> {
        if let Err(error) = freed {
            // SAFETY: `new` was just allocated and holds nothing yet that
            // the caller knows of.
            if unsafe { self.free(new) }.is_ok() {
                // Neither the allocation nor its undoing is the caller's.
                self.ops.frees -= 1;
            }
            return Err(error);
        }
        self.ops.frees -= 1;
        self.count_realloc(ptr, new, new_size);
        Ok(new)
    }

    /// `realloc` of a slab object: in place while the new size has the
    /// same class, else a move (to an object of another class or a block).
    ///
    /// # Safety
    /// As for [`Heap::realloc`]; `object` (at `ptr`) was proven live in
    /// region `i` just now.
    unsafe fn realloc_object(
        &mut self,
        i: usize,
        object: Object,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, HeapError> {
        let class = object.slab.class();
        if new_size <= slab::class_size(class) && slab::class_of(new_size, layout.align()) == class
        {
            self.count_in_place(ptr, new_size);
            return Ok(ptr);
        }
        let new_layout = Layout::from_size_align(new_size, layout.align())
            .map_err(|_| HeapError::SizeOverflow { size: new_size })?;
        // Checked before anything changes: the old object's free must not
        // fail once the new one exists.
        if let Err(error) = integrity::check_object_guard(ptr, class) {
            return Err(self.misuse(error));
        }
        let new = self.allocate(new_layout)?;
        self.ops.allocations -= 1;
        // SAFETY: both are live and distinct; the old one holds at least
        // `layout.size()` bytes and the new one `new_size`.
        unsafe { new.copy_from_nonoverlapping(ptr, layout.size().min(new_size)) };
        // The allocation may have changed the slab (an object taken from
        // it): prove the object again.
        let again = match self.region(i).slab_object(ptr.as_ptr().addr()) {
            Some(Ok(object)) => Ok(object),
            Some(Err(error)) => Err(self.misuse(error)),
            None => Err(self.misuse(HeapError::NotBlockStart {
                addr: ptr.as_ptr().addr(),
            })),
        };
        // SAFETY: proven just now; the caller gave it up.
        let freed = again.and_then(|object| unsafe { self.release_object(i, object) });
        self.finish_move(ptr, new, new_size, freed)
    }

    /// Resizes in place to `size` bytes for `requested` bytes of data.
    ///
    /// # Safety
    /// `block` is a validated used block of region `i`.
    unsafe fn resize_block(
        &mut self,
        i: usize,
        used: Proven,
        size: usize,
        requested: usize,
    ) -> Result<bool, HeapError> {
        let region = self.region_mut(i);
        let before = region.c.used_bytes;
        // SAFETY: forwarded.
        let done = unsafe { region.resize_in_place(used, size, requested) };
        let after = region.c.used_bytes;
        self.in_use = self.in_use + after - before;
        self.peak = self.peak.max(self.in_use);
        done.map_err(|error| self.misuse(error))
    }

    /// Resizes the block at `ptr` to at least `new_size` usable bytes
    /// without ever moving it (MutekH's `resize`); `Ok(false)` when it would
    /// have to move, in which case nothing changed.
    ///
    /// # Safety
    /// `ptr` is a block of this heap that the caller owns.
    pub unsafe fn resize_in_place(
        &mut self,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Result<bool, HeapError> {
        let (i, found) = self.locate_mut(ptr)?;
        let used = match found {
            Found::Block(used) => used,
            // An object never moves nor changes class in place.
            Found::Object(object) => {
                let done = new_size <= slab::class_size(object.slab.class());
                if done {
                    self.count_in_place(ptr, new_size);
                }
                return Ok(done);
            }
        };
        let size = block_size_for(new_size).ok_or(HeapError::SizeOverflow { size: new_size })?;
        // SAFETY: a validated used block of region `i`.
        let done = unsafe { self.resize_block(i, used, size, new_size)? };
        if done {
            self.count_in_place(ptr, new_size);
        }
        Ok(done)
    }

    /// Usable bytes of the block at `ptr` (at least what was requested).
    ///
    /// # Safety
    /// None beyond a pointer the caller got from this heap: invalid pointers
    /// are reported, not dereferenced outside the heap.
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, HeapError> {
        self.locate(ptr).map(|(_, found)| usable_of(&found))
    }

    /// Takes the fixed range `[start, start + size)` out of the free memory,
    /// as an allocated block whose data starts at `start` (16-aligned).
    /// Free it like any block to give it back.
    pub fn reserve(&mut self, start: *mut u8, size: usize) -> Result<NonNull<u8>, HeapError> {
        let unavailable = HeapError::RangeUnavailable {
            start: start.addr(),
            size,
        };
        let block_size = block_size_for(size).ok_or(HeapError::SizeOverflow { size })?;
        if !start.addr().is_multiple_of(GRANULE) || start.addr() < DATA_OFFSET {
            return Err(unavailable);
        }
        let header = start.addr() - DATA_OFFSET;
        for i in 0..self.count {
            let region = self.region_mut(i);
            if !region.spans(header) {
                continue;
            }
            let before = region.c.used_bytes;
            // SAFETY: a live region of this heap, borrowed exclusively.
            let result = unsafe { region.reserve(header, block_size) };
            // Also when it fails: making room may give empty slabs back.
            let after = region.c.used_bytes;
            account(&mut self.in_use, &mut self.peak, before, after);
            match result {
                Ok(Some(block)) => {
                    // SAFETY: a block just carved for `size` bytes.
                    unsafe { integrity::on_allocate(block, size) };
                    self.ops.allocations += 1;
                    trace!(
                        self.sink,
                        TraceEvent::Reserved {
                            addr: block.data().as_ptr().addr(),
                            size,
                        }
                    );
                    return Ok(block.data());
                }
                Ok(None) => {}
                Err(error) => return Err(self.misuse(error)),
            }
        }
        Err(unavailable)
    }

    /// Whether one of this heap's chunks holds the header a block whose
    /// data starts at `data` would have: the heap to ask about `data`. O(1)
    /// per region (the chunk table's index).
    #[inline]
    pub(crate) fn holds_block_at(&self, data: usize) -> bool {
        data.checked_sub(DATA_OFFSET)
            .is_some_and(|header| self.regions().any(|r| r.chunk_of(header).is_some()))
    }

    /// Whether `addr` lies in this heap's memory: one of its chunks or a
    /// region's control structure (not merely between a region's lowest
    /// and highest bytes, where another heap's chunks may lie).
    pub(crate) fn holds(&self, addr: usize) -> bool {
        self.regions().any(|r| r.overlaps(addr, addr + 1))
    }

    /// Regions in the heap.
    pub fn region_count(&self) -> usize {
        self.count
    }

    /// Handles on the regions, in allocation (priority) order.
    pub fn region_ids(&self) -> impl Iterator<Item = RegionId> + '_ {
        self.region_ptrs()
            .iter()
            .map(|r| RegionId(r.as_ptr().addr()))
    }

    /// Bytes of used blocks, headers included: `stats().in_use_bytes` in
    /// O(1), without the walk [`Heap::stats`] makes. A free lowers it by
    /// what [`Heap::free`] returns; an allocation or an in-place resize
    /// changes it by every byte it gives or takes back, including the small
    /// gap an over-aligned allocation may give the used block before it
    /// (see [`raw`](crate::raw)). A caller that adds up its changes across
    /// calls therefore accounts for every byte its callers hold.
    #[inline]
    pub fn in_use_bytes(&self) -> usize {
        self.in_use
    }

    /// Statistics of the whole heap.
    pub fn stats(&self) -> Stats {
        let mut stats = self.regions().fold(Stats::default(), |mut s, r| {
            add_region_stats(&mut s, r);
            s
        });
        stats.peak_in_use_bytes = self.peak;
        stats.allocations = self.ops.allocations;
        stats.frees = self.ops.frees;
        stats.reallocations = self.ops.reallocations;
        stats.in_place_reallocations = self.ops.in_place;
        stats.failures = self.ops.failures;
        stats.misuses = self.ops.misuses;
        stats
    }

    /// Statistics of one region (its operation counters are zero: those
    /// are kept per heap).
    pub fn region_stats(&self, region: RegionId) -> Result<Stats, HeapError> {
        let i = self.position(region)?;
        let mut stats = Stats::default();
        add_region_stats(&mut stats, self.region(i));
        Ok(stats)
    }

    /// Walks the whole heap and reports the first inconsistency: see the
    /// `check` module for everything it verifies.
    pub fn check(&self) -> Result<(), HeapError> {
        for region in self.regions() {
            region.check()?;
        }
        let used: usize = self.regions().map(|r| r.c.used_bytes).sum();
        if used != self.in_use || self.peak < self.in_use {
            let addr = self.region_ptrs().first().map_or(0, |r| r.as_ptr().addr());
            return Err(HeapError::Corrupted {
                addr,
                what: Corruption::Stats,
            });
        }
        Ok(())
    }

    /// Writes every region, chunk and block to `out`.
    pub fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        for region in self.regions() {
            region.dump(out)?;
        }
        Ok(())
    }

    /// Adds `memory` as a new region of priority 0, without `unsafe`: a
    /// `&'static mut` slice is memory nothing else will ever use (like
    /// `linked_list_allocator`'s `init_from_slice`). The slice needs at
    /// least [`REGION_SIZE`](crate::REGION_SIZE) +
    /// [`MIN_BLOCK`](crate::MIN_BLOCK) + [`SENTINEL_SIZE`](crate::SENTINEL_SIZE)
    /// bytes after aligning its ends to [`GRANULE`](crate::GRANULE).
    ///
    /// ```
    /// use core::mem::MaybeUninit;
    /// static mut ARENA: [MaybeUninit<u8>; 1 << 16] = [MaybeUninit::uninit(); 1 << 16];
    /// let mut heap = region_heap::Heap::new();
    /// // The one `unsafe` is taking the `static mut` itself, once.
    /// let memory = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    /// heap.add_region_from_slice(memory).unwrap();
    /// ```
    pub fn add_region_from_slice(
        &mut self,
        memory: &'static mut [core::mem::MaybeUninit<u8>],
    ) -> Result<(), HeapError> {
        // The contract of `add_region` wants initialised bytes: zero them
        // once (a kernel heap of a few MiB takes a moment).
        memory.fill(core::mem::MaybeUninit::new(0));
        // SAFETY: a `'static` exclusive borrow, now initialised: valid for
        // reads and writes, used by nothing else, for as long as the
        // program runs.
        unsafe { self.add_region(memory.as_mut_ptr().cast(), memory.len()) }
    }
}

/// Accounts for a region's used bytes going from `before` to `after` in a
/// heap's `in_use` and `peak` (an allocation may also give empty slabs
/// back: then they drop). Takes the two fields, so that a loop over the
/// regions can call it.
#[inline(always)]
fn account(in_use: &mut usize, peak: &mut usize, before: usize, after: usize) {
    *in_use = *in_use + after - before;
    if *in_use > *peak {
        *peak = *in_use;
    }
}

/// Usable bytes of what `locate` found.
#[inline(always)]
fn usable_of(found: &Found) -> usize {
    match found {
        Found::Block(used) => used.block.usable(),
        Found::Object(object) => slab::class_size(object.slab.class()),
    }
}

fn add_region_stats(stats: &mut Stats, region: &Region) {
    let c = &region.c;
    stats.regions += 1;
    stats.chunks += region.chunk_count();
    stats.total_bytes += c.total_bytes;
    stats.in_use_bytes += c.used_bytes;
    // A slab is one used block for the region; for callers, its objects
    // are what was handed out.
    let blocks = c.used_blocks - c.slabs;
    stats.allocated_bytes +=
        c.used_bytes - c.slab_bytes - blocks * BLOCK_OVERHEAD + c.slab_object_bytes;
    stats.free_bytes += c.free_bytes();
    stats.metadata_bytes += c.metadata_bytes;
    stats.used_blocks += blocks + c.slab_objects;
    stats.slabs += c.slabs;
    stats.slab_bytes += c.slab_bytes;
    stats.slab_objects += c.slab_objects;
    stats.slab_object_bytes += c.slab_object_bytes;
    stats.free_blocks += c.free_blocks + region.quick.blocks;
    stats.cached_blocks += region.quick.blocks;
    stats.cached_bytes += region.quick.bytes;
    stats.quarantined_blocks += region.c.quarantined_blocks;
    stats.quarantined_bytes += region.c.quarantined_bytes;
    let largest = region.largest_free().saturating_sub(BLOCK_OVERHEAD);
    stats.largest_free = stats.largest_free.max(largest);
    stats.peak_in_use_bytes = stats.peak_in_use_bytes.max(c.used_bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::BestFit;
    use crate::testutil::Arena;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// A heap over `arena` with slabs off: these tests are about blocks
    /// (the slabs' own tests turn them on).
    fn heap_over(arena: &Arena) -> Heap {
        let mut heap = Heap::new().with_slabs(false);
        // SAFETY: the arena outlives the heap in every test.
        unsafe { heap.add_region(arena.ptr(), arena.len()) }.unwrap();
        heap
    }

    fn balanced<P: FitPolicy>(heap: &Heap<P>) {
        let s = heap.stats();
        assert_eq!(
            s.total_bytes,
            s.in_use_bytes + s.free_bytes + s.metadata_bytes,
            "{s:?}"
        );
        heap.check().unwrap();
    }

    #[test]
    fn split_then_coalesce_both_ways() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        heap.set_quick_depth(0).unwrap();
        let p: [_; 3] = core::array::from_fn(|_| heap.allocate(layout(100, 8)).unwrap());
        assert_eq!(heap.stats().used_blocks, 3);
        assert_eq!(heap.stats().free_blocks, 1, "the tail was split off");
        // SAFETY: live blocks of this heap.
        unsafe {
            heap.free(p[1]).unwrap();
            assert_eq!(heap.stats().free_blocks, 2);
            heap.free(p[0]).unwrap(); // merges with p[1]'s block
            assert_eq!(heap.stats().free_blocks, 2);
            heap.free(p[2]).unwrap(); // merges with both neighbours
        }
        let s = heap.stats();
        assert_eq!((s.used_blocks, s.free_blocks, s.in_use_bytes), (0, 1, 0));
        balanced(&heap);
    }

    #[test]
    fn quick_lists_reuse_small_blocks_whole() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        let p: [_; 3] = core::array::from_fn(|_| heap.allocate(layout(100, 8)).unwrap());
        // SAFETY: live blocks of this heap.
        unsafe { heap.free(p[1]).unwrap() };
        let s = heap.stats();
        assert_eq!((s.cached_blocks, s.free_blocks, s.used_blocks), (1, 2, 2));
        balanced(&heap);
        // SAFETY: `p[1]` is cached, not live: the second free is refused.
        let again = unsafe { heap.free(p[1]) };
        assert_eq!(
            again,
            Err(HeapError::DoubleFree {
                addr: p[1].as_ptr().addr()
            })
        );
        // The same size comes back from the quick list, in the same place.
        assert_eq!(heap.allocate(layout(100, 8)).unwrap(), p[1]);
        assert_eq!(heap.stats().cached_blocks, 0);
        // SAFETY: live blocks of this heap.
        unsafe {
            p.iter().for_each(|&b| {
                heap.free(b).unwrap();
            })
        };
        assert_eq!(heap.stats().cached_blocks, 3);
        balanced(&heap);
        heap.flush_quick_lists().unwrap();
        let s = heap.stats();
        assert_eq!((s.cached_blocks, s.free_blocks, s.used_blocks), (0, 1, 0));
        balanced(&heap);
    }

    #[test]
    fn cached_blocks_are_flushed_before_out_of_memory() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        let mut small = std::vec::Vec::new();
        while let Ok(p) = heap.allocate(layout(64, 8)) {
            small.push(p);
        }
        // SAFETY: live blocks of this heap.
        unsafe {
            small.iter().for_each(|&p| {
                heap.free(p).unwrap();
            })
        };
        let s = heap.stats();
        assert!(
            s.cached_blocks > usize::from(DEFAULT_QUICK_DEPTH) / 2,
            "{s:?}"
        );
        // Only the merged cached blocks can hold this.
        let big = layout(s.free_bytes - s.cached_bytes + 1024, 8);
        let p = heap.allocate(big).unwrap();
        assert_eq!(heap.stats().cached_blocks, 0);
        balanced(&heap);
        // SAFETY: a live block.
        unsafe { heap.free(p).unwrap() };
        assert_eq!(heap.stats().free_blocks, 1);
    }

    #[test]
    fn quick_depth_zero_merges_every_free() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        let p = heap.allocate(layout(100, 8)).unwrap();
        // SAFETY: a live block.
        unsafe { heap.free(p).unwrap() };
        assert_eq!(heap.stats().cached_blocks, 1);
        heap.set_quick_depth(0).unwrap();
        assert_eq!(heap.stats().cached_blocks, 0, "lowering the depth flushes");
        let p = heap.allocate(layout(100, 8)).unwrap();
        // SAFETY: a live block.
        unsafe { heap.free(p).unwrap() };
        let s = heap.stats();
        assert_eq!((s.cached_blocks, s.free_blocks), (0, 1));
        balanced(&heap);
    }

    #[test]
    fn header_overhead_is_the_documented_one() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        let a = heap.allocate(layout(64, 8)).unwrap();
        let b = heap.allocate(layout(64, 8)).unwrap();
        let expected = (64 + BLOCK_OVERHEAD).next_multiple_of(GRANULE);
        assert_eq!(b.as_ptr().addr() - a.as_ptr().addr(), expected);
        if !cfg!(any(feature = "crc", feature = "guard")) {
            assert_eq!(expected, 64 + 16, "16-byte headers in the plain build");
        }
        // SAFETY: a live block.
        assert_eq!(unsafe { heap.usable_size(a) }.unwrap(), 64);
    }

    #[test]
    fn aligned_allocations_return_the_gap() {
        let arena = Arena::new(256 << 10);
        let mut heap = heap_over(&arena);
        let mut live = std::vec::Vec::new();
        for shift in 5..=12 {
            let align = 1 << shift;
            let p = heap.allocate(layout(24, align)).unwrap();
            assert_eq!(p.as_ptr().addr() % align, 0);
            // SAFETY: 24 writable bytes.
            unsafe { p.write_bytes(shift as u8, 24) };
            live.push((p, shift as u8));
            balanced(&heap);
        }
        for (p, fill) in live {
            // SAFETY: live blocks written above.
            unsafe {
                assert!((0..24).all(|i| *p.as_ptr().add(i) == fill));
                heap.free(p).unwrap();
            }
        }
        heap.flush_quick_lists().unwrap();
        let s = heap.stats();
        assert_eq!((s.used_blocks, s.free_blocks), (0, 1), "gaps merged back");
        balanced(&heap);
    }

    #[test]
    fn aligned_allocation_takes_an_exact_fit() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        // Fill everything, then free one 4 KiB-aligned block of 4096 bytes:
        // the only free memory is an exact fit for (4096, 4096).
        let big = heap.allocate(layout(4096, 4096)).unwrap();
        let mut fillers = std::vec::Vec::new();
        while let Ok(p) = heap.allocate(layout(16, 16)) {
            fillers.push(p);
        }
        // SAFETY: a live block.
        unsafe { heap.free(big) }.unwrap();
        let again = heap.allocate(layout(4096, 4096)).unwrap();
        assert_eq!(again, big);
        balanced(&heap);
    }

    #[test]
    fn realloc_grows_and_shrinks_in_place_and_moves_only_when_it_must() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        let l = layout(64, 8);
        let p = heap.allocate(l).unwrap();
        // SAFETY: 64 writable bytes; blocks live until freed.
        unsafe {
            p.write_bytes(0xab, 64);
            let q = heap.realloc(p, l, 1000).unwrap();
            assert_eq!(q, p, "grew into the free successor");
            let r = heap.realloc(q, layout(1000, 8), 32).unwrap();
            assert_eq!(r, p, "shrank in place");
            assert!((0..32).all(|i| *r.as_ptr().add(i) == 0xab));
            let blocker = heap.allocate(layout(16, 8)).unwrap();
            let moved = heap.realloc(r, layout(32, 8), 4000).unwrap();
            assert_ne!(moved, r, "a used successor forces a move");
            assert!((0..32).all(|i| *moved.as_ptr().add(i) == 0xab));
            heap.free(blocker).unwrap();
            heap.free(moved).unwrap();
        }
        let s = heap.stats();
        assert_eq!((s.reallocations, s.in_place_reallocations), (3, 2));
        balanced(&heap);
    }

    #[test]
    fn resize_in_place_never_moves() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        let a = heap.allocate(layout(64, 8)).unwrap();
        let _b = heap.allocate(layout(64, 8)).unwrap();
        // SAFETY: a live block.
        unsafe {
            assert_eq!(heap.resize_in_place(a, 4096), Ok(false));
            assert_eq!(heap.resize_in_place(a, 16), Ok(true));
            // The 48-byte tail is a block of its own again.
            assert_eq!(heap.usable_size(a), Ok(16));
        }
    }

    #[test]
    fn reserve_carves_a_fixed_range() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        let start = arena.at(32 << 10);
        let p = heap.reserve(start, 1000).unwrap();
        assert_eq!(p.as_ptr(), start);
        assert!(matches!(
            heap.reserve(start, 16),
            Err(HeapError::RangeUnavailable { .. })
        ));
        balanced(&heap);
        // SAFETY: the reserved block is live.
        unsafe { heap.free(p) }.unwrap();
        assert_eq!(heap.stats().free_blocks, 1);
        balanced(&heap);
    }

    #[test]
    fn regions_are_tried_by_priority() {
        let low = Arena::new(64 << 10);
        let high = Arena::new(64 << 10);
        let mut heap = Heap::new().with_slabs(false);
        // SAFETY: arenas outlive the heap.
        unsafe {
            heap.add_region_with_priority(low.ptr(), low.len(), 1)
                .unwrap();
            heap.add_region_with_priority(high.ptr(), high.len(), 9)
                .unwrap();
        }
        let p = heap.allocate(layout(100, 8)).unwrap().as_ptr().addr();
        assert!(p >= high.ptr().addr() && p < high.ptr().addr() + high.len());
        let in_high = |p: NonNull<u8>| {
            let a = p.as_ptr().addr();
            a >= high.ptr().addr() && a < high.ptr().addr() + high.len()
        };
        // Once the high region is full, allocation falls through to the low one.
        let mut last = heap.allocate(layout(1000, 8)).unwrap();
        while in_high(last) {
            last = heap.allocate(layout(1000, 8)).unwrap();
        }
        assert!(last.as_ptr().addr() >= low.ptr().addr());
        assert_eq!(heap.region_count(), 2);
        balanced(&heap);
    }

    #[test]
    fn trim_gives_back_wholly_free_chunks_only() {
        let third = 64 << 10;
        let arena = Arena::new(4 * third);
        let mut heap = Heap::new().with_slabs(false);
        // SAFETY: disjoint pieces of one arena that outlives the heap, with
        // gaps so that the chunks do not join.
        unsafe { heap.add_region(arena.ptr(), third) }.unwrap();
        let id = heap.region_ids().next().unwrap();
        unsafe { heap.extend(id, arena.at(2 * third), third) }.unwrap();
        unsafe { heap.extend(id, arena.at(3 * third + 4096), third - 4096) }.unwrap();
        let before = heap.stats();
        assert_eq!(before.chunks, 3);
        // Fill the region so that blocks land in every chunk, then free all
        // but one block in the middle chunk.
        let blocks: std::vec::Vec<_> = (0..3 * third / 1024)
            .map_while(|_| heap.allocate(layout(900, 8)).ok())
            .collect();
        let keep = *blocks
            .iter()
            .find(|p| (arena.at(2 * third)..arena.at(3 * third)).contains(&p.as_ptr()))
            .unwrap();
        for &p in blocks.iter().filter(|&&p| p != keep) {
            // SAFETY: live blocks of this heap.
            unsafe { heap.free(p) }.unwrap();
        }
        let mut given = std::vec::Vec::new();
        let released = heap
            .trim(&mut |start, len| given.push((start.as_ptr(), len)))
            .unwrap();
        assert_eq!(given.len(), 1, "only the last chunk is wholly free");
        let (start, len) = given[0];
        assert_eq!(start, arena.at(3 * third + 4096));
        assert_eq!((released, len), (third - 4096, third - 4096));
        let after = heap.stats();
        assert_eq!(after.chunks, 2);
        assert_eq!(after.total_bytes, before.total_bytes - released);
        heap.check().unwrap();
        // The memory given back is never handed out again.
        while let Ok(p) = heap.allocate(layout(900, 8)) {
            assert!(!(start..start.wrapping_add(len)).contains(&p.as_ptr()));
        }
        // SAFETY: the kept block is live.
        unsafe { heap.free(keep) }.unwrap();
        heap.check().unwrap();
    }

    #[test]
    fn a_full_chunk_table_refuses_extend_and_growth_becomes_a_region() {
        use crate::region::MAX_CHUNKS;
        let piece = 512;
        let arena = Arena::new(2 * REGION_SIZE + (MAX_CHUNKS + 2) * 2 * piece);
        let mut heap = Heap::new().with_slabs(false);
        // SAFETY: disjoint pieces of one arena that outlives the heap, with
        // a gap after each so that no two chunks join.
        unsafe {
            heap.add_region(arena.ptr(), REGION_SIZE + piece).unwrap();
            let id = heap.region_ids().next().unwrap();
            let at = |i: usize| arena.at(REGION_SIZE + 2 * piece * (i + 1));
            for i in 1..MAX_CHUNKS {
                heap.extend(id, at(i), piece).unwrap();
            }
            assert_eq!(heap.stats().chunks, MAX_CHUNKS);
            assert_eq!(
                heap.extend(id, at(MAX_CHUNKS), piece),
                Err(HeapError::TooManyChunks)
            );
            heap.add_memory(at(MAX_CHUNKS), REGION_SIZE + piece)
                .unwrap();
        }
        assert_eq!(heap.region_count(), 2, "growth went to a region of its own");
        // Blocks in every chunk; each free finds its chunk.
        let blocks: std::vec::Vec<_> = (0..2 * MAX_CHUNKS)
            .map_while(|_| heap.allocate(layout(200, 8)).ok())
            .collect();
        assert!(blocks.len() > MAX_CHUNKS);
        heap.check().unwrap();
        for p in blocks {
            // SAFETY: live blocks of this heap.
            unsafe { heap.free(p) }.unwrap();
        }
        heap.flush_quick_lists().unwrap();
        balanced(&heap);
    }

    #[test]
    fn extend_joins_touching_chunks() {
        let arena = Arena::new(192 << 10);
        let mut heap = Heap::new().with_slabs(false);
        let third = 64 << 10;
        // SAFETY: disjoint pieces of one arena that outlives the heap.
        let id = unsafe { heap.add_region_with_priority(arena.ptr(), third, 0) }.unwrap();
        unsafe { heap.extend(id, arena.at(2 * third), third) }.unwrap();
        assert_eq!(heap.stats().chunks, 2);
        // The middle piece touches both: everything becomes one chunk.
        unsafe { heap.extend(id, arena.at(third), third) }.unwrap();
        let s = heap.stats();
        assert_eq!((s.chunks, s.free_blocks), (1, 1));
        assert_eq!(s.total_bytes, 3 * third);
        let big = heap.allocate(layout(3 * third - 8192, 8)).unwrap();
        // SAFETY: live.
        unsafe { heap.free(big) }.unwrap();
        balanced(&heap);
        assert!(matches!(
            unsafe { heap.extend(id, arena.at(100), 4096) },
            Err(HeapError::RegionOverlap { .. })
        ));
    }

    #[test]
    fn best_fit_packs_tighter() {
        let arena = Arena::new(64 << 10);
        let mut heap: Heap<BestFit> = Heap::with_policy().with_slabs(false);
        // SAFETY: the arena outlives the heap.
        unsafe { heap.add_region(arena.ptr(), arena.len()) }.unwrap();
        let p = heap.allocate(layout(300, 8)).unwrap();
        // SAFETY: live.
        unsafe { heap.free(p) }.unwrap();
        balanced(&heap);
    }

    #[test]
    fn a_batch_is_a_run_of_blocks_side_by_side() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        heap.set_quick_depth(0).unwrap();
        let other = Arena::new(64 << 10);
        let mut one = heap_over(&other);
        one.set_quick_depth(0).unwrap();
        let mut out = [NonNull::dangling(); 20];
        assert_eq!(heap.allocate_batch(layout(40, 8), &mut out), Ok(20));
        let stride = block_size_for(40).unwrap();
        for (i, pair) in out.windows(2).enumerate() {
            assert_eq!(
                pair[1].as_ptr().addr() - pair[0].as_ptr().addr(),
                stride,
                "block {i}"
            );
        }
        for (i, p) in out.iter().enumerate() {
            // SAFETY: 40 writable bytes each.
            unsafe { p.as_ptr().write_bytes(i as u8, 40) };
        }
        for (i, p) in out.iter().enumerate() {
            // SAFETY: as written above.
            let data = unsafe { core::slice::from_raw_parts(p.as_ptr(), 40) };
            assert!(
                data.iter().all(|&b| b == i as u8),
                "block {i} kept its bytes"
            );
        }
        // The same counts as twenty single allocations.
        for _ in 0..20 {
            one.allocate(layout(40, 8)).unwrap();
        }
        let (a, b) = (heap.stats(), one.stats());
        assert_eq!(
            (a.used_blocks, a.free_blocks, a.in_use_bytes, a.allocations),
            (b.used_blocks, b.free_blocks, b.in_use_bytes, b.allocations)
        );
        balanced(&heap);
        for p in out {
            // SAFETY: live blocks of this heap, freed once.
            unsafe { heap.free(p).unwrap() };
        }
        assert_eq!(heap.stats().used_blocks, 0);
        balanced(&heap);
    }

    #[test]
    fn a_batch_fills_the_smallest_holes_first_and_stops_when_memory_ends() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        heap.set_quick_depth(0).unwrap();
        let stride = block_size_for(100).unwrap();
        // Holes of three blocks between live ones, then the free tail.
        let live: std::vec::Vec<_> = (0..40)
            .map(|_| heap.allocate(layout(100, 8)).unwrap())
            .collect();
        for group in live.chunks(4) {
            for &p in &group[..3] {
                // SAFETY: live blocks, freed once.
                unsafe { heap.free(p).unwrap() };
            }
        }
        let mut out = [NonNull::dangling(); 3];
        assert_eq!(heap.allocate_batch(layout(100, 8), &mut out), Ok(3));
        let addrs: std::vec::Vec<_> = out.iter().map(|p| p.as_ptr().addr()).collect();
        let hole = addrs[0];
        assert_eq!(addrs, [hole, hole + stride, hole + 2 * stride]);
        assert!(
            live.chunks(4).any(|group| group[0].as_ptr().addr() == hole),
            "a hole, not the tail"
        );
        balanced(&heap);
        // A batch bigger than the memory left: as many as fit, then out of
        // memory for an empty heap.
        let mut many = std::vec![NonNull::dangling(); 1000];
        let got = heap.allocate_batch(layout(100, 8), &mut many).unwrap();
        assert!((1..1000).contains(&got), "{got}");
        assert!(heap.stats().largest_free < stride);
        balanced(&heap);
        assert!(matches!(
            heap.allocate_batch(layout(100, 8), &mut out),
            Err(HeapError::OutOfMemory {
                size: 100,
                align: 8
            })
        ));
        // Oversized and aligned layouts get what single calls get.
        let huge = layout(isize::MAX as usize - 64, 8);
        assert_eq!(
            heap.allocate_batch(huge, &mut out).err(),
            heap.allocate(huge).err()
        );
        for p in many[..got].iter().chain(&out).chain(
            &live[3..]
                .iter()
                .step_by(4)
                .copied()
                .collect::<std::vec::Vec<_>>(),
        ) {
            // SAFETY: live blocks, freed once.
            unsafe { heap.free(*p).unwrap() };
        }
        let mut aligned = [NonNull::dangling(); 4];
        assert_eq!(heap.allocate_batch(layout(64, 256), &mut aligned), Ok(4));
        assert!(aligned.iter().all(|p| p.as_ptr().addr() % 256 == 0));
        balanced(&heap);
    }

    #[test]
    fn a_batch_reports_damage_and_keeps_what_it_took() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        heap.set_quick_depth(0).unwrap();
        let live: std::vec::Vec<_> = (0..8)
            .map(|_| heap.allocate(layout(64, 8)).unwrap())
            .collect();
        // A hole of four blocks, which a batch of two is carved from.
        for &p in &live[2..6] {
            // SAFETY: live blocks, freed once.
            unsafe { heap.free(p).unwrap() };
        }
        // An overrun of `live[1]` over the free block's header (its links).
        let header = live[2].as_ptr().wrapping_sub(DATA_OFFSET);
        // SAFETY: the header lies in the arena.
        unsafe { header.write_bytes(0x41, 8) };
        let mut out = [NonNull::dangling(); 2];
        let result = heap.allocate_batch(layout(64, 8), &mut out);
        assert!(
            matches!(result, Err(HeapError::Corrupted { addr, .. }) if addr == header.addr()),
            "{result:?}"
        );
        assert_eq!(heap.stats().misuses, 1);
        // Quarantined: the next batch is served from the tail, the live
        // blocks are intact.
        assert_eq!(heap.allocate_batch(layout(64, 8), &mut out), Ok(2));
        assert!(out
            .iter()
            .all(|p| p.as_ptr().addr() > live[7].as_ptr().addr()));
        heap.check().unwrap();
        for p in live[..2].iter().chain(&live[6..]).chain(&out) {
            // SAFETY: live blocks, freed once.
            unsafe { heap.free(*p).unwrap() };
        }
        heap.check().unwrap();
    }

    #[test]
    fn check_finds_a_broken_header() {
        let arena = Arena::new(64 << 10);
        let mut heap = heap_over(&arena);
        let a = heap.allocate(layout(64, 8)).unwrap();
        let b = heap.allocate(layout(64, 8)).unwrap();
        let header = b.as_ptr().wrapping_sub(DATA_OFFSET);
        // SAFETY: the header bytes lie in the arena; restored below.
        unsafe { header.write_bytes(0x41, 8) };
        let what = if cfg!(feature = "crc") {
            Corruption::Checksum
        } else {
            Corruption::BlockLinks
        };
        let broken = Err(HeapError::Corrupted {
            addr: header.addr(),
            what,
        });
        assert_eq!(heap.check(), broken);
        // SAFETY: the block is live; the damaged header makes free refuse it.
        assert_eq!(unsafe { heap.free(b) }.map(|_| ()), broken);
        // The damage was named once and quarantined: the heap is whole
        // again, the block is out of use, its neighbour frees as usual.
        heap.check().unwrap();
        let s = heap.stats();
        assert_eq!((s.quarantined_blocks, s.used_blocks), (1, 1));
        assert_eq!(
            unsafe { heap.free(b) },
            Err(HeapError::Corrupted {
                addr: header.addr(),
                what: Corruption::Quarantined
            })
        );
        // SAFETY: a live block with an intact header.
        unsafe { heap.free(a).unwrap() };
        heap.check().unwrap();
        assert_eq!(heap.stats().used_blocks, 0);
    }
}
