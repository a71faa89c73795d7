//! The performance race: region-heap against the kernel heaps of crates.io,
//! each driven through its raw API (no lock) on the same 32 MiB arena with
//! the same pre-generated operation streams (xorshift64*, fixed seeds).
//!
//! Run with `cargo bench --bench peers` (release, fat LTO, one codegen unit:
//! `[profile.bench]`). The process pins itself to one core with `taskset`
//! when it can. `BENCH_QUICK=1` runs a smoke version for CI: a 16 MiB arena,
//! 100,000 pairs, one repeat, one seed, short caps. `PEERS_ONLY=talc,rlsf`
//! runs only the named allocators (for profiling one of them),
//! `PEERS_ROWS=churn,mixed,efficiency,locked,free` only the named workloads,
//! `PEERS_N=1000,10000` only those churn sizes, and `PEERS_PAIRS` and
//! `PEERS_REPEATS` override the number of pairs and repeats.
//!
//! Workloads (see `/work/shared/design/performance.md` for the method):
//! 1. churn: N live blocks of 16..=512 bytes (align 8); then pairs of
//!    "free a random live block, allocate 16..=512 bytes in its slot";
//! 2. mixed: sizes log-uniform in 8 B..64 KiB, alignment 8/16/64 (and 4096
//!    with 1% probability), N = 1,000;
//! 3. efficiency (requested bytes of the live blocks / arena): fill the
//!    arena with 16..512-byte blocks until the first failure; then free a
//!    random half of them and fill with 1..4 KiB blocks until 50 requests in
//!    a row fail; separately, fill an empty arena with mixed blocks until the
//!    first failure;
//! 4. the time to free every block of the 16..512 B fill, in random order;
//! 5. through `GlobalAlloc`, each heap behind its lock (`locked` rows, see
//!    `common/locked.rs`): random actions with and without realloc, and the
//!    latency of one allocation and one free.
//!
//! Times are ns per free+allocate pair: median [min-max] of the repeats, and
//! the ratio of the median to the fastest allocator's median in the row.

use std::alloc::{alloc, dealloc, GlobalAlloc, Layout};
use std::cell::Cell;
use std::hint::black_box;
use std::ptr::{null_mut, NonNull};
use std::time::{Duration, Instant};

#[path = "common/locked.rs"]
mod locked;
use locked::random_actions;

// ---------------------------------------------------------------------------
// Configuration

struct Config {
    quick: bool,
    arena: usize,
    pairs: usize,
    repeats: usize,
    seeds: u64,
    /// Longest one timed repeat of a churn or mixed row may take before the
    /// number of pairs is capped for that allocator.
    repeat_budget: Duration,
    /// Longest the free-everything measurement may take.
    free_budget: Duration,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0");
        let mut cfg = Self::preset(quick);
        if let Some(pairs) = std::env::var("PEERS_PAIRS")
            .ok()
            .and_then(|p| p.parse().ok())
        {
            cfg.pairs = pairs;
        }
        if let Some(repeats) = std::env::var("PEERS_REPEATS")
            .ok()
            .and_then(|p| p.parse().ok())
        {
            cfg.repeats = repeats;
        }
        cfg
    }

    fn preset(quick: bool) -> Config {
        if quick {
            Config {
                quick,
                arena: 16 << 20,
                pairs: 100_000,
                repeats: 1,
                seeds: 1,
                repeat_budget: Duration::from_millis(300),
                free_budget: Duration::from_secs(1),
            }
        } else {
            Config {
                quick,
                arena: 32 << 20,
                pairs: 2_000_000,
                repeats: 5,
                seeds: 3,
                repeat_budget: Duration::from_secs(4),
                free_budget: Duration::from_secs(30),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Random streams

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// xorshift64*.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 11) % n as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn small_layout(rng: &mut Rng) -> Layout {
    Layout::from_size_align(rng.range(16, 512), 8).unwrap()
}

fn mixed_layout(rng: &mut Rng) -> Layout {
    let size = (8.0 * 8192f64.powf(rng.unit())) as usize;
    let align = if rng.below(100) == 0 {
        4096
    } else {
        [8, 16, 64][rng.below(3)]
    };
    Layout::from_size_align(size.clamp(8, 64 << 10), align).unwrap()
}

/// A churn stream: `initial` layouts, then (slot, layout) pairs.
struct Stream {
    initial: Vec<Layout>,
    pairs: Vec<(u32, Layout)>,
}

fn stream(n: usize, pairs: usize, seed: u64, layout: fn(&mut Rng) -> Layout) -> Stream {
    let mut rng = Rng::new(seed);
    Stream {
        initial: (0..n).map(|_| layout(&mut rng)).collect(),
        pairs: (0..pairs)
            .map(|_| (rng.below(n) as u32, layout(&mut rng)))
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// The arena and the allocators

struct Arena {
    ptr: *mut u8,
    layout: Layout,
}

impl Arena {
    fn new(size: usize) -> Arena {
        // Aligned to its size, so the buddy heap gets one block.
        let layout = Layout::from_size_align(size, size).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc(layout) };
        assert!(!ptr.is_null());
        // Touch every page once, so page faults stay out of the timings.
        // SAFETY: `size` bytes just allocated.
        unsafe { ptr.write_bytes(0, size) };
        Arena { ptr, layout }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A raw heap over an arena. `new` takes the arena for the heap's lifetime.
trait Peer {
    const NAME: &'static str;
    /// # Safety
    /// The arena is unused by anything else while the heap lives.
    unsafe fn new(arena: &Arena, size: usize) -> Self;
    fn alloc(&mut self, layout: Layout) -> *mut u8;
    /// # Safety
    /// `ptr` is a live block allocated with `layout`.
    unsafe fn free(&mut self, ptr: *mut u8, layout: Layout);
    /// Resizes a live block to `new_size` bytes (same alignment), in place
    /// when the heap can; null on failure, the block intact. By default a
    /// move: allocate, copy, free.
    ///
    /// # Safety
    /// `ptr` is a live block allocated with `layout`; `new_size` is
    /// non-zero.
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { move_block(self, ptr, layout, new_size) }
    }
    /// The heap over the arena behind a lock, as a kernel's global
    /// allocator: by default this raw heap behind a spin lock.
    ///
    /// # Safety
    /// As for [`Peer::new`].
    unsafe fn locked(arena: &Arena, size: usize) -> impl GlobalAlloc
    where
        Self: Sized,
    {
        // SAFETY: forwarded.
        locked::SpinLocked::new(unsafe { Self::new(arena, size) })
    }
}

/// Moves a live block of `heap` to a new one of `new_size` bytes: allocate,
/// copy, free; null on failure, the block intact.
///
/// # Safety
/// As for [`Peer::realloc`].
unsafe fn move_block<P: Peer + ?Sized>(
    heap: &mut P,
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: `new_size` is non-zero (caller), the alignment a valid one.
    let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
    let to = heap.alloc(new);
    if !to.is_null() {
        // SAFETY: two distinct live blocks, each at least this long.
        unsafe { to.copy_from_nonoverlapping(ptr, layout.size().min(new_size)) };
        // SAFETY: a live block allocated with `layout` (caller).
        unsafe { heap.free(ptr, layout) };
    }
    to
}

/// region-heap's raw heap (good fit), with slabs off (the default) or on.
struct RegionHeap<const SLABS: bool>(region_heap::Heap);

impl<const SLABS: bool> RegionHeap<SLABS> {
    /// # Safety
    /// As for [`Peer::new`].
    unsafe fn with(arena: &Arena, size: usize) -> Self {
        let mut heap = region_heap::Heap::new().with_slabs(SLABS);
        // SAFETY: the caller gives the arena to the heap.
        unsafe { heap.add_region(arena.ptr, size) }.unwrap();
        RegionHeap(heap)
    }
}

macro_rules! region_heap_peer {
    ($slabs:literal, $name:literal) => {
        impl Peer for RegionHeap<$slabs> {
            const NAME: &'static str = $name;
            unsafe fn new(arena: &Arena, size: usize) -> Self {
                // SAFETY: forwarded.
                unsafe { Self::with(arena, size) }
            }
            #[inline]
            fn alloc(&mut self, layout: Layout) -> *mut u8 {
                self.0.allocate(layout).map_or(null_mut(), NonNull::as_ptr)
            }
            #[inline]
            unsafe fn free(&mut self, ptr: *mut u8, layout: Layout) {
                // SAFETY: a live block allocated with `layout` (caller).
                let result = unsafe { self.0.deallocate(NonNull::new_unchecked(ptr), layout) };
                debug_assert!(result.is_ok());
            }
            #[inline]
            unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                // SAFETY: a live block allocated with `layout` (caller).
                unsafe {
                    self.0
                        .realloc(NonNull::new_unchecked(ptr), layout, new_size)
                }
                .map_or(null_mut(), NonNull::as_ptr)
            }
            /// The product itself: region-heap's `LockedHeap` (its lock,
            /// growth check and report plumbing).
            unsafe fn locked(arena: &Arena, size: usize) -> impl GlobalAlloc {
                let heap: region_heap::LockedHeap = region_heap::LockedHeap::over(
                    region_heap::Heap::new().with_slabs($slabs),
                    None,
                );
                // SAFETY: the caller gives the arena to the heap.
                unsafe { heap.init(arena.ptr, size) };
                heap
            }
        }
    };
}

region_heap_peer!(false, "region-heap");
region_heap_peer!(true, "rh slabs");

struct LinkedList(linked_list_allocator::Heap);

impl Peer for LinkedList {
    const NAME: &'static str = "linked_list";
    unsafe fn new(arena: &Arena, size: usize) -> Self {
        let mut heap = linked_list_allocator::Heap::empty();
        // SAFETY: the caller gives the arena to the heap.
        unsafe { heap.init(arena.ptr, size) };
        LinkedList(heap)
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0
            .allocate_first_fit(layout)
            .map_or(null_mut(), NonNull::as_ptr)
    }
    #[inline]
    unsafe fn free(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a live block allocated with `layout` (caller).
        unsafe { self.0.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
}

struct Buddy(buddy_system_allocator::Heap<32>);

impl Peer for Buddy {
    const NAME: &'static str = "buddy";
    unsafe fn new(arena: &Arena, size: usize) -> Self {
        let mut heap = buddy_system_allocator::Heap::<32>::new();
        // SAFETY: the caller gives the arena to the heap.
        unsafe { heap.init(arena.ptr.addr(), size) };
        Buddy(heap)
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0.alloc(layout).map_or(null_mut(), NonNull::as_ptr)
    }
    #[inline]
    unsafe fn free(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a live block allocated with `layout` (caller).
        unsafe { self.0.dealloc(NonNull::new_unchecked(ptr), layout) }
    }
}

struct Talc(talc::base::Talc<talc::source::Manual, talc::DefaultBinning>);

impl Peer for Talc {
    const NAME: &'static str = "talc";
    unsafe fn new(arena: &Arena, size: usize) -> Self {
        let mut heap = talc::base::Talc::new(talc::source::Manual);
        // SAFETY: the caller gives the arena to the heap.
        unsafe { heap.claim(arena.ptr, size) }.unwrap();
        Talc(heap)
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: every layout of the streams has a non-zero size.
        unsafe { self.0.allocate(layout) }.map_or(null_mut(), NonNull::as_ptr)
    }
    #[inline]
    unsafe fn free(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a live block allocated with `layout` (caller).
        unsafe { self.0.deallocate(ptr, layout) }
    }
    /// In place when talc can, else a move (what its `TalcLock` does).
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: a live block allocated with `layout`; `new_size` non-zero.
        if unsafe { self.0.try_realloc_in_place(ptr, layout, new_size) } {
            return ptr;
        }
        // SAFETY: forwarded.
        unsafe { move_block(self, ptr, layout, new_size) }
    }
}

struct Rlsf(rlsf::Tlsf<'static, usize, usize, 64, 64>);

impl Peer for Rlsf {
    const NAME: &'static str = "rlsf";
    unsafe fn new(arena: &Arena, size: usize) -> Self {
        let mut heap = rlsf::Tlsf::new();
        let block = NonNull::slice_from_raw_parts(NonNull::new(arena.ptr).unwrap(), size);
        // SAFETY: the caller gives the arena to the heap.
        unsafe { heap.insert_free_block_ptr(block) }.unwrap();
        Rlsf(heap)
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        self.0.allocate(layout).map_or(null_mut(), NonNull::as_ptr)
    }
    #[inline]
    unsafe fn free(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a live block allocated with `layout` (caller).
        unsafe {
            self.0
                .deallocate(NonNull::new_unchecked(ptr), layout.align())
        }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `new_size` is non-zero (caller).
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a live block allocated with this alignment (caller).
        unsafe { self.0.reallocate(NonNull::new_unchecked(ptr), new) }
            .map_or(null_mut(), NonNull::as_ptr)
    }
}

/// dlmalloc's system allocator: hands out the arena once, then nothing.
struct ArenaOnce {
    ptr: Cell<*mut u8>,
    size: usize,
}

// SAFETY: the arena is used by one heap on one thread.
unsafe impl Send for ArenaOnce {}

// SAFETY: the arena is returned once, never remapped or released.
unsafe impl dlmalloc::Allocator for ArenaOnce {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let ptr = self.ptr.replace(null_mut());
        if ptr.is_null() || size > self.size {
            self.ptr.set(ptr);
            (null_mut(), 0, 0)
        } else {
            (ptr, self.size, 0)
        }
    }
    fn remap(&self, _: *mut u8, _: usize, _: usize, _: bool) -> *mut u8 {
        null_mut()
    }
    fn free_part(&self, _: *mut u8, _: usize, _: usize) -> bool {
        false
    }
    fn free(&self, _: *mut u8, _: usize) -> bool {
        false
    }
    fn can_release_part(&self, _: u32) -> bool {
        false
    }
    fn allocates_zeros(&self) -> bool {
        false
    }
    fn page_size(&self) -> usize {
        4096
    }
}

struct Dl(dlmalloc::Dlmalloc<ArenaOnce>);

impl Peer for Dl {
    const NAME: &'static str = "dlmalloc";
    unsafe fn new(arena: &Arena, size: usize) -> Self {
        Dl(dlmalloc::Dlmalloc::new_with_allocator(ArenaOnce {
            ptr: Cell::new(arena.ptr),
            size,
        }))
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // SAFETY: a valid size and power-of-two alignment.
        unsafe { self.0.malloc(layout.size(), layout.align()) }
    }
    #[inline]
    unsafe fn free(&mut self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a live block allocated with `layout` (caller).
        unsafe { self.0.free(ptr, layout.size(), layout.align()) }
    }
    #[inline]
    unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: a live block allocated with `layout` (caller).
        unsafe { self.0.realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

/// The harness floor: the same loop around a bump pointer that never frees.
struct Floor {
    base: *mut u8,
    next: usize,
    size: usize,
}

impl Peer for Floor {
    const NAME: &'static str = "floor";
    unsafe fn new(arena: &Arena, size: usize) -> Self {
        Floor {
            base: arena.ptr,
            next: 0,
            size,
        }
    }
    #[inline]
    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // Wraps around: the floor only measures the loop.
        let at = self.next.next_multiple_of(layout.align());
        self.next = if at + layout.size() > self.size {
            0
        } else {
            at + layout.size()
        };
        self.base.wrapping_add(at)
    }
    #[inline]
    unsafe fn free(&mut self, ptr: *mut u8, _: Layout) {
        black_box(ptr);
    }
}

// ---------------------------------------------------------------------------
// Workloads

/// Outcome of one measurement.
#[derive(Clone, Debug)]
enum Outcome {
    /// ns per pair (or ms for the free-all row): median, min, max; pairs
    /// actually run when capped.
    Time {
        samples: Vec<f64>,
        capped: Option<usize>,
    },
    /// Efficiency in percent.
    Percent(f64),
    /// Stopped at the budget with this fraction done.
    OverBudget { secs: f64, done: f64 },
    /// The allocator could not even set the workload up.
    Oom,
    /// Not run (row not meant for this allocator).
    Skip,
}

/// Fills `live` with the stream's initial blocks; false on failure.
fn setup<P: Peer>(heap: &mut P, stream: &Stream, live: &mut Vec<(*mut u8, Layout)>) -> bool {
    live.clear();
    for &layout in &stream.initial {
        let ptr = heap.alloc(layout);
        if ptr.is_null() {
            return false;
        }
        live.push((ptr, layout));
    }
    true
}

/// Times `pairs` free+allocate pairs; returns ns per pair, or `None` on OOM.
#[inline(never)]
fn run_pairs<P: Peer>(
    heap: &mut P,
    pairs: &[(u32, Layout)],
    live: &mut [(*mut u8, Layout)],
) -> Option<f64> {
    let start = Instant::now();
    for &(slot, layout) in pairs {
        // SAFETY: `slot < live.len()` by construction of the stream.
        let entry = unsafe { live.get_unchecked_mut(slot as usize) };
        // SAFETY: a live block allocated with its layout.
        unsafe { heap.free(entry.0, entry.1) };
        let ptr = heap.alloc(layout);
        if ptr.is_null() {
            return None;
        }
        *entry = (black_box(ptr), layout);
    }
    Some(start.elapsed().as_nanos() as f64 / pairs.len() as f64)
}

fn churn<P: Peer>(cfg: &Config, arena: &Arena, stream: &Stream) -> Outcome {
    let mut live = Vec::with_capacity(stream.initial.len());
    // Calibrate on a short run: cap the pairs of slow allocators.
    let probe = stream.pairs.len().min(20_000);
    let per_pair = {
        // SAFETY: the arena is used by this heap only, until it is dropped.
        let mut heap = unsafe { P::new(arena, cfg.arena) };
        if !setup(&mut heap, stream, &mut live) {
            return Outcome::Oom;
        }
        match run_pairs(&mut heap, &stream.pairs[..probe], &mut live) {
            Some(ns) => ns,
            None => return Outcome::Oom,
        }
    };
    let affordable = (cfg.repeat_budget.as_nanos() as f64 / per_pair) as usize;
    let pairs = stream.pairs.len().min(affordable.max(probe));
    let capped = (pairs < stream.pairs.len()).then_some(pairs);
    let mut samples = Vec::new();
    for _ in 0..cfg.repeats {
        // SAFETY: as above; the previous heap is gone.
        let mut heap = unsafe { P::new(arena, cfg.arena) };
        if !setup(&mut heap, stream, &mut live) {
            return Outcome::Oom;
        }
        match run_pairs(&mut heap, &stream.pairs[..pairs], &mut live) {
            Some(ns) => samples.push(ns),
            None => return Outcome::Oom,
        }
    }
    Outcome::Time { samples, capped }
}

/// Allocates from `next` until the first failure; returns requested bytes.
fn fill<P: Peer>(
    heap: &mut P,
    rng: &mut Rng,
    layout: fn(&mut Rng) -> Layout,
    live: &mut Vec<(*mut u8, Layout)>,
) -> usize {
    let mut bytes = 0;
    loop {
        let l = layout(rng);
        let ptr = heap.alloc(l);
        if ptr.is_null() {
            return bytes;
        }
        bytes += l.size();
        live.push((ptr, l));
    }
}

fn kib_layout(rng: &mut Rng) -> Layout {
    Layout::from_size_align(rng.range(1024, 4096), 8).unwrap()
}

/// Consecutive refusals that end the 1..4 KiB fill of the half-freed arena
/// (this reproduces performance.md's figures within about 1%).
const PATIENCE: usize = 50;

/// Efficiency of the three fills, in percent of the arena, mean over seeds.
fn efficiency<P: Peer>(cfg: &Config, arena: &Arena) -> [f64; 3] {
    let mut sums = [0.0; 3];
    for seed in 0..cfg.seeds {
        let mut rng = Rng::new(1000 + seed);
        // SAFETY: the arena is used by this heap only, until it is dropped.
        let mut heap = unsafe { P::new(arena, cfg.arena) };
        let mut live = Vec::new();
        fill(&mut heap, &mut rng, small_layout, &mut live);
        let first: usize = live.iter().map(|l| l.1.size()).sum();
        // Free a random half (Fisher-Yates on the live list).
        for i in (1..live.len()).rev() {
            live.swap(i, rng.below(i + 1));
        }
        let half = live.len() / 2;
        for (ptr, layout) in live.drain(..half) {
            // SAFETY: live blocks of this heap.
            unsafe { heap.free(ptr, layout) };
        }
        // The holes are small and scattered: skip refused requests, and stop
        // after PATIENCE refusals in a row.
        let mut refused = 0;
        while refused < PATIENCE {
            let l = kib_layout(&mut rng);
            let ptr = heap.alloc(l);
            if ptr.is_null() {
                refused += 1;
            } else {
                refused = 0;
                live.push((ptr, l));
            }
        }
        let second: usize = live.iter().map(|l| l.1.size()).sum();
        drop(heap);
        // SAFETY: as above, the previous heap is gone.
        let mut heap = unsafe { P::new(arena, cfg.arena) };
        live.clear();
        let third = fill(&mut heap, &mut rng, mixed_layout, &mut live);
        for (i, bytes) in [first, second, third].into_iter().enumerate() {
            sums[i] += 100.0 * bytes as f64 / cfg.arena as f64;
        }
    }
    sums.map(|s| s / cfg.seeds as f64)
}

/// Time to free every block of a full arena (16..512 B fill), random order.
fn free_all<P: Peer>(cfg: &Config, arena: &Arena) -> Outcome {
    let mut samples = Vec::new();
    for repeat in 0..cfg.repeats {
        let mut rng = Rng::new(77);
        // SAFETY: the arena is used by this heap only, until it is dropped.
        let mut heap = unsafe { P::new(arena, cfg.arena) };
        let mut live = Vec::new();
        fill(&mut heap, &mut rng, small_layout, &mut live);
        for i in (1..live.len()).rev() {
            live.swap(i, rng.below(i + 1));
        }
        let total = live.len();
        let start = Instant::now();
        for (i, &(ptr, layout)) in live.iter().enumerate() {
            // SAFETY: live blocks of this heap, each freed once.
            unsafe { heap.free(ptr, layout) };
            if i % 1024 == 1023 && start.elapsed() > cfg.free_budget {
                let secs = start.elapsed().as_secs_f64();
                return Outcome::OverBudget {
                    secs,
                    done: (i + 1) as f64 / total as f64,
                };
            }
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        samples.push(ms);
        // A slow allocator gets one repeat only.
        if repeat == 0 && ms > 2_000.0 {
            break;
        }
    }
    Outcome::Time {
        samples,
        capped: None,
    }
}

// ---------------------------------------------------------------------------
// Driver and table

struct Row {
    name: String,
    unit: &'static str,
    cells: Vec<Outcome>,
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

const PEERS: [&str; 8] = [
    <RegionHeap<false> as Peer>::NAME,
    <RegionHeap<true> as Peer>::NAME,
    LinkedList::NAME,
    Buddy::NAME,
    Talc::NAME,
    Rlsf::NAME,
    Dl::NAME,
    Floor::NAME,
];

/// Runs `f::<P>` for every allocator, in `PEERS` order; `only` restricts the
/// row to the allocators it names (the others are skipped).
macro_rules! each_peer {
    ($f:ident, $only:expr, $($arg:expr),*) => {{
        let only: Option<&[&str]> = $only;
        let picked = std::env::var("PEERS_ONLY").ok();
        let run = |name: &str| {
            only.is_none_or(|o| o.contains(&name))
                && picked.as_deref().is_none_or(|p| p.split(',').any(|q| q == name))
        };
        let mut cells = Vec::new();
        macro_rules! one {
            ($p:ty) => {
                cells.push(if run(<$p as Peer>::NAME) {
                    eprint!(" {}", <$p as Peer>::NAME);
                    $f::<$p>($($arg),*)
                } else {
                    Outcome::Skip
                });
            };
        }
        one!(RegionHeap<false>);
        one!(RegionHeap<true>);
        one!(LinkedList);
        one!(Buddy);
        one!(Talc);
        one!(Rlsf);
        one!(Dl);
        one!(Floor);
        eprintln!();
        cells
    }};
}

fn efficiency_rows(cfg: &Config, arena: &Arena) -> [Row; 3] {
    eprint!("efficiency:");
    let results = each_peer!(efficiency_cells, Some(&PEERS[..7]), cfg, arena);
    let pick = |k: usize| -> Vec<Outcome> {
        results
            .iter()
            .map(|c| match c {
                Outcome::Time { samples, .. } => Outcome::Percent(samples[k]),
                other => other.clone(),
            })
            .collect()
    };
    [
        Row {
            name: "efficiency: fill 16..512 B".into(),
            unit: "%",
            cells: pick(0),
        },
        Row {
            name: "efficiency: free random half, fill 1..4 KiB".into(),
            unit: "%",
            cells: pick(1),
        },
        Row {
            name: "efficiency: mixed fill".into(),
            unit: "%",
            cells: pick(2),
        },
    ]
}

/// `efficiency` packed in a `Outcome` so the same driver macro serves.
fn efficiency_cells<P: Peer>(cfg: &Config, arena: &Arena) -> Outcome {
    Outcome::Time {
        samples: efficiency::<P>(cfg, arena).to_vec(),
        capped: None,
    }
}

fn locked_rows(cfg: &Config, arena: &Arena) -> Vec<Row> {
    let mut rows = Vec::new();
    for realloc in [true, false] {
        for max in [200, 1_000, 10_000, 30_000] {
            let name = format!(
                "locked: random actions 1..{max} B{}",
                if realloc { ", realloc" } else { "" }
            );
            eprint!("{name}:");
            rows.push(Row {
                name,
                unit: "ns",
                cells: each_peer!(random_actions, None, cfg, arena, max, realloc),
            });
        }
    }
    eprint!("locked: latency:");
    let both = each_peer!(latency_cells, None, cfg, arena);
    for (k, name) in ["p50", "p99"].into_iter().enumerate() {
        rows.push(Row {
            name: format!("locked: alloc+free latency {name} (ticks)"),
            unit: "ticks",
            cells: both
                .iter()
                .map(|c| match c {
                    Outcome::Time { samples, capped } => Outcome::Time {
                        samples: samples[k * samples.len() / 2..(k + 1) * samples.len() / 2]
                            .to_vec(),
                        capped: *capped,
                    },
                    other => other.clone(),
                })
                .collect(),
        });
    }
    rows
}

/// `locked::latency`'s two rows packed in one `Outcome` (p50 samples, then
/// as many p99 samples) so the same driver macro serves.
fn latency_cells<P: Peer>(cfg: &Config, arena: &Arena) -> Outcome {
    let [Outcome::Time {
        samples: mut p50, ..
    }, Outcome::Time { samples: p99, .. }] = locked::latency::<P>(cfg, arena)
    else {
        unreachable!("latency measures times");
    };
    p50.extend(p99);
    Outcome::Time {
        samples: p50,
        capped: None,
    }
}

fn print_table(cfg: &Config, rows: &[Row]) {
    let mut header = String::from("| workload |");
    for peer in PEERS {
        header += &format!(" {peer} |");
    }
    println!("{header}");
    println!("|---|{}", "---|".repeat(PEERS.len()));
    for row in rows {
        // The fastest (or most efficient) real allocator of the row.
        let values: Vec<Option<f64>> = row
            .cells
            .iter()
            .map(|c| match c {
                Outcome::Time { samples, .. } => Some(median(samples)),
                Outcome::Percent(p) => Some(*p),
                _ => None,
            })
            .collect();
        let best = values[..7]
            .iter()
            .flatten()
            .copied()
            .reduce(if row.unit == "%" { f64::max } else { f64::min });
        let mut line = format!("| {} |", row.name);
        for (cell, value) in row.cells.iter().zip(&values) {
            let text = match cell {
                Outcome::Time { samples, capped } => {
                    let lo = samples.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = samples.iter().copied().fold(0.0, f64::max);
                    let ratio =
                        best.map_or(String::new(), |b| format!(" x{:.2}", value.unwrap() / b));
                    let cap = capped.map_or(String::new(), |n| format!(" ({}k pairs)", n / 1000));
                    if samples.len() > 1 {
                        format!("{:.1} [{lo:.1}-{hi:.1}]{ratio}{cap}", median(samples))
                    } else {
                        format!("{:.1}{ratio}{cap}", median(samples))
                    }
                }
                Outcome::Percent(p) => format!("{p:.1}%"),
                Outcome::OverBudget { secs, done } => {
                    format!("> {secs:.0} s (stopped, {:.0}% freed)", done * 100.0)
                }
                Outcome::Oom => "OOM".into(),
                Outcome::Skip => "-".into(),
            };
            line += &format!(" {text} |");
        }
        println!("{line}");
    }
    println!();
    println!(
        "ns per free+alloc pair (free-all row: ms), median [min-max] of {} repeat(s), \
         xR = median / fastest allocator's median in the row (floor excluded); \
         efficiency = requested bytes / {} MiB arena, mean of {} seed(s); \
         (Nk pairs) = pairs capped to keep one repeat under {:?}.{}",
        cfg.repeats,
        cfg.arena >> 20,
        cfg.seeds,
        cfg.repeat_budget,
        if cfg.quick { " QUICK MODE." } else { "" }
    );
}

/// Re-runs this benchmark under `taskset -c <last cpu>` when possible.
fn pin_to_one_core() {
    if std::env::var_os("PEERS_PINNED").is_some() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = (cpus - 1).to_string();
    let exe = std::env::current_exe().unwrap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let status = std::process::Command::new("taskset")
        .args(["-c", &cpu])
        .arg(&exe)
        .args(&args)
        .env("PEERS_PINNED", &cpu)
        .status();
    match status {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(_) => eprintln!("taskset not found: running unpinned"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    pin_to_one_core();
    let cfg = Config::from_env();
    let arena = Arena::new(cfg.arena);
    eprintln!(
        "peers: {} MiB arena, {} pairs, {} repeats, pinned to cpu {}",
        cfg.arena >> 20,
        cfg.pairs,
        cfg.repeats,
        std::env::var("PEERS_PINNED").unwrap_or_else(|_| "none".into())
    );
    let rows_wanted = std::env::var("PEERS_ROWS").ok();
    let want = |row: &str| {
        rows_wanted
            .as_deref()
            .is_none_or(|w| w.split(',').any(|q| q == row))
    };
    let mut rows = Vec::new();
    let o1: &[&str] = &[PEERS[0], PEERS[1], PEERS[4], PEERS[5], PEERS[7]];
    let mut ns = vec![100, 1_000, 10_000];
    if !cfg.quick {
        ns.push(100_000);
    }
    if let Ok(list) = std::env::var("PEERS_N") {
        ns = list.split(',').filter_map(|n| n.parse().ok()).collect();
    }
    if !want("churn") {
        ns.clear();
    }
    for (k, &n) in ns.iter().enumerate() {
        let s = stream(n, cfg.pairs, 1 + k as u64, small_layout);
        eprint!("churn N={n}:");
        let only = (n == 100_000).then_some(o1);
        rows.push(Row {
            name: format!("churn N={n}, 16..512 B"),
            unit: "ns",
            cells: each_peer!(churn, only, &cfg, &arena, &s),
        });
    }
    if want("mixed") {
        let s = stream(1_000, cfg.pairs, 9, mixed_layout);
        eprint!("mixed:");
        rows.push(Row {
            name: "mixed 8 B..64 KiB, N=1000".into(),
            unit: "ns",
            cells: each_peer!(churn, None, &cfg, &arena, &s),
        });
    }
    if want("efficiency") {
        rows.extend(efficiency_rows(&cfg, &arena));
    }
    if want("locked") {
        let big = Arena::new(locked::arena_size(&cfg));
        rows.extend(locked_rows(&cfg, &big));
    }
    if want("free") {
        eprint!("free all:");
        rows.push(Row {
            name: "free every block of a full arena (ms)".into(),
            unit: "ms",
            cells: each_peer!(free_all, Some(&PEERS[..7]), &cfg, &arena),
        });
    }
    println!();
    print_table(&cfg, &rows);
}
