//! Cut-off ranges: memory a repair quarantined, remembered so that nothing
//! inside it is ever taken for a block again.
//!
//! [`Region::repair`](super::Region::repair) replaces a damaged stretch of
//! a ring with one quarantined block. The headers that lay inside it are cut
//! off from the ring but still in memory; the repair retags those it can
//! recognise, and leaves alone words that may be a program's live data. A
//! cut-off header that was not retagged (its owner word was damaged at the
//! time) can look valid again later (another write restores the word), and
//! its neighbours, cut off with it, still link back to it: the local proofs
//! of [`super::nav`] accept it. So the region remembers every quarantined
//! range, and a block is proven to be in the ring before it is freed,
//! resized or handed out: the range table says no range covers it, or, once
//! the table is full, a walk of the chunk's ring reaches it.
//!
//! Invariants: ranges are only added (quarantined blocks never merge, move
//! or leave, and a chunk that holds one is never trimmed); every header of
//! a chunk's ring lies outside every range but for the quarantined blocks
//! themselves, which start their range.

use super::chunks::Chunk;
use super::Region;

/// Ranges remembered before the region falls back to walking rings (a
/// repair quarantines at most 16 ranges per chunk).
const RANGES: usize = 16;

/// The quarantined ranges of one region.
pub(crate) struct CutOff {
    ranges: [(usize, usize); RANGES],
    len: usize,
    /// A range was not recorded: only a ring walk proves membership.
    overflowed: bool,
}

impl CutOff {
    pub(crate) const fn new() -> Self {
        CutOff {
            ranges: [(0, 0); RANGES],
            len: 0,
            overflowed: false,
        }
    }

    /// Remembers `[from, to)`.
    pub(crate) fn record(&mut self, from: usize, to: usize) {
        match self.ranges.get_mut(self.len) {
            Some(slot) => {
                *slot = (from, to);
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }

    fn covers(&self, addr: usize) -> bool {
        self.ranges[..self.len]
            .iter()
            .any(|&(from, to)| from <= addr && addr < to)
    }

    /// Whether `addr` lies strictly inside a range (past the quarantined
    /// block's own header).
    fn holds_inside(&self, addr: usize) -> bool {
        self.ranges[..self.len]
            .iter()
            .any(|&(from, to)| from < addr && addr < to)
    }
}

impl Region {
    /// Whether the header at `header` (a granule of `chunk`) lies in memory
    /// a repair cut off from the ring: a quarantined block, or a header
    /// inside one. One compare while the region has never been repaired.
    #[inline]
    pub(crate) fn is_cut_off(&self, chunk: &Chunk, header: usize) -> bool {
        if !self.was_repaired() {
            return false;
        }
        self.cut_off.covers(header)
            || (self.cut_off.overflowed && !Self::ring_reaches(chunk, header))
    }

    /// Whether a repair ever quarantined a range of this region (until
    /// then, nothing is cut off).
    #[inline]
    pub(crate) fn was_repaired(&self) -> bool {
        self.cut_off.len != 0
    }

    /// Whether `header` lies strictly inside a recorded range: a header
    /// there was cut off from the ring, and a repair's walks must not take
    /// it back in, whatever its links say (it ends the walk as damage).
    #[inline]
    pub(crate) fn is_inside_cut_off(&self, header: usize) -> bool {
        self.was_repaired() && self.cut_off.holds_inside(header)
    }

    /// Whether walking `chunk`'s ring forward from its first block, over
    /// links whose target links back, reaches `header` (at most one step
    /// per granule of the chunk). A damaged link on the way says no: the
    /// caller refuses the block, and the refusal leads to a repair.
    #[cold]
    fn ring_reaches(chunk: &Chunk, header: usize) -> bool {
        let mut at = Self::block_in(chunk, chunk.first());
        while at.addr() < header {
            match Self::next_in(chunk, at) {
                Some(next) if Self::prev_in(chunk, next) == Some(at) => at = next,
                _ => return false,
            }
        }
        at.addr() == header
    }
}
