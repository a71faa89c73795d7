//! The kernel heap: a region-heap [`PerCpuHeap`] as the global allocator,
//! one heap per CPU behind an interrupt-safe lock, fed with the regions of
//! the memory plan (CPU 0's heap, the BSP's) and grown through [`GROWTH`]
//! (every CPU's heap).
//!
//! Invariants: the CPU index comes from [`percpu::index`], installed on each
//! CPU before it allocates; the heap locks keep interrupts disabled while
//! held (`IrqSafeLock`), so the timer handler may allocate; every range given
//! to a heap is given to that one heap only.

use core::sync::atomic::{AtomicUsize, Ordering};

use region_heap::x86_64::IrqSafeLock;
use region_heap::{GoodFit, HeapError, MemorySource, PerCpuHeap};

use crate::grow::{GROWTH, GROW_MIN};
use crate::percpu::{self, MAX_CPUS};
use crate::plan::MemoryPlan;

/// The global allocator of the kernel: one heap per CPU.
#[global_allocator]
pub static HEAP: PerCpuHeap<MAX_CPUS, GoodFit, IrqSafeLock> = PerCpuHeap::new(percpu::index);

/// Errors reported by the heap on the `GlobalAlloc` path.
static REPORTS: AtomicUsize = AtomicUsize::new(0);

/// Errors the heap reported so far.
pub fn reports() -> usize {
    REPORTS.load(Ordering::Relaxed)
}

/// The report handler: the heap calls it, with its lock released, for a
/// misuse seen through `GlobalAlloc` (double free, foreign pointer, wrong
/// layout, corruption) or memory from the growth hook that it refused. It
/// prints and counts instead of panicking, so the self-tests can report.
fn report(error: &HeapError) {
    REPORTS.fetch_add(1, Ordering::Relaxed);
    crate::eprintln!("[heap] reported: {error}");
}

/// Gives CPU 0's heap every region of `plan`, every heap the growth pool
/// and a report handler, printing one line per region.
///
/// # Safety
///
/// Every range of `plan.regions` must be identity-mapped RAM that nothing
/// else uses, now or later, and every range of `plan.pool` must be RAM that
/// nothing else uses. Call this once.
pub unsafe fn init(plan: &MemoryPlan) {
    let bsp = HEAP.heap(0);
    let mut regions = plan.regions.as_slice().iter();
    let Some(first) = regions.next() else {
        panic!("the memory map leaves no RAM for the heap");
    };
    // SAFETY: the caller guarantees the range is free, mapped RAM.
    unsafe { bsp.init(first.start as *mut u8, first.len()) };
    crate::println!("  region {first} {:>8} KiB", first.len() / 1024);
    for range in regions {
        // SAFETY: as above, and the plan's ranges are disjoint.
        match unsafe { bsp.add_region(range.start as *mut u8, range.len()) } {
            Ok(()) => crate::println!("  region {range} {:>8} KiB", range.len() / 1024),
            Err(e) => crate::println!("  region {range} refused: {e}"),
        }
    }
    HEAP.set_report_handler(report);
    GROWTH.set_pool(plan.pool.clone());
    HEAP.set_memory_source(&GROWTH);
}

/// Gives CPU `cpu`'s heap its first memory, [`GROW_MIN`] bytes from the
/// growth hook, when the CPU starts: its heap would grow on its first
/// allocation anyway, but this way the growth happens before the stress
/// and the boot log shows what each CPU got. Returns the bytes given.
pub fn provision(cpu: usize) -> Result<usize, HeapError> {
    let Some((start, size)) = GROWTH.grow(GROW_MIN) else {
        return Err(HeapError::OutOfMemory {
            size: GROW_MIN,
            align: 1,
        });
    };
    // SAFETY: the growth hook returns fresh, mapped memory that nothing else
    // uses (its `MemorySource` contract); it is given to this one heap.
    unsafe { HEAP.add_memory(cpu, start.as_ptr(), size) }?;
    Ok(size)
}
