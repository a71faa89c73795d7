//! Cost per allocate+free pair as the number of live blocks grows.
//!
//! `cargo bench --bench scaling` prints ns per pair (median of 5) for 10 to
//! 100,000 live blocks on a 32 MiB arena (churn: free a random live block,
//! allocate 16..=512 bytes). Wall time rises at 100,000 blocks because the
//! working set (about 28 MiB) leaves the caches; the work done does not: run
//! one size under callgrind to count instructions per pair, e.g.
//! `SCALING_N=100000 SCALING_PAIRS=200000 valgrind --tool=callgrind target/release/deps/scaling-*`.

#[path = "common/churn.rs"]
mod churn;

fn main() {
    let arena = churn::arena();
    let pairs = churn::env("SCALING_PAIRS").unwrap_or(2_000_000);
    let sizes = match churn::env("SCALING_N") {
        Some(n) => vec![n],
        None => vec![10, 100, 1_000, 10_000, 100_000],
    };
    let repeats = if churn::env("SCALING_N").is_some() {
        1
    } else {
        5
    };
    println!("| live blocks | ns per pair (median of {repeats}) | min | max |");
    println!("|---:|---:|---:|---:|");
    for live in sizes {
        let mut runs: Vec<f64> = (0..repeats)
            .map(|r| churn::churn(arena, live, pairs, 0x9e37_79b9_7f4a_7c15 ^ r as u64))
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
