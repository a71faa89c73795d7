//! CPU exceptions: report them on the serial console and exit with the panic
//! status, instead of the silent triple fault (QEMU status 0) that an empty
//! IDT gives.
//!
//! The `x86-interrupt` calling convention is not stable, so each vector gets
//! a small assembly stub that pushes a dummy error code when the CPU pushes
//! none, pushes its vector number and calls [`trap_report`]. The handlers
//! never return. The IDT also holds the local APIC timer's entry
//! ([`timer`]) and the spurious interrupt's, which only returns.

use spin::Once;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

use crate::exit::{exit, Status};
use crate::{apic, timer};

core::arch::global_asm!(
    r#"
    .macro trap_stub vector, has_error
    .p2align 4
trap_stub_\vector:
    .if \has_error == 0
    push 0
    .endif
    push \vector
    jmp trap_common
    .endm

    .pushsection .text.trap, "ax"
    trap_stub 0, 0
    trap_stub 1, 0
    trap_stub 2, 0
    trap_stub 3, 0
    trap_stub 4, 0
    trap_stub 5, 0
    trap_stub 6, 0
    trap_stub 7, 0
    trap_stub 8, 1
    trap_stub 9, 0
    trap_stub 10, 1
    trap_stub 11, 1
    trap_stub 12, 1
    trap_stub 13, 1
    trap_stub 14, 1
    trap_stub 16, 0
    trap_stub 17, 1
    trap_stub 18, 0
    trap_stub 19, 0
    trap_stub 20, 0
    trap_stub 21, 1

    /* The local APIC's spurious interrupt: no EOI, nothing to do. */
    .p2align 4
    .global trap_spurious
trap_spurious:
    iretq

trap_common:
    mov rdi, [rsp]              /* vector */
    mov rsi, [rsp + 8]          /* error code */
    mov rdx, [rsp + 16]         /* saved rip */
    mov rcx, [rsp + 40]         /* saved rsp */
    and rsp, -16
    call {report}
    ud2
    .popsection

    .pushsection .rodata.trap, "a"
    .p2align 3
    .global trap_stubs
trap_stubs:
    .quad trap_stub_0, trap_stub_1, trap_stub_2, trap_stub_3
    .quad trap_stub_4, trap_stub_5, trap_stub_6, trap_stub_7
    .quad trap_stub_8, trap_stub_9, trap_stub_10, trap_stub_11
    .quad trap_stub_12, trap_stub_13, trap_stub_14, 0
    .quad trap_stub_16, trap_stub_17, trap_stub_18, trap_stub_19
    .quad trap_stub_20, trap_stub_21
    .popsection
    "#,
    report = sym trap_report,
);

/// Vectors 0 to 21 (15 is reserved, its slot is 0).
const STUBS: usize = 22;

unsafe extern "C" {
    static trap_stubs: [u64; STUBS];
    fn trap_spurious();
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Builds the IDT (exception entries that report and exit, the timer and
/// the spurious interrupt of the local APIC) and loads it.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        // SAFETY: `trap_stubs` is an initialized table in .rodata.
        let stubs = unsafe { trap_stubs };
        let addr = |vector: usize| VirtAddr::new(stubs[vector]);
        // SAFETY: for every `set_handler_addr` call below, the stub is a
        // handler for its vector that matches the CPU's stack frame (error
        // code or not) and never returns; the timer stub saves every
        // register the called code may clobber and returns with `iretq`, as
        // does the spurious stub, which touches nothing.
        unsafe {
            for vector in [0u8, 1, 2, 3, 4, 5, 6, 7, 9, 16, 19, 20] {
                idt[vector].set_handler_addr(addr(usize::from(vector)));
            }
            idt.double_fault.set_handler_addr(addr(8));
            idt.invalid_tss.set_handler_addr(addr(10));
            idt.segment_not_present.set_handler_addr(addr(11));
            idt.stack_segment_fault.set_handler_addr(addr(12));
            idt.general_protection_fault.set_handler_addr(addr(13));
            idt.page_fault.set_handler_addr(addr(14));
            idt.alignment_check.set_handler_addr(addr(17));
            idt.machine_check.set_handler_addr(addr(18));
            idt.cp_protection_exception.set_handler_addr(addr(21));
            idt[timer::VECTOR].set_handler_addr(VirtAddr::new(timer::stub_address()));
            idt[apic::SPURIOUS_VECTOR]
                .set_handler_addr(VirtAddr::new(trap_spurious as *const () as u64));
        }
        idt
    });
    idt.load();
}

/// Loads the IDT built by [`init`] on the running CPU (an AP).
pub fn load() {
    IDT.get().expect("trap::init ran on the BSP").load();
}

/// Called by the stubs: prints the exception and exits with the panic status.
extern "C" fn trap_report(vector: u64, error: u64, rip: u64, rsp: u64) -> ! {
    let name = match vector {
        0 => "divide error",
        3 => "breakpoint",
        6 => "invalid opcode",
        8 => "double fault",
        13 => "general protection fault",
        14 => "page fault",
        _ => "exception",
    };
    crate::eprintln!(
        "EXCEPTION: {name} (vector {vector}, error code {error:#x}) at rip {rip:#x}, rsp {rsp:#x}"
    );
    if vector == 14 {
        crate::eprintln!("  faulting address (cr2): {:#x}", Cr2::read_raw());
    }
    exit(Status::Panic)
}
