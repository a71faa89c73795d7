//! Every `HeapError` variant, provoked the way a buggy caller would, with
//! the exact error asserted and the other live blocks shown intact after.

mod common;

use common::{free_witnesses, witnessed_heap, Arena};
use std::alloc::Layout;
use std::ptr::NonNull;

use region_heap::{
    Corruption, Heap, HeapError, GUARD_SIZE, HEADER_SIZE, MAX_CHUNK_SIZE, MAX_REGIONS,
};

fn l(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// The witnesses still hold their data, the heap is consistent, and every
/// witness can be freed.
fn intact(mut heap: Heap, witnesses: Vec<(NonNull<u8>, u8)>) {
    heap.check().unwrap();
    free_witnesses(&mut heap, witnesses);
    heap.check().unwrap();
    assert_eq!(heap.stats().used_blocks, 0);
}

#[test]
fn out_of_memory() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    assert_eq!(
        heap.allocate(l(1 << 20)),
        Err(HeapError::OutOfMemory {
            size: 1 << 20,
            align: 8
        })
    );
    assert_eq!(heap.stats().failures, 1);
    intact(heap, w);
}

#[test]
fn size_overflow_never_wraps() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let huge = Layout::from_size_align(isize::MAX as usize - 7, 8).unwrap();
    assert_eq!(
        heap.allocate(huge),
        Err(HeapError::SizeOverflow { size: huge.size() })
    );
    let big = Layout::from_size_align(MAX_CHUNK_SIZE + 1, 8).unwrap();
    assert_eq!(
        heap.allocate(big),
        Err(HeapError::SizeOverflow { size: big.size() })
    );
    // SAFETY: a live witness; the failed realloc leaves it intact.
    let r = unsafe { heap.realloc(w[0].0, l(200), usize::MAX) };
    assert_eq!(r, Err(HeapError::SizeOverflow { size: usize::MAX }));
    intact(heap, w);
}

#[test]
fn bad_alignment() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let layout = Layout::from_size_align(8, 1 << 40).unwrap();
    let failures = heap.stats().failures;
    assert_eq!(
        heap.allocate(layout),
        Err(HeapError::BadAlignment { align: 1 << 40 })
    );
    assert_eq!(heap.stats().failures, failures + 1, "counted as a failure");
    intact(heap, w);
}

#[test]
fn pointer_from_another_heap() {
    let arena = Arena::new(64 << 10);
    let other_arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let (mut other, ow) = witnessed_heap(&other_arena);
    let foreign = other.allocate(l(64)).unwrap();
    let addr = foreign.as_ptr().addr();
    // SAFETY: the pointer is refused before anything is touched.
    assert_eq!(
        unsafe { heap.free(foreign) },
        Err(HeapError::NotFromHeap { addr })
    );
    let stack = 0u64;
    let on_stack = NonNull::from(&stack).cast::<u8>();
    let addr = on_stack.as_ptr().addr();
    // SAFETY: as above.
    assert_eq!(
        unsafe { heap.free(on_stack) },
        Err(HeapError::NotFromHeap { addr })
    );
    assert_eq!(heap.stats().misuses, 2);
    // SAFETY: the foreign block is live in its own heap.
    unsafe { other.free(foreign) }.unwrap();
    intact(heap, w);
    intact(other, ow);
}

#[test]
fn interior_pointer() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    // SAFETY: inside a witness; refused without change.
    let inner = unsafe { w[1].0.add(64) };
    let addr = inner.as_ptr().addr();
    assert_eq!(
        unsafe { heap.free(inner) },
        Err(HeapError::NotBlockStart { addr })
    );
    let odd = unsafe { w[1].0.add(3) };
    let addr = odd.as_ptr().addr();
    assert_eq!(
        unsafe { heap.free(odd) },
        Err(HeapError::NotBlockStart { addr })
    );
    intact(heap, w);
}

#[test]
fn double_free_plain_and_after_merge() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let a = heap.allocate(l(100)).unwrap();
    let b = heap.allocate(l(100)).unwrap();
    let _keep = heap.allocate(l(100)).unwrap();
    // SAFETY: a and b are live; the second frees are refused.
    unsafe {
        heap.free(a).unwrap();
        let addr = a.as_ptr().addr();
        assert_eq!(heap.free(a), Err(HeapError::DoubleFree { addr }));
        // b merges into a's free block: its header is gone, and still caught.
        heap.free(b).unwrap();
        let addr = b.as_ptr().addr();
        assert_eq!(heap.free(b), Err(HeapError::DoubleFree { addr }));
        heap.free(_keep).unwrap();
    }
    intact(heap, w);
}

#[test]
fn layout_mismatch() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let p = heap.allocate(l(100)).unwrap();
    let addr = p.as_ptr().addr();
    // SAFETY: the claimed layout is refused before anything changes.
    let r = unsafe { heap.deallocate(p, l(5000)) };
    assert_eq!(
        r,
        Err(HeapError::LayoutMismatch {
            addr,
            size: 5000,
            align: 8
        })
    );
    let strict = Layout::from_size_align(64, 1 << 20).unwrap();
    assert_eq!(
        unsafe { heap.deallocate(p, strict) },
        Err(HeapError::LayoutMismatch {
            addr,
            size: 64,
            align: 1 << 20
        })
    );
    unsafe { heap.deallocate(p, l(100)) }.unwrap();
    intact(heap, w);
}

/// A block too large for a quick list: its free merges, so it follows the
/// block's back link.
const MERGED: usize = 1024;

#[test]
fn corrupted_header_is_reported_with_its_address() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let victim = heap.allocate(l(MERGED)).unwrap();
    let (header, expected) = overwrite_back_link(victim);
    assert_eq!(heap.check(), expected);
    assert_eq!(unsafe { heap.free(victim) }.map(|_| ()), expected);
    // Named once, then quarantined: the heap is whole again and the
    // damaged block is out of use for good.
    heap.check().unwrap();
    assert_eq!(heap.stats().quarantined_blocks, 1);
    assert_eq!(
        unsafe { heap.free(victim) },
        Err(HeapError::Corrupted {
            addr: header,
            what: Corruption::Quarantined
        })
    );
    intact(heap, w);
}

/// Overwrites the back link in the header of the live block `victim` with
/// 4 bytes of `0x7f`, as a stray write would; returns the header's address
/// and the report of that damage: `BlockLinks`, or with `crc` the
/// checksum, which catches it before any link is read.
fn overwrite_back_link(victim: NonNull<u8>) -> (usize, Result<(), HeapError>) {
    let header = victim.as_ptr().wrapping_sub(HEADER_SIZE + GUARD_SIZE);
    // SAFETY: the block's header lies inside the heap's arena.
    unsafe { header.add(4).write_bytes(0x7f, 4) };
    let what = if cfg!(feature = "crc") {
        Corruption::Checksum
    } else {
        Corruption::BlockLinks
    };
    let report = Err(HeapError::Corrupted {
        addr: header.addr(),
        what,
    });
    (header.addr(), report)
}

/// A free that caches the block never follows its back link, so an
/// overwritten back link (the checksum off) is not the free's business: the
/// free is accepted, `check()` names the damage, and the flush that merges
/// the block reports it and quarantines the block.
#[test]
fn an_overwritten_back_link_of_a_cached_block_is_reported_by_check_and_flush() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let victim = heap.allocate(l(64)).unwrap();
    let (_, damaged) = overwrite_back_link(victim);
    assert_eq!(heap.check(), damaged);
    if cfg!(feature = "crc") {
        // The checksum is part of the one-compare proof of a free.
        assert_eq!(unsafe { heap.free(victim) }.map(|_| ()), damaged);
    } else {
        unsafe { heap.free(victim) }.unwrap();
        assert_eq!(heap.check(), damaged);
        assert_eq!(heap.flush_quick_lists(), damaged);
    }
    heap.check().unwrap();
    assert_eq!(heap.stats().quarantined_blocks, 1);
    intact(heap, w);
}

#[test]
fn region_too_small_overlapping_or_too_many() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let small = Arena::new(4096);
    let r = unsafe { heap.add_region(small.ptr, 1024) };
    assert_eq!(
        r,
        Err(HeapError::RegionTooSmall {
            start: small.ptr.addr(),
            size: 1024
        })
    );
    let r = unsafe { heap.add_region(arena.ptr.wrapping_add(4096), 8192) };
    assert_eq!(
        r,
        Err(HeapError::RegionOverlap {
            start: arena.ptr.addr() + 4096,
            size: 8192
        })
    );
    let r = unsafe { heap.add_region(std::ptr::null_mut::<u8>().wrapping_sub(16), 64) };
    assert!(
        matches!(r, Err(HeapError::RegionTooSmall { .. })),
        "wrapping range refused"
    );
    let pieces = Arena::new(MAX_REGIONS * 16384);
    for i in 0..MAX_REGIONS - 1 {
        unsafe { heap.add_region(pieces.ptr.wrapping_add(i * 16384), 16384) }.unwrap();
    }
    let last = pieces.ptr.wrapping_add((MAX_REGIONS - 1) * 16384);
    assert_eq!(
        unsafe { heap.add_region(last, 16384) },
        Err(HeapError::TooManyRegions)
    );
    intact(heap, w);
}

#[test]
fn unknown_region() {
    let arena = Arena::new(64 << 10);
    let other_arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let mut other = Heap::new();
    let id =
        unsafe { other.add_region_with_priority(other_arena.ptr, other_arena.len(), 0) }.unwrap();
    let spare = Arena::new(8192);
    assert_eq!(
        unsafe { heap.extend(id, spare.ptr, 8192) },
        Err(HeapError::UnknownRegion)
    );
    assert_eq!(heap.region_stats(id), Err(HeapError::UnknownRegion));
    intact(heap, w);
}

#[test]
fn range_unavailable() {
    let arena = Arena::new(64 << 10);
    let (mut heap, w) = witnessed_heap(&arena);
    let start = w[0].0.as_ptr();
    assert_eq!(
        heap.reserve(start, 64),
        Err(HeapError::RangeUnavailable {
            start: start.addr(),
            size: 64
        })
    );
    let outside = Arena::new(4096);
    assert_eq!(
        heap.reserve(outside.ptr.wrapping_add(64), 64),
        Err(HeapError::RangeUnavailable {
            start: outside.ptr.addr() + 64,
            size: 64
        })
    );
    intact(heap, w);
}

#[test]
fn errors_name_what_and_where() {
    let e = HeapError::DoubleFree { addr: 0x1000 };
    assert_eq!(e.to_string(), "double free of 0x1000");
    let e = HeapError::Corrupted {
        addr: 0x2000,
        what: Corruption::AdjacentFree,
    };
    assert_eq!(
        e.to_string(),
        "heap corrupted at 0x2000: two adjacent free blocks"
    );
}
