//! Per-CPU heaps: the core's [`PerCpuHeap`] (one region-heap per CPU,
//! each behind its own lock, a block freed to the heap that owns it), fed
//! by the program break and `mmap`, with the accounting, heap hints and
//! fork handling a process needs on top.
//!
//! What the core does: the heaps and their locks ([`YieldingLock`], which
//! yields the CPU while it waits), the choice of a heap with fallback
//! ([`PerCpuHeap::with_heap`]), finding the heap that owns a block (its
//! owner word names its region; the core's lock-free region table names
//! the region's heap, [`PerCpuHeap::heap_of_region`]), frees (one, or a
//! batch under one lock per run of one heap's blocks), per-heap counters,
//! and abandoning the heaps a fork copied locked
//! ([`PerCpuHeap::abandon_locked_heaps`]). What this module adds:
//!
//! Layout: at start-up one range of `(heaps + SPARE_HEAPS) * SLICE` bytes
//! is taken from the program break (or, if the break cannot move, from one
//! `mmap`), and heap `i` gets the slice at `base + i * SLICE` as its first
//! region ([`PerCpuHeap::add_memory`], which records the region in the
//! core's table at once, so a block's heap is known from its first free).
//! The heaps in use are the online CPUs ([`PerCpuHeap::set_cpu_count`]):
//! a 2-CPU machine walks 2 heaps, not [`MAX_HEAPS`].
//!
//! Growth: a heap that cannot serve a request grows through the core's
//! growth hook, [`Growth`], by the request or [`GROWTH_STEP`] (32 MiB),
//! whichever is larger. Steps stay small because the core's good fit does
//! not prefer low addresses: after a program frees most of its memory, new
//! blocks may come from the untouched end of the last growth rather than
//! from the freed (already resident) memory, so the untouched end is what
//! a heap can add to the resident size beyond its peak use. The break
//! comes first (unless `init` was told to keep off it), so successive
//! growths of a heap are usually adjacent and the core joins them into one
//! chunk of its region; when the break cannot move (a limit) the chunk is
//! mapped instead. Another library moving the break does not get in the
//! way: growth starts wherever the break is. A region whose chunk table is
//! full makes the memory a new region, which the core records in its
//! table before a block of it is handed out.
//!
//! Choosing a heap: callers pass a hint (a thread starts with the CPU it
//! runs on, see `thread`), which is the core's starting heap: it is tried
//! first, and grows if it is full (each heap keeps to memory of its own);
//! if its lock is taken, the others are tried without waiting, and if
//! none serves, the caller waits for the hinted heap. The hint moves to
//! the heap that served once `thread::STRAYS_TO_MOVE` (4) calls in a row
//! were served away from it, so a thread stays on a heap until it meets
//! lasting contention or a full heap (a thread moved by a moment of
//! contention would leave its frees filling one heap while it allocates
//! from another, and both would grow to its working set): a single-threaded
//! program uses one heap even as the scheduler moves it between CPUs,
//! instead of spreading its memory (and its resident pages) over all of
//! them. The core's "running CPU" (its `cpu_id`, for its counters) is the
//! calling thread's hint. A free always goes to the owning heap, whichever
//! thread calls it.
//!
//! Accounting: `handed_out` is the bytes of used blocks in all heaps,
//! headers included (blocks in the thread caches count: the heaps handed
//! them out). Each operation adds, while it holds its heap's lock (inside
//! the closure the core runs on the heap), what that heap's `in_use_bytes`
//! changed by; a free subtracts what the core's free returns (the same
//! change, read from the call, never from the freed header, which the
//! merge rewrote).
//!
//! Fork: nothing is locked before `fork` (a `pthread_atfork` prepare
//! handler that takes the heap locks deadlocks against stdio and against
//! a signal handler that forks, see `global`). In the child, where only
//! the forking thread is left, [`Arenas::after_fork_in_child`] has the
//! core abandon every heap whose lock `fork` copied held (a thread, gone
//! in the child, was in the middle of changing it): allocation never
//! chooses it again, in this process or any it forks; a free of one of
//! its blocks is dropped (the block leaks), an in-place resize of one of
//! its blocks fails (`realloc` moves the block) and its usable size is
//! read from the block's own header without the lock. A heap whose lock
//! was copied free is consistent and used as before.
//!
//! If every heap was abandoned (one CPU, or all busy at the fork), the
//! child activates a *spare* heap: init reserves [`SPARE_HEAPS`] more
//! slices than it gives heaps, as address space only (never touched until
//! used); a spare becomes heap `count` (the core's count is raised by one)
//! with its reserved slice as its region. A spare is set up in the child
//! handler, which runs in the only thread, so nobody races with it. Once
//! the spares are used up too (a child of a child, each forked with every
//! heap busy), [`Arenas::has_usable_heap`] is false and `global` serves
//! every request from large mappings instead, which is slow but always
//! sound.
//!
//! Invariants: once `ready` is set, the core's heaps `0..count` each have
//! their slice as first region, and the slices of the unused spares are
//! reserved, untouched memory; memory given to a heap is never given
//! back; with no operation under way and no heap abandoned, `handed_out`
//! equals the sum of the heaps' `in_use_bytes`, and it never drops below
//! zero (a block's bytes are added before its owner can free it).

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

use region_heap::raw::{owner_region, owner_word, usable_size_unlocked};
use region_heap::{ignore_misuse, BestFit, Heap, HeapError, MemorySource, PerCpuHeap};

use crate::lock::YieldingLock;
use crate::source::{map, page_size, round_up, SharedBreak};
use crate::thread;

/// The heap type: region-heap with its best-fit policy, which looks for
/// the tightest block among the first few of the request's own size class
/// before taking from a larger class. First fit (TLSF's good fit) takes
/// the head of the first class whose blocks all fit, often the untouched
/// end of the heap, so a program that frees and allocates touches more
/// fresh pages with it (measured on `alloc-test`: 38 MB resident against
/// 27 MB for glibc; best fit brings it down, see the README).
pub type HostHeap = Heap<BestFit>;

/// Most heaps, spares included; machines with more CPUs share them
/// (`cpu % count`).
pub const MAX_HEAPS: usize = 64;
/// Slices reserved at init, beyond one heap per CPU, for a forked child
/// that finds every heap abandoned (see the module docs).
pub const SPARE_HEAPS: usize = 1;
const _: () = assert!(SPARE_HEAPS < MAX_HEAPS);
/// Bytes each heap starts with (32 MiB of address space; pages are only
/// backed by memory once touched).
pub const SLICE: usize = 1 << 25;
/// Smallest growth of a heap.
pub const GROWTH_STEP: usize = 32 << 20;

/// The per-CPU heaps of the core, behind the yielding lock.
type Heaps = PerCpuHeap<MAX_HEAPS, BestFit, YieldingLock>;

/// Where a heap's memory came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The program break.
    Break,
    /// An anonymous mapping.
    Mapping,
}

/// The growth hook of the heaps: the break first (if allowed), else a
/// mapping, at least [`GROWTH_STEP`] bytes.
pub struct Growth {
    brk: SharedBreak,
    /// Whether growth may use the break (as the preallocation was allowed to).
    use_brk: AtomicBool,
}

// SAFETY: every range comes fresh from the break or `mmap`, is handed to
// one heap only, and is never given back (`release` keeps everything).
unsafe impl MemorySource for Growth {
    fn grow(&self, min_size: usize) -> Option<(NonNull<u8>, usize)> {
        let want = round_up(min_size.max(GROWTH_STEP), page_size())?;
        let from_brk = if self.use_brk.load(Ordering::Relaxed) {
            self.brk.grow(want)
        } else {
            None
        };
        Some((from_brk.or_else(|| map(want))?, want))
    }
}

/// The core's "running CPU" for the heaps: the calling thread's heap hint.
fn thread_heap() -> usize {
    thread::with(|t| t.hint())
}

/// The per-CPU heaps.
pub struct Arenas {
    heaps: Heaps,
    growth: Growth,
    /// Set once `init` gave every heap its slice.
    ready: AtomicBool,
    /// Address of the first spare slice not used yet.
    next_spare: AtomicUsize,
    /// Spare slices left.
    spares: AtomicUsize,
    /// Bytes of used blocks in all heaps, headers included (see the module
    /// docs); signed so that a fault in the accounting shows as a negative
    /// value in tests instead of wrapping.
    handed_out: AtomicIsize,
}

impl Arenas {
    /// No heaps yet; [`Arenas::init`] creates them.
    pub const fn new() -> Self {
        Self {
            heaps: PerCpuHeap::new(thread_heap),
            growth: Growth {
                brk: SharedBreak::new(),
                use_brk: AtomicBool::new(false),
            },
            ready: AtomicBool::new(false),
            next_spare: AtomicUsize::new(0),
            spares: AtomicUsize::new(0),
            handed_out: AtomicIsize::new(0),
        }
    }

    /// Bytes of used blocks the heaps have handed out, headers included:
    /// what the thread caches size their budgets by.
    pub fn handed_out(&self) -> usize {
        self.handed_out.load(Ordering::Relaxed).max(0) as usize
    }

    /// Runs `op` on `heap` (whose lock the caller holds) and adds what it
    /// changed the heap's used bytes by to `handed_out`, before the lock is
    /// released: a block's bytes are counted before anyone can free it.
    #[inline]
    fn counted<R>(&self, heap: &mut HostHeap, op: impl FnOnce(&mut HostHeap) -> R) -> R {
        let before = heap.in_use_bytes();
        let r = op(heap);
        let change = heap.in_use_bytes().wrapping_sub(before) as isize;
        if change != 0 {
            self.handed_out.fetch_add(change, Ordering::Relaxed);
        }
        r
    }

    /// Subtracts the sizes the core's frees returned from `handed_out`.
    #[inline]
    fn note_returned(&self, bytes: usize) {
        if bytes != 0 {
            self.handed_out.fetch_sub(bytes as isize, Ordering::Relaxed);
        }
    }

    /// Creates `heaps` heaps (at most [`MAX_HEAPS`] less the spares) over
    /// one preallocation from the break (when `use_brk`) or a mapping,
    /// which also reserves the [`SPARE_HEAPS`] slices; returns where it
    /// came from, or `None` if the system refused both.
    ///
    /// Call once, before any other method, from one thread.
    pub fn init(&'static self, heaps: usize, use_brk: bool) -> Option<Origin> {
        let n = heaps.clamp(1, MAX_HEAPS - SPARE_HEAPS);
        self.growth.use_brk.store(use_brk, Ordering::Relaxed);
        let (base, origin) = self.preallocate((n + SPARE_HEAPS) * SLICE, use_brk)?;
        self.heaps.set_cpu_count(n);
        // Damage the core meets while allocating is quarantined and the
        // allocation served elsewhere, as a failed heap is; frees report
        // their own errors (`global`).
        self.heaps.set_report_handler(ignore_misuse);
        self.heaps.set_memory_source(&self.growth);
        for i in 0..n {
            // SAFETY: slice `i` is fresh memory nobody else was given.
            unsafe { self.set_up(i, base + i * SLICE) }?;
        }
        self.next_spare.store(base + n * SLICE, Ordering::Relaxed);
        self.spares.store(SPARE_HEAPS, Ordering::Relaxed);
        self.ready.store(true, Ordering::Release);
        Some(origin)
    }

    /// Gives heap `i` the slice at `start` as its first region.
    ///
    /// # Safety
    /// That slice is fresh memory nobody else was given; heap `i` has no
    /// region yet.
    unsafe fn set_up(&self, i: usize, start: usize) -> Option<()> {
        // The per-thread caches keep freed small blocks already; the
        // core's quick lists would hold a second, unshared copy.
        self.heaps.heap(i).lock().set_quick_depth(0).ok()?;
        // SAFETY: fresh memory (caller), never given back.
        unsafe { self.heaps.add_memory(i, start as *mut u8, SLICE) }.ok()
    }

    /// Whether some heap may serve allocations (false before `init`, and
    /// in a forked child that found every heap, spares included,
    /// abandoned).
    pub fn has_usable_heap(&self) -> bool {
        self.count() > 0 && (0..self.count()).any(|i| !self.heaps.is_abandoned(i))
    }

    /// Heaps abandoned so far, as a bit set (bit `i`: heap `i`).
    pub fn abandoned(&self) -> u64 {
        (0..self.count())
            .filter(|&i| self.heaps.is_abandoned(i))
            .fold(0, |set, i| set | 1 << i)
    }

    /// The `pthread_atfork` child handler's part for the heaps: abandons
    /// every heap whose lock `fork` copied held (the core resets that
    /// lock), frees the break's lock, and sets up a spare heap if no heap
    /// is left (see the module docs). Needs nothing from the parent.
    ///
    /// # Safety
    /// Only in a child just forked, in its one thread (the atfork child
    /// handler), before the child makes any other call into the heaps.
    pub unsafe fn after_fork_in_child(&self) {
        // SAFETY: the child's one thread; the holders of held locks are
        // threads the child does not have (caller).
        unsafe { self.heaps.abandon_locked_heaps() };
        // SAFETY: in the child's only thread (caller).
        unsafe { self.growth.brk.after_fork_in_child() };
        if self.count() > 0 && !self.has_usable_heap() {
            self.add_spare();
        }
    }

    /// Sets up the next spare heap, if a reserved slice is left.
    fn add_spare(&self) -> bool {
        let left = self.spares.load(Ordering::Relaxed);
        if left == 0 {
            return false;
        }
        let i = self.count();
        let start = self.next_spare.load(Ordering::Relaxed);
        // SAFETY: the slice of a spare was reserved at init and never
        // given to anyone (the spare count only goes down here); heap `i`,
        // past the count, never got memory.
        if unsafe { self.set_up(i, start) }.is_none() {
            return false;
        }
        self.spares.store(left - 1, Ordering::Relaxed);
        self.next_spare.store(start + SLICE, Ordering::Relaxed);
        self.heaps.set_cpu_count(i + 1);
        true
    }

    fn preallocate(&self, bytes: usize, use_brk: bool) -> Option<(usize, Origin)> {
        let align = page_size();
        if use_brk {
            if let Some(start) = self.growth.brk.grow(bytes + align) {
                let base = round_up(start.as_ptr() as usize, align)?;
                return Some((base, Origin::Break));
            }
        }
        map(bytes).map(|start| (start.as_ptr() as usize, Origin::Mapping))
    }

    /// Heaps in use (0 before `init`).
    #[inline]
    pub fn count(&self) -> usize {
        if self.ready.load(Ordering::Acquire) {
            self.heaps.cpu_count()
        } else {
            0
        }
    }

    /// The heap whose region has the address `region`, if any (the core's
    /// region table, without a lock).
    #[inline]
    pub fn heap_of(&self, region: usize) -> Option<usize> {
        self.heaps.heap_of_region(region)
    }

    /// Whether `region` is the address of a region of the heaps (the
    /// core's region table, without a lock): the free path's filter.
    #[inline]
    pub fn is_region(&self, region: usize) -> bool {
        self.heaps.knows_region(region)
    }

    /// The heap owning the region block at `data`, judged by its header's
    /// owner word (whatever the block's state: the heap validates it).
    ///
    /// # Safety
    /// As for [`owner_word`]: the word [`OWNER_OFFSET`] bytes before `data`
    /// is readable and not written meanwhile.
    ///
    /// [`OWNER_OFFSET`]: region_heap::raw::OWNER_OFFSET
    #[inline]
    pub unsafe fn owner_of(&self, data: *const u8) -> Option<usize> {
        // SAFETY: forwarded.
        self.heap_of(owner_region(unsafe { owner_word(data) }))
    }

    /// Allocates `layout` from a heap chosen from `hint`, which is set to
    /// the heap that served (see the module docs).
    pub fn allocate(&self, hint: &mut usize, layout: Layout) -> Option<NonNull<u8>> {
        if !self.has_usable_heap() {
            return None;
        }
        let (block, served) = self
            .heaps
            .with_heap(*hint, layout, |heap| {
                self.counted(heap, |heap| heap.allocate(layout))
            })
            .ok()?;
        *hint = served;
        Some(block)
    }

    /// Allocates up to `out.len()` blocks of `layout` from one heap under
    /// one lock; returns how many (at least 1 unless memory ran out).
    pub fn allocate_batch(
        &self,
        hint: &mut usize,
        layout: Layout,
        out: &mut [NonNull<u8>],
    ) -> usize {
        if !self.has_usable_heap() {
            return 0;
        }
        let batch = self.heaps.with_heap(*hint, layout, |heap| {
            self.counted(heap, |heap| heap.allocate_batch(layout, out))
        });
        match batch {
            Ok((n, served)) => {
                *hint = served;
                n
            }
            Err(_) => 0,
        }
    }

    /// Frees a region block to the heap that owns it; a block of an
    /// abandoned heap is left as it is (leaked: see the module docs).
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`].
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<(), HeapError> {
        // SAFETY: forwarded.
        let size = unsafe { self.heaps.free(ptr) }?;
        self.note_returned(size);
        Ok(())
    }

    /// Frees every pointer `next` yields, holding each owner's lock for a
    /// run of consecutive blocks of that owner; stops at the first error.
    ///
    /// # Safety
    /// As for [`Arenas::free`], for every pointer.
    pub unsafe fn free_all(
        &self,
        next: impl FnMut() -> Option<NonNull<u8>>,
    ) -> Result<(), HeapError> {
        // SAFETY: forwarded.
        let (returned, result) = unsafe { self.heaps.free_all(next) };
        // One update of the shared counter for the whole list.
        self.note_returned(returned);
        result
    }

    /// Resizes a region block without moving it (the core's
    /// `resize_in_place`), under its owner's lock; `Ok(false)` for a block
    /// of an abandoned heap.
    ///
    /// # Safety
    /// As for [`Heap::resize_in_place`] and [`PerCpuHeap::with_owner`].
    pub unsafe fn resize_in_place(&self, ptr: NonNull<u8>, size: usize) -> Result<bool, HeapError> {
        let resize = |heap: &mut HostHeap| {
            // SAFETY: forwarded (caller); run on the block's owner.
            self.counted(heap, |heap| unsafe { heap.resize_in_place(ptr, size) })
        };
        // SAFETY: forwarded.
        let resized = unsafe { self.heaps.with_owner(ptr, resize) }?;
        Ok(resized.unwrap_or(false))
    }

    /// Usable bytes of a region block, as its owner heap reports them (for
    /// a block of an abandoned heap, as its header says without the lock:
    /// with guard zones that may include the guard bytes).
    ///
    /// # Safety
    /// As for [`PerCpuHeap::with_owner`]; for a block of an abandoned heap,
    /// as for [`usable_size_unlocked`] (a used block the caller owns).
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, HeapError> {
        // SAFETY: `usable_size` reads only the heap's own memory.
        let read = |heap: &mut HostHeap| unsafe { heap.usable_size(ptr) };
        // SAFETY: forwarded.
        let usable = unsafe { self.heaps.with_owner(ptr, read) }?;
        match usable {
            Some(usable) => Ok(usable),
            // SAFETY: forwarded (caller).
            None => Ok(unsafe { usable_size_unlocked(ptr.as_ptr()) }),
        }
    }

    /// Runs `f` on every heap in use that is not abandoned in turn, under
    /// its lock.
    pub fn for_each(&self, mut f: impl FnMut(usize, &mut HostHeap)) {
        for i in 0..self.count() {
            if !self.heaps.is_abandoned(i) {
                f(i, &mut self.heaps.heap(i).lock());
            }
        }
    }
}

impl Default for Arenas {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 16).unwrap()
    }

    #[test]
    fn blocks_lead_back_to_their_heap() {
        let arenas = Box::leak(Box::new(Arenas::new()));
        assert_eq!(arenas.init(3, false), Some(Origin::Mapping));
        for start in 0..6 {
            let mut hint = start;
            let p = arenas.allocate(&mut hint, layout(100)).unwrap();
            assert_eq!(hint, start % 3, "an idle heap serves its own hint");
            // SAFETY: a live block; its header is readable.
            unsafe {
                assert_eq!(arenas.owner_of(p.as_ptr()), Some(hint % 3));
                p.as_ptr().write_bytes(0x5a, 100);
                arenas.free(p).unwrap();
                assert_eq!(
                    arenas.free(p),
                    Err(HeapError::DoubleFree {
                        addr: p.as_ptr() as usize
                    })
                );
            }
        }
        assert_eq!(arenas.heap_of(12345), None);
        assert_eq!(arenas.heaps.cpu_count(), 3, "one heap per CPU, no more");
        let mut heaps = 0;
        arenas.for_each(|_, _| heaps += 1);
        assert_eq!(heaps, 3);
    }

    #[test]
    fn a_full_heap_grows_and_keeps_its_blocks() {
        let arenas = Box::leak(Box::new(Arenas::new()));
        arenas.init(1, false).unwrap();
        let mut live = Vec::new();
        // Three times the first slice, in 1 MiB blocks, each with a pattern.
        for i in 0..((3 * SLICE) >> 20) {
            let p = arenas.allocate(&mut 0, layout(1 << 20)).unwrap();
            // SAFETY: 1 MiB of writable memory.
            unsafe { p.as_ptr().write_bytes(i as u8, 1 << 20) };
            live.push((p, i as u8));
        }
        arenas.for_each(|_, heap| {
            assert!(heap.stats().total_bytes >= 3 * SLICE);
            heap.check().unwrap();
        });
        let mut it = live.iter();
        // SAFETY: live blocks, each checked before it is freed.
        unsafe {
            arenas
                .free_all(|| {
                    let (p, fill) = it.next()?;
                    let bytes = core::slice::from_raw_parts(p.as_ptr(), 1 << 20);
                    assert!(bytes.iter().all(|b| b == fill));
                    Some(*p)
                })
                .unwrap();
        }
        arenas.for_each(|_, heap| assert_eq!(heap.stats().used_blocks, 0));
    }

    #[test]
    fn batches_and_in_place_resizes() {
        let arenas = Box::leak(Box::new(Arenas::new()));
        arenas.init(2, false).unwrap();
        let mut out = [NonNull::dangling(); 16];
        assert_eq!(arenas.allocate_batch(&mut 1, layout(48), &mut out), 16);
        for p in out {
            // SAFETY: live blocks of the batch.
            assert_eq!(unsafe { arenas.owner_of(p.as_ptr()) }, Some(1));
        }
        let last = out[15];
        // SAFETY: the last block of the batch has the free tail after it.
        unsafe {
            assert_eq!(arenas.resize_in_place(last, 4000), Ok(true));
            assert!(region_heap::raw::usable_size_unlocked(last.as_ptr()) >= 4000);
        }
        let mut i = 0;
        // SAFETY: live blocks.
        unsafe {
            arenas
                .free_all(|| {
                    i += 1;
                    out.get(i - 1).copied()
                })
                .unwrap();
        }
    }

    /// Used blocks of heap `i`, abandoned or not (peeking past `for_each`).
    fn used_blocks(arenas: &Arenas, i: usize) -> usize {
        arenas.heaps.heap(i).lock().stats().used_blocks
    }

    /// What a forked child does with a heap whose lock `fork` copied held
    /// (simulated: the lock is taken and its guard forgotten, as a thread
    /// that no longer exists would have left it): the heap is abandoned,
    /// its lock reset; allocation goes elsewhere; frees of its blocks are
    /// dropped, in-place resizes refused; the other heap is untouched.
    #[test]
    fn a_heap_locked_at_fork_is_abandoned_in_the_child() {
        let arenas = Box::leak(Box::new(Arenas::new()));
        arenas.init(2, false).unwrap();
        let a = arenas.allocate(&mut 0, layout(100)).unwrap();
        let b = arenas.allocate(&mut 1, layout(100)).unwrap();
        let c = arenas.allocate(&mut 1, layout(3000)).unwrap();
        core::mem::forget(arenas.heaps.heap(1).lock());
        // SAFETY: a simulated child: no other thread uses these arenas.
        unsafe { arenas.after_fork_in_child() };
        assert_eq!(arenas.abandoned(), 0b10);
        assert!(
            arenas.heaps.heap(1).try_lock().is_some(),
            "the lock was reset"
        );
        assert!(arenas.has_usable_heap());
        assert_eq!(arenas.count(), 2, "no spare needed");

        let mut hint = 1;
        let d = arenas.allocate(&mut hint, layout(100)).unwrap();
        assert_eq!(hint, 0, "the hint left the abandoned heap");
        let mut out = [NonNull::dangling(); 8];
        assert_eq!(arenas.allocate_batch(&mut 1, layout(32), &mut out), 8);
        // SAFETY: live blocks; their headers are readable.
        unsafe {
            assert_eq!(arenas.owner_of(d.as_ptr()), Some(0));
            for p in out {
                assert_eq!(arenas.owner_of(p.as_ptr()), Some(0));
            }
        }

        let used1 = used_blocks(arenas, 1);
        // SAFETY: live blocks the test owns, each freed once.
        unsafe {
            assert_eq!(arenas.resize_in_place(c, 10), Ok(false));
            assert!(arenas.usable_size(c).unwrap() >= 3000);
            arenas.free(b).unwrap();
            let mut list = [a, c, d].into_iter();
            arenas.free_all(|| list.next()).unwrap();
            let mut batch = out.into_iter();
            arenas.free_all(|| batch.next()).unwrap();
        }
        assert_eq!(used_blocks(arenas, 1), used1, "frees to heap 1 dropped");
        assert_eq!(used_blocks(arenas, 0), 0, "heap 0 got its blocks back");
        let mut visited = 0;
        arenas.for_each(|i, heap| {
            assert_eq!(i, 0, "an abandoned heap is not visited");
            heap.check().unwrap();
            visited += 1;
        });
        assert_eq!(visited, 1);

        // A lock copied free stays in use: a second fork with nothing held
        // abandons nothing more.
        // SAFETY: as above.
        unsafe { arenas.after_fork_in_child() };
        assert_eq!(arenas.abandoned(), 0b10);
    }

    /// A thread whose heap is locked for a moment is served by another
    /// heap but keeps its hint; lasting contention (`STRAYS_TO_MOVE` calls
    /// in a row served elsewhere) moves it (`ThreadState::with_hint`, the
    /// way `global` allocates).
    #[test]
    fn a_moment_of_contention_does_not_move_a_threads_hint() {
        use crate::thread::{ThreadState, STRAYS_TO_MOVE};
        let arenas = Box::leak(Box::new(Arenas::new()));
        arenas.init(2, false).unwrap();
        let t = ThreadState::new();
        assert_eq!(t.hint(), 0);
        let mut live = Vec::new();
        let mut allocate = |t: &ThreadState| {
            let p = t
                .with_hint(|hint| arenas.allocate(hint, layout(100)))
                .unwrap();
            live.push(p);
            // SAFETY: a live block; its header is readable.
            unsafe { arenas.owner_of(p.as_ptr()) }.unwrap()
        };
        let held = arenas.heaps.heap(0).lock();
        for stray in 1..STRAYS_TO_MOVE {
            assert_eq!(allocate(&t), 1, "served by the free heap");
            assert_eq!(t.hint(), 0, "stray {stray} keeps the hint");
        }
        drop(held);
        assert_eq!(allocate(&t), 0, "back on its heap once it is free");
        let held = arenas.heaps.heap(0).lock();
        for _ in 0..STRAYS_TO_MOVE {
            assert_eq!(allocate(&t), 1);
        }
        assert_eq!(t.hint(), 1, "lasting contention moved the hint");
        drop(held);
        assert_eq!(allocate(&t), 1, "the new heap is tried first");
        let mut blocks = live.into_iter();
        // SAFETY: live blocks this test owns, each freed once.
        unsafe { arenas.free_all(|| blocks.next()) }.unwrap();
        assert_eq!(used_blocks(arenas, 0) + used_blocks(arenas, 1), 0);
    }

    /// A child that finds every heap locked gets the spare heap, on its
    /// reserved slice (so the arithmetic lookup finds it); a grandchild
    /// that finds the spare locked too has no heap left (`global` then
    /// uses large mappings) and does not hang.
    #[test]
    fn a_child_with_every_heap_locked_uses_a_spare() {
        let arenas = Box::leak(Box::new(Arenas::new()));
        arenas.init(1, false).unwrap();
        assert_eq!(arenas.spares.load(Ordering::Relaxed), SPARE_HEAPS);
        let spare_slice = arenas.next_spare.load(Ordering::Relaxed);
        let old = arenas.allocate(&mut 0, layout(500)).unwrap();
        core::mem::forget(arenas.heaps.heap(0).lock());
        // SAFETY: a simulated child.
        unsafe { arenas.after_fork_in_child() };
        assert_eq!(arenas.abandoned(), 0b1);
        assert_eq!(arenas.count(), 2, "the spare was set up");
        assert!(arenas.has_usable_heap());
        let mut hint = 0;
        let p = arenas.allocate(&mut hint, layout(500)).unwrap();
        assert_eq!(hint, 1);
        // SAFETY: live blocks.
        unsafe {
            assert_eq!(arenas.owner_of(p.as_ptr()), Some(1));
            assert_eq!(
                owner_region(owner_word(p.as_ptr())),
                spare_slice,
                "the spare's region is its reserved slice"
            );
            p.as_ptr().write_bytes(0x77, 500);
            arenas.free(old).unwrap();
            arenas.free(p).unwrap();
        }
        assert_eq!(used_blocks(arenas, 1), 0);
        // A grandchild forked while the spare is busy too.
        core::mem::forget(arenas.heaps.heap(1).lock());
        // SAFETY: a simulated child.
        unsafe { arenas.after_fork_in_child() };
        assert_eq!(arenas.abandoned(), 0b11);
        assert_eq!(arenas.count(), 2, "no spare left");
        assert!(!arenas.has_usable_heap());
        assert!(arenas.allocate(&mut 0, layout(16)).is_none());
        assert_eq!(
            arenas.allocate_batch(&mut 1, layout(16), &mut [NonNull::dangling(); 4]),
            0
        );
    }

    /// The signed counter itself: `handed_out()` clamps a drift below zero.
    fn handed_raw(arenas: &Arenas) -> isize {
        arenas.handed_out.load(Ordering::Relaxed)
    }

    /// Bytes of used blocks in all heaps, as the core counts them.
    fn in_use(arenas: &Arenas) -> usize {
        let mut sum = 0;
        arenas.for_each(|_, heap| sum += heap.stats().in_use_bytes);
        sum
    }

    /// Bytes (header included) of a live block.
    ///
    /// # Safety
    /// `p` is a live region block.
    unsafe fn block_bytes(p: NonNull<u8>) -> usize {
        // SAFETY: forwarded.
        unsafe { region_heap::raw::used_block_size(p.as_ptr()) }.unwrap()
    }

    /// A small xorshift generator: the workload is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// `handed_out` is exactly the heaps' used bytes: each block counts
    /// for what its heap's used bytes grew by (a gap given to the block
    /// before an over-aligned one, an in-place resize included), and a
    /// free takes back what `Heap::free` returns, never a size read from a
    /// header the free has rewritten. Single and batch frees both balance.
    #[test]
    fn handed_out_balances_exactly() {
        let arenas = Box::leak(Box::new(Arenas::new()));
        arenas.init(2, false).unwrap();
        let start = handed_raw(arenas);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut live: Vec<NonNull<u8>> = Vec::new();
        let note = |arenas: &Arenas, live: &[NonNull<u8>]| {
            let now = handed_raw(arenas);
            assert!(now >= start, "handed_out fell to {now} (start {start})");
            // SAFETY: live blocks.
            let sum: usize = live.iter().map(|&p| unsafe { block_bytes(p) }).sum();
            assert!(
                now - start >= sum as isize,
                "handed_out {now} below the {sum} bytes of live blocks"
            );
            assert_eq!(
                (now - start) as usize,
                in_use(arenas),
                "handed_out matches the heaps' used bytes"
            );
        };
        for round in 0..40 {
            let mut hint = round % 2;
            // Singles of mixed sizes, some over-aligned (a small leading gap
            // may then grow the used block before them).
            for _ in 0..60 {
                let size = match rng.below(4) {
                    0 => rng.below(64),
                    1 => rng.below(2048),
                    _ => rng.below(20_000),
                };
                let align = [16, 16, 16, 64, 256][rng.below(5)];
                let layout = Layout::from_size_align(size, align).unwrap();
                live.push(arenas.allocate(&mut hint, layout).unwrap());
            }
            note(arenas, &live);
            // A batch, as the thread caches refill.
            let mut out = [NonNull::dangling(); 32];
            let n = arenas.allocate_batch(&mut hint, layout(16 * (1 + rng.below(128))), &mut out);
            live.extend(&out[..n]);
            note(arenas, &live);
            // In-place resizes, up and down.
            for _ in 0..10 {
                let p = live[rng.below(live.len())];
                // SAFETY: a live block.
                let _ = unsafe { arenas.resize_in_place(p, rng.below(30_000)) }.unwrap();
            }
            note(arenas, &live);
            // Single frees of a random third, then a batch free of another third.
            for _ in 0..live.len() / 3 {
                let p = live.swap_remove(rng.below(live.len()));
                // SAFETY: a live block, freed once.
                unsafe { arenas.free(p) }.unwrap();
                note(arenas, &live);
            }
            let keep = live.len() - live.len() / 3;
            let batch: Vec<_> = live.drain(keep..).collect();
            let mut it = batch.iter().copied();
            // SAFETY: live blocks, freed once.
            unsafe { arenas.free_all(|| it.next()) }.unwrap();
            note(arenas, &live);
        }
        let mut it = live.into_iter();
        // SAFETY: the remaining live blocks, freed once.
        unsafe { arenas.free_all(|| it.next()) }.unwrap();
        assert_eq!(handed_raw(arenas), start, "every byte handed out came back");
        assert_eq!(in_use(arenas), 0);
        arenas.for_each(|_, heap| heap.check().unwrap());
    }
}
