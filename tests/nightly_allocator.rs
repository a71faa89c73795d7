//! `core::alloc::Allocator` for `&LockedHeap` (feature `nightly`, nightly
//! Rust). `cargo xtask test` runs it under Miri.
#![cfg(feature = "nightly")]
#![cfg_attr(feature = "nightly", feature(allocator_api))]

use region_heap::{LockedHeap, StaticArena};

static ARENA: StaticArena<{ 256 << 10 }> = StaticArena::new();
static HEAP: LockedHeap = LockedHeap::with_static_arena(&ARENA);

#[test]
fn std_collections_in_the_heap() {
    let heap = &HEAP;
    let mut v: Vec<u64, &LockedHeap> = Vec::new_in(heap);
    for i in 0..2_000u64 {
        v.push(i * 3);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
    let b = Box::new_in([0xabu8; 100], heap);
    assert_eq!(heap.stats().used_blocks, 2);
    assert!(b.iter().all(|&x| x == 0xab));
    drop((v, b));
    assert_eq!(heap.stats().used_blocks, 0);
    heap.check().unwrap();
}
