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
    /// Allocated blocks.
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

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, u64); 21] = [
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
