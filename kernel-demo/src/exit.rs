//! Leaving QEMU through its `isa-debug-exit` device (I/O port 0xF4).
//!
//! Writing `v` to the port ends QEMU with status `(v << 1) | 1`, so every
//! status the kernel chooses is odd and non-zero. A triple fault under
//! `-no-reboot` ends QEMU with status 0, which the runner treats as a failure.

use x86_64::instructions::{hlt, interrupts, port::Port};

/// I/O port of the `isa-debug-exit` device (`iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT_PORT: u16 = 0xF4;

/// How the kernel ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Every self-test passed: QEMU exits with 33.
    Success = 0x10,
    /// A self-test failed: QEMU exits with 35.
    Failure = 0x11,
    /// The kernel panicked or took an exception: QEMU exits with 37.
    Panic = 0x12,
}

/// Ends the QEMU session with `status`. Halts forever if the machine has no
/// `isa-debug-exit` device.
pub fn exit(status: Status) -> ! {
    // SAFETY: the port belongs to QEMU's isa-debug-exit device; on a machine
    // without it, the write goes to an unused port and has no effect.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(status as u32) };
    crate::eprintln!("isa-debug-exit did not stop the machine: halting");
    interrupts::disable();
    loop {
        hlt();
    }
}
