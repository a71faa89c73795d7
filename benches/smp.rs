//! SMP benchmark: `PerCpuHeap` (one region heap per CPU) against one lock
//! around one heap: region-heap's `LockedHeap`, talc's `TalcLock` and
//! linked_list_allocator's locked heap, with 1 and 2 threads, each
//! allocator over the same 64 MiB (`PerCpuHeap<2>`: one 32 MiB arena per
//! CPU), every call through `GlobalAlloc`, as a kernel makes it.
//!
//! Run with `cargo bench --bench smp` (release, fat LTO, one codegen unit:
//! `[profile.bench]`; about 2 minutes). `BENCH_QUICK=1` runs a smoke version
//! for CI (a few seconds): 20,000 operations per thread, one repeat.
//! `SMP_ONLY=percpu,talc` runs only the named allocators (`percpu`,
//! `locked`, `talc`, `linked_list`), `SMP_ROWS=1,5` only those rows of the
//! table (numbered from 1), `SMP_OPS` and `SMP_REPEATS` override the
//! operations per thread and the repeats.
//!
//! The threads play CPUs: thread `t` sets a thread-local index to `t`, and
//! `PerCpuHeap`'s `cpu_id` function returns it. The process is not pinned
//! (it needs both cores); the OS places the two threads.
//!
//! Workload (the streams are generated before the clock starts, xorshift64*
//! with fixed seeds, the same for every allocator): a table of slots, `W`
//! per thread, each holding a live block of 16..=512 bytes (align 8; the
//! block's first word holds its size, written by the allocating thread and
//! read by the freeing one, so the block's memory really travels between
//! the cores). Thread `t` first fills its own `W` slots; then each
//! operation allocates a block, swaps it into a slot (an atomic swap) and
//! frees the block it took out. The slot is in the thread's own window,
//! or, with probability `p`, in the other thread's window: a block there
//! was allocated by the other thread with probability `p` or `1 - p`, so
//! a share `2p(1-p)` of the frees are cross-thread while both threads run
//! (p = 10%: 18%; p = 50%, the most this scheme gives: half of the blocks
//! are freed by the thread that did not allocate them, half of all traffic
//! a producer/consumer exchange).
//!
//! Reported: ns per operation (one allocate + one free) = wall time of the
//! timed phase / operations of all threads, so perfect scaling halves it
//! from 1 to 2 threads; median [min-max] of the repeats; xR = ratio of the
//! median to the fastest median of the row; and, for `PerCpuHeap`, the
//! share of its frees that went to another CPU's heap (`cpu_counters`,
//! timed phase only), which also counts blocks a thread allocated from the
//! other CPU's heap because its own was locked at that moment. The last
//! column says how much the threads really ran at once: the time they spent
//! on a CPU during the timed phase (`/proc/thread-self/schedstat`) over
//! threads x wall time, the lowest of the row's allocators. On a shared
//! machine another process can take a core; then the two threads take
//! turns, the cross-thread share falls (a thread that runs alone frees its
//! own blocks) and the 2-thread rows measure time slicing, not SMP. A
//! second table gives the CPU time per operation (the threads' time on a
//! CPU / operations), which such turns do not inflate (spinning on a lock
//! counts: a waiting CPU is a CPU lost).

use std::alloc::{alloc_zeroed, dealloc, GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use region_heap::{LockedHeap, PerCpuHeap, RawLock, SpinLock};

// ---------------------------------------------------------------------------
// Configuration

/// Bytes every allocator manages (`PerCpuHeap`: half per CPU).
const ARENA: usize = 64 << 20;

/// CPUs of the `PerCpuHeap`, and most threads a row uses.
const CPUS: usize = 2;

struct Config {
    quick: bool,
    /// Operations per thread of one timed repeat (before the budget cap).
    ops: usize,
    repeats: usize,
    /// Longest one timed repeat may take before its operations are capped.
    repeat_budget: Duration,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0");
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        let mut cfg = if quick {
            Config {
                quick,
                ops: 20_000,
                repeats: 1,
                repeat_budget: Duration::from_millis(200),
            }
        } else {
            Config {
                quick,
                ops: 1_000_000,
                repeats: 7,
                repeat_budget: Duration::from_secs(1),
            }
        };
        if let Some(ops) = env("SMP_OPS") {
            cfg.ops = ops;
        }
        if let Some(repeats) = env("SMP_REPEATS") {
            cfg.repeats = repeats;
        }
        cfg
    }
}

// ---------------------------------------------------------------------------
// The threads as CPUs

std::thread_local! {
    /// The CPU this thread plays.
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// `PerCpuHeap`'s `cpu_id`: the index of the CPU the calling thread plays.
fn cpu_id() -> usize {
    CPU.with(Cell::get)
}

// ---------------------------------------------------------------------------
// Random streams

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 11) % n as u64) as usize
    }
    fn size(&mut self) -> u32 {
        16 + self.below(512 - 16 + 1) as u32
    }
}

/// One thread's operations: the sizes that fill its window, then (slot,
/// size) pairs.
struct Stream {
    initial: Vec<u32>,
    ops: Vec<(u32, u32)>,
}

/// The streams of `threads` threads with `window` slots each; a share
/// `cross_pct`% of each thread's operations picks a slot in the other
/// thread's window.
fn streams(threads: usize, window: usize, ops: usize, cross_pct: usize, seed: u64) -> Vec<Stream> {
    (0..threads)
        .map(|t| {
            let mut rng = Rng::new(seed * 16 + t as u64);
            Stream {
                initial: (0..window).map(|_| rng.size()).collect(),
                ops: (0..ops)
                    .map(|_| {
                        let cross = threads > 1 && rng.below(100) < cross_pct;
                        let owner = if cross { (t + 1) % threads } else { t };
                        ((owner * window + rng.below(window)) as u32, rng.size())
                    })
                    .collect(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The arena and the allocators

struct Arena {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the arena is only an address range handed to one heap at a
// time; the heaps synchronise their own use of it.
unsafe impl Sync for Arena {}

impl Arena {
    fn new() -> Arena {
        let layout = Layout::from_size_align(ARENA, 4096).unwrap();
        // SAFETY: non-zero size. Zeroed: every page is touched once, so
        // page faults stay out of the timings.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Arena { ptr, layout }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A heap shared by the threads, used through `GlobalAlloc`.
trait Subject: GlobalAlloc + Sync + Sized {
    const NAME: &'static str;
    /// A heap over the whole arena.
    ///
    /// # Safety
    /// Nothing else uses the arena while the heap lives.
    unsafe fn over(arena: &Arena) -> Box<Self>;
    /// Frees and remote frees so far, summed over the CPUs (`PerCpuHeap`).
    fn counters(&self) -> Option<(u64, u64)> {
        None
    }
    /// Checks the heap once every block is freed (region-heap's heaps).
    fn check_empty(&self) {}
}

type PerCpu = PerCpuHeap<CPUS>;

impl Subject for PerCpu {
    const NAME: &'static str = "PerCpuHeap";
    unsafe fn over(arena: &Arena) -> Box<Self> {
        let heap = Box::new(PerCpuHeap::new(cpu_id));
        let half = ARENA / CPUS;
        for cpu in 0..CPUS {
            // SAFETY: disjoint halves of the arena, given to one heap each
            // (the caller gives the arena to this heap).
            unsafe { heap.add_memory(cpu, arena.ptr.add(cpu * half), half) }.unwrap();
        }
        heap
    }
    fn counters(&self) -> Option<(u64, u64)> {
        Some((0..CPUS).fold((0, 0), |(f, r), cpu| {
            let c = self.cpu_counters(cpu);
            (f + c.frees, r + c.remote_frees)
        }))
    }
    fn check_empty(&self) {
        self.check().unwrap();
        assert_eq!(self.stats().in_use_bytes, 0);
    }
}

impl Subject for LockedHeap {
    const NAME: &'static str = "LockedHeap";
    unsafe fn over(arena: &Arena) -> Box<Self> {
        let heap = Box::new(LockedHeap::empty());
        // SAFETY: the caller gives the arena to this heap.
        unsafe { heap.add_memory(arena.ptr, ARENA) }.unwrap();
        heap
    }
    fn check_empty(&self) {
        self.check().unwrap();
        assert_eq!(self.stats().in_use_bytes, 0);
    }
}

/// talc's lock type parameter: region-heap's own spin lock (the one behind
/// `LockedHeap` and each heap of `PerCpuHeap`), so every single-lock heap
/// of the table waits the same way.
struct TalcSpin(SpinLock);

// SAFETY: `SpinLock` is a `RawLock`, whose contract is lock_api's: mutual
// exclusion between `lock` (or a successful `try_lock`) and `unlock`, with
// acquire/release ordering; it is a plain atomic flag, so a guard may be
// released on another thread than the one that took it (`GuardSend`).
unsafe impl talc::lock_api::RawMutex for TalcSpin {
    const INIT: Self = TalcSpin(SpinLock::UNLOCKED);
    type GuardMarker = talc::lock_api::GuardSend;

    fn lock(&self) {
        self.0.lock();
    }
    fn try_lock(&self) -> bool {
        self.0.try_lock()
    }
    unsafe fn unlock(&self) {
        // SAFETY: lock_api calls `unlock` only for the holder.
        unsafe { self.0.unlock() }
    }
    fn is_locked(&self) -> bool {
        self.0.is_locked()
    }
}

type Talc = talc::TalcLock<TalcSpin, talc::source::Manual>;

impl Subject for Talc {
    const NAME: &'static str = "talc";
    unsafe fn over(arena: &Arena) -> Box<Self> {
        let heap = Box::new(talc::TalcLock::new(talc::source::Manual));
        // SAFETY: the caller gives the arena to this heap.
        unsafe { heap.lock().claim(arena.ptr, ARENA) }.unwrap();
        heap
    }
}

/// linked_list_allocator's `LockedHeap`, rebuilt from its source (0.10.6,
/// `src/lib.rs`): the crate's own type needs its `use_spin` feature, which
/// the dev-dependency leaves off. Same body: one spin lock (`spin`'s, as
/// `SpinLock` uses, where the original has `spinning_top`'s) around a
/// `Heap`, `allocate_first_fit` and `deallocate` under it.
struct LinkedList(region_heap::spin::Mutex<linked_list_allocator::Heap>);

// SAFETY: the blocks come from `Heap::allocate_first_fit`, which hands out
// disjoint blocks of at least the layout's size and alignment.
unsafe impl GlobalAlloc for LinkedList {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(layout)
            .map_or(null_mut(), NonNull::as_ptr)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a live block of this heap with this layout (the
        // `GlobalAlloc` caller), so not null.
        unsafe {
            self.0
                .lock()
                .deallocate(NonNull::new_unchecked(ptr), layout)
        }
    }
}

impl Subject for LinkedList {
    const NAME: &'static str = "linked_list";
    unsafe fn over(arena: &Arena) -> Box<Self> {
        let heap = Box::new(LinkedList(region_heap::spin::Mutex::new(
            linked_list_allocator::Heap::empty(),
        )));
        // SAFETY: the caller gives the arena to this heap.
        unsafe { heap.0.lock().init(arena.ptr, ARENA) };
        heap
    }
}

// ---------------------------------------------------------------------------
// One run

/// Allocates a block of `size` bytes and writes its size in its first word.
#[inline(always)]
fn alloc_block<A: Subject>(heap: &A, size: u32) -> *mut u8 {
    // SAFETY: 16..=512 bytes, align 8: a valid, non-zero layout.
    let layout = unsafe { Layout::from_size_align_unchecked(size as usize, 8) };
    // SAFETY: non-zero size.
    let ptr = unsafe { heap.alloc(layout) };
    if !ptr.is_null() {
        // SAFETY: a fresh block of at least 16 bytes, aligned to 8.
        unsafe { ptr.cast::<usize>().write(size as usize) };
    }
    ptr
}

/// Frees a block `alloc_block` made (on any thread).
///
/// # Safety
/// `ptr` is a live block of `heap` from `alloc_block`, used by nothing else.
#[inline(always)]
unsafe fn free_block<A: Subject>(heap: &A, ptr: *mut u8) {
    // SAFETY: the block's first word, written by `alloc_block`; the
    // caller's acquire (the slot swap) made it visible here.
    let size = unsafe { ptr.cast::<usize>().read() };
    // SAFETY: the size and alignment the block was allocated with.
    unsafe { heap.dealloc(ptr, Layout::from_size_align_unchecked(size, 8)) };
}

/// Nanoseconds the calling thread has spent on a CPU (Linux), if known.
/// The kernel brings the figure up to date when the thread enters the
/// scheduler, hence the yield (outside the timed loop).
fn on_cpu_ns() -> Option<u64> {
    std::thread::yield_now();
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// What one thread's timed phase took.
struct Span {
    start: Instant,
    end: Instant,
    /// Time on a CPU meanwhile, if known.
    on_cpu: Option<u64>,
}

/// The timed phase of one thread; its span, or `None` if an allocation
/// failed.
#[inline(never)]
fn timed<A: Subject>(heap: &A, slots: &[AtomicPtr<u8>], ops: &[(u32, u32)]) -> Option<Span> {
    let on_cpu = on_cpu_ns();
    let start = Instant::now();
    for &(slot, size) in ops {
        let block = alloc_block(heap, size);
        if block.is_null() {
            return None;
        }
        // Release: the size word reaches whichever thread frees the block;
        // acquire: so does the other thread's, for the block taken out.
        let old = slots[slot as usize].swap(block, Ordering::AcqRel);
        // SAFETY: the swap took the block out of the table: this thread
        // alone holds it.
        unsafe { free_block(heap, old) };
    }
    let end = Instant::now();
    Some(Span {
        start,
        end,
        on_cpu: on_cpu.zip(on_cpu_ns()).map(|(a, b)| b - a),
    })
}

/// One run's results.
struct Sample {
    /// ns per operation.
    ns: f64,
    /// `PerCpuHeap`: % of the timed frees that went to another CPU's heap.
    remote: Option<f64>,
    /// % of threads x wall time the threads spent on a CPU, if known.
    on_cpu: Option<f64>,
}

/// One measured run; `None` if an allocation failed.
fn run<A: Subject>(arena: &Arena, streams: &[Stream], ops: usize) -> Option<Sample> {
    let threads = streams.len();
    let window = streams[0].initial.len();
    // SAFETY: the arena is used by this heap alone until it is dropped.
    let heap = unsafe { A::over(arena) };
    let slots: Vec<AtomicPtr<u8>> = (0..threads * window)
        .map(|_| AtomicPtr::new(null_mut()))
        .collect();
    let ready = Barrier::new(threads + 1);
    let go = Barrier::new(threads + 1);
    let (before, times) = std::thread::scope(|s| {
        let workers: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(t, stream)| {
                let (heap, slots, ready, go) = (&*heap, &slots, &ready, &go);
                s.spawn(move || {
                    CPU.with(|c| c.set(t));
                    let mut filled = true;
                    for (i, &size) in stream.initial.iter().enumerate() {
                        let block = alloc_block(heap, size);
                        filled &= !block.is_null();
                        slots[t * window + i].store(block, Ordering::Release);
                    }
                    ready.wait();
                    go.wait();
                    if filled {
                        timed(heap, slots, &stream.ops[..ops])
                    } else {
                        None
                    }
                })
            })
            .collect();
        ready.wait();
        let before = heap.counters();
        go.wait();
        let times: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        (before, times)
    });
    let after = heap.counters();
    for slot in &slots {
        let block = slot.load(Ordering::Acquire);
        if !block.is_null() {
            // SAFETY: the live blocks left in the table, each freed once.
            unsafe { free_block(&*heap, block) };
        }
    }
    heap.check_empty();
    let spans: Option<Vec<Span>> = times.into_iter().collect();
    let spans = spans?;
    let start = spans.iter().map(|t| t.start).min().unwrap();
    let end = spans.iter().map(|t| t.end).max().unwrap();
    let wall = (end - start).as_nanos() as f64;
    let remote = before.zip(after).map(|((f0, r0), (f1, r1))| {
        let frees = f1 - f0;
        100.0 * (r1 - r0) as f64 / frees.max(1) as f64
    });
    let on_cpu: Option<u64> = spans.iter().map(|t| t.on_cpu).sum();
    Some(Sample {
        ns: wall / (ops * threads) as f64,
        remote,
        on_cpu: on_cpu.map(|c| 100.0 * c as f64 / (wall * threads as f64)),
    })
}

enum Outcome {
    /// ns per operation of each repeat, CPU ns per operation, remote-free
    /// shares (%), on-CPU shares (%), the operations per thread when
    /// capped.
    Time {
        ns: Vec<f64>,
        cpu_ns: Vec<f64>,
        remote: Vec<f64>,
        on_cpu: Vec<f64>,
        capped: Option<usize>,
    },
    Oom,
    Skip,
}

/// Probes, caps the operations to the budget, then runs the repeats.
fn measure<A: Subject>(cfg: &Config, arena: &Arena, streams: &[Stream]) -> Outcome {
    let planned = streams[0].ops.len();
    let probe = planned.min(20_000);
    let Some(probed) = run::<A>(arena, streams, probe) else {
        return Outcome::Oom;
    };
    let per_thread_op = probed.ns * streams.len() as f64;
    let affordable = (cfg.repeat_budget.as_nanos() as f64 / per_thread_op) as usize;
    let ops = planned.min(affordable.max(probe));
    let (mut ns, mut cpu_ns) = (Vec::new(), Vec::new());
    let (mut remote, mut on_cpu) = (Vec::new(), Vec::new());
    for _ in 0..cfg.repeats {
        let Some(sample) = run::<A>(arena, streams, ops) else {
            return Outcome::Oom;
        };
        ns.push(sample.ns);
        cpu_ns.extend(
            sample
                .on_cpu
                .map(|p| sample.ns * streams.len() as f64 * p / 100.0),
        );
        remote.extend(sample.remote);
        on_cpu.extend(sample.on_cpu);
    }
    Outcome::Time {
        ns,
        cpu_ns,
        remote,
        on_cpu,
        capped: (ops < planned).then_some(ops),
    }
}

// ---------------------------------------------------------------------------
// Driver and table

const NAMES: [&str; 4] = [
    <PerCpu as Subject>::NAME,
    <LockedHeap as Subject>::NAME,
    <Talc as Subject>::NAME,
    <LinkedList as Subject>::NAME,
];

/// Short names for `SMP_ONLY`, in `NAMES` order.
const KEYS: [&str; 4] = ["percpu", "locked", "talc", "linked_list"];

struct Row {
    name: String,
    cells: Vec<Outcome>,
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn row(cfg: &Config, arena: &Arena, name: String, streams: &[Stream]) -> Row {
    let only = std::env::var("SMP_ONLY").ok();
    let wanted = |k: usize| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|q| q == KEYS[k]))
    };
    eprint!("{name}:");
    let mut cells = Vec::new();
    macro_rules! one {
        ($k:expr, $a:ty) => {
            cells.push(if wanted($k) {
                eprint!(" {}", KEYS[$k]);
                measure::<$a>(cfg, arena, streams)
            } else {
                Outcome::Skip
            });
        };
    }
    one!(0, PerCpu);
    one!(1, LockedHeap);
    one!(2, Talc);
    one!(3, LinkedList);
    eprintln!();
    Row { name, cells }
}

/// A cell: median [min-max], the ratio to the row's best median, the cap.
fn cell(samples: &[f64], best: Option<f64>, capped: Option<usize>) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    let m = median(samples);
    let lo = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = samples.iter().copied().fold(0.0, f64::max);
    let ratio = best.map_or(String::new(), |b| {
        if m == b {
            String::from(" **x1**")
        } else {
            format!(" x{:.2}", m / b)
        }
    });
    let cap = capped.map_or(String::new(), |n| format!(" ({}k ops)", n / 1000));
    if samples.len() > 1 {
        format!("{m:.1} [{lo:.1}-{hi:.1}]{ratio}{cap}")
    } else {
        format!("{m:.1}{ratio}{cap}")
    }
}

/// One table of the rows: wall time per operation (`cpu` false, with the
/// remote-free and on-CPU columns) or CPU time per operation.
fn print_rows(rows: &[Row], cpu: bool) {
    let extra = if cpu {
        ""
    } else {
        " PerCpuHeap remote frees | threads on CPU |"
    };
    println!("| workload | {} |{extra}", NAMES.join(" | "));
    let extra_rule = if cpu { "" } else { "---|---|" };
    println!("|---|{}{extra_rule}", "---|".repeat(NAMES.len()));
    let pick = |c: &Outcome| -> Option<(Vec<f64>, Option<usize>)> {
        match c {
            Outcome::Time {
                ns, cpu_ns, capped, ..
            } => Some((if cpu { cpu_ns } else { ns }.clone(), *capped)),
            _ => None,
        }
    };
    for row in rows {
        let best = row
            .cells
            .iter()
            .filter_map(|c| pick(c).filter(|(s, _)| !s.is_empty()))
            .map(|(s, _)| median(&s))
            .reduce(f64::min);
        let mut line = format!("| {} |", row.name);
        for c in &row.cells {
            let text = match (c, pick(c)) {
                (_, Some((samples, capped))) => cell(&samples, best, capped),
                (Outcome::Oom, _) => "OOM".into(),
                _ => "-".into(),
            };
            line += &format!(" {text} |");
        }
        if !cpu {
            let remote = match &row.cells[0] {
                Outcome::Time { remote, .. } if !remote.is_empty() => {
                    let lo = remote.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = remote.iter().copied().fold(0.0, f64::max);
                    format!("{:.1}% [{lo:.1}-{hi:.1}]", median(remote))
                }
                _ => "-".into(),
            };
            let on_cpu = row
                .cells
                .iter()
                .filter_map(|c| match c {
                    Outcome::Time { on_cpu, .. } if !on_cpu.is_empty() => Some(median(on_cpu)),
                    _ => None,
                })
                .reduce(f64::min)
                .map_or("-".into(), |p| format!("{p:.0}%"));
            line += &format!(" {remote} | {on_cpu} |");
        }
        println!("{line}");
    }
}

fn print_table(cfg: &Config, rows: &[Row]) {
    print_rows(rows, false);
    println!();
    println!(
        "ns per operation (allocate + free) = wall time / operations of all threads, \
         median [min-max] of {} repeat(s), up to {} operations per thread \
         ((Nk ops) = capped to keep one repeat under {:?}); xR = median / the row's \
         fastest median; {} MiB per allocator (PerCpuHeap: {} MiB per CPU); remote \
         frees = share of PerCpuHeap's timed frees that went to another CPU's heap, \
         median [min-max]; threads on CPU = their time on a CPU / (threads x wall \
         time), median of the repeats, the row's lowest.{}",
        cfg.repeats,
        cfg.ops,
        cfg.repeat_budget,
        ARENA >> 20,
        (ARENA / CPUS) >> 20,
        if cfg.quick { " QUICK MODE." } else { "" }
    );
    println!();
    print_rows(rows, true);
    println!();
    println!(
        "CPU ns per operation = the threads' time on a CPU (schedstat, spinning \
         included) / operations of all threads: what the work cost, whether the \
         threads ran at once or took turns; perfect scaling keeps it flat from 1 \
         to 2 threads."
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let cfg = Config::from_env();
    let arena = Arena::new();
    eprintln!(
        "smp: {} MiB per allocator, {} ops per thread, {} repeat(s), {} CPUs available",
        ARENA >> 20,
        cfg.ops,
        cfg.repeats,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // (live blocks per thread, threads, % of slots in the other's window)
    let mut plan = vec![(1_000, 1, 0), (1_000, 2, 0), (1_000, 2, 10), (1_000, 2, 50)];
    if !cfg.quick {
        plan.extend([(10_000, 1, 0), (10_000, 2, 0), (10_000, 2, 50)]);
    }
    let picked = std::env::var("SMP_ROWS").ok();
    let mut rows = Vec::new();
    for (k, &(window, threads, cross)) in plan.iter().enumerate() {
        let number = (k + 1).to_string();
        if picked
            .as_deref()
            .is_some_and(|p| !p.split(',').any(|q| q == number))
        {
            continue;
        }
        let s = streams(threads, window, cfg.ops, cross, 1 + k as u64);
        let name = match (threads, cross) {
            (1, _) => format!("W={window}, 1 thread"),
            (_, 0) => format!("W={window}, {threads} threads, own windows"),
            _ => format!("W={window}, {threads} threads, {cross}% in the other's window"),
        };
        rows.push(row(&cfg, &arena, name, &s));
    }
    println!();
    print_table(&cfg, &rows);
}
