//! Busy-wait delays on channel 2 of the 8254 PIT, the one timer whose rate
//! (1.193182 MHz) needs no calibration. The AP start-up waits with it and the
//! local APIC timer is calibrated against it.
//!
//! Invariant: only the BSP uses the PIT, and never from an interrupt handler,
//! so its ports are never programmed by two contexts at once. Channel 2
//! raises no interrupt; its output is read through port 0x61.

use x86_64::instructions::port::Port;

/// Input clock of the PIT in Hz.
const PIT_HZ: u64 = 1_193_182;
/// Longest delay one count can give (a 16-bit count): about 54 ms.
const MAX_CHUNK_US: u64 = 50_000;

/// Waits at least `us` microseconds.
pub fn delay_us(us: u64) {
    let mut left = us;
    while left > 0 {
        let chunk = left.min(MAX_CHUNK_US);
        one_shot(((chunk * PIT_HZ).div_ceil(1_000_000)).max(1) as u16);
        left -= chunk;
    }
}

/// Counts `count` PIT periods on channel 2 (mode 0) and waits for its output.
fn one_shot(count: u16) {
    let mut control = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut data = Port::<u8>::new(0x42);
    // SAFETY: ports 0x61, 0x43 and 0x42 belong to the PIT and the speaker
    // gate, which only this module drives (on the BSP alone); programming
    // them has no effect on memory.
    unsafe {
        let gate = control.read() & !0x03; // gate low, speaker off
        control.write(gate);
        command.write(0b1011_0000); // channel 2, low then high byte, mode 0
        data.write(count as u8);
        data.write((count >> 8) as u8);
        control.write(gate | 0x01); // gate high: counting starts
        while control.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
    }
}
