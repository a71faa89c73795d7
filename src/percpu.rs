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
//! owns it): [`PerCpuHeap::free`] takes the owner's lock and returns the
//! precise result at once. The `GlobalAlloc` and `Allocator` paths, which
//! can only report, leave the free in the owner heap's *inbox* instead (up
//! to [`INBOX_SLOTS`](crate::INBOX_SLOTS) waiting frees; past them, the
//! owner's lock): the freeing CPU touches neither the owner's lock nor its
//! metadata, and the owner's heap does every waiting free at each
//! acquisition of its lock, before anything else, so a block waiting there
//! is never handed out again first and a double free stays detectable (see
//! `inbox`). A misuse found then is reported by the owner heap's next call
//! that may report. A list threaded through the freed blocks would lose
//! that (a block pushed twice makes a cycle), and so would a buffer on the
//! freeing CPU's side (the owner could reuse a block whose first free still
//! waits, and the deferred free would then free somebody else's block).
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
//! **Heaps in use**: `CPUS` is the most heaps the type holds; how many
//! are in use is decided at run time ([`PerCpuHeap::set_cpu_count`]: a
//! kernel boots with fewer CPUs than its maximum, a process learns how
//! many it has), so that heap choice and the walks over all heaps
//! (`stats`, `check`, `dump`, `trim`, the slow path of a free) visit only
//! those. A CPU id, or a heap index a caller names, at or above the count
//! is taken modulo the count.
//!
//! **Callers with their own heap choice**: [`PerCpuHeap::with_heap`] runs
//! a closure on the heap chosen from a starting heap the caller names (a
//! per-thread hint in a process, where threads move between CPUs) and
//! says which heap ran it; the closure may allocate many blocks under the
//! one lock (a batch) or account for what it changed.
//! [`PerCpuHeap::with_owner`] and [`PerCpuHeap::free_all`] do the same for
//! the heap that owns a block, and [`PerCpuHeap::knows_region`] and
//! [`PerCpuHeap::heap_of_region`] answer, without a lock, whether an owner
//! word names a region of this heap, and which heap's.
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
//! removed from a heap, and a range is given to one heap only); a slot of
//! `owners` goes from empty to a region address (compare-and-swap), then
//! gets that region's heap, and never changes again; the counters of CPU
//! `c` count the calls made on CPU `c`, whichever heap served them;
//! `1 <= count <= CPUS`; an abandoned heap's lock is never taken again
//! and its memory is never read by this type again.

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

/// One slot of the region table: a region address and its heap (plus
/// one), side by side, so that a lookup reads one cache line.
struct OwnerSlot {
    region: AtomicUsize,
    heap: AtomicUsize,
}

/// Which heap holds each region: an open-addressed table of region
/// addresses, read without a lock. A slot goes from [`EMPTY`] to a region
/// address by compare-and-swap (so a region takes one slot even when two
/// CPUs record it at once: both probe from the same slot), then its heap
/// (plus one) is stored with release ordering; a reader that finds the
/// address but no heap yet treats it as a miss. Slots never change again.
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
                    heap: AtomicUsize::new(UNPUBLISHED),
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

    /// The slot that holds `region`, or the empty slot where it would go
    /// (`None` if neither is found).
    fn slot_of(&self, region: usize) -> Option<usize> {
        let mut slot = Self::home_slot(region);
        for _ in 0..OWNER_SLOTS {
            match self.slots[slot].region.load(Ordering::Acquire) {
                EMPTY => return Some(slot),
                found if found == region => return Some(slot),
                _ => slot = (slot + 1) % OWNER_SLOTS,
            }
        }
        None
    }

    /// The heap that holds `region`, if the table knows it. The region's
    /// home slot holds it unless another region took that slot first: the
    /// common case is two loads from one cache line, inlined; the probe
    /// past the home slot is out of line.
    #[inline]
    fn heap_of(&self, region: usize) -> Option<usize> {
        if region == EMPTY {
            return None;
        }
        let home = Self::home_slot(region);
        let slot = &self.slots[home];
        let found = slot.region.load(Ordering::Acquire);
        if found == region {
            return Self::published(slot);
        }
        if found == EMPTY {
            return None;
        }
        self.probe(region)
    }

    /// Whether a slot holds `region`: a region one of the heaps holds (a
    /// slot takes an address only when the heap that holds the region
    /// records it), its heap published or about to be. The cheaper
    /// question: one load, no heap to decode.
    #[inline]
    fn knows(&self, region: usize) -> bool {
        if region == EMPTY {
            return false;
        }
        let found = self.slots[Self::home_slot(region)]
            .region
            .load(Ordering::Acquire);
        found == region || (found != EMPTY && self.probe_slot(region))
    }

    /// The rest of [`RegionOwners::knows`]: whether a slot after the home
    /// one holds `region`.
    #[cold]
    fn probe_slot(&self, region: usize) -> bool {
        self.slot_of(region)
            .is_some_and(|slot| self.slots[slot].region.load(Ordering::Acquire) == region)
    }

    /// The heap a slot holding a region names, once published.
    #[inline]
    fn published(slot: &OwnerSlot) -> Option<usize> {
        match slot.heap.load(Ordering::Acquire) {
            UNPUBLISHED => None,
            heap => Some(heap - 1),
        }
    }

    /// The rest of [`RegionOwners::heap_of`]: the slots after the home one.
    #[cold]
    fn probe(&self, region: usize) -> Option<usize> {
        let slot = self.slot_of(region)?;
        let found = &self.slots[slot];
        if found.region.load(Ordering::Acquire) == region {
            Self::published(found)
        } else {
            None
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
            let taken = self.slots[slot].region.load(Ordering::Acquire);
            if taken == region {
                // Recorded already (or being published by another CPU,
                // which stores the same heap).
                self.slots[slot].heap.store(heap + 1, Ordering::Release);
                return;
            }
            if self.recorded.fetch_add(1, Ordering::Relaxed) >= OWNER_LIMIT {
                self.recorded.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            let claimed = self.slots[slot].region.compare_exchange(
                EMPTY,
                region,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            match claimed {
                Ok(_) => {
                    self.slots[slot].heap.store(heap + 1, Ordering::Release);
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
    /// Of those frees, blocks owned by another CPU's heap (a free left in
    /// the owner's inbox counts when it is left, even if the owner then
    /// refuses it as a misuse).
    pub remote_frees: u64,
}

/// One CPU's heap and counters, on cache lines of their own.
#[repr(align(128))]
struct PerCpu<P: FitPolicy, L: RawLock> {
    heap: LockedHeap<Heap<P>, L>,
    /// Set for good by [`PerCpuHeap::abandon_locked_heaps`].
    abandoned: AtomicBool,
    allocations: AtomicUsize,
    frees: AtomicUsize,
    remote_frees: AtomicUsize,
}

impl<P: FitPolicy, L: RawLock> PerCpu<P, L> {
    const fn new() -> Self {
        PerCpu {
            // No slabs: a free finds its heap by the owner word before the
            // pointer, read without a lock, which a slab object does not
            // own (its bytes belong to the object before it).
            heap: LockedHeap::over(Heap::with_policy().without_slabs_ever(), None),
            abandoned: AtomicBool::new(false),
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

/// Where the heap a block belongs to was found, and what came of it.
enum Owner<R> {
    /// Heap `.0`, with `.1`: its lock guard (`locate`), or what the
    /// caller's closure returned, run under that lock (`on_owner`).
    Ran(usize, R),
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
    /// caller (an index below `CPUS`; one at or above the heaps in use is
    /// taken modulo their count). It must not allocate, and should be
    /// cheap: every call asks it.
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
        let cpu = (self.cpu_id)();
        debug_assert!(cpu < CPUS, "cpu_id() gave {cpu}, not below {CPUS}");
        self.index(cpu)
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
    /// checks any block it is given.
    #[inline]
    pub fn heap_of_region(&self, region: usize) -> Option<usize> {
        self.owners.heap_of(region)
    }

    /// Whether the region table holds `region` as a region of one of the
    /// heaps (recorded, or being recorded by the heap that holds it, so
    /// that [`PerCpuHeap::heap_of_region`] may still say `None` for a
    /// moment): one load, without a lock, for a filter on a fast path ("is
    /// this owner word one of ours?").
    #[inline]
    pub fn knows_region(&self, region: usize) -> bool {
        self.owners.knows(region)
    }

    /// The heap of CPU `cpu` (modulo `CPUS`), for what concerns one heap:
    /// its statistics, check or dump, its hooks, or adding memory to it
    /// (memory added through it directly is found by the slow path of a
    /// free until its region is recorded; [`PerCpuHeap::add_memory`]
    /// records it at once). Not for an abandoned heap
    /// ([`PerCpuHeap::is_abandoned`]), whose structure may be half changed.
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
        let cpu = self.current();
        self.serve(cpu, cpu, layout, true, |heap| heap.allocate(layout))
            .map(|(block, _)| block)
    }

    /// Like [`PerCpuHeap::allocate`], with the block zeroed.
    pub fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<u8>, HeapError> {
        let cpu = self.current();
        self.serve(cpu, cpu, layout, true, |heap| heap.allocate_zeroed(layout))
            .map(|(block, _)| block)
    }

    /// Allocates without ever waiting for a lock: from the first heap,
    /// starting with the running CPU's, that is not locked and has room;
    /// `None` if there is none. No heap grows and no handler runs (damage
    /// met is quarantined and counted in the heap's statistics). The path
    /// for an interrupt handler behind a [`SpinLock`].
    pub fn try_allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
        let cpu = self.current();
        self.serve(cpu, cpu, layout, false, |heap| heap.allocate(layout))
            .ok()
            .map(|(block, _)| block)
    }

    /// Runs `op` on a heap chosen as [`PerCpuHeap::allocate`] chooses, but
    /// starting from heap `start` (modulo the heaps in use) instead of the
    /// running CPU's: `start` if its lock is free (grown through the growth
    /// hook if it has no room), else any other heap whose lock is free,
    /// else `start`, waiting for its lock. Returns what `op` returned and
    /// the heap that ran it, so that a caller that keeps its own hint (a
    /// thread in a process, which the scheduler moves between CPUs) can
    /// move it there.
    ///
    /// `op` runs under that heap's lock and may do several things at once:
    /// allocate a batch of blocks, or note what the heap's
    /// [`Heap::in_use_bytes`] changed by. It returns
    /// `Err(HeapError::OutOfMemory { .. })` when the heap cannot serve it
    /// (the heap is then grown, or the next heap tried); `layout` is the
    /// largest block it needs, which sizes the growth. Damage it meets
    /// (quarantined by the heap) is reported and the next heap tried; any
    /// other error is returned at once. Counted as one allocation of the
    /// CPU `start` names (the caller's own: `cpu_id` is not asked).
    pub fn with_heap<T>(
        &self,
        start: usize,
        layout: Layout,
        op: impl FnMut(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Result<(T, usize), HeapError> {
        let start = self.index(start);
        self.serve(start, start, layout, true, op)
    }

    /// Runs `op` (an allocation) on heap `home` if it is not locked; if it
    /// has no room, grows it (when `wait` and a growth hook is set); then
    /// tries the other heaps that are not locked; then, if `wait`, waits
    /// for heap `home` (and grows it). Abandoned heaps are skipped; an
    /// abandoned `home` gives its part to the next live heap. Returns the
    /// value and the heap that served; counts the allocation on `cpu`.
    fn serve<T>(
        &self,
        cpu: usize,
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
        let Some(home) = (0..count)
            .map(|k| (home + k) % count)
            .find(|&i| !self.cpus[i].is_abandoned())
        else {
            return Err(failure);
        };
        let mut grown = false;
        for k in 0..count {
            let i = (home + k) % count;
            if self.cpus[i].is_abandoned() {
                continue;
            }
            match self.attempt(i, wait, &mut op) {
                Attempt::Served(value) => {
                    self.count(cpu, |c| &c.allocations);
                    return Ok((value, i));
                }
                Attempt::Busy => {}
                Attempt::Full if i == home && wait && self.cpus[home].heap.has_source() => {
                    grown = true;
                    if let Some(value) = self.grow_home(home, layout, &mut op) {
                        self.count(cpu, |c| &c.allocations);
                        return Ok((value, home));
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
        self.count(cpu, |c| &c.allocations);
        Ok((value, home))
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
    /// no heap's memory holds it. A block of an abandoned heap is left as
    /// it is: `Ok(0)`.
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
        match unsafe {
            self.release(ptr, self.owner_hint(ptr), self.current(), true, |heap| {
                heap.free(ptr)
            })
        }? {
            Owner::Ran(_, size) => Ok(size),
            Owner::Abandoned => Ok(0),
            // Only a call that does not wait gives up on a lock.
            Owner::Busy => Err(HeapError::NotFromHeap {
                addr: ptr.as_ptr().addr(),
            }),
        }
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
        match unsafe {
            self.release(ptr, self.owner_hint(ptr), self.current(), false, |heap| {
                heap.free(ptr)
            })
        } {
            Ok(Owner::Ran(_, size)) => Some(Ok(size)),
            Ok(Owner::Abandoned) => Some(Ok(0)),
            Ok(Owner::Busy) => None,
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
        let cpu = self.current();
        let mut held: Option<(usize, LockGuard<'_, Heap<P>, L>)> = None;
        let (mut bytes, mut run) = (0, 0);
        let mut result = Ok(());
        while let Some(ptr) = next() {
            if let Some((owner, heap)) = held.as_mut() {
                // SAFETY: forwarded from the caller.
                if unsafe { self.owner_hint(ptr) } == Some(*owner)
                    && heap.holds_block_at(ptr.as_ptr().addr())
                {
                    // SAFETY: forwarded from the caller.
                    match unsafe { heap.free(ptr) } {
                        Ok(size) => {
                            bytes += size;
                            run += 1;
                            continue;
                        }
                        Err(error) => {
                            result = Err(error);
                            break;
                        }
                    }
                }
            }
            if let Some((owner, heap)) = held.take() {
                drop(heap);
                self.count_frees(cpu, owner, core::mem::take(&mut run));
            }
            // SAFETY: forwarded from the caller.
            match unsafe { self.locate(ptr, self.owner_hint(ptr), true) } {
                Ok(Owner::Ran(owner, mut heap)) => {
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
                Ok(Owner::Busy | Owner::Abandoned) => {}
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        if let Some((owner, heap)) = held {
            drop(heap);
            self.count_frees(cpu, owner, run);
        }
        (bytes, result)
    }

    /// Runs `op` on the heap that owns the block at `ptr`, under its lock
    /// (an in-place resize, a usable size, with whatever accounting the
    /// caller keeps around it); `Ok(None)` if that heap is abandoned (`op`
    /// does not run), `NotFromHeap` if no heap's memory holds the address.
    /// The heap is found as [`PerCpuHeap::free`] finds it, so `op` meets
    /// the precise error of the heap whose memory holds a pointer that is
    /// no used block; not counted as a free.
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
        match unsafe { self.on_owner(ptr, self.owner_hint(ptr), true, op) }? {
            Owner::Ran(_, result) => result.map(Some),
            Owner::Busy | Owner::Abandoned => Ok(None),
        }
    }

    /// Runs `op` (a free of `ptr`) on the heap that owns `ptr` and counts
    /// it on CPU `cpu` (the running one); `Owner::Busy` when `wait` is false and a heap it needs is
    /// locked, `Owner::Abandoned` (`op` not run) when the owning heap is
    /// abandoned.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`]; `op` frees `ptr` and nothing else.
    #[inline]
    unsafe fn release<T>(
        &self,
        ptr: NonNull<u8>,
        hint: Option<usize>,
        cpu: usize,
        wait: bool,
        op: impl FnOnce(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Result<Owner<T>, HeapError> {
        // SAFETY: forwarded from the caller.
        Ok(match unsafe { self.on_owner(ptr, hint, wait, op) }? {
            Owner::Ran(heap, result) => {
                let value = result?;
                self.count_frees(cpu, heap, 1);
                Owner::Ran(heap, value)
            }
            Owner::Busy => Owner::Busy,
            Owner::Abandoned => Owner::Abandoned,
        })
    }

    /// Runs `f` under the lock of the heap `ptr` belongs to: the heap the
    /// region table names (`hint`, from [`PerCpuHeap::owner_hint`]), if
    /// one of its chunks holds the block (the fast
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
        hint: Option<usize>,
        wait: bool,
        f: impl FnOnce(&mut Heap<P>) -> R,
    ) -> Result<Owner<R>, HeapError> {
        // SAFETY: forwarded from the caller.
        Ok(match unsafe { self.locate(ptr, hint, wait) }? {
            Owner::Ran(heap, mut locked) => Owner::Ran(heap, f(&mut locked)),
            Owner::Busy => Owner::Busy,
            Owner::Abandoned => Owner::Abandoned,
        })
    }

    /// The heap `ptr` belongs to, locked (see [`PerCpuHeap::on_owner`]);
    /// `Owner::Abandoned` if the region table names an abandoned heap.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`]; `hint` is what
    /// [`PerCpuHeap::owner_hint`] said of `ptr`.
    #[inline]
    unsafe fn locate(
        &self,
        ptr: NonNull<u8>,
        hint: Option<usize>,
        wait: bool,
    ) -> Result<Owner<LockGuard<'_, Heap<P>, L>>, HeapError> {
        if let Some(owner) = hint {
            if self.cpus[owner].is_abandoned() {
                return Ok(Owner::Abandoned);
            }
            let Some(heap) = self.lock_heap(owner, wait) else {
                return Ok(Owner::Busy);
            };
            if heap.holds_block_at(ptr.as_ptr().addr()) {
                return Ok(Owner::Ran(owner, heap));
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
            Found::Busy => return Ok(Owner::Busy),
        };
        Ok(match self.lock_heap(heap, wait) {
            Some(locked) => Owner::Ran(heap, locked),
            None => Owner::Busy,
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
    /// the region of the one that
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
        for (i, _) in self.live() {
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

    /// Counts `n` frees of blocks of heap `owner` on CPU `cpu` (the running
    /// one, asked once per call).
    fn count_frees(&self, cpu: usize, owner: usize, n: usize) {
        self.cpus[cpu].frees.fetch_add(n, Ordering::Relaxed);
        if owner != cpu {
            self.cpus[cpu].remote_frees.fetch_add(n, Ordering::Relaxed);
        }
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
            unsafe { cpu.heap.release_side_locks_of_vanished_holder() };
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
        let hint = unsafe { self.owner_hint(ptr) };
        let cpu = self.current();
        // SAFETY: forwarded from the caller.
        if unsafe { self.defer_remote(ptr, hint, cpu, layout) } {
            return;
        }
        // SAFETY: forwarded from the caller.
        let result =
            unsafe { self.release(ptr, hint, cpu, true, |heap| heap.deallocate(ptr, layout)) };
        // `Ok(Owner::Abandoned)`: a block of an abandoned heap, left alone.
        if let Err(error) = result {
            self.cpus[cpu].heap.report(&error);
        }
    }

    /// Leaves the free of a block that another CPU's heap owns (as its
    /// owner word says) in that heap's inbox, counted as a remote free;
    /// `false` (nothing done) for a block of this CPU's heap, a region the
    /// table does not know, an abandoned owner or a full inbox.
    ///
    /// # Safety
    /// As for [`PerCpuHeap::free`], with `layout` the block's layout,
    /// `hint` what [`PerCpuHeap::owner_hint`] said of `ptr` and `cpu` the
    /// running CPU.
    #[inline]
    unsafe fn defer_remote(
        &self,
        ptr: NonNull<u8>,
        hint: Option<usize>,
        cpu: usize,
        layout: Layout,
    ) -> bool {
        let Some(owner) = hint else {
            return false;
        };
        if owner == cpu || self.cpus[owner].is_abandoned() {
            return false;
        }
        // SAFETY: forwarded from the caller; the owner heap validates the
        // free when it does it (a forged owner word gets that heap's report).
        if !unsafe { self.cpus[owner].heap.defer_deallocate(ptr, layout) } {
            return false;
        }
        self.count_frees(cpu, owner, 1);
        true
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
        let found = unsafe {
            self.on_owner(ptr, self.owner_hint(ptr), true, |heap| {
                heap.realloc(ptr, layout, new_size)
            })
        };
        let (heap, error) = match found {
            Ok(Owner::Ran(_, Ok(moved))) => return moved.as_ptr(),
            Ok(Owner::Ran(heap, Err(error))) => (heap, error),
            // Only a call that does not wait gives up on a lock.
            Ok(Owner::Busy) => return null_mut(),
            // The block stays where it is (leaked): a copy elsewhere.
            Ok(Owner::Abandoned) => (
                self.current(),
                HeapError::OutOfMemory {
                    size: new_size,
                    align: layout.align(),
                },
            ),
            Err(error) => (self.current(), error),
        };
        if !matches!(error, HeapError::OutOfMemory { .. }) {
            if error.is_misuse() {
                self.cpus[heap].heap.report(&error);
            }
            return null_mut();
        }
        // The owner has no room (or is abandoned): move the block to any
        // heap that has.
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
    /// # Safety
    /// As `GlobalAlloc::alloc` requires: `layout` has a non-zero size.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate(layout).map_or(null_mut(), NonNull::as_ptr)
    }

    /// # Safety
    /// As `GlobalAlloc::alloc` requires: `layout` has a non-zero size.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.allocate_zeroed(layout)
            .map_or(null_mut(), NonNull::as_ptr)
    }

    /// # Safety
    /// As `GlobalAlloc::dealloc` requires: `ptr` was allocated by this
    /// allocator with `layout`, and nothing uses it after the call.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(ptr) = NonNull::new(ptr) else {
            return;
        };
        // SAFETY: the GlobalAlloc caller owns the block (so its header is
        // readable) and stops using it.
        unsafe { self.deallocate_reporting(ptr, layout) }
    }

    /// # Safety
    /// As `GlobalAlloc::realloc` requires: `ptr` was allocated by this
    /// allocator with `layout`; `new_size` is non-zero and, rounded up to
    /// `layout.align()`, does not overflow `isize`.
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

    /// The table under load: regions that share a home slot are found by
    /// probing, with their own heap; past `OWNER_LIMIT` nothing more is
    /// recorded (and nothing recorded is lost); addresses that are not
    /// regions, and the empty marker, are never known.
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
        for (i, &region) in regions[..OWNER_LIMIT].iter().enumerate() {
            table.record(region, i % 7);
            table.record(region, i % 7); // a second record changes nothing
        }
        for (i, &region) in regions[..OWNER_LIMIT].iter().enumerate() {
            assert_eq!(table.heap_of(region), Some(i % 7));
            assert!(table.knows(region));
        }
        let last = regions[OWNER_LIMIT];
        table.record(last, 1);
        assert_eq!(table.heap_of(last), None, "the table is full");
        assert!(!table.knows(last));
        for other in [EMPTY, 1, regions[0] + 16, regions[9] - 4096] {
            assert_eq!(table.heap_of(other), None);
            assert!(!table.knows(other));
        }
    }
}
