//! The local APIC (xAPIC, memory-mapped): mapping its register page, its ID,
//! enabling it, end of interrupt, the start-up IPIs and the timer.
//!
//! Invariants: [`map`] runs once, on the BSP, before any other function of
//! this module and before any AP starts; it maps the 2 MiB page holding the
//! registers uncached in the boot page tables, which every CPU shares. Every
//! CPU sees its own local APIC at that address, so a register access here
//! only ever touches the running CPU's APIC. The legacy 8259 PIC is masked by
//! [`map`], so only the local APICs deliver interrupts.

use core::cell::UnsafeCell;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicUsize, Ordering};

use x86_64::instructions::port::Port;
use x86_64::instructions::tlb;
use x86_64::VirtAddr;

use crate::plan::HUGE_PAGE;

/// Vector of the spurious interrupt (its handler only returns).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

const REG_ID: usize = 0x20;
const REG_EOI: usize = 0xB0;
const REG_SPURIOUS: usize = 0xF0;
const REG_ICR_LOW: usize = 0x300;
const REG_ICR_HIGH: usize = 0x310;
const REG_LVT_TIMER: usize = 0x320;
const REG_TIMER_INITIAL: usize = 0x380;
const REG_TIMER_CURRENT: usize = 0x390;
const REG_TIMER_DIVIDE: usize = 0x3E0;

/// ICR delivery status: the previous IPI is still being sent.
const ICR_PENDING: u32 = 1 << 12;
/// LVT mask bit.
const LVT_MASKED: u32 = 1 << 16;
/// LVT timer mode: periodic.
const LVT_PERIODIC: u32 = 1 << 17;
/// Timer divide configuration: divide by 16.
const DIVIDE_BY_16: u32 = 0b0011;

/// Address of the register page, 0 until [`map`].
static BASE: AtomicUsize = AtomicUsize::new(0);

/// The page directory that maps the APIC's gigabyte, in `.bss`.
#[repr(C, align(4096))]
struct Directory(UnsafeCell<[u64; 512]>);

// SAFETY: written only by `map`, once, on the BSP before any AP runs.
unsafe impl Sync for Directory {}

static DIRECTORY: Directory = Directory(UnsafeCell::new([0; 512]));

unsafe extern "C" {
    /// The boot page-directory-pointer table (boot.rs), shared by all CPUs.
    static mut boot_pdpt: [u64; 512];
}

/// Maps the local APIC registers at physical address `phys` (identity,
/// uncached) and masks the 8259 PIC.
///
/// # Safety
///
/// Call once, on the BSP, before any AP starts; `phys` must be the local
/// APIC's register address (from the MADT).
pub unsafe fn map(phys: usize) -> Result<(), &'static str> {
    let gib = phys >> 30;
    if gib == 0 || gib >= 512 {
        return Err("local APIC outside the second to 512th GiB");
    }
    // SAFETY: the caller runs this once on the BSP before any AP, so nothing
    // else reads or writes these page-table entries meanwhile; the boot PDPT
    // only maps the first GiB (entry 0), and `gib` is not 0.
    unsafe {
        let pdpt = &mut *addr_of_mut!(boot_pdpt);
        if pdpt[gib] != 0 {
            return Err("the local APIC's GiB is already mapped");
        }
        let directory = &mut *DIRECTORY.0.get();
        // present | writable | write-through | cache disable | 2 MiB page
        directory[(phys >> 21) & 511] = (phys & !(HUGE_PAGE - 1)) as u64 | 0x9B;
        pdpt[gib] = DIRECTORY.0.get() as u64 | 0x3;
    }
    tlb::flush(VirtAddr::new(phys as u64));
    BASE.store(phys, Ordering::Release);
    // SAFETY: ports 0x21 and 0xA1 are the mask registers of the two 8259
    // PICs; masking every line has no effect on memory.
    unsafe {
        Port::<u8>::new(0x21).write(0xFF);
        Port::<u8>::new(0xA1).write(0xFF);
    }
    Ok(())
}

fn register(offset: usize) -> *mut u32 {
    let base = BASE.load(Ordering::Acquire);
    assert!(base != 0, "local APIC used before apic::map");
    (base + offset) as *mut u32
}

fn read(offset: usize) -> u32 {
    // SAFETY: `map` mapped the register page (asserted by `register`); the
    // offset is one of this module's register constants, 16-byte aligned.
    unsafe { register(offset).read_volatile() }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`; writing an APIC register has no effect on memory.
    unsafe { register(offset).write_volatile(value) }
}

/// The running CPU's local APIC ID.
pub fn id() -> u8 {
    (read(REG_ID) >> 24) as u8
}

/// Software-enables the running CPU's local APIC (spurious vector
/// [`SPURIOUS_VECTOR`]) with its timer masked.
pub fn enable() {
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_SPURIOUS, 0x100 | u32::from(SPURIOUS_VECTOR));
}

/// Signals the end of the interrupt being handled.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Sends an IPI (`command`: the ICR's low word) to `apic_id` and waits until
/// the APIC has sent it.
fn send_ipi(apic_id: u8, command: u32) {
    write(REG_ICR_HIGH, u32::from(apic_id) << 24);
    write(REG_ICR_LOW, command);
    while read(REG_ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
}

/// Sends INIT (level assert) to `apic_id`.
pub fn send_init(apic_id: u8) {
    send_ipi(apic_id, 0x0000_4500);
}

/// Sends a start-up IPI to `apic_id`: it starts in real mode at
/// `page * 4096`.
pub fn send_startup(apic_id: u8, page: u8) {
    send_ipi(apic_id, 0x0000_4600 | u32::from(page));
}

/// Timer counts (at divide 16) per millisecond, measured against the PIT
/// over 10 ms. Only the BSP calls this, before the APs use the timer.
pub fn calibrate_timer() -> u32 {
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_TIMER_INITIAL, u32::MAX);
    crate::pit::delay_us(10_000);
    let elapsed = u32::MAX - read(REG_TIMER_CURRENT);
    write(REG_TIMER_INITIAL, 0);
    (elapsed / 10).max(1)
}

/// Starts the running CPU's timer: interrupt `vector` every `count` counts
/// (divide 16).
pub fn start_timer(vector: u8, count: u32) {
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_PERIODIC | u32::from(vector));
    write(REG_TIMER_INITIAL, count);
}

/// Stops the running CPU's timer.
pub fn stop_timer() {
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_TIMER_INITIAL, 0);
}
