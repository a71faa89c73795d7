//! Building `kernel-demo/` and booting it in QEMU: `cargo xtask demo` and the
//! boot test of `cargo xtask test`.
//!
//! The kernel is its own cargo project (not a workspace member), built for
//! `x86_64-unknown-none` from its own directory, with its own target
//! directory, by the toolchain pinned in the root `rust-toolchain.toml`
//! (rustup finds it from the parent directory). QEMU boots it through the PVH
//! entry and exits through `isa-debug-exit`: status 33 is success, 35 a failed
//! self-test, 37 a panic or CPU exception, and 0 a triple fault. QEMU gives
//! the kernel `-smp N` CPUs ([`DEMO_CPUS`] for the demo); the kernel starts
//! them all and prints each one's heap counters, which the boot test parses.

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
/// Longest a boot may take before QEMU is killed (it takes a few seconds).
const TIMEOUT: Duration = Duration::from_secs(120);
/// CPUs `cargo xtask demo` gives QEMU unless `--cpus` says otherwise.
const DEMO_CPUS: u32 = 4;
/// CPUs of the boot test's multi-core run.
const TEST_CPUS: u32 = 4;

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
    "SMP: the MADT lists ",
    "local APIC timer: ",
    "CPU(s) online",
    "stress: ",
    "check ok (SMP stress), no leak: ",
    "irq: ",
    "growth hook: ",
    "ALL TESTS PASSED",
];

/// `cargo xtask demo [--cpus N]`: the arguments after `demo`.
pub fn demo_command(args: &[String]) -> Result<(), String> {
    demo(parse_cpus(args)?)
}

/// The CPU count of `--cpus N` or `--cpus=N` in `args`, [`DEMO_CPUS`] if
/// absent; any other argument is an error.
fn parse_cpus(args: &[String]) -> Result<u32, String> {
    let mut cpus = DEMO_CPUS;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = match arg.strip_prefix("--cpus") {
            Some("") => rest.next().ok_or("--cpus needs a number")?.as_str(),
            Some(v) if v.starts_with('=') => &v[1..],
            _ => return Err(format!("cargo xtask demo: unknown argument {arg:?}")),
        };
        cpus = value
            .parse()
            .ok()
            .filter(|n| (1..=255).contains(n))
            .ok_or_else(|| format!("--cpus {value:?}: expected a number from 1 to 255"))?;
    }
    Ok(cpus)
}

/// `cargo xtask demo`: builds the kernel, boots it in QEMU on `cpus` CPUs
/// with its serial console printed live, and fails unless it exits with the
/// success status.
pub fn demo(cpus: u32) -> Result<(), String> {
    setup::apt_install(QEMU, QEMU_PACKAGES)?;
    let kernel = build()?;
    println!(
        "==> booting: {}",
        qemu_command(&kernel, None, cpus).join(" ")
    );
    let run = boot(&kernel, None, cpus, true)?;
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

/// The boot test: boots the kernel headless with a timeout on one CPU and
/// on [`TEST_CPUS`], asserts the success status, the expected serial output
/// and the per-CPU heap counters, then checks that a deliberate panic, CPU
/// exception and test failure give their own statuses. Fails (does not
/// skip) when QEMU is missing and cannot be installed.
pub fn boot_test() -> Result<(), String> {
    println!("==> boot test: kernel-demo in QEMU");
    setup::apt_install(QEMU, QEMU_PACKAGES)
        .map_err(|e| format!("boot test: QEMU is missing and could not be installed: {e}"))?;
    let kernel = build()?;

    let run = boot(&kernel, None, 1, false)?;
    let result = verdict(&run, SUCCESS)
        .and_then(|()| expect_lines(&run.output))
        .and_then(|()| smp_figures(&run.output, 1));
    if let Err(e) = result {
        return Err(format!(
            "boot test: with -smp 1: {e}\n--- serial output ---\n{}--- QEMU stderr ---\n{}",
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
        "    -smp 1: status {SUCCESS}, {regions} regions from the memory map, all markers found, {:.2} s",
        run.elapsed.as_secs_f64()
    );

    let run = boot(&kernel, None, TEST_CPUS, false)?;
    let figures = verdict(&run, SUCCESS)
        .and_then(|()| expect_lines(&run.output))
        .and_then(|()| smp_figures(&run.output, TEST_CPUS));
    match figures {
        Ok(figures) => println!(
            "    -smp {TEST_CPUS}: status {SUCCESS}, all markers found, {figures}, {:.2} s",
            run.elapsed.as_secs_f64()
        ),
        Err(e) => {
            return Err(format!(
                "boot test: with -smp {TEST_CPUS}: {e}\n--- serial output ---\n{}--- QEMU stderr ---\n{}",
                run.output, run.stderr
            ))
        }
    }

    for (append, status, marker) in [
        ("demo=panic", PANIC, "PANIC: "),
        ("demo=fault", PANIC, "EXCEPTION: page fault"),
        ("demo=fail", FAILURE, "TEST FAILED: "),
    ] {
        let run = boot(&kernel, Some(append), 1, false)?;
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
fn qemu_command(kernel: &Path, append: Option<&str>, cpus: u32) -> Vec<String> {
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
            "-smp",
        ]
        .map(String::from),
    );
    args.push(cpus.to_string());
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

/// Boots `kernel` on `cpus` CPUs, echoing its serial output live when
/// `echo` is set, and kills QEMU after [`TIMEOUT`].
fn boot(kernel: &Path, append: Option<&str>, cpus: u32, echo: bool) -> Result<Run, String> {
    let args = qemu_command(kernel, append, cpus);
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

/// One CPU's heap counters over the kernel's SMP stage, from its line
/// `cpu N: A allocations, F frees, R remote frees`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CpuLine {
    cpu: u32,
    allocations: u64,
    frees: u64,
    remote_frees: u64,
}

/// Parses `cpu N: A allocations, F frees, R remote frees` (`None` for any
/// other line).
fn parse_cpu_line(line: &str) -> Option<CpuLine> {
    let (cpu, rest) = line.strip_prefix("cpu ")?.split_once(": ")?;
    let mut parts = rest.split(", ");
    let mut number =
        |suffix: &str| -> Option<u64> { parts.next()?.strip_suffix(suffix)?.parse().ok() };
    let parsed = CpuLine {
        cpu: cpu.parse().ok()?,
        allocations: number(" allocations")?,
        frees: number(" frees")?,
        remote_frees: number(" remote frees")?,
    };
    parts.next().is_none().then_some(parsed)
}

/// Checks the SMP stage's figures in `output` for a run on `cpus` CPUs: a
/// line per CPU, numbered 0 to `cpus` − 1, each with allocations; the line
/// `irq: K allocations` with K > 0; on more than one CPU, remote frees on
/// at least two of them. Returns them in words.
fn smp_figures(output: &str, cpus: u32) -> Result<String, String> {
    let lines: Vec<CpuLine> = output.lines().filter_map(parse_cpu_line).collect();
    let numbers: Vec<u32> = lines.iter().map(|l| l.cpu).collect();
    if numbers != (0..cpus).collect::<Vec<_>>() {
        return Err(format!(
            "expected the counter lines of cpus 0 to {}, found cpus {numbers:?}",
            cpus - 1
        ));
    }
    if let Some(idle) = lines.iter().find(|l| l.allocations == 0) {
        return Err(format!("cpu {} made no allocation", idle.cpu));
    }
    let remote = lines.iter().filter(|l| l.remote_frees > 0).count();
    if cpus > 1 && remote < 2 {
        return Err(format!(
            "remote frees on {remote} CPU(s), expected at least 2"
        ));
    }
    let irq = output
        .lines()
        .find_map(|l| {
            l.strip_prefix("irq: ")?
                .strip_suffix(" allocations")?
                .parse::<u64>()
                .ok()
        })
        .ok_or("no line `irq: K allocations`")?;
    if irq == 0 {
        return Err("the timer interrupt handler made no allocation (irq: 0)".to_string());
    }
    let allocations: u64 = lines.iter().map(|l| l.allocations).sum();
    let remote_frees: u64 = lines.iter().map(|l| l.remote_frees).sum();
    Ok(format!(
        "{cpus} CPU(s): {allocations} allocations, {remote_frees} remote frees on {remote} CPU(s), {irq} in the timer interrupt"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lines_parse_exactly() {
        assert_eq!(
            parse_cpu_line("cpu 2: 50503 allocations, 50503 frees, 25023 remote frees"),
            Some(CpuLine {
                cpu: 2,
                allocations: 50503,
                frees: 50503,
                remote_frees: 25023
            })
        );
        for bad in [
            "  cpu 1: APIC ID 1, started",
            "cpu 1: 5 allocations, 5 frees",
            "cpu 1: 5 allocations, 5 frees, x remote frees",
            "cpu 1: 5 allocations, 5 frees, 2 remote frees, 1 more",
        ] {
            assert_eq!(parse_cpu_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn smp_figures_need_every_cpu_remote_frees_and_irq() {
        let good = "cpu 0: 9 allocations, 9 frees, 4 remote frees\n\
                    cpu 1: 8 allocations, 8 frees, 3 remote frees\n\
                    irq: 5 allocations\n";
        assert!(smp_figures(good, 2).is_ok());
        assert!(smp_figures(good, 3).is_err(), "a CPU is missing");
        let one_remote = good.replace("3 remote", "0 remote");
        assert!(smp_figures(&one_remote, 2).is_err());
        let no_irq = good.replace("irq: 5", "irq: 0");
        assert!(smp_figures(&no_irq, 2).is_err());
        let single = "cpu 0: 9 allocations, 9 frees, 0 remote frees\nirq: 1 allocations\n";
        assert!(smp_figures(single, 1).is_ok());
    }

    #[test]
    fn cpus_argument() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_cpus(&args(&[])), Ok(DEMO_CPUS));
        assert_eq!(parse_cpus(&args(&["--cpus", "2"])), Ok(2));
        assert_eq!(parse_cpus(&args(&["--cpus=1"])), Ok(1));
        assert!(parse_cpus(&args(&["--cpus", "0"])).is_err());
        assert!(parse_cpus(&args(&["--cpus"])).is_err());
        assert!(parse_cpus(&args(&["--smp", "2"])).is_err());
    }
}
