//! Checked navigation: every address read from memory a program can write
//! is proven before it is followed.
//!
//! A program with a bug can write over a block header (an overrun from the
//! block before it, an underrun of its own) or over a free block's list
//! link (a write after free). The heap reads such words on every free and
//! allocation: block-ring links, owner words, free-list links, quick-list
//! links, and sizes derived from them. This module is the one place that
//! turns those words into addresses, and it proves each one first:
//!
//! - **inside a chunk**: a header address lies on a granule inside one of
//!   the region's chunks (the chunk table, [`super::chunks`]); a pointer
//!   to it is re-derived from the chunk's own pointer ([`Chunk::at`]) for
//!   every read a proof makes. Only a free-list unlink then writes through
//!   the node's links as stored, once their values are proven equal to
//!   such addresses;
//! - **consistent with its partner**: a ring neighbour links back
//!   (`next.prev == block`, `prev.next == block`), and a free-list node's
//!   neighbours link back to it before it is unlinked (glibc's "corrupted
//!   double-linked list" check; a node without `prev` must be its list's
//!   first);
//! - **owned**: a neighbour that is about to merge says, in its owner word,
//!   this region and the state `Free`, and so does a free-list neighbour.
//!
//! A proof that fails is damage: the caller gets `Corrupted { addr, what }`
//! naming the header or link at fault, and hands the region to
//! [`Region::repair`](super::Region::repair), which quarantines it.
//!
//! The proofs read only lines the operation touches anyway (a neighbour's
//! header, the nodes an unlink writes), so their cost is a few compares.

use crate::block::{Block, State, GRANULE, HEADER_SIZE, MIN_BLOCK};
use crate::error::{Corruption, HeapError};
use crate::freelist::FreeLink;
use crate::index::{class_of, Class};

use super::chunks::Chunk;
use super::Region;

/// `Corrupted` at `addr`.
#[cold]
pub(crate) fn damage(addr: usize, what: Corruption) -> HeapError {
    HeapError::Corrupted { addr, what }
}

/// A free block as [`Region::vet_free`] (or a merge partner's proof)
/// proved it, with what the proof read: the change that follows (take,
/// carve, merge) neither reads nor computes any of it again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FreeBlock {
    /// The block: an own header in state `Free`, checksum intact.
    pub(crate) block: Block,
    /// Its size, as its successor confirms (at least `MIN_BLOCK`).
    pub(crate) size: usize,
    /// `class_of(size)`: the list it is on.
    pub(crate) class: Class,
    /// Its free-list node's links, proven to link back.
    pub(crate) links: FreeLink,
}

impl FreeBlock {
    /// Its successor, proven to link back to it.
    #[inline]
    pub(crate) fn after(&self) -> Block {
        // SAFETY: the proof found the successor `size` bytes on, a header
        // of the same chunk.
        unsafe { Block::from_header(self.block.at_offset(self.size).cast()) }
    }
}

/// The address `granules` granules away from `addr` (no wrap-around:
/// `None` when it would leave the address space).
#[inline]
pub(crate) fn offset(addr: usize, granules: i32) -> Option<usize> {
    // `checked_mul`: on 32-bit targets a damaged link times 16 overflows.
    addr.checked_add_signed((granules as isize).checked_mul(GRANULE as isize)?)
}

impl Region {
    /// The chunk whose blocks hold a header at `addr`: on a granule, inside
    /// a chunk, before its sentinel.
    #[inline]
    pub(crate) fn chunk_of(&self, addr: usize) -> Option<&Chunk> {
        if !addr.is_multiple_of(GRANULE) {
            return None;
        }
        self.chunks.of_block(addr)
    }

    /// The readable memory at `addr`, which [`Region::chunk_of`] placed in
    /// `chunk`, as a block handle (not yet proven to be a header).
    #[inline]
    pub(crate) fn block_in(chunk: &Chunk, addr: usize) -> Block {
        // SAFETY: `addr` is a granule inside `chunk`'s blocks, so a header's
        // worth of bytes there is readable chunk memory (Block's invariant).
        unsafe { Block::from_header(chunk.at(addr).cast()) }
    }

    /// The block after `block` in `chunk`, proven to lie after it and at
    /// most at the sentinel (not proven to link back).
    #[inline]
    pub(crate) fn next_in(chunk: &Chunk, block: Block) -> Option<Block> {
        let (next, _) = block.raw_links();
        // Granules from `block` to the sentinel: the farthest a successor
        // may lie (a distance, so nothing can overflow).
        let room = chunk.sentinel().saturating_sub(block.addr()) / GRANULE;
        (next > 0 && next as usize <= room)
            .then(|| Self::block_in_or_sentinel(chunk, block.addr() + next as usize * GRANULE))
    }

    /// The block before `block` in `chunk` (the sentinel for the first
    /// block), proven to lie before it inside the chunk (not proven to link
    /// back).
    #[inline]
    pub(crate) fn prev_in(chunk: &Chunk, block: Block) -> Option<Block> {
        let (_, prev) = block.raw_links();
        let addr = block.addr();
        // Distances in granules, so nothing can overflow.
        let at = if addr == chunk.first() {
            let to_sentinel = chunk.sentinel().saturating_sub(addr) / GRANULE;
            (prev > 0 && prev as usize == to_sentinel).then_some(chunk.sentinel())
        } else {
            let back = prev.unsigned_abs() as usize;
            let room = addr.saturating_sub(chunk.first()) / GRANULE;
            (prev < 0 && back <= room).then(|| addr - back * GRANULE)
        }?;
        Some(Self::block_in_or_sentinel(chunk, at))
    }

    /// A block handle for a header of `chunk`, its sentinel included.
    #[inline]
    pub(crate) fn block_in_or_sentinel(chunk: &Chunk, addr: usize) -> Block {
        // SAFETY: `addr` is a granule from the chunk's first block to its
        // sentinel, all readable header memory of the chunk.
        unsafe { Block::from_header(chunk.at(addr).cast()) }
    }

    /// `block`'s ring neighbours `(prev, next)`, once both are proven to
    /// lie in `chunk` and to link back to `block`.
    #[inline]
    pub(crate) fn ring_of(chunk: &Chunk, block: Block) -> Option<(Block, Block)> {
        let next = Self::next_of(chunk, block)?;
        let prev = Self::prev_of(chunk, block)?;
        Some((prev, next))
    }

    /// `block`'s successor, once proven to lie in `chunk` and to link back
    /// to `block`: `block`'s size is then the distance to it.
    #[inline]
    pub(crate) fn next_of(chunk: &Chunk, block: Block) -> Option<Block> {
        let next = Self::next_in(chunk, block)?;
        // The successor lies in the chunk: its link back is compared as a
        // distance, the negated one of `block`'s own.
        (next.raw_links().1 == block.raw_links().0.wrapping_neg()).then_some(next)
    }

    /// `block`'s predecessor (the sentinel for a chunk's first block), once
    /// proven to lie in `chunk` and to link back to `block`.
    #[inline]
    pub(crate) fn prev_of(chunk: &Chunk, block: Block) -> Option<Block> {
        let prev = Self::prev_in(chunk, block)?;
        (prev.raw_links().0 == block.raw_links().1.wrapping_neg()).then_some(prev)
    }

    /// Whether `block`'s header is one this region wrote: its owner word
    /// names this region with a state a block in a ring may have, and its
    /// checksum holds (`crc`).
    #[inline]
    pub(crate) fn is_own_header(&self, block: Block) -> bool {
        block.owner() == self.addr()
            && matches!(
                block.state(),
                State::Used | State::Free | State::Cached | State::Quarantined | State::Slab
            )
            && block.checksum_ok()
    }

    /// Whether the free block `block` (`size` bytes) of `chunk` can be
    /// unlinked from its free list: each list neighbour it names is the
    /// free-list node of an own free header inside the region's chunks
    /// (looked up in `chunk` first, where they usually are), not `block`
    /// itself, and links back to it; and it names no previous node only if
    /// it is its list's first.
    pub(crate) fn free_links_ok(&self, chunk: &Chunk, block: Block, size: usize) -> bool {
        self.free_links(chunk, block, class_of(size)).is_some()
    }

    /// The links of the free-list node of `block`, a free block of `class`
    /// in `chunk`, once proven as [`Region::free_links_ok`] says.
    #[inline(always)]
    fn free_links(&self, chunk: &Chunk, block: Block, class: Class) -> Option<FreeLink> {
        // SAFETY: a node lies right after a header inside a chunk (MIN_BLOCK
        // leaves room for it), granule-aligned. Its words are compared as
        // addresses; none is followed here.
        let links = unsafe { FreeLink::read(block.free_link()) };
        let node = block.free_link().as_ptr().addr();
        let (next, prev) = (links.next_addr(), links.prev_addr());
        if next == node || prev == node {
            // A linear list never links a node to itself.
            return None;
        }
        let next_ok = next == 0 || self.link_word(chunk, next, 1) == Some(node);
        let prev_ok = if prev == 0 {
            self.index.first_of(class) == Some(block)
        } else {
            self.link_word(chunk, prev, 0) == Some(node)
        };
        (next_ok && prev_ok).then_some(links)
    }

    /// Word `i` (0 = next, 1 = prev) of the free-list node at `node`, once
    /// `node` is proven to be the free-list node of a header in a chunk
    /// (`near` is tried first).
    #[inline(always)]
    fn link_word(&self, near: &Chunk, node: usize, i: usize) -> Option<usize> {
        // A node lies a header past a granule: on a granule itself.
        if !node.is_multiple_of(GRANULE) {
            return None;
        }
        // Wrapping: a node below HEADER_SIZE gives an address no chunk holds.
        let header = node.wrapping_sub(HEADER_SIZE);
        let chunk = if near.holds_block(header) {
            near
        } else {
            self.chunks.of_block(header)?
        };
        let neighbour = Self::block_in(chunk, header);
        // A list neighbour is a free block of this region: program data
        // shaped like a link (a live block's own list node, a pointer to
        // itself) is not.
        let own_free =
            neighbour.owner_word() == self.addr() | State::Free as usize && neighbour.checksum_ok();
        own_free.then(|| words(neighbour.free_link().cast())[i])
    }
}

/// The two words of a free-list node, as addresses.
#[inline]
fn words(link: core::ptr::NonNull<[usize; 2]>) -> [usize; 2] {
    // SAFETY: a free-list node lies right after a header inside a chunk
    // (MIN_BLOCK leaves room for it), granule-aligned: readable, aligned
    // memory. Its bytes are read as addresses, never as pointers.
    unsafe { link.as_ptr().read() }
}

impl Region {
    /// Proves the free block `block` before it is reused or merged: inside
    /// a chunk, an own header in state `Free` with an intact checksum, its
    /// successor linking back (so its size is real, at least a minimal
    /// block), its free-list neighbours linking back, and its free pattern
    /// (`scramble`). Returns the chunk and the size.
    #[inline(always)]
    pub(crate) fn vet_free(&self, block: Block) -> Result<(Chunk, FreeBlock), HeapError> {
        let Some(chunk) = self.chunk_of(block.addr()).copied() else {
            return Err(damage(block.addr(), Corruption::FreeList));
        };
        if block.owner_word() != self.addr() | State::Free as usize {
            let what = if block.owner() == self.addr() {
                Corruption::State
            } else {
                Corruption::Owner
            };
            return Err(damage(block.addr(), what));
        }
        let free = self.vet_free_extent(&chunk, block)?;
        crate::integrity::check_free(block, self.scramble_depth())?;
        if self.is_cut_off(&chunk, block.addr()) {
            // A free list holds memory a repair cut off: the list is
            // damaged (the repair that follows rebuilds it from the ring).
            return Err(damage(block.addr(), Corruption::FreeList));
        }
        Ok((chunk, free))
    }

    /// Proves what a block whose ring is proven would merge with: `None`
    /// for an own header that is not free (used, cached, quarantined, or
    /// the chunk's sentinel), a free one once [`Region::vet_free_extent`]
    /// holds, damage otherwise.
    #[inline]
    pub(crate) fn merge_partner(
        &self,
        chunk: &Chunk,
        neighbour: Block,
    ) -> Result<Option<FreeBlock>, HeapError> {
        let word = neighbour.owner_word();
        if word == self.addr() | State::Free as usize {
            return self.vet_free_extent(chunk, neighbour).map(Some);
        }
        self.not_free_partner(chunk, neighbour)
    }

    /// [`Region::merge_partner`] for the predecessor `prev` of `block`,
    /// whose ring is proven: `prev`'s successor is `block`, so its size is
    /// known and only its header and list links are left to prove.
    #[inline]
    pub(crate) fn merge_partner_before(
        &self,
        chunk: &Chunk,
        prev: Block,
        block: Block,
    ) -> Result<Option<FreeBlock>, HeapError> {
        if prev.owner_word() != self.addr() | State::Free as usize {
            return self.not_free_partner(chunk, prev);
        }
        let size = block.addr() - prev.addr();
        if !prev.checksum_ok() {
            return Err(damage(prev.addr(), Corruption::Checksum));
        }
        if size < MIN_BLOCK {
            return Err(damage(prev.addr(), Corruption::Size));
        }
        let class = class_of(size);
        let Some(links) = self.free_links(chunk, prev, class) else {
            return Err(damage(prev.addr(), Corruption::FreeList));
        };
        Ok(Some(FreeBlock {
            block: prev,
            size,
            class,
            links,
        }))
    }

    /// A neighbour that is not free must still be an own header: used,
    /// cached or quarantined, or the chunk's sentinel.
    #[inline]
    fn not_free_partner(
        &self,
        chunk: &Chunk,
        neighbour: Block,
    ) -> Result<Option<FreeBlock>, HeapError> {
        // The usual case first: an own used block (not the sentinel's
        // address), one compare of the owner word.
        if neighbour.owner_word() == self.addr() | State::Used as usize
            && neighbour.addr() != chunk.sentinel()
        {
            return Ok(None);
        }
        self.other_partner(chunk, neighbour)
    }

    /// [`Region::not_free_partner`] for a neighbour that is not an own
    /// used block: the sentinel, a cached, quarantined or slab block, or
    /// damage.
    #[inline(never)]
    fn other_partner(
        &self,
        chunk: &Chunk,
        neighbour: Block,
    ) -> Result<Option<FreeBlock>, HeapError> {
        let expected = if neighbour.addr() == chunk.sentinel() {
            matches!(neighbour.state(), State::Sentinel)
        } else {
            matches!(
                neighbour.state(),
                State::Used | State::Cached | State::Quarantined | State::Slab
            )
        };
        if neighbour.owner() != self.addr() {
            Err(damage(neighbour.addr(), Corruption::Owner))
        } else if !expected {
            Err(damage(neighbour.addr(), Corruption::State))
        } else {
            Ok(None)
        }
    }

    /// The blocks of the free list of `class` with their sizes as their
    /// links say, each proven to lie in a chunk before it is read; a link
    /// that leaves the chunks, or a list longer than the region's free
    /// blocks, ends the walk with the damage.
    pub(crate) fn free_list(&self, class: crate::index::Class) -> FreeListWalk<'_> {
        let head = self
            .index
            .first_of(class)
            .map(|b| b.free_link().as_ptr().addr());
        FreeListWalk {
            region: self,
            at: head,
            holder: self.addr(),
            left: self.c.free_blocks,
        }
    }

    /// The free block `block` with its size as its successor confirms: an
    /// own free header (owner word checked by the caller) whose successor
    /// lies in `chunk` and links back, at least a minimal block, checksum
    /// intact, free-list links proven.
    #[inline(always)]
    fn vet_free_extent(&self, chunk: &Chunk, block: Block) -> Result<FreeBlock, HeapError> {
        if !block.checksum_ok() {
            return Err(damage(block.addr(), Corruption::Checksum));
        }
        let Some(after) = Self::next_in(chunk, block) else {
            return Err(damage(block.addr(), Corruption::BlockLinks));
        };
        // `next_in` proved the forward distance positive: the successor's
        // link back is its negation.
        if after.raw_links().1 != block.raw_links().0.wrapping_neg() {
            return Err(damage(block.addr(), Corruption::BlockLinks));
        }
        let size = after.addr() - block.addr();
        if size < MIN_BLOCK {
            return Err(damage(block.addr(), Corruption::Size));
        }
        let class = class_of(size);
        let Some(links) = self.free_links(chunk, block, class) else {
            return Err(damage(block.addr(), Corruption::FreeList));
        };
        Ok(FreeBlock {
            block,
            size,
            class,
            links,
        })
    }
}

/// A checked walk of one free list (see [`Region::free_list`]).
pub(crate) struct FreeListWalk<'a> {
    region: &'a Region,
    at: Option<usize>,
    /// The block whose link led here (the region for the list head).
    holder: usize,
    /// Nodes the walk may still visit.
    left: usize,
}

impl Iterator for FreeListWalk<'_> {
    type Item = Result<(Block, usize), HeapError>;

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.at.take()?;
        let header = node.wrapping_sub(HEADER_SIZE);
        let Some(chunk) = self.region.chunk_of(header).filter(|_| self.left > 0) else {
            return Some(Err(damage(self.holder, Corruption::FreeList)));
        };
        let block = Region::block_in(chunk, header);
        let [next, _] = words(block.free_link().cast());
        self.left -= 1;
        self.holder = header;
        self.at = (next != 0).then_some(next);
        let size = (block.raw_links().0.max(0) as usize) * GRANULE;
        Some(Ok((block, size)))
    }
}
