//! The chunk table: where a region's chunks lie, sorted by address.
//!
//! A region's memory comes in chunks (the first one after its control
//! structure, more from `extend` and growth). Every address the heap reads
//! from memory a program can write is proven to lie inside one of them
//! before it is followed, so finding the chunk of an address is on every
//! free and every quick-list hit. The table sits in the region's control
//! structure (which no block overlaps) and answers with one comparison when
//! the region has one chunk. With more, a bucket index over the span of the
//! chunks (256 buckets) names the last chunk that starts in or before each
//! bucket, so a lookup checks that chunk and steps back over the chunks
//! that start inside the same bucket: one or two compares when the chunks
//! are spread out, whatever their number (a bucket crowded with chunks
//! costs a step per chunk in it).
//!
//! Invariants: `chunks[..len]` are sorted by address and disjoint; each
//! entry is a chunk of this region, `[first, sentinel + SENTINEL_SIZE)`,
//! tiled by blocks from `first` to the sentinel header at `sentinel`;
//! `start` carries the provenance of the memory the chunk was made from, so
//! a pointer re-derived from an address that was checked against the entry
//! ([`Chunk::at`]) may be dereferenced.

use core::ptr::NonNull;

use super::SENTINEL_SIZE;

/// Most chunks a region holds. Touching chunks join into one, so only
/// growth in scattered pieces comes near it.
pub const MAX_CHUNKS: usize = 64;

/// One chunk of a region.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    /// The first block's header, with the provenance of the chunk's memory.
    start: NonNull<u8>,
    /// The sentinel header that closes the chunk's block ring.
    sentinel: usize,
}

impl Chunk {
    /// A chunk whose blocks run from `start` to the sentinel at `sentinel`.
    pub(crate) fn new(start: NonNull<u8>, sentinel: usize) -> Chunk {
        debug_assert!(start.as_ptr().addr() < sentinel);
        Chunk { start, sentinel }
    }

    /// Address of the first block's header.
    #[inline]
    pub(crate) fn first(&self) -> usize {
        self.start.as_ptr().addr()
    }

    /// Address of the sentinel header.
    #[inline]
    pub(crate) fn sentinel(&self) -> usize {
        self.sentinel
    }

    /// One past the chunk's last byte.
    #[inline]
    pub(crate) fn end(&self) -> usize {
        self.sentinel + SENTINEL_SIZE
    }

    /// Whether a block header may start at `addr`: inside the blocks (the
    /// sentinel excluded) and on a granule.
    #[inline]
    pub(crate) fn holds_block(&self, addr: usize) -> bool {
        self.first() <= addr && addr < self.sentinel
    }

    /// A pointer to `addr`, which lies inside this chunk, with the chunk's
    /// provenance.
    #[inline]
    pub(crate) fn at(&self, addr: usize) -> NonNull<u8> {
        debug_assert!(self.first() <= addr && addr < self.end());
        let ptr = self.start.as_ptr().with_addr(addr);
        // SAFETY: `addr` lies inside the chunk, above its non-null start.
        unsafe { NonNull::new_unchecked(ptr) }
    }
}

/// Buckets of the index over the chunks' span.
const BUCKETS: usize = 256;

/// The sorted chunk table of a region.
pub(crate) struct ChunkTable {
    len: usize,
    chunks: [Chunk; MAX_CHUNKS],
    /// Start of the first chunk: bucket 0 starts here.
    base: usize,
    /// Bucket width, as a shift: bucket `b` covers
    /// `base + (b << shift) .. base + ((b + 1) << shift)`.
    shift: u32,
    /// For each bucket, one more than the index of the last chunk whose
    /// first block lies at or before the bucket's end (0: none).
    top: [u8; BUCKETS],
}

impl ChunkTable {
    /// An empty table.
    pub(crate) const fn new() -> ChunkTable {
        ChunkTable {
            len: 0,
            chunks: [Chunk {
                start: NonNull::dangling(),
                sentinel: 0,
            }; MAX_CHUNKS],
            base: 0,
            shift: 0,
            top: [0; BUCKETS],
        }
    }

    /// Chunks in the table.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is full.
    pub(crate) fn is_full(&self) -> bool {
        self.len == MAX_CHUNKS
    }

    /// The chunks in address order.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[Chunk] {
        &self.chunks[..self.len]
    }

    /// The chunk whose blocks include a header at `addr` (the sentinel
    /// excluded): one comparison with one chunk, a bucket of the index
    /// otherwise.
    #[inline]
    pub(crate) fn of_block(&self, addr: usize) -> Option<&Chunk> {
        let chunk = if self.len == 1 {
            &self.chunks[0]
        } else {
            self.search(addr)?
        };
        chunk.holds_block(addr).then_some(chunk)
    }

    /// The last chunk that starts at or before `addr`, through the bucket
    /// index.
    #[inline]
    fn search(&self, addr: usize) -> Option<&Chunk> {
        let bucket = addr.checked_sub(self.base)? >> self.shift;
        let top = self.top.get(bucket).map_or(self.len, |&t| usize::from(t));
        // `top <= len <= MAX_CHUNKS`: the chunks below it are in the table.
        let below = &self.chunks[..top.min(self.len)];
        below.iter().rev().find(|c| c.first() <= addr)
    }

    /// Recomputes the bucket index after the table changed.
    fn reindex(&mut self) {
        let Some(first) = self.as_slice().first() else {
            return;
        };
        self.base = first.first();
        let span = self.chunks[self.len - 1].end() - self.base;
        self.shift = usize::BITS - (span / BUCKETS).leading_zeros();
        for bucket in 0..BUCKETS {
            let end = self
                .base
                .saturating_add(((bucket + 1) << self.shift).saturating_sub(1));
            let above = self.as_slice().partition_point(|c| c.first() <= end);
            self.top[bucket] = above as u8;
        }
    }

    /// Inserts `chunk` in address order; `false` when the table is full.
    /// The caller keeps chunks disjoint.
    pub(crate) fn insert(&mut self, chunk: Chunk) -> bool {
        if self.is_full() {
            return false;
        }
        let at = self
            .as_slice()
            .partition_point(|c| c.first() < chunk.first());
        self.chunks.copy_within(at..self.len, at + 1);
        self.chunks[at] = chunk;
        self.len += 1;
        self.reindex();
        true
    }

    /// Removes the chunk at `index` (the caller gave its memory back).
    pub(crate) fn remove(&mut self, index: usize) {
        self.chunks.copy_within(index + 1..self.len, index);
        self.len -= 1;
        self.reindex();
    }

    /// Position of the chunk that starts at `first`.
    pub(crate) fn position(&self, first: usize) -> Option<usize> {
        self.as_slice().iter().position(|c| c.first() == first)
    }

    /// Replaces the chunks at `lower` and `lower + 1` by one that runs from
    /// the lower one's start to the upper one's sentinel (the caller joined
    /// their block rings).
    pub(crate) fn join(&mut self, lower: usize) {
        let upper = self.chunks[lower + 1];
        self.chunks[lower].sentinel = upper.sentinel;
        self.chunks.copy_within(lower + 2..self.len, lower + 1);
        self.len -= 1;
        self.reindex();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(first: usize, sentinel: usize) -> Chunk {
        Chunk::new(
            NonNull::new(core::ptr::without_provenance_mut(first)).unwrap(),
            sentinel,
        )
    }

    #[test]
    fn lookups_find_the_chunk_or_nothing() {
        let mut table = ChunkTable::new();
        assert!(table.of_block(0x1000).is_none());
        assert!(table.insert(chunk(0x5000, 0x5800)));
        assert!(table.insert(chunk(0x1000, 0x1800)));
        assert!(table.insert(chunk(0x3000, 0x3800)));
        let firsts: std::vec::Vec<usize> = table.as_slice().iter().map(Chunk::first).collect();
        assert_eq!(firsts, [0x1000, 0x3000, 0x5000]);
        for (addr, want) in [
            (0x0ff0, None),
            (0x1000, Some(0x1000)),
            (0x17f0, Some(0x1000)),
            (0x1800, None), // the sentinel is no block
            (0x2000, None), // the gap between two chunks
            (0x3010, Some(0x3000)),
            (0x57f0, Some(0x5000)),
            (0x6000, None),
        ] {
            assert_eq!(table.of_block(addr).map(Chunk::first), want, "{addr:#x}");
        }
        table.join(0);
        assert_eq!(table.len(), 2);
        assert_eq!(table.of_block(0x2000).map(Chunk::first), Some(0x1000));
        assert_eq!(table.of_block(0x3800).map(Chunk::first), None);
    }

    #[test]
    fn the_bucket_index_agrees_with_a_linear_search() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        // Miri runs this some hundred times slower: fewer layouts and probes.
        let (layouts, probes) = if cfg!(miri) { (6, 50) } else { (40, 2000) };
        for layout in 0..layouts {
            let mut table = ChunkTable::new();
            let mut at = 0x10_0000 + next(1 << 20) * 16;
            for _ in 0..1 + layout % MAX_CHUNKS {
                // Chunks of very different sizes and gaps, some crowded.
                let len = SENTINEL_SIZE + 64 + next(1 << (4 + layout % 20)) * 16;
                assert!(table.insert(chunk(at, at + len - SENTINEL_SIZE)));
                at += len + next(1 << (layout % 24)) * 16;
            }
            for _ in 0..probes {
                let probe = 0x10_0000 + next(at - 0x10_0000 + 4096);
                let linear = table
                    .as_slice()
                    .iter()
                    .find(|c| c.holds_block(probe))
                    .map(Chunk::first);
                assert_eq!(
                    table.of_block(probe).map(Chunk::first),
                    linear,
                    "{probe:#x}"
                );
            }
        }
    }

    #[test]
    fn a_full_table_refuses_more() {
        let mut table = ChunkTable::new();
        for i in 0..MAX_CHUNKS {
            assert!(table.insert(chunk(0x1000 * (i + 1), 0x1000 * (i + 1) + 0x800)));
        }
        assert!(table.is_full());
        assert!(!table.insert(chunk(0x100_0000, 0x100_0800)));
        assert_eq!(table.position(0x3000), Some(2));
    }
}
