//! Starting the application processors (APs) through their local APICs.
//!
//! The BSP copies a real-mode trampoline to the reserved page at
//! [`TRAMPOLINE`] (below 1 MiB, kept out of the heap by the memory plan),
//! then starts the APs one at a time: it writes the AP's stack top, its
//! `PerCpu` and its work function into the trampoline's data slots, sends
//! INIT, waits 10 ms, sends a start-up IPI (SIPI) with vector
//! `TRAMPOLINE >> 12`, and a second one if the AP has not reported after
//! 200 µs. The AP runs the trampoline from real mode: a GDT of its own with
//! 32- and 64-bit code segments, protected mode, PAE, the BSP's CR3,
//! EFER.LME, paging, long mode; then it loads the BSP's GDT and reaches
//! [`ap_main`] on its stack, which installs its per-CPU data (GS base), loads
//! the IDT, enables its local APIC and reports.
//!
//! Invariants: the trampoline's data slots are written only while no AP is
//! starting (an AP reads them before it reports, and the BSP waits for the
//! report before the next start-up); each AP gets its own stack and
//! `PerCpu`, allocated from the heap and never freed (APs never stop).

use alloc::alloc::{alloc, handle_alloc_error, Layout};
use alloc::format;
use alloc::string::String;
use core::ptr::addr_of;
use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::registers::control::Cr3;

use crate::acpi::Madt;
use crate::percpu::{self, PerCpu, MAX_CPUS};
use crate::{apic, pit, trap};

/// Physical address of the trampoline page: start-up vector 8.
pub const TRAMPOLINE: usize = 0x8000;
/// Stack of each AP, allocated from the heap.
pub const AP_STACK_SIZE: usize = 64 * 1024;
/// How long the BSP waits for an AP to report, in milliseconds.
const START_TIMEOUT_MS: u64 = 1000;

/// What an AP runs once it is up; it never returns.
pub type ApWork = extern "C" fn(&'static PerCpu) -> !;

core::arch::global_asm!(
    r#"
    .pushsection .rodata.ap_trampoline, "a"
    .code16
    .global ap_trampoline
ap_trampoline:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (tr_gdt_pointer - ap_trampoline)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $({base} + tr_protected - ap_trampoline)

    .code32
tr_protected:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl ({base} + tr_cr3 - ap_trampoline), %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    ljmpl $0x18, $({base} + tr_long - ap_trampoline)

    .code64
tr_long:
    lgdt boot_gdt_pointer
    movq ({base} + tr_stack - ap_trampoline), %rsp
    movq ({base} + tr_percpu - ap_trampoline), %rdi
    movq ({base} + tr_work - ap_trampoline), %rsi
    pushq $0x08
    movabsq $ap_long_mode, %rax
    pushq %rax
    lretq

    .p2align 3
tr_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code */
tr_gdt_end:
tr_gdt_pointer:
    .word tr_gdt_end - tr_gdt - 1
    .long {base} + tr_gdt - ap_trampoline
    .p2align 3
    .global tr_cr3
tr_cr3:
    .quad 0
    .global tr_stack
tr_stack:
    .quad 0
    .global tr_percpu
tr_percpu:
    .quad 0
    .global tr_work
tr_work:
    .quad 0
    .global ap_trampoline_end
ap_trampoline_end:
    .popsection

    .pushsection .text.ap_long_mode, "ax"
ap_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    xorl %ebp, %ebp
    call {ap_main}
    ud2
    .popsection
    "#,
    base = const TRAMPOLINE,
    ap_main = sym ap_main,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline: u8;
    static ap_trampoline_end: u8;
    static tr_cr3: u8;
    static tr_stack: u8;
    static tr_percpu: u8;
    static tr_work: u8;
}

/// Set by an AP once it runs on its own stack with its per-CPU data.
static STARTED: AtomicBool = AtomicBool::new(false);

/// The address in the copied trampoline of the slot `symbol` (a label of
/// the trampoline in the kernel image).
fn slot(symbol: *const u8) -> *mut u64 {
    // Only addresses of linker symbols are taken, never their values.
    let start = addr_of!(ap_trampoline) as usize;
    (TRAMPOLINE + (symbol as usize - start)) as *mut u64
}

/// Starts every enabled CPU of `madt` but the running one (the BSP), up to
/// [`MAX_CPUS`] in all, each running `work` once it is up. Returns the APIC
/// IDs of the CPUs online, indexed by CPU index (the BSP's first).
///
/// # Safety
///
/// Call once, on the BSP, after `apic::map`, with the page at
/// [`TRAMPOLINE`] reserved for the trampoline (no heap or other data in it),
/// and with interrupts disabled.
pub unsafe fn start_aps(madt: &Madt, work: ApWork) -> Result<([u8; MAX_CPUS], usize), String> {
    let bsp = apic::id();
    let mut online = [0u8; MAX_CPUS];
    online[0] = bsp;
    let mut count = 1;

    // Only addresses of linker symbols are taken.
    let (start, end) = (
        addr_of!(ap_trampoline) as usize,
        addr_of!(ap_trampoline_end) as usize,
    );
    assert!(
        end - start <= crate::plan::PAGE,
        "the trampoline exceeds its page"
    );
    // SAFETY: the trampoline page is reserved for it (the caller's
    // guarantee) and identity-mapped; the source is the trampoline's image
    // in .rodata, which does not overlap it.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, TRAMPOLINE as *mut u8, end - start);
        slot(addr_of!(tr_cr3)).write_volatile(Cr3::read_raw().0.start_address().as_u64());
    }

    for &apic_id in madt.apic_ids().iter().filter(|&&id| id != bsp) {
        if count == MAX_CPUS {
            crate::println!(
                "  APIC ID {apic_id}: left halted (the kernel runs at most {MAX_CPUS} CPUs)"
            );
            continue;
        }
        let layout = Layout::from_size_align(AP_STACK_SIZE, 16).expect("valid stack layout");
        // SAFETY: the layout has a non-zero size.
        let stack = unsafe { alloc(layout) };
        if stack.is_null() {
            handle_alloc_error(layout);
        }
        let data = PerCpu::leak_new(count);
        STARTED.store(false, Ordering::Release);
        // SAFETY: the slots lie in the trampoline page copied above; no AP is
        // starting (the previous one reported), so no one reads them now.
        unsafe {
            slot(addr_of!(tr_stack)).write_volatile((stack as usize + AP_STACK_SIZE) as u64);
            slot(addr_of!(tr_percpu)).write_volatile(data as *const PerCpu as u64);
            slot(addr_of!(tr_work)).write_volatile(work as usize as u64);
        }
        apic::send_init(apic_id);
        pit::delay_us(10_000);
        apic::send_startup(apic_id, (TRAMPOLINE >> 12) as u8);
        pit::delay_us(200);
        if !STARTED.load(Ordering::Acquire) {
            apic::send_startup(apic_id, (TRAMPOLINE >> 12) as u8);
        }
        let mut waited = 0;
        while !STARTED.load(Ordering::Acquire) {
            if waited == START_TIMEOUT_MS {
                return Err(format!("the CPU with APIC ID {apic_id} did not start"));
            }
            pit::delay_us(1000);
            waited += 1;
        }
        online[count] = apic_id;
        count += 1;
    }
    Ok((online, count))
}

/// The AP's first Rust code, on its heap stack with interrupts disabled
/// (the trampoline's `cli`), called with its per-CPU data and work function.
extern "C" fn ap_main(data: &'static PerCpu, work: ApWork) -> ! {
    // SAFETY: `data` was allocated for this AP alone by `start_aps`, and this
    // is the AP's first code: nothing has asked for the CPU index yet.
    unsafe { percpu::install(data) };
    trap::load();
    apic::enable();
    STARTED.store(true, Ordering::Release);
    work(data)
}
