//! Swapping the kernel's heap is a change of one type: the same workload on
//! region-heap (good fit and best fit) and on the two reference backends,
//! through the same `LockedHeap` calls, with no `Backend` import.
//!
//! `cargo run --example backend_swap --features linked-list,buddy`

use core::alloc::{GlobalAlloc, Layout};
use std::mem::MaybeUninit;

use region_heap::{BestFit, BuddyBackend, Heap, LinkedListBackend, LockedHeap};

fn workload<B: region_heap::Backend>(heap: &LockedHeap<B>) {
    let memory = Box::leak(vec![MaybeUninit::uninit(); 1 << 20].into_boxed_slice());
    heap.init_from_slice(memory);
    let layout = Layout::from_size_align(200, 16).unwrap();
    // SAFETY: valid layouts; every block is freed once with its layout.
    let blocks: Vec<*mut u8> = (0..1000).map(|_| unsafe { heap.alloc(layout) }).collect();
    assert!(blocks.iter().all(|p| !p.is_null()));
    let stats = heap.stats();
    for p in blocks {
        // SAFETY: live blocks of this heap.
        unsafe { heap.dealloc(p, layout) };
    }
    heap.check().expect("consistent");
    println!(
        "{:<24} {:>8} bytes in use for 1000 x 200 bytes",
        B::NAME,
        stats.in_use_bytes
    );
}

fn main() {
    let good: LockedHeap = LockedHeap::empty();
    let best: LockedHeap<Heap<BestFit>> = LockedHeap::with_backend(None);
    let linked: LockedHeap<LinkedListBackend> = LockedHeap::with_backend(None);
    let buddy: LockedHeap<BuddyBackend<32>> = LockedHeap::with_backend(None);
    workload(&good);
    workload(&best);
    workload(&linked);
    workload(&buddy);
}
