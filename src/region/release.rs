//! Release: validating a freed pointer, merging with free neighbours, the
//! quick lists, and resizing in place.
//!
//! `validate` proves that a pointer starts a live used block of this region
//! (inside a chunk, own header, its successor linking back, guards). It
//! does not read the predecessor's header: a free that caches the block
//! never follows its back link, and the one that merges proves the
//! predecessor first ([`Region::release`]). An overwritten back link is
//! reported where it would be followed (a merge, a split's neighbour) and
//! by `check()`; at 100,000 live blocks, that header is a cache miss on
//! every free.
//! A free then either pushes the block onto its quick list (exact size,
//! room left) or merges it with its free neighbours into the index.
//!
//! Invariants kept here: every merge partner is proven first
//! ([`Region::plan_merge`]), so a free that meets damage changes nothing; a cached block is vetted (owner word
//! in state `Cached`, the list's size, its link inside a chunk, `crc` and
//! `scramble`) before it is handed out or flushed; cached blocks never
//! merge until flushed, and are flushed before the region reports no room.

use core::ptr::NonNull;

use crate::block::{Block, RelLink, State, DATA_OFFSET, GRANULE, HEADER_SIZE, MIN_BLOCK};
use crate::clist::{insert_after, unlink, Link};
use crate::error::{Corruption, HeapError};
use crate::integrity;
use crate::quick;
#[cfg(feature = "trace")]
use crate::trace::TraceEvent;

use super::chunks::Chunk;
use super::nav::{damage, FreeBlock};
use super::Region;

/// A merge that [`Region::plan_merge`] proved: the block, its size, its
/// successor, and its free neighbours as their proofs found them.
pub(crate) struct Merge {
    block: Block,
    size: usize,
    after: Block,
    prev: Option<FreeBlock>,
    next: Option<FreeBlock>,
}

/// A used block that [`Region::validate`] proved: its chunk and its
/// successor, so that freeing it need not prove them again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Proven {
    /// The block.
    pub(crate) block: Block,
    chunk: Chunk,
    next: Block,
}

impl Proven {
    /// The block's size in bytes: the distance to its proven successor.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.next.addr() - self.block.addr()
    }
}

impl Region {
    /// Checks that `data` is the start of a live used block of this region.
    ///
    /// Reads only memory inside the region's chunks, and the successor's
    /// header only once the link is known to stay inside the chunk.
    ///
    /// # Safety
    /// The region is live.
    #[inline(always)]
    pub(crate) unsafe fn validate(&self, data: NonNull<u8>) -> Result<Proven, HeapError> {
        let addr = data.as_ptr().addr();
        let header = addr.wrapping_sub(DATA_OFFSET);
        let not_block = HeapError::NotBlockStart { addr };
        let chunk = match self.chunk_of(header) {
            Some(chunk) if addr.is_multiple_of(GRANULE) => chunk,
            _ => return Err(not_block),
        };
        let block = Self::block_in(chunk, header);
        let next = Self::next_of(chunk, block);
        // The common case in one compare: an own header in state `Used`,
        // its successor linking back, with an intact checksum (`crc`).
        let next = match next {
            Some(next)
                if block.owner_word() == self.addr() | State::Used as usize
                    && block.checksum_ok() =>
            {
                next
            }
            _ => return Err(self.not_used(block, next.is_some(), addr)),
        };
        integrity::check_guards(block)?;
        if self.is_cut_off(chunk, header) {
            // Its neighbours link back, but a repair cut them all off.
            return Err(damage(header, Corruption::Quarantined));
        }
        Ok(Proven {
            block,
            chunk: *chunk,
            next,
        })
    }

    /// Why the header `block` before the data at `addr`, in one of this
    /// region's chunks, is not an own used block with an intact link and
    /// checksum (`linked`: its successor links back), as
    /// [`Region::validate`] reports it.
    #[cold]
    #[inline(never)]
    fn not_used(&self, block: Block, linked: bool, addr: usize) -> HeapError {
        let not_block = HeapError::NotBlockStart { addr };
        let corrupted = |what| damage(block.addr(), what);
        let owned = block.owner() == self.addr();
        // Not a header unless it names this region or its successor says it
        // is one. Scrambled free memory (a header absorbed by a merge)
        // means the block was freed already.
        if !owned && !linked {
            return if integrity::is_scrambled_free(block) {
                HeapError::DoubleFree { addr }
            } else {
                not_block
            };
        }
        if !block.checksum_ok() {
            return corrupted(Corruption::Checksum);
        }
        if !owned {
            return corrupted(Corruption::Owner);
        }
        match block.state() {
            // Own, used, checksum intact: its link is what failed.
            State::Used => corrupted(Corruption::BlockLinks),
            State::Free | State::Absorbed | State::Cached => HeapError::DoubleFree { addr },
            // The data of a slab's block is its header, not an object.
            State::Sentinel | State::Slab => not_block,
            State::Quarantined => corrupted(Corruption::Quarantined),
            State::Damaged => corrupted(Corruption::State),
        }
    }

    /// Frees a used block: onto its quick list if it has one with room,
    /// else merged with its free neighbours into the index. Fails, changing
    /// nothing, when a neighbour or a list it would touch is damaged.
    ///
    /// # Safety
    /// `used` came from [`Region::validate`] with nothing changed since.
    #[inline(always)]
    pub(crate) unsafe fn release(&mut self, used: Proven) -> Result<(), HeapError> {
        let block = used.block;
        let size = used.size();
        if self.quick.has_room(size) {
            // SAFETY: a used block is on no free list; its data is dead.
            unsafe {
                integrity::on_free(block);
                self.quick.push(block, size);
            }
        } else {
            // The predecessor is proven here, where it is followed.
            let prev = Self::prev_of(&used.chunk, block)
                .ok_or_else(|| damage(block.addr(), Corruption::BlockLinks))?;
            let merge = self.plan_merge_in(&used.chunk, block, size, prev, used.next)?;
            // SAFETY: as above; the merge was proven.
            unsafe {
                integrity::on_free(block);
                self.merge_inline(merge);
            }
        }
        self.c.used_bytes -= size;
        self.c.used_blocks -= 1;
        Ok(())
    }

    /// Merges `block` (`size` bytes, on no list) with its free neighbours
    /// into the index, once the merge is proven.
    ///
    /// # Safety
    /// `block` is a block of this region of `size` bytes whose ring links
    /// are intact, on no free list, its data dead.
    pub(crate) unsafe fn release_into_index(
        &mut self,
        block: Block,
        size: usize,
    ) -> Result<(), HeapError> {
        let merge = self.plan_merge(block, size)?;
        // SAFETY: forwarded; proven.
        unsafe { self.merge(merge) };
        Ok(())
    }

    /// Proves a merge of `block` (`size` bytes): its ring and each free
    /// neighbour ([`Region::merge_partner`]). Changes nothing.
    pub(crate) fn plan_merge(&self, block: Block, size: usize) -> Result<Merge, HeapError> {
        let Some(chunk) = self.chunk_of(block.addr()).copied() else {
            return Err(damage(block.addr(), Corruption::BlockLinks));
        };
        let Some((prev, next)) = Self::ring_of(&chunk, block) else {
            return Err(damage(block.addr(), Corruption::BlockLinks));
        };
        self.plan_merge_in(&chunk, block, size, prev, next)
    }

    /// [`Region::plan_merge`] for a block whose chunk and proven ring
    /// neighbours are known.
    #[inline]
    fn plan_merge_in(
        &self,
        chunk: &Chunk,
        block: Block,
        size: usize,
        prev: Block,
        next: Block,
    ) -> Result<Merge, HeapError> {
        let next_free = self.merge_partner(chunk, next)?;
        let prev = self.merge_partner_before(chunk, prev, block)?;
        Ok(Merge {
            block,
            size,
            after: next,
            prev,
            next: next_free,
        })
    }

    /// Carries out a proven merge and files the result as one free block.
    ///
    /// # Safety
    /// `merge` came from [`Region::plan_merge`] with nothing changed since.
    pub(super) unsafe fn merge(&mut self, merge: Merge) {
        // SAFETY: forwarded.
        unsafe { self.merge_inline(merge) }
    }

    /// [`Region::merge`], inlined into the free path, where the plan is
    /// made in the same function and never goes through memory.
    ///
    /// # Safety
    /// As for [`Region::merge`].
    #[inline(always)]
    unsafe fn merge_inline(&mut self, merge: Merge) {
        let Merge {
            block,
            size,
            after,
            prev,
            next,
        } = merge;
        let (first, mut end, mut total) = (prev.map_or(block, |p| p.block), after, size);
        if let Some(next) = next {
            // SAFETY: a proven free neighbour on the index, with its proven
            // links; it leaves the ring below.
            unsafe {
                self.index.remove_linked(next.class, next.links);
                next.block
                    .set_proven_state(self.addr(), State::Free, State::Absorbed);
                integrity::on_absorb(next.block);
            }
            self.c.free_blocks -= 1;
            end = next.after();
            total += next.size;
        }
        if let Some(prev) = prev {
            // SAFETY: as above; `block` now lies inside `prev` and leaves
            // the ring below. The links are read again: taking `next` off
            // rewrote them if the two were list neighbours.
            unsafe {
                self.index.remove_in(prev.class, prev.block);
                block.set_state(State::Absorbed);
                integrity::on_absorb(block);
            }
            self.c.free_blocks -= 1;
            total += prev.size;
        } else {
            block.set_state(State::Free);
        }
        if prev.is_some() || next.is_some() {
            // One ring change for both merges: the absorbed headers drop
            // out between `first` and `end` (their own links stay stale).
            // SAFETY: `first` and `end` are linked headers of the chunk
            // (proven), the headers between them absorbed.
            unsafe {
                RelLink::set_next(first.link(), end.link());
                RelLink::set_prev(end.link(), first.link());
            }
        }
        // SAFETY: `first` is a free block of `total` bytes on no list.
        unsafe { self.index.insert(first, total) };
        self.c.free_blocks += 1;
        self.trace_merges(block, size, prev, next);
    }

    /// Traces the merges [`Region::merge`] made, in order: `block`
    /// (`size` bytes) absorbing its successor, then its predecessor
    /// absorbing it.
    #[inline]
    fn trace_merges(
        &self,
        block: Block,
        size: usize,
        prev: Option<FreeBlock>,
        next: Option<FreeBlock>,
    ) {
        #[cfg(feature = "trace")]
        {
            let mut size = size;
            if let Some(next) = next {
                size += next.size;
                trace!(
                    self.sink,
                    TraceEvent::Merged {
                        block: block.addr(),
                        absorbed: next.block.addr(),
                        size,
                    }
                );
            }
            if let Some(prev) = prev {
                size += prev.size;
                trace!(
                    self.sink,
                    TraceEvent::Merged {
                        block: prev.block.addr(),
                        absorbed: block.addr(),
                        size,
                    }
                );
            }
        }
        let _ = (block, size, prev, next);
    }

    /// Sets the most blocks per quick list, flushing the lists first.
    pub(crate) fn set_quick_depth(&mut self, depth: u8) -> Result<(), HeapError> {
        self.flush_quick()?;
        self.quick.set_depth(depth);
        Ok(())
    }

    // ---- quick lists ----

    /// Pops the head of quick list `q`, vetted like a free block before
    /// reuse, as a used block; `Ok(None)` when the list is empty, an error
    /// (nothing changed) when the head or its link is damaged.
    #[inline(always)]
    pub(crate) fn pop_quick(&mut self, q: usize) -> Result<Option<Block>, HeapError> {
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
    /// is 0 for the list's last block and a granule inside a chunk for the
    /// others, and the `crc`/`scramble` checks of
    /// a free block pass. Changes nothing.
    #[inline(always)]
    fn vet_quick_head(&self, q: usize) -> Result<Option<(Block, Option<Block>)>, HeapError> {
        let Some(block) = self.quick.head(q) else {
            return Ok(None);
        };
        let damaged = |what| damage(block.addr(), what);
        if !block.checksum_ok() {
            return Err(damaged(Corruption::Checksum));
        }
        if block.owner_word() != self.addr() | State::Cached as usize
            || block.raw_links().0 as usize != quick::class_size(q) / GRANULE
            || self.quick.len(q) == 0
        {
            return Err(damaged(Corruption::QuickList));
        }
        // The links must end the list exactly where its length says: a
        // link cut to 0 (or a cycle) loses cached blocks otherwise.
        let last = self.quick.len(q) == 1;
        let next = match quick::link_addr(block) {
            0 if last => None,
            0 => return Err(damaged(Corruption::QuickList)),
            _ if last => return Err(damaged(Corruption::QuickList)),
            at => match self.chunk_of(at) {
                Some(chunk) => Some(Self::block_in(chunk, at)),
                None => return Err(damaged(Corruption::QuickList)),
            },
        };
        integrity::check_free(block, self.scramble_depth())?;
        if self.was_repaired() {
            match self.chunk_of(block.addr()) {
                Some(chunk) if !self.is_cut_off(chunk, block.addr()) => {}
                // The list holds memory a repair cut off: it is damaged.
                _ => return Err(damaged(Corruption::QuickList)),
            }
        }
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
            let merge = self.plan_merge(block, quick::class_size(q))?;
            // SAFETY: the list is not empty and `next` is its head's link.
            // The popped block is off every list; its data already holds
            // the free pattern (`scramble`); the merge was proven.
            unsafe {
                self.quick.pop(q, next);
                self.merge(merge);
            }
            flushed = true;
        }
        Ok(flushed)
    }

    // ---- resize ----

    /// Resizes a used block to `size` bytes (a `block_size_for` result for
    /// `requested` bytes) without moving it: shrinking gives the tail back,
    /// growing takes from a free successor. Returns whether it succeeded;
    /// on failure (or an error: a damaged successor) nothing changed. The
    /// block's live data is never written.
    ///
    /// # Safety
    /// `used` came from [`Region::validate`] with nothing changed since
    /// (its chunk and successor are taken as proven).
    pub(crate) unsafe fn resize_in_place(
        &mut self,
        used: Proven,
        size: usize,
        requested: usize,
    ) -> Result<bool, HeapError> {
        let Proven { block, chunk, next } = used;
        let before = used.size();
        let old_usable = block.usable();
        if size > before {
            // A free successor whose own link says it is too small is no
            // use: not worth proving (a damaged link only means no growth).
            // (`size` saturates: a link a program wrote cannot overflow.)
            let claimed = next.size();
            if next.owner_word() == self.addr() | State::Free as usize
                && before.saturating_add(claimed) < size
            {
                return Ok(false);
            }
            let Some(free) = self.merge_partner(&chunk, next)? else {
                return Ok(false);
            };
            if before + free.size < size {
                return Ok(false);
            }
            integrity::check_free(next, self.scramble_depth())?;
            // SAFETY: `next` is a proven free neighbour on the index, with
            // its proven links.
            unsafe {
                self.index.remove_linked(free.class, free.links);
                unlink(next.link());
            }
            next.set_state(State::Absorbed);
            self.c.free_blocks -= 1;
            // SAFETY: the grown block's successor is `next`'s, not free.
            unsafe { self.split_free_tail(block, before + free.size, size, free.after()) };
        } else {
            // SAFETY: `block` is used and at least `size` bytes.
            unsafe { self.shrink(&chunk, block, next, size)? };
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
    /// `block` is a used block of this region of at least `keep` bytes, in
    /// `chunk`, and `next` its proven successor.
    unsafe fn shrink(
        &mut self,
        chunk: &Chunk,
        block: Block,
        next: Block,
        keep: usize,
    ) -> Result<(), HeapError> {
        let rest = block.size() - keep;
        let next_size = self.merge_partner(chunk, next)?;
        if rest < MIN_BLOCK && (rest < HEADER_SIZE || next_size.is_none()) {
            return Ok(());
        }
        // SAFETY: the tail lies inside `block`, past the data it keeps;
        // linked before merging; its merge partners were proven, and the
        // tail's own ring is the one just written.
        unsafe {
            let tail = Block::write(block.at_offset(keep), self.addr(), State::Used);
            insert_after(block.link(), tail.link());
            integrity::on_free(tail);
            let merge = self.plan_merge(tail, rest)?;
            self.merge(merge);
        }
        Ok(())
    }
}
