//! The seed's block header, `struct block_meta`, and the [`Block`] handle.
//!
//! Every block, on the heap or mapped, is this header followed by its
//! payload; the pointer handed to the user is the payload, 32 bytes after
//! the header on 64-bit targets. The seed's tests read the header right
//! before a payload (`size` and `status`), so the layout is the C one:
//!
//! ```text
//! offset 0   size_t size            payload bytes (a multiple of 8)
//! offset 8   int status             STATUS_FREE 0, STATUS_ALLOC 1, STATUS_MAPPED 2
//! offset 16  struct block_meta *prev
//! offset 24  struct block_meta *next
//! offset 32  payload...
//! ```
//!
//! Invariants:
//! - `size` counts payload bytes only; a heap block ends at
//!   `header + META_SIZE + size`, where the next heap block's header starts;
//! - a header is written only through [`Block::write`], which first tells
//!   valgrind the bytes are the allocator's (they may lie in a payload that
//!   was freed before, see `crate::valgrind`).

use core::ptr::NonNull;

use crate::valgrind;

/// The seed's `struct block_meta`, field for field.
#[repr(C)]
#[derive(Debug)]
pub struct BlockMeta {
    /// Payload size in bytes.
    pub size: usize,
    /// [`STATUS_FREE`], [`STATUS_ALLOC`] or [`STATUS_MAPPED`].
    pub status: i32,
    /// Previous heap block in address order; NULL for the first one and
    /// for mapped blocks.
    pub prev: *mut BlockMeta,
    /// Next heap block in address order; NULL for the last one and for
    /// mapped blocks.
    pub next: *mut BlockMeta,
}

/// A heap block that may be reused.
pub const STATUS_FREE: i32 = 0;
/// A heap block handed out to the user.
pub const STATUS_ALLOC: i32 = 1;
/// A block in its own mapping, handed out to the user.
pub const STATUS_MAPPED: i32 = 2;

/// Size of the header: the distance from a header to its payload.
pub const META_SIZE: usize = core::mem::size_of::<BlockMeta>();

#[cfg(target_pointer_width = "64")]
const _: () = assert!(META_SIZE == 32, "the seed's traces expect a 32-byte header");

impl BlockMeta {
    /// A header with no links (also the empty list head, see `crate::list`).
    pub const EMPTY: BlockMeta = BlockMeta {
        size: 0,
        status: STATUS_FREE,
        prev: core::ptr::null_mut(),
        next: core::ptr::null_mut(),
    };
}

/// A pointer to a block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(NonNull<BlockMeta>);

impl Block {
    /// Writes a fresh unlinked header at `at` and returns its block.
    ///
    /// # Safety
    /// `at` is 8-aligned and `META_SIZE` bytes there are memory of this
    /// allocator that no live payload overlaps.
    pub unsafe fn write(at: NonNull<u8>, size: usize, status: i32) -> Block {
        valgrind::make_mem_undefined(at.as_ptr(), META_SIZE);
        let header = at.cast::<BlockMeta>();
        // SAFETY: the caller guarantees the bytes are ours, writable and
        // aligned for a header.
        unsafe {
            header.as_ptr().write(BlockMeta {
                size,
                status,
                ..BlockMeta::EMPTY
            })
        };
        Block(header)
    }

    /// The block whose payload starts at `payload`.
    ///
    /// # Safety
    /// `payload` was returned by this allocator, so a header precedes it.
    pub unsafe fn from_payload(payload: NonNull<u8>) -> Block {
        // SAFETY: the header lies `META_SIZE` bytes before the payload
        // (caller), inside the same block.
        Block(unsafe { payload.sub(META_SIZE) }.cast())
    }

    /// The block of a header pointer.
    ///
    /// # Safety
    /// `header` points to a header written by [`Block::write`] that stays
    /// readable and writable while the returned handle is used.
    pub unsafe fn from_header(header: NonNull<BlockMeta>) -> Block {
        Block(header)
    }

    /// The header.
    pub fn header(self) -> NonNull<BlockMeta> {
        self.0
    }

    /// Address of the header.
    pub fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The payload, handed to the user.
    pub fn payload(self) -> NonNull<u8> {
        // SAFETY: every block has a header of `META_SIZE` bytes followed by
        // its payload, so the payload is inside (or one past) the block.
        unsafe { self.0.cast::<u8>().add(META_SIZE) }
    }

    /// First byte after the payload: the next heap block's header.
    pub fn end(self) -> usize {
        self.addr() + META_SIZE + self.size()
    }

    /// Payload size.
    pub fn size(self) -> usize {
        // SAFETY: a `Block` is only made from a written header, which stays
        // readable while the block exists.
        unsafe { (*self.0.as_ptr()).size }
    }

    /// Sets the payload size.
    pub fn set_size(self, size: usize) {
        // SAFETY: as in `size`; the allocator owns the header.
        unsafe { (*self.0.as_ptr()).size = size }
    }

    /// The status word.
    pub fn status(self) -> i32 {
        // SAFETY: as in `size`.
        unsafe { (*self.0.as_ptr()).status }
    }

    /// Sets the status word.
    pub fn set_status(self, status: i32) {
        // SAFETY: as in `set_size`.
        unsafe { (*self.0.as_ptr()).status = status }
    }
}
