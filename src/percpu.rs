//! `PerCpuHeap`: one region-heap [`Heap`] per CPU, each behind its own
//! lock, so that CPUs allocating at once do not wait for each other.
//!
//! **Allocation** goes to the heap of the CPU that asks (the kernel
//! supplies the function that says which CPU runs, `cpu_id`). If that
//! heap's lock is held (an allocation from another CPU that fell back to
//! it, a free of one of its blocks from another CPU) or the heap has no
//! room, the other heaps are tried without waiting; if none can serve,
//! the caller waits for its own heap, which grows through the growth hook
//! ([`MemorySource`]) as a [`LockedHeap`] does.
//!
//! **A free** goes to the heap that owns the block, whichever CPU frees
//! it. The block's header names its region (the owner word, read with
//! [`raw::owner_word`]); a table of region addresses, `owners`, says which
//! heap holds that region: an O(1) lookup without a lock. That heap then
//! validates the block under its lock as any free is validated, so a
//! forged or stale owner word cannot steer the free: at worst it names a
//! heap that refuses the pointer. The table learns a region the first time
//! a block of it is freed, by asking each heap in turn whether it holds
//! the block ([`PerCpuHeap::free`] on a pointer the table does not place):
//! regions are few and never removed, so this happens once per region,
//! and for pointers that are not blocks of the heap at all (a misuse),
//! where asking every heap also finds the precise error.
//!
//! **Remote frees** (a block freed by another CPU than the one whose heap
//! owns it) take the owner's lock, one free at a time. Batching them (a
//! per-heap list the owner drains) would save lock traffic, but a block
//! waiting on such a list is neither used nor free to the heap's checks,
//! and a double free pushed twice makes the list a cycle that the owner
//! cannot detect before it follows it; the benchmark in the README
//! measures what the direct free costs.
//!
//! **Interrupt handlers**: behind an [`IrqSafeLock`](crate::IrqSafeLock),
//! a handler may allocate and free as any code does. Behind the default
//! [`SpinLock`](crate::SpinLock) it may only use
//! [`PerCpuHeap::try_allocate`] and [`PerCpuHeap::try_free`], which never
//! wait for a lock (the interrupted code may hold the one it would wait
//! for, on the same CPU).
//!
//! **Heaps in use**: `CPUS` is the most heaps the type holds; how many
//! are in use is decided at run time ([`PerCpuHeap::set_cpu_count`]: a
//! kernel boots with fewer CPUs than its maximum, a process learns how
//! many it has), so that heap choice and the walks over all heaps
//! (`stats`, `check`, `dump`, `trim`, a free the table cannot place) visit
//! only those. A CPU id, or a heap index a caller names, at or above the
//! count is taken modulo the count.
//!
//! **Callers with their own heap choice**: [`PerCpuHeap::with_heap`] runs
//! a closure on the heap chosen from a starting heap the caller names (a
//! per-thread hint in a process, where threads move between CPUs) and
//! says which heap ran it; the closure may allocate many blocks under the
//! one lock (a batch) or account for what it changed. [`PerCpuHeap::with_owner`]
//! and [`PerCpuHeap::free_all`] do the same for the heap that owns a
//! block, and [`PerCpuHeap::heap_of_region`] answers, without a lock,
//! whether an owner word names a region of this heap.
//!
//! **Regions are recorded when they are made**: a region made by
//! [`PerCpuHeap::add_memory`] or by the growth of an allocation
//! ([`PerCpuHeap::allocate`], [`PerCpuHeap::with_heap`], `GlobalAlloc::alloc`)
//! is recorded in `owners` before any block of it is handed out (checked
//! under the heap's lock by every allocation: a region count compared with
//! the count recorded), so the table knows those regions (up to its
//! capacity); only regions made behind its back (`heap(cpu).lock()`, or
//! the growth inside `GlobalAlloc::realloc`, which the owning heap's
//! `LockedHeap` serves) are learnt at the next allocation from that heap
//! or at their first free, as described above.
//!
//! **Abandoned heaps**: [`PerCpuHeap::abandon_locked_heaps`] is for a
//! process's child just forked, where the threads that held heap locks do
//! not exist: a heap whose lock is held then is abandoned for good (its
//! structure may be half changed). It is never chosen for an allocation,
//! never visited by the walks, and a block it owns is neither freed nor
//! resized (it leaks: [`PerCpuHeap::free`] returns `Ok(0)`,
//! [`PerCpuHeap::with_owner`] `Ok(None)`).
//!
//! Invariants: a region belongs to one heap for ever (regions are never
//! removed from a heap, and a range given to one heap is never given to
//! another); an entry of `owners` maps a region address to the heap that
//! holds that region, and is written once; every region made through
//! `add_memory` or the growth of an allocation is in `owners` (while it
//! has room) before a block of it is handed out; the counters of CPU `c` count the calls made on
//! CPU `c`, whichever heap served them; `1 <= count <= CPUS`; an abandoned
//! heap's lock is never taken again and its memory is never read by this
//! type again.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr::{null_mut, NonNull};

use crate::error::HeapError;
use crate::heap::Heap;
use crate::lock::{LockGuard, RawLock, SpinLock};
use crate::locked::{LockedHeap, MemorySource, ReportHandler};
use crate::policy::{FitPolicy, GoodFit};
use crate::raw;
use crate::stats::Stats;
use crate::sync::{AtomicBool, AtomicUsize, Ordering};

/// Slots of the region table (a power of two). Lookups stay short while
/// at most half the slots are used; past [`OWNER_LIMIT`] regions the
/// table records no more, and frees of the others ask every heap.
const OWNER_SLOTS: usize = 256;

/// Regions the table records at most (half its slots).
const OWNER_LIMIT: usize = OWNER_SLOTS / 2;

/// A slot no region uses.
const EMPTY: usize = 0;

/// A slot being written: taken by a region whose heap is not stored yet.
const CLAIMED: usize = 1;

/// One slot of the region table: a region address and its heap, side
/// by side, so that a lookup reads one cache line.
struct OwnerSlot {
    region: AtomicUsize,
    heap: AtomicUsize,
}

/// Which heap holds each region: an open-addressed table of region
/// addresses, read without a lock. A slot goes from [`EMPTY`] to
/// [`CLAIMED`] (compare-and-swap, so two writers never share a slot) to
/// the region's address (stored after its heap index, with release
/// ordering), and never changes again.
struct RegionOwners {
    slots: [OwnerSlot; OWNER_SLOTS],
    recorded: AtomicUsize,
}

impl RegionOwners {
    const fn new() -> Self {
        RegionOwners {
            slots: [const {
                OwnerSlot {
                    region: AtomicUsize::new(EMPTY),
                    heap: AtomicUsize::new(0),
                }
            }; OWNER_SLOTS],
            recorded: AtomicUsize::new(0),
        }
    }

    /// The first slot to look at for `region` (Fibonacci hashing of the
    /// address: the top bits of its product with 2^64 / phi; its
    /// always-zero low bits only shift the product, whose top bits still
    /// mix every bit above them).
    #[inline]
    fn home_slot(region: usize) -> usize {
        const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
        let hash = (region as u64).wrapping_mul(GOLDEN);
        (hash >> (64 - OWNER_SLOTS.trailing_zeros())) as usize
    }

    /// The heap that holds `region`, if the table knows it. The region's
    /// home slot holds it unless another region took that slot first: the
    /// common case is one load and one compare, inlined; the probe past
    /// the home slot is out of line.
    #[inline]
    fn heap_of(&self, region: usize) -> Option<usize> {
        if region <= CLAIMED {
            return None;
        }
        let home = Self::home_slot(region);
        let slot = &self.slots[home];
        let found = slot.region.load(Ordering::Acquire);
        if found == region {
            return Some(slot.heap.load(Ordering::Relaxed));
        }
        if found == EMPTY {
            return None;
        }
        self.probe(region, home)
    }

    /// Whether the table knows `region`: [`RegionOwners::heap_of`]
    /// without reading the heap (the cheaper question, for a filter).
    #[inline]
    fn knows(&self, region: usize) -> bool {
        if region <= CLAIMED {
            return false;
        }
        let home = Self::home_slot(region);
        let found = self.slots[home].region.load(Ordering::Acquire);
        found == region || (found != EMPTY && self.probe(region, home).is_some())
    }

    /// The rest of [`RegionOwners::heap_of`]: the slots after `home`.
    #[cold]
    fn probe(&self, region: usize, home: usize) -> Option<usize> {
        let mut slot = home;
        for _ in 1..OWNER_SLOTS {
            slot = (slot + 1) % OWNER_SLOTS;
            match self.slots[slot].region.load(Ordering::Acquire) {
                EMPTY => return None,
                found if found == region => {
                    return Some(self.slots[slot].heap.load(Ordering::Relaxed));
                }
                _ => {}
            }
        }
        None
    }

    /// Records that `heap` holds `region` (nothing if the table knows it
    /// already or is full).
    fn record(&self, region: usize, heap: usize) {
        if region <= CLAIMED || self.heap_of(region).is_some() {
            return;
        }
        if self.recorded.fetch_add(1, Ordering::Relaxed) >= OWNER_LIMIT {
            self.recorded.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let mut slot = Self::home_slot(region);
        loop {
            let claimed = self.slots[slot].region.compare_exchange(
                EMPTY,
                CLAIMED,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if claimed.is_ok() {
                self.slots[slot].heap.store(heap, Ordering::Relaxed);
                self.slots[slot].region.store(region, Ordering::Release);
                return;
            }
            // At most OWNER_LIMIT slots are taken, so an empty one exists.
            slot = (slot + 1) % OWNER_SLOTS;
        }
    }
}

/// Calls made on one CPU (see [`PerCpuHeap::cpu_counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Blocks allocated by this CPU, from whichever heap.
    pub allocations: u64,
    /// Blocks freed by this CPU, to whichever heap.
    pub frees: u64,
    /// Of those frees, blocks owned by another CPU's heap.
    pub remote_frees: u64,
}

/// One CPU's heap and counters, on cache lines of their own.
#[repr(align(128))]
struct PerCpu<P: FitPolicy, L: RawLock> {
    heap: LockedHeap<Heap<P>, L>,
    /// Set for good by [`PerCpuHeap::abandon_locked_heaps`].
    abandoned: AtomicBool,
    /// Regions of this heap already recorded in `owners` (written under
    /// the heap's lock).
    recorded_regions: AtomicUsize,
    allocations: AtomicUsize,
    frees: AtomicUsize,
    remote_frees: AtomicUsize,
}

impl<P: FitPolicy, L: RawLock> PerCpu<P, L> {
    const fn new() -> Self {
        PerCpu {
            heap: LockedHeap::with_backend(None),
            abandoned: AtomicBool::new(false),
            recorded_regions: AtomicUsize::new(0),
            allocations: AtomicUsize::new(0),
            frees: AtomicUsize::new(0),
            remote_frees: AtomicUsize::new(0),
        }
    }

    #[inline]
    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }
}

/// Where a block's owning heap was found, and in what state.
enum Located<'a, P: FitPolicy, L: RawLock> {
    /// Heap `.0`, locked.
    Held(usize, LockGuard<'a, Heap<P>, L>),
    /// A heap that had to be locked was busy and the caller would not wait.
    Busy,
    /// The owning heap is abandoned: the block is left alone.
    Abandoned,
}

/// One region-heap per CPU, each behind its own lock `L`: allocation from
/// the running CPU's heap, frees to the owning heap from any CPU (see the
/// module documentation of `percpu` for the paths and their invariants).
///
/// ```
/// use core::alloc::Layout;
/// use region_heap::PerCpuHeap;
///
/// fn cpu_id() -> usize {
///     0 // a kernel reads its per-CPU data (GS base, the local APIC ID...)
/// }
///
/// static HEAP: PerCpuHeap<4> = PerCpuHeap::new(cpu_id);
///
/// # #[repr(align(16))] struct A([u8; 1 << 16]);
/// # static mut ARENAS: [A; 4] = [const { A([0; 1 << 16]) }; 4];
/// for cpu in 0..4 {
///     // SAFETY: each arena is given to one heap, once, and used by nothing else.
///     let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENAS))[cpu].0 };
///     unsafe { HEAP.add_memory(cpu, arena.as_mut_ptr(), arena.len()) }.unwrap();
/// }
/// let block = HEAP.allocate(Layout::new::<[u64; 4]>()).unwrap();
/// // SAFETY: a live block of this heap, no longer used.
/// unsafe { HEAP.free(block) }.unwrap();
/// assert_eq!(HEAP.cpu_counters(0).frees, 1);
/// HEAP.check().unwrap();
/// ```
pub struct PerCpuHeap<const CPUS: usize, P: FitPolicy = GoodFit, L: RawLock = SpinLock> {
    cpus: [PerCpu<P, L>; CPUS],
    owners: RegionOwners,
    cpu_id: fn() -> usize,
    /// Heaps in use: `1..=CPUS` (see the module docs).
    count: AtomicUsize,
}

impl<const CPUS: usize, P: FitPolicy, L: RawLock> PerCpuHeap<CPUS, P, L> {
    /// `CPUS` empty heaps, all in use; `cpu_id` says which CPU runs the
    /// caller (an index below the heaps in use; a larger one is taken
    /// modulo their count). It must not allocate, and should be cheap:
    /// every call asks it.
    pub const fn new(cpu_id: fn() -> usize) -> Self {
        assert!(CPUS > 0, "a PerCpuHeap needs at least one CPU");
        PerCpuHeap {
            cpus: [const { PerCpu::new() }; CPUS],
            owners: RegionOwners::new(),
            cpu_id,
            count: AtomicUsize::new(CPUS),
        }
    }

    /// Heaps in use (`CPUS` unless [`PerCpuHeap::set_cpu_count`] said
    /// otherwise).
    #[inline]
    pub fn cpu_count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Uses the heaps of CPUs `0..n` only (`n` clamped to `1..=CPUS`):
    /// allocation chooses among them, CPU ids are taken modulo `n`, and
    /// the walks over all heaps visit them only. Call it before the heaps
    /// are used (a kernel, once it knows how many CPUs it has), or to
    /// raise the count later (a CPU brought up, a spare heap put to use):
    /// a heap past the count keeps its blocks freeable (the region table
    /// finds their heap), but serves no allocation and is not visited.
    pub fn set_cpu_count(&self, n: usize) {
        self.count.store(n.clamp(1, CPUS), Ordering::Release);
    }

    /// The heap index `i` stands for: itself below the count, else modulo.
    #[inline]
    fn index(&self, i: usize) -> usize {
        let count = self.cpu_count();
        if i < count {
            i
        } else {
            i % count
        }
    }

    /// The index of the heap of the running CPU.
    #[inline]
    fn current(&self) -> usize {
        self.index((self.cpu_id)())
    }

    /// The heaps in use that are not abandoned, with their index.
    fn live(&self) -> impl Iterator<Item = (usize, &PerCpu<P, L>)> {
        self.cpus[..self.cpu_count()]
            .iter()
            .enumerate()
            .filter(|(_, cpu)| !cpu.is_abandoned())
    }

    /// The heap the region table says holds the region at address
    /// `region` (a region address as [`raw::owner_region`] reads it from a
    /// block's owner word), without a lock; `None` if the table does not
    /// know it (see the module docs for which regions it knows). An answer
    /// is only as good as the word it came from: the heap it names still
    /// validates any block it is given.
    #[inline]
    pub fn heap_of_region(&self, region: usize) -> Option<usize> {
        self.owners.heap_of(region)
    }

    /// Whether the region table knows `region` as a region of one of the
    /// heaps: [`PerCpuHeap::heap_of_region`]`(region).is_some()`, a little
    /// cheaper (a filter on a fast path: "is this owner word one of ours?").
    #[inline]
    pub fn knows_region(&self, region: usize) -> bool {
        self.owners.knows(region)
    }

    /// Records the regions of heap `i` the table has not seen yet.
    /// Called with that heap locked (`heap` is its guarded value).
    fn record_regions(&self, i: usize, heap: &Heap<P>) {
        let known = &self.cpus[i].recorded_regions;
        let regions = heap.region_count();
        if known.load(Ordering::Relaxed) != regions {
            for id in heap.region_ids() {
                self.owners.record(id.addr(), i);
            }
            known.store(regions, Ordering::Relaxed);
        }
    }

    /// The heap of CPU `cpu` (modulo `CPUS`), for what concerns one heap:
    /// its statistics, check or dump, or adding memory to it. Not for an
    /// abandoned heap ([`PerCpuHeap::is_abandoned`]), whose structure may
    /// be half changed.
    pub fn heap(&self, cpu: usize) -> &LockedHeap<Heap<P>, L> {
        &self.cpus[cpu % CPUS].heap
    }

    /// Gives `[start, start + size)` to the heap of CPU `cpu`
    /// ([`Heap::add_memory`]).
    ///
    /// # Safety
    /// As for [`Heap::add_memory`]; the range is given to this one heap.
    pub unsafe fn add_memory(
        &self,
        cpu: usize,
        start: *mut u8,
        size: usize,
    ) -> Result<(), HeapError> {
        let i = cpu % CPUS;
        let mut heap = self.cpus[i].heap.lock();
        // SAFETY: forwarded from the caller.
        unsafe { heap.add_memory(start, size) }?;
        self.record_regions(i, &heap);
        Ok(())
    }

    /// Sets the growth hook of every heap: a heap that cannot serve its
    /// CPU asks it for memory.
    pub fn set_memory_source(&self, source: &'static dyn MemorySource) {
        for cpu in &self.cpus {
            cpu.heap.set_memory_source(source);
        }
    }

    /// Sets the handler for misuses detected on the `GlobalAlloc` path,
    /// for every heap.
    pub fn set_report_handler(&self, handler: ReportHandler) {
        for cpu in &self.cpus {
            cpu.heap.set_report_handler(handler);
        }
    }

    /// Allocates a block for `layout` from the running CPU's heap, another
    /// heap if that one is busy or full, else the running CPU's heap once
    /// it grew. Damage met on the way is reported and avoided.
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        self.serve(self.current(), layout, true, |heap| heap.allocate(layout))
            .map(|(block, _)| block)
    }

    /// Like [`PerCpuHeap::allocate`], with the block zeroed.
    pub fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        self.serve(self.current(), layout, true, |heap| {
            heap.allocate_zeroed(layout)
        })
        .map(|(block, _)| block)
    }

    /// Allocates without ever waiting for a lock: from the first heap,
    /// starting with the running CPU's, that is not locked and has room;
    /// `None` if there is none (no heap grows). The path for an interrupt
    /// handler behind a [`SpinLock`].
    pub fn try_allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.serve(self.current(), layout, false, |heap| heap.allocate(layout))
            .ok()
            .map(|(block, _)| block)
    }

    /// Runs `op` on a heap chosen as [`PerCpuHeap::allocate`] chooses, but
    /// starting from heap `start` (modulo the heaps in use) instead of the
    /// running CPU's: `start` if its lock is free, else any other heap
    /// whose lock is free, else `start`, waiting for its lock and growing
    /// it through the growth hook. Returns what `op` returned and the heap
    /// that ran it, so that a caller that keeps its own hint (a thread in a
    /// process, which the scheduler moves between CPUs) can move it there.
    ///
    /// `op` runs under that heap's lock and may do several things at once:
    /// allocate a batch of blocks, or note what the heap's
    /// [`Heap::in_use_bytes`] changed by. It returns
    /// `Err(HeapError::OutOfMemory { .. })` when the heap cannot serve it
    /// (the next heap is then tried, or the heap grown); `layout` is the
    /// largest block it needs, which sizes the growth. A misuse it returns
    /// (damage met, now quarantined) is reported and the next heap tried;
    /// any other error is returned at once. Counted as one allocation of
    /// the running CPU.
    pub fn with_heap<T>(
        &self,
        start: usize,
        layout: Layout,
        op: impl FnMut(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Result<(T, usize), HeapError> {
        self.serve(self.index(start), layout, true, op)
    }

    /// Runs `op` on a heap: `home`, then any other that is not locked;
    /// then, if `wait`, `home` with growth. Skips abandoned heaps (an
    /// abandoned `home` gives its turn to the next live heap).
    fn serve<T>(
        &self,
        home: usize,
        layout: Layout,
        wait: bool,
        mut op: impl FnMut(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Result<(T, usize), HeapError> {
        let count = self.cpu_count();
        let mut failure = HeapError::OutOfMemory {
            size: layout.size(),
            align: layout.align(),
        };
        let mut first_live = None;
        for k in 0..count {
            let i = if home + k < count {
                home + k
            } else {
                home + k - count
            };
            if self.cpus[i].is_abandoned() {
                continue;
            }
            first_live = first_live.or(Some(i));
            let Some(mut heap) = self.cpus[i].heap.try_lock() else {
                continue;
            };
            match op(&mut heap) {
                Ok(value) => {
                    // A growth that `op` never saw may have made a region
                    // (see `with_growth`): known before the lock goes.
                    self.record_regions(i, &heap);
                    drop(heap);
                    self.count_allocation();
                    return Ok((value, i));
                }
                Err(HeapError::OutOfMemory { .. }) => {}
                Err(error) => {
                    drop(heap);
                    if !error.is_misuse() {
                        // A request no heap can serve (size, alignment).
                        return Err(error);
                    }
                    // Damage, now quarantined: report it, go on.
                    self.cpus[i].heap.report(&error);
                    failure = error;
                }
            }
        }
        let Some(grower) = first_live.filter(|_| wait) else {
            return Err(failure);
        };
        let value = self.cpus[grower]
            .heap
            .with_growth(layout, |heap| {
                let value = op(heap);
                if value.is_ok() {
                    // Memory the growth added may be a new region: known
                    // to the table before a block of it leaves the lock.
                    self.record_regions(grower, heap);
                }
                value
            })
            .ok_or(failure)?;
        self.count_allocation();
        Ok((value, grower))
    }

    fn count_allocation(&self) {
        self.count(self.current(), |c| &c.allocations);
    }

    fn count(&self, cpu: usize, counter: impl Fn(&PerCpu<P, L>) -> &AtomicUsize) {
        counter(&self.cpus[cpu]).fetch_add(1, Ordering::Relaxed);
    }

    /// The heap the owner word before `ptr` names, if the region table
    /// knows that region. Reads nothing unless `ptr` is aligned as a
    /// block's data is.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`].
    #[inline]
    unsafe fn owner_hint(&self, ptr: NonNull<u8>) -> Option<usize> {
        if !ptr.as_ptr().addr().is_multiple_of(crate::GRANULE) {
            return None;
        }
        // SAFETY: the caller guarantees the word is readable; `ptr` is
        // aligned; the value is only a hint, validated under the lock of
        // the heap it names.
        let word = unsafe { raw::owner_word(ptr.as_ptr()) };
        self.owners.heap_of(raw::owner_region(word))
    }

    /// Frees the block at `ptr`, from any CPU, in the heap that owns it;
    /// returns the bytes it occupied ([`Heap::free`]). Fails, changing
    /// nothing, with the error the owning heap gives (`DoubleFree`,
    /// `NotBlockStart`, `Corrupted`), or `NotFromHeap` if no heap holds it.
    /// A block of an abandoned heap is left as it is: `Ok(0)`.
    ///
    /// # Safety
    /// If `ptr` is a live block of this heap, nothing uses it any more.
    /// Otherwise (a misuse to be reported), the `usize` [`raw::OWNER_OFFSET`]
    /// bytes before `ptr` must be readable, as they are before any pointer
    /// another allocator handed out: a free reads that word first.
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<usize, HeapError> {
        // SAFETY: forwarded from the caller.
        Ok(unsafe { self.release(ptr, true, |heap| heap.free(ptr)) }?.unwrap_or(0))
    }

    /// [`PerCpuHeap::free`] that never waits for a lock: `None` if the
    /// owning heap is locked (the block is untouched; free it later).
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`].
    pub unsafe fn try_free(&self, ptr: NonNull<u8>) -> Option<Result<usize, HeapError>> {
        // SAFETY: forwarded from the caller.
        match unsafe { self.locate(ptr, false) } {
            Ok(Located::Held(owner, mut heap)) => {
                // SAFETY: forwarded from the caller.
                let freed = unsafe { heap.free(ptr) };
                drop(heap);
                if freed.is_ok() {
                    self.count_frees(owner, 1);
                }
                Some(freed)
            }
            Ok(Located::Busy) => None,
            Ok(Located::Abandoned) => Some(Ok(0)),
            Err(error) => Some(Err(error)),
        }
    }

    /// Frees every pointer `next` yields, each in the heap that owns it,
    /// holding an owner's lock across a run of consecutive blocks of that
    /// owner (one lock for a batch of one heap's blocks, as a cache or a
    /// queue of freed blocks gives back). Returns the bytes the freed
    /// blocks occupied and the outcome: it stops at the first error, which
    /// [`PerCpuHeap::free`] would give for that pointer (the blocks before
    /// it are freed and counted in the bytes, those after it are not
    /// taken from `next`). Blocks of an abandoned heap are left as they are.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`], for every pointer.
    pub unsafe fn free_all(
        &self,
        mut next: impl FnMut() -> Option<NonNull<u8>>,
    ) -> (usize, Result<(), HeapError>) {
        let mut held: Option<(usize, LockGuard<'_, Heap<P>, L>)> = None;
        let (mut bytes, mut run) = (0, 0);
        let mut result = Ok(());
        while let Some(ptr) = next() {
            if let Some((owner, heap)) = held.as_mut() {
                // SAFETY: forwarded from the caller.
                if unsafe { self.owner_hint(ptr) } == Some(*owner) {
                    // SAFETY: forwarded from the caller.
                    match unsafe { heap.free(ptr) } {
                        Ok(size) => {
                            bytes += size;
                            run += 1;
                            continue;
                        }
                        // Not in this heap's memory (a forged owner
                        // word): found below as `free` finds it.
                        Err(HeapError::NotFromHeap { .. }) => {}
                        Err(error) => {
                            result = Err(error);
                            break;
                        }
                    }
                }
            }
            if let Some((owner, heap)) = held.take() {
                drop(heap);
                self.count_frees(owner, core::mem::take(&mut run));
            }
            // SAFETY: forwarded from the caller.
            match unsafe { self.locate(ptr, true) } {
                Ok(Located::Held(owner, mut heap)) => {
                    // SAFETY: forwarded from the caller.
                    match unsafe { heap.free(ptr) } {
                        Ok(size) => {
                            bytes += size;
                            run = 1;
                            held = Some((owner, heap));
                        }
                        Err(error) => {
                            result = Err(error);
                            break;
                        }
                    }
                }
                Ok(Located::Busy | Located::Abandoned) => {}
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        if let Some((owner, heap)) = held {
            drop(heap);
            self.count_frees(owner, run);
        }
        (bytes, result)
    }

    /// Runs `op` on the heap that owns the block at `ptr`, under its lock
    /// (an in-place resize, a usable size, with whatever accounting the
    /// caller keeps around it); `Ok(None)` if that heap is abandoned (`op`
    /// does not run), `NotFromHeap` if no heap holds the address. Found as
    /// [`PerCpuHeap::free`] finds it, so `op` gets the precise error of the
    /// owning heap for a pointer that is not a used block; not counted as
    /// a free.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`], except that the block stays live: `op`
    /// is what may change it.
    pub unsafe fn with_owner<T>(
        &self,
        ptr: NonNull<u8>,
        op: impl FnOnce(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Result<Option<T>, HeapError> {
        // SAFETY: forwarded from the caller.
        match unsafe { self.locate(ptr, true) }? {
            Located::Held(_, mut heap) => op(&mut heap).map(Some),
            Located::Busy | Located::Abandoned => Ok(None),
        }
    }

    /// Runs `op` (a free of `ptr`) on the heap that owns `ptr` and counts
    /// it; `Ok(None)` when `wait` is false and a heap it needs is locked,
    /// or when the owning heap is abandoned (`op` does not run).
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`]; `op` frees `ptr` and nothing else.
    #[inline]
    unsafe fn release<T>(
        &self,
        ptr: NonNull<u8>,
        wait: bool,
        op: impl FnOnce(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Result<Option<T>, HeapError> {
        // SAFETY: forwarded from the caller.
        match unsafe { self.locate(ptr, wait) }? {
            Located::Held(owner, mut heap) => {
                let value = op(&mut heap)?;
                drop(heap);
                self.count_frees(owner, 1);
                Ok(Some(value))
            }
            Located::Busy | Located::Abandoned => Ok(None),
        }
    }

    /// The heap that owns `ptr`, locked (waiting if `wait`): the one the
    /// region table names if its memory holds `ptr`, else the one asking
    /// every heap finds (see [`PerCpuHeap::ask_every_heap`]). `NotFromHeap`
    /// if no heap's memory holds `ptr`.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`].
    #[inline]
    unsafe fn locate(&self, ptr: NonNull<u8>, wait: bool) -> Result<Located<'_, P, L>, HeapError> {
        // SAFETY: forwarded from the caller.
        if let Some(owner) = unsafe { self.owner_hint(ptr) } {
            if self.cpus[owner].is_abandoned() {
                return Ok(Located::Abandoned);
            }
            let Some(heap) = self.lock_heap(owner, wait) else {
                return Ok(Located::Busy);
            };
            if heap.spans(ptr.as_ptr().addr()) {
                return Ok(Located::Held(owner, heap));
            }
        }
        // SAFETY: forwarded from the caller.
        let heap = match unsafe { self.ask_every_heap(ptr, wait) } {
            Found::Owner(i) => i,
            // That heap refuses `ptr`: the caller's operation returns its
            // precise error (and quarantines damage), changing nothing else.
            Found::Refused(i) => i,
            Found::Nowhere => {
                return Err(HeapError::NotFromHeap {
                    addr: ptr.as_ptr().addr(),
                })
            }
            Found::Busy => return Ok(Located::Busy),
        };
        Ok(match self.lock_heap(heap, wait) {
            Some(locked) => Located::Held(heap, locked),
            None => Located::Busy,
        })
    }

    /// Locks heap `i`, waiting if `wait`, else only if it is free.
    fn lock_heap(&self, i: usize, wait: bool) -> Option<LockGuard<'_, Heap<P>, L>> {
        let heap = &self.cpus[i].heap;
        if wait {
            Some(heap.lock())
        } else {
            heap.try_lock()
        }
    }

    /// The slow path of finding a block's heap: asks each heap in use that
    /// is not abandoned whether it holds `ptr` as a used block, and records
    /// the region of the one that does. If none does, the first heap whose
    /// memory holds the address is the one to give the precise error.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`].
    #[cold]
    unsafe fn ask_every_heap(&self, ptr: NonNull<u8>, wait: bool) -> Found {
        let mut refused = None;
        for (i, _) in self.live() {
            let Some(heap) = self.lock_heap(i, wait) else {
                return Found::Busy;
            };
            // SAFETY: `usable_size` reads only memory of the heap's own
            // regions, whatever `ptr` is.
            match unsafe { heap.usable_size(ptr) } {
                Ok(_) => {
                    // SAFETY: a used block of this heap, validated under
                    // the lock still held: its owner word names its region.
                    let word = unsafe { raw::owner_word(ptr.as_ptr()) };
                    drop(heap);
                    self.owners.record(raw::owner_region(word), i);
                    return Found::Owner(i);
                }
                Err(HeapError::NotFromHeap { .. }) => {}
                Err(_) => refused = refused.or(Some(i)),
            }
        }
        refused.map_or(Found::Nowhere, Found::Refused)
    }

    /// Abandons, for good, every heap whose lock is held now, and releases
    /// that lock ([`RawLock::force_unlock`]); returns how many heaps it
    /// abandoned. Meant for a process's child just forked, in which the
    /// threads that held heap locks do not exist: what they were changing
    /// may be half changed, so such a heap is never used again (see the
    /// module docs for what that means for its blocks); the heaps whose
    /// lock is free are consistent and stay in use. Each heap's hook lock
    /// (report handler, growth hook), if held, is released too: allocation
    /// only reads the hooks, which their setters write at set-up.
    ///
    /// # Safety
    /// No other thread or CPU uses this heap during the call or will ever
    /// again run code that holds one of its locks (the holders of the held
    /// locks will never run again, as in a child after `fork`, which has
    /// one thread), and the caller itself holds none of its locks and is
    /// not inside a call on it.
    pub unsafe fn abandon_locked_heaps(&self) -> usize {
        let mut abandoned = 0;
        for cpu in &self.cpus {
            // SAFETY: no holder will run again (caller).
            unsafe { cpu.heap.release_hooks_of_vanished_holder() };
            if cpu.is_abandoned() || !cpu.heap.is_locked() {
                continue;
            }
            cpu.abandoned.store(true, Ordering::Relaxed);
            // SAFETY: the lock is held by a holder that will never run
            // again (caller); no code takes an abandoned heap's lock.
            unsafe { cpu.heap.force_unlock() };
            abandoned += 1;
        }
        // What the heaps whose lock was free hold was written before their
        // lock was released (release), so before this point (acquire).
        core::sync::atomic::fence(Ordering::Acquire);
        abandoned
    }

    /// Whether heap `i` (modulo `CPUS`) was abandoned
    /// ([`PerCpuHeap::abandon_locked_heaps`]).
    pub fn is_abandoned(&self, i: usize) -> bool {
        self.cpus[i % CPUS].is_abandoned()
    }

    /// Counts `n` frees of blocks of heap `owner` on the running CPU.
    fn count_frees(&self, owner: usize, n: usize) {
        let cpu = &self.cpus[self.current()];
        cpu.frees.fetch_add(n, Ordering::Relaxed);
        if !core::ptr::eq(cpu, &self.cpus[owner]) {
            cpu.remote_frees.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The calls made on CPU `cpu` (modulo `CPUS`) so far.
    pub fn cpu_counters(&self, cpu: usize) -> CpuCounters {
        let c = &self.cpus[cpu % CPUS];
        CpuCounters {
            allocations: c.allocations.load(Ordering::Relaxed) as u64,
            frees: c.frees.load(Ordering::Relaxed) as u64,
            remote_frees: c.remote_frees.load(Ordering::Relaxed) as u64,
        }
    }

    /// Statistics of every heap added up (each heap locked in turn; see
    /// [`Stats::accumulate`] for the peak).
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for (_, cpu) in self.live() {
            total.accumulate(&cpu.heap.stats());
        }
        total
    }

    /// Walks every heap ([`Heap::check`]); the first inconsistency.
    pub fn check(&self) -> Result<(), HeapError> {
        self.live().try_for_each(|(_, cpu)| cpu.heap.check())
    }

    /// Gives every heap's cached blocks back to its free memory.
    pub fn flush(&self) -> Result<(), HeapError> {
        self.live().try_for_each(|(_, cpu)| cpu.heap.flush())
    }

    /// Gives every chunk without a live block back to the memory source
    /// ([`LockedHeap::trim`] on each heap); the bytes given back.
    pub fn trim(&self) -> Result<usize, HeapError> {
        self.live()
            .try_fold(0, |total, (_, cpu)| Ok(total + cpu.heap.trim()?))
    }

    /// Writes each heap's block list, headed `heap N:` (see
    /// [`LockedHeap::dump`] for the buffer each heap is rendered into).
    pub fn dump(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for (i, cpu) in self.live() {
            writeln!(out, "heap {i}:")?;
            cpu.heap.dump(out)?;
        }
        Ok(())
    }

    /// Frees a block allocated with `layout`; a misuse goes to the report
    /// handler.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`].
    pub(crate) unsafe fn deallocate_reporting(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        let result = unsafe { self.release(ptr, true, |heap| heap.deallocate(ptr, layout)) };
        // `Ok(None)`: a block of an abandoned heap, left alone.
        let Err(error) = result else {
            return;
        };
        self.cpus[self.current()].heap.report(&error);
    }

    /// Resizes a block in the heap that owns it (moving it within that
    /// heap if it cannot grow in place): `GlobalAlloc::realloc` of that
    /// heap. Null, and a report, if no heap holds the block.
    ///
    /// # Safety
    /// As for `GlobalAlloc::realloc`.
    pub(crate) unsafe fn realloc_reporting(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> *mut u8 {
        let addr = ptr.as_ptr().addr();
        // SAFETY: forwarded from the caller.
        let hinted = unsafe { self.owner_hint(ptr) }
            .filter(|&i| self.cpus[i].is_abandoned() || self.cpus[i].heap.lock().spans(addr));
        // SAFETY: forwarded from the caller.
        let heap =
            match hinted.map_or_else(|| unsafe { self.ask_every_heap(ptr, true) }, Found::Owner) {
                Found::Owner(i) | Found::Refused(i) => i,
                Found::Nowhere | Found::Busy => {
                    self.cpus[self.current()]
                        .heap
                        .report(&HeapError::NotFromHeap { addr });
                    return null_mut();
                }
            };
        if self.cpus[heap].is_abandoned() {
            // The block stays where it is (leaked): a copy elsewhere.
            let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                return null_mut();
            };
            let Ok(moved) = self.allocate(new_layout) else {
                return null_mut();
            };
            // SAFETY: the caller's block holds `layout.size()` bytes; the
            // new one `new_size`; they are distinct.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    ptr.as_ptr(),
                    moved.as_ptr(),
                    layout.size().min(new_size),
                )
            };
            return moved.as_ptr();
        }
        // SAFETY: forwarded from the caller; that heap validates the block.
        unsafe { GlobalAlloc::realloc(&self.cpus[heap].heap, ptr.as_ptr(), layout, new_size) }
    }
}

/// What asking every heap about a pointer found.
enum Found {
    /// This heap holds it as a used block.
    Owner(usize),
    /// No heap holds it as a used block; this heap's memory holds the
    /// address (an interior pointer, a double free, damage).
    Refused(usize),
    /// No heap's memory holds the address.
    Nowhere,
    /// A heap was locked and the caller would not wait.
    Busy,
}

// SAFETY: blocks come from the heaps, which hand out aligned, disjoint
// blocks of at least the layout's size; a block is freed or resized only
// in the heap that owns it.
unsafe impl<const CPUS: usize, P: FitPolicy, L: RawLock> GlobalAlloc for PerCpuHeap<CPUS, P, L> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate(layout).map_or(null_mut(), NonNull::as_ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.allocate_zeroed(layout)
            .map_or(null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(ptr) = NonNull::new(ptr) else {
            return;
        };
        // SAFETY: the GlobalAlloc caller owns the block (so its header is
        // readable) and stops using it.
        unsafe { self.deallocate_reporting(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(ptr) = NonNull::new(ptr) else {
            return null_mut();
        };
        // SAFETY: the GlobalAlloc caller owns the block.
        unsafe { self.realloc_reporting(ptr, layout, new_size) }
    }
}

impl<const CPUS: usize, P: FitPolicy, L: RawLock> fmt::Debug for PerCpuHeap<CPUS, P, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// The heaps in use that are not abandoned (an abandoned heap's
        /// memory is never read again).
        struct Live<'a, const CPUS: usize, P: FitPolicy, L: RawLock>(&'a PerCpuHeap<CPUS, P, L>);

        impl<const CPUS: usize, P: FitPolicy, L: RawLock> fmt::Debug for Live<'_, CPUS, P, L> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.live().map(|(_, cpu)| &cpu.heap))
                    .finish()
            }
        }

        f.debug_struct("PerCpuHeap")
            .field("heaps", &Live(self))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table under load: regions that share home slots are found by
    /// probing, with their own heap; past `OWNER_LIMIT` nothing more is
    /// recorded (and nothing recorded is lost); addresses that are not
    /// regions, and the two marker values, are never known.
    #[test]
    fn the_region_table_probes_past_shared_slots_and_stops_at_its_limit() {
        let table = RegionOwners::new();
        // Eight page-aligned regions that share one home slot, then
        // regions 1 MiB apart up to the limit (32-bit addresses).
        let base = 0x1000_0000usize;
        let home = RegionOwners::home_slot(base);
        let mut regions: std::vec::Vec<usize> = (0..1 << 20)
            .map(|k| base + k * 4096)
            .filter(|&r| RegionOwners::home_slot(r) == home)
            .take(8)
            .collect();
        assert_eq!(regions.len(), 8);
        regions.extend((1..=OWNER_LIMIT + 1 - 8).map(|i| 0x4000_0000 + i * (1 << 20)));
        let region = |i: usize| regions[i];
        for i in 0..OWNER_LIMIT {
            table.record(region(i), i % 7);
            table.record(region(i), 99); // a second record changes nothing
        }
        for i in 0..OWNER_LIMIT {
            assert_eq!(table.heap_of(region(i)), Some(i % 7));
            assert!(table.knows(region(i)));
        }
        table.record(region(OWNER_LIMIT), 1);
        assert_eq!(
            table.heap_of(region(OWNER_LIMIT)),
            None,
            "the table is full"
        );
        assert!(!table.knows(region(OWNER_LIMIT)));
        for other in [EMPTY, CLAIMED, region(0) + 16, region(1) - 4096] {
            assert_eq!(table.heap_of(other), None);
            assert!(!table.knows(other));
        }
    }
}
