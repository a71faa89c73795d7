//! A std program whose global allocator is region-heap.
//!
//! std allocates before `main`, so the heap cannot be given memory in
//! `main`: a `StaticArena` in a `static` is taken on the first allocation.
//! (For memory from the OS, `mmap` or `brk`, see the repository's `hosted/`
//! crate.)
//!
//! `cargo run --example std_global`

use region_heap::{LockedHeap, StaticArena};

static ARENA: StaticArena<{ 8 << 20 }> = StaticArena::new();

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::with_static_arena(&ARENA);

fn main() {
    let words: Vec<String> = (0..1000).map(|i| format!("word {i}")).collect();
    assert!(
        ARENA.contains(words.as_ptr()),
        "std allocates from the arena"
    );
    // `HEAP.stats()` releases the lock before `format!` allocates.
    println!("{} strings; the heap:\n{}", words.len(), HEAP.stats());
    HEAP.check().expect("the heap is consistent");
    drop(words);
    let stats = HEAP.stats();
    println!(
        "after the drop: {} bytes in use, peak {}",
        stats.in_use_bytes, stats.peak_in_use_bytes
    );
}
