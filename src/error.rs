//! Errors: what went wrong, and where.

use core::fmt;

/// What a consistency check found wrong with a block or a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// A block-list link does not point back (`next.prev != self` or
    /// `prev.next != self`), or points outside its chunk.
    BlockLinks,
    /// The header's owner word does not name the region that holds it.
    Owner,
    /// The header's state bits are impossible at this place.
    State,
    /// A block is smaller than the minimum, misaligned, or runs past its chunk.
    Size,
    /// Blocks are not in increasing address order.
    AddressOrder,
    /// Two free blocks are adjacent (they should have been merged).
    AdjacentFree,
    /// A free-list link is broken, a free block is on the wrong list or on
    /// none, or a list holds a block that is not free.
    FreeList,
    /// A bitmap bit disagrees with its free list.
    Bitmap,
    /// A quick list is broken: an entry that is not a cached block of its
    /// list's size, a link that leaves the region's chunks, or a length
    /// that disagrees with the list.
    QuickList,
    /// A slab's header is damaged: a seal word, its class or its counts
    /// do not hold (an overrun into the slab from the block before it, or
    /// an underrun of its first object).
    SlabHeader,
    /// A list of slabs with free objects is broken: a link that does not
    /// lead to a slab of the same class that links back.
    SlabList,
    /// The block was found damaged earlier and taken out of use
    /// (quarantined): it is never handed out, merged or freed again.
    Quarantined,
    /// The chunk table of a region is out of order, or a chunk's sentinel
    /// is not where the table says.
    ChunkList,
    /// A counter disagrees with what the walk found.
    Stats,
    /// The header's CRC-32C does not match its fields (feature `crc`).
    Checksum,
    /// A guard byte before or after the data was overwritten (feature
    /// `guard`): a buffer overrun or underrun.
    Guard {
        /// Address of the first damaged guard byte.
        at: usize,
    },
    /// A free block's scramble pattern was overwritten (feature
    /// `scramble`): a write after free.
    Poison {
        /// Address of the first damaged byte.
        at: usize,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match *self {
            Corruption::BlockLinks => "block list links broken",
            Corruption::Owner => "owner word does not name this region",
            Corruption::State => "impossible block state",
            Corruption::Size => "bad block size",
            Corruption::AddressOrder => "blocks out of address order",
            Corruption::AdjacentFree => "two adjacent free blocks",
            Corruption::FreeList => "free list broken",
            Corruption::Bitmap => "free-list bitmap disagrees with its list",
            Corruption::QuickList => "quick list broken",
            Corruption::SlabHeader => "slab header damaged",
            Corruption::SlabList => "slab list broken",
            Corruption::Quarantined => "block quarantined after earlier damage",
            Corruption::ChunkList => "chunk list broken",
            Corruption::Stats => "statistics disagree with the heap",
            Corruption::Checksum => "header checksum mismatch",
            Corruption::Guard { at } => return write!(f, "guard bytes overwritten at {at:#x}"),
            Corruption::Poison { at } => {
                return write!(f, "free memory written after free at {at:#x}")
            }
        };
        f.write_str(what)
    }
}

/// Everything a heap operation can refuse, with the address or size at fault.
///
/// A refused operation leaves the heap and every live block unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeapError {
    /// No region has a free block for this request.
    OutOfMemory {
        /// Requested bytes.
        size: usize,
        /// Requested alignment.
        align: usize,
    },
    /// The size cannot be served by any heap (larger than a chunk, or an
    /// arithmetic overflow such as `nmemb * size`).
    SizeOverflow {
        /// Requested bytes.
        size: usize,
    },
    /// The alignment is not a power of two or is larger than a chunk.
    BadAlignment {
        /// Requested alignment.
        align: usize,
    },
    /// The pointer lies outside every region of this heap.
    NotFromHeap {
        /// The pointer.
        addr: usize,
    },
    /// The pointer lies in this heap but is not the start of a live block
    /// (an interior pointer, a sentinel, or never handed out).
    NotBlockStart {
        /// The pointer.
        addr: usize,
    },
    /// The block was already freed (possibly merged into a neighbour since).
    DoubleFree {
        /// The pointer.
        addr: usize,
    },
    /// The layout passed to `deallocate` or `realloc` cannot describe the
    /// block (larger than its usable size, or a stricter alignment).
    LayoutMismatch {
        /// The pointer.
        addr: usize,
        /// The size the caller claimed.
        size: usize,
        /// The alignment the caller claimed.
        align: usize,
    },
    /// A block header or list is damaged.
    Corrupted {
        /// Address of the first damaged block header (or list node).
        addr: usize,
        /// What is wrong there.
        what: Corruption,
    },
    /// A new region or chunk is too small to hold its metadata and a block.
    RegionTooSmall {
        /// Start of the range.
        start: usize,
        /// Size of the range.
        size: usize,
    },
    /// A new region or chunk overlaps memory the heap already manages.
    RegionOverlap {
        /// Start of the range.
        start: usize,
        /// Size of the range.
        size: usize,
    },
    /// The heap already holds [`crate::MAX_REGIONS`] regions.
    TooManyRegions,
    /// The region already has `MAX_CHUNKS` chunks that do not touch.
    TooManyChunks,
    /// The region handle does not name a region of this heap.
    UnknownRegion,
    /// `reserve` found no free block that contains the whole range.
    RangeUnavailable {
        /// Start of the range.
        start: usize,
        /// Size of the range.
        size: usize,
    },
}

impl HeapError {
    /// The address of the damage a `Corrupted` error names.
    pub(crate) fn damaged_addr(&self) -> Option<usize> {
        match *self {
            HeapError::Corrupted { addr, .. } => Some(addr),
            _ => None,
        }
    }

    /// Whether the error is the caller's misuse of a pointer (bad pointer,
    /// double free, wrong layout) or damage found in the heap, as opposed
    /// to a request the heap cannot serve.
    pub fn is_misuse(&self) -> bool {
        matches!(
            self,
            HeapError::NotFromHeap { .. }
                | HeapError::NotBlockStart { .. }
                | HeapError::DoubleFree { .. }
                | HeapError::LayoutMismatch { .. }
                | HeapError::Corrupted { .. }
        )
    }
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HeapError::OutOfMemory { size, align } => {
                write!(f, "out of memory: {size} bytes aligned to {align}")
            }
            HeapError::SizeOverflow { size } => write!(f, "size overflow: {size} bytes"),
            HeapError::BadAlignment { align } => write!(f, "unsupported alignment {align}"),
            HeapError::NotFromHeap { addr } => {
                write!(f, "pointer {addr:#x} does not belong to this heap")
            }
            HeapError::NotBlockStart { addr } => {
                write!(f, "pointer {addr:#x} is not the start of a live block")
            }
            HeapError::DoubleFree { addr } => write!(f, "double free of {addr:#x}"),
            HeapError::LayoutMismatch { addr, size, align } => write!(
                f,
                "layout (size {size}, align {align}) does not match the block at {addr:#x}"
            ),
            HeapError::Corrupted { addr, what } => {
                write!(f, "heap corrupted at {addr:#x}: {what}")
            }
            HeapError::RegionTooSmall { start, size } => {
                write!(f, "range {start:#x}+{size:#x} is too small for a region")
            }
            HeapError::RegionOverlap { start, size } => {
                write!(f, "range {start:#x}+{size:#x} overlaps the heap")
            }
            HeapError::TooManyRegions => write!(f, "too many regions"),
            HeapError::TooManyChunks => write!(f, "too many chunks in one region"),
            HeapError::UnknownRegion => write!(f, "unknown region"),
            HeapError::RangeUnavailable { start, size } => {
                write!(f, "range {start:#x}+{size:#x} is not free")
            }
        }
    }
}

impl core::error::Error for HeapError {}
