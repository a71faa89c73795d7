//! The local APIC timer of every CPU, whose interrupt handler allocates and
//! frees on every tick, while the code it interrupted may itself be in the
//! middle of allocating.
//!
//! The handler allocates a block through the global allocator, fills it with
//! a pattern, reads it back and frees it. This is sound because the heap's
//! locks keep interrupts disabled while held (`IrqSafeLock`): a tick can
//! never land while its own CPU holds a heap lock, and the heap calls the
//! growth hook with its locks released, whose own lock also keeps interrupts
//! disabled. The handler takes no other lock.
//!
//! Invariants: the timer runs only between [`start`] and [`stop`] on a CPU
//! (interrupts are enabled only in between); the assembly stub saves every
//! register the System V ABI lets the handler clobber (the kernel target
//! has no SSE state and no red zone) and calls the handler on a 16-byte
//! aligned stack.

use alloc::alloc::{alloc, dealloc, Layout};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use x86_64::instructions::interrupts;

use crate::pattern::{fill, holds};
use crate::{apic, percpu};

/// Interrupt vector of the timer.
pub const VECTOR: u8 = 0x40;
/// Timer period in microseconds.
pub const PERIOD_US: u32 = 1000;

/// Timer counts per period, set by [`calibrate`].
static COUNT: AtomicU32 = AtomicU32::new(0);
/// Blocks the handler allocated, checked and freed, on every CPU.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Ticks whose block could not be allocated or came back damaged.
static FAILURES: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    r#"
    .pushsection .text.timer, "ax"
    .p2align 4
    .global timer_stub
timer_stub:
    /* The CPU aligned the stack to 16 and pushed 5 words; 9 more keep the
       call aligned. */
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    cld
    call {tick}
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq
    .popsection
    "#,
    tick = sym tick,
);

unsafe extern "C" {
    fn timer_stub();
}

/// Address of the interrupt entry, for the IDT.
pub fn stub_address() -> u64 {
    timer_stub as *const () as u64
}

/// Measures the local APIC timer against the PIT (on the BSP, before any CPU
/// starts its timer). Returns the counts per period.
pub fn calibrate() -> u32 {
    let count = apic::calibrate_timer() * PERIOD_US / 1000;
    COUNT.store(count, Ordering::Relaxed);
    count
}

/// Starts the running CPU's timer and enables its interrupts.
pub fn start() {
    apic::start_timer(VECTOR, COUNT.load(Ordering::Relaxed).max(1));
    interrupts::enable();
}

/// Disables the running CPU's interrupts and stops its timer.
pub fn stop() {
    interrupts::disable();
    apic::stop_timer();
}

/// Blocks the handler allocated, checked and freed, on every CPU.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Ticks whose allocation failed or whose block was damaged, on every CPU.
pub fn failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// The handler: one allocation of 16 to 512 bytes, filled, checked, freed.
extern "C" fn tick() {
    let cpu = percpu::current();
    let n = cpu.ticks.fetch_add(1, Ordering::Relaxed) as usize;
    let size = 16 + (n * 48) % 497;
    let seed = (cpu.index() << 20) ^ n;
    let layout = Layout::from_size_align(size, 16).expect("valid layout");
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { alloc(layout) };
    if block.is_null() {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    } else {
        // SAFETY: `block` is a fresh allocation of `size` bytes, freed once,
        // with its own layout, after the last access.
        let intact = unsafe {
            fill(block, size, seed);
            let intact = holds(block, size, seed);
            dealloc(block, layout);
            intact
        };
        if intact {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        } else {
            FAILURES.fetch_add(1, Ordering::Relaxed);
        }
    }
    apic::eoi();
}
