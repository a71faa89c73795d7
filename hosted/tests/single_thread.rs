//! A single thread never uses the depot: its full bins go back to the
//! heaps, where the blocks merge (its own process: no other thread runs).

use region_heap_hosted::global;
use region_heap_hosted::malloc::{free, malloc};

#[test]
fn a_single_thread_gives_full_bins_back_to_the_heaps() {
    if !region_heap::raw::EXACT_USABLE {
        return; // no thread cache with the core's guard zones
    }
    global::prefer_mmap();
    assert!(global::ensure_init());
    // Enough blocks of one size to fill this thread's bin (4,096 blocks at
    // most) twice over.
    let blocks: Vec<_> = (0..10_000).map(|_| malloc(24)).collect();
    for p in blocks {
        // SAFETY: live blocks, freed once.
        unsafe { free(p) };
    }
    assert_eq!(global::depot_blocks(), 0, "nothing was shelved");
    let mut used = 0;
    global::for_each_heap(|_, heap| used += heap.stats().used_blocks);
    assert!(used < 5_000, "the bins' overflow went back: {used} used");
}
