//! Regions: the control structure, its chunks, and block placement.
//!
//! A region is a piece of memory with its own free index. Its control
//! structure ([`Region`]) lives at the start of its first chunk, as MutekH
//! allows, so a region never moves and the `Heap` that lists it stays small.
//! A region grows by chunks (`extend`); each chunk is tiled by blocks and
//! ends with a sentinel header that also carries the chunk's link on the
//! region's chunk list:
//!
//! ```text
//! [Region][block][block]...[block][sentinel+chunk link]   first chunk
//!         [block]...[block][sentinel+chunk link]           later chunks
//! ```
//!
//! Integrity hooks (`integrity`, `crc`) run at fixed points: a free block
//! is vetted (checksum, free pattern) before it is reused; a block is
//! scrambled before it merges; merge partners are vetted before a free
//! changes anything; headers patch their own checksums (see `block`).
//!
//! Invariants, in addition to those of `block` and `index`:
//! - chunks are disjoint, on the chunk list in address order, and at most
//!   `MAX_CHUNK_SIZE` bytes; `lo..hi` covers the control structure and all
//!   chunks; when there is one chunk it is the first one, `[addr + REGION_SIZE, hi)`;
//! - no two adjacent blocks are free (free merges with both neighbours), and
//!   a sentinel never merges, so nothing merges across chunks;
//! - counters: `total == used + free + metadata` bytes, where metadata is the
//!   control structure and the sentinels.

use core::mem::{offset_of, size_of};
use core::ptr::NonNull;

use crate::block::{
    Block, BlockHeader, RelLink, State, DATA_OFFSET, GRANULE, HEADER_SIZE, MAX_CHUNK_SIZE,
    MIN_BLOCK,
};
use crate::clist::{insert_after, is_consistent, make_ring, unlink, Clist, Link, PtrLink};
use crate::error::{Corruption, HeapError};
use crate::index::{class_of, Class, FreeIndex, FL_COUNT, SL_COUNT};
use crate::integrity;
use crate::quick::{self, quick_class, QuickLists, DEFAULT_QUICK_DEPTH};
#[cfg(feature = "trace")]
use crate::trace::{TraceEvent, TraceSink};

/// A chunk's end marker: a sentinel header plus the chunk's list link.
#[repr(C)]
struct Sentinel {
    header: BlockHeader,
    chunk: PtrLink,
}

/// Bytes of a chunk's sentinel (at least a block: when two chunks join, the
/// lower sentinel becomes a free block).
pub const SENTINEL_SIZE: usize = if size_of::<Sentinel>() > MIN_BLOCK {
    size_of::<Sentinel>()
} else {
    MIN_BLOCK
}
.next_multiple_of(GRANULE);
/// Bytes of a region control structure (rounded to granules).
pub const REGION_SIZE: usize = size_of::<Region>().next_multiple_of(GRANULE);
/// Smallest chunk: one minimal block and a sentinel.
pub(crate) const MIN_CHUNK: usize = MIN_BLOCK + SENTINEL_SIZE;

/// Running counters of one region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Bytes given to the region.
    pub total_bytes: usize,
    /// Control structure and sentinels.
    pub metadata_bytes: usize,
    /// Bytes of used blocks, headers included.
    pub used_bytes: usize,
    /// Used blocks.
    pub used_blocks: usize,
    /// Free blocks.
    pub free_blocks: usize,
}

impl Counters {
    /// Bytes of free blocks, headers included.
    pub(crate) fn free_bytes(&self) -> usize {
        self.total_bytes - self.used_bytes - self.metadata_bytes
    }
}

/// The control structure of a region, stored at the start of its memory.
#[repr(C, align(16))]
pub(crate) struct Region {
    index: FreeIndex,
    chunks: Clist,
    chunk_count: usize,
    /// Lowest address of the region (control structure or a lower chunk).
    lo: usize,
    /// End of the highest chunk.
    hi: usize,
    /// Allocation order among regions: higher first.
    pub(crate) priority: u8,
    /// Running counters.
    pub(crate) c: Counters,
    /// Small blocks freed whole, kept for reuse (see `quick`).
    pub(crate) quick: QuickLists,
    /// Bytes of free pattern verified at each end of a reused free block.
    #[cfg(feature = "scramble")]
    pub(crate) scramble_depth: usize,
    /// Where split and merge events go.
    #[cfg(feature = "trace")]
    pub(crate) sink: Option<TraceSink>,
}

/// Where a block header may go inside the free block `free` so that the
/// block's data is aligned to `align` and `size` bytes fit; `None` if not.
///
/// A leading gap becomes a free block when it can hold one; a smaller gap is
/// given to the previous block, which is possible when that block is used
/// (not the sentinel, nor a cached block, whose size its list fixes).
fn placement(free: Block, align: usize, size: usize) -> Option<usize> {
    let data = free.addr() + DATA_OFFSET;
    let mut header = data.next_multiple_of(align) - DATA_OFFSET;
    let gap = header - free.addr();
    if gap != 0 && gap < MIN_BLOCK && free.prev().state() != State::Used {
        // The gap must hold a free block: move up by whole alignments.
        header += (MIN_BLOCK - gap).next_multiple_of(align);
    }
    fits_at(free, header, size).then_some(header)
}

/// Whether a block of `size` bytes with its header at `header` fits in `free`
/// with a leading gap that can be disposed of.
fn fits_at(free: Block, header: usize, size: usize) -> bool {
    let Some(gap) = header.checked_sub(free.addr()) else {
        return false;
    };
    let gap_ok = gap == 0 || gap >= MIN_BLOCK || free.prev().state() == State::Used;
    gap_ok && gap.checked_add(size).is_some_and(|end| end <= free.size())
}

/// The class after `class` in size order, if any.
fn next_class((fl, sl): Class) -> Option<Class> {
    if sl + 1 < SL_COUNT {
        Some((fl, sl + 1))
    } else if fl + 1 < FL_COUNT {
        Some((fl + 1, 0))
    } else {
        None
    }
}

impl Region {
    /// Builds a region over `[start, start + len)`: control structure first,
    /// then chunks for the rest.
    ///
    /// # Safety
    /// The range is 16-aligned, `len` a multiple of 16 of at least
    /// `REGION_SIZE + MIN_CHUNK`, writable, unused by anything else, and
    /// stays so for as long as the region is part of a heap.
    pub(crate) unsafe fn create(start: NonNull<u8>, len: usize, priority: u8) -> NonNull<Region> {
        let region = start.cast::<Region>();
        let addr = start.as_ptr().addr();
        // SAFETY: the range is writable, aligned and large enough (caller).
        unsafe {
            region.as_ptr().write(Region {
                index: FreeIndex::new(),
                chunks: Clist::new(),
                chunk_count: 0,
                lo: addr,
                hi: addr + REGION_SIZE,
                priority,
                c: Counters {
                    total_bytes: REGION_SIZE,
                    metadata_bytes: REGION_SIZE,
                    ..Counters::default()
                },
                quick: QuickLists::new(DEFAULT_QUICK_DEPTH),
                #[cfg(feature = "scramble")]
                scramble_depth: integrity::DEFAULT_SCRAMBLE_CHECK_DEPTH,
                #[cfg(feature = "trace")]
                sink: None,
            })
        };
        // SAFETY: the region was just written; the rest of the range is
        // ours, aligned and at least one chunk long (caller).
        unsafe { (*region.as_ptr()).add_range(start.add(REGION_SIZE), len - REGION_SIZE) };
        region
    }

    /// The region's address, as stored in its blocks' owner words.
    #[inline]
    pub(crate) fn addr(&self) -> usize {
        (self as *const Region).addr()
    }

    /// Chunks in the region.
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunk_count
    }

    /// Adds `[start, start + len)` as chunks of at most `MAX_CHUNK_SIZE`,
    /// each joined with an adjacent chunk of this region when they touch.
    ///
    /// # Safety
    /// As for [`Region::create`], for a range of at least `MIN_CHUNK` bytes
    /// that overlaps no chunk of any region.
    pub(crate) unsafe fn add_range(&mut self, start: NonNull<u8>, len: usize) {
        let mut offset = 0;
        while len - offset >= MIN_CHUNK {
            let piece = (len - offset).min(MAX_CHUNK_SIZE);
            // SAFETY: the piece lies inside the caller's range.
            unsafe { self.add_chunk(start.add(offset), piece) };
            offset += piece;
        }
        // A tail shorter than a chunk is simply not used.
        self.c.total_bytes += len - offset;
        self.c.metadata_bytes += len - offset;
    }

    /// Adds one chunk: a single free block and a sentinel.
    ///
    /// # Safety
    /// As for [`Region::add_range`], with `MIN_CHUNK <= len <= MAX_CHUNK_SIZE`.
    unsafe fn add_chunk(&mut self, start: NonNull<u8>, len: usize) {
        let owner = self.addr();
        // SAFETY: both headers lie inside the chunk, 16-aligned (caller).
        let (first, sentinel) = unsafe {
            let first = Block::write(start, owner, State::Free);
            let sentinel = Block::write(start.add(len - SENTINEL_SIZE), owner, State::Sentinel);
            make_ring(first.link());
            insert_after(first.link(), sentinel.link());
            (first, sentinel)
        };
        let link = chunk_link(sentinel);
        // SAFETY: the chunk list's nodes are sentinels of live chunks, and
        // the new link is fresh memory inside the new sentinel.
        unsafe {
            match self
                .chunks
                .iter()
                .find(|l| l.as_ptr().addr() > link.as_ptr().addr())
            {
                Some(above) => self.chunks.insert_before(above, link),
                None => self.chunks.push_back(link),
            }
        }
        self.chunk_count += 1;
        let begin = start.as_ptr().addr();
        self.lo = self.lo.min(begin);
        self.hi = self.hi.max(begin + len);
        self.c.total_bytes += len;
        self.c.metadata_bytes += SENTINEL_SIZE;
        // SAFETY: `first` is a fresh free block on no list, all ours.
        unsafe {
            integrity::on_new_free(first);
            self.index.insert(first, first.size());
        }
        self.c.free_blocks += 1;
        // SAFETY: `sentinel` closes a chunk of this region.
        unsafe { self.join_neighbours(sentinel) };
    }

    /// Joins the chunk closed by `sentinel` with a chunk that ends where it
    /// begins, and with one that begins where it ends.
    ///
    /// # Safety
    /// `sentinel` closes a chunk of this region.
    unsafe fn join_neighbours(&mut self, sentinel: Block) {
        let start = sentinel.next().addr();
        let end = sentinel.addr() + SENTINEL_SIZE;
        let below = self
            .sentinels()
            .find(|s| s.addr() + SENTINEL_SIZE == start && end - s.next().addr() <= MAX_CHUNK_SIZE);
        if let Some(below) = below {
            // SAFETY: `below` ends exactly where this chunk begins.
            unsafe { self.join(below, sentinel) };
        }
        let first = sentinel.next().addr();
        let above = self
            .sentinels()
            .find(|s| s.next().addr() == end && s.addr() + SENTINEL_SIZE - first <= MAX_CHUNK_SIZE);
        if let Some(above) = above {
            // SAFETY: this chunk ends exactly where `above` begins.
            unsafe { self.join(sentinel, above) };
        }
    }

    /// Merges two touching chunks: the lower one's sentinel becomes a free
    /// block between them and the upper sentinel closes the joined chunk.
    ///
    /// # Safety
    /// Both sentinels close chunks of this region, and the lower chunk ends
    /// where the upper one's first block begins.
    unsafe fn join(&mut self, lower: Block, upper: Block) {
        let lower_first = lower.next();
        let upper_first = upper.next();
        // SAFETY: all four headers are live headers of this region; the
        // joined chunk is at most MAX_CHUNK_SIZE, so offsets fit.
        unsafe {
            RelLink::set_next(lower.link(), upper_first.link());
            RelLink::set_prev(upper_first.link(), lower.link());
            RelLink::set_next(upper.link(), lower_first.link());
            RelLink::set_prev(lower_first.link(), upper.link());
            self.chunks.remove(chunk_link(lower));
        }
        self.chunk_count -= 1;
        self.c.metadata_bytes -= SENTINEL_SIZE;
        lower.set_state(State::Used);
        // SAFETY: the old sentinel is now a block of SENTINEL_SIZE >= MIN_BLOCK
        // bytes between two blocks of the joined chunk, on no free list.
        unsafe {
            integrity::on_free(lower);
            self.coalesce_insert(lower, SENTINEL_SIZE);
        }
    }

    /// The sentinels of the region's chunks, in address order.
    pub(crate) fn sentinels(&self) -> impl Iterator<Item = Block> + '_ {
        // SAFETY: `&self` keeps the chunk list unchanged; its nodes are the
        // chunk links of live sentinels (region invariant).
        unsafe { self.chunks.iter() }.map(|link| {
            // SAFETY: as above.
            unsafe { sentinel_of(link) }
        })
    }

    /// Whether `addr` lies between the region's lowest and highest bytes.
    #[inline]
    pub(crate) fn spans(&self, addr: usize) -> bool {
        self.lo <= addr && addr < self.hi
    }

    /// Whether `[start, end)` overlaps the control structure or a chunk.
    pub(crate) fn overlaps(&self, start: usize, end: usize) -> bool {
        if end <= self.lo || start >= self.hi {
            return false;
        }
        let control = start < self.addr() + REGION_SIZE && self.addr() < end;
        control
            || self.sentinels().any(|s| {
                let (first, stop) = (s.next().addr(), s.addr() + SENTINEL_SIZE);
                start < stop && first < end
            })
    }

    /// The sentinel of a chunk that `[start, end)` touches, if any.
    pub(crate) fn touching_chunk(&self, start: usize, end: usize) -> Option<Block> {
        self.sentinels()
            .find(|s| s.addr() + SENTINEL_SIZE == start || s.next().addr() == end)
    }

    /// `(first block, sentinel)` addresses of the chunk whose blocks include
    /// address `header`, if any.
    #[inline]
    pub(crate) fn chunk_bounds(&self, header: usize) -> Option<(usize, usize)> {
        if self.chunk_count == 1 {
            let (first, sentinel) = (self.addr() + REGION_SIZE, self.hi - SENTINEL_SIZE);
            return (first <= header && header < sentinel).then_some((first, sentinel));
        }
        self.sentinels()
            .map(|s| (s.next().addr(), s.addr()))
            .find(|&(first, sentinel)| first <= header && header < sentinel)
    }

    // ---- allocation ----

    /// Allocates a block of `size` bytes (a `block_size_for` result) whose
    /// data is aligned to `align`: `Ok(None)` if no free block fits, an
    /// error if the chosen free block is damaged (then nothing changed).
    ///
    /// # Safety
    /// The region is live and exclusively borrowed (the type invariant of
    /// every block it holds); `align` is a power of two.
    #[inline(always)]
    pub(crate) unsafe fn allocate(
        &mut self,
        size: usize,
        align: usize,
        best_fit: bool,
    ) -> Result<Option<Block>, HeapError> {
        if align <= GRANULE {
            if let Some(q) = quick_class(size) {
                if let Some(block) = self.pop_quick(q)? {
                    return Ok(Some(block));
                }
            }
        }
        // SAFETY: forwarded.
        unsafe { self.allocate_uncached(size, align, best_fit) }
    }

    /// The index and flush part of [`Region::allocate`], kept out of line
    /// so that a quick-list hit runs a short function.
    ///
    /// # Safety
    /// As for [`Region::allocate`].
    #[inline(never)]
    unsafe fn allocate_uncached(
        &mut self,
        size: usize,
        align: usize,
        best_fit: bool,
    ) -> Result<Option<Block>, HeapError> {
        // SAFETY: forwarded.
        if let Some(block) = unsafe { self.allocate_from_index(size, align, best_fit)? } {
            return Ok(Some(block));
        }
        // Before reporting no room, give the cached blocks back: merged
        // with their neighbours they may hold the request.
        if !self.flush_quick()? {
            return Ok(None);
        }
        // SAFETY: forwarded.
        unsafe { self.allocate_from_index(size, align, best_fit) }
    }

    /// Pops the head of quick list `q`, vetted like a free block before
    /// reuse, as a used block; `Ok(None)` when the list is empty, an error
    /// (nothing changed) when the head or its link is damaged.
    #[inline]
    fn pop_quick(&mut self, q: usize) -> Result<Option<Block>, HeapError> {
        let Some((_, next)) = self.vet_quick_head(q)? else {
            return Ok(None);
        };
        // SAFETY: the list is not empty and `next` is its head's link.
        let block = unsafe { self.quick.pop(q, next) };
        self.c.used_bytes += quick::class_size(q);
        self.c.used_blocks += 1;
        Ok(Some(block))
    }

    /// The head of quick list `q` and its link, once both are vetted: the
    /// header is a cached block of this region of the list's size, the link
    /// leads into a chunk, and the `crc`/`scramble` checks of a free block
    /// pass. Changes nothing.
    #[inline]
    fn vet_quick_head(&self, q: usize) -> Result<Option<(Block, Option<Block>)>, HeapError> {
        let Some(block) = self.quick.head(q) else {
            return Ok(None);
        };
        let damaged = |what| HeapError::Corrupted {
            addr: block.addr(),
            what,
        };
        if !block.checksum_ok() {
            return Err(damaged(Corruption::Checksum));
        }
        if block.owner_word() != self.addr() | State::Cached as usize
            || block.raw_links().0 as usize != quick::class_size(q) / GRANULE
            || self.quick.len(q) == 0
        {
            return Err(damaged(Corruption::QuickList));
        }
        // SAFETY: the head was pushed by this region: a cached block, whose
        // header was just checked.
        let next = unsafe { quick::link_of(block) };
        if let Some(next) = next {
            let at = next.addr();
            if !at.is_multiple_of(GRANULE) || self.chunk_bounds(at).is_none() {
                return Err(damaged(Corruption::QuickList));
            }
        }
        integrity::check_free(block, self.scramble_depth())?;
        Ok(Some((block, next)))
    }

    /// Gives every cached block back to the index, merged with its free
    /// neighbours; returns whether there was any. Stops at the first
    /// damaged block or merge partner, which stays cached.
    pub(crate) fn flush_quick(&mut self) -> Result<bool, HeapError> {
        let mut flushed = false;
        while let Some(q) = self.quick.any_nonempty() {
            let Some((block, next)) = self.vet_quick_head(q)? else {
                break;
            };
            // SAFETY: a vetted cached block of this region: linked, its
            // neighbours readable headers.
            unsafe { self.vet_merge(block)? };
            // SAFETY: the list is not empty and `next` is its head's link.
            // The popped block is off every list; its data already holds
            // the free pattern (`scramble`), and its partners were vetted.
            unsafe {
                let block = self.quick.pop(q, next);
                self.coalesce_insert(block, block.size());
            }
            flushed = true;
        }
        Ok(flushed)
    }

    /// Allocates from the free index alone (see [`Region::allocate`]).
    ///
    /// # Safety
    /// As for [`Region::allocate`].
    #[inline]
    unsafe fn allocate_from_index(
        &mut self,
        size: usize,
        align: usize,
        best_fit: bool,
    ) -> Result<Option<Block>, HeapError> {
        if align <= GRANULE {
            let found = if best_fit {
                self.best_in_class(size)
            } else {
                None
            };
            if let Some(block) = found.or_else(|| self.index.find_good_fit(size)) {
                self.vet_reuse(block)?;
                // SAFETY: the index only holds free blocks of this region.
                return Ok(Some(unsafe { self.take(block, size) }));
            }
        } else {
            // `placement` moves the header by at most `align` plus a gap
            // too small for a free block.
            let margin = align + MIN_BLOCK - GRANULE;
            let Some(search) = size.checked_add(margin) else {
                return Ok(None);
            };
            if let Some(free) = self.index.find_good_fit(search) {
                let Some(header) = placement(free, align, size) else {
                    return Ok(None);
                };
                self.vet_reuse(free)?;
                // SAFETY: `free` is on the index and `header` fits in it.
                return Ok(Some(unsafe { self.carve(free, header, size) }));
            }
        }
        // Slow path, only on the way to failure: smaller classes may still
        // hold a block that fits exactly.
        let Some((free, header)) = self.search_placement(size, align) else {
            return Ok(None);
        };
        self.vet_reuse(free)?;
        // SAFETY: as above.
        Ok(Some(unsafe { self.carve(free, header, size) }))
    }

    /// Checks a free block before it is reused: its header checksum
    /// (`crc`) and its free pattern (`scramble`).
    #[inline(always)]
    fn vet_reuse(&self, free: Block) -> Result<(), HeapError> {
        if !free.checksum_ok() {
            return Err(HeapError::Corrupted {
                addr: free.addr(),
                what: Corruption::Checksum,
            });
        }
        integrity::check_free(free, self.scramble_depth())
    }

    /// Bytes of free pattern verified at each end of a free block.
    #[inline]
    pub(crate) fn scramble_depth(&self) -> usize {
        #[cfg(feature = "scramble")]
        return self.scramble_depth;
        #[cfg(not(feature = "scramble"))]
        return 0;
    }

    /// Best fit within the request's own class, scanning a bounded number
    /// of blocks; larger classes are left to the good-fit search.
    fn best_in_class(&self, size: usize) -> Option<Block> {
        const SCAN: usize = 8;
        self.index
            .class_blocks(class_of(size))
            .take(SCAN)
            .filter(|b| b.size() >= size)
            .min_by_key(|b| b.size())
    }

    /// Scans every free block from the request's class upward for one that
    /// can host the request; O(free blocks), used only before failing.
    fn search_placement(&self, size: usize, align: usize) -> Option<(Block, usize)> {
        let mut class = Some(class_of(size));
        while let Some(next) = class.and_then(|c| self.index.next_nonempty(c)) {
            let found = self
                .index
                .class_blocks(next)
                .find_map(|b| placement(b, align.max(GRANULE), size).map(|h| (b, h)));
            if found.is_some() {
                return found;
            }
            class = next_class(next);
        }
        None
    }

    /// Turns the free block `block`, on the index, into a used block of
    /// `size` bytes at its start, returning the rest to the index.
    ///
    /// # Safety
    /// `block` is on this region's index and at least `size` bytes.
    #[inline]
    unsafe fn take(&mut self, block: Block, size: usize) -> Block {
        let total = block.size();
        // SAFETY: `block` is on the index (caller); its successor is not
        // free (no adjacent free blocks), as `split_free_tail` requires.
        let kept = unsafe {
            self.index.remove(block, total);
            self.split_free_tail(block, total, size)
        };
        self.c.free_blocks -= 1;
        block.set_state(State::Used);
        self.c.used_bytes += kept;
        self.c.used_blocks += 1;
        block
    }

    /// Places a used block of `size` bytes with its header at `header`
    /// inside the free block `free`; the leading gap becomes a free block or
    /// goes to the previous block, and the tail returns to the index.
    ///
    /// # Safety
    /// `free` is on this region's index and `fits_at(free, header, size)`.
    unsafe fn carve(&mut self, free: Block, header: usize, size: usize) -> Block {
        let owner = self.addr();
        let gap = header - free.addr();
        // SAFETY: `free` is on the index (caller).
        unsafe { self.index.remove(free, free.size()) };
        self.c.free_blocks -= 1;
        let block = if gap == 0 {
            free
        } else if gap >= MIN_BLOCK {
            // SAFETY: `header` lies inside `free` (caller), whose data is no
            // longer on any list; `free` keeps the gap and stays free.
            unsafe {
                let block = Block::write(free.at_offset(gap), owner, State::Free);
                insert_after(free.link(), block.link());
                self.index.insert(free, free.size());
                self.c.free_blocks += 1;
                trace!(
                    self.sink,
                    TraceEvent::Split {
                        block: free.addr(),
                        tail: block.addr(),
                        tail_size: block.size(),
                    }
                );
                block
            }
        } else {
            // The previous block is used (`fits_at`), and grows by `gap`. `free` is
            // unlinked before the new header, which may overlap it, exists.
            let prev = free.prev();
            // SAFETY: `free` is linked; `prev` is a live used block; the new
            // header lies inside `free`'s span.
            unsafe {
                unlink(free.link());
                let block = Block::write(free.at_offset(gap), owner, State::Free);
                insert_after(prev.link(), block.link());
                integrity::on_grown_by_gap(prev, gap);
                self.c.used_bytes += gap;
                block
            }
        };
        // SAFETY: `block` is at least `size` bytes and its successor is not free.
        let kept = unsafe { self.split_free_tail(block, block.size(), size) };
        block.set_state(State::Used);
        self.c.used_bytes += kept;
        self.c.used_blocks += 1;
        block
    }

    /// Splits `block` (`total` bytes) after `keep` bytes when the tail can
    /// be a free block; returns the size `block` keeps.
    ///
    /// # Safety
    /// `block` is a live block of `total >= keep` bytes, off the index,
    /// whose successor is not free.
    #[inline]
    unsafe fn split_free_tail(&mut self, block: Block, total: usize, keep: usize) -> usize {
        let rest = total - keep;
        if rest < MIN_BLOCK {
            return total;
        }
        // SAFETY: the tail lies inside `block` and holds a minimal block.
        unsafe {
            let tail = Block::write_after(block.at_offset(keep), block, self.addr(), State::Free);
            self.index.insert(tail, rest);
            trace!(
                self.sink,
                TraceEvent::Split {
                    block: block.addr(),
                    tail: tail.addr(),
                    tail_size: rest,
                }
            );
        }
        self.c.free_blocks += 1;
        keep
    }

    // ---- free ----

    /// Checks that `data` is the start of a live used block of this region.
    ///
    /// Reads only memory inside the region's chunks, and neighbour headers
    /// only once the links are known to stay inside the chunk.
    ///
    /// # Safety
    /// The region is live; `data` lies between `lo` and `hi` (`spans`).
    pub(crate) unsafe fn validate(&self, data: NonNull<u8>) -> Result<Block, HeapError> {
        let addr = data.as_ptr().addr();
        let header = addr.wrapping_sub(DATA_OFFSET);
        let not_block = HeapError::NotBlockStart { addr };
        let (first, sentinel) = match self.chunk_bounds(header) {
            Some(bounds) if addr.is_multiple_of(GRANULE) => bounds,
            _ => return Err(not_block),
        };
        // SAFETY: `header` is a 16-aligned address inside a chunk's blocks:
        // readable header-sized memory. It is only trusted as a header (the
        // type invariant) once its owner, state and links check out below.
        let block = unsafe { Block::from_data(data) };
        let corrupted = |what| HeapError::Corrupted { addr: header, what };
        // SAFETY: `block` lies inside the chunk `first..sentinel`.
        let linked = unsafe { links_in_chunk(block, first, sentinel) };
        let owned = block.owner() == self.addr();
        // Not a header unless it names this region or its neighbours say it
        // is one. Scrambled free memory (a header absorbed by a merge)
        // means the block was freed already.
        if !owned && !linked {
            return Err(if integrity::is_scrambled_free(block) {
                HeapError::DoubleFree { addr }
            } else {
                not_block
            });
        }
        if !block.checksum_ok() {
            return Err(corrupted(Corruption::Checksum));
        }
        if !owned {
            return Err(corrupted(Corruption::Owner));
        }
        match block.state() {
            State::Used => {}
            State::Free | State::Absorbed | State::Cached => {
                return Err(HeapError::DoubleFree { addr })
            }
            State::Sentinel => return Err(not_block),
            State::Damaged => return Err(corrupted(Corruption::State)),
        }
        if !linked {
            return Err(corrupted(Corruption::BlockLinks));
        }
        integrity::check_guards(block)?;
        Ok(block)
    }

    /// Checks the free neighbours a free of `block` would merge with: their
    /// headers must be intact before they are changed (`crc`; always `Ok`
    /// without it).
    ///
    /// # Safety
    /// `block` is a used block of this region (`validate`) or a vetted
    /// cached one.
    #[inline]
    pub(crate) unsafe fn vet_merge(&self, block: Block) -> Result<(), HeapError> {
        vet_if_free(block.next())?;
        vet_if_free(block.prev())
    }

    /// Frees a used block: onto its quick list if it has one with room,
    /// else merged with its free neighbours into the index.
    ///
    /// # Safety
    /// `block` is a used block of this region (`validate`).
    #[inline]
    pub(crate) unsafe fn release(&mut self, block: Block) {
        let size = block.size();
        self.c.used_bytes -= size;
        self.c.used_blocks -= 1;
        // SAFETY: a used block is on no free list; its data is dead.
        unsafe {
            integrity::on_free(block);
            if !self.quick.push(block, size) {
                self.coalesce_insert(block, size);
            }
        }
    }

    /// Sets the most blocks per quick list, flushing the lists first.
    pub(crate) fn set_quick_depth(&mut self, depth: u8) -> Result<(), HeapError> {
        self.flush_quick()?;
        self.quick.set_depth(depth);
        Ok(())
    }

    /// Merges `block` (`size` bytes, off the index) with its free
    /// neighbours and files the result as one free block.
    ///
    /// # Safety
    /// `block` is a linked block of this region of `size` bytes, on no free
    /// list.
    #[inline]
    unsafe fn coalesce_insert(&mut self, mut block: Block, mut size: usize) {
        let next = block.next();
        if next.state() == State::Free {
            let next_size = next.size();
            // SAFETY: a free neighbour is on the index and linked.
            unsafe {
                self.index.remove(next, next_size);
                unlink(next.link());
            }
            next.set_state(State::Absorbed);
            // SAFETY: `next` now lies inside the free block.
            unsafe { integrity::on_absorb(next) };
            self.c.free_blocks -= 1;
            size += next_size;
            trace!(
                self.sink,
                TraceEvent::Merged {
                    block: block.addr(),
                    absorbed: next.addr(),
                    size,
                }
            );
        }
        let prev = block.prev();
        if prev.state() == State::Free {
            let prev_size = prev.size();
            // SAFETY: as above; `block` is linked.
            unsafe {
                self.index.remove(prev, prev_size);
                unlink(block.link());
            }
            block.set_state(State::Absorbed);
            // SAFETY: `block` now lies inside the free block `prev`.
            unsafe { integrity::on_absorb(block) };
            size += prev_size;
            trace!(
                self.sink,
                TraceEvent::Merged {
                    block: prev.addr(),
                    absorbed: block.addr(),
                    size,
                }
            );
            block = prev;
            self.c.free_blocks -= 1;
        }
        block.set_state(State::Free);
        // SAFETY: `block` is now a free block of `size` bytes on no list.
        unsafe { self.index.insert(block, size) };
        self.c.free_blocks += 1;
    }

    // ---- resize ----

    /// Resizes a used block to `size` bytes (a `block_size_for` result for
    /// `requested` bytes) without moving it: shrinking gives the tail back,
    /// growing takes from a free successor. Returns whether it succeeded;
    /// on failure (or an error: a damaged successor) nothing changed. The
    /// block's live data is never written.
    ///
    /// # Safety
    /// `block` is a used block of this region (`validate`).
    pub(crate) unsafe fn resize_in_place(
        &mut self,
        block: Block,
        size: usize,
        requested: usize,
    ) -> Result<bool, HeapError> {
        let before = block.size();
        let old_usable = block.usable();
        if size > before {
            let next = block.next();
            if next.state() != State::Free || before + next.size() < size {
                return Ok(false);
            }
            self.vet_reuse(next)?;
            // SAFETY: `next` is a free neighbour on the index.
            unsafe {
                self.index.remove(next, next.size());
                unlink(next.link());
            }
            next.set_state(State::Absorbed);
            self.c.free_blocks -= 1;
            // SAFETY: the grown block's successor was `next`'s, not free.
            unsafe { self.split_free_tail(block, block.size(), size) };
        } else {
            // SAFETY: `block` is used and at least `size` bytes.
            unsafe { self.shrink(block, size)? };
        }
        // SAFETY: `block` was just resized from `before` bytes and holds
        // `requested` bytes.
        unsafe { integrity::on_resize(block, old_usable, block.addr() + before, requested) };
        self.c.used_bytes = self.c.used_bytes - before + block.size();
        Ok(true)
    }

    /// Gives the tail of `block` after `keep` bytes back to the free lists,
    /// merged with a free successor; a tail too small to stand alone is kept
    /// unless the successor is free to absorb it (and the tail can hold a
    /// header). Fails, changing nothing, if that successor is damaged.
    ///
    /// # Safety
    /// `block` is a used block of this region of at least `keep` bytes.
    unsafe fn shrink(&mut self, block: Block, keep: usize) -> Result<(), HeapError> {
        let rest = block.size() - keep;
        let next_free = block.next().state() == State::Free;
        if rest >= MIN_BLOCK || (rest >= HEADER_SIZE && next_free) {
            vet_if_free(block.next())?;
            // SAFETY: the tail lies inside `block`, past the data it keeps;
            // linked before merging.
            unsafe {
                let tail = Block::write(block.at_offset(keep), self.addr(), State::Used);
                insert_after(block.link(), tail.link());
                integrity::on_free(tail);
                self.coalesce_insert(tail, rest);
            }
        }
        Ok(())
    }

    // ---- reserve ----

    /// Carves the block whose header is at `header` and spans `size` bytes
    /// out of the free block that contains it; O(free blocks large enough).
    /// Flushes the quick lists first (the range may hold cached blocks).
    /// Fails, carving nothing, if that free block or a cached one is damaged.
    ///
    /// # Safety
    /// The region is live and exclusively borrowed.
    pub(crate) unsafe fn reserve(
        &mut self,
        header: usize,
        size: usize,
    ) -> Result<Option<Block>, HeapError> {
        // The range may hold cached blocks: only the index can carve it.
        self.flush_quick()?;
        let mut class = Some(class_of(size));
        let mut found = None;
        while let Some(next) = class.and_then(|c| self.index.next_nonempty(c)) {
            found = self
                .index
                .class_blocks(next)
                .find(|&b| fits_at(b, header, size));
            if found.is_some() {
                break;
            }
            class = next_class(next);
        }
        let Some(free) = found else {
            return Ok(None);
        };
        self.vet_reuse(free)?;
        // SAFETY: `free` is on the index and the block fits at `header`.
        Ok(Some(unsafe { self.carve(free, header, size) }))
    }

    // ---- introspection ----

    /// The largest free block's size in bytes (0 when none).
    pub(crate) fn largest_free(&self) -> usize {
        self.index
            .last_nonempty()
            .and_then(|class| self.index.class_blocks(class).map(|b| b.size()).max())
            .unwrap_or(0)
    }

    /// The first node of the chunk list, for the consistency walk.
    pub(crate) fn first_chunk_link(&self) -> Option<NonNull<PtrLink>> {
        self.chunks.first()
    }

    /// The free index, for the consistency walk.
    pub(crate) fn index(&self) -> &FreeIndex {
        &self.index
    }

    /// The region's lowest and highest addresses.
    pub(crate) fn bounds(&self) -> (usize, usize) {
        (self.lo, self.hi)
    }
}

/// Checks the header of a neighbour that is about to merge, if it is free
/// (`crc`; always `Ok` without it).
#[inline]
fn vet_if_free(neighbour: Block) -> Result<(), HeapError> {
    if cfg!(feature = "crc") && neighbour.state() == State::Free && !neighbour.checksum_ok() {
        return Err(HeapError::Corrupted {
            addr: neighbour.addr(),
            what: Corruption::Checksum,
        });
    }
    Ok(())
}

/// Whether `block`'s links stay inside the chunk `first..sentinel` and
/// both neighbours link back to it.
///
/// # Safety
/// `block` is a granule-aligned address in `first..sentinel` of a live
/// region's chunk.
unsafe fn links_in_chunk(block: Block, first: usize, sentinel: usize) -> bool {
    let header = block.addr();
    let (next, prev) = block.raw_links();
    let target = |granules: i32| header as i64 + granules as i64 * GRANULE as i64;
    let next_ok = next > 0 && target(next) <= sentinel as i64;
    let prev_ok = if header == first {
        target(prev) == sentinel as i64
    } else {
        prev < 0 && target(prev) >= first as i64
    };
    // SAFETY: both neighbours lie inside the chunk, on headers if the
    // links are honest and on readable chunk memory otherwise.
    next_ok && prev_ok && unsafe { is_consistent(block.link()) }
}

/// The chunk-list link of a sentinel.
fn chunk_link(sentinel: Block) -> NonNull<PtrLink> {
    sentinel.at_offset(offset_of!(Sentinel, chunk)).cast()
}

/// The sentinel that holds a chunk-list link.
///
/// # Safety
/// `link` is the chunk link of a live sentinel.
pub(crate) unsafe fn sentinel_of(link: NonNull<PtrLink>) -> Block {
    // SAFETY: the link sits at a fixed offset in its sentinel (caller).
    unsafe { Block::from_header(link.cast::<u8>().sub(offset_of!(Sentinel, chunk)).cast()) }
}

const _: () = assert!(SENTINEL_SIZE >= MIN_BLOCK);
const _: () = assert!(REGION_SIZE.is_multiple_of(GRANULE));
