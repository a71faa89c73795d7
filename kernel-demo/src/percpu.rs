//! Per-CPU data and the index of the running CPU.
//!
//! Each CPU's GS base points to its [`PerCpu`]: the BSP's is a static, set
//! first thing in `kernel_start` before anything allocates; an AP's is
//! allocated from the heap by the BSP and installed by the AP before it
//! allocates. The first field is the CPU index, so [`index`] is one
//! `mov rax, gs:[0]` and [`current`] one `mov rax, gs:[8]`.
//!
//! Invariants: a CPU's GS base is written once and never changes; a
//! `PerCpu` is never freed; CPU indexes are 0 (the BSP) to [`MAX_CPUS`] − 1,
//! given in start-up order, each to one CPU.

use alloc::boxed::Box;
use core::arch::asm;
use core::mem::offset_of;
use core::sync::atomic::AtomicU64;

use x86_64::registers::model_specific::GsBase;
use x86_64::VirtAddr;

/// CPUs the kernel runs at most (more are left halted); the number of heaps.
pub const MAX_CPUS: usize = 8;

/// One CPU's data.
#[repr(C)]
pub struct PerCpu {
    /// The CPU's index (read by [`index`] at offset 0).
    index: usize,
    /// This structure's own address (read by [`current`] at offset 8).
    this: *const PerCpu,
    /// Timer interrupts taken.
    pub ticks: AtomicU64,
}

// SAFETY: `this` is only ever read, as a shared reference to the structure
// itself; the other fields are atomics or never written after creation.
unsafe impl Sync for PerCpu {}

const _: () = assert!(offset_of!(PerCpu, index) == 0 && offset_of!(PerCpu, this) == 8);

/// The BSP's data: index 0, a static that points to itself.
static BSP: PerCpu = PerCpu {
    index: 0,
    this: &BSP,
    ticks: AtomicU64::new(0),
};

impl PerCpu {
    /// Allocates the data of CPU `index` from the heap, never to be freed.
    pub fn leak_new(index: usize) -> &'static PerCpu {
        let data = Box::leak(Box::new(PerCpu {
            index,
            this: core::ptr::null(),
            ticks: AtomicU64::new(0),
        }));
        data.this = data;
        data
    }

    /// The CPU index.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// Makes `data` the running CPU's data.
///
/// # Safety
///
/// Call once per CPU, before the CPU calls [`index`] or [`current`]
/// (directly or through the heap), with data given to no other CPU.
pub unsafe fn install(data: &'static PerCpu) {
    GsBase::write(VirtAddr::from_ptr(data));
}

/// Installs the BSP's data (index 0).
///
/// # Safety
///
/// Call once, on the BSP, before anything allocates.
pub unsafe fn install_bsp() {
    // SAFETY: the caller calls this once, on the BSP, first; `BSP` is given
    // to no other CPU.
    unsafe { install(&BSP) }
}
/// The running CPU's index: one GS-relative load.
#[inline]
pub fn index() -> usize {
    let index: usize;
    // SAFETY: the GS base points to the running CPU's `PerCpu`, installed
    // before anything calls this (module invariant), whose field at offset 0
    // is the index and is never written afterwards.
    unsafe {
        asm!("mov {}, gs:[0]", out(reg) index, options(nostack, readonly, preserves_flags));
    }
    index
}

/// The running CPU's data.
pub fn current() -> &'static PerCpu {
    let this: *const PerCpu;
    // SAFETY: as in `index`; offset 8 holds the structure's own address.
    unsafe {
        asm!("mov {}, gs:[8]", out(reg) this, options(nostack, readonly, preserves_flags));
    }
    // SAFETY: `this` points to a `PerCpu` that is never freed.
    unsafe { &*this }
}
