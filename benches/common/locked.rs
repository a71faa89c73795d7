//! The peer race through `GlobalAlloc`: each heap behind its lock, as a
//! kernel's `#[global_allocator]` uses it. region-heap runs as its product,
//! `LockedHeap` (lock, growth check, report plumbing); the peers run behind
//! a `spin::Mutex`, the lock their own `LockedHeap`s use.
//!
//! Two workloads, on one 128 MiB arena (32 MiB in quick mode):
//! - **random actions**: a live set held between 300 and 1,000 blocks;
//!   each action allocates (log-uniform 1 B..`max`, alignment 8, 1 in 8
//!   of 16 or 64) or frees a random live block, and with realloc on, 1 action
//!   in 7 resizes a random live block to 1 B..3x`max`. Each new or moved
//!   block is written at both ends. Reported in ns per action.
//! - **latency**: ticks (`rdtsc`) of each allocation and each free, sizes
//!   log-uniform 8 B..64 KiB (alignment 8/16/64, 1% 4096), 50..600 live
//!   blocks freed 8 at a time; reported as the sum of the allocation's and
//!   the free's percentile (p50, p99), median over the repeats.

use super::{Arena, Config, Outcome, Peer, Rng};
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Instant;

/// A raw heap behind a spin lock.
pub struct SpinLocked<P>(spin::Mutex<P>);

impl<P> SpinLocked<P> {
    pub fn new(heap: P) -> Self {
        SpinLocked(spin::Mutex::new(heap))
    }
}

// SAFETY: every call forwards to the raw heap under the lock; the raw heaps
// hand out disjoint blocks that honour their layouts.
unsafe impl<P: Peer> GlobalAlloc for SpinLocked<P> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a live block of this heap with its layout (caller).
        unsafe { self.0.lock().free(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `GlobalAlloc::realloc` requires of its caller.
        unsafe { self.0.lock().realloc(ptr, layout, new_size) }
    }
}

/// The arena of these workloads.
pub fn arena_size(cfg: &Config) -> usize {
    if cfg.quick {
        32 << 20
    } else {
        128 << 20
    }
}

/// Live blocks the random actions keep between.
const LOW: usize = 300;
const HIGH: usize = 1_000;

fn log_uniform(rng: &mut Rng, max: usize) -> usize {
    ((max as f64).powf(rng.unit()) as usize).clamp(1, max)
}

fn action_layout(rng: &mut Rng, max: usize) -> Layout {
    let align = match rng.below(16) {
        0 => 16,
        1 => 64,
        _ => 8,
    };
    Layout::from_size_align(log_uniform(rng, max), align).unwrap()
}

/// Writes both ends of a new block (a program uses what it allocates).
fn touch(ptr: *mut u8, size: usize) {
    // SAFETY: a live block of `size` bytes.
    unsafe {
        ptr.write_volatile(1);
        ptr.add(size - 1).write_volatile(2);
    }
}

/// One run of `actions` random actions; ns per action.
#[inline(never)]
fn run_actions<G: GlobalAlloc>(heap: &G, actions: usize, max: usize, realloc: bool) -> f64 {
    let mut rng = Rng::new(max as u64 * 2 + realloc as u64);
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(HIGH + 1);
    let kinds = if realloc { 7 } else { 6 };
    let start = Instant::now();
    for _ in 0..actions {
        let kind = rng.below(kinds);
        if kind == 6 && !live.is_empty() {
            let i = rng.below(live.len());
            let (ptr, layout) = live[i];
            let size = rng.range(1, 3 * max);
            // SAFETY: a live block of this heap with its layout.
            let to = unsafe { heap.realloc(ptr, layout, size) };
            if !to.is_null() {
                touch(to, size);
                live[i] = (to, Layout::from_size_align(size, layout.align()).unwrap());
            }
        } else if live.len() < LOW || (live.len() < HIGH && kind < 3) {
            let layout = action_layout(&mut rng, max);
            // SAFETY: a non-zero size.
            let ptr = unsafe { heap.alloc(layout) };
            if !ptr.is_null() {
                touch(ptr, layout.size());
                live.push((black_box(ptr), layout));
            }
        } else {
            let (ptr, layout) = live.swap_remove(rng.below(live.len()));
            // SAFETY: a live block of this heap with its layout.
            unsafe { heap.dealloc(ptr, layout) };
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / actions as f64;
    for (ptr, layout) in live {
        // SAFETY: as above.
        unsafe { heap.dealloc(ptr, layout) };
    }
    ns
}

/// The random-actions row for one allocator: ns per action.
pub fn random_actions<P: Peer>(cfg: &Config, arena: &Arena, max: usize, realloc: bool) -> Outcome {
    let actions = cfg.pairs;
    let mut samples = Vec::new();
    for _ in 0..cfg.repeats {
        // SAFETY: the arena is used by this heap only, until it is dropped.
        let heap = unsafe { P::locked(arena, arena_size(cfg)) };
        let ns = run_actions(&heap, actions, max, realloc);
        samples.push(ns);
        // A slow allocator gets one repeat only.
        if ns * actions as f64 > cfg.repeat_budget.as_nanos() as f64 {
            break;
        }
    }
    Outcome::Time {
        samples,
        capped: None,
    }
}

/// A timestamp in ticks (the time-stamp counter on x86_64, ns elsewhere).
#[inline(always)]
fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `lfence` and `rdtsc` exist on every x86_64 CPU; the fences
        // keep the measured call between the two readings.
        unsafe {
            core::arch::x86_64::_mm_lfence();
            let t = core::arch::x86_64::_rdtsc();
            core::arch::x86_64::_mm_lfence();
            t
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Ticks of each allocation and each free of one latency run.
fn latency_run<G: GlobalAlloc>(heap: &G, allocations: usize) -> (Vec<u64>, Vec<u64>) {
    let mut rng = Rng::new(0x1a7e);
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(700);
    let mut alloc_ticks = Vec::with_capacity(allocations);
    let mut free_ticks = Vec::with_capacity(allocations);
    let mut free = |live: &mut Vec<(*mut u8, Layout)>, rng: &mut Rng| {
        let (ptr, layout) = live.swap_remove(rng.below(live.len()));
        let t = ticks();
        // SAFETY: a live block of this heap with its layout.
        unsafe { heap.dealloc(ptr, layout) };
        free_ticks.push(ticks() - t);
    };
    for _ in 0..allocations {
        let layout = super::mixed_layout(&mut rng);
        let t = ticks();
        // SAFETY: a non-zero size.
        let ptr = unsafe { heap.alloc(layout) };
        let took = ticks() - t;
        if ptr.is_null() {
            while live.len() > 50 {
                free(&mut live, &mut rng);
            }
            continue;
        }
        alloc_ticks.push(took);
        touch(ptr, layout.size());
        live.push((ptr, layout));
        if (live.len() > 50 && rng.below(10) == 0) || live.len() > 600 {
            for _ in 0..8 {
                free(&mut live, &mut rng);
            }
        }
    }
    while !live.is_empty() {
        free(&mut live, &mut rng);
    }
    (alloc_ticks, free_ticks)
}

fn percentile(sorted: &[u64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)] as f64
}

/// The latency rows for one allocator: p50 and p99 of an allocation plus
/// those of a free, in ticks, one sample per repeat.
pub fn latency<P: Peer>(cfg: &Config, arena: &Arena) -> [Outcome; 2] {
    let allocations = cfg.pairs / 4;
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for _ in 0..cfg.repeats {
        // SAFETY: the arena is used by this heap only, until it is dropped.
        let heap = unsafe { P::locked(arena, arena_size(cfg)) };
        let started = Instant::now();
        let (mut a, mut f) = latency_run(&heap, allocations);
        a.sort_unstable();
        f.sort_unstable();
        p50.push(percentile(&a, 50) + percentile(&f, 50));
        p99.push(percentile(&a, 99) + percentile(&f, 99));
        if started.elapsed() > cfg.repeat_budget {
            break;
        }
    }
    [p50, p99].map(|samples| Outcome::Time {
        samples,
        capped: None,
    })
}
