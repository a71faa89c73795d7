//! A thread that only frees (a consumer) uses its cache too, and its full
//! bins go to the depot, where an allocating thread takes them whole (its
//! own process, so no other test allocates meanwhile).

use region_heap_hosted::global;
use region_heap_hosted::malloc::{free, malloc};

fn used_blocks() -> usize {
    let mut used = 0;
    global::for_each_heap(|_, heap| used += heap.stats().used_blocks);
    used
}

#[test]
fn blocks_freed_by_another_thread_come_back_through_the_depot() {
    if !region_heap::raw::EXACT_USABLE {
        return; // no thread cache with the core's guard zones
    }
    global::prefer_mmap();
    assert!(global::ensure_init());
    // Enough blocks of one size to fill the freeing thread's bin (4,096
    // blocks at most) twice over.
    let size = 24;
    let blocks: Vec<usize> = (0..10_000)
        .map(|i| {
            let p = malloc(size);
            // SAFETY: `size` writable bytes.
            unsafe { p.write_bytes(i as u8, size) };
            p as usize
        })
        .collect();
    let used = used_blocks();
    let freed = blocks.clone();
    std::thread::spawn(move || {
        for (i, &p) in freed.iter().enumerate() {
            let p = p as *mut u8;
            // SAFETY: a live block, written above; freed once.
            unsafe {
                assert_eq!(*p, i as u8);
                free(p);
            }
        }
    })
    .join()
    .unwrap();
    let shelved = global::depot_blocks();
    assert!(
        shelved >= 4_000,
        "the consumer's full bins were shelved: {shelved}"
    );
    assert_eq!(
        used_blocks(),
        used - (10_000 - shelved),
        "the rest went back"
    );
    // This thread takes whole chains back: the blocks it allocates now are
    // the shelved ones, without the heaps.
    let again: Vec<usize> = (0..shelved).map(|_| malloc(size) as usize).collect();
    assert_eq!(global::depot_blocks(), 0);
    let known: std::collections::HashSet<usize> = blocks.iter().copied().collect();
    // This thread's bin may still hold the rest of its last refill (at most
    // one batch, 64 blocks): those come first.
    let reused = again.iter().filter(|p| known.contains(p)).count();
    assert!(
        reused + 64 >= shelved,
        "{reused} of {shelved} came from the shelves"
    );
    for p in again {
        // SAFETY: live blocks, freed once.
        unsafe { free(p as *mut u8) };
    }
    global::for_each_heap(|_, heap| heap.check().unwrap());
}
