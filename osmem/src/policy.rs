//! The seed's allocation policy: [`Osmem`], over the block list and a
//! [`Memory`].
//!
//! What the seed specifies, and its traces confirm call for call:
//! - a request is rounded up to 8 bytes; with its 32-byte header it goes
//!   to its own mapping when it reaches the threshold ([`MMAP_THRESHOLD`]
//!   for `malloc` and `realloc`, the page size for `calloc`), otherwise to
//!   the heap;
//! - the first heap use moves the break once by [`PREALLOC_SIZE`], which
//!   becomes one free block;
//! - before every heap search all runs of adjacent free blocks are merged
//!   (coalescing), then the smallest free block that fits is taken (best
//!   fit, the lowest address on ties) and split when the rest holds a
//!   header plus at least 8 bytes;
//! - when nothing fits, a free last block is grown with `brk` to the size
//!   needed, else a new block is appended with `brk`;
//! - `realloc` keeps a heap block in place when it is large enough
//!   (splitting the rest off), when it is the last block (growing the break)
//!   or when merging the free blocks after it, one at a time, makes it large
//!   enough (merged blocks stay merged if not); otherwise it allocates,
//!   copies and frees. A mapped block always moves.
//!
//! Invariants between calls: the heap blocks tile the memory from the first
//! break to the current one and are all on the block list, in order; a free
//! block is never handed out; payloads of live blocks are never written by
//! the allocator (headers only live outside payloads).

use core::ptr::{self, NonNull};

use region_heap_hosted::source::round_up;

use crate::list::BlockList;
use crate::memory::Memory;
use crate::meta::{Block, META_SIZE, STATUS_ALLOC, STATUS_FREE, STATUS_MAPPED};
use crate::valgrind;

/// Requests whose block (payload + header) reaches this go to `mmap`
/// (`malloc`, `realloc`).
pub const MMAP_THRESHOLD: usize = 128 * 1024;
/// The heap's first `brk` step.
pub const PREALLOC_SIZE: usize = 128 * 1024;
/// Alignment of payload sizes and addresses.
pub const ALIGNMENT: usize = 8;
/// Smallest remainder a split leaves as a block: a header and 1 byte,
/// rounded to the alignment.
pub const MIN_SPLIT: usize = META_SIZE + ALIGNMENT;

/// The seed's allocator: the heap's block list and its memory.
pub struct Osmem<M: Memory> {
    memory: M,
    blocks: BlockList,
}

impl<M: Memory> Osmem<M> {
    /// An allocator that has not touched its memory yet.
    ///
    /// # Safety
    /// No other `Osmem` is alive in the process (they would share the one
    /// block list head, see `crate::list`).
    pub const unsafe fn new(memory: M) -> Self {
        Osmem {
            memory,
            // SAFETY: the caller guarantees this is the only owner.
            blocks: unsafe { BlockList::claim() },
        }
    }

    /// The heap's block list (for checks and tests).
    pub fn blocks(&self) -> &BlockList {
        &self.blocks
    }

    /// `os_malloc`: `size` uninitialised bytes, NULL for 0 or on failure.
    pub fn malloc(&mut self, size: usize) -> *mut u8 {
        if size == 0 {
            return ptr::null_mut();
        }
        match self.allocate(size, MMAP_THRESHOLD) {
            Some(block) => hand_out(block),
            None => ptr::null_mut(),
        }
    }

    /// `os_calloc`: `nmemb * size` zeroed bytes, NULL when either is 0, the
    /// product overflows or memory runs out.
    pub fn calloc(&mut self, nmemb: usize, size: usize) -> *mut u8 {
        if nmemb == 0 || size == 0 {
            return ptr::null_mut();
        }
        let Some(total) = nmemb.checked_mul(size) else {
            return ptr::null_mut();
        };
        let threshold = self.memory.page_size();
        let Some(block) = self.allocate(total, threshold) else {
            return ptr::null_mut();
        };
        let payload = hand_out(block);
        // SAFETY: the payload holds `block.size()` bytes that are ours.
        unsafe { payload.write_bytes(0, block.size()) };
        payload
    }

    /// `os_free`: takes a block back; NULL and free blocks are ignored.
    ///
    /// # Safety
    /// `ptr` is NULL or a payload this allocator handed out (possibly
    /// freed since, never unmapped).
    pub unsafe fn free(&mut self, ptr: *mut u8) {
        let Some(payload) = NonNull::new(ptr) else {
            return;
        };
        // SAFETY: `payload` came from this allocator (caller).
        let block = unsafe { Block::from_payload(payload) };
        match block.status() {
            STATUS_ALLOC => {
                block.set_status(STATUS_FREE);
                valgrind::freelike(ptr);
            }
            STATUS_MAPPED => {
                valgrind::freelike(ptr);
                let len = block.size() + META_SIZE;
                // SAFETY: a mapped block is exactly its mapping, made by
                // `map_block` with this length; the user gave it back.
                unsafe { self.memory.unmap(block.header().cast(), len) };
            }
            _ => {}
        }
    }

    /// `os_realloc`: resizes in place when the seed allows it, else moves.
    /// NULL `ptr` is `malloc`, size 0 is `free` (NULL returned), a free
    /// block gives NULL and stays free.
    ///
    /// # Safety
    /// As for [`Osmem::free`].
    pub unsafe fn realloc(&mut self, ptr: *mut u8, size: usize) -> *mut u8 {
        let Some(payload) = NonNull::new(ptr) else {
            return self.malloc(size);
        };
        if size == 0 {
            // SAFETY: forwarded from the caller.
            unsafe { self.free(ptr) };
            return ptr::null_mut();
        }
        // SAFETY: `payload` came from this allocator (caller).
        let block = unsafe { Block::from_payload(payload) };
        let Some(need) = round_up(size, ALIGNMENT) else {
            return ptr::null_mut();
        };
        match block.status() {
            STATUS_ALLOC if need + META_SIZE < MMAP_THRESHOLD => {
                if self.resize_in_place(block, need) {
                    return ptr;
                }
            }
            STATUS_ALLOC | STATUS_MAPPED => {}
            _ => return ptr::null_mut(),
        }
        // SAFETY: `block` is live (caller) and not resized.
        unsafe { self.move_block(block, size) }
    }

    /// A block of at least `size` bytes: mapped when the block reaches
    /// `threshold`, else from the heap.
    fn allocate(&mut self, size: usize, threshold: usize) -> Option<Block> {
        let need = round_up(size, ALIGNMENT)?;
        if need.checked_add(META_SIZE)? >= threshold {
            self.map_block(need)
        } else {
            self.heap_block(need)
        }
    }

    fn map_block(&mut self, need: usize) -> Option<Block> {
        let at = self.memory.map(need + META_SIZE)?;
        // SAFETY: a fresh mapping of `need + META_SIZE` bytes.
        Some(unsafe { Block::write(at, need, STATUS_MAPPED) })
    }

    fn heap_block(&mut self, need: usize) -> Option<Block> {
        self.preallocate()?;
        self.coalesce_all();
        if let Some(block) = self.best_fit(need) {
            self.split(block, need);
            block.set_status(STATUS_ALLOC);
            return Some(block);
        }
        let last = self.blocks.last()?;
        if last.status() == STATUS_FREE {
            self.grow_last(last, need)?;
            last.set_status(STATUS_ALLOC);
            return Some(last);
        }
        let at = self.memory.grow(META_SIZE + need)?;
        debug_assert_eq!(at.as_ptr() as usize, last.end());
        // SAFETY: fresh memory from the break, right after the last block.
        let block = unsafe { Block::write(at, need, STATUS_ALLOC) };
        // SAFETY: `block` is unlinked and starts where the last one ends.
        unsafe { self.blocks.push_back(block) };
        Some(block)
    }

    /// On first heap use, one free block of the whole preallocation.
    fn preallocate(&mut self) -> Option<()> {
        if self.blocks.first().is_none() {
            let at = self.memory.grow(PREALLOC_SIZE)?;
            // SAFETY: fresh memory from the break.
            let block = unsafe { Block::write(at, PREALLOC_SIZE - META_SIZE, STATUS_FREE) };
            // SAFETY: the first block, unlinked.
            unsafe { self.blocks.push_back(block) };
        }
        Some(())
    }

    /// Merges every run of adjacent free blocks into its first block.
    fn coalesce_all(&mut self) {
        let mut next = self.blocks.first();
        while let Some(block) = next {
            if block.status() == STATUS_FREE && self.absorb_next_free(block) {
                continue;
            }
            next = self.blocks.next(block);
        }
    }

    /// Merges the block after `block` into it if that one is free.
    fn absorb_next_free(&mut self, block: Block) -> bool {
        match self.blocks.next(block) {
            Some(next) if next.status() == STATUS_FREE => {
                // SAFETY: `next` is on the list.
                unsafe { self.blocks.remove(next) };
                block.set_size(block.size() + META_SIZE + next.size());
                true
            }
            _ => false,
        }
    }

    /// The smallest free block of at least `need` bytes, lowest first.
    fn best_fit(&self, need: usize) -> Option<Block> {
        self.blocks
            .iter()
            .filter(|b| b.status() == STATUS_FREE && b.size() >= need)
            .min_by_key(|b| b.size())
    }

    /// Whether using `need` bytes of `block` leaves a block's worth.
    fn splits(block: Block, need: usize) -> bool {
        block.size() - need >= MIN_SPLIT
    }

    /// The size `block` keeps when `need` bytes of it are used.
    fn kept_size(block: Block, need: usize) -> usize {
        if Self::splits(block, need) {
            need
        } else {
            block.size()
        }
    }

    /// Cuts `block` to `need` bytes when the rest makes a block of its own.
    fn split(&mut self, block: Block, need: usize) {
        if !Self::splits(block, need) {
            return;
        }
        let rest_size = block.size() - need - META_SIZE;
        // SAFETY: `need < block.size()`, so the header lands inside the
        // block's payload, which is ours: it is free, or the part of a live
        // payload the user gives up.
        let rest = unsafe { Block::write(block.payload().add(need), rest_size, STATUS_FREE) };
        block.set_size(need);
        // SAFETY: `block` is on the list and `rest` starts where it ends.
        unsafe { self.blocks.insert_after(block, rest) };
    }

    /// Grows the last block to `need` bytes by moving the break.
    fn grow_last(&mut self, last: Block, need: usize) -> Option<()> {
        let at = self.memory.grow(need - last.size())?;
        debug_assert_eq!(at.as_ptr() as usize, last.end());
        last.set_size(need);
        Some(())
    }

    /// Makes the live heap `block` hold `need` bytes without moving it, if
    /// the seed's rules allow; returns whether it did.
    fn resize_in_place(&mut self, block: Block, need: usize) -> bool {
        let old = block.size();
        let fits = if old >= need {
            true
        } else if self.blocks.next(block).is_none() {
            self.grow_last(block, need).is_some()
        } else {
            self.absorb_until(block, need)
        };
        // Merged neighbours stay merged even when the block still does not
        // fit: it owns them from now on, and valgrind must know its size.
        let kept = if fits {
            Self::kept_size(block, need)
        } else {
            block.size()
        };
        if kept != old {
            valgrind::resize_in_place(block.payload().as_ptr(), old, kept);
        }
        if fits {
            self.split(block, need);
        }
        fits
    }

    /// Merges the free blocks after `block` one at a time until it holds
    /// `need` bytes; the merges stay when it never does.
    fn absorb_until(&mut self, block: Block, need: usize) -> bool {
        while block.size() < need {
            if !self.absorb_next_free(block) {
                return false;
            }
        }
        true
    }

    /// Moves a live block to a new one of `size` bytes.
    ///
    /// # Safety
    /// `block` is live (allocated or mapped).
    unsafe fn move_block(&mut self, block: Block, size: usize) -> *mut u8 {
        let new = self.malloc(size);
        if new.is_null() {
            return new;
        }
        let old = block.payload().as_ptr();
        // SAFETY: both payloads are live and distinct, each holds at least
        // the bytes copied.
        unsafe { ptr::copy_nonoverlapping(old, new, block.size().min(size)) };
        // SAFETY: `old` is a live payload of this allocator (caller).
        unsafe { self.free(old) };
        new
    }
}

/// The payload of a block being handed out, announced to valgrind.
fn hand_out(block: Block) -> *mut u8 {
    let payload = block.payload().as_ptr();
    valgrind::malloclike(payload, block.size(), false);
    payload
}

#[cfg(test)]
mod tests;
