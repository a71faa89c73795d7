//! The memory plan: which RAM of the machine becomes a heap region at boot
//! and which is held back for the heap's growth hook.
//!
//! Starting from the usable (type 1) entries of the PVH memory map, the plan
//! removes page 0, the page of the AP start-up trampoline
//! ([`TRAMPOLINE`]), the pages that held the start info, memory map and
//! command line, and the kernel image (which contains the boot stack and
//! page tables). Then:
//! - every remaining range below the kernel (low memory, under 640 KiB) of at
//!   least [`MIN_REGION`] bytes becomes a region;
//! - of the RAM above the kernel, the first [`INITIAL_HIGH`] bytes (up to a
//!   2 MiB boundary) become a region, capped to the identity map;
//! - the rest, aligned to 2 MiB, forms the growth pool: frames that the
//!   growth hook maps on demand, wherever they are in physical memory.

use crate::boot::IDENTITY_MAPPED;
use crate::memmap::{BootInfo, TYPE_RAM};
use crate::range::{Full, Range, RangeSet};
use crate::smp::TRAMPOLINE;

/// Size of a page.
pub const PAGE: usize = 4096;
/// Size of the pages that the growth hook maps.
pub const HUGE_PAGE: usize = 2 << 20;
/// Smaller leftovers of low memory are not worth a region.
pub const MIN_REGION: usize = 16 * 1024;
/// Bytes above the kernel image given to the heap at boot; the rest waits for
/// the growth hook.
pub const INITIAL_HIGH: usize = 4 << 20;

/// The outcome of [`plan`].
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// Identity-mapped ranges that become heap regions at boot.
    pub regions: RangeSet<16>,
    /// Physical ranges, 2 MiB aligned, held back for the growth hook.
    pub pool: RangeSet<16>,
    /// Usable RAM in the memory map.
    pub usable: usize,
}

/// Splits the usable RAM of `boot` around the kernel image `kernel`.
pub fn plan(boot: &BootInfo, kernel: Range) -> Result<MemoryPlan, Full> {
    let mut free = RangeSet::<32>::new();
    let mut usable = 0;
    for entry in boot.entries().iter().filter(|e| e.kind == TYPE_RAM) {
        if let Some(range) = entry.range() {
            usable += range.len();
            free.insert(range.align_inward(PAGE))?;
        }
    }
    free.remove(Range::new(0, PAGE))?;
    free.remove(Range::new(TRAMPOLINE, TRAMPOLINE + PAGE))?;
    for data in boot.boot_data() {
        free.remove(data.align_outward(PAGE))?;
    }
    free.remove(kernel.align_outward(PAGE))?;

    let mut regions = RangeSet::new();
    let mut pool = RangeSet::new();
    let mut initial_high_given = false;
    for range in free.as_slice() {
        if range.end <= kernel.start {
            let low = range.below(IDENTITY_MAPPED);
            if low.len() >= MIN_REGION {
                regions.insert(low)?;
            }
            continue;
        }
        let mut rest = *range;
        if !initial_high_given && range.start < IDENTITY_MAPPED {
            let cut = range
                .start
                .saturating_add(INITIAL_HIGH)
                .checked_next_multiple_of(HUGE_PAGE)
                .unwrap_or(usize::MAX)
                .min(range.end)
                .min(IDENTITY_MAPPED);
            regions.insert(Range::new(range.start, cut))?;
            rest = Range::new(cut, range.end);
            initial_high_given = true;
        }
        pool.insert(rest.align_inward(HUGE_PAGE))?;
    }
    Ok(MemoryPlan {
        regions,
        pool,
        usable,
    })
}
