//! Blocks: a header followed by data, chained in address order.
//!
//! A chunk of a region is carved into blocks that tile it exactly, followed by
//! a *sentinel* header that closes the chunk. Each header is:
//!
//! ```text
//! offset 0  RelLink { next: i32, prev: i32 }   block list (CLIST), in granules
//! offset 8  owner: usize                       region address | state (3 bits)
//!           requested: usize                   feature `guard`: the caller's size
//!           crc: u32                           feature `crc`: CRC-32C of the rest
//! then      front guard (feature `guard`)      GUARD_SIZE bytes of 0x55
//!           data...                            (free blocks: a FreeLink, free list)
//!           tail guard (feature `guard`)       0xaa from the requested end to the block's end
//! ```
//!
//! The header is 16 bytes with neither `crc` nor `guard`, and 32 bytes with
//! either or both (the fields take 20 to 28 bytes and headers stay on
//! granules): the 16-byte header has no spare bit, since its owner word
//! holds a full region address.
//!
//! Invariants kept by the region code:
//! - headers sit on [`GRANULE`] (16-byte) boundaries, so data is 16-aligned;
//! - the block list of a chunk is a ring in address order: first block, ...,
//!   last block, sentinel, back to the first block; a block's size is the
//!   distance to the next header (MutekH stores no size either);
//! - every block is at least [`MIN_BLOCK`] bytes, so a free block can hold
//!   its free-list link in its data area and a used one its guards;
//! - `owner` holds the address of the owning region (16-aligned) with the
//!   state in its three low bits: an allocated block leads back to its region, so freeing needs
//!   no region argument; a header absorbed by a merge is marked
//!   [`State::Absorbed`], which is how a late double free is recognised;
//! - with `crc`, every header (absorbed ones included) carries the CRC-32C of
//!   its other fields. Every mutator below patches the checksum by the change
//!   it makes (CRCs are linear, see `crc`), so a header that was damaged
//!   before stays detectably damaged: nothing recomputes a checksum from
//!   scratch except [`Block::write`], for a fresh header.

use core::mem::size_of;
use core::ptr::NonNull;

use crate::clist::Link;
#[cfg(feature = "crc")]
use crate::crc;
use crate::freelist::FreeLink;

/// Allocation granule: every block size and header address is a multiple.
pub const GRANULE: usize = 16;

/// Size of a block header in bytes: 16, or 32 with the `crc` or `guard`
/// feature.
pub const HEADER_SIZE: usize = core::mem::size_of::<BlockHeader>();

/// Bytes of each guard zone (feature `guard`; 0 without it): one before
/// the data, and at least one after it, extended over the rounding slack up
/// to the block's end.
pub const GUARD_SIZE: usize = if cfg!(feature = "guard") { GRANULE } else { 0 };

/// Offset of a block's data from its header.
pub(crate) const DATA_OFFSET: usize = HEADER_SIZE + GUARD_SIZE;

/// Offset of the owner word inside a header (see `raw`, which exports
/// where it lies relative to the data).
pub(crate) const OWNER_FIELD: usize = core::mem::offset_of!(BlockHeader, owner);

/// Bytes a block adds to the request at least: its header and guards
/// (the request is then rounded up to granules).
pub const BLOCK_OVERHEAD: usize = HEADER_SIZE + 2 * GUARD_SIZE;

/// Smallest block: a header plus room for a free-list link (free) or for
/// both guards (used).
pub const MIN_BLOCK: usize = max(
    HEADER_SIZE + core::mem::size_of::<FreeLink>(),
    BLOCK_OVERHEAD,
)
.next_multiple_of(GRANULE);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Largest chunk (and so block) a region manages in one piece; larger ranges
/// are split into several chunks. Bounded by the 32-bit granule offsets.
pub const MAX_CHUNK_SIZE: usize = if usize::BITS > 32 {
    1 << 34
} else {
    (isize::MAX as usize) & !(GRANULE - 1)
};

/// The state bits of an owner word (the region address is 16-aligned).
pub(crate) const STATE_MASK: usize = 0b111;

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
    /// Freed and kept whole on a quick list (see `quick`): neither used
    /// nor on the free index, and never merged until flushed.
    Cached = 4,
    /// Found damaged and taken out of use (see `region::repair`): on no
    /// list, never merged, never handed out.
    Quarantined = 5,
    /// Allocated to the slab front end: its data is a slab of equal
    /// objects (see `slab`), handed out one by one, never as a block.
    Slab = 6,
    /// State bits no header is written with (7): damage.
    Damaged = 7,
}

/// The state of each value of the three state bits.
const STATES: [State; 8] = [
    State::Absorbed,
    State::Used,
    State::Free,
    State::Sentinel,
    State::Cached,
    State::Quarantined,
    State::Slab,
    State::Damaged,
];

impl State {
    /// The state the low bits of an owner word stand for.
    #[inline]
    pub(crate) fn from_bits(bits: usize) -> State {
        STATES[bits & STATE_MASK]
    }
}

/// Block-list link: signed distances to the neighbours, in granules.
///
/// Every `RelLink` is the first field of a [`BlockHeader`]; setting it
/// patches the header's checksum.
#[repr(C)]
pub(crate) struct RelLink {
    next: i32,
    prev: i32,
}

/// The link as the last word of the checksummed message.
#[cfg(feature = "crc")]
#[inline]
fn link_word(next: i32, prev: i32) -> u64 {
    (next as u32 as u64) | ((prev as u32 as u64) << 32)
}

/// Patches the checksum of the header that starts with `link` for a change
/// of its link word by `delta`.
///
/// # Safety
/// `link` is the link of a writable header.
#[cfg(feature = "crc")]
#[inline]
unsafe fn patch_link_crc(link: NonNull<RelLink>, delta: u64) {
    let header = link.cast::<BlockHeader>().as_ptr();
    // SAFETY: a RelLink is always the first field of a header (type doc),
    // writable (caller).
    unsafe { (*header).crc ^= crc::last_word_delta(delta) };
}

fn offset_to(from: NonNull<RelLink>, to: NonNull<RelLink>) -> i32 {
    let delta = to.as_ptr().addr().wrapping_sub(from.as_ptr().addr()) as isize;
    debug_assert!(delta % GRANULE as isize == 0);
    // Headers lie on granules: the arithmetic shift is the exact quotient
    // (one instruction, where a signed division rounds towards zero).
    (delta >> GRANULE.trailing_zeros()) as i32
}

fn follow(from: NonNull<RelLink>, granules: i32) -> NonNull<RelLink> {
    // Provenance is kept: the neighbour is reached from `from` itself.
    let ptr = from
        .as_ptr()
        .wrapping_byte_offset((granules as isize).wrapping_mul(GRANULE as isize));
    // SAFETY: headers of a chunk never wrap around the address space, and a
    // ring's neighbour of a non-null header is non-null.
    unsafe { NonNull::new_unchecked(ptr) }
}

impl Link for RelLink {
    /// # Safety
    /// As the `Link` trait requires: `this` points to an initialised, readable
    /// link of a ring.
    unsafe fn next(this: NonNull<Self>) -> NonNull<Self> {
        // SAFETY: `this` is an initialised, readable link (caller).
        follow(this, unsafe { (*this.as_ptr()).next })
    }

    /// # Safety
    /// As the `Link` trait requires: `this` points to an initialised, readable
    /// link of a ring.
    unsafe fn prev(this: NonNull<Self>) -> NonNull<Self> {
        // SAFETY: `this` is an initialised, readable link (caller).
        follow(this, unsafe { (*this.as_ptr()).prev })
    }

    /// # Safety
    /// As the `Link` trait requires: `this` points to writable link memory, and
    /// the new neighbour to a link of the same ring.
    #[inline]
    unsafe fn set_next(this: NonNull<Self>, next: NonNull<Self>) {
        let new = offset_to(this, next);
        // SAFETY: `this` is writable (caller); both headers lie in one chunk,
        // at most MAX_CHUNK_SIZE apart, so the offset fits in an i32.
        unsafe {
            #[cfg(feature = "crc")]
            patch_link_crc(this, link_word((*this.as_ptr()).next ^ new, 0));
            (*this.as_ptr()).next = new;
        }
    }

    /// # Safety
    /// As the `Link` trait requires: `this` points to writable link memory, and
    /// the new neighbour to a link of the same ring.
    #[inline]
    unsafe fn set_prev(this: NonNull<Self>, prev: NonNull<Self>) {
        let new = offset_to(this, prev);
        // SAFETY: as in `set_next`.
        unsafe {
            #[cfg(feature = "crc")]
            patch_link_crc(this, link_word(0, (*this.as_ptr()).prev ^ new));
            (*this.as_ptr()).prev = new;
        }
    }
}

/// The header that precedes every block's data.
#[repr(C, align(16))]
pub(crate) struct BlockHeader {
    link: RelLink,
    owner: usize,
    /// Bytes the caller asked for (used blocks; feature `guard`).
    #[cfg(feature = "guard")]
    requested: usize,
    /// CRC-32C of [`BlockHeader::words`] (feature `crc`).
    #[cfg(feature = "crc")]
    crc: u32,
    /// Explicit zeroed padding: a header has no padding bytes, so reading
    /// any part of one (as validation of a stray pointer may) never reads
    /// uninitialised memory.
    reserved: [u8; RESERVED],
}

/// Bytes of the header's fields.
const FIELDS: usize = size_of::<RelLink>()
    + size_of::<usize>()
    + if cfg!(feature = "guard") {
        size_of::<usize>()
    } else {
        0
    }
    + if cfg!(feature = "crc") {
        size_of::<u32>()
    } else {
        0
    };

/// Bytes of the header: 16, or 32 with `crc` or `guard`.
const HEADER_BYTES: usize = if cfg!(any(feature = "crc", feature = "guard")) {
    32
} else {
    16
};

/// Padding after the fields, made explicit (see `BlockHeader::reserved`).
const RESERVED: usize = HEADER_BYTES - FIELDS;

/// Words of the checksummed message: owner, requested size, link (last, so
/// that a link change patches the checksum with one register step).
#[cfg(feature = "crc")]
const CRC_WORDS: usize = if cfg!(feature = "guard") { 3 } else { 2 };

/// Checksum change for each XOR of old and new state bits.
#[cfg(feature = "crc")]
const STATE_DELTA: [u32; 8] = {
    let mut table = [0; 8];
    let mut bits = 1;
    while bits < 8 {
        table[bits] = crc::const_word_delta(bits as u64, CRC_WORDS - 1);
        bits += 1;
    }
    table
};

#[cfg(feature = "crc")]
impl BlockHeader {
    /// Every field but the checksum, as the checksummed message.
    #[inline]
    fn words(&self) -> [u64; CRC_WORDS] {
        let link = link_word(self.link.next, self.link.prev);
        #[cfg(feature = "guard")]
        return [self.owner as u64, self.requested as u64, link];
        #[cfg(not(feature = "guard"))]
        return [self.owner as u64, link];
    }
}

const _: () = assert!(HEADER_SIZE == HEADER_BYTES);
const _: () = assert!(MIN_BLOCK.is_multiple_of(GRANULE));
const _: () = assert!(DATA_OFFSET.is_multiple_of(GRANULE));

/// A handle on a block header inside a chunk.
///
/// Type invariant: the pointer designates a granule inside a chunk of a live
/// region, before the chunk's end by at least a header (the region code
/// makes handles only from addresses its chunk table placed there:
/// `region::nav`), and the holder has exclusive access to that region (the
/// heap is borrowed mutably, or shared for read-only walks). Every
/// constructor that can break it is `unsafe`.
///
/// The memory is readable, so reading the header's words (owner word,
/// links, size) is memory-safe; their *values* are the program's to damage
/// and are trusted only once `region::nav` proved them. The one accessor
/// that follows a link ([`Block::next`]) and the one that points past the
/// header by a caller's offset ([`Block::at_offset`]) are `unsafe`.
///
/// One exception to exclusive access: the `raw` module builds handles on
/// used blocks its callers own, without the heap's lock, and reads them
/// only through [`Block::owner_word`] and [`Block::raw_next`]. Each of
/// those reads one field through the raw pointer and never forms a
/// reference to the header, whose other fields (`prev`, the checksum) a
/// neighbour's free may be rewriting meanwhile.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Block(NonNull<BlockHeader>);

impl Block {
    /// Writes a fresh header at `at`, unlinked, and returns its handle.
    ///
    /// # Safety
    /// `at` is 16-aligned, writable memory of a chunk owned by the region at
    /// `region` and large enough for a header; the caller links the block
    /// before any neighbour walk reaches it.
    #[inline]
    pub(crate) unsafe fn write(at: NonNull<u8>, region: usize, state: State) -> Block {
        let header = at.cast::<BlockHeader>();
        // SAFETY: writable, aligned header memory (caller).
        unsafe {
            header.as_ptr().write(BlockHeader {
                link: RelLink { next: 0, prev: 0 },
                owner: region | state as usize,
                #[cfg(feature = "guard")]
                requested: 0,
                #[cfg(feature = "crc")]
                crc: 0,
                reserved: [0; RESERVED],
            });
            #[cfg(feature = "crc")]
            {
                let h = &mut *header.as_ptr();
                h.crc = crc::checksum(&h.words());
            }
        };
        Block(header)
    }

    /// Writes a fresh header at `at` and links it between `prev` and
    /// `next` in the block list: one checksum for the new header, patches
    /// for the two neighbours (cheaper than [`Block::write`] then
    /// `insert_after`), and nothing read from either neighbour but the
    /// link word a patch needs (`crc`).
    ///
    /// # Safety
    /// As for [`Block::write`]; `prev` and `next` are linked blocks of the
    /// same chunk with `at` between them, and every header between them
    /// leaves the ring (usually there is none: `next` is `prev`'s
    /// successor).
    #[inline]
    pub(crate) unsafe fn write_between(
        at: NonNull<u8>,
        prev: Block,
        next: Block,
        region: usize,
        state: State,
    ) -> Block {
        let header = at.cast::<BlockHeader>();
        let link = header.cast::<RelLink>();
        // SAFETY: writable, aligned header memory between two linked
        // headers of one chunk (caller).
        unsafe {
            header.as_ptr().write(BlockHeader {
                link: RelLink {
                    next: offset_to(link, next.link()),
                    prev: offset_to(link, prev.link()),
                },
                owner: region | state as usize,
                #[cfg(feature = "guard")]
                requested: 0,
                #[cfg(feature = "crc")]
                crc: 0,
                reserved: [0; RESERVED],
            });
            #[cfg(feature = "crc")]
            {
                let h = &mut *header.as_ptr();
                h.crc = crc::checksum(&h.words());
            }
            RelLink::set_next(prev.link(), link);
            RelLink::set_prev(next.link(), link);
        }
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
    /// `data - DATA_OFFSET` satisfies the type invariant.
    #[inline]
    pub(crate) unsafe fn from_data(data: NonNull<u8>) -> Block {
        // SAFETY: the header lies DATA_OFFSET bytes before the data (caller).
        Block(unsafe { data.sub(DATA_OFFSET) }.cast())
    }

    /// The block whose free-list link is `link`.
    ///
    /// # Safety
    /// `link` is the free link of a block that satisfies the type invariant.
    #[inline]
    pub(crate) unsafe fn from_free_link(link: NonNull<FreeLink>) -> Block {
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

    /// The first data byte (after the front guard, if any).
    #[inline]
    pub(crate) fn data(self) -> NonNull<u8> {
        // SAFETY: a granule of a chunk's blocks is followed by at least
        // MIN_BLOCK >= DATA_OFFSET bytes of the chunk (its sentinel is a
        // minimal block), so the data start is in bounds.
        unsafe { self.as_bytes().add(DATA_OFFSET) }
    }

    /// The block's link in the chunk's block list.
    #[inline]
    pub(crate) fn link(self) -> NonNull<RelLink> {
        self.0.cast()
    }

    /// The free-list link, stored right after the header.
    #[inline]
    pub(crate) fn free_link(self) -> NonNull<FreeLink> {
        // SAFETY: a header's worth of bytes past a granule of the blocks of
        // a chunk still lies in the chunk (its sentinel is at least
        // MIN_BLOCK bytes), so the link's address is in bounds.
        unsafe { self.as_bytes().add(HEADER_SIZE) }.cast()
    }

    /// The raw owner word: region address and state bits. Reads the
    /// `owner` field alone (see the type doc).
    #[inline]
    pub(crate) fn owner_word(self) -> usize {
        // SAFETY: initialised header (type invariant); the place expression
        // loads `owner` only.
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

    /// Sets the block's state, keeping its owner (and patching the
    /// checksum by the change).
    #[inline]
    pub(crate) fn set_state(self, state: State) {
        let old = self.owner_word();
        let new = (old & !STATE_MASK) | state as usize;
        // SAFETY: writable header (type invariant: exclusive access).
        unsafe {
            let header = &mut *self.0.as_ptr();
            header.owner = new;
            #[cfg(feature = "crc")]
            {
                header.crc ^= STATE_DELTA[(old ^ new) & STATE_MASK];
            }
        }
    }

    /// Changes the state of a header whose owner word was just proven to
    /// be `region | from` to `to`, without reading it again (the checksum
    /// patched by the constant change).
    #[inline]
    pub(crate) fn set_proven_state(self, region: usize, from: State, to: State) {
        debug_assert_eq!(self.owner_word(), region | from as usize);
        // SAFETY: writable header (type invariant: exclusive access).
        unsafe {
            let header = &mut *self.0.as_ptr();
            header.owner = region | to as usize;
            #[cfg(feature = "crc")]
            {
                header.crc ^= STATE_DELTA[(from as usize ^ to as usize) & STATE_MASK];
            }
        }
    }

    /// Whether the header's checksum matches its fields (always true
    /// without the `crc` feature).
    #[inline]
    pub(crate) fn checksum_ok(self) -> bool {
        #[cfg(feature = "crc")]
        {
            // SAFETY: initialised header (type invariant).
            let header = unsafe { &*self.0.as_ptr() };
            crc::checksum(&header.words()) == header.crc
        }
        #[cfg(not(feature = "crc"))]
        true
    }

    /// Bytes the caller asked for (feature `guard`).
    #[cfg(feature = "guard")]
    #[inline]
    pub(crate) fn requested(self) -> usize {
        // SAFETY: initialised header (type invariant).
        unsafe { (*self.0.as_ptr()).requested }
    }

    /// Records the caller's size (feature `guard`), patching the checksum.
    #[cfg(feature = "guard")]
    #[inline]
    pub(crate) fn set_requested(self, requested: usize) {
        // SAFETY: writable header (type invariant: exclusive access).
        unsafe {
            let header = &mut *self.0.as_ptr();
            #[cfg(feature = "crc")]
            {
                header.crc ^= crc::word_delta((header.requested ^ requested) as u64, 1);
            }
            header.requested = requested;
        }
    }

    /// Raw signed offset to the next header in granules, unchecked; reads
    /// the `next` field alone (see the type doc: `raw` calls this without
    /// exclusive access).
    #[inline]
    pub(crate) fn raw_next(self) -> i32 {
        // SAFETY: initialised header (type invariant); a place expression
        // through the raw pointer loads `next` only, with no reference to
        // the header.
        unsafe { (*self.link().as_ptr()).next }
    }

    /// Raw signed offsets (next, prev) in granules, unchecked.
    #[inline]
    pub(crate) fn raw_links(self) -> (i32, i32) {
        // SAFETY: initialised header (type invariant).
        let link = unsafe { &*self.link().as_ptr() };
        (link.next, link.prev)
    }

    /// The next block in address order (the sentinel's next is the chunk's
    /// first block), following the link unchecked.
    ///
    /// # Safety
    /// The link was proven (`region::nav`): it leads to a header of the
    /// same chunk.
    #[inline]
    pub(crate) unsafe fn next(self) -> Block {
        // SAFETY: a proven link leads inside the chunk (caller).
        Block(unsafe { RelLink::next(self.link()) }.cast())
    }

    /// Bytes from this header to the next one (meaningless for a sentinel).
    #[inline]
    pub(crate) fn size(self) -> usize {
        // A damaged link may be negative or, on 32-bit targets, overflow
        // when scaled: saturate rather than panic (proven blocks never do).
        (self.raw_links().0.max(0) as usize).saturating_mul(GRANULE)
    }

    /// The block's usable data bytes: what the caller asked for with the
    /// `guard` feature (the rest is the tail guard), else up to the next
    /// header.
    #[inline]
    pub(crate) fn usable(self) -> usize {
        #[cfg(feature = "guard")]
        return self.requested();
        #[cfg(not(feature = "guard"))]
        return self.size() - DATA_OFFSET;
    }

    /// The byte `offset` bytes after this header.
    ///
    /// # Safety
    /// `offset` lies inside this block's proven span (or its chunk).
    #[inline]
    pub(crate) unsafe fn at_offset(self, offset: usize) -> NonNull<u8> {
        // SAFETY: inside the block's chunk (caller).
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
    let rounded = (size + BLOCK_OVERHEAD + GRANULE - 1) & !(GRANULE - 1);
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
    fn header_sizes_per_feature() {
        let (header, min) = match (cfg!(feature = "crc"), cfg!(feature = "guard")) {
            (false, false) => (16, 32),
            (_, false) => (32, 48),
            (_, true) => (32, 64),
        };
        assert_eq!((HEADER_SIZE, MIN_BLOCK), (header, min));
        assert_eq!(BLOCK_OVERHEAD, HEADER_SIZE + 2 * GUARD_SIZE);
    }

    #[test]
    fn block_sizes_round_to_granules_and_never_wrap() {
        let sized = |n: usize| {
            (n + BLOCK_OVERHEAD)
                .next_multiple_of(GRANULE)
                .max(MIN_BLOCK)
        };
        assert_eq!(block_size_for(0), Some(MIN_BLOCK));
        assert_eq!(block_size_for(1), Some(sized(1)));
        assert_eq!(block_size_for(16), Some(sized(16)));
        assert_eq!(block_size_for(17), Some(sized(17)));
        assert_eq!(block_size_for(100), Some(sized(100)));
        if BLOCK_OVERHEAD == 16 {
            assert_eq!(block_size_for(17), Some(48));
            assert_eq!(block_size_for(100), Some(128));
        }
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
            assert_eq!(Block(RelLink::prev(a.link()).cast()), c);
            assert_eq!(a.size(), 64);
            assert_eq!(b.size(), 160);
            #[cfg(not(feature = "guard"))]
            assert_eq!(b.usable(), 160 - DATA_OFFSET);
            assert_eq!(b.state(), State::Used);
            assert_eq!(b.owner(), 0x1000);
            b.set_state(State::Free);
            assert_eq!(b.state(), State::Free);
            assert_eq!(b.owner(), 0x1000);
            assert_eq!(Block::from_data(b.data()), b);
            assert_eq!(Block::from_free_link(b.free_link()), b);
            for block in [a, b, c] {
                assert!(block.checksum_ok(), "every mutator kept the checksum");
            }
        }
    }

    #[cfg(feature = "crc")]
    #[test]
    fn a_damaged_header_stays_damaged_through_updates() {
        let mut mem = Mem([0; 256]);
        let base = NonNull::new(mem.0.as_mut_ptr()).unwrap();
        // SAFETY: two headers inside the aligned buffer.
        unsafe {
            let a = Block::write(base, 0x1000, State::Free);
            let b = Block::write(base.add(64), 0x1000, State::Used);
            crate::clist::make_ring(a.link());
            crate::clist::insert_after(a.link(), b.link());
            assert!(a.checksum_ok() && b.checksum_ok());
            *base.as_ptr().add(9) ^= 0x40; // a bit of a's owner word
            assert!(!a.checksum_ok());
            a.set_state(State::Used);
            crate::clist::unlink(b.link());
            assert!(!a.checksum_ok(), "updates patch, they never reseal");
            assert!(b.checksum_ok());
        }
    }
}
