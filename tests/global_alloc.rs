//! A std program whose global allocator is region-heap's `LockedHeap` over a
//! 64 MiB static region, running real std work on 4 threads.
//!
//! The region is handed over by a growth hook on the first allocation (std
//! allocates before `main`, so the heap cannot wait for the test to start).

use std::collections::{BTreeMap, HashMap};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use region_heap::{LockedHeap, MemorySource};

const ARENA_SIZE: usize = 64 << 20;

#[repr(C, align(4096))]
struct Arena([u8; ARENA_SIZE]);

static mut ARENA: Arena = Arena([0; ARENA_SIZE]);

/// Hands out the static arena, once.
struct StaticArena {
    given: AtomicBool,
}

// SAFETY: the arena is handed out at most once, and nothing else uses it.
unsafe impl MemorySource for StaticArena {
    fn grow(&self, _min_size: usize) -> Option<(NonNull<u8>, usize)> {
        if self.given.swap(true, Ordering::SeqCst) {
            return None;
        }
        let ptr = std::ptr::addr_of_mut!(ARENA).cast::<u8>();
        Some((NonNull::new(ptr)?, ARENA_SIZE))
    }
}

static SOURCE: StaticArena = StaticArena {
    given: AtomicBool::new(false),
};

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::with_source(&SOURCE);

fn arena_range() -> std::ops::Range<usize> {
    let start = std::ptr::addr_of!(ARENA).addr();
    start..start + ARENA_SIZE
}

fn worker(seed: u64) -> u64 {
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut words: Vec<String> = (0..20_000)
        .map(|_| format!("w{:x}", next() % 100_000))
        .collect();
    words.sort();
    assert!(words.windows(2).all(|w| w[0] <= w[1]));
    let mut counts: HashMap<String, u32> = HashMap::new();
    for w in &words {
        *counts.entry(w.clone()).or_default() += 1;
    }
    let mut tree: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for i in 0..5_000u64 {
        tree.insert(next() % 10_000, vec![(i % 251) as u8; (i % 300) as usize]);
    }
    for (_, v) in tree.iter() {
        assert!(
            v.windows(2).all(|w| w[0] == w[1]),
            "a vector lost its pattern"
        );
    }
    let mut grow = Vec::new();
    for i in 0..100_000u32 {
        grow.push(i);
    }
    grow.truncate(10);
    grow.shrink_to_fit();
    assert_eq!(grow, (0..10).collect::<Vec<_>>());
    counts.len() as u64 + tree.len() as u64
}

#[test]
fn std_work_on_four_threads() {
    let boxed = Box::new(42u64);
    let addr = (&*boxed as *const u64).addr();
    assert!(
        arena_range().contains(&addr),
        "std allocations come from the region"
    );

    let handles: Vec<_> = (1..=4)
        .map(|t| thread::spawn(move || worker(t * 0x9e37_79b9)))
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);

    // Allocation failure is an error value, never a panic or a crash.
    let mut huge: Vec<u8> = Vec::new();
    assert!(huge.try_reserve(isize::MAX as usize / 2).is_err());
    assert!(huge.try_reserve(200 << 20).is_err(), "more than the arena");
    let mut fine = Vec::<u64>::new();
    fine.try_reserve(1000).unwrap();

    let heap = HEAP.lock();
    heap.check()
        .expect("the heap is consistent after the threads");
    let stats = heap.stats();
    assert_eq!(stats.regions, 1);
    assert!(stats.allocations > 100_000, "{stats}");
    assert!(stats.peak_in_use_bytes > 1 << 20);
    assert_eq!(stats.misuses, 0);
    assert!(
        stats.failures >= 1,
        "the 200 MiB request was refused by the heap"
    );
}
