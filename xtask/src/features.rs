//! The integrity feature matrix: the core's property and error tests, the
//! integrity tests, the known-flaw tests, the adversarial tests and the
//! per-CPU heap's tests under every feature combination
//! CI can afford (none, each of `crc`, `guard`, `scramble`, `trace` alone,
//! all four), and the `no_std` build with all four.

use std::process::Command;

use crate::setup;

/// Feature sets of the matrix (`""` is the plain build).
const MATRIX: [&str; 6] = [
    "",
    "crc",
    "guard",
    "scramble",
    "trace",
    "crc,guard,scramble,trace",
];

/// Property-test cases per configuration: proptest's default 256, or 64
/// for `--quick` (six builds either way stay within a few minutes).
fn proptest_cases(quick: bool) -> &'static str {
    if quick {
        "64"
    } else {
        "256"
    }
}

/// Runs the matrix; `quick` lowers the property-test case count.
pub fn test(quick: bool) -> Result<(), String> {
    for features in MATRIX {
        let label = if features.is_empty() {
            "none"
        } else {
            features
        };
        println!(
            "==> features [{label}]: model, errors, integrity, flaws, adversarial and unit tests"
        );
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "-p", "region-heap", "--no-default-features"]);
        if !features.is_empty() {
            cmd.args(["--features", features]);
        }
        cmd.args([
            "--lib",
            "--test",
            "model",
            "--test",
            "errors",
            "--test",
            "integrity",
            "--test",
            "flaws",
            "--test",
            "adversarial",
            "--test",
            "percpu",
            "--test",
            "percpu_model",
        ])
        .env("PROPTEST_CASES", proptest_cases(quick));
        setup::run(&mut cmd).map_err(|e| format!("features [{label}]: {e}"))?;
    }
    setup::cargo_step(
        "features: no_std build with every integrity feature",
        &[
            "build",
            "-p",
            "region-heap",
            "--lib",
            "--no-default-features",
            "--features",
            "crc,guard,scramble,trace",
            "--target",
            "x86_64-unknown-none",
        ],
    )
}
