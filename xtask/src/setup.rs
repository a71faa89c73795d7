//! Installing what the checks need, and running cargo steps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs a command, failing with its name when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// Whether a program is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Installs the pinned toolchain with the targets and components that
/// `rust-toolchain.toml` lists (needed where rustup's auto-install is off).
pub fn toolchain() -> Result<(), String> {
    run(Command::new("rustup").args(["toolchain", "install"]))
}

/// Runs one `cargo` step with a banner.
pub fn cargo_step(name: &str, args: &[&str]) -> Result<(), String> {
    cargo_step_env(name, args, &[])
}

/// Runs one `cargo` step with extra environment variables.
pub fn cargo_step_env(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let shown: Vec<String> = envs.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    println!("==> {name}: {}cargo {}", shown.concat(), args.join(" "));
    run(Command::new("cargo").args(args).envs(envs.iter().copied()))
        .map_err(|e| format!("{name}: {e}"))
}

/// Installs Debian packages with apt-get when the given program is missing.
pub fn apt_install(program: &str, packages: &[&str]) -> Result<(), String> {
    if have(program) {
        return Ok(());
    }
    println!("==> installing {} (for {program})", packages.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    // One `apt-get update` per run is enough for every install.
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if !UPDATED.swap(true, Ordering::Relaxed) {
        let mut update = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            update.arg("apt-get");
        }
        run(update
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let mut install = Command::new(sudo.first().copied().unwrap_or("apt-get"));
    if !sudo.is_empty() {
        install.arg("apt-get");
    }
    run(install
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if have(program) {
        Ok(())
    } else {
        Err(format!(
            "{program} is still missing after installing {packages:?}"
        ))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Runs the library's unit and property tests under Miri (nightly), with a
/// reduced proptest case count so that the run stays within minutes.
pub fn miri() -> Result<(), String> {
    println!("==> miri: installing nightly with the miri component");
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "miri,rust-src",
    ]))?;
    let runs: [&[&str]; 3] = [
        &[
            "--lib",
            "--test",
            "model",
            "--test",
            "errors",
            "--test",
            "integrity",
        ],
        &[
            "--features",
            "crc,guard,scramble,trace",
            "--lib",
            "--test",
            "errors",
            "--test",
            "integrity",
        ],
        &["-p", "osmem", "--lib"],
    ];
    for args in runs {
        println!("==> miri: cargo +nightly miri test {}", args.join(" "));
        run(Command::new("cargo")
            .args(["+nightly", "miri", "test"])
            .args(args)
            .env("PROPTEST_CASES", "4")
            .env("MIRIFLAGS", "-Zmiri-disable-isolation"))?;
    }
    Ok(())
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, relative to the
/// repository root, else `target/`).
pub fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    repo_root().join(dir)
}

/// The repository root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}
