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
/// `rust-toolchain.toml` lists (needed where rustup's auto-install is off, and
/// where the toolchain exists without the kernel target), then checks that
/// every listed target is really there. Every xtask command runs this first.
pub fn toolchain() -> Result<(), String> {
    // rustup's cargo proxy sets RUSTUP_TOOLCHAIN for xtask; with it set,
    // `rustup toolchain install` installs that name alone and ignores the
    // targets and components of rust-toolchain.toml.
    run(Command::new("rustup")
        .args(["toolchain", "install"])
        .current_dir(repo_root())
        .env_remove("RUSTUP_TOOLCHAIN"))?;
    let installed = installed_targets()?;
    let missing: Vec<&str> = pinned_targets()
        .into_iter()
        .filter(|t| !installed.iter().any(|i| i == t))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "`rustup toolchain install` left the pinned toolchain without {missing:?}"
        ))
    }
}

/// The targets that `rust-toolchain.toml` lists.
pub fn pinned_targets() -> Vec<&'static str> {
    const TOOLCHAIN_FILE: &str = include_str!("../../rust-toolchain.toml");
    TOOLCHAIN_FILE
        .lines()
        .find_map(|l| l.trim().strip_prefix("targets"))
        .and_then(|rest| rest.split_once('['))
        .and_then(|(_, list)| list.split_once(']'))
        .map(|(list, _)| {
            list.split(',')
                .map(|t| t.trim().trim_matches('"'))
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The targets installed for the pinned toolchain (the one that
/// `rust-toolchain.toml` selects in the repository).
pub fn installed_targets() -> Result<Vec<String>, String> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(repo_root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rustup target list --installed failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
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
    let runs: [&[&str]; 5] = [
        &[
            "--lib",
            "--test",
            "model",
            "--test",
            "errors",
            "--test",
            "integrity",
            "--test",
            "percpu",
            "--test",
            "percpu_model",
            "--test",
            "slabs",
        ],
        &[
            "--features",
            "crc,guard,scramble,trace",
            "--lib",
            "--test",
            "errors",
            "--test",
            "integrity",
            "--test",
            "slabs",
        ],
        // The adversarial sweep (a reduced subset under cfg(miri)), the
        // chunk-gap check and the fuzz reproducers of at most 64 bytes,
        // plain build (about five minutes); the random programs, the longer
        // reproducers and the `crc` build run natively only (the feature
        // matrix).
        &[
            "--test",
            "adversarial",
            "--",
            "sweep",
            "check_stays_out_of_the_gap",
            "fuzz_regressions",
        ],
        &["-p", "osmem", "--lib"],
        // `core::alloc::Allocator` (nightly only) and allocator-api2's.
        &[
            "--features",
            "nightly,allocator-api2",
            "--test",
            "nightly_allocator",
            "--test",
            "allocator_api2",
        ],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_target_is_pinned() {
        assert_eq!(pinned_targets(), ["x86_64-unknown-none"]);
    }
}
