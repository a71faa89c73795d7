//! The COM1 serial console (16550 UART at I/O port 0x3F8) and the
//! `print!`/`println!` macros.
//!
//! [`print!`] and [`println!`] take a spin lock so that lines from different
//! contexts do not interleave. Code that may run while that lock is held (the
//! heap growth hook, which runs inside an allocation that a `println!` argument
//! might make; the panic and exception handlers) prints with
//! [`_print_unlocked`] through the [`eprintln!`] macro instead: port I/O needs
//! no memory, so writing without the lock can at worst interleave characters.

use core::fmt::{self, Write};

use spin::Mutex;
use x86_64::instructions::port::Port;

/// I/O base of COM1.
const COM1: u16 = 0x3F8;

/// A 16550 UART driven by polling. It holds nothing but its I/O base.
pub struct SerialPort {
    base: u16,
}

impl SerialPort {
    /// A handle on the UART at `base`.
    const fn new(base: u16) -> Self {
        SerialPort { base }
    }

    /// Programs 115200 baud, 8 data bits, no parity, one stop bit, FIFOs on,
    /// interrupts off.
    fn init(&mut self) {
        for (offset, value) in [
            (1, 0x00), // interrupts off
            (3, 0x80), // DLAB on: the next two writes set the divisor
            (0, 0x01), // divisor low byte: 115200 baud
            (1, 0x00), // divisor high byte
            (3, 0x03), // DLAB off, 8N1
            (2, 0xC7), // FIFOs on and cleared, 14-byte threshold
            (4, 0x0B), // DTR, RTS, OUT2
        ] {
            // SAFETY: the ports belong to COM1's 16550, which only this module
            // drives; writing its configuration registers has no effect on
            // memory.
            unsafe { Port::<u8>::new(self.base + offset).write(value) };
        }
    }

    /// Sends one byte, waiting until the transmit holding register is empty.
    fn send(&mut self, byte: u8) {
        let mut status = Port::<u8>::new(self.base + 5);
        // SAFETY: reading the line status register of COM1 has no side effect
        // on memory.
        while unsafe { status.read() } & 0x20 == 0 {
            core::hint::spin_loop();
        }
        // SAFETY: writing the transmit register of COM1 has no effect on memory.
        unsafe { Port::<u8>::new(self.base).write(byte) };
    }
}

impl Write for SerialPort {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.send(b'\r');
            }
            self.send(byte);
        }
        Ok(())
    }
}

static COM1_PORT: Mutex<SerialPort> = Mutex::new(SerialPort::new(COM1));

/// Programs the UART. Printing before this still works on QEMU, whose UART
/// model ignores the line settings.
pub fn init() {
    COM1_PORT.lock().init();
}

/// A `fmt::Write` on the console, for APIs that take a writer (such as the
/// heap's `dump`); each write takes the console lock.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        COM1_PORT.lock().write_str(s)
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    // Writing to the UART cannot fail.
    let _ = COM1_PORT.lock().write_fmt(args);
}

#[doc(hidden)]
pub fn _print_unlocked(args: fmt::Arguments) {
    // A second handle on the same UART: it has no state to share.
    let _ = SerialPort::new(COM1).write_fmt(args);
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::serial::_print(format_args!($($arg)*)));
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))));
}

/// Prints a line to the serial console without taking its lock: for the heap
/// growth hook and the panic and exception handlers.
#[macro_export]
macro_rules! eprintln {
    ($($arg:tt)*) => ($crate::serial::_print_unlocked(format_args!("{}\n", format_args!($($arg)*))));
}
