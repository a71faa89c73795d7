//! `osmem-check`: replays seed 004's reference traces against
//! `libosmem.so` and diffs what the library did with what the reference
//! says it must do.
//!
//! ```text
//! osmem-check [--lib PATH] [--refs DIR] [--trace NAME]... [--strace] [--valgrind]
//! osmem-check replay --lib PATH [--free-all] TRACE
//! ```
//!
//! First the library's dynamic symbols must be exactly the four `os_*`
//! (`nm -D`). Then, for each trace, the checker runs `osmem-check replay`
//! (module `replay`) under its own ptrace recorder (`record`), renders the
//! `os_*` calls and every system call made inside them in the reference's
//! layout (`render`, `trace`) and compares line for line, printing a diff
//! for any mismatch and `N/40 identical` at the end. With `--strace` each
//! replay is recorded again by `strace` and must render identically (the
//! recorder verified against an independent tool). With `--valgrind` each
//! replay runs under memcheck with `--free-all` (no error, no leak), and a
//! replay that keeps two blocks must be reported as leaking them.
//!
//! Exit status: 0 when every trace is identical and every requested check
//! is clean, 1 otherwise, 2 on bad usage.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod diff;
mod events;
mod record;
mod render;
mod replay;
mod seedheap;
mod strace;
mod trace;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The seed's functions: exactly what `libosmem.so` may export.
const EXPORTS: [&str; 4] = ["os_calloc", "os_free", "os_malloc", "os_realloc"];

struct Options {
    lib: PathBuf,
    refs: PathBuf,
    only: Vec<String>,
    strace: bool,
    valgrind: bool,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: osmem-check [--lib PATH] [--refs DIR] [--trace NAME]... [--strace] [--valgrind]\n       \
         osmem-check replay --lib PATH [--free-all] TRACE"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("replay") {
        return replay_command(&args[1..]);
    }
    let Some(options) = parse_options(&args) else {
        return usage();
    };
    match check(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("osmem-check: {e}");
            ExitCode::FAILURE
        }
    }
}

fn replay_command(args: &[String]) -> ExitCode {
    let mut lib = None;
    let mut free_all = false;
    let mut trace = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--lib" => lib = it.next(),
            "--free-all" => free_all = true,
            _ if trace.is_none() => trace = Some(arg),
            _ => return usage(),
        }
    }
    let (Some(lib), Some(trace)) = (lib, trace) else {
        return usage();
    };
    match replay::run(lib, trace, free_all) {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            eprintln!("osmem-check replay: {e}");
            ExitCode::from(3)
        }
    }
}

/// Beside the checker in the target directory, where cargo puts both.
fn default_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("libosmem.so")
}

/// `osmem/ref`: the seed's 40 reference traces, kept in the repository.
fn default_refs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ref")
}

fn parse_options(args: &[String]) -> Option<Options> {
    let mut options = Options {
        lib: default_lib(),
        refs: default_refs(),
        only: Vec::new(),
        strace: false,
        valgrind: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--lib" => options.lib = it.next()?.into(),
            "--refs" => options.refs = it.next()?.into(),
            "--trace" => options.only.push(it.next()?.clone()),
            "--strace" => options.strace = true,
            "--valgrind" => options.valgrind = true,
            _ => return None,
        }
    }
    Some(options)
}

/// The reference traces, by name.
fn traces(options: &Options) -> Result<Vec<PathBuf>, String> {
    let dir = std::fs::read_dir(&options.refs).map_err(|e| format!("{:?}: {e}", options.refs))?;
    let mut paths: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ref"))
        .filter(|p| {
            options.only.is_empty()
                || options
                    .only
                    .iter()
                    .any(|o| name(p) == o.trim_end_matches(".ref"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("no .ref trace in {:?}", options.refs));
    }
    Ok(paths)
}

fn name(path: &Path) -> &str {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("?")
}

fn replay_argv(options: &Options, trace: &Path, free_all: bool) -> Vec<String> {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut argv = vec![
        exe.display().to_string(),
        "replay".to_string(),
        "--lib".to_string(),
        options.lib.display().to_string(),
    ];
    if free_all {
        argv.push("--free-all".to_string());
    }
    argv.push(trace.display().to_string());
    argv
}

/// Every requested check; `Ok(true)` when all pass.
fn check(options: &Options) -> Result<bool, String> {
    let paths = traces(options)?;
    let mut ok = check_exports(&options.lib)?;
    let mut identical = 0;
    let mut strace_same = 0;
    let mut clean = 0;
    let use_strace = options.strace && strace::available();
    if options.strace && !use_strace {
        println!("strace: not installed, recorder not cross-checked");
        ok = false;
    }
    for path in &paths {
        let reference = std::fs::read_to_string(path).map_err(|e| format!("{path:?}: {e}"))?;
        let steps = trace::parse(&reference).map_err(|e| format!("{path:?}: {e}"))?;
        let expected: Vec<String> = reference.lines().map(str::to_string).collect();
        let argv = replay_argv(options, path, false);
        let (events, exit) = record::record(&argv)?;
        let ours = render::render(&steps, &events, exit);
        let same = report_trace(name(path), &expected, &ours);
        identical += usize::from(same);
        if use_strace {
            let scratch =
                std::env::temp_dir().join(format!("osmem-strace-{}.log", std::process::id()));
            let (events, exit) = strace::record(&argv, &scratch)?;
            let theirs = render::render(&steps, &events, exit);
            let agree = theirs.lines == ours.lines && theirs.problems.is_empty();
            if !agree {
                println!("  strace disagrees with the recorder on {}:", name(path));
                print_lines(&diff::diff(&ours.lines, &theirs.lines, 2));
            }
            strace_same += usize::from(agree);
        }
    }
    if options.valgrind {
        clean = valgrind_all(options, &paths);
        ok &= valgrind_sees_leaks(options)?;
    }
    let total = paths.len();
    println!("{identical}/{total} identical");
    ok &= identical == total;
    if use_strace {
        println!("strace: {strace_same}/{total} recordings identical to the recorder's");
        ok &= strace_same == total;
    }
    if options.valgrind {
        println!("valgrind: {clean}/{total} replays clean (no error, no leak)");
        ok &= clean == total;
    }
    Ok(ok)
}

fn print_lines(lines: &[String]) {
    for line in lines {
        println!("    {line}");
    }
}

/// Prints one trace's verdict (and its diff); returns whether it matched.
fn report_trace(name: &str, expected: &[String], ours: &render::Rendered) -> bool {
    let same = ours.lines == expected && ours.problems.is_empty();
    if same {
        println!("identical  {name}");
    } else {
        println!("DIFFERENT  {name}  (- reference, + libosmem.so)");
        for problem in &ours.problems {
            println!("    problem: {problem}");
        }
        print_lines(&diff::diff(expected, &ours.lines, 3));
    }
    same
}

/// Checks the library's dynamic symbols: exactly the four `os_*`.
fn check_exports(lib: &Path) -> Result<bool, String> {
    let output = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib)
        .output()
        .map_err(|e| format!("cannot run nm (binutils) on {lib:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!("nm failed on {lib:?}"));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    names.sort_unstable();
    let ok = names == EXPORTS;
    println!(
        "exports of {}: {} ({})",
        lib.display(),
        names.join(" "),
        if ok {
            "exactly the seed's four"
        } else {
            "WRONG"
        }
    );
    Ok(ok)
}

/// Replays every trace with `--free-all` under memcheck, as many at a
/// time as there are CPUs; returns how many were clean.
fn valgrind_all(options: &Options, paths: &[PathBuf]) -> usize {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let clean = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                match valgrind(&replay_argv(options, path, true)) {
                    Ok(()) => {
                        clean.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => println!("  valgrind: {}: {e}", name(path)),
                }
            });
        }
    });
    clean.into_inner()
}

/// The leak check can fail: a replay that keeps one heap and one mapped
/// block (no `--free-all`) must be reported as a leak.
///
/// memcheck's leak scan is conservative: any word in a register or on a
/// stack that equals a block's address keeps the block reachable, so a
/// stale copy of a returned pointer can hide the leak in one run (the
/// stack's contents shift with the environment and address layout). The
/// replay is therefore tried up to `LEAK_ATTEMPTS` times; a miss prints
/// memcheck's leak summary, and only misses in every attempt fail.
fn valgrind_sees_leaks(options: &Options) -> Result<bool, String> {
    const LEAK_ATTEMPTS: usize = 3;
    let leak = std::env::temp_dir().join(format!("osmem-leak-{}.ref", std::process::id()));
    let text = [
        trace::line(false, "os_malloc", &["100".into()], "HeapStart + 0x20"),
        trace::line(
            false,
            "os_malloc",
            &["300000".into()],
            "<mapped-addr1> + 0x20",
        ),
        trace::exit_line(0),
    ]
    .join("\n");
    std::fs::write(&leak, text).map_err(|e| format!("{leak:?}: {e}"))?;
    let mut seen = false;
    for attempt in 1..=LEAK_ATTEMPTS {
        let verdict = valgrind(&replay_argv(options, &leak, false));
        seen = verdict
            .as_ref()
            .is_err_and(|e| e.contains("definitely lost: 300,104 bytes in 2 blocks"));
        if seen {
            break;
        }
        let summary = match &verdict {
            Ok(()) => "memcheck found no error".to_string(),
            Err(e) => e
                .lines()
                .filter(|l| l.contains("lost:") || l.contains("reachable:"))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        println!("valgrind: leak check attempt {attempt} missed the 2 kept blocks:\n{summary}");
    }
    let _ = std::fs::remove_file(&leak);
    println!(
        "valgrind: a replay keeping 2 blocks is {}",
        if seen {
            "reported as leaking 300,104 bytes in 2 blocks"
        } else {
            "NOT reported as a leak"
        }
    );
    Ok(seen)
}

/// Runs a replay under memcheck: no error and no leak.
fn valgrind(argv: &[String]) -> Result<(), String> {
    let output = Command::new("valgrind")
        .args([
            "--tool=memcheck",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=99",
        ])
        .args(argv)
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let log = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("{}\n{}", output.status, tail.join("\n")))
}
