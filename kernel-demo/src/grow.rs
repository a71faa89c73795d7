//! The heap's growth hook: when the heap runs out, map fresh 2 MiB pages from
//! the pool of RAM held back at boot and hand them to the heap.
//!
//! The pages are mapped one after the other in a virtual window at 512 GiB
//! (PML4 entry 1), so successive grows hand the heap adjacent ranges, which
//! it joins into one chunk. Physical frames come from the pool in any order
//! and from anywhere in RAM, including above the boot identity map. The page
//! tables of the window come from a small static array (one PDPT and four
//! page directories: a 4 GiB window).
//!
//! The heap calls [`MemorySource::grow`] with its locks released; this hook
//! never allocates, so it could not deadlock even if they were held. Its own
//! lock is held with interrupts disabled, so that the timer handler, which
//! allocates and may thus grow the heap, never interrupts a CPU holding it.
//! Mapping needs no TLB shootdown (a page not present is never cached);
//! unmapping would on several CPUs, so the kernel trims only while the APs
//! are not started yet.

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use region_heap::MemorySource;
use spin::Mutex;
use x86_64::instructions::interrupts;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size2MiB,
    Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::plan::HUGE_PAGE;
use crate::range::{Range, RangeSet};

/// Start of the growth window.
pub const WINDOW_BASE: usize = 0x80_0000_0000;
/// Size of the growth window: what one PDPT and [`WINDOW_TABLES`] − 1 page
/// directories map.
pub const WINDOW_SIZE: usize = 4 << 30;
/// Smallest grow: a request for less still maps this much, so that a run of
/// small allocations does not call the hook each time.
pub const GROW_MIN: usize = 4 << 20;
/// Page-table frames for the window.
const WINDOW_TABLES: usize = 5;

/// Page-table frames for the growth window, in `.bss` (identity-mapped).
#[repr(C, align(4096))]
struct TableFrames(UnsafeCell<[PageTable; WINDOW_TABLES]>);

// SAFETY: the frames are only touched through the page-table mapper while the
// growth state's lock is held (see `Growth::grow`).
unsafe impl Sync for TableFrames {}

static TABLE_FRAMES: TableFrames =
    TableFrames(UnsafeCell::new([const { PageTable::new() }; WINDOW_TABLES]));

/// Hands out the static page-table frames.
struct TableAllocator<'a> {
    next: &'a mut usize,
}

// SAFETY: each frame is returned at most once (`next` only grows, and is kept
// in the growth state across calls), is 4 KiB aligned (PageTable is), is
// identity-mapped as part of the kernel image, and is used for nothing else.
unsafe impl FrameAllocator<Size4KiB> for TableAllocator<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if *self.next == WINDOW_TABLES {
            return None;
        }
        let base = TABLE_FRAMES.0.get() as *mut PageTable;
        let table = base.wrapping_add(*self.next);
        *self.next += 1;
        Some(PhysFrame::containing_address(PhysAddr::new(table as u64)))
    }
}

/// Counters of the growth hook.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrowthStats {
    /// Grows served.
    pub grows: usize,
    /// Grows refused (request larger than the pool or the window).
    pub refused: usize,
    /// Bytes mapped into the window.
    pub mapped: usize,
    /// Bytes left in the pool.
    pub remaining: usize,
    /// Bytes the heap gave back (`LockedHeap::trim`), unmapped and
    /// returned to the pool.
    pub released: usize,
}

struct State {
    pool: RangeSet<16>,
    tables_used: usize,
    stats: GrowthStats,
}

/// The growth hook: a pool of 2 MiB frames and the window they are mapped in.
pub struct Growth {
    state: Mutex<State>,
}

/// The kernel's one growth hook.
pub static GROWTH: Growth = Growth {
    state: Mutex::new(State {
        pool: RangeSet::new(),
        tables_used: 0,
        stats: GrowthStats {
            grows: 0,
            refused: 0,
            mapped: 0,
            remaining: 0,
            released: 0,
        },
    }),
};

impl Growth {
    /// Gives the hook its pool: 2 MiB aligned physical ranges of RAM that
    /// nothing else uses.
    pub fn set_pool(&self, pool: RangeSet<16>) {
        interrupts::without_interrupts(|| {
            let mut state = self.state.lock();
            state.stats.remaining = pool.total();
            state.pool = pool;
        });
    }

    /// The hook's counters.
    pub fn stats(&self) -> GrowthStats {
        interrupts::without_interrupts(|| self.state.lock().stats)
    }
}

// SAFETY: every range returned is freshly mapped, writable and unused by
// anything else (its frames leave the pool, and the window only grows, so a
// virtual range is never handed out twice); it stays mapped until the heap
// gives it back through `release`, which only a trim does, once nothing in
// it is used.
unsafe impl MemorySource for Growth {
    fn grow(&self, min_size: usize) -> Option<(NonNull<u8>, usize)> {
        interrupts::without_interrupts(|| self.grow_locked(min_size))
    }

    fn release(&self, start: NonNull<u8>, size: usize) {
        interrupts::without_interrupts(|| self.release_locked(start, size));
    }
}

impl Growth {
    /// [`MemorySource::grow`], run with interrupts disabled.
    fn grow_locked(&self, min_size: usize) -> Option<(NonNull<u8>, usize)> {
        let mut state = self.state.lock();
        let size = min_size
            .max(GROW_MIN)
            .checked_next_multiple_of(HUGE_PAGE)
            .filter(|&size| size <= state.pool.total() && size <= WINDOW_SIZE - state.stats.mapped);
        let Some(size) = size else {
            state.stats.refused += 1;
            crate::eprintln!(
                "[grow] heap asked for {min_size} bytes: refused ({} MiB left in the pool)",
                state.stats.remaining >> 20
            );
            return None;
        };
        let start = WINDOW_BASE + state.stats.mapped;

        let (pml4_frame, _) = Cr3::read();
        let pml4 = pml4_frame.start_address().as_u64() as *mut PageTable;
        // SAFETY: the boot page tables are identity-mapped, so physical offset
        // 0 is right; the lock on the growth state makes this mapper the only
        // one that exists, and nothing else writes to the page tables.
        let mut mapper = unsafe { OffsetPageTable::new(&mut *pml4, VirtAddr::new(0)) };
        let State {
            pool,
            tables_used,
            stats,
        } = &mut *state;
        let mut tables = TableAllocator { next: tables_used };
        for offset in (0..size).step_by(HUGE_PAGE) {
            if map_one(&mut mapper, &mut tables, pool, start + offset).is_none() {
                // Never expected (the pool and the window were sized above):
                // keep what was mapped out of later grows and give up.
                stats.mapped += offset + HUGE_PAGE;
                stats.remaining = pool.total();
                crate::eprintln!("[grow] mapping {:#x} failed", start + offset);
                return None;
            }
        }
        stats.grows += 1;
        stats.mapped += size;
        stats.remaining = pool.total();
        crate::eprintln!(
            "[grow] heap asked for {min_size} bytes: mapped {} x 2 MiB at {start:#x} ({} MiB left in the pool)",
            size / HUGE_PAGE,
            stats.remaining >> 20
        );
        NonNull::new(start as *mut u8).map(|p| (p, size))
    }

    /// [`MemorySource::release`], run with interrupts disabled: unmaps the
    /// 2 MiB pages of the window that lie wholly inside the range the heap
    /// gave back, and returns their frames to the pool. Anything outside the
    /// window (memory the heap got at boot) is kept.
    fn release_locked(&self, start: NonNull<u8>, size: usize) {
        let begin = (start.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
        let end = (start.as_ptr() as usize + size) & !(HUGE_PAGE - 1);
        let mut state = self.state.lock();
        let (pml4_frame, _) = Cr3::read();
        let pml4 = pml4_frame.start_address().as_u64() as *mut PageTable;
        // SAFETY: as in `grow`: identity-mapped page tables, and this mapper
        // is the only one while the growth state's lock is held.
        let mut mapper = unsafe { OffsetPageTable::new(&mut *pml4, VirtAddr::new(0)) };
        let window = WINDOW_BASE..WINDOW_BASE + WINDOW_SIZE;
        for virt in (begin..end).step_by(HUGE_PAGE) {
            if !window.contains(&virt) {
                continue;
            }
            let Ok(page) = Page::<Size2MiB>::from_start_address(VirtAddr::new(virt as u64)) else {
                continue;
            };
            let Ok((frame, flush)) = mapper.unmap(page) else {
                continue;
            };
            flush.flush();
            let phys = frame.start_address().as_u64() as usize;
            if state
                .pool
                .insert(Range::new(phys, phys + HUGE_PAGE))
                .is_ok()
            {
                state.stats.released += HUGE_PAGE;
            }
        }
        state.stats.remaining = state.pool.total();
    }
}

/// Whether `virt` is mapped (the trim self-test checks that released pages
/// are gone).
pub fn is_mapped(virt: usize) -> bool {
    use x86_64::structures::paging::mapper::Translate;
    let (pml4_frame, _) = Cr3::read();
    let pml4 = pml4_frame.start_address().as_u64() as *mut PageTable;
    interrupts::without_interrupts(|| {
        let _state = GROWTH.state.lock();
        // SAFETY: identity-mapped page tables, only read here; the growth
        // state's lock keeps the growth hook from changing them meanwhile.
        let mapper = unsafe { OffsetPageTable::new(&mut *pml4, VirtAddr::new(0)) };
        mapper.translate_addr(VirtAddr::new(virt as u64)).is_some()
    })
}

/// Maps one 2 MiB frame from `pool` at `virt`.
fn map_one(
    mapper: &mut OffsetPageTable<'_>,
    tables: &mut TableAllocator<'_>,
    pool: &mut RangeSet<16>,
    virt: usize,
) -> Option<()> {
    let page = Page::<Size2MiB>::from_start_address(VirtAddr::new(virt as u64)).ok()?;
    let frame = pool.take_front(HUGE_PAGE)?;
    let frame =
        PhysFrame::<Size2MiB>::from_start_address(PhysAddr::new(frame.start as u64)).ok()?;
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    // SAFETY: the frame came out of the pool, which holds RAM that no one
    // else uses, and the page lies in the window above everything mapped so
    // far, so no existing reference aliases it.
    let flush = unsafe { mapper.map_to(page, frame, flags, tables) }.ok()?;
    flush.flush();
    Some(())
}
