//! PVH entry: the Xen ELF note and the 32-bit stub that enters long mode.
//!
//! `qemu-system-x86_64 -kernel` loads this ELF at 1 MiB and, finding the
//! `XEN_ELFNOTE_PHYS32_ENTRY` note (type 18), jumps to [`pvh_start32`] in 32-bit
//! protected mode with paging off and `%ebx` holding the physical address of
//! the `hvm_start_info` structure. The stub:
//!
//! 1. zeroes `.bss` (which holds the boot stack and the boot page tables),
//! 2. identity-maps the first [`IDENTITY_MAPPED`] bytes with 2 MiB pages
//!    (one PML4 entry, one PDPT entry, one full page directory),
//! 3. enables PAE, loads CR3, sets EFER.LME and CR0.PG, loads a GDT with a
//!    64-bit code segment and far-jumps to 64-bit code,
//! 4. calls `kernel_start(start_info_paddr)` on the boot stack.
//!
//! The APs (see `smp`) load the same GDT (`boot_gdt_pointer`) and page tables.
//!
//! [`pvh_start32`]: https://xenbits.xen.org/docs/unstable/misc/pvh.html

use core::ptr::addr_of;

/// Bytes identity-mapped by the boot stub: 512 page-directory entries of
/// 2 MiB each. Every heap region taken from the memory map is capped to it.
pub const IDENTITY_MAPPED: usize = 512 * 2 * 1024 * 1024;

/// Size of the boot stack, reclaimed into the heap once the kernel has moved
/// to a heap-allocated stack.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    r#"
    /* The PVH entry note: name "Xen", type 18, an 8-byte descriptor holding
       the physical address of the 32-bit entry point. */
    .pushsection .note.pvh, "a", @note
    .p2align 2
    .long 4                     /* namesz */
    .long 8                     /* descsz */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32
    .popsection

    .pushsection .bss.boot, "aw", @nobits
    .p2align 12
    .global boot_pml4
boot_pml4:
    .space 4096
    .global boot_pdpt
boot_pdpt:
    .space 4096
    .global boot_pd
boot_pd:
    .space 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .space {stack_size}
    .global boot_stack_top
boot_stack_top:
    .popsection

    .pushsection .rodata.boot_gdt, "a"
    .p2align 3
boot_gdt:
    .quad 0                     /* null descriptor */
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, present, ring 0 */
    .quad 0x00cf92000000ffff    /* 0x10: data, present, ring 0 */
boot_gdt_end:
    .p2align 3
    .global boot_gdt_pointer
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt
    .popsection

    .pushsection .text.boot32, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %esi             /* hvm_start_info, kept in esi */

    /* Zero .bss: boot stack, page tables and every Rust static in .bss. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    movl $boot_stack_top, %esp

    /* PML4[0] -> PDPT, PDPT[0] -> PD (present | writable). */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $0x3, %eax
    movl %eax, boot_pdpt

    /* PD[i] = i * 2 MiB | present | writable | huge. */
    xorl %ecx, %ecx
4:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_pd(,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jne 4b

    /* CR4.PAE, CR3, EFER.LME, then CR0.PG | CR0.PE. */
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $2f

    .code64
2:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs

    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl %esi, %edi             /* zero-extended: first argument */
    call kernel_start
3:
    hlt
    jmp 3b
    .popsection
    "#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    static boot_stack_bottom: u8;
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// The boot stack, as `(start, size)`.
pub fn boot_stack() -> (usize, usize) {
    // Only the address of the linker symbol is taken, never its value.
    (addr_of!(boot_stack_bottom) as usize, BOOT_STACK_SIZE)
}

/// The kernel image in physical memory, as `(start, end)`, page aligned
/// (bss, boot stack and boot page tables included).
pub fn kernel_image() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken.
    (
        addr_of!(__kernel_start) as usize,
        addr_of!(__kernel_end) as usize,
    )
}
