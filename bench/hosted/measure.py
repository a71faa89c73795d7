#!/usr/bin/env python3
"""Runs the hosted workloads under each allocator and prints one table.

Called by run.sh, which installs the packages and builds the programs:

    measure.py --bin DIR --data DIR --lib NAME=PATH ... [--rounds N] [--quick]

`--lib glibc=` (an empty path) means no LD_PRELOAD. Every round runs every
workload once under every allocator, the allocators back to back (their
order rotated by one each round), so that the machine's drift hits all of
them alike. Each run is a child process under GNU time: wall time from
start to exit, user+system CPU time and peak RSS from the child's rusage.
Throughput workloads print their own figure on stdout instead. The table
gives medians over the rounds and ratios to glibc from the same run
(`--metric cpu`: CPU time, and throughput per CPU second).

Every run's stdout is kept and compared with glibc's: the real programs
and the deterministic C workloads must print the same bytes under every
allocator; a difference is reported and makes the script fail.
"""

import argparse
import datetime
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class Workload:
    """One benchmark row: a command, and how to read its figure."""

    def __init__(self, label, argv, unit, rate=False, same_output=True, env=None):
        self.label = label  # the table's first column
        self.argv = argv
        self.unit = unit  # "s", or the throughput unit the program prints
        self.rate = rate  # the program prints a throughput (higher is better)
        self.same_output = same_output  # stdout must match glibc's
        self.env = env or {}


def workloads(bindir, data, quick):
    """The fourteen rows, with full or QUICK sizes."""
    b = lambda name: os.path.join(bindir, name)  # noqa: E731
    q = lambda full, small: small if quick else full  # noqa: E731
    larson_ms = q(5000, 300)
    thread_ms = q(2000, 300)
    py_entries, py_rounds = q((2_000_000, 2), (150_000, 1))
    sort_mb = q(50, 5)
    commits = q(4400, 300)
    small_n = q(100_000_000, 5_000_000)
    mixed_n = q(20_000_000, 1_000_000)
    return [
        Workload(
            "larson-style server sim, 2 threads (M ops/s)",
            [b("larson"), "2", str(larson_ms), "8", "1000", "5000", "100", "4141"],
            "M ops/s",
            rate=True,
            same_output=False,
        ),
        Workload(
            "glibc-bench simple (s)",
            [b("bench_simple"), str(q(4_000_000, 200_000))],
            "s",
        ),
        Workload(
            "glibc-bench thread, 2 threads (M iterations in %g s)" % (thread_ms / 1000),
            [b("bench_thread"), "2", str(thread_ms)],
            "M it",
            rate=True,
            same_output=False,
        ),
        Workload(
            "alloc-test, 2 threads (s)",
            [b("alloc_test"), "2", str(q(45_000_000, 2_000_000)), "4096"],
            "s",
        ),
        Workload(
            "producer/consumer, 2 pairs, cross-thread frees (s)",
            [b("prodcons"), "2", str(q(10_000_000, 500_000)), "256"],
            "s",
        ),
        Workload(
            "tiny objects, 16 threads (s)",
            [b("tiny_threads"), "16", str(q(1_000_000, 50_000))],
            "s",
        ),
        Workload(
            "mixed small objects, hash table and strings (s)",
            [b("mixed_small"), "300000", str(q(10, 1))],
            "s",
        ),
        Workload(
            "tree rebuilt each step, n-body (s)",
            [b("tree_rebuild"), str(q(20000, 5000)), str(q(10, 2))],
            "s",
        ),
        Workload(
            "large blocks 5..25 MiB reused (s)",
            [b("large"), str(q(24, 8)), str(q(1500, 100))],
            "s",
        ),
        Workload(
            "python3 dict of strings, PYTHONMALLOC=malloc (s)",
            ["/usr/bin/python3", os.path.join(HERE, "pydict.py"), str(py_entries), str(py_rounds)],
            "s",
            env={"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"},
        ),
        Workload(
            "LC_ALL=C sort of %d MB text (s)" % sort_mb,
            ["sort", sort_input(data, sort_mb)],
            "s",
            env={"LC_ALL": "C", "TMPDIR": data},
        ),
        Workload(
            "git log -p on a %s-commit repo (s)" % format(commits, ","),
            ["git", "-C", git_repo(data, commits), "--no-pager", "log", "-p"],
            "s",
            env={"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": data},
        ),
        Workload(
            "loop malloc(4)/free, %s (s)" % millions(small_n),
            [b("loop_small"), str(small_n)],
            "s",
        ),
        Workload(
            "loop malloc/free/calloc/realloc/free rand()%%2048, %s (s)" % millions(mixed_n),
            [b("loop_mixed"), str(mixed_n)],
            "s",
        ),
    ]


def millions(n):
    return "%g M" % (n / 1e6)


def sort_input(data, megabytes):
    """The generated text file, made once per size and kept in `data`."""
    path = os.path.join(data, "sort-%dMB-seed1.txt" % megabytes)
    if not os.path.exists(path):
        generate(["sort", path + ".tmp", str(megabytes), "1"])
        os.rename(path + ".tmp", path)
    return path


def git_repo(data, commits):
    """The generated repository, made once per size and kept in `data`."""
    path = os.path.join(data, "git-%d-seed1" % commits)
    if not os.path.exists(path):
        subprocess.run(["rm", "-rf", path + ".tmp"], check=True)
        generate(["git", path + ".tmp", str(commits), "1"])
        os.rename(path + ".tmp", path)
    return path


def generate(args):
    print("generating %s" % " ".join(args), file=sys.stderr)
    subprocess.run([sys.executable, os.path.join(HERE, "gen.py")] + args, check=True)


class Run:
    """The result of one child process."""

    def __init__(self, figure, wall, cpu, rss_mb, digest, status, stderr_tail):
        self.figure = figure  # wall seconds, or the printed throughput
        self.wall = wall  # seconds from start to exit
        self.cpu = cpu  # user + system seconds
        self.rss_mb = rss_mb
        self.digest = digest
        self.status = status
        self.stderr_tail = stderr_tail


def run_once(workload, preload, outdir):
    """Runs the workload once. GNU time reports the peak RSS: the child must
    start from a small process, since Linux carries the RSS high-water mark
    of a forked Python over exec."""
    env = dict(os.environ, **workload.env)
    env.pop("LD_PRELOAD", None)
    preload_argv = ["env", "LD_PRELOAD=" + preload] if preload else []
    out_path = os.path.join(outdir, "stdout")
    err_path = os.path.join(outdir, "stderr")
    rss_path = os.path.join(outdir, "rss")
    argv = ["/usr/bin/time", "-f", "%M %U %S", "-o", rss_path] + preload_argv + workload.argv
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        status = subprocess.run(argv, stdout=out, stderr=err, env=env).returncode
        elapsed = time.perf_counter() - start
    with open(rss_path) as f:
        rss_kb, user, system = f.read().splitlines()[-1].split()
    digest = hashlib.sha256()
    with open(out_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    with open(err_path, "rb") as f:
        stderr_tail = f.read()[-500:].decode(errors="replace")
    figure = elapsed
    if workload.rate and status == 0:
        with open(out_path) as f:
            figure = float(f.read().split()[-1])
    cpu = float(user) + float(system)
    return Run(figure, elapsed, cpu, int(rss_kb) / 1024, digest.hexdigest(), status, stderr_tail)


def measure(allocators, rows, rounds, outdir):
    """results[row][allocator] = list of Runs; every run's output checked."""
    results = {w.label: {a: [] for a, _ in allocators} for w in rows}
    problems = []
    for r in range(rounds):
        order = allocators[r % len(allocators) :] + allocators[: r % len(allocators)]
        for w in rows:
            for name, preload in order:
                run = run_once(w, preload, outdir)
                results[w.label][name].append(run)
                shown = "%.2f %s" % (run.figure, w.unit)
                print(
                    "round %d/%d  %-10s %-52s %12s %8.1f MB"
                    % (r + 1, rounds, name, w.label[:52], shown, run.rss_mb),
                    file=sys.stderr,
                    flush=True,
                )
                if run.status != 0:
                    problems.append(
                        "%s under %s exited with %d: %s" % (w.label, name, run.status, run.stderr_tail)
                    )
        for w in rows:
            if not w.same_output:
                continue
            ref = results[w.label][allocators[0][0]][-1].digest
            for name, _ in allocators[1:]:
                if results[w.label][name][-1].digest != ref:
                    problems.append(
                        "%s: output under %s differs from %s (round %d)"
                        % (w.label, name, allocators[0][0], r + 1)
                    )
    return results, problems


def use_cpu_time(rows, results):
    """Makes the figures CPU-based: time rows become user+system seconds,
    throughput rows work per CPU second (throughput x wall / CPU), so that
    CPU time taken by other processes does not count against a run."""
    for w in rows:
        for runs in results[w.label].values():
            for run in runs:
                if not w.rate:
                    run.figure = run.cpu
                elif run.cpu > 0:
                    run.figure = run.figure * run.wall / run.cpu


def cell(runs, base_runs):
    figure = statistics.median(x.figure for x in runs)
    rss = statistics.median(x.rss_mb for x in runs)
    base = statistics.median(x.figure for x in base_runs)
    base_rss = statistics.median(x.rss_mb for x in base_runs)
    ratio = figure / base if base else float("nan")
    rss_ratio = rss / base_rss if base_rss else float("nan")
    return figure, rss, ratio, rss_ratio


def table(allocators, rows, results):
    names = [a for a, _ in allocators]
    lines = [
        "| workload | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for w in rows:
        base = results[w.label][names[0]]
        cells = []
        for name in names:
            figure, rss, ratio, rss_ratio = cell(results[w.label][name], base)
            digits = "%.1f" if w.rate else "%.2f"
            rss_digits = "%.1f" if rss < 100 else "%.0f"
            cells.append(
                (digits + " (%.2fx) / " + rss_digits + " MB (%.2fx)")
                % (figure, ratio, rss, rss_ratio)
            )
        lines.append("| " + w.label + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BEST_OF = ("jemalloc", "mimalloc", "tcmalloc")


def slowdown(runs, base_runs, rate):
    """How much slower `runs` is than `base_runs` (above 1: slower)."""
    _, _, ratio, _ = cell(runs, base_runs)
    return 1 / ratio if rate else ratio


def targets(rows, results, subject="region-heap"):
    """The issue's targets for `subject`: time at or below glibc (throughput
    at or above), peak RSS at most 1.1x glibc's where glibc's exceeds
    10 MB, and on the geometric mean at most the time of the best of
    jemalloc, mimalloc and tcmalloc on each row."""
    lines = []
    against_best = []
    for w in rows:
        if subject not in results[w.label] or "glibc" not in results[w.label]:
            return []
        mine = results[w.label][subject]
        glibc = results[w.label]["glibc"]
        _, _, ratio, rss_ratio = cell(mine, glibc)
        checks = [("vs glibc", ratio >= 1.0 if w.rate else ratio <= 1.0, ratio)]
        if statistics.median(x.rss_mb for x in glibc) > 10:
            checks.append(("RSS vs glibc", rss_ratio <= 1.1, rss_ratio))
        peers = [n for n in BEST_OF if n in results[w.label]]
        if peers:
            best = min(peers, key=lambda n: slowdown(results[w.label][n], glibc, w.rate))
            behind = slowdown(mine, results[w.label][best], w.rate)
            against_best.append(behind)
            checks.append(("time vs the best, %s" % best, None, behind))
        verdict = ", ".join(
            "%s %.2fx%s" % (what, value, "" if ok is None else " ok" if ok else " MISSED")
            for what, ok, value in checks
        )
        lines.append("- %s: %s" % (w.label, verdict))
    if against_best:
        mean = statistics.geometric_mean(against_best)
        lines.append(
            "- geometric mean of time vs the best of %s on each row: %.2fx %s"
            % (", ".join(BEST_OF), mean, "ok" if mean <= 1.0 else "MISSED")
        )
    return lines


def machine():
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "%s, %d CPUs, Linux %s" % (model, os.cpu_count(), platform.release())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="directory of the built C workloads")
    parser.add_argument("--data", required=True, help="directory for generated inputs and outputs")
    parser.add_argument("--lib", action="append", required=True, help="NAME=PATH (empty PATH: none)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated label prefixes to run")
    parser.add_argument(
        "--metric",
        choices=["wall", "cpu"],
        default="wall",
        help="time rows: wall seconds, or user+system CPU seconds (steadier on a shared machine)",
    )
    args = parser.parse_args()

    allocators = [tuple(spec.split("=", 1)) for spec in args.lib]
    os.makedirs(args.data, exist_ok=True)
    rows = workloads(args.bin, args.data, args.quick)
    if args.only:
        prefixes = args.only.split(",")
        rows = [w for w in rows if any(w.label.startswith(p) for p in prefixes)]
    outdir = os.path.join(args.data, "out")
    os.makedirs(outdir, exist_ok=True)

    started = time.time()
    results, problems = measure(allocators, rows, args.rounds, outdir)
    if args.metric == "cpu":
        use_cpu_time(rows, results)
    print()
    print(
        "Hosted mallocs under LD_PRELOAD, %s, %s; median of %d round%s%s; "
        "cells: %s (ratio to %s) / peak RSS (ratio); "
        "for throughput rows higher is better."
        % (
            datetime.date.today().isoformat(),
            machine(),
            args.rounds,
            "s" if args.rounds != 1 else "",
            ", QUICK sizes" if args.quick else "",
            "wall time in s or throughput"
            if args.metric == "wall"
            else "user+system CPU time in s or throughput per CPU second",
            allocators[0][0],
        )
    )
    print()
    print(table(allocators, rows, results))
    goal = targets(rows, results)
    if goal:
        print()
        print("Targets for region-heap:")
        print("\n".join(goal))
    print()
    print("total %.0f s" % (time.time() - started))
    if problems:
        print()
        print("PROBLEMS:")
        for p in problems:
            print("- " + p)
        sys.exit(1)


if __name__ == "__main__":
    main()
