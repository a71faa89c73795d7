//! Building `kernel-demo/` and booting it in QEMU: `cargo xtask demo` and the
//! boot test of `cargo xtask test`.
//!
//! The kernel is its own cargo project (not a workspace member), built for
//! `x86_64-unknown-none` from its own directory, with its own target
//! directory, by the toolchain pinned in the root `rust-toolchain.toml`
//! (rustup finds it from the parent directory). QEMU boots it through the PVH
//! entry and exits through `isa-debug-exit`: status 33 is success, 35 a failed
//! self-test, 37 a panic or CPU exception, and 0 a triple fault.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::setup;

const QEMU: &str = "qemu-system-x86_64";
const QEMU_PACKAGES: &[&str] = &["qemu-system-x86"];
const TARGET: &str = "x86_64-unknown-none";
/// QEMU's status when the kernel writes 0x10 to `isa-debug-exit`.
const SUCCESS: i32 = 33;
/// The kernel wrote 0x11: a self-test failed.
const FAILURE: i32 = 35;
/// The kernel wrote 0x12: it panicked or took a CPU exception.
const PANIC: i32 = 37;
/// Longest a boot may take before QEMU is killed (it takes about a second).
const TIMEOUT: Duration = Duration::from_secs(120);

/// Lines that a successful run prints, in this order.
const EXPECTED: &[&str] = &[
    "region-heap kernel demo",
    "booted through PVH",
    "PVH start info at",
    "memory map, ",
    "heap regions from the memory map",
    "growth pool: ",
    "check ok (heap init)",
    "reclaimed as a heap region",
    "check ok (boot stack reclaim)",
    "[test] box: ok, check ok",
    "[test] vec growth and shrink: ok, check ok",
    "[test] string: ok, check ok",
    "[test] btreemap 100000 entries: ok, check ok",
    "[test] aligned allocations up to 4 KiB: ok, check ok",
    "[test] realloc in place: ok, check ok",
    "[test] allocation failure through try_reserve: ok, check ok",
    "[grow] heap asked for ",
    "[test] growth hook: ok, check ok",
    "  gave back ",
    "[test] trim gives memory back: ok, check ok",
    "[test] double free on a private heap: ok, check ok",
    "heap corrupted at ",
    "[test] header corruption detected: ok, check ok",
    "no leak: ",
    "heap statistics:",
    "total bytes",
    "allocations",
    "growth hook: ",
    "ALL TESTS PASSED",
];

/// `cargo xtask demo`: builds the kernel, boots it in QEMU with its serial
/// console printed live, and fails unless it exits with the success status.
pub fn demo() -> Result<(), String> {
    setup::apt_install(QEMU, QEMU_PACKAGES)?;
    let kernel = build()?;
    println!("==> booting: {}", qemu_command(&kernel, None).join(" "));
    let run = boot(&kernel, None, true)?;
    println!(
        "==> QEMU exited with {} after {:.2} s",
        describe(run.status),
        run.elapsed.as_secs_f64()
    );
    verdict(&run, SUCCESS)
}

/// Runs `cargo xtask demo` as a user would, on the pinned toolchain with the
/// kernel target removed (the state of a fresh machine where the toolchain
/// came without it), and checks that the demo installs the target and boots.
/// The target is installed again whatever happens.
pub fn demo_without_target() -> Result<(), String> {
    println!(
        "==> demo on a toolchain without {TARGET}: rustup target remove {TARGET}; cargo xtask demo"
    );
    let root = setup::repo_root();
    setup::run(
        Command::new("rustup")
            .args(["target", "remove", TARGET])
            .current_dir(&root)
            .env_remove("RUSTUP_TOOLCHAIN"),
    )?;
    if setup::installed_targets()?.iter().any(|t| t == TARGET) {
        return Err(format!(
            "{TARGET} is still installed after rustup target remove"
        ));
    }
    let demo = setup::run(
        Command::new("cargo")
            .args(["xtask", "demo"])
            .current_dir(&root)
            .env_remove("RUSTUP_TOOLCHAIN")
            .stdout(Stdio::null()),
    );
    let restored = setup::toolchain();
    demo.map_err(|e| format!("cargo xtask demo without {TARGET} installed: {e}"))?;
    restored?;
    println!("    the demo installed {TARGET} itself and booted");
    Ok(())
}

/// The boot test: boots the kernel headless with a timeout, asserts the
/// success status and the expected serial output, then checks that a
/// deliberate panic, CPU exception and test failure give their own statuses.
/// Fails (does not skip) when QEMU is missing and cannot be installed.
pub fn boot_test() -> Result<(), String> {
    println!("==> boot test: kernel-demo in QEMU");
    setup::apt_install(QEMU, QEMU_PACKAGES)
        .map_err(|e| format!("boot test: QEMU is missing and could not be installed: {e}"))?;
    let kernel = build()?;

    let run = boot(&kernel, None, false)?;
    let result = verdict(&run, SUCCESS).and_then(|()| expect_lines(&run.output));
    if let Err(e) = result {
        return Err(format!(
            "boot test: {e}\n--- serial output ---\n{}--- QEMU stderr ---\n{}",
            run.output, run.stderr
        ));
    }
    let regions = run
        .output
        .lines()
        .filter(|l| l.starts_with("  region "))
        .count();
    if regions < 2 {
        return Err(format!(
            "boot test: {regions} heap region(s) from the memory map, expected several\n{}",
            run.output
        ));
    }
    println!(
        "    success run: status {SUCCESS}, {regions} regions from the memory map, all markers found, {:.2} s",
        run.elapsed.as_secs_f64()
    );

    for (append, status, marker) in [
        ("demo=panic", PANIC, "PANIC: "),
        ("demo=fault", PANIC, "EXCEPTION: page fault"),
        ("demo=fail", FAILURE, "TEST FAILED: "),
    ] {
        let run = boot(&kernel, Some(append), false)?;
        if run.status != Some(status) || !run.output.contains(marker) {
            return Err(format!(
                "boot test: with -append {append}: expected status {status} and {marker:?}, got {}\n{}",
                describe(run.status),
                run.output
            ));
        }
        println!("    -append {append}: status {status} as expected");
    }
    println!("==> boot test passed");
    Ok(())
}

/// Builds the kernel in release mode and returns the path of its ELF.
fn build() -> Result<PathBuf, String> {
    let dir = kernel_dir();
    println!("==> building the kernel: cargo build --release --target {TARGET} (in kernel-demo/)");
    setup::run(
        Command::new("cargo")
            .args(["build", "--release", "--target", TARGET])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", dir.join("target"))
            // The toolchain comes from rust-toolchain.toml (found from
            // kernel-demo/ in the parent directory), not from a `+toolchain`
            // given to the outer cargo.
            .env_remove("RUSTUP_TOOLCHAIN")
            // Flags meant for host builds must not reach the kernel.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    )
    .map_err(|e| format!("building the kernel: {e}"))?;
    let elf = dir
        .join("target")
        .join(TARGET)
        .join("release")
        .join("kernel-demo");
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!("the kernel build produced no {}", elf.display()))
    }
}

fn kernel_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .join("kernel-demo")
}

/// The QEMU command line, program first.
fn qemu_command(kernel: &Path, append: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [QEMU, "-kernel"].map(String::from).to_vec();
    args.push(kernel.display().to_string());
    args.extend(
        [
            "-m",
            "256M",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]
        .map(String::from),
    );
    if let Some(append) = append {
        args.extend(["-append".to_string(), append.to_string()]);
    }
    args
}

/// What one boot gave.
struct Run {
    /// QEMU's exit code; `None` if it was killed (timeout or signal).
    status: Option<i32>,
    /// The serial output, `\r` removed.
    output: String,
    /// QEMU's own error output (empty when `echo` was on: it went to the
    /// terminal).
    stderr: String,
    elapsed: Duration,
}

/// Boots `kernel`, echoing its serial output live when `echo` is set, and
/// kills QEMU after [`TIMEOUT`].
fn boot(kernel: &Path, append: Option<&str>, echo: bool) -> Result<Run, String> {
    let args = qemu_command(kernel, append);
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if echo {
            Stdio::inherit()
        } else {
            Stdio::piped()
        });
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;

    let stdout = child.stdout.take().expect("stdout is piped");
    let serial = thread::spawn(move || read_serial(stdout, echo));
    let stderr = child.stderr.take().map(|mut pipe| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    });

    let status = wait_with_timeout(&mut child, TIMEOUT)?;
    let elapsed = start.elapsed();
    let output = serial.join().unwrap_or_default();
    let stderr = stderr
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    match status {
        Some(status) => Ok(Run {
            status: status.code(),
            output,
            stderr,
            elapsed,
        }),
        None if echo => Err(format!(
            "{QEMU} did not exit within {} s and was killed",
            TIMEOUT.as_secs()
        )),
        None => Err(format!(
            "{QEMU} did not exit within {} s and was killed\n--- serial output ---\n{output}--- QEMU stderr ---\n{stderr}",
            TIMEOUT.as_secs()
        )),
    }
}

/// Collects the serial output line by line, printing each line as it comes
/// when `echo` is set.
fn read_serial(pipe: impl Read, echo: bool) -> String {
    let mut reader = BufReader::new(pipe);
    let mut output = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line).replace('\r', "");
                if echo {
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                }
                output.push_str(&text);
            }
        }
    }
    if !output.is_empty() && !output.ends_with('\n') {
        output.push('\n');
        if echo {
            println!();
        }
    }
    output
}

/// Waits for `child`; after `timeout`, kills it and returns `None`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for {QEMU}: {e}"))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // Kills the QEMU process this function's caller started.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A QEMU exit status in words.
fn describe(status: Option<i32>) -> String {
    match status {
        Some(SUCCESS) => format!("status {SUCCESS} (success)"),
        Some(FAILURE) => format!("status {FAILURE} (a self-test failed)"),
        Some(PANIC) => format!("status {PANIC} (kernel panic or CPU exception)"),
        Some(0) => "status 0 (triple fault or reset: the kernel crashed)".to_string(),
        Some(code) => format!("status {code} (unexpected)"),
        None => "no status (killed by a signal)".to_string(),
    }
}

/// `Ok` when the run ended with `expected`.
fn verdict(run: &Run, expected: i32) -> Result<(), String> {
    if run.status == Some(expected) {
        Ok(())
    } else {
        Err(format!(
            "the kernel ended with {}, expected status {expected}",
            describe(run.status)
        ))
    }
}

/// Checks that every [`EXPECTED`] marker appears in `output`, in order, and
/// that nothing reports a failure.
fn expect_lines(output: &str) -> Result<(), String> {
    let mut rest = output;
    for marker in EXPECTED {
        match rest.find(marker) {
            Some(at) => rest = &rest[at + marker.len()..],
            None => {
                return Err(format!(
                    "serial output lacks {marker:?} (or it is out of order)"
                ))
            }
        }
    }
    for bad in ["PANIC", "EXCEPTION", "FAIL"] {
        if output.contains(bad) {
            return Err(format!("serial output contains {bad:?}"));
        }
    }
    Ok(())
}
