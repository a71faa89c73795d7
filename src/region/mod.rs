//! Regions: the control structure, its chunks, and block placement.
//!
//! A region is a piece of memory with its own free index. Its control
//! structure ([`Region`]) lives at the start of its first chunk, as MutekH
//! allows, so a region never moves and the `Heap` that lists it stays small.
//! A region grows by chunks (`extend`); each chunk is tiled by blocks and
//! ends with a sentinel header; the chunk table in the control structure
//! ([`chunks`]) says where every chunk lies:
//!
//! ```text
//! [Region: index, quick lists, chunk table][block][block]...[block][sentinel]   first chunk
//!                                          [block]...[block][sentinel]          later chunks
//! ```
//!
//! Submodules: [`chunks`] (the chunk table), [`nav`] (checked navigation:
//! every link read from memory a program can write is proven before it is
//! followed), [`repair`] (quarantine after damage), [`cutoff`] (the
//! ranges a repair quarantined, which no block is taken from again),
//! [`slabs`] (the slabs of equal objects carved from blocks).
//!
//! Integrity hooks (`integrity`, `crc`) run at fixed points: a free block
//! is vetted (checksum, free pattern) before it is reused; a block is
//! scrambled before it merges; merge partners are vetted before a free
//! changes anything; headers patch their own checksums (see `block`).
//!
//! Invariants, in addition to those of `block` and `index`:
//! - chunks are disjoint, in the chunk table in address order, and at most
//!   `MAX_CHUNK_SIZE` bytes; `lo..hi` covers the control structure and all
//!   chunks;
//! - a `Block` handle that the region code holds lies on a granule inside
//!   one of its chunks (it came from [`Region::chunk_of`]); a block's links,
//!   owner word and size are trusted only once `nav` proved them;
//! - no two adjacent blocks are free (free merges with both neighbours), and
//!   a sentinel never merges, so nothing merges across chunks;
//! - counters: `total == used + free + metadata` bytes, where metadata is the
//!   control structure and the sentinels.

mod chunks;
mod cutoff;
mod nav;
mod place;
mod release;
mod repair;
mod slabs;

use core::mem::size_of;
use core::ptr::NonNull;

use crate::block::{Block, BlockHeader, RelLink, State, GRANULE, MAX_CHUNK_SIZE, MIN_BLOCK};
use crate::clist::{insert_after, make_ring, Link};

use crate::index::FreeIndex;
use crate::integrity;
use crate::quick::{QuickLists, DEFAULT_QUICK_DEPTH};
#[cfg(feature = "trace")]
use crate::trace::TraceSink;
pub(crate) use chunks::Chunk;
use chunks::ChunkTable;
pub use chunks::MAX_CHUNKS;
use cutoff::CutOff;
pub(crate) use release::Proven;
pub(crate) use slabs::Object;
use slabs::SlabLists;

/// Bytes of a chunk's sentinel: a header, padded to a minimal block (when
/// two chunks join, the lower sentinel becomes a free block).
pub const SENTINEL_SIZE: usize = if size_of::<BlockHeader>() > MIN_BLOCK {
    size_of::<BlockHeader>()
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
    /// Bytes of quarantined blocks (damage taken out of use).
    pub quarantined_bytes: usize,
    /// Quarantined blocks.
    pub quarantined_blocks: usize,
    /// Blocks in state `Slab` (counted in `used_*` too).
    pub slabs: usize,
    /// Bytes of those blocks, headers included.
    pub slab_bytes: usize,
    /// Slab objects handed out.
    pub slab_objects: usize,
    /// Their bytes (class sizes).
    pub slab_object_bytes: usize,
    /// Slabs with no object handed out (all on their lists).
    pub empty_slabs: usize,
}

impl Counters {
    /// Bytes of free blocks, headers included.
    pub(crate) fn free_bytes(&self) -> usize {
        self.total_bytes - self.used_bytes - self.metadata_bytes - self.quarantined_bytes
    }
}

/// The control structure of a region, stored at the start of its memory.
#[repr(C, align(16))]
pub(crate) struct Region {
    index: FreeIndex,
    chunks: ChunkTable,
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
    /// Slabs with free objects, per class (see `slabs`).
    slabs: SlabLists,
    /// Ranges a repair quarantined (see `cutoff`).
    cut_off: CutOff,
    /// Bytes of free pattern verified at each end of a reused free block.
    #[cfg(feature = "scramble")]
    pub(crate) scramble_depth: usize,
    /// Where split and merge events go.
    #[cfg(feature = "trace")]
    pub(crate) sink: Option<TraceSink>,
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
                chunks: ChunkTable::new(),
                lo: addr,
                hi: addr + REGION_SIZE,
                priority,
                c: Counters {
                    total_bytes: REGION_SIZE,
                    metadata_bytes: REGION_SIZE,
                    ..Counters::default()
                },
                quick: QuickLists::new(DEFAULT_QUICK_DEPTH),
                slabs: SlabLists::new(),
                cut_off: CutOff::new(),
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
        self.chunks.len()
    }

    /// The region's chunks, in address order.
    pub(crate) fn chunks(&self) -> &[Chunk] {
        self.chunks.as_slice()
    }

    /// Whether `pieces` more chunks fit in the chunk table.
    pub(crate) fn has_room_for(&self, pieces: usize) -> bool {
        self.chunks.len() + pieces <= MAX_CHUNKS
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
    /// As for [`Region::add_range`], with `MIN_CHUNK <= len <= MAX_CHUNK_SIZE`,
    /// and the chunk table has room (`has_room_for`).
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
        let added = self.chunks.insert(Chunk::new(start, sentinel.addr()));
        assert!(added, "the caller checked the chunk table's room");
        let begin = start.as_ptr().addr();
        self.lo = self.lo.min(begin);
        self.hi = self.hi.max(begin + len);
        self.c.total_bytes += len;
        self.c.metadata_bytes += SENTINEL_SIZE;
        // SAFETY: `first` is a fresh free block on no list, all ours.
        unsafe { integrity::on_new_free(first) };
        // SAFETY: as above.
        unsafe { self.index.insert(first, first.size()) };
        self.c.free_blocks += 1;
        self.join_neighbours(begin);
    }

    /// Joins the chunk that starts at `first` with a chunk that ends where
    /// it begins, and with one that begins where it ends (when the joined
    /// chunk stays within `MAX_CHUNK_SIZE`).
    fn join_neighbours(&mut self, first: usize) {
        let Some(mut at) = self.chunks.position(first) else {
            return;
        };
        if at > 0 {
            let (lower, upper) = (self.chunks()[at - 1], self.chunks()[at]);
            if lower.end() == upper.first() && upper.end() - lower.first() <= MAX_CHUNK_SIZE {
                // SAFETY: two chunks of this region, the lower one ending
                // where the upper one begins.
                unsafe { self.join(at - 1) };
                at -= 1;
            }
        }
        if at + 1 < self.chunk_count() {
            let (lower, upper) = (self.chunks()[at], self.chunks()[at + 1]);
            if lower.end() == upper.first() && upper.end() - lower.first() <= MAX_CHUNK_SIZE {
                // SAFETY: as above.
                unsafe { self.join(at) };
            }
        }
    }

    /// Merges the touching chunks at `lower` and `lower + 1` of the table:
    /// the lower one's sentinel becomes a free block between them and the
    /// upper sentinel closes the joined chunk.
    ///
    /// # Safety
    /// The lower chunk ends where the upper one's first block begins.
    unsafe fn join(&mut self, lower: usize) {
        let (low, up) = (self.chunks()[lower], self.chunks()[lower + 1]);
        let old = Self::block_in_or_sentinel(&low, low.sentinel());
        let low_first = Self::block_in(&low, low.first());
        let up_first = Self::block_in(&up, up.first());
        let up_sentinel = Self::block_in_or_sentinel(&up, up.sentinel());
        let last = Self::last_before(&low, old);
        // SAFETY: all four headers sit where the chunk table says; the
        // joined chunk is at most MAX_CHUNK_SIZE, so offsets fit. The old
        // sentinel is rewritten whole, whatever a program did to it.
        let gap = unsafe {
            let gap = Block::write(old.as_bytes(), self.addr(), State::Used);
            RelLink::set_prev(gap.link(), last.link());
            RelLink::set_next(last.link(), gap.link());
            RelLink::set_next(gap.link(), up_first.link());
            RelLink::set_prev(up_first.link(), gap.link());
            RelLink::set_next(up_sentinel.link(), low_first.link());
            RelLink::set_prev(low_first.link(), up_sentinel.link());
            gap
        };
        self.chunks.join(lower);
        self.c.metadata_bytes -= SENTINEL_SIZE;
        // SAFETY: the old sentinel is now a block of SENTINEL_SIZE >=
        // MIN_BLOCK bytes inside the joined chunk, on no list; it merges
        // with its free neighbours.
        unsafe { integrity::on_free(gap) };
        // SAFETY: as above.
        if let Err(error) = unsafe { self.release_into_index(gap, SENTINEL_SIZE) } {
            // A damaged neighbour: the repair quarantines it and files the
            // old sentinel with the rest.
            gap.set_state(State::Free);
            self.repair(error.damaged_addr().unwrap_or(gap.addr()));
        }
    }

    /// The last block of `chunk`, whose sentinel is `sentinel`, as the
    /// sentinel's prev link says (the sentinel itself when that link is
    /// damaged, which a later walk then repairs).
    fn last_before(chunk: &Chunk, sentinel: Block) -> Block {
        Self::prev_in(chunk, sentinel)
            .filter(|last| Self::next_in(chunk, *last) == Some(sentinel))
            .unwrap_or(sentinel)
    }

    /// Takes a wholly free chunk out of the region and returns its memory
    /// (`start`, `len`), if there is one: a chunk whose only block is free
    /// and proven (`vet_free`), other than the one that holds the control
    /// structure. The caller flushed the quick lists.
    pub(crate) fn take_free_chunk(&mut self) -> Option<(NonNull<u8>, usize)> {
        let control_end = self.addr() + REGION_SIZE;
        let index = self.chunks().iter().position(|chunk| {
            let first = Self::block_in(chunk, chunk.first());
            chunk.first() != control_end
                && Self::next_in(chunk, first).is_some_and(|n| n.addr() == chunk.sentinel())
                && self.vet_free(first).is_ok()
        })?;
        let chunk = self.chunks()[index];
        let first = Self::block_in(&chunk, chunk.first());
        let size = chunk.sentinel() - chunk.first();
        // SAFETY: a proven free block on the index; the chunk is dropped
        // right after, so nothing links to it any more.
        unsafe { self.index.remove(first, size) };
        self.chunks.remove(index);
        self.c.free_blocks -= 1;
        self.c.total_bytes -= chunk.end() - chunk.first();
        self.c.metadata_bytes -= SENTINEL_SIZE;
        self.lo = self
            .chunks()
            .iter()
            .map(Chunk::first)
            .fold(self.addr(), usize::min);
        self.hi = self
            .chunks()
            .iter()
            .map(Chunk::end)
            .fold(control_end, usize::max);
        Some((first.as_bytes(), chunk.end() - chunk.first()))
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
            || self
                .chunks()
                .iter()
                .any(|c| start < c.end() && c.first() < end)
    }

    /// Whether `[start, end)` touches one of the region's chunks.
    pub(crate) fn touches_chunk(&self, start: usize, end: usize) -> bool {
        self.chunks()
            .iter()
            .any(|c| c.end() == start || c.first() == end)
    }

    // ---- introspection ----

    /// The largest free block's size in bytes (0 when none). A damaged
    /// list is read only as far as its links are proven.
    pub(crate) fn largest_free(&self) -> usize {
        self.index
            .last_nonempty()
            .map(|class| {
                self.free_list(class)
                    .map_while(Result::ok)
                    .map(|(_, size)| size)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Bytes of free pattern verified at each end of a free block.
    #[inline]
    pub(crate) fn scramble_depth(&self) -> usize {
        #[cfg(feature = "scramble")]
        return self.scramble_depth;
        #[cfg(not(feature = "scramble"))]
        return 0;
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

const _: () = assert!(SENTINEL_SIZE >= MIN_BLOCK);
const _: () = assert!(REGION_SIZE.is_multiple_of(GRANULE));

/// The figures the README gives for the plain build: the control structure
/// and the smallest region.
#[cfg(all(test, not(any(feature = "crc", feature = "guard"))))]
mod tests {
    use super::*;
    use crate::block::MIN_BLOCK;

    #[test]
    fn the_documented_sizes() {
        assert_eq!(REGION_SIZE, 6176);
        assert_eq!(REGION_SIZE + MIN_BLOCK + SENTINEL_SIZE, 6240);
    }
}
