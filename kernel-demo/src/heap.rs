//! The kernel heap: a region-heap [`LockedHeap`] as the global allocator,
//! fed with the regions of the memory plan and grown through [`GROWTH`].

use core::sync::atomic::{AtomicUsize, Ordering};

use region_heap::{HeapError, LockedHeap};

use crate::grow::GROWTH;
use crate::plan::MemoryPlan;

/// The global allocator of the kernel.
#[global_allocator]
pub static HEAP: LockedHeap = LockedHeap::empty();

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

/// Gives the heap every region of `plan`, its growth pool and a report
/// handler, printing one line per region.
///
/// # Safety
///
/// Every range of `plan.regions` must be identity-mapped RAM that nothing
/// else uses, now or later, and every range of `plan.pool` must be RAM that
/// nothing else uses. Call this once.
pub unsafe fn init(plan: &MemoryPlan) {
    let mut regions = plan.regions.as_slice().iter();
    let Some(first) = regions.next() else {
        panic!("the memory map leaves no RAM for the heap");
    };
    // SAFETY: the caller guarantees the range is free, mapped RAM.
    unsafe { HEAP.init(first.start as *mut u8, first.len()) };
    crate::println!("  region {first} {:>8} KiB", first.len() / 1024);
    for range in regions {
        // SAFETY: as above, and the plan's ranges are disjoint.
        match unsafe { HEAP.add_region(range.start as *mut u8, range.len()) } {
            Ok(()) => crate::println!("  region {range} {:>8} KiB", range.len() / 1024),
            Err(e) => crate::println!("  region {range} refused: {e}"),
        }
    }
    HEAP.set_report_handler(report);
    GROWTH.set_pool(plan.pool.clone());
    HEAP.set_memory_source(&GROWTH);
}
