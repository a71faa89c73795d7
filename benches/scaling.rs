//! Cost per allocate+free pair as the number of live blocks grows.
//!
//! `cargo bench --bench scaling` prints ns per pair (median of 5) for 10 to
//! 100,000 live blocks on a 32 MiB arena (churn: free a random live block,
//! allocate 16..=512 bytes). Wall time rises at 100,000 blocks because the
//! working set (about 28 MiB) leaves the caches; the work done does not: run
//! one size under callgrind to count instructions per pair, e.g.
//! `SCALING_N=100000 SCALING_PAIRS=200000 valgrind --tool=callgrind target/release/deps/scaling-*`.

use std::alloc::{alloc_zeroed, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use region_heap::Heap;

const ARENA: usize = 32 << 20;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

/// Runs `pairs` churn pairs with `live` blocks and returns ns per pair.
fn churn(arena: *mut u8, live: usize, pairs: usize, seed: u64) -> f64 {
    let mut heap = Heap::new();
    // SAFETY: the arena is reused run after run, by one heap at a time.
    unsafe { heap.add_region(arena, ARENA) }.unwrap();
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

fn main() {
    let layout = Layout::from_size_align(ARENA, 4096).unwrap();
    // SAFETY: non-zero size; leaked for the life of the process.
    let arena = unsafe { alloc_zeroed(layout) };
    assert!(!arena.is_null());
    let pairs = env("SCALING_PAIRS").unwrap_or(2_000_000);
    let sizes = match env("SCALING_N") {
        Some(n) => vec![n],
        None => vec![10, 100, 1_000, 10_000, 100_000],
    };
    let repeats = if env("SCALING_N").is_some() { 1 } else { 5 };
    println!("| live blocks | ns per pair (median of {repeats}) | min | max |");
    println!("|---:|---:|---:|---:|");
    for live in sizes {
        let mut runs: Vec<f64> = (0..repeats)
            .map(|r| churn(arena, live, pairs, 0x9e37_79b9_7f4a_7c15 ^ r as u64))
            .collect();
        runs.sort_by(f64::total_cmp);
        println!(
            "| {live} | {:.1} | {:.1} | {:.1} |",
            runs[runs.len() / 2],
            runs[0],
            runs[runs.len() - 1]
        );
    }
}
