//! The `os_malloc` compatibility check: `libosmem.so` (crate `osmem/`)
//! against the 40 reference traces of seed 004 (`osmem/ref`).
//!
//! Builds the library and `osmem-check`, then runs the checker, which
//! fails unless:
//! - the library exports exactly `os_malloc`, `os_calloc`, `os_realloc`
//!   and `os_free`;
//! - every trace replays identically (40/40), system calls included, as
//!   recorded by the checker's ptrace recorder;
//! - `strace` records the same system calls as the recorder (the recorder
//!   verified against an independent tool);
//! - (not with `--quick`) every replay is clean under valgrind's memcheck,
//!   with no leak, and a deliberately leaking replay is reported as one.
//!
//! Before that, `osmem/tests/c/linked.c` is compiled with gcc against the
//! C headers and linked with `-losmem`, as the seed's own tests are, and
//! must exit 0.

use std::path::Path;
use std::process::Command;

use crate::setup::{apt_install, cargo_step, repo_root, run, target_dir};

/// Builds `libosmem.so` and runs `osmem-check` on every trace.
pub fn test(quick: bool) -> Result<(), String> {
    apt_install("strace", &["strace"])?;
    apt_install("nm", &["binutils"])?;
    if !quick {
        apt_install("valgrind", &["valgrind"])?;
    }
    apt_install("gcc", &["gcc", "libc6-dev"])?;
    cargo_step("libosmem.so and osmem-check", &["build", "-p", "osmem"])?;
    let lib_dir = target_dir().join("debug");
    linked_c_test(&lib_dir)?;
    let checker = lib_dir.join("osmem-check");
    let mut cmd = Command::new(&checker);
    cmd.arg("--strace").current_dir(repo_root());
    if !quick {
        cmd.arg("--valgrind");
    }
    println!(
        "==> seed 004 traces: {}{}",
        checker.display(),
        if quick {
            " --strace (valgrind skipped with --quick)"
        } else {
            " --strace --valgrind"
        }
    );
    run(&mut cmd).map_err(|e| format!("osmem-check: {e}"))
}

/// Compiles and runs the C program linked with `-losmem`.
fn linked_c_test(lib_dir: &Path) -> Result<(), String> {
    let osmem = repo_root().join("osmem");
    let exe = lib_dir.join("osmem-linked-c");
    println!("==> osmem/tests/c/linked.c: gcc ... -losmem, then run");
    run(Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(osmem.join("include"))
        .arg(osmem.join("tests/c/linked.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib_dir)
        .arg("-losmem")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display())))?;
    run(&mut Command::new(&exe)).map_err(|e| format!("linked.c (exit status = failed check): {e}"))
}
