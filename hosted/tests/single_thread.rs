//! A single thread never uses the depot. Its bins grow past the shared
//! limits (a program's rounds of frees then come back from its cache),
//! and the blocks it leaves idle while it takes other sizes from the heaps
//! go back to them, where they merge (its own process: no other thread
//! runs).

use region_heap_hosted::global;
use region_heap_hosted::malloc::{free, malloc};

fn used_blocks() -> usize {
    let mut used = 0;
    global::for_each_heap(|_, heap| used += heap.stats().used_blocks);
    used
}

#[test]
fn a_single_thread_keeps_its_frees_until_it_moves_on_to_other_sizes() {
    if !region_heap::raw::EXACT_USABLE {
        return; // no thread cache with the core's guard zones
    }
    global::prefer_mmap();
    assert!(global::ensure_init());
    // Ten times the shared limit of the bin (4,096 blocks at most), about
    // 2 MiB: over the smallest budget.
    let blocks: Vec<_> = (0..40_000).map(|_| malloc(24)).collect();
    let before = used_blocks();
    for p in blocks {
        // SAFETY: live blocks, freed once.
        unsafe { free(p) };
    }
    assert_eq!(global::depot_blocks(), 0, "nothing was shelved");
    assert_eq!(used_blocks(), before, "every block stayed cached");
    // 4 MiB of another size, from the heaps: the idle blocks go back.
    let others: Vec<_> = (0..4_000).map(|_| malloc(1000)).collect();
    let used = used_blocks() - others.len();
    assert!(used < before - 10_000, "idle blocks went back: {used} used");
    for p in others {
        // SAFETY: live blocks, freed once.
        unsafe { free(p) };
    }
}
