//! Placement: choosing a free block for a request, carving it and splitting
//! off the rest.
//!
//! A request first tries its quick list (see `release`), then the free
//! index: the policy's pick (`BestFit` scans a few blocks of the request's
//! own class), else the good fit of two bit scans; an aligned request looks
//! for `size + align + MIN_BLOCK - GRANULE` and is carved from the end of
//! the block found, where its data is aligned (the front stays free), unless
//! that block is the last of its chunk (its free space stays at the chunk's
//! end, to join memory added next to it). Only on the way
//! to failure do the smaller classes get scanned for an exact fit (with the
//! header at the first aligned place), and the quick lists get flushed.
//!
//! Invariants kept here: a block is taken only once `nav` has proven it
//! (own free header, size confirmed by its successor, list links both
//! ways, free pattern); filing a split or a gap needs no proof (an insert
//! writes only into the list's first node, see `freelist`); a gap too
//! small for a block goes only to a `Used` predecessor; nothing changes
//! before every proof holds.

use crate::block::{Block, State, DATA_OFFSET, GRANULE, MIN_BLOCK};
use crate::error::HeapError;
use crate::freelist::FreeLink;
use crate::index::{class_of, Class, FL_COUNT, SL_COUNT};
use crate::integrity;
use crate::quick::quick_class;
#[cfg(feature = "trace")]
use crate::trace::TraceEvent;

use super::chunks::Chunk;
use super::nav::FreeBlock;
use super::Region;

/// Where a block header may go inside the free block `free` so that the
/// block's data is aligned to `align` and `size` bytes fit; `None` if not.
///
/// A leading gap becomes a free block when it can hold one; a smaller gap is
/// given to the previous block, which is possible when that block is used
/// (`prev_used`; not the sentinel, nor a cached block, whose size its list
/// fixes).
fn placement(
    free: Block,
    free_size: usize,
    prev_used: bool,
    align: usize,
    size: usize,
) -> Option<usize> {
    let data = free.addr() + DATA_OFFSET;
    let mut header = data.next_multiple_of(align) - DATA_OFFSET;
    let gap = header - free.addr();
    if gap != 0 && gap < MIN_BLOCK && !prev_used {
        // The gap must hold a free block: move up by whole alignments.
        header += (MIN_BLOCK - gap).next_multiple_of(align);
    }
    fits_at(free, free_size, prev_used, header, size).then_some(header)
}

/// Slack after an aligned block's data (less than its alignment) that
/// stays in the block rather than becoming a free tail: a tail this small
/// (at most 48 bytes with its header: 32 data bytes in the plain build, no
/// block at all with `guard`) costs a list insert now and a merge when the
/// block is freed, for little use (mixed workload: 24 fewer instructions
/// per pair, callgrind, than splitting off every tail that holds a
/// block).
const SLACK_KEPT: usize = 64;

/// Where a block header may go at the end of the free block `free`
/// (`free_size` bytes) so that the block's data is aligned to `align`, at
/// least `size` bytes fit before the free block's end and the front keeps a
/// free block; `None` if not.
///
/// The block ends where `free` ended (the slack after its data, less than
/// `align`, stays in it, or is split off as a free tail from `SLACK_KEPT`
/// bytes on), so no gap is left before it, no neighbour is read, and `free`
/// keeps its header and, when its class does not change, its place on its
/// free list. The search margin of an aligned request
/// (`align + MIN_BLOCK - GRANULE`) always leaves a minimal block in front
/// of a block of the class the good fit chose; [`placement`] serves the
/// rest (the last block of a chunk, the slow search).
#[inline]
fn end_placement(free: Block, free_size: usize, align: usize, size: usize) -> Option<usize> {
    let end = free.addr() + free_size;
    let data = end.checked_sub(size)?.checked_add(DATA_OFFSET)? & !(align - 1);
    let header = data.checked_sub(DATA_OFFSET)?;
    (header >= free.addr() + MIN_BLOCK).then_some(header)
}

/// Whether a block of `size` bytes with its header at `header` fits in
/// `free` (`free_size` bytes) with a leading gap that can be disposed of.
fn fits_at(free: Block, free_size: usize, prev_used: bool, header: usize, size: usize) -> bool {
    let Some(gap) = header.checked_sub(free.addr()) else {
        return false;
    };
    let gap_ok = gap == 0 || gap >= MIN_BLOCK || prev_used;
    gap_ok && gap.checked_add(size).is_some_and(|end| end <= free_size)
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
    /// Allocates a block of `size` bytes (a `block_size_for` result) whose
    /// data is aligned to `align`: `Ok(None)` if no free block fits, an
    /// error if a block or list it met is damaged (then nothing changed).
    ///
    /// # Safety
    /// The region is live and exclusively borrowed; `align` is a power of
    /// two.
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

    /// Allocates up to `count` blocks of `size` bytes (a `block_size_for`
    /// result; data aligned to a granule) for one batch, handing each to
    /// `each` as it is taken, with the checks `count` calls of
    /// [`Region::allocate`] would make, but cheaper: the quick list of that
    /// size first, then runs carved one block after the other from the
    /// front of a free block that holds two or more ([`Region::carve_run`]:
    /// one search and one proof per run, its blocks side by side), else one
    /// by one. Stops early when the region has no room left; on damage,
    /// stops with the error (the blocks handed to `each` before stay
    /// allocated; the damaged block or list is left as it was).
    ///
    /// # Safety
    /// As for [`Region::allocate`].
    pub(crate) unsafe fn allocate_many(
        &mut self,
        size: usize,
        count: usize,
        best_fit: bool,
        each: &mut impl FnMut(Block),
    ) -> Result<(), HeapError> {
        let mut left = count;
        while left > 0 {
            let quick = match quick_class(size) {
                Some(q) => self.pop_quick(q)?,
                None => None,
            };
            if let Some(block) = quick {
                each(block);
                left -= 1;
                continue;
            }
            if left > 1 {
                // SAFETY: forwarded.
                let carved = unsafe { self.carve_run(size, left, each) }?;
                if carved > 0 {
                    left -= carved;
                    continue;
                }
            }
            // SAFETY: forwarded.
            match unsafe { self.allocate_uncached(size, GRANULE, best_fit) }? {
                Some(block) => {
                    each(block);
                    left -= 1;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Carves up to `count` blocks of `size` bytes one after the other from
    /// the front of one free block that holds at least two (the good fit of
    /// two: the smallest such holes are used first), as many as it holds,
    /// handing each to `each`; `Ok(0)` if no free block holds two. The
    /// block is proven once (`vet_free`); each later block of the run lies
    /// in the tail the previous `take` wrote, whose free pattern
    /// (`scramble`) is checked before it is taken, as a single allocation
    /// would check it. On damage, the error (the blocks carved before stay
    /// allocated).
    ///
    /// # Safety
    /// As for [`Region::allocate`].
    unsafe fn carve_run(
        &mut self,
        size: usize,
        count: usize,
        each: &mut impl FnMut(Block),
    ) -> Result<usize, HeapError> {
        let Some(found) = size
            .checked_mul(2)
            .and_then(|two| self.index.find_good_fit(two))
        else {
            return Ok(0);
        };
        let (_, mut free) = self.vet_free(found)?;
        // The proven size is what counts (its class promises two blocks).
        let run = count.min(free.size / size);
        for carved in 1..=run {
            if carved > 1 {
                // A write after free into the middle of the block shows in
                // the tail's pattern (the proof covered only its ends).
                integrity::check_free(free.block, self.scramble_depth())?;
            }
            // SAFETY: `free` is the proven free block, or the free tail
            // the previous `take` split off it (written by that `take`, on
            // the index, its successor not free): at least `size` bytes
            // for each block still to carve (`run` says so).
            let used = unsafe { self.take(free, size) };
            each(used);
            if carved < run {
                // At least `2 * size` bytes were left, so `take` split.
                // SAFETY: a linked block; its successor is that tail.
                free = unsafe { Self::fresh_tail(used.next(), free.size - size) };
            }
        }
        Ok(run)
    }

    /// The free block `tail` (`size` bytes) that a
    /// `take` just split off and filed, as a proof would describe it: its
    /// header, links and list node were written by the heap in this call.
    ///
    /// # Safety
    /// `tail` is the free tail the previous `take` wrote, unchanged since.
    unsafe fn fresh_tail(tail: Block, size: usize) -> FreeBlock {
        FreeBlock {
            block: tail,
            size,
            class: class_of(size),
            // SAFETY: the node `take` just wrote after the tail's header.
            links: unsafe { FreeLink::read(tail.free_link()) },
        }
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
        // SAFETY: forwarded.
        unsafe { self.flush_and_retry(size, align, best_fit) }
    }

    /// The way to failure of [`Region::allocate_uncached`]: flush the
    /// quick lists and empty slabs, then search the index again if they
    /// held anything.
    ///
    /// # Safety
    /// As for [`Region::allocate`].
    #[cold]
    #[inline(never)]
    unsafe fn flush_and_retry(
        &mut self,
        size: usize,
        align: usize,
        best_fit: bool,
    ) -> Result<Option<Block>, HeapError> {
        let flushed = self.flush_quick()?;
        if !(self.release_empty_slabs()? || flushed) {
            return Ok(None);
        }
        // SAFETY: forwarded.
        unsafe { self.allocate_from_index(size, align, best_fit) }
    }

    /// Allocates from the free index alone (see [`Region::allocate`]).
    ///
    /// # Safety
    /// As for [`Region::allocate`].
    #[inline(always)]
    unsafe fn allocate_from_index(
        &mut self,
        size: usize,
        align: usize,
        best_fit: bool,
    ) -> Result<Option<Block>, HeapError> {
        if align <= GRANULE {
            let found = if best_fit {
                self.best_in_class(size)?
            } else {
                None
            };
            if let Some(block) = found.or_else(|| self.index.find_good_fit(size)) {
                let (_, free) = self.vet_free(block)?;
                // SAFETY: a proven free block of at least `size` bytes on
                // the index.
                return Ok(Some(unsafe { self.take(free, size) }));
            }
        } else {
            // `placement` moves the header by at most `align` plus a gap
            // too small for a free block.
            let margin = align + MIN_BLOCK - GRANULE;
            let Some(search) = size.checked_add(margin) else {
                return Ok(None);
            };
            if let Some(free) = self.index.find_good_fit(search) {
                let (chunk, free) = self.vet_free(free)?;
                // The last block of a chunk keeps its free space at the
                // chunk's end, where memory added next to the chunk joins
                // it: it is carved from the front. Any other block the good
                // fit found is large enough to keep a free block in front
                // of an end placement (its class is proven: see
                // `end_placement`).
                if free.after().addr() != chunk.sentinel() {
                    if let Some(header) = end_placement(free.block, free.size, align, size) {
                        // SAFETY: a proven free block and a placement at
                        // its end that leaves a free block in front.
                        return Ok(Some(unsafe { self.carve_end(free, header, size) }));
                    }
                }
                // A gap too small for a free block is never given to the
                // predecessor here: the margin leaves room to move past it.
                let Some(header) = placement(free.block, free.size, false, align, size) else {
                    return Ok(None);
                };
                // SAFETY: a proven free block and a placement inside it
                // whose gap, if any, can be a free block.
                return Ok(Some(unsafe { self.carve(free, header, size, None) }));
            }
        }
        // Slow path, only on the way to failure: smaller classes may still
        // hold a block that fits exactly.
        let Some((free, header)) = self.search_placement(size, align)? else {
            return Ok(None);
        };
        let (chunk, free) = self.vet_free(free)?;
        // SAFETY: as above.
        unsafe { self.carve_proven(&chunk, free, header, size) }.map(Some)
    }

    /// Best fit within the request's own class, scanning a bounded number
    /// of blocks; larger classes are left to the good-fit search.
    fn best_in_class(&self, size: usize) -> Result<Option<Block>, HeapError> {
        const SCAN: usize = 8;
        let mut best: Option<(Block, usize)> = None;
        for found in self.free_list(class_of(size)).take(SCAN) {
            let (block, block_size) = found?;
            if block_size >= size && best.is_none_or(|(_, b)| block_size < b) {
                best = Some((block, block_size));
            }
        }
        Ok(best.map(|(block, _)| block))
    }

    /// Scans every free block from the request's class upward for one that
    /// can host the request; O(free blocks), used only before failing.
    fn search_placement(
        &self,
        size: usize,
        align: usize,
    ) -> Result<Option<(Block, usize)>, HeapError> {
        let mut class = Some(class_of(size));
        while let Some(next) = class.and_then(|c| self.index.next_nonempty(c)) {
            if let Some(found) = self.first_placement(next, |b, total, prev_used| {
                placement(b, total, prev_used, align.max(GRANULE), size)
            })? {
                return Ok(Some(found));
            }
            class = next_class(next);
        }
        Ok(None)
    }

    /// The first block of the free list of `class` where `place` finds a
    /// header, each block's ring proven before its size and predecessor
    /// are believed.
    fn first_placement(
        &self,
        class: Class,
        place: impl Fn(Block, usize, bool) -> Option<usize>,
    ) -> Result<Option<(Block, usize)>, HeapError> {
        for found in self.free_list(class) {
            let (block, _) = found?;
            let Some(chunk) = self.chunk_of(block.addr()) else {
                continue;
            };
            let Some((prev, next)) = Self::ring_of(chunk, block) else {
                continue;
            };
            let prev_used = prev.state() == State::Used && prev.addr() != chunk.sentinel();
            if let Some(header) = place(block, next.addr() - block.addr(), prev_used) {
                return Ok(Some((block, header)));
            }
        }
        Ok(None)
    }

    /// Turns the free block `free` (on the index) into a used block of
    /// `size` bytes at its start, returning the rest to the index.
    ///
    /// # Safety
    /// `free` was proven by `vet_free` (or is a tail `take` just wrote,
    /// `fresh_tail`), unchanged since, of at least `size` bytes.
    #[inline]
    unsafe fn take(&mut self, free: FreeBlock, size: usize) -> Block {
        let block = free.block;
        // SAFETY: a proven free block (caller) with its proven list links
        // and successor, which is not free (no adjacent free blocks), as
        // `split_free_tail` requires.
        let kept = unsafe {
            self.index.remove_linked(free.class, free.links);
            self.split_free_tail(block, free.size, size, free.after())
        };
        self.c.free_blocks -= 1;
        block.set_proven_state(self.addr(), State::Free, State::Used);
        self.c.used_bytes += kept;
        self.c.used_blocks += 1;
        block
    }

    /// Proves a small gap's predecessor, then carves (see
    /// [`Region::carve`]).
    ///
    /// # Safety
    /// `free` was proven by `vet_free` (in `chunk`) and `header` is a
    /// placement for `size` bytes inside it.
    unsafe fn carve_proven(
        &mut self,
        chunk: &Chunk,
        free: FreeBlock,
        header: usize,
        size: usize,
    ) -> Result<Block, HeapError> {
        let gap = header - free.block.addr();
        let mut prev = None;
        if gap != 0 && gap < MIN_BLOCK {
            prev = Some(Self::used_before(chunk, free.block)?);
        }
        // SAFETY: forwarded; a small gap's predecessor is proven used.
        Ok(unsafe { self.carve(free, header, size, prev) })
    }

    /// The predecessor of `free` (in `chunk`), once its ring is proven and
    /// it is proven used (not the sentinel): the block a small gap goes to.
    #[cold]
    fn used_before(chunk: &Chunk, free: Block) -> Result<Block, HeapError> {
        let (before, _) = Self::ring_of(chunk, free)
            .ok_or_else(|| super::nav::damage(free.addr(), crate::Corruption::BlockLinks))?;
        if before.state() != State::Used || before.addr() == chunk.sentinel() {
            return Err(super::nav::damage(before.addr(), crate::Corruption::State));
        }
        Ok(before)
    }

    /// Places a used block of `size` bytes with its header at `header`
    /// inside the free block `free`; the leading gap becomes a free block
    /// or goes to the previous block `prev`, and the tail returns to the
    /// index.
    ///
    /// # Safety
    /// As for [`Region::carve_proven`]; `prev` is
    /// `free`'s proven used predecessor when the gap is smaller than a
    /// block.
    unsafe fn carve(
        &mut self,
        free: FreeBlock,
        header: usize,
        size: usize,
        prev: Option<Block>,
    ) -> Block {
        let owner = self.addr();
        let FreeBlock {
            block: whole,
            size: total,
            ..
        } = free;
        let after = free.after();
        let gap = header - whole.addr();
        // SAFETY: `free` is on the index with proven links (caller).
        unsafe { self.index.remove_linked(free.class, free.links) };
        self.c.free_blocks -= 1;
        let block = if gap == 0 {
            whole.set_proven_state(owner, State::Free, State::Used);
            whole
        } else if gap >= MIN_BLOCK {
            // SAFETY: `header` lies inside `whole` (caller), whose data is no
            // longer on any list; `whole` keeps the gap and stays free.
            unsafe {
                let block =
                    Block::write_between(whole.at_offset(gap), whole, after, owner, State::Used);
                self.index.insert(whole, gap);
                self.c.free_blocks += 1;
                trace!(
                    self.sink,
                    TraceEvent::Split {
                        block: whole.addr(),
                        tail: block.addr(),
                        tail_size: total - gap,
                    }
                );
                block
            }
        } else {
            let prev = prev.expect("a small gap goes to a proven used predecessor");
            // The previous block is used (`fits_at`), and grows by `gap`.
            // The new header, which may overlap `whole`'s, links `prev` to
            // `after` directly: nothing is read from `whole` any more.
            // SAFETY: `prev` is a live used block, `after` the successor of
            // `whole`, its successor; the new header lies inside `whole`'s
            // span, which leaves the ring.
            unsafe {
                let block =
                    Block::write_between(whole.at_offset(gap), prev, after, owner, State::Used);
                crate::integrity::on_grown_by_gap(prev, gap);
                self.c.used_bytes += gap;
                block
            }
        };
        // SAFETY: `block` is `total - gap` bytes, followed by `after`, which
        // is not free.
        let kept = unsafe { self.split_free_tail(block, total - gap, size, after) };
        self.c.used_bytes += kept;
        self.c.used_blocks += 1;
        block
    }

    /// Places a used block with its header at `header`, a placement from
    /// [`end_placement`], at the end of the free block `free`: `free` keeps
    /// the front (staying on its list when its class does not change, else
    /// moving to its new class), and the block's slack after `size` bytes
    /// is split off as a free tail from [`SLACK_KEPT`] bytes on.
    ///
    /// # Safety
    /// `free` was proven by `vet_free`, unchanged since, and `header` is an
    /// `end_placement` for `size` bytes inside it.
    unsafe fn carve_end(&mut self, free: FreeBlock, header: usize, size: usize) -> Block {
        let whole = free.block;
        let front = header - whole.addr();
        let rest = free.size - front;
        let after = free.after();
        // SAFETY: `header` lies inside `whole` past its free-list node
        // (`end_placement` leaves a minimal block in front), between
        // `whole` and its successor `after`; `whole`'s proven links let it
        // leave its list, and it is filed again under its new size once the
        // new header has set that size.
        let block = unsafe {
            let moves = class_of(front) != free.class;
            if moves {
                self.index.remove_linked(free.class, free.links);
            }
            let block = Block::write_between(
                whole.at_offset(front),
                whole,
                after,
                self.addr(),
                State::Used,
            );
            if moves {
                self.index.insert(whole, front);
            }
            block
        };
        trace!(
            self.sink,
            TraceEvent::Split {
                block: whole.addr(),
                tail: block.addr(),
                tail_size: rest,
            }
        );
        let kept = if rest - size < SLACK_KEPT {
            rest
        } else {
            // SAFETY: `block` is `rest` bytes, followed by `after`, which
            // is not free.
            unsafe { self.split_free_tail(block, rest, size, after) }
        };
        self.c.used_bytes += kept;
        self.c.used_blocks += 1;
        block
    }

    /// Splits `block` (`total` bytes, followed by `after`) after `keep`
    /// bytes when the tail can be a free block; returns the size `block`
    /// keeps.
    ///
    /// # Safety
    /// `block` is a live block of `total >= keep` bytes, off the index,
    /// whose successor `after` is not free.
    #[inline]
    pub(super) unsafe fn split_free_tail(
        &mut self,
        block: Block,
        total: usize,
        keep: usize,
        after: Block,
    ) -> usize {
        let rest = total - keep;
        if rest < MIN_BLOCK {
            return total;
        }
        // SAFETY: the tail lies inside `block`, before `after`, and holds a
        // minimal block.
        unsafe {
            let tail = Block::write_between(
                block.at_offset(keep),
                block,
                after,
                self.addr(),
                State::Free,
            );
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

    /// Carves the block whose header is at `header` and spans `size` bytes
    /// out of the free block that contains it; O(free blocks large enough).
    /// Flushes the quick lists first (the range may hold cached blocks).
    /// Fails, carving nothing, if a block or list it meets is damaged.
    ///
    /// # Safety
    /// The region is live and exclusively borrowed.
    pub(crate) unsafe fn reserve(
        &mut self,
        header: usize,
        size: usize,
    ) -> Result<Option<Block>, HeapError> {
        // The range may hold cached blocks or empty slabs: only the index
        // can carve it.
        self.flush_quick()?;
        self.release_empty_slabs()?;
        let mut class = Some(class_of(size));
        let mut found = None;
        while let Some(next) = class.and_then(|c| self.index.next_nonempty(c)) {
            found = self.first_placement(next, |b, total, prev_used| {
                fits_at(b, total, prev_used, header, size).then_some(header)
            })?;
            if found.is_some() {
                break;
            }
            class = next_class(next);
        }
        let Some((free, _)) = found else {
            return Ok(None);
        };
        let (chunk, free) = self.vet_free(free)?;
        // SAFETY: a proven free block the range fits in.
        unsafe { self.carve_proven(&chunk, free, header, size) }.map(Some)
    }
}
