//! Leaving the boot stack for a stack allocated on the heap, so that the boot
//! stack can be given to the heap as one more region (as MutekH does with its
//! boot stack).

use alloc::alloc::{alloc, Layout};
use core::arch::asm;

/// Size of the kernel stack allocated on the heap.
pub const KERNEL_STACK_SIZE: usize = 256 * 1024;

/// Allocates a [`KERNEL_STACK_SIZE`] stack on the heap and calls
/// `entry(arg)` on it. The current stack is abandoned: nothing on it is ever
/// used again, so the caller's frames must hold nothing that `entry` needs
/// (pass heap or static data through `arg`).
pub fn switch_to_heap_stack(entry: extern "C" fn(usize) -> !, arg: usize) -> ! {
    let layout = Layout::from_size_align(KERNEL_STACK_SIZE, 16).expect("valid stack layout");
    // SAFETY: the layout has a non-zero size.
    let bottom = unsafe { alloc(layout) };
    if bottom.is_null() {
        alloc::alloc::handle_alloc_error(layout);
    }
    // The stack block is never freed: it is the kernel's stack from now on.
    let top = bottom as usize + KERNEL_STACK_SIZE;
    // SAFETY: `top` is the 16-byte aligned end of a block of
    // KERNEL_STACK_SIZE writable bytes that nothing else owns. At the `call`
    // the stack is 16-byte aligned, as the System V ABI requires, and `entry`
    // never returns, so the abandoned frames are never resumed.
    unsafe {
        asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            top = in(reg) top,
            entry = in(reg) entry,
            in("rdi") arg,
            options(noreturn)
        )
    }
}
