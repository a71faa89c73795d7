//! The churn workload shared by the `scaling` and `features` benchmarks:
//! `live` blocks on a 32 MiB arena, then `pairs` times free a random live
//! block and allocate 16..=512 bytes, on a fixed-seed stream generated
//! before the clock starts. With the `trace` feature a sink that counts
//! events is set (the cost of a real, if minimal, sink). `SCALING_CHUNKS=k`
//! spreads the arena over k chunks of one region; `SCALING_SLABS=1` turns
//! slabs on.

use std::alloc::{alloc_zeroed, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use region_heap::Heap;

/// Bytes of the arena every run reuses.
pub const ARENA: usize = 32 << 20;

/// A zeroed, page-aligned arena, leaked for the life of the process.
pub fn arena() -> *mut u8 {
    let layout = Layout::from_size_align(ARENA, 4096).unwrap();
    // SAFETY: non-zero size; the arena is never freed.
    let arena = unsafe { alloc_zeroed(layout) };
    assert!(!arena.is_null());
    arena
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// An environment variable as a number, if set and valid.
pub fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

#[cfg(feature = "trace")]
static EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(feature = "trace")]
fn count(_: &region_heap::TraceEvent) {
    EVENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `pairs` churn pairs with `live` blocks and returns ns per pair;
/// the heap must pass `check()` afterwards.
pub fn churn(arena: *mut u8, live: usize, pairs: usize, seed: u64) -> f64 {
    let mut heap = Heap::new().with_slabs(env("SCALING_SLABS") == Some(1));
    #[cfg(feature = "trace")]
    heap.set_trace_sink(Some(count));
    // `SCALING_CHUNKS=k` gives the region its memory as k chunks with a
    // page between them (they never join): the cost of finding a block's
    // chunk with many chunks.
    let chunks = env("SCALING_CHUNKS").unwrap_or(1).max(1);
    let piece = ARENA / chunks;
    let gap = if chunks > 1 { 4096 } else { 0 };
    // SAFETY: the arena is reused run after run, by one heap at a time;
    // the pieces are disjoint parts of it.
    unsafe {
        heap.add_region(arena, piece - gap).unwrap();
        let region = heap.region_ids().next().unwrap();
        for i in 1..chunks {
            heap.extend(region, arena.add(i * piece), piece - gap)
                .unwrap();
        }
        assert_eq!(heap.stats().chunks, chunks);
    }
    let mut rng = seed;
    let layout =
        |rng: &mut u64| Layout::from_size_align(16 + (xorshift(rng) % 497) as usize, 8).unwrap();
    let mut blocks: Vec<NonNull<u8>> = (0..live)
        .map(|_| heap.allocate(layout(&mut rng)).unwrap())
        .collect();
    let ops: Vec<(usize, Layout)> = (0..pairs)
        .map(|_| {
            (
                (xorshift(&mut rng) % live as u64) as usize,
                layout(&mut rng),
            )
        })
        .collect();
    let start = Instant::now();
    for &(i, layout) in &ops {
        // SAFETY: `blocks[i]` is live; it is replaced right away.
        unsafe { heap.free(blocks[i]) }.unwrap();
        blocks[i] = heap.allocate(layout).unwrap();
    }
    let ns = start.elapsed().as_nanos() as f64 / pairs as f64;
    heap.check().unwrap();
    black_box(&blocks);
    ns
}
