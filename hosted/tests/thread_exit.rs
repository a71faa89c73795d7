//! A thread that exits with blocks in its cache gives them back to their
//! heaps (its own process, so no other test allocates meanwhile).

use region_heap_hosted::global;
use region_heap_hosted::malloc::{free, malloc};

fn used_blocks() -> usize {
    let mut used = 0;
    global::for_each_heap(|_, heap| used += heap.stats().used_blocks);
    used
}

#[test]
fn an_exiting_thread_flushes_its_cache() {
    global::prefer_mmap();
    assert!(global::ensure_init());
    let before = used_blocks();
    std::thread::spawn(move || {
        let blocks: Vec<_> = (0..3000).map(|i| malloc(1 + i % 900)).collect();
        for (i, &p) in blocks.iter().enumerate() {
            // SAFETY: `1 + i % 900` writable bytes.
            unsafe { p.write_bytes(i as u8, 1 + i % 900) };
        }
        for p in blocks {
            // SAFETY: live blocks, freed once.
            unsafe { free(p) };
        }
        if region_heap::raw::EXACT_USABLE {
            // The cache is on (it is off with the core's guard zones).
            assert!(
                used_blocks() > before,
                "some blocks are cached, so still used"
            );
        }
    })
    .join()
    .unwrap();
    assert_eq!(
        used_blocks(),
        before + global::depot_blocks(),
        "the exit hook gave every cached block back (the cache shed some to \
         the depot while the thread ran: they wait there for other threads)"
    );
    global::for_each_heap(|_, heap| heap.check().unwrap());
}
