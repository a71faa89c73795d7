//! Physical address ranges and a fixed-capacity set of them, usable before
//! the heap exists.

use core::fmt;

/// A half-open address range `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Range {
    /// `start..end` (empty when `end <= start`).
    pub const fn new(start: usize, end: usize) -> Range {
        Range { start, end }
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The largest range inside `self` whose ends are multiples of `align`
    /// (a power of two).
    pub fn align_inward(&self, align: usize) -> Range {
        let start = self
            .start
            .checked_next_multiple_of(align)
            .unwrap_or(usize::MAX);
        Range::new(start, self.end & !(align - 1))
    }

    /// The smallest range containing `self` whose ends are multiples of
    /// `align` (a power of two), saturating at the top of the address space.
    pub fn align_outward(&self, align: usize) -> Range {
        let end = self
            .end
            .checked_next_multiple_of(align)
            .unwrap_or(usize::MAX & !(align - 1));
        Range::new(self.start & !(align - 1), end)
    }

    /// The bytes of `self` below `limit`.
    pub fn below(&self, limit: usize) -> Range {
        Range::new(self.start, self.end.min(limit))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#012x}..{:#012x}", self.start, self.end)
    }
}

/// The set cannot hold one more range.
#[derive(Clone, Copy, Debug)]
pub struct Full;

/// Up to `N` disjoint, non-empty ranges sorted by address.
#[derive(Clone, Debug)]
pub struct RangeSet<const N: usize> {
    ranges: [Range; N],
    len: usize,
}

impl<const N: usize> RangeSet<N> {
    /// The empty set.
    pub const fn new() -> Self {
        RangeSet {
            ranges: [Range::new(0, 0); N],
            len: 0,
        }
    }

    /// The ranges, sorted by address.
    pub fn as_slice(&self) -> &[Range] {
        &self.ranges[..self.len]
    }

    /// Total bytes.
    pub fn total(&self) -> usize {
        self.as_slice().iter().map(Range::len).sum()
    }

    /// Adds `range`, merging it with the ranges it overlaps or touches.
    pub fn insert(&mut self, range: Range) -> Result<(), Full> {
        if range.is_empty() {
            return Ok(());
        }
        let mut merged = range;
        let mut kept = Self::new();
        for r in self.as_slice() {
            if r.end < merged.start || merged.end < r.start {
                kept.push(*r)?;
            } else {
                merged = Range::new(merged.start.min(r.start), merged.end.max(r.end));
            }
        }
        kept.push(merged)?;
        kept.ranges[..kept.len].sort_unstable_by_key(|r| r.start);
        *self = kept;
        Ok(())
    }

    /// Removes every byte of `hole`, splitting the range that contains it.
    pub fn remove(&mut self, hole: Range) -> Result<(), Full> {
        if hole.is_empty() {
            return Ok(());
        }
        let mut kept = Self::new();
        for r in self.as_slice() {
            kept.push(Range::new(r.start, r.end.min(hole.start)))?;
            kept.push(Range::new(r.start.max(hole.end), r.end))?;
        }
        *self = kept;
        Ok(())
    }

    /// Takes `len` bytes from the start of the lowest range.
    pub fn take_front(&mut self, len: usize) -> Option<Range> {
        let first = self.ranges[..self.len].first_mut()?;
        if first.len() < len {
            return None;
        }
        let taken = Range::new(first.start, first.start + len);
        first.start += len;
        if first.is_empty() {
            self.ranges.copy_within(1..self.len, 0);
            self.len -= 1;
        }
        Some(taken)
    }

    fn push(&mut self, range: Range) -> Result<(), Full> {
        if range.is_empty() {
            return Ok(());
        }
        let slot = self.ranges.get_mut(self.len).ok_or(Full)?;
        *slot = range;
        self.len += 1;
        Ok(())
    }
}
