//! The library on bare-metal targets: `rustup target add` for the pinned
//! toolchain, then `cargo build --lib` for each target, with no feature and
//! with every integrity feature.

use std::process::Command;

use crate::setup;

/// `(target, extra features, RUSTFLAGS)`: thumbv6m has no compare-and-swap,
/// so it takes atomics from `portable-atomic`, assuming a single core.
const TARGETS: [(&str, &str, &str); 6] = [
    ("x86_64-unknown-none", "x86_64", ""),
    (
        "thumbv6m-none-eabi",
        "portable-atomic",
        "--cfg portable_atomic_unsafe_assume_single_core",
    ),
    ("thumbv7em-none-eabihf", "", ""),
    ("riscv32imac-unknown-none-elf", "", ""),
    ("riscv64gc-unknown-none-elf", "", ""),
    ("aarch64-unknown-none", "", ""),
];

/// Feature sets built for every target (besides the target's own).
const FEATURE_SETS: [&str; 2] = ["", "crc,guard,scramble,trace"];

pub fn test() -> Result<(), String> {
    let installed = setup::installed_targets()?;
    let missing: Vec<&str> = TARGETS
        .iter()
        .map(|(t, _, _)| *t)
        .filter(|t| !installed.iter().any(|i| i == t))
        .collect();
    if !missing.is_empty() {
        println!("==> rustup target add {}", missing.join(" "));
        // Run where rust-toolchain.toml selects the pinned toolchain, without
        // the proxy's RUSTUP_TOOLCHAIN (as `setup::toolchain` does).
        setup::run(
            Command::new("rustup")
                .args(["target", "add"])
                .args(&missing)
                .current_dir(setup::repo_root())
                .env_remove("RUSTUP_TOOLCHAIN"),
        )?;
    }
    for (target, own, rustflags) in TARGETS {
        for set in FEATURE_SETS {
            let features: Vec<&str> = [own, set].into_iter().filter(|f| !f.is_empty()).collect();
            let features = features.join(",");
            let mut args = vec!["build", "--lib", "-p", "region-heap", "--target", target];
            if !features.is_empty() {
                args.extend(["--features", &features]);
            }
            let envs: &[(&str, &str)] = if rustflags.is_empty() {
                &[]
            } else {
                &[("RUSTFLAGS", rustflags)]
            };
            setup::cargo_step_env(&format!("bare-metal build {target}"), &args, envs)?;
        }
    }
    Ok(())
}
