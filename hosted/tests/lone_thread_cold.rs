//! A lone thread's cold pass (`Bins::detach_cold`) after the program took
//! some of a bin's blocks back (pops that leave the bin non-empty, so its
//! idle mark is above its length) gives the idle blocks back: no overflow
//! inside `malloc`, no walk of the whole bin that gives nothing back.

use region_heap_hosted::global;
use region_heap_hosted::malloc::{free, malloc};

fn used_blocks() -> usize {
    let mut used = 0;
    global::for_each_heap(|_, heap| used += heap.stats().used_blocks);
    used
}

#[test]
fn a_cold_pass_after_the_program_took_some_blocks_back() {
    if !region_heap::raw::EXACT_USABLE {
        return;
    }
    global::prefer_mmap();
    assert!(global::ensure_init());
    let blocks: Vec<_> = (0..80_000).map(|_| malloc(24)).collect();
    for p in blocks {
        // SAFETY: live blocks, freed once.
        unsafe { free(p) };
    }
    // A refill from the heaps (2 MiB were refilled already): one cold pass, which marks the 80,000
    // cached blocks of the 24-byte bin.
    let mut others: Vec<_> = (0..100).map(|_| malloc(1000)).collect();
    // The program takes 50,000 of them back: 30,000 (1.4 MiB, over the budget) stay cached.
    let again: Vec<_> = (0..50_000).map(|_| malloc(24)).collect();
    let before = used_blocks();
    // Another 1.5 MiB from the heaps: the next cold pass.
    others.extend((0..1_500).map(|_| malloc(1000)));
    let after = used_blocks() - 1_500;
    eprintln!(
        "used blocks {before} -> {after} (the 30,000 idle ones should go back, half at least)"
    );
    assert!(after + 2_000 < before, "idle cached blocks went back");
    for p in others.into_iter().chain(again) {
        // SAFETY: live blocks, freed once.
        unsafe { free(p) };
    }
}
