//! The hosted shim's tests: C programs under `shim/tests/`, compiled here,
//! run against `libregionheap.so` both linked (`-lregionheap`) and
//! preloaded (`LD_PRELOAD`).
//!
//! - `api`: every allocation function, results and errno; also run with
//!   the heaps kept off the break (`REGIONHEAP_BRK=0`) and with
//!   `REGIONHEAP_STATS=1`, whose report must count at least the calls the
//!   program says it made;
//! - `misuse`: double frees (thread cache, depot shelf, heap, large
//!   mapping), interior, misaligned and stack pointers, `realloc` of a
//!   freed block, writes after free and over headers: each must die of
//!   `SIGABRT` after naming the address on stderr, linked and under
//!   `LD_PRELOAD`;
//! - `fork`: forks while threads allocate; the children allocate;
//! - `fork_stdio`: forks while threads run `getline` and `fflush(NULL)`
//!   (glibc bug 19431); a hang makes its watchdog fail it;
//! - `fork_signal`: a signal handler forks while the only thread is inside
//!   `malloc`, `free` or `realloc`; a hang makes its watchdog fail it;
//! - `threads`: short-lived threads exiting with cached blocks, blocks freed
//!   by other threads;
//! - `seed002`: producers load 1-8 MiB images and captions, a consumer
//!   plays them back in order verifying every byte.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::setup::{apt_install, repo_root, run, target_dir};

const PROGRAMS: [&str; 7] = [
    "api",
    "misuse",
    "fork",
    "fork_stdio",
    "fork_signal",
    "threads",
    "seed002",
];
/// Each misuse of `shim/tests/misuse.c` and the report it must abort with
/// (followed by ` at <the address the program printed>`).
const MISUSES: [(&str, &str); 17] = [
    ("double-small", "free(): double free"),
    ("double-heap", "free(): double free"),
    ("double-large", "free(): double free"),
    ("interior", "free(): invalid pointer"),
    ("misaligned", "free(): invalid pointer"),
    ("stack", "free(): invalid pointer"),
    ("realloc-freed", "realloc(): double free"),
    ("realloc-cached", "realloc(): double free"),
    ("realloc-cached-small", "realloc(): double free"),
    ("uaf-link-small", "malloc(): freed block overwritten"),
    ("uaf-zero-small", "malloc(): freed block overwritten"),
    ("size-word-small", "malloc(): freed block overwritten"),
    ("underrun-large", "free(): corrupted block header"),
    ("uaf-large", "malloc(): freed block overwritten"),
    ("double-shelved", "free(): double free"),
    ("uaf-shelved", "malloc(): freed block overwritten"),
    ("double-other-thread", "free(): double free"),
];

/// Builds the shim and runs every C test against it.
pub fn test(quick: bool) -> Result<(), String> {
    apt_install("gcc", &["gcc", "libc6-dev"])?;
    println!("==> hosted shim: cargo build --release -p region-heap-shim");
    run(Command::new("cargo")
        .args(["build", "--release", "-p", "region-heap-shim"])
        .current_dir(repo_root()))?;
    let lib_dir = target_dir().join("release");
    let lib = lib_dir.join("libregionheap.so");
    if !lib.is_file() {
        return Err(format!("the shim build produced no {}", lib.display()));
    }
    let out = target_dir().join("shim-tests");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    for program in PROGRAMS {
        compile(program, &out, None)?;
        compile(program, &out, Some(&lib_dir))?;
    }
    let frames = if quick { "40" } else { "160" };
    for program in [
        "api",
        "fork",
        "fork_stdio",
        "fork_signal",
        "threads",
        "seed002",
    ] {
        for linked in [false, true] {
            let output = run_program(&out, program, linked, &lib, &[("FRAMES", frames)], &[])?;
            expect_success(program, linked, &output)?;
        }
    }
    let off_brk = run_program(&out, "api", false, &lib, &[("REGIONHEAP_BRK", "0")], &[])?;
    expect_success("api (REGIONHEAP_BRK=0)", false, &off_brk)?;
    check_stats_report(&out, &lib)?;
    for (misuse, report) in MISUSES {
        for linked in [false, true] {
            let output = run_program(&out, "misuse", linked, &lib, &[], &[misuse])?;
            let label = if linked {
                format!("{misuse} (linked)")
            } else {
                misuse.to_string()
            };
            expect_abort_naming_address(&label, report, &output)?;
        }
    }
    println!(
        "hosted shim: C tests passed ({} programs, {} misuses)",
        PROGRAMS.len(),
        MISUSES.len()
    );
    Ok(())
}

/// Compiles `shim/tests/<name>.c`, linked against the shim when `lib_dir`
/// is given (binary `<name>-linked`), else plain (binary `<name>`).
fn compile(name: &str, out: &Path, lib_dir: Option<&Path>) -> Result<(), String> {
    let root = repo_root();
    let source = root.join("shim/tests").join(format!("{name}.c"));
    let binary = out.join(binary_name(name, lib_dir.is_some()));
    let mut cmd = Command::new("gcc");
    cmd.args([
        "-O2",
        "-fno-builtin",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pthread",
    ])
    .arg("-I")
    .arg(root.join("shim/include"))
    .arg("-o")
    .arg(&binary)
    .arg(&source);
    if let Some(dir) = lib_dir {
        cmd.arg("-L")
            .arg(dir)
            .arg("-lregionheap")
            .arg(format!("-Wl,-rpath,{}", dir.display()));
    }
    cmd.arg("-ldl");
    run(&mut cmd)
}

fn binary_name(name: &str, linked: bool) -> String {
    if linked {
        format!("{name}-linked")
    } else {
        name.to_string()
    }
}

fn run_program(
    out: &Path,
    name: &str,
    linked: bool,
    lib: &Path,
    envs: &[(&str, &str)],
    args: &[&str],
) -> Result<Output, String> {
    let mut cmd = Command::new(out.join(binary_name(name, linked)));
    cmd.args(args).envs(envs.iter().copied());
    if !linked {
        cmd.env("LD_PRELOAD", lib);
    }
    cmd.output().map_err(|e| format!("cannot run {name}: {e}"))
}

fn expect_success(name: &str, linked: bool, output: &Output) -> Result<(), String> {
    let how = if linked { "linked" } else { "LD_PRELOAD" };
    if output.status.success() {
        println!(
            "    ok  {name} ({how}): {}",
            String::from_utf8_lossy(&output.stdout).trim()
        );
        Ok(())
    } else {
        Err(format!(
            "{name} ({how}) failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `api` under `REGIONHEAP_STATS=1`: the report at exit must count at least
/// the calls the program made (it prints them as `calls: malloc=N ...`).
fn check_stats_report(out: &Path, lib: &Path) -> Result<(), String> {
    let output = run_program(out, "api", false, lib, &[("REGIONHEAP_STATS", "1")], &[])?;
    expect_success("api (REGIONHEAP_STATS=1)", false, &output)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in ["malloc", "free", "calloc", "realloc"] {
        let made = field(&stdout, &format!("{name}="))
            .ok_or_else(|| format!("api printed no {name} count: {stdout}"))?;
        let reported = field(&stderr, &format!("  {name} "))
            .ok_or_else(|| format!("the stats report has no {name} line:\n{stderr}"))?;
        if reported < made {
            return Err(format!(
                "stats report: {name} {reported} < {made} calls made"
            ));
        }
    }
    for name in ["mmap", "recycled"] {
        if field(&stderr, &format!("  {name} ")).unwrap_or(0) == 0 {
            return Err(format!("stats report: no {name} counted:\n{stderr}"));
        }
    }
    println!("    ok  REGIONHEAP_STATS=1 report covers every call");
    Ok(())
}

/// The number following `key` in `text`.
fn field(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn expect_abort_naming_address(misuse: &str, report: &str, output: &Output) -> Result<(), String> {
    let address = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.signal() != Some(libc_sigabrt()) {
        return Err(format!(
            "misuse {misuse}: expected SIGABRT, got {}; stderr:\n{stderr}",
            output.status
        ));
    }
    let expected = format!("region-heap: {report} at {address}\n");
    if address.is_empty() || !stderr.contains(&expected) {
        return Err(format!(
            "misuse {misuse}: stderr does not say {expected:?}:\n{stderr}"
        ));
    }
    println!("    ok  misuse {misuse}: {}", stderr.trim());
    Ok(())
}

/// `SIGABRT` on Linux.
fn libc_sigabrt() -> i32 {
    6
}
