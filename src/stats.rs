//! Heap statistics: counters kept on every operation and what they add up to.
//!
//! The byte counters balance exactly: `total_bytes == in_use_bytes +
//! free_bytes + metadata_bytes`. `check()` recomputes them by walking every
//! block and fails with [`crate::Corruption::Stats`] if they drift.

use core::fmt;

/// A snapshot of a heap's (or one region's) state and activity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Regions in the heap.
    pub regions: usize,
    /// Chunks across all regions.
    pub chunks: usize,
    /// Bytes handed to the heap (all regions, all chunks).
    pub total_bytes: usize,
    /// Bytes of allocated blocks, headers included.
    pub in_use_bytes: usize,
    /// Bytes usable by the owners of allocated blocks.
    pub allocated_bytes: usize,
    /// Highest `in_use_bytes` seen.
    pub peak_in_use_bytes: usize,
    /// Bytes of free blocks, headers included (cached blocks included).
    pub free_bytes: usize,
    /// Bytes of the blocks on quick lists (part of `free_bytes`).
    pub cached_bytes: usize,
    /// Usable bytes of the largest free block.
    pub largest_free: usize,
    /// Region control structures and chunk sentinels.
    pub metadata_bytes: usize,
    /// Allocated blocks and slab objects (a slab itself is not counted:
    /// its objects are).
    pub used_blocks: usize,
    /// Free blocks (cached blocks included).
    pub free_blocks: usize,
    /// Blocks on quick lists (part of `free_blocks`).
    pub cached_blocks: usize,
    /// Bytes of blocks quarantined after damage: never handed out again
    /// (neither free nor in use).
    pub quarantined_bytes: usize,
    /// Blocks quarantined after damage.
    pub quarantined_blocks: usize,
    /// Slabs (blocks cut into equal objects; see [`crate::Heap::set_slabs`]).
    pub slabs: usize,
    /// Bytes of the slabs, headers included (part of `in_use_bytes`).
    pub slab_bytes: usize,
    /// Slab objects handed out (part of `used_blocks`).
    pub slab_objects: usize,
    /// Bytes of those objects, at their classes' sizes (part of
    /// `allocated_bytes`). `slab_bytes - slab_object_bytes` is what the
    /// slabs cost: their headers, free objects and slack.
    pub slab_object_bytes: usize,
    /// Successful allocations (including reserves and moving reallocations).
    pub allocations: u64,
    /// Successful frees.
    pub frees: u64,
    /// Successful reallocations.
    pub reallocations: u64,
    /// Reallocations served in place, without moving.
    pub in_place_reallocations: u64,
    /// Requests refused for lack of memory.
    pub failures: u64,
    /// Misuses detected (bad pointers, double frees, layout mismatches) and
    /// damage found by a call (a corrupted header, guard or free pattern).
    pub misuses: u64,
}

impl Stats {
    /// Adds `other` (another heap's snapshot) to these: every count and
    /// byte total is summed; `largest_free` is the larger of the two; the
    /// peak is the sum of the peaks, an upper bound of the combined heaps'
    /// peak (they need not have peaked at once).
    pub fn accumulate(&mut self, other: &Stats) {
        let Stats {
            regions,
            chunks,
            total_bytes,
            in_use_bytes,
            allocated_bytes,
            peak_in_use_bytes,
            free_bytes,
            cached_bytes,
            largest_free,
            metadata_bytes,
            used_blocks,
            free_blocks,
            cached_blocks,
            quarantined_bytes,
            quarantined_blocks,
            slabs,
            slab_bytes,
            slab_objects,
            slab_object_bytes,
            allocations,
            frees,
            reallocations,
            in_place_reallocations,
            failures,
            misuses,
        } = *other;
        self.regions += regions;
        self.chunks += chunks;
        self.total_bytes += total_bytes;
        self.in_use_bytes += in_use_bytes;
        self.allocated_bytes += allocated_bytes;
        self.peak_in_use_bytes += peak_in_use_bytes;
        self.free_bytes += free_bytes;
        self.cached_bytes += cached_bytes;
        self.largest_free = self.largest_free.max(largest_free);
        self.metadata_bytes += metadata_bytes;
        self.used_blocks += used_blocks;
        self.free_blocks += free_blocks;
        self.cached_blocks += cached_blocks;
        self.quarantined_bytes += quarantined_bytes;
        self.quarantined_blocks += quarantined_blocks;
        self.slabs += slabs;
        self.slab_bytes += slab_bytes;
        self.slab_objects += slab_objects;
        self.slab_object_bytes += slab_object_bytes;
        self.allocations += allocations;
        self.frees += frees;
        self.reallocations += reallocations;
        self.in_place_reallocations += in_place_reallocations;
        self.failures += failures;
        self.misuses += misuses;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, u64); 25] = [
            ("regions", self.regions as u64),
            ("chunks", self.chunks as u64),
            ("total bytes", self.total_bytes as u64),
            ("in use bytes", self.in_use_bytes as u64),
            ("allocated bytes", self.allocated_bytes as u64),
            ("peak in use bytes", self.peak_in_use_bytes as u64),
            ("free bytes", self.free_bytes as u64),
            ("cached bytes", self.cached_bytes as u64),
            ("largest free block", self.largest_free as u64),
            ("metadata bytes", self.metadata_bytes as u64),
            ("used blocks", self.used_blocks as u64),
            ("free blocks", self.free_blocks as u64),
            ("cached blocks", self.cached_blocks as u64),
            ("quarantined bytes", self.quarantined_bytes as u64),
            ("quarantined blocks", self.quarantined_blocks as u64),
            ("slabs", self.slabs as u64),
            ("slab bytes", self.slab_bytes as u64),
            ("slab objects", self.slab_objects as u64),
            ("slab object bytes", self.slab_object_bytes as u64),
            ("allocations", self.allocations),
            ("frees", self.frees),
            ("reallocations", self.reallocations),
            ("in place", self.in_place_reallocations),
            ("failures", self.failures),
            ("misuses", self.misuses),
        ];
        for (name, value) in rows {
            writeln!(f, "{name:>20} {value:>14}")?;
        }
        Ok(())
    }
}
