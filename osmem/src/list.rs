//! The heap's block list: region-heap's CLIST ring, seen through the seed's
//! NULL-terminated `prev`/`next` fields.
//!
//! The seed keeps its heap blocks on a doubly linked list in address order,
//! with `prev` of the first block and `next` of the last one NULL (the
//! usual reading of `struct block_meta`; its tests read only `size` and
//! `status`). region-heap's list algorithms (`region_heap::clist`:
//! `insert_after`, `unlink`, `is_consistent`) work on rings instead, where
//! every node has a neighbour on both sides. The two meet through a list
//! head kept outside the heap memory, in a static of this library:
//!
//! ```text
//! ring:        HEAD <-> b0 <-> b1 <-> ... <-> bn <-> HEAD
//! in memory:   b0.prev = NULL, bn.next = NULL, HEAD.next = b0, HEAD.prev = bn
//! ```
//!
//! The [`Link`] encoding of [`BlockMeta`] translates: a NULL field is read as
//! the head and a link to the head is stored as NULL. A zeroed head is a
//! ring of one, the empty list, so the static needs no initialisation.
//!
//! Invariants: the ring holds exactly the heap blocks, in address order,
//! each block ending where the next begins; mapped blocks are never on it.
//! There is one head, so one [`BlockList`] per process (the seed's
//! allocator is a process-wide singleton anyway).

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use region_heap::clist::{self, Link};

use crate::meta::{Block, BlockMeta};

/// The list head: a header-shaped node outside the heap.
struct Head(UnsafeCell<BlockMeta>);

// SAFETY: the head is only touched through `BlockList`, of which one exists
// at a time (`BlockList::claim`), and its owner serialises access.
unsafe impl Sync for Head {}

static HEAD: Head = Head(UnsafeCell::new(BlockMeta::EMPTY));

fn head() -> NonNull<BlockMeta> {
    // SAFETY: the address of a static is never null.
    unsafe { NonNull::new_unchecked(HEAD.0.get()) }
}

/// Reads a stored link: NULL stands for the head.
fn decode(raw: *mut BlockMeta) -> NonNull<BlockMeta> {
    NonNull::new(raw).unwrap_or_else(head)
}

/// Stores a link: the head is written as NULL.
fn encode(node: NonNull<BlockMeta>) -> *mut BlockMeta {
    if node == head() {
        core::ptr::null_mut()
    } else {
        node.as_ptr()
    }
}

impl Link for BlockMeta {
    unsafe fn next(this: NonNull<Self>) -> NonNull<Self> {
        // SAFETY: `this` is a readable header (caller).
        decode(unsafe { (*this.as_ptr()).next })
    }

    unsafe fn prev(this: NonNull<Self>) -> NonNull<Self> {
        // SAFETY: `this` is a readable header (caller).
        decode(unsafe { (*this.as_ptr()).prev })
    }

    unsafe fn set_next(this: NonNull<Self>, next: NonNull<Self>) {
        // SAFETY: `this` is a writable header (caller).
        unsafe { (*this.as_ptr()).next = encode(next) }
    }

    unsafe fn set_prev(this: NonNull<Self>, prev: NonNull<Self>) {
        // SAFETY: `this` is a writable header (caller).
        unsafe { (*this.as_ptr()).prev = encode(prev) }
    }
}

/// The heap blocks in address order.
pub struct BlockList {
    _claimed: (),
}

impl BlockList {
    /// The process's block list.
    ///
    /// # Safety
    /// No other `BlockList` is alive, and the head is empty or links only
    /// blocks the new owner takes over.
    pub const unsafe fn claim() -> BlockList {
        BlockList { _claimed: () }
    }

    /// The block after `node` on the ring (`None` past the last one).
    fn after(&self, node: NonNull<BlockMeta>) -> Option<Block> {
        // SAFETY: `node` is the head or a linked block, both readable while
        // the list is owned.
        let next = unsafe { BlockMeta::next(node) };
        // SAFETY: every node of the ring but the head is a written header.
        (next != head()).then(|| unsafe { Block::from_header(next) })
    }

    /// The lowest block.
    pub fn first(&self) -> Option<Block> {
        self.after(head())
    }

    /// The highest block, which ends at the program break.
    pub fn last(&self) -> Option<Block> {
        // SAFETY: the head is always a readable node.
        let last = unsafe { BlockMeta::prev(head()) };
        // SAFETY: as in `after`.
        (last != head()).then(|| unsafe { Block::from_header(last) })
    }

    /// The block right after `block` in memory, if any.
    pub fn next(&self, block: Block) -> Option<Block> {
        self.after(block.header())
    }

    /// Appends `block`, which starts where the last block ends.
    ///
    /// # Safety
    /// `block` is a written header that is on no list.
    pub unsafe fn push_back(&mut self, block: Block) {
        // SAFETY: the head's ring is consistent and its `prev` is the last
        // node; `block` is unlinked header memory (caller).
        unsafe { clist::insert_after(BlockMeta::prev(head()), block.header()) }
    }

    /// Inserts `block`, which starts where `at` ends, after `at`.
    ///
    /// # Safety
    /// `at` is on this list; `block` is a written header on no list.
    pub unsafe fn insert_after(&mut self, at: Block, block: Block) {
        // SAFETY: forwarded from the caller.
        unsafe { clist::insert_after(at.header(), block.header()) }
    }

    /// Takes `block` off the list.
    ///
    /// # Safety
    /// `block` is on this list.
    pub unsafe fn remove(&mut self, block: Block) {
        // SAFETY: forwarded from the caller.
        unsafe { clist::unlink(block.header()) }
    }

    /// Whether both neighbours of `block` link back to it.
    ///
    /// # Safety
    /// `block` is on this list.
    pub unsafe fn is_consistent(&self, block: Block) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { clist::is_consistent(block.header()) }
    }

    /// The blocks, lowest first.
    pub fn iter(&self) -> Blocks<'_> {
        Blocks {
            list: self,
            next: self.first(),
        }
    }
}

impl Drop for BlockList {
    fn drop(&mut self) {
        // SAFETY: the owner is going away: the next owner starts from an
        // empty list (the static owner is never dropped).
        unsafe { HEAD.0.get().write(BlockMeta::EMPTY) }
    }
}

/// Iterator over the blocks of a [`BlockList`].
pub struct Blocks<'a> {
    list: &'a BlockList,
    next: Option<Block>,
}

impl Iterator for Blocks<'_> {
    type Item = Block;

    fn next(&mut self) -> Option<Block> {
        let block = self.next?;
        self.next = self.list.next(block);
        Some(block)
    }
}
