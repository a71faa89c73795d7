//! x86_64 support (feature `x86_64`): the interrupt-safe lock for kernels
//! whose interrupt handlers allocate.
//!
//! The rule for allocating in an interrupt handler: put the heap behind
//! [`IrqSafeLock`] (`LockedHeap<Heap, IrqSafeLock>` or
//! `PerCpuHeap<N, GoodFit, IrqSafeLock>`). Interrupts are then off on a
//! CPU for as long as it holds a heap lock, so a handler never interrupts
//! code that holds one, and a lock it finds held belongs to another CPU,
//! which releases it. Behind the default [`SpinLock`](crate::SpinLock), a
//! handler may use only the `try_` paths of [`PerCpuHeap`](crate::PerCpuHeap),
//! which never wait.

use crate::lock::InterruptControl;

/// The interrupt flag of an x86_64 CPU (`RFLAGS.IF`, `cli`/`sti`).
#[derive(Debug)]
pub struct Interrupts;

// SAFETY: `cli` clears RFLAGS.IF, after which no maskable interrupt is
// delivered to this CPU until IF is set again.
unsafe impl InterruptControl for Interrupts {
    #[inline]
    fn disable() -> bool {
        let enabled = ::x86_64::instructions::interrupts::are_enabled();
        ::x86_64::instructions::interrupts::disable();
        enabled
    }

    /// # Safety
    /// As `InterruptControl::restore` requires: `enabled` is what the matching
    /// `disable` returned, and the code that runs next is ready for interrupts.
    #[inline]
    unsafe fn restore(enabled: bool) {
        if enabled {
            ::x86_64::instructions::interrupts::enable();
        }
    }
}

/// A spin lock held with interrupts disabled (see [`crate::IrqSafeLock`]).
pub type IrqSafeLock = crate::lock::IrqSafeLock<Interrupts>;
