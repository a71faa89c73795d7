//! Tracing (feature `trace`): every heap operation reported to a sink.
//!
//! A kernel sets a [`TraceSink`] with `Heap::set_trace_sink` and prints
//! each [`TraceEvent`] to its console, to watch memory actions live. The
//! sink is a plain function: it runs inside the heap operation (under the
//! lock of a `LockedHeap`), so it must not allocate from the same heap.
//! Without the feature, neither this module nor any call to a sink is
//! compiled: tracing costs nothing.

use crate::error::HeapError;

/// One heap operation. Addresses are data pointers for allocations and
/// header addresses for blocks (`block`, `tail`, `absorbed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceEvent {
    /// A region was added.
    RegionAdded {
        /// Address of the region's control structure (its `RegionId`).
        region: usize,
        /// Start of the range given.
        start: usize,
        /// Size of the range given.
        size: usize,
        /// The region's priority.
        priority: u8,
    },
    /// A region was extended with a new range (joined to a touching chunk
    /// when there is one).
    Extended {
        /// The region.
        region: usize,
        /// Start of the range.
        start: usize,
        /// Size of the range.
        size: usize,
    },
    /// A block was allocated.
    Allocated {
        /// The data pointer handed out.
        addr: usize,
        /// Requested bytes.
        size: usize,
        /// Requested alignment.
        align: usize,
        /// Bytes of the block, header included.
        block: usize,
    },
    /// A fixed range was reserved.
    Reserved {
        /// The data pointer (the range's start).
        addr: usize,
        /// Requested bytes.
        size: usize,
    },
    /// A block was freed.
    Freed {
        /// The data pointer.
        addr: usize,
        /// Bytes of the block, header included.
        block: usize,
    },
    /// A block was resized, in place or by moving.
    Reallocated {
        /// The old data pointer.
        old: usize,
        /// The new data pointer (equal to `old` in place).
        new: usize,
        /// The new requested size.
        size: usize,
        /// Whether the block stayed where it was.
        in_place: bool,
    },
    /// A block was split in two: a free tail split off a block being
    /// allocated or shrunk, or a block being allocated carved from the end
    /// of a free block (an aligned request; `block` stays free).
    Split {
        /// Header of the block that was split.
        block: usize,
        /// Header of the part split off (free, or the block allocated).
        tail: usize,
        /// Bytes of the part split off.
        tail_size: usize,
    },
    /// Two blocks were merged into one free block.
    Merged {
        /// Header of the surviving block.
        block: usize,
        /// Header of the absorbed block.
        absorbed: usize,
        /// Bytes of the merged block so far.
        size: usize,
    },
    /// A call was refused as a misuse or because of damage.
    Misuse {
        /// The error returned.
        error: HeapError,
    },
}

/// The function that receives trace events.
pub type TraceSink = fn(&TraceEvent);
