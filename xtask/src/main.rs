//! Project automation: `cargo xtask demo [--cpus N]` (QEMU's `-smp`, 4 by
//! default), `cargo xtask test` and
//! `cargo xtask fuzz [--seconds N] [--features crc]` (a longer run of the
//! adversarial fuzz target, see `fuzz.rs`).
//!
//! Both commands install what they need on a fresh Debian machine with rustup
//! (one shared setup step runs before either):
//! the toolchain listed in `rust-toolchain.toml`, the nightly Miri component,
//! and QEMU (`qemu-system-x86`) through `apt-get` when it is missing.

mod features;
mod fuzz;
mod hosted;
mod osmem;
mod qemu;
mod realprogs;
mod setup;
mod targets;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command: fn(&[String]) -> Result<(), String> = match args.first().map(String::as_str) {
        Some("demo") => qemu::demo_command,
        Some("test") => test,
        Some("fuzz") => fuzz::command,
        _ => {
            eprintln!(
                "usage: cargo xtask demo [--cpus N] | cargo xtask test [--quick] | cargo xtask fuzz [--seconds N] [--features F]"
            );
            return ExitCode::from(2);
        }
    };
    // One setup for every command: a machine whose toolchain lacks the kernel
    // target gets it here, whichever command the user runs first.
    let result = setup::toolchain().and_then(|()| command(&args[1..]));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every stable cargo feature of the library: what `--all-features` meant
/// before the `nightly` feature (which only builds on nightly Rust, and is
/// tested under Miri, see `setup::miri`).
pub const STABLE_FEATURES: &str =
    "region-heap/crc,region-heap/guard,region-heap/scramble,region-heap/trace,region-heap/linked-list,region-heap/buddy,region-heap/allocator-api2,region-heap/portable-atomic,region-heap/x86_64";

/// Seed of every property test's cases unless `PROPTEST_RNG_SEED` is set:
/// the same commit tests the same cases on every machine, so a CI failure
/// replays. `PROPTEST_RNG_SEED=<n> cargo xtask test` tries other cases;
/// `cargo xtask fuzz` explores at length.
const PROPTEST_SEED: &str = "20261206";

/// Every test and check of the project, in order of increasing cost.
fn test(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        // Inherited by every cargo command below; nothing else runs yet.
        std::env::set_var("PROPTEST_RNG_SEED", PROPTEST_SEED);
    }
    let steps: Vec<(&str, Vec<&str>)> = vec![
        ("rustfmt", vec!["fmt", "--all", "--", "--check"]),
        (
            "clippy",
            vec![
                "clippy",
                "--workspace",
                "--all-targets",
                "--features",
                STABLE_FEATURES,
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            "no_std build",
            vec![
                "build",
                "--lib",
                "--features",
                STABLE_FEATURES,
                "--target",
                "x86_64-unknown-none",
            ],
        ),
        (
            "unit, property, differential and integration tests",
            vec!["test", "--workspace", "--features", STABLE_FEATURES],
        ),
        (
            "differential tests, plain build",
            vec![
                "test",
                "--features",
                "linked-list,buddy",
                "--test",
                "differential",
            ],
        ),
        (
            "release tests",
            vec!["test", "--release", "--test", "global_alloc"],
        ),
        (
            "example: std global allocator",
            vec!["run", "--example", "std_global"],
        ),
        (
            "example: backend swap",
            vec![
                "run",
                "--example",
                "backend_swap",
                "--features",
                "linked-list,buddy",
            ],
        ),
        (
            "example: Allocator trait",
            vec![
                "run",
                "--example",
                "allocator_api",
                "--features",
                "allocator-api2",
            ],
        ),
        (
            "example: no_std kernel heap (its own crate)",
            vec![
                "build",
                "--manifest-path",
                "examples/kernel-heap/Cargo.toml",
                "--target",
                "x86_64-unknown-none",
            ],
        ),
    ];
    // The API documentation as docs.rs builds it (stable features), with
    // every rustdoc warning an error: broken links, bad code blocks.
    let doc_features = STABLE_FEATURES.replace("region-heap/", "");
    setup::cargo_step_env(
        "docs",
        &[
            "doc",
            "--no-deps",
            "-p",
            "region-heap",
            "--features",
            &doc_features,
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // The contributors' documentation too: private items, every link.
    setup::cargo_step_env(
        "docs, private items",
        &[
            "doc",
            "--no-deps",
            "-p",
            "region-heap",
            "--document-private-items",
            "--features",
            &doc_features,
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // The package users get (`include` in Cargo.toml) builds on its own.
    setup::cargo_step(
        "package",
        &["package", "-p", "region-heap", "--allow-dirty"],
    )?;
    for (name, cmd) in &steps {
        setup::cargo_step(name, cmd)?;
        if *name == "no_std build" {
            // Every bare-metal target the crate supports, right after the
            // first no_std build.
            targets::test()?;
        }
    }
    // The benchmarks are measured by hand (README); here they only have to
    // build and run to the end: a short smoke run.
    setup::cargo_step_env(
        "benchmark smoke run",
        &["bench", "--bench", "peers"],
        &[("BENCH_QUICK", "1")],
    )?;
    setup::cargo_step_env(
        "SMP benchmark smoke run",
        &["bench", "--bench", "smp"],
        &[("BENCH_QUICK", "1")],
    )?;
    if !quick {
        setup::miri()?;
    }
    realprogs::test(quick)?;
    hosted::test(quick)?;
    osmem::test(quick)?;
    fuzz::test(quick)?;
    features::test(quick)?;
    qemu::demo_without_target()?;
    qemu::boot_test()?;
    println!("xtask test: all checks passed");
    Ok(())
}
