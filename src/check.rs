//! The consistency walk (`check`) and the block dump (`dump`).
//!
//! The walk trusts nothing it has not verified: before it follows a link it
//! checks that the target lies inside the region and on a granule, so a
//! corrupted heap yields [`HeapError::Corrupted`] naming the first damaged
//! header instead of a crash. It verifies, per region: the chunk list (links
//! both ways, address order, count); every block of every chunk (owner,
//! state, links both ways, size, address order, no two adjacent free
//! blocks); every free list (links both ways, only free blocks, each under
//! its own class, bitmaps agree, every free block listed once); and that the
//! counters agree with what was found. With the integrity features it also
//! verifies every header's checksum (`crc`, sentinels included), the guards
//! of every used block (`guard`) and the free pattern of every free block
//! to the heap's check depth (`scramble`). The first damage found is
//! reported: [`Corruption`] says what is wrong, the address where.

use core::fmt;
use core::ptr::NonNull;

use crate::block::{Block, State, GRANULE, MIN_BLOCK};
use crate::clist::{Link, PtrLink};
use crate::error::{Corruption, HeapError};
use crate::index::class_of;
use crate::integrity;
use crate::quick::{self, QUICK_CLASSES};
use crate::region::{sentinel_of, Counters, Region, SENTINEL_SIZE};

/// What the walk counted in one region.
#[derive(Default)]
struct Tally {
    used_bytes: usize,
    used_blocks: usize,
    free_bytes: usize,
    free_blocks: usize,
    cached_bytes: usize,
    cached_blocks: usize,
}

fn corrupted(addr: usize, what: Corruption) -> HeapError {
    HeapError::Corrupted { addr, what }
}

impl Region {
    /// Whether `addr` is a granule-aligned address inside the region.
    fn holds(&self, addr: usize) -> bool {
        let (lo, hi) = self.bounds();
        lo <= addr && addr < hi && addr.is_multiple_of(GRANULE)
    }

    /// Follows a pointer link after checking that both ends stay inside the
    /// region; `None` when a link leaves it.
    fn follow_ptr(&self, node: NonNull<PtrLink>, forward: bool) -> Option<NonNull<PtrLink>> {
        if !self.holds(node.as_ptr().addr()) {
            return None;
        }
        // SAFETY: `node` lies inside the region's memory, which is readable
        // for as long as the region is live.
        let target = unsafe {
            if forward {
                PtrLink::next(node)
            } else {
                PtrLink::prev(node)
            }
        };
        self.holds(target.as_ptr().addr()).then_some(target)
    }

    /// Whether a pointer link's neighbours both link back to it.
    fn ptr_link_ok(&self, node: NonNull<PtrLink>) -> bool {
        let back = |forward| {
            self.follow_ptr(node, forward)
                .and_then(|n| self.follow_ptr(n, !forward))
                == Some(node)
        };
        back(true) && back(false)
    }

    /// Verifies the whole region and returns nothing or the first damage.
    pub(crate) fn check(&self) -> Result<(), HeapError> {
        let mut tally = Tally::default();
        let mut chunks = 0;
        let mut last_end = 0;
        let head = self.first_chunk_link();
        let mut link = head;
        while let Some(node) = link {
            if chunks == self.chunk_count() || !self.ptr_link_ok(node) {
                return Err(corrupted(node.as_ptr().addr(), Corruption::ChunkList));
            }
            // SAFETY: the chunk link lies inside the region on a consistent
            // ring, so it is the link of a sentinel header.
            let sentinel = unsafe { sentinel_of(node) };
            let first = self.check_sentinel(sentinel, last_end)?;
            self.check_blocks(first, sentinel, &mut tally)?;
            last_end = sentinel.addr() + SENTINEL_SIZE;
            chunks += 1;
            link = self.follow_ptr(node, true).filter(|&n| Some(n) != head);
        }
        if chunks != self.chunk_count() {
            return Err(corrupted(self.addr(), Corruption::ChunkList));
        }
        self.check_free_lists(tally.free_blocks)?;
        self.check_quick_lists(tally.cached_blocks)?;
        self.check_counters(&tally)
    }

    /// Checks a sentinel and returns its chunk's first block.
    fn check_sentinel(&self, sentinel: Block, last_end: usize) -> Result<Block, HeapError> {
        let addr = sentinel.addr();
        if !sentinel.checksum_ok() {
            return Err(corrupted(addr, Corruption::Checksum));
        }
        if sentinel.owner() != self.addr() || sentinel.state() != State::Sentinel {
            return Err(corrupted(addr, Corruption::ChunkList));
        }
        let (next, _) = sentinel.raw_links();
        let first = addr as i64 + next as i64 * GRANULE as i64;
        if next >= 0 || first < last_end as i64 || !self.holds(first as usize) {
            return Err(corrupted(addr, Corruption::AddressOrder));
        }
        // The link stays inside the region: the walk checks what it finds.
        Ok(sentinel.next())
    }

    /// Walks the blocks of one chunk, from `first` to `sentinel`.
    fn check_blocks(
        &self,
        first: Block,
        sentinel: Block,
        tally: &mut Tally,
    ) -> Result<(), HeapError> {
        let mut block = first;
        let mut prev = sentinel;
        let mut prev_free = false;
        while block != sentinel {
            let addr = block.addr();
            if !block.checksum_ok() {
                return Err(corrupted(addr, Corruption::Checksum));
            }
            if block.owner() != self.addr() {
                return Err(corrupted(addr, Corruption::Owner));
            }
            let (next, back) = block.raw_links();
            let next_addr = addr as i64 + next as i64 * GRANULE as i64;
            let back_addr = addr as i64 + back as i64 * GRANULE as i64;
            if back_addr != prev.addr() as i64 {
                return Err(corrupted(addr, Corruption::BlockLinks));
            }
            if next <= 0 || next_addr > sentinel.addr() as i64 {
                return Err(corrupted(addr, Corruption::AddressOrder));
            }
            let size = block.size();
            if size < MIN_BLOCK {
                return Err(corrupted(addr, Corruption::Size));
            }
            let free = match block.state() {
                State::Used => {
                    integrity::check_guards(block)?;
                    tally.used_bytes += size;
                    tally.used_blocks += 1;
                    false
                }
                State::Free => {
                    if prev_free {
                        return Err(corrupted(addr, Corruption::AdjacentFree));
                    }
                    if !self.ptr_link_ok(block.free_link()) {
                        return Err(corrupted(addr, Corruption::FreeList));
                    }
                    integrity::check_free(block, self.scramble_depth())?;
                    tally.free_bytes += size;
                    tally.free_blocks += 1;
                    true
                }
                State::Cached => {
                    integrity::check_free(block, self.scramble_depth())?;
                    tally.cached_bytes += size;
                    tally.cached_blocks += 1;
                    false
                }
                State::Absorbed | State::Sentinel | State::Damaged => {
                    return Err(corrupted(addr, Corruption::State));
                }
            };
            prev = block;
            prev_free = free;
            block = block.next();
        }
        let (_, back) = sentinel.raw_links();
        if sentinel.addr() as i64 + back as i64 * GRANULE as i64 != prev.addr() as i64 {
            return Err(corrupted(sentinel.addr(), Corruption::BlockLinks));
        }
        Ok(())
    }

    /// Walks every free list: bitmaps agree, entries are free blocks of
    /// this region filed under their own class, and all `expected` free
    /// blocks are listed.
    fn check_free_lists(&self, expected: usize) -> Result<(), HeapError> {
        let index = self.index();
        let mut listed = 0;
        for (class, bit) in index.classes() {
            if bit == index.list_is_empty(class) {
                return Err(corrupted(self.addr(), Corruption::Bitmap));
            }
            for block in index.class_blocks(class) {
                let addr = block.addr();
                listed += 1;
                let ok = self.holds(addr)
                    && listed <= expected
                    && block.owner() == self.addr()
                    && block.state() == State::Free
                    && class_of(block.size()) == class;
                if !ok {
                    return Err(corrupted(addr, Corruption::FreeList));
                }
            }
        }
        if listed != expected {
            return Err(corrupted(self.addr(), Corruption::FreeList));
        }
        Ok(())
    }

    /// Walks every quick list: each entry is a cached block of this
    /// region of its list's size, links stay in the region, lengths agree
    /// with the lists and are within the depth, and all `expected` cached
    /// blocks are listed.
    fn check_quick_lists(&self, expected: usize) -> Result<(), HeapError> {
        let lists = &self.quick;
        let mut listed = 0;
        for q in 0..QUICK_CLASSES {
            let mut len = 0;
            let mut entry = lists.head(q);
            // The holder of the link being followed: the region, then the
            // previous entry; a link that leaves the region is its damage.
            let mut holder = self.addr();
            while let Some(block) = entry {
                let addr = block.addr();
                // Inside a chunk, not merely between the region's bounds:
                // chunks need not be contiguous.
                if !addr.is_multiple_of(GRANULE) || self.chunk_bounds(addr).is_none() {
                    return Err(corrupted(holder, Corruption::QuickList));
                }
                len += 1;
                listed += 1;
                let ok = listed <= expected
                    && len <= lists.len(q)
                    && block.owner() == self.addr()
                    && block.state() == State::Cached
                    && block.size() == quick::class_size(q);
                if !ok {
                    return Err(corrupted(addr, Corruption::QuickList));
                }
                holder = addr;
                // SAFETY: a granule inside one of the region's chunks,
                // checked above (readable; the link is vetted in turn).
                entry = unsafe { quick::link_of(block) };
            }
            if len != lists.len(q) || len > usize::from(lists.depth()) {
                return Err(corrupted(self.addr(), Corruption::QuickList));
            }
        }
        if listed != expected || lists.blocks != expected {
            return Err(corrupted(self.addr(), Corruption::QuickList));
        }
        Ok(())
    }

    fn check_counters(&self, tally: &Tally) -> Result<(), HeapError> {
        let c: &Counters = &self.c;
        let agree = c.used_bytes == tally.used_bytes
            && c.used_blocks == tally.used_blocks
            && c.free_blocks == tally.free_blocks
            && self.quick.bytes == tally.cached_bytes
            && c.free_bytes() == tally.free_bytes + tally.cached_bytes;
        if agree {
            Ok(())
        } else {
            Err(corrupted(self.addr(), Corruption::Stats))
        }
    }

    /// Writes the region's chunks and blocks, one line each.
    pub(crate) fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let c = &self.c;
        writeln!(
            out,
            "region {:#x} priority {}: {} bytes, {} chunk(s), {} used in {} block(s), {} free in {} block(s)",
            self.addr(),
            self.priority,
            c.total_bytes,
            self.chunk_count(),
            c.used_bytes,
            c.used_blocks,
            c.free_bytes(),
            c.free_blocks
        )?;
        for sentinel in self.sentinels() {
            let mut block = sentinel.next();
            writeln!(
                out,
                "  chunk {:#x}..{:#x}",
                block.addr(),
                sentinel.addr() + SENTINEL_SIZE
            )?;
            while block != sentinel {
                let state = match block.state() {
                    State::Used => "used",
                    State::Free => "free",
                    State::Cached => "cached",
                    _ => "bad",
                };
                writeln!(
                    out,
                    "    {:#014x} {:>10} {state}",
                    block.addr(),
                    block.size()
                )?;
                block = block.next();
            }
        }
        Ok(())
    }
}
