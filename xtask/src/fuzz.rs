//! The fuzz target `fuzz/fuzz_targets/adversarial.rs` (a cargo-fuzz
//! project, its own workspace): the adversarial interpreter of
//! `tests/common/adversary.rs` driven by libFuzzer on nightly, plain and
//! with `crc`. `cargo xtask test` runs it briefly; `cargo xtask fuzz` runs
//! it for longer. A crash leaves its input in `fuzz/artifacts/adversarial/`;
//! minimize it (`cargo +nightly fuzz tmin adversarial <file>`) and save it
//! in `fuzz/regressions/`, which `tests/adversarial.rs` replays.

use std::process::Command;

use crate::setup;

/// Installs nightly and cargo-fuzz when they are missing.
fn install() -> Result<(), String> {
    setup::run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))?;
    let have_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_fuzz {
        println!("==> fuzz: installing cargo-fuzz");
        setup::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Runs the target for `seconds` with the given features (`""`: plain),
/// from a fixed libFuzzer seed when one is given (the CI step: the same
/// inputs every run, so a finding is a regression, not luck), else from a
/// random one (the long exploratory runs).
pub fn run(seconds: u64, features: &str, seed: Option<u64>) -> Result<(), String> {
    install()?;
    let label = if features.is_empty() {
        "plain"
    } else {
        features
    };
    println!("==> fuzz [{label}]: adversarial for {seconds} s");
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", "run"])
        .current_dir(setup::repo_root().join("fuzz"))
        // The root target directory would mix nightly and pinned builds.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTUP_TOOLCHAIN");
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    cmd.args(["adversarial", "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10");
    if let Some(seed) = seed {
        cmd.arg(format!("-seed={seed}"));
    }
    setup::run(&mut cmd).map_err(|e| format!("fuzz [{label}]: {e}"))
}

/// The fuzz step of `cargo xtask test`: 60 s plain, 30 s with `crc`, from
/// fixed seeds; skipped with `--quick`.
pub fn test(quick: bool) -> Result<(), String> {
    if quick {
        println!("==> fuzz: skipped (--quick)");
        return Ok(());
    }
    run(60, "", Some(1))?;
    run(30, "crc", Some(2))
}

/// `cargo xtask fuzz [--seconds N] [--features F]`: a longer run (default
/// 600 s, plain).
pub fn command(args: &[String]) -> Result<(), String> {
    let mut seconds = 600;
    let mut features = String::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--seconds" => {
                seconds = value
                    .parse()
                    .map_err(|_| format!("--seconds: not a number: {value}"))?
            }
            "--features" => features = value.clone(),
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    run(seconds, &features, None)
}
