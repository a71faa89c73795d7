//! A kernel heap in the style of "Writing an OS in Rust" (blog_os): the
//! `allocator.rs` of that kernel with region-heap instead of
//! `linked_list_allocator`.
//!
//! Built (not booted) by `cargo xtask test`:
//! `cargo build --manifest-path examples/kernel-heap/Cargo.toml --target x86_64-unknown-none`.
//! The booted, complete demo is `kernel-demo/`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::mem::MaybeUninit;

use region_heap::{HeapError, LockedHeap};

/// blog_os maps `HEAP_START..HEAP_START + HEAP_SIZE` and calls
/// `ALLOCATOR.lock().init(HEAP_START, HEAP_SIZE)`; with region-heap that is
/// `unsafe { HEAP.init(HEAP_START as *mut u8, HEAP_SIZE) }`. This example
/// has no page tables, so its heap area is a static array, which needs no
/// `unsafe` at all: `init_from_slice`.
pub const HEAP_SIZE: usize = 100 * 1024;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// The heap area, handed to the heap once.
static mut HEAP_AREA: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];

pub fn init_heap() {
    // SAFETY: the only reference ever taken to the area, once, at boot.
    let area = unsafe { &mut *core::ptr::addr_of_mut!(HEAP_AREA) };
    HEAP.init_from_slice(area);
}

/// Where a kernel prints: a serial port or the VGA buffer. Writing must not
/// allocate only when the heap is locked (`HEAP.lock()`), never otherwise.
struct Console;

impl Write for Console {
    fn write_str(&mut self, _s: &str) -> fmt::Result {
        Ok(())
    }
}

fn kernel_main() -> Result<(), HeapError> {
    init_heap();
    let x = Box::new(41);
    let mut v: Vec<u64> = (0..500).collect();
    v.push(*x + 1);
    let mut console = Console;
    // Stats, check and dump take the lock only to copy: formatting them,
    // even into a heap-allocated string, is fine.
    let _ = write!(console, "{}", HEAP.stats());
    let _ = HEAP.dump(&mut console);
    HEAP.check()?;
    drop((x, v));
    assert_eq!(HEAP.stats().used_blocks, 0);
    Ok(())
}

/// The entry point the bootloader jumps to.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    if let Err(e) = kernel_main() {
        panic!("heap: {e}");
    }
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
