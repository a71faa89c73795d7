//! Blocks: a 16-byte header followed by data, chained in address order.
//!
//! A chunk of a region is carved into blocks that tile it exactly, followed by
//! a *sentinel* header that closes the chunk. Each header is:
//!
//! ```text
//! offset 0  RelLink { next: i32, prev: i32 }   block list (CLIST), in granules
//! offset 8  owner: usize                       region address | state (2 bits)
//! offset 16 data...                            (free blocks: a PtrLink, free list)
//! ```
//!
//! Invariants kept by the region code:
//! - headers sit on [`GRANULE`] (16-byte) boundaries, so data is 16-aligned;
//! - the block list of a chunk is a ring in address order: first block, ...,
//!   last block, sentinel, back to the first block; a block's size is the
//!   distance to the next header (MutekH stores no size either);
//! - every block is at least [`MIN_BLOCK`] bytes, so a free block can hold
//!   its free-list link in its data area;
//! - `owner` holds the address of the owning region with the state in its two
//!   low bits: an allocated block leads back to its region, so freeing needs
//!   no region argument; a header absorbed by a merge is marked
//!   [`State::Absorbed`], which is how a late double free is recognised.

use core::ptr::NonNull;

use crate::clist::{Link, PtrLink};

/// Allocation granule: every block size and header address is a multiple.
pub const GRANULE: usize = 16;

/// Size of a block header in bytes: the per-allocation overhead.
pub const HEADER_SIZE: usize = core::mem::size_of::<BlockHeader>();

/// Smallest block: a header plus room for a free-list link.
pub const MIN_BLOCK: usize =
    (HEADER_SIZE + core::mem::size_of::<PtrLink>()).next_multiple_of(GRANULE);

/// Largest chunk (and so block) a region manages in one piece; larger ranges
/// are split into several chunks. Bounded by the 32-bit granule offsets.
pub const MAX_CHUNK_SIZE: usize = if usize::BITS > 32 {
    1 << 34
} else {
    (isize::MAX as usize) & !(GRANULE - 1)
};

const STATE_MASK: usize = 0b11;

/// What a header currently describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum State {
    /// Merged into a neighbour; no longer a block.
    Absorbed = 0,
    /// Allocated to a user.
    Used = 1,
    /// On a free list.
    Free = 2,
    /// The end marker of a chunk; never merged.
    Sentinel = 3,
}

impl State {
    #[inline]
    fn from_bits(bits: usize) -> State {
        // SAFETY: `State` is `repr(usize)` with a variant for each of the
        // four values two bits can hold.
        unsafe { core::mem::transmute::<usize, State>(bits & STATE_MASK) }
    }
}

/// Block-list link: signed distances to the neighbours, in granules.
#[repr(C)]
pub(crate) struct RelLink {
    next: i32,
    prev: i32,
}

fn offset_to(from: NonNull<RelLink>, to: NonNull<RelLink>) -> i32 {
    let delta = to.as_ptr().addr().wrapping_sub(from.as_ptr().addr()) as isize;
    debug_assert!(delta % GRANULE as isize == 0);
    (delta / GRANULE as isize) as i32
}

fn follow(from: NonNull<RelLink>, granules: i32) -> NonNull<RelLink> {
    // Provenance is kept: the neighbour is reached from `from` itself.
    let ptr = from
        .as_ptr()
        .wrapping_byte_offset(granules as isize * GRANULE as isize);
    // SAFETY: headers of a chunk never wrap around the address space, and a
    // ring's neighbour of a non-null header is non-null.
    unsafe { NonNull::new_unchecked(ptr) }
}

impl Link for RelLink {
    unsafe fn next(this: NonNull<Self>) -> NonNull<Self> {
        // SAFETY: `this` is an initialised, readable link (caller).
        follow(this, unsafe { (*this.as_ptr()).next })
    }

    unsafe fn prev(this: NonNull<Self>) -> NonNull<Self> {
        // SAFETY: `this` is an initialised, readable link (caller).
        follow(this, unsafe { (*this.as_ptr()).prev })
    }

    unsafe fn set_next(this: NonNull<Self>, next: NonNull<Self>) {
        // SAFETY: `this` is writable (caller); both headers lie in one chunk,
        // at most MAX_CHUNK_SIZE apart, so the offset fits in an i32.
        unsafe { (*this.as_ptr()).next = offset_to(this, next) }
    }

    unsafe fn set_prev(this: NonNull<Self>, prev: NonNull<Self>) {
        // SAFETY: as in `set_next`.
        unsafe { (*this.as_ptr()).prev = offset_to(this, prev) }
    }
}

/// The header that precedes every block's data.
#[repr(C, align(16))]
pub(crate) struct BlockHeader {
    link: RelLink,
    owner: usize,
}

const _: () = assert!(HEADER_SIZE == GRANULE);
const _: () = assert!(MIN_BLOCK.is_multiple_of(GRANULE));

/// A handle on a block header inside a chunk.
///
/// Type invariant: the pointer designates an initialised header (its link
/// and owner written) inside a chunk of a live region, and the holder has
/// exclusive access to that region (the heap is borrowed mutably, or shared
/// for read-only walks). Every constructor that can break it is `unsafe`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Block(NonNull<BlockHeader>);

impl Block {
    /// Writes a fresh header at `at`, unlinked, and returns its handle.
    ///
    /// # Safety
    /// `at` is 16-aligned, writable memory of a chunk owned by the region at
    /// `region` and large enough for a header; the caller links the block
    /// before any neighbour walk reaches it.
    pub(crate) unsafe fn write(at: NonNull<u8>, region: usize, state: State) -> Block {
        let header = at.cast::<BlockHeader>();
        // SAFETY: writable, aligned header memory (caller).
        unsafe {
            header.as_ptr().write(BlockHeader {
                link: RelLink { next: 0, prev: 0 },
                owner: region | state as usize,
            })
        };
        Block(header)
    }

    /// The handle of an existing header.
    ///
    /// # Safety
    /// `header` satisfies the type invariant.
    #[inline]
    pub(crate) unsafe fn from_header(header: NonNull<BlockHeader>) -> Block {
        Block(header)
    }

    /// The block whose data starts at `data`.
    ///
    /// # Safety
    /// `data - HEADER_SIZE` satisfies the type invariant.
    #[inline]
    pub(crate) unsafe fn from_data(data: NonNull<u8>) -> Block {
        // SAFETY: the header lies right before the data (caller).
        Block(unsafe { data.sub(HEADER_SIZE) }.cast())
    }

    /// The block whose free-list link is `link`.
    ///
    /// # Safety
    /// `link` is the free link of a block that satisfies the type invariant.
    #[inline]
    pub(crate) unsafe fn from_free_link(link: NonNull<PtrLink>) -> Block {
        // SAFETY: a free link lies right after its header (caller).
        Block(unsafe { link.cast::<u8>().sub(HEADER_SIZE) }.cast())
    }

    /// The header's address.
    #[inline]
    pub(crate) fn addr(self) -> usize {
        self.0.as_ptr().addr()
    }

    /// The header as a byte pointer.
    #[inline]
    pub(crate) fn as_bytes(self) -> NonNull<u8> {
        self.0.cast()
    }

    /// The first data byte.
    #[inline]
    pub(crate) fn data(self) -> NonNull<u8> {
        // SAFETY: a block spans at least MIN_BLOCK bytes (type invariant), so
        // its data start is in bounds of the chunk.
        unsafe { self.as_bytes().add(HEADER_SIZE) }
    }

    /// The block's link in the chunk's block list.
    #[inline]
    pub(crate) fn link(self) -> NonNull<RelLink> {
        self.0.cast()
    }

    /// The free-list link, stored in the data area.
    #[inline]
    pub(crate) fn free_link(self) -> NonNull<PtrLink> {
        self.data().cast()
    }

    /// The raw owner word: region address and state bits.
    #[inline]
    pub(crate) fn owner_word(self) -> usize {
        // SAFETY: initialised header (type invariant).
        unsafe { (*self.0.as_ptr()).owner }
    }

    /// The address of the owning region.
    #[inline]
    pub(crate) fn owner(self) -> usize {
        self.owner_word() & !STATE_MASK
    }

    /// The block's state.
    #[inline]
    pub(crate) fn state(self) -> State {
        State::from_bits(self.owner_word())
    }

    /// Sets the block's state, keeping its owner.
    #[inline]
    pub(crate) fn set_state(self, state: State) {
        let owner = self.owner();
        // SAFETY: writable header (type invariant: exclusive access).
        unsafe { (*self.0.as_ptr()).owner = owner | state as usize }
    }

    /// Raw signed offsets (next, prev) in granules, unchecked.
    #[inline]
    pub(crate) fn raw_links(self) -> (i32, i32) {
        // SAFETY: initialised header (type invariant).
        let link = unsafe { &*self.link().as_ptr() };
        (link.next, link.prev)
    }

    /// The next block in address order (the sentinel's next is the chunk's
    /// first block).
    #[inline]
    pub(crate) fn next(self) -> Block {
        // SAFETY: on an intact ring a header's neighbour is a header of the
        // same chunk (type invariant).
        Block(unsafe { RelLink::next(self.link()) }.cast())
    }

    /// The previous block in address order (the first block's previous is
    /// the chunk's sentinel).
    #[inline]
    pub(crate) fn prev(self) -> Block {
        // SAFETY: as in `next`.
        Block(unsafe { RelLink::prev(self.link()) }.cast())
    }

    /// Bytes from this header to the next one (meaningless for a sentinel).
    #[inline]
    pub(crate) fn size(self) -> usize {
        self.raw_links().0 as usize * GRANULE
    }

    /// The block's usable data bytes.
    #[inline]
    pub(crate) fn usable(self) -> usize {
        self.size() - HEADER_SIZE
    }

    /// The header `offset` bytes after this one (not yet a block).
    #[inline]
    pub(crate) fn at_offset(self, offset: usize) -> NonNull<u8> {
        // SAFETY: callers only ask for offsets inside this block's span.
        unsafe { self.as_bytes().add(offset) }
    }
}

/// Block size for a request of `size` data bytes, or `None` when it cannot
/// fit in any chunk (sizes near `usize::MAX` fail here, they never wrap).
#[inline]
pub(crate) fn block_size_for(size: usize) -> Option<usize> {
    if size > MAX_CHUNK_SIZE {
        return None;
    }
    let rounded = (size + HEADER_SIZE + GRANULE - 1) & !(GRANULE - 1);
    Some(if rounded < MIN_BLOCK {
        MIN_BLOCK
    } else {
        rounded
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_sixteen_bytes() {
        assert_eq!(HEADER_SIZE, 16);
        assert_eq!(MIN_BLOCK, 32);
    }

    #[test]
    fn block_sizes_round_to_granules_and_never_wrap() {
        assert_eq!(block_size_for(0), Some(MIN_BLOCK));
        assert_eq!(block_size_for(1), Some(MIN_BLOCK));
        assert_eq!(block_size_for(16), Some(MIN_BLOCK));
        assert_eq!(block_size_for(17), Some(48));
        assert_eq!(block_size_for(100), Some(128));
        assert_eq!(block_size_for(usize::MAX), None);
        assert_eq!(block_size_for(usize::MAX - 15), None);
        assert_eq!(block_size_for(MAX_CHUNK_SIZE + 1), None);
    }

    #[repr(C, align(16))]
    struct Mem([u8; 256]);

    #[test]
    fn relative_links_follow_both_ways() {
        let mut mem = Mem([0; 256]);
        let base = NonNull::new(mem.0.as_mut_ptr()).unwrap();
        // SAFETY: three headers inside the 256-byte aligned buffer.
        unsafe {
            let a = Block::write(base, 0x1000, State::Free);
            let b = Block::write(base.add(64), 0x1000, State::Used);
            let c = Block::write(base.add(224), 0x1000, State::Sentinel);
            crate::clist::make_ring(a.link());
            crate::clist::insert_after(a.link(), b.link());
            crate::clist::insert_after(b.link(), c.link());
            assert_eq!(a.next(), b);
            assert_eq!(b.next(), c);
            assert_eq!(c.next(), a);
            assert_eq!(a.prev(), c);
            assert_eq!(a.size(), 64);
            assert_eq!(b.size(), 160);
            assert_eq!(b.usable(), 144);
            assert_eq!(b.state(), State::Used);
            assert_eq!(b.owner(), 0x1000);
            b.set_state(State::Free);
            assert_eq!(b.state(), State::Free);
            assert_eq!(b.owner(), 0x1000);
            assert_eq!(Block::from_data(b.data()), b);
            assert_eq!(Block::from_free_link(b.free_link()), b);
        }
    }
}
