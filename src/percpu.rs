//! `PerCpuHeap`: one region-heap [`Heap`] per CPU, each behind its own
//! lock, so that CPUs allocating at once do not wait for each other.
//!
//! **Allocation** goes to the heap of the CPU that asks (the kernel
//! supplies the function that says which CPU runs, `cpu_id`). If that
//! heap has no room and a growth hook ([`MemorySource`]) is set, the heap
//! grows, so that each CPU keeps allocating from memory of its own. If
//! its lock is held (an allocation from another CPU that fell back to it,
//! a free of one of its blocks from another CPU), or it has no room and
//! cannot grow, the other heaps are tried without waiting; if none
//! serves, the caller waits for its own heap.
//!
//! **A free** goes to the heap that owns the block, whichever CPU frees
//! it. The block's header names its region (the owner word, read with
//! [`raw::owner_word`]); a table of region addresses, `owners`, says which
//! heap holds that region: an O(1) lookup without a lock. That heap checks
//! that one of its chunks holds the block, then validates the free under
//! its lock as any free is validated, so a forged or stale owner word
//! cannot steer the free: at worst it names a heap that does not hold the
//! pointer, and the free takes the slow path. The table records a region
//! when memory is added through [`PerCpuHeap::add_memory`] or the growth
//! hook; the slow path (a region added to one heap directly, through
//! [`PerCpuHeap::heap`], or a pointer that is no block of the heap)
//! asks each heap in turn whether it holds the block, records the region
//! of the one that does, and otherwise gives the precise error of the
//! heap whose memory holds the address.
//!
//! **Remote frees** (a block freed by another CPU than the one whose heap
//! owns it) take the owner's lock, one free at a time. Batching them (a
//! per-heap list the owner drains) would save lock traffic, but a block
//! waiting on such a list is neither used nor free to the heap's checks,
//! and a double free pushed twice makes the list a cycle that the owner
//! cannot detect before it follows it.
//!
//! **Interrupt handlers**: behind an [`IrqSafeLock`](crate::IrqSafeLock),
//! a maskable interrupt's handler may allocate and free as any code does.
//! Behind the default [`SpinLock`](crate::SpinLock) it may only use
//! [`PerCpuHeap::try_allocate`] and [`PerCpuHeap::try_free`], which never
//! wait for a lock (the interrupted code may hold the one it would wait
//! for, on the same CPU) and never call the report handler. Either way
//! the growth hook and the report handler run with no heap lock held but
//! interrupts as the caller had them: a growth hook that takes a lock of
//! its own must take it with interrupts off if handlers allocate.
//!
//! Invariants: a region belongs to one heap for ever (regions are never
//! removed from a heap, and a range is given to one heap only); a slot of
//! `owners` goes from empty to a region address (compare-and-swap), then
//! gets that region's heap, and never changes again; the counters of CPU
//! `c` count the calls made on CPU `c`, whichever heap served them.

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
use crate::sync::{AtomicUsize, Ordering};

/// Slots of the region table (a power of two): room for 16 CPUs' heaps
/// with their [`MAX_REGIONS`](crate::MAX_REGIONS) regions each at half
/// load. Past [`OWNER_LIMIT`] regions the table records no more, and the
/// frees of the others take the slow path.
const OWNER_SLOTS: usize = 512;

/// Regions the table records at most (half its slots, so that a lookup
/// probes a few slots).
const OWNER_LIMIT: usize = OWNER_SLOTS / 2;

/// A slot no region uses (no region lies at address 0).
const EMPTY: usize = 0;

/// A heap index not published yet (heaps are stored plus one).
const UNPUBLISHED: usize = 0;

/// Which heap holds each region: an open-addressed table of region
/// addresses, read without a lock. A slot goes from [`EMPTY`] to a region
/// address by compare-and-swap (so a region takes one slot even when two
/// CPUs record it at once: both probe from the same slot), then its heap
/// (plus one) is stored with release ordering; a reader that finds the
/// address but no heap yet treats it as a miss. Slots never change again.
struct RegionOwners {
    regions: [AtomicUsize; OWNER_SLOTS],
    heaps: [AtomicUsize; OWNER_SLOTS],
    recorded: AtomicUsize,
}

impl RegionOwners {
    const fn new() -> Self {
        RegionOwners {
            regions: [const { AtomicUsize::new(EMPTY) }; OWNER_SLOTS],
            heaps: [const { AtomicUsize::new(UNPUBLISHED) }; OWNER_SLOTS],
            recorded: AtomicUsize::new(0),
        }
    }

    /// The first slot to look at for `region` (Fibonacci hashing of the
    /// address without its always-zero low bits).
    fn home_slot(region: usize) -> usize {
        const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
        let hash = ((region >> 4) as u64).wrapping_mul(GOLDEN);
        (hash >> (64 - OWNER_SLOTS.trailing_zeros())) as usize
    }

    /// The slot that holds `region`, or the empty slot where it would go
    /// (`None` if neither is found).
    fn slot_of(&self, region: usize) -> Option<usize> {
        let mut slot = Self::home_slot(region);
        for _ in 0..OWNER_SLOTS {
            match self.regions[slot].load(Ordering::Acquire) {
                EMPTY => return Some(slot),
                found if found == region => return Some(slot),
                _ => slot = (slot + 1) % OWNER_SLOTS,
            }
        }
        None
    }

    /// The heap that holds `region`, if the table knows it.
    #[inline]
    fn heap_of(&self, region: usize) -> Option<usize> {
        if region == EMPTY {
            return None;
        }
        let slot = self.slot_of(region)?;
        match self.heaps[slot].load(Ordering::Acquire) {
            UNPUBLISHED => None,
            heap => Some(heap - 1),
        }
    }

    /// Records that `heap` holds `region` (nothing if the table knows it
    /// already or is full).
    fn record(&self, region: usize, heap: usize) {
        if region == EMPTY {
            return;
        }
        loop {
            let Some(slot) = self.slot_of(region) else {
                return;
            };
            let taken = self.regions[slot].load(Ordering::Acquire);
            if taken == region {
                // Recorded already (or being published by another CPU,
                // which stores the same heap).
                self.heaps[slot].store(heap + 1, Ordering::Release);
                return;
            }
            if self.recorded.fetch_add(1, Ordering::Relaxed) >= OWNER_LIMIT {
                self.recorded.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            let claimed = self.regions[slot].compare_exchange(
                EMPTY,
                region,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            match claimed {
                Ok(_) => {
                    self.heaps[slot].store(heap + 1, Ordering::Release);
                    return;
                }
                // Another region (or this one) took the slot first: look
                // again from the start.
                Err(_) => {
                    self.recorded.fetch_sub(1, Ordering::Relaxed);
                }
            }
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
    allocations: AtomicUsize,
    frees: AtomicUsize,
    remote_frees: AtomicUsize,
}

impl<P: FitPolicy, L: RawLock> PerCpu<P, L> {
    const fn new() -> Self {
        PerCpu {
            heap: LockedHeap::with_backend(None),
            allocations: AtomicUsize::new(0),
            frees: AtomicUsize::new(0),
            remote_frees: AtomicUsize::new(0),
        }
    }
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
}

impl<const CPUS: usize, P: FitPolicy, L: RawLock> PerCpuHeap<CPUS, P, L> {
    /// `CPUS` empty heaps; `cpu_id` says which CPU runs the caller (an
    /// index below `CPUS`; a larger one is taken modulo `CPUS`). It must
    /// not allocate, and should be cheap: every call asks it.
    pub const fn new(cpu_id: fn() -> usize) -> Self {
        assert!(CPUS > 0, "a PerCpuHeap needs at least one CPU");
        PerCpuHeap {
            cpus: [const { PerCpu::new() }; CPUS],
            owners: RegionOwners::new(),
            cpu_id,
        }
    }

    /// The index of the heap of the running CPU.
    #[inline]
    fn current(&self) -> usize {
        let cpu = (self.cpu_id)();
        debug_assert!(cpu < CPUS, "cpu_id() gave {cpu}, not below {CPUS}");
        cpu % CPUS
    }

    /// The heap of CPU `cpu` (modulo `CPUS`), for what concerns one heap:
    /// its statistics, check or dump, its hooks, or adding memory to it
    /// (memory added through it directly is found by the slow path of a
    /// free until its region is recorded; [`PerCpuHeap::add_memory`]
    /// records it at once).
    pub fn heap(&self, cpu: usize) -> &LockedHeap<Heap<P>, L> {
        &self.cpus[cpu % CPUS].heap
    }

    /// Gives `[start, start + size)` to the heap of CPU `cpu`
    /// ([`Heap::add_memory`]) and records its regions for the frees.
    ///
    /// # Safety
    /// As for [`Heap::add_memory`]; the range is given to this one heap.
    pub unsafe fn add_memory(
        &self,
        cpu: usize,
        start: *mut u8,
        size: usize,
    ) -> Result<(), HeapError> {
        let cpu = cpu % CPUS;
        let mut heap = self.cpus[cpu].heap.lock();
        // SAFETY: forwarded from the caller.
        unsafe { heap.add_memory(start, size) }?;
        self.record_regions(cpu, &heap);
        Ok(())
    }

    /// Records every region of heap `i` in the region table (called with
    /// its lock held, before the new memory is handed out).
    fn record_regions(&self, i: usize, heap: &Heap<P>) {
        for region in heap.region_ids() {
            self.owners.record(region.addr(), i);
        }
    }

    /// Sets the growth hook of every heap: a heap that cannot serve its
    /// CPU asks it for memory.
    pub fn set_memory_source(&self, source: &'static dyn MemorySource) {
        for cpu in &self.cpus {
            cpu.heap.set_memory_source(source);
        }
    }

    /// Sets the handler for misuses and damage detected on every heap's
    /// paths that cannot return an error (`GlobalAlloc`, `Allocator`),
    /// and for damage met (and avoided) by [`PerCpuHeap::allocate`].
    pub fn set_report_handler(&self, handler: ReportHandler) {
        for cpu in &self.cpus {
            cpu.heap.set_report_handler(handler);
        }
    }

    /// Allocates a block for `layout` from the running CPU's heap (grown
    /// through the growth hook if it has no room), else from another heap,
    /// else from the running CPU's heap once its lock is free. Damage met
    /// on the way is reported and avoided.
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        self.serve(layout, true, |heap| heap.allocate(layout))
    }

    /// Like [`PerCpuHeap::allocate`], with the block zeroed.
    pub fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        self.serve(layout, true, |heap| heap.allocate_zeroed(layout))
    }

    /// Allocates without ever waiting for a lock: from the first heap,
    /// starting with the running CPU's, that is not locked and has room;
    /// `None` if there is none. No heap grows and no handler runs (damage
    /// met is quarantined and counted in the heap's statistics). The path
    /// for an interrupt handler behind a [`SpinLock`].
    pub fn try_allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.serve(layout, false, |heap| heap.allocate(layout)).ok()
    }

    /// Runs `op` (an allocation) on the running CPU's heap if it is not
    /// locked; if it has no room, grows it (when `wait` and a growth hook
    /// is set); then tries the other heaps that are not locked; then, if
    /// `wait`, waits for the running CPU's heap (and grows it).
    fn serve<T>(
        &self,
        layout: Layout,
        wait: bool,
        mut op: impl FnMut(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Result<T, HeapError> {
        let home = self.current();
        let mut failure = HeapError::OutOfMemory {
            size: layout.size(),
            align: layout.align(),
        };
        let mut grown = false;
        for k in 0..CPUS {
            let i = (home + k) % CPUS;
            match self.attempt(i, wait, &mut op) {
                Attempt::Served(value) => {
                    self.count(home, |c| &c.allocations);
                    return Ok(value);
                }
                Attempt::Busy => {}
                Attempt::Full if i == home && wait && self.cpus[home].heap.has_source() => {
                    grown = true;
                    if let Some(value) = self.grow_home(home, layout, &mut op) {
                        self.count(home, |c| &c.allocations);
                        return Ok(value);
                    }
                }
                Attempt::Full => {}
                Attempt::Damaged(error) => failure = error,
                Attempt::Refused(error) => return Err(error),
            }
        }
        if !wait || grown {
            return Err(failure);
        }
        let value = self.grow_home(home, layout, op).ok_or(failure)?;
        self.count(home, |c| &c.allocations);
        Ok(value)
    }

    /// Runs `op` on heap `i` if its lock is free. Damage met is reported
    /// if `report` (the heap quarantined it either way).
    fn attempt<T>(
        &self,
        i: usize,
        report: bool,
        op: &mut impl FnMut(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Attempt<T> {
        let Some(mut heap) = self.cpus[i].heap.try_lock() else {
            return Attempt::Busy;
        };
        let result = op(&mut heap);
        drop(heap);
        match result {
            Ok(value) => Attempt::Served(value),
            Err(HeapError::OutOfMemory { .. }) => Attempt::Full,
            Err(error) if error.is_misuse() => {
                if report {
                    self.cpus[i].heap.report(&error);
                }
                Attempt::Damaged(error)
            }
            // A request no heap can serve (size, alignment).
            Err(error) => Attempt::Refused(error),
        }
    }

    /// Runs `op` on heap `home`, waiting for its lock and growing it
    /// through the growth hook; records the regions growth adds.
    fn grow_home<T>(
        &self,
        home: usize,
        layout: Layout,
        op: impl FnMut(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Option<T> {
        self.cpus[home]
            .heap
            .with_growth_then(layout, op, |heap| self.record_regions(home, heap))
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
        // SAFETY: the caller guarantees the word is readable and not
        // written meanwhile; `ptr` is aligned; the value is only a hint,
        // checked under the lock of the heap it names.
        let word = unsafe { raw::owner_word(ptr.as_ptr()) };
        self.owners.heap_of(raw::owner_region(word))
    }

    /// Frees the block at `ptr`, from any CPU, in the heap that owns it;
    /// returns the bytes it occupied ([`Heap::free`]). Fails, changing
    /// nothing, with the error the heap whose memory holds `ptr` gives
    /// (`DoubleFree`, `NotBlockStart`, `Corrupted`), or `NotFromHeap` if
    /// no heap's memory holds it.
    ///
    /// # Safety
    /// If `ptr` is a live block of this heap, nothing uses it any more.
    /// Otherwise (a misuse to be reported), the `usize`
    /// [`raw::OWNER_OFFSET`] bytes before `ptr` must be readable and not
    /// written by another thread meanwhile, as they are before a pointer
    /// another allocator handed out: a free reads that word first, without
    /// a lock (as glibc's `free` reads a chunk header it cannot vouch
    /// for). A double free that races with another CPU reusing the block
    /// breaks this.
    pub unsafe fn free(&self, ptr: NonNull<u8>) -> Result<usize, HeapError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.release(ptr, true, |heap| heap.free(ptr)) }?.ok_or(HeapError::NotFromHeap {
            addr: ptr.as_ptr().addr(),
        })
    }

    /// [`PerCpuHeap::free`] that never waits for a lock: `None` if the
    /// owning heap is locked, or if the block's region is not in the
    /// region table and a heap the slow path must ask is locked (the block
    /// is untouched; free it later).
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`].
    pub unsafe fn try_free(&self, ptr: NonNull<u8>) -> Option<Result<usize, HeapError>> {
        // SAFETY: forwarded from the caller.
        unsafe { self.release(ptr, false, |heap| heap.free(ptr)) }.transpose()
    }

    /// Runs `op` (a free of `ptr`) on the heap that owns `ptr` and counts
    /// it; `Ok(None)` when `wait` is false and a heap it needs is locked.
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
        let Some((heap, result)) = (unsafe { self.on_owner(ptr, wait, op) })? else {
            return Ok(None);
        };
        let value = result?;
        self.count_free(heap);
        Ok(Some(value))
    }

    /// Runs `f` under the lock of the heap `ptr` belongs to: the heap the
    /// region table names, if one of its chunks holds the block (the fast
    /// path: one lookup, one lock); else the slow path's answer, the heap
    /// that holds the block or, failing that, the heap whose memory holds
    /// the address (which refuses `ptr` with its precise error, and
    /// quarantines damage). Returns that heap and what `f` returned;
    /// `Ok(None)` when `wait` is false and a heap it needs is locked;
    /// `NotFromHeap` when no heap's memory holds `ptr`.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`].
    #[inline]
    unsafe fn on_owner<R>(
        &self,
        ptr: NonNull<u8>,
        wait: bool,
        f: impl FnOnce(&mut Heap<P>) -> R,
    ) -> Result<Option<(usize, R)>, HeapError> {
        // SAFETY: forwarded from the caller.
        if let Some(owner) = unsafe { self.owner_hint(ptr) } {
            let Some(mut heap) = self.lock_heap(owner, wait) else {
                return Ok(None);
            };
            if heap.holds_block_at(ptr.as_ptr().addr()) {
                return Ok(Some((owner, f(&mut heap))));
            }
        }
        // SAFETY: forwarded from the caller.
        let heap = match unsafe { self.ask_every_heap(ptr, wait) } {
            Found::Owner(i) | Found::Refused(i) => i,
            Found::Nowhere => {
                return Err(HeapError::NotFromHeap {
                    addr: ptr.as_ptr().addr(),
                })
            }
            Found::Busy => return Ok(None),
        };
        let Some(mut locked) = self.lock_heap(heap, wait) else {
            return Ok(None);
        };
        Ok(Some((heap, f(&mut locked))))
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

    /// The slow path of finding a block's heap: asks each heap whether it
    /// holds `ptr` as a used block, and records the region of the one that
    /// does. If none does, the heap whose memory (a chunk or a region's
    /// control structure) holds the address is the one to give the precise
    /// error.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`].
    #[cold]
    unsafe fn ask_every_heap(&self, ptr: NonNull<u8>, wait: bool) -> Found {
        let addr = ptr.as_ptr().addr();
        let mut refused = None;
        for i in 0..CPUS {
            let Some(heap) = self.lock_heap(i, wait) else {
                return Found::Busy;
            };
            // SAFETY: `usable_size` reports an invalid pointer without
            // dereferencing it outside the heap's own memory.
            if unsafe { heap.usable_size(ptr) }.is_ok() {
                // SAFETY: a used block of this heap, validated under the
                // lock still held: its owner word names its region.
                let word = unsafe { raw::owner_word(ptr.as_ptr()) };
                self.owners.record(raw::owner_region(word), i);
                return Found::Owner(i);
            }
            if refused.is_none() && heap.holds(addr) {
                refused = Some(i);
            }
        }
        refused.map_or(Found::Nowhere, Found::Refused)
    }

    fn count_free(&self, owner: usize) {
        let cpu = self.current();
        self.count(cpu, |c| &c.frees);
        if owner != cpu {
            self.count(cpu, |c| &c.remote_frees);
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
        for cpu in &self.cpus {
            total.accumulate(&cpu.heap.stats());
        }
        total
    }

    /// Walks every heap ([`Heap::check`]); the first inconsistency.
    pub fn check(&self) -> Result<(), HeapError> {
        self.cpus.iter().try_for_each(|cpu| cpu.heap.check())
    }

    /// Gives every heap's cached blocks back to its free memory.
    pub fn flush(&self) -> Result<(), HeapError> {
        self.cpus.iter().try_for_each(|cpu| cpu.heap.flush())
    }

    /// Gives every chunk without a live block back to the memory source
    /// ([`LockedHeap::trim`] on each heap); the bytes given back.
    pub fn trim(&self) -> Result<usize, HeapError> {
        self.cpus
            .iter()
            .try_fold(0, |total, cpu| Ok(total + cpu.heap.trim()?))
    }

    /// Writes each heap's block list, headed `heap N:` (see
    /// [`LockedHeap::dump`] for the buffer each heap is rendered into).
    pub fn dump(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for (i, cpu) in self.cpus.iter().enumerate() {
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
        if let Err(error) = result {
            self.cpus[self.current()].heap.report(&error);
        }
    }

    /// Resizes a block: in the heap that owns it (in place, or moved
    /// within that heap), else, when that heap has no room, moved to a
    /// block from [`PerCpuHeap::allocate`]. Null, and a report, on misuse.
    ///
    /// # Safety
    /// As for `GlobalAlloc::realloc`.
    pub(crate) unsafe fn realloc_reporting(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> *mut u8 {
        // SAFETY: forwarded from the caller; the heap validates the block,
        // and on failure it is intact.
        let found = unsafe { self.on_owner(ptr, true, |heap| heap.realloc(ptr, layout, new_size)) };
        let (heap, error) = match found {
            Ok(Some((_, Ok(moved)))) => return moved.as_ptr(),
            Ok(Some((heap, Err(error)))) => (heap, error),
            // Only a call that does not wait gives up on a lock.
            Ok(None) => return null_mut(),
            Err(error) => (self.current(), error),
        };
        if !matches!(error, HeapError::OutOfMemory { .. }) {
            if error.is_misuse() {
                self.cpus[heap].heap.report(&error);
            }
            return null_mut();
        }
        // The owner has no room: move the block to any heap that has.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        let Ok(moved) = self.allocate(new_layout) else {
            return null_mut();
        };
        // SAFETY: both blocks are live and disjoint; the old one holds
        // `layout.size()` bytes, the new one `new_size`.
        unsafe { moved.copy_from_nonoverlapping(ptr, layout.size().min(new_size)) };
        // SAFETY: the caller's block, validated by its heap above, now
        // copied and given up.
        unsafe { self.deallocate_reporting(ptr, layout) };
        moved.as_ptr()
    }
}

/// What trying one heap for an allocation gave.
enum Attempt<T> {
    Served(T),
    /// Its lock was held.
    Busy,
    /// It has no room.
    Full,
    /// It met damage (quarantined, reported if asked).
    Damaged(HeapError),
    /// A request no heap can serve.
    Refused(HeapError),
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
        let heaps: [&LockedHeap<Heap<P>, L>; CPUS] = core::array::from_fn(|i| &self.cpus[i].heap);
        f.debug_struct("PerCpuHeap")
            .field("heaps", &heaps)
            .finish_non_exhaustive()
    }
}
