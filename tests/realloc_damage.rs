//! realloc meeting damage: it refuses before it allocates, and a damaged
//! link it reads is reported, never followed or scaled into an overflow.
//!
//! A move proves the old block's merge before allocating unless the block
//! will go onto a quick list; an aligned carve may give the old block a
//! small gap (changing its size, hence its list), so such an allocation
//! gets the proof too.
//!
//! Plain build only: the scenes place blocks by the plain header's size,
//! and with `crc` a checksum names the damage before any link is read.
#![cfg(not(any(feature = "crc", feature = "guard", feature = "scramble")))]

mod common;

use common::Arena;
use std::alloc::Layout;
use std::ptr::NonNull;

use region_heap::{Corruption, Heap, HeapError, GUARD_SIZE, HEADER_SIZE};

/// A heap over `arena` whose every request is a block (slabs off).
fn blocks_only_heap(arena: &Arena) -> Heap {
    let mut heap = Heap::new();
    heap.set_slabs(false);
    // SAFETY: the arena outlives the heap (callers drop it last).
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    heap
}

fn header_of(p: NonNull<u8>) -> *mut u8 {
    p.as_ptr().wrapping_sub(HEADER_SIZE + GUARD_SIZE)
}

#[test]
fn realloc_refuses_a_damaged_block_before_it_allocates() {
    let arena = Arena::new(64 << 10);
    let mut heap = blocks_only_heap(&arena);
    let a32 = Layout::from_size_align(512, 32).unwrap();
    // An aligned block is carved from the end of a free block: `b` goes
    // at the end of a hole `x` leaves before `c`, which must be 32-aligned
    // for `b` (528 bytes) to end exactly there. The hole (576 or 592 bytes)
    // is in the first class the aligned search takes.
    let probe = heap.allocate(Layout::new::<u8>()).unwrap();
    let first = header_of(probe).addr();
    // SAFETY: a live block of this heap (it merges back).
    unsafe { heap.free(probe) }.unwrap();
    let hole = if (first + 576).is_multiple_of(32) {
        576
    } else {
        592
    };
    let x = heap
        .allocate(Layout::from_size_align(hole - HEADER_SIZE, 8).unwrap())
        .unwrap();
    let c = heap
        .allocate(Layout::from_size_align(48, 8).unwrap())
        .unwrap(); // 64
    let d = heap
        .allocate(Layout::from_size_align(624, 8).unwrap())
        .unwrap(); // 640
    let _e = heap
        .allocate(Layout::from_size_align(16, 8).unwrap())
        .unwrap();
    // SAFETY: a live block of this heap.
    unsafe { heap.free(x) }.unwrap();
    let b = heap.allocate(a32).unwrap(); // block of 528 bytes
                                         // Take every other byte of the region.
    for size in [8192, 4096, 2048, 1024, 512, 256, 128, 64, 32, 16, 1] {
        while heap
            .allocate(Layout::from_size_align(size, 8).unwrap())
            .is_ok()
        {}
    }
    let hb = header_of(b).addr();
    eprintln!(
        "b hdr {hb:#x} (mod 32 = {}), c {:#x}, d {:#x}",
        hb % 32,
        header_of(c).addr(),
        header_of(d).addr()
    );
    assert_eq!(header_of(c).addr() - hb, 528);
    assert_eq!(header_of(d).addr() - header_of(c).addr(), 64);
    // SAFETY: live blocks of this heap.
    unsafe { heap.free(c) }.unwrap(); // cached
    unsafe { heap.free(d) }.unwrap(); // free, 640 bytes, next to cached c
    let before = heap.stats();
    // An overrun of b's predecessor writes b's back link.
    // SAFETY: a header inside the arena.
    unsafe { (hb as *mut u8).add(4).write_bytes(0x7f, 4) };
    let damaged = Err(HeapError::Corrupted {
        addr: hb,
        what: Corruption::BlockLinks,
    });
    // SAFETY: b is live, allocated with `a32`.
    let r = unsafe { heap.realloc(b, a32, 600) };
    let after = heap.stats();
    eprintln!("realloc: {r:?}");
    eprintln!(
        "allocations {} -> {}, frees {} -> {}, cached_blocks {} -> {}, misuses {} -> {}",
        before.allocations,
        after.allocations,
        before.frees,
        after.frees,
        before.cached_blocks,
        after.cached_blocks,
        before.misuses,
        after.misuses
    );
    assert_eq!(r, damaged);
    // A refused call changes nothing: no allocation was made and undone
    // (the op counters do not drift: a free counted with no allocation).
    assert_eq!(
        after.frees, before.frees,
        "a free counted for the undone allocation"
    );
    assert_eq!(after.allocations, before.allocations);
}

/// A free successor's forward link overwritten with a huge value: the grow
/// check of `Region::resize_in_place` must not scale it into an overflow
/// (on 32-bit targets, a panic with overflow checks), and the damage is
/// reported with the successor's address.
#[test]
fn grow_into_a_free_successor_with_a_huge_forward_link() {
    let arena = Arena::new(64 << 10);
    let mut heap = blocks_only_heap(&arena);
    let l64 = Layout::from_size_align(64, 8).unwrap();
    let b = heap.allocate(l64).unwrap();
    let f = heap
        .allocate(Layout::from_size_align(1000, 8).unwrap())
        .unwrap();
    let _g = heap.allocate(l64).unwrap();
    // Through the index, not a quick list.
    // SAFETY: a live block of this heap.
    unsafe { heap.free(f) }.unwrap();
    let hf = header_of(f);
    // An overrun of b writes its free successor's forward link.
    // SAFETY: a header inside the arena.
    unsafe { hf.cast::<i32>().write(i32::MAX) };
    // SAFETY: b is live, allocated with `l64`.
    let r = unsafe { heap.realloc(b, l64, 200) };
    assert_eq!(
        r,
        Err(HeapError::Corrupted {
            addr: hf.addr(),
            what: Corruption::BlockLinks
        })
    );
    // Quarantined: the heap is whole again and b still holds its bytes.
    heap.check().unwrap();
    // SAFETY: b is live.
    unsafe { heap.free(b) }.unwrap();
}
