//! Real programs under the hosted shim: the real-program test of
//! `cargo xtask test`.
//!
//! Builds `libregionheap.so` (`cargo build --release -p region-heap-shim`),
//! then runs three programs on generated inputs twice, without and with
//! `LD_PRELOAD` of the library, and requires the same exit status and
//! byte-identical standard output:
//! - `python3` with `PYTHONMALLOC=malloc` (every object through malloc)
//!   building and dropping large dicts of strings and printing a digest of
//!   their contents (`bench/hosted/pydict.py`);
//! - `git log -p` on a repository made by `bench/hosted/gen.py git`
//!   through `git fast-import`, with authors, committers and dates fixed in
//!   the import stream;
//! - `LC_ALL=C sort` of a text file made by `bench/hosted/gen.py sort`.
//!
//! The inputs come from fixed seeds, so the outputs are the same on every
//! run; the run without the library is the reference and is checked for
//! its expected shape first (one digest per round, one `commit` per commit,
//! sorted lines of the input's length), so a broken input cannot make an
//! empty comparison pass. Two records prove that the preloaded run really
//! used the library: `LD_DEBUG=bindings` (written to a separate file) shows
//! the dynamic loader binding `malloc` and `free` to it, and
//! `REGIONHEAP_STATS=1` makes the shim print its counters to stderr at exit,
//! whose `malloc` count must not be zero (except for `sort`: coreutils
//! closes stderr in an `atexit` handler, before the shim's destructor can
//! print).
//!
//! `REALPROGS_LIB=/path/to/lib.so` runs the same comparisons against
//! another malloc (for checking this harness, e.g. with Debian's tcmalloc);
//! the shim's counters are then not required.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::setup::{apt_install, repo_root, run, target_dir};

/// The sizes of the generated inputs.
struct Sizes {
    /// Megabytes of text to sort.
    sort_mb: u32,
    /// Commits in the generated repository.
    commits: u32,
    /// Entries of each Python dict.
    dict_entries: u32,
    /// Dicts built and dropped one after the other.
    dict_rounds: u32,
}

impl Sizes {
    /// The full sizes (50 MB to sort, as the issue asks), or small ones.
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                sort_mb: 5,
                commits: 100,
                dict_entries: 100_000,
                dict_rounds: 2,
            }
        } else {
            Sizes {
                sort_mb: 50,
                commits: 400,
                dict_entries: 600_000,
                dict_rounds: 2,
            }
        }
    }
}

/// Checks a reference output's shape, saying what is wrong.
type OutputCheck = Box<dyn Fn(&[u8]) -> Result<(), String>>;

/// One program run: its command line, extra environment, and the checks
/// that its reference output must pass.
struct Program {
    name: &'static str,
    argv: Vec<String>,
    env: Vec<(&'static str, String)>,
    expect: OutputCheck,
    /// Whether stderr is still open when the shim prints its report.
    keeps_stderr: bool,
}

/// Builds the shim and compares every program's output without and with it.
pub fn test(quick: bool) -> Result<(), String> {
    println!("==> real programs under LD_PRELOAD of the shim");
    apt_install("/usr/bin/python3", &["python3"])?;
    apt_install("git", &["git"])?;
    apt_install("sort", &["coreutils"])?;
    let lib = shim_library()?;
    let work = target_dir().join("realprogs");
    if work.exists() {
        fs::remove_dir_all(&work).map_err(|e| format!("clearing {}: {e}", work.display()))?;
    }
    fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    let mut failures = Vec::new();
    for program in programs(&work, &Sizes::new(quick))? {
        match compare(&program, &lib, &work) {
            Ok(bytes) => println!("    {}: identical output ({bytes} bytes)", program.name),
            Err(e) => {
                println!("    {}: FAILED: {e}", program.name);
                failures.push(format!("{}: {e}", program.name));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("real programs: {}", failures.join("; ")))
    }
}

/// The library to preload: `REALPROGS_LIB`, or the shim built in release.
fn shim_library() -> Result<PathBuf, String> {
    if let Some(lib) = std::env::var_os("REALPROGS_LIB") {
        return Ok(PathBuf::from(lib));
    }
    println!("==> building the shim: cargo build --release -p region-heap-shim");
    run(Command::new("cargo")
        .args(["build", "--release", "-p", "region-heap-shim"])
        .current_dir(repo_root()))?;
    let lib = target_dir().join("release").join("libregionheap.so");
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(format!("the shim build produced no {}", lib.display()))
    }
}

fn bench_script(name: &str) -> String {
    repo_root()
        .join("bench")
        .join("hosted")
        .join(name)
        .display()
        .to_string()
}

/// Generates the inputs and describes the three programs.
fn programs(work: &Path, sizes: &Sizes) -> Result<Vec<Program>, String> {
    let text = work.join("sort-input.txt");
    let repo = work.join("repo");
    println!(
        "    generating {} MB of text and a {}-commit repository",
        sizes.sort_mb, sizes.commits
    );
    for args in [
        [
            "sort",
            &text.display().to_string(),
            &sizes.sort_mb.to_string(),
            "1",
        ],
        [
            "git",
            &repo.display().to_string(),
            &sizes.commits.to_string(),
            "1",
        ],
    ] {
        run(Command::new("/usr/bin/python3")
            .arg(bench_script("gen.py"))
            .args(args)
            .env("HOME", work))?;
    }
    let input_len = fs::metadata(&text)
        .map_err(|e| format!("{}: {e}", text.display()))?
        .len();
    let (rounds, commits) = (sizes.dict_rounds, sizes.commits);
    Ok(vec![
        Program {
            name: "python3 dict of strings (PYTHONMALLOC=malloc)",
            argv: vec![
                "/usr/bin/python3".into(),
                bench_script("pydict.py"),
                sizes.dict_entries.to_string(),
                rounds.to_string(),
            ],
            env: vec![
                ("PYTHONMALLOC", "malloc".into()),
                ("PYTHONHASHSEED", "0".into()),
            ],
            expect: Box::new(move |out| expect_digests(out, rounds)),
            keeps_stderr: true,
        },
        Program {
            name: "git log -p",
            argv: ["git", "-C", &repo.display().to_string(), "--no-pager"]
                .into_iter()
                .map(String::from)
                .chain(["log".into(), "-p".into()])
                .collect(),
            env: vec![
                ("GIT_CONFIG_NOSYSTEM", "1".into()),
                ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
                ("HOME", work.display().to_string()),
            ],
            expect: Box::new(move |out| expect_log(out, commits)),
            keeps_stderr: true,
        },
        Program {
            name: "LC_ALL=C sort",
            argv: vec!["sort".into(), text.display().to_string()],
            env: vec![
                ("LC_ALL", "C".into()),
                ("TMPDIR", work.display().to_string()),
            ],
            expect: Box::new(move |out| expect_sorted(out, input_len)),
            keeps_stderr: false,
        },
    ])
}

/// Runs the program without and with the library; returns the output size.
fn compare(program: &Program, lib: &Path, work: &Path) -> Result<usize, String> {
    let reference = execute(program, &[])?;
    if !reference.status.success() {
        return Err(format!(
            "the reference run failed with {}: {}",
            reference.status,
            tail(&reference.stderr)
        ));
    }
    (program.expect)(&reference.stdout).map_err(|e| format!("reference output: {e}"))?;
    let trace = work.join("ld-debug");
    let preloaded = execute(
        program,
        &[
            ("LD_PRELOAD", lib.display().to_string()),
            ("LD_DEBUG", "bindings".into()),
            ("LD_DEBUG_OUTPUT", trace.display().to_string()),
            ("REGIONHEAP_STATS", "1".into()),
        ],
    )?;
    let bound = bindings_to(work, "ld-debug.", lib)?;
    if preloaded.status != reference.status {
        return Err(format!(
            "exit status {} under the library, {} without: {}",
            preloaded.status,
            reference.status,
            tail(&preloaded.stderr)
        ));
    }
    if preloaded.stdout != reference.stdout {
        return Err(difference(&reference.stdout, &preloaded.stdout));
    }
    for symbol in ["malloc", "free"] {
        if !bound.contains(&symbol) {
            return Err(format!(
                "LD_DEBUG shows no binding of `{symbol}` to {}",
                lib.display()
            ));
        }
    }
    if program.keeps_stderr && std::env::var_os("REALPROGS_LIB").is_none() {
        let mallocs = shim_malloc_count(&preloaded.stderr)?;
        if mallocs == 0 {
            return Err("the shim counted no malloc".into());
        }
    }
    Ok(reference.stdout.len())
}

/// The `malloc` counter of the report the shim prints at exit with
/// `REGIONHEAP_STATS=1` (`region-heap stats:` then `  malloc <n>`).
fn shim_malloc_count(stderr: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(stderr);
    let report = text
        .split_once("region-heap stats:\n")
        .map(|(_, report)| report)
        .ok_or("no `region-heap stats:` report from the shim on stderr")?;
    report
        .lines()
        .find_map(|line| line.trim().strip_prefix("malloc "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| "no malloc count in the shim's report".to_string())
}

fn execute(program: &Program, extra_env: &[(&str, String)]) -> Result<Output, String> {
    let mut cmd = Command::new(&program.argv[0]);
    cmd.args(&program.argv[1..]).env_remove("LD_PRELOAD");
    for (key, value) in program.env.iter().chain(extra_env) {
        cmd.env(key, value);
    }
    cmd.output()
        .map_err(|e| format!("cannot start {}: {e}", program.argv[0]))
}

/// The symbols among malloc, free, calloc and realloc that the loader
/// bound to `lib`, read from (and then removing) the `LD_DEBUG_OUTPUT`
/// files `<work>/<prefix><pid>`.
fn bindings_to(work: &Path, prefix: &str, lib: &Path) -> Result<Vec<&'static str>, String> {
    let lib_name = lib
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut bound = Vec::new();
    let entries = fs::read_dir(work).map_err(|e| format!("{}: {e}", work.display()))?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        for symbol in ["malloc", "free", "calloc", "realloc"] {
            let needle = format!("{lib_name} [0]: normal symbol `{symbol}'");
            if text.contains(&needle) && !bound.contains(&symbol) {
                bound.push(symbol);
            }
        }
        fs::remove_file(entry.path()).map_err(|e| format!("{e}"))?;
    }
    Ok(bound)
}

/// The first differing byte and the lengths, for the failure message.
fn difference(reference: &[u8], preloaded: &[u8]) -> String {
    let at = reference
        .iter()
        .zip(preloaded)
        .position(|(a, b)| a != b)
        .unwrap_or(reference.len().min(preloaded.len()));
    let line = reference[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    format!(
        "stdout differs at byte {at} (line {line}): {} bytes without the library, {} with",
        reference.len(),
        preloaded.len()
    )
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(400);
    text.get(start..).unwrap_or(&text).trim().to_string()
}

/// pydict.py prints `round <i>: <n> entries, <c> value chars, sha256 <hex>`
/// once per round.
fn expect_digests(out: &[u8], rounds: u32) -> Result<(), String> {
    let text = std::str::from_utf8(out).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != rounds as usize {
        return Err(format!("{} lines, expected {rounds}", lines.len()));
    }
    for (i, line) in lines.iter().enumerate() {
        let digest = line.rsplit(' ').next().unwrap_or("");
        if !line.starts_with(&format!("round {i}: ")) || digest.len() != 64 {
            return Err(format!("unexpected line {line:?}"));
        }
    }
    Ok(())
}

/// `git log -p` prints one `commit <sha>` line per commit, and patches.
fn expect_log(out: &[u8], commits: u32) -> Result<(), String> {
    let text = String::from_utf8_lossy(out);
    let listed = text.lines().filter(|l| l.starts_with("commit ")).count();
    if listed != commits as usize {
        return Err(format!("{listed} commits listed, expected {commits}"));
    }
    if !text.contains("\ndiff --git ") {
        return Err("no patch in the log".into());
    }
    Ok(())
}

/// `sort` prints the input's lines in byte order: same length, a final
/// newline, and every line at most the next one.
fn expect_sorted(out: &[u8], input_len: u64) -> Result<(), String> {
    if out.len() as u64 != input_len {
        return Err(format!("{} bytes, the input has {input_len}", out.len()));
    }
    let body = out.strip_suffix(b"\n").ok_or("no final newline")?;
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    match lines.windows(2).position(|pair| pair[0] > pair[1]) {
        Some(n) => Err(format!("line {} is out of order", n + 2)),
        None => Ok(()),
    }
}
