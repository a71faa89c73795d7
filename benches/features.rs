//! Cost of the integrity features on the churn workload.
//!
//! Features are compile-time, so one run measures one build:
//! `benches/features.sh` builds this benchmark once per feature set (plain,
//! each feature alone, all four) and runs the builds round-robin, 5 rounds,
//! so that every configuration sees the same machine load; it prints the
//! median ns per allocate+free pair and the ratio to the plain build.
//!
//! Alone, `cargo bench --bench features [--features crc]` prints one line:
//! the label of the build and the median of `FEATURES_REPEATS` (default 1)
//! runs of `FEATURES_PAIRS` (default 1,000,000) pairs with
//! `FEATURES_LIVE` (default 1,000) live blocks: free a random live block,
//! allocate 16..=512 bytes, on a 32 MiB arena, fixed seeds. With `trace`,
//! a sink that counts events is set (the cost of a real, if minimal, sink).

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

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The features this build was compiled with.
fn label() -> String {
    let on: Vec<&str> = [
        ("crc", cfg!(feature = "crc")),
        ("guard", cfg!(feature = "guard")),
        ("scramble", cfg!(feature = "scramble")),
        ("trace", cfg!(feature = "trace")),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| *name)
    .collect();
    match on.len() {
        0 => "plain".into(),
        4 => "all".into(),
        _ => on.join("+"),
    }
}

#[cfg(feature = "trace")]
static EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(feature = "trace")]
fn count(_: &region_heap::TraceEvent) {
    EVENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `pairs` churn pairs with `live` blocks and returns ns per pair.
fn churn(arena: *mut u8, live: usize, pairs: usize, seed: u64) -> f64 {
    let mut heap = Heap::new();
    #[cfg(feature = "trace")]
    heap.set_trace_sink(Some(count));
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
    let pairs = env("FEATURES_PAIRS", 1_000_000);
    let live = env("FEATURES_LIVE", 1_000);
    let repeats = env("FEATURES_REPEATS", 1).max(1);
    let round = env("FEATURES_ROUND", 0) as u64;
    let mut runs: Vec<f64> = (0..repeats as u64)
        .map(|r| churn(arena, live, pairs, 0x9e37_79b9_7f4a_7c15 ^ (round * 31 + r)))
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("{} {:.2}", label(), runs[runs.len() / 2]);
}
