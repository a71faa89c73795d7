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

#[path = "common/churn.rs"]
mod churn;

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

fn main() {
    let arena = churn::arena();
    let pairs = churn::env("FEATURES_PAIRS").unwrap_or(1_000_000);
    let live = churn::env("FEATURES_LIVE").unwrap_or(1_000);
    let repeats = churn::env("FEATURES_REPEATS").unwrap_or(1).max(1);
    let round = churn::env("FEATURES_ROUND").unwrap_or(0) as u64;
    let mut runs: Vec<f64> = (0..repeats as u64)
        .map(|r| churn::churn(arena, live, pairs, 0x9e37_79b9_7f4a_7c15 ^ (round * 31 + r)))
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("{} {:.2}", label(), runs[runs.len() / 2]);
}
