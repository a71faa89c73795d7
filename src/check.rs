//! The consistency walk (`check`) and the block dump (`dump`).
//!
//! The walk trusts nothing it has not verified: it reads only addresses the
//! region's chunk table places inside a chunk, on a granule (through
//! `region::nav`), never an address merely between the region's bounds, so
//! a corrupted heap yields [`HeapError::Corrupted`] naming the first damaged
//! header instead of a crash. It verifies, per region: the chunk table
//! (address order, bounds) and each chunk's sentinel; every block of every
//! chunk (owner, state, links both ways, size, address order, no two
//! adjacent free blocks; quarantined blocks are counted, not reported); every free list (links both ways, only free blocks, each under
//! its own class, bitmaps agree, every free block listed once); and that the
//! counters agree with what was found. With the integrity features it also
//! verifies every header's checksum (`crc`, sentinels included), the guards
//! of every used block (`guard`) and the free pattern of every free block
//! to the heap's check depth (`scramble`); every slab (its header, its
//! count against its bitmap, its objects' guards and free pattern) and
//! every slab list (proven links, each slab with a free object listed
//! once). The first damage found is
//! reported: [`Corruption`] says what is wrong, the address where.

use core::fmt;

use crate::block::{Block, State, GRANULE, MIN_BLOCK};
use crate::error::{Corruption, HeapError};
use crate::index::class_of;
use crate::integrity;
use crate::quick::{self, QUICK_CLASSES};
use crate::region::{Chunk, Counters, Region};

/// What the walk counted, to compare with the region's counters.
#[derive(Default)]
struct Tally {
    used_bytes: usize,
    used_blocks: usize,
    free_bytes: usize,
    free_blocks: usize,
    cached_bytes: usize,
    cached_blocks: usize,
    quarantined_bytes: usize,
    quarantined_blocks: usize,
    slabs: usize,
    slab_bytes: usize,
    slab_objects: usize,
    slab_object_bytes: usize,
    /// Slabs with a free object: each must be on its class's list.
    open_slabs: usize,
    empty_slabs: usize,
}

fn corrupted(addr: usize, what: Corruption) -> HeapError {
    HeapError::Corrupted { addr, what }
}

/// The address `granules` granules from `addr`, if it exists.
fn target(addr: usize, granules: i32) -> Option<usize> {
    addr.checked_add_signed((granules as isize).checked_mul(GRANULE as isize)?)
}

impl Region {
    /// Verifies the whole region and returns nothing or the first damage.
    pub(crate) fn check(&self) -> Result<(), HeapError> {
        let mut tally = Tally::default();
        let mut last_end = self.addr() + crate::REGION_SIZE;
        let (lo, hi) = self.bounds();
        for chunk in self.chunks() {
            let ordered = chunk.first() >= last_end.min(chunk.first().max(lo))
                && chunk.end() <= hi
                && chunk.first() < chunk.sentinel();
            if !ordered || chunk.first() < lo {
                return Err(corrupted(chunk.first(), Corruption::ChunkList));
            }
            let sentinel = Self::block_in_or_sentinel(chunk, chunk.sentinel());
            self.check_sentinel(chunk, sentinel)?;
            self.check_blocks(chunk, sentinel, &mut tally)?;
            last_end = chunk.end();
        }
        self.check_free_lists(tally.free_blocks)?;
        self.check_quick_lists(tally.cached_blocks)?;
        self.check_slab_lists(tally.open_slabs)?;
        self.check_counters(&tally)
    }

    /// The sentinel: an own sentinel header whose next link is the chunk's
    /// first block.
    fn check_sentinel(&self, chunk: &Chunk, sentinel: Block) -> Result<(), HeapError> {
        let addr = sentinel.addr();
        if !sentinel.checksum_ok() {
            return Err(corrupted(addr, Corruption::Checksum));
        }
        if sentinel.owner() != self.addr() || sentinel.state() != State::Sentinel {
            return Err(corrupted(addr, Corruption::ChunkList));
        }
        if target(addr, sentinel.raw_links().0) != Some(chunk.first()) {
            return Err(corrupted(addr, Corruption::BlockLinks));
        }
        Ok(())
    }

    /// Every block of one chunk, in ring order, each link proven before it
    /// is followed.
    fn check_blocks(
        &self,
        chunk: &Chunk,
        sentinel: Block,
        tally: &mut Tally,
    ) -> Result<(), HeapError> {
        let mut block = Self::block_in(chunk, chunk.first());
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
            let (_, back) = block.raw_links();
            if target(addr, back) != Some(prev.addr()) {
                return Err(corrupted(addr, Corruption::BlockLinks));
            }
            let Some(next) = Self::next_in(chunk, block) else {
                return Err(corrupted(addr, Corruption::AddressOrder));
            };
            let size = next.addr() - addr;
            let quarantined = block.state() == State::Quarantined;
            if size < MIN_BLOCK && !quarantined {
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
                    if !self.free_links_ok(chunk, block, size) {
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
                State::Slab => {
                    integrity::check_guards(block)?;
                    let slab = self.check_slab(block)?;
                    tally.used_bytes += size;
                    tally.used_blocks += 1;
                    tally.slabs += 1;
                    tally.slab_bytes += size;
                    tally.slab_objects += slab.used();
                    tally.slab_object_bytes += slab.used() * crate::slab::class_size(slab.class());
                    tally.open_slabs += usize::from(!slab.is_full());
                    tally.empty_slabs += usize::from(slab.used() == 0);
                    false
                }
                State::Quarantined => {
                    tally.quarantined_bytes += size;
                    tally.quarantined_blocks += 1;
                    false
                }
                State::Absorbed | State::Sentinel | State::Damaged => {
                    return Err(corrupted(addr, Corruption::State));
                }
            };
            prev = block;
            prev_free = free;
            block = next;
        }
        let (_, back) = sentinel.raw_links();
        if target(sentinel.addr(), back) != Some(prev.addr()) {
            return Err(corrupted(sentinel.addr(), Corruption::BlockLinks));
        }
        Ok(())
    }

    /// Every free list: bitmaps agree, every entry (reached through proven
    /// links only) a free block of this region under its own class, every
    /// free block listed once.
    fn check_free_lists(&self, expected: usize) -> Result<(), HeapError> {
        let index = self.index();
        let mut listed = 0;
        for (class, bit) in index.classes() {
            if bit == index.list_is_empty(class) {
                return Err(corrupted(self.addr(), Corruption::Bitmap));
            }
            if index.list_is_empty(class) {
                continue;
            }
            for entry in self.free_list(class) {
                let (block, size) = entry?;
                listed += 1;
                let ok = listed <= expected
                    && block.owner() == self.addr()
                    && block.state() == State::Free
                    && class_of(size) == class;
                if !ok {
                    return Err(corrupted(block.addr(), Corruption::FreeList));
                }
            }
        }
        if listed != expected {
            return Err(corrupted(self.addr(), Corruption::FreeList));
        }
        Ok(())
    }

    /// Every quick list: entries reached through links proven to lie in a
    /// chunk, each a cached block of its list's size; lengths and totals.
    fn check_quick_lists(&self, expected: usize) -> Result<(), HeapError> {
        let lists = &self.quick;
        let mut listed = 0;
        for q in 0..QUICK_CLASSES {
            let mut len = 0;
            let mut entry = lists.head(q).map(|b| b.addr());
            // The holder of the link being followed: the region, then the
            // previous entry; a link that leaves the chunks is its damage.
            let mut holder = self.addr();
            while let Some(addr) = entry {
                let Some(chunk) = self.chunk_of(addr) else {
                    return Err(corrupted(holder, Corruption::QuickList));
                };
                let block = Self::block_in(chunk, addr);
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
                entry = Some(quick::link_addr(block)).filter(|&a| a != 0);
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

    /// Every slab list: entries reached through proven links only, each a
    /// slab of its list's class with a free object, or an empty slab kept
    /// alone; every slab with a free object listed once.
    fn check_slab_lists(&self, expected: usize) -> Result<(), HeapError> {
        let mut listed = 0;
        for class in 0..crate::slab::SLAB_CLASSES {
            let mut at = self.first_slab(class);
            let mut prev = 0;
            while at != 0 {
                let slab = self.listed_slab(at, class, prev)?;
                listed += 1;
                if listed > expected || slab.is_full() {
                    return Err(corrupted(at, Corruption::SlabList));
                }
                prev = at;
                at = slab.links().0;
            }
        }
        if listed != expected {
            return Err(corrupted(self.addr(), Corruption::SlabList));
        }
        Ok(())
    }

    fn check_counters(&self, tally: &Tally) -> Result<(), HeapError> {
        let c: &Counters = &self.c;
        let agree = c.used_bytes == tally.used_bytes
            && c.used_blocks == tally.used_blocks
            && c.free_blocks == tally.free_blocks
            && self.quick.bytes == tally.cached_bytes
            && c.quarantined_bytes == tally.quarantined_bytes
            && c.quarantined_blocks == tally.quarantined_blocks
            && c.slabs == tally.slabs
            && c.slab_bytes == tally.slab_bytes
            && c.slab_objects == tally.slab_objects
            && c.slab_object_bytes == tally.slab_object_bytes
            && c.empty_slabs == tally.empty_slabs
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
        for chunk in self.chunks() {
            writeln!(out, "  chunk {:#x}..{:#x}", chunk.first(), chunk.end())?;
            let sentinel = Self::block_in_or_sentinel(chunk, chunk.sentinel());
            let mut block = Self::block_in(chunk, chunk.first());
            while block != sentinel {
                let state = match block.state() {
                    State::Used => "used",
                    State::Free => "free",
                    State::Cached => "cached",
                    State::Quarantined => "quarantined",
                    State::Slab => "slab",
                    _ => "bad",
                };
                // Only proven links are followed: a damaged ring ends the
                // chunk's listing with the damage.
                let Some(next) = Self::next_in(chunk, block) else {
                    writeln!(out, "    {:#014x} damaged links", block.addr())?;
                    break;
                };
                write!(
                    out,
                    "    {:#014x} {:>10} {state}",
                    block.addr(),
                    next.addr() - block.addr()
                )?;
                if block.state() == State::Slab {
                    match self.check_slab(block) {
                        Ok(slab) => write!(
                            out,
                            " of {}-byte objects, {} of {} used",
                            crate::slab::class_size(slab.class()),
                            slab.used(),
                            crate::slab::capacity_of(slab.class())
                        )?,
                        Err(error) => write!(out, " damaged: {error}")?,
                    }
                }
                writeln!(out)?;
                block = next;
            }
        }
        Ok(())
    }
}
