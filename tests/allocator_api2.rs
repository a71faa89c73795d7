//! `allocator_api2::alloc::Allocator` for `&LockedHeap` (feature
//! `allocator-api2`): collections in a heap of their own.
#![cfg(feature = "allocator-api2")]

use allocator_api2::alloc::{Allocator, Layout};
use allocator_api2::vec::Vec;
use region_heap::{LockedHeap, StaticArena};

/// A heap of its own per test, fed by a static arena (no leak for Miri).
macro_rules! heap {
    () => {{
        static ARENA: StaticArena<{ 256 << 10 }> = StaticArena::new();
        static HEAP: LockedHeap = LockedHeap::with_static_arena(&ARENA);
        &HEAP
    }};
}

#[test]
fn a_vec_in_the_heap_keeps_its_pattern() {
    let heap = heap!();
    let mut v = Vec::new_in(heap);
    for i in 0..20_000u32 {
        v.push(i.wrapping_mul(2_654_435_761));
    }
    let stats = heap.stats();
    assert!(
        stats.used_blocks == 1 && stats.in_use_bytes >= 80_000,
        "{stats:?}"
    );
    assert!(
        stats.reallocations > 5,
        "the vec grew through realloc: {stats:?}"
    );
    for (i, x) in v.iter().enumerate() {
        assert_eq!(*x, (i as u32).wrapping_mul(2_654_435_761));
    }
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v[9], 9u32.wrapping_mul(2_654_435_761));
    drop(v);
    assert_eq!(heap.stats().used_blocks, 0);
    heap.check().unwrap();
}

#[test]
fn grow_with_a_larger_alignment_and_zero_sizes() {
    let heap = heap!();
    let a = &heap;
    let small = Layout::from_size_align(24, 8).unwrap();
    let p = a.allocate_zeroed(small).unwrap();
    assert!(unsafe { p.as_ref() }.iter().all(|&b| b == 0));
    // SAFETY: the block holds 24 bytes.
    unsafe { p.cast::<u8>().write_bytes(0x77, 24) };
    let big = Layout::from_size_align(4000, 256).unwrap();
    // SAFETY: `p` is live with `small`; `big` is larger.
    let q = unsafe { a.grow(p.cast(), small, big) }.unwrap();
    assert_eq!(q.cast::<u8>().as_ptr().addr() % 256, 0);
    // SAFETY: the first 24 bytes were copied.
    assert!(unsafe { &q.as_ref()[..24] }.iter().all(|&b| b == 0x77));
    // SAFETY: `q` is live with `big`.
    unsafe { a.deallocate(q.cast(), big) };
    let zero = Layout::from_size_align(0, 1).unwrap();
    let z = a.allocate(zero).unwrap();
    // SAFETY: `z` is live with `zero`.
    unsafe { a.deallocate(z.cast(), zero) };
    assert_eq!(heap.stats().used_blocks, 0);
    heap.check().unwrap();
}

#[test]
fn a_vec_in_a_per_cpu_heap_keeps_its_pattern() {
    use region_heap::{MemorySource, PerCpuHeap};
    static ARENAS: [StaticArena<{ 128 << 10 }>; 2] = [StaticArena::new(), StaticArena::new()];
    fn cpu() -> usize {
        1
    }
    let heap: PerCpuHeap<2> = PerCpuHeap::new(cpu);
    for (i, arena) in ARENAS.iter().enumerate() {
        let (start, len) = arena.grow(0).expect("each arena is taken once");
        // SAFETY: a static arena, taken once, given to one heap.
        unsafe { heap.add_memory(i, start.as_ptr(), len) }.unwrap();
    }
    let mut v = Vec::new_in(&heap);
    for i in 0..10_000u32 {
        v.push(i ^ 0x5A5A);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 ^ 0x5A5A));
    assert_eq!(heap.heap(1).stats().used_blocks, 1, "cpu 1's heap serves");
    drop(v);
    assert_eq!(heap.stats().used_blocks, 0);
    heap.check().unwrap();
}
