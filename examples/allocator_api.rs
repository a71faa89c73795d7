//! A collection in a heap of its own, through allocator-api2's `Allocator`
//! (stable Rust): the global allocator stays the system's.
//!
//! `cargo run --example allocator_api --features allocator-api2`
//! (with the `nightly` feature, `std::vec::Vec::new_in(&HEAP)` works the
//! same on nightly Rust.)

use allocator_api2::vec::Vec;
use region_heap::{LockedHeap, StaticArena};

static ARENA: StaticArena<{ 1 << 20 }> = StaticArena::new();
static SCRATCH: LockedHeap = LockedHeap::with_static_arena(&ARENA);

fn main() {
    let mut v = Vec::new_in(&SCRATCH);
    v.extend(0..10_000u32);
    assert!(ARENA.contains(v.as_ptr()));
    assert_eq!(v.iter().map(|&x| x as u64).sum::<u64>(), 49_995_000);
    println!(
        "{} values in the scratch heap:\n{}",
        v.len(),
        SCRATCH.stats()
    );
    drop(v);
    assert_eq!(SCRATCH.stats().used_blocks, 0);
}
