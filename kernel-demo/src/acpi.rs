//! Finding the CPUs: the ACPI MADT (signature `APIC`), reached from the RSDP
//! whose address the PVH start info gives (`rsdp_paddr`), or found by the
//! ACPI scan of the BIOS area (0xE0000..0x100000) when it gives none.
//!
//! Invariants: a table is read only after its whole range has been checked
//! to lie inside the boot identity map, and used only if its checksum holds;
//! the tables are only read. The firmware keeps them in memory that the
//! memory map marks reserved, so the heap never owns them.

use core::mem::size_of;
use core::ptr;

use crate::boot::IDENTITY_MAPPED;

/// At most this many enabled local APICs are kept from the MADT.
pub const MAX_LAPICS: usize = 64;
/// Size of an ACPI table header.
const HEADER: usize = 36;
/// MADT entry type of a processor local APIC.
const ENTRY_LAPIC: u8 = 0;
/// MADT entry type of a local APIC address override.
const ENTRY_LAPIC_OVERRIDE: u8 = 5;

/// What the MADT says about the CPUs.
#[derive(Clone, Copy, Debug)]
pub struct Madt {
    /// Physical address of the local APIC registers.
    pub lapic_base: usize,
    ids: [u8; MAX_LAPICS],
    len: usize,
    /// Enabled local APICs beyond [`MAX_LAPICS`], not kept.
    pub dropped: usize,
}

impl Madt {
    /// The APIC IDs of the enabled CPUs, in MADT order (the BSP among them).
    pub fn apic_ids(&self) -> &[u8] {
        &self.ids[..self.len]
    }
}

/// Reads a `T` at physical address `addr` if it lies in the identity map.
///
/// # Safety
///
/// Nothing may write the bytes at `addr` concurrently (firmware tables).
unsafe fn read<T: Copy>(addr: usize) -> Result<T, &'static str> {
    let end = addr
        .checked_add(size_of::<T>())
        .ok_or("ACPI address overflows")?;
    if addr == 0 || end > IDENTITY_MAPPED {
        return Err("ACPI table outside the identity map");
    }
    // SAFETY: the range is identity-mapped (checked above) and not written
    // concurrently (the caller's guarantee); the read tolerates any
    // alignment.
    Ok(unsafe { ptr::read_unaligned(addr as *const T) })
}

/// Whether the `len` bytes at `addr` sum to zero (the ACPI checksum).
///
/// # Safety
///
/// As for [`read`].
unsafe fn checksum_ok(addr: usize, len: usize) -> Result<bool, &'static str> {
    let mut sum = 0u8;
    for i in 0..len {
        // SAFETY: forwarded from the caller.
        sum = sum.wrapping_add(unsafe { read::<u8>(addr + i) }?);
    }
    Ok(sum == 0)
}

/// Whether a valid RSDP (signature and checksum of its first 20 bytes) lies
/// at `addr`.
///
/// # Safety
///
/// As for [`read`].
unsafe fn is_rsdp(addr: usize) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { read::<[u8; 8]>(addr) }.is_ok_and(|sig| &sig == b"RSD PTR ")
        // SAFETY: forwarded from the caller.
        && unsafe { checksum_ok(addr, 20) } == Ok(true)
}

/// The RSDP: at `hint` if non-zero, else found by scanning the BIOS area.
///
/// # Safety
///
/// As for [`read`].
unsafe fn find_rsdp(hint: usize) -> Result<usize, &'static str> {
    if hint != 0 {
        // SAFETY: forwarded from the caller.
        return if unsafe { is_rsdp(hint) } {
            Ok(hint)
        } else {
            Err("no valid RSDP at the address the start info gives")
        };
    }
    (0xE_0000..0x10_0000)
        .step_by(16)
        // SAFETY: forwarded from the caller.
        .find(|&addr| unsafe { is_rsdp(addr) })
        .ok_or("no RSDP in the BIOS area")
}

/// Finds the MADT from the RSDP at `rsdp_hint` (0: scan for it) and lists the
/// enabled local APICs.
///
/// # Safety
///
/// The ACPI tables of the firmware must be intact and nothing may write them
/// (QEMU's firmware leaves them in reserved memory).
pub unsafe fn find_madt(rsdp_hint: usize) -> Result<Madt, &'static str> {
    // SAFETY: for every `read` and `checksum_ok` below, the caller guarantees
    // that the firmware's tables are intact and not written; every address
    // comes from them and is checked against the identity map by `read`.
    unsafe {
        let rsdp = find_rsdp(rsdp_hint)?;
        let revision = read::<u8>(rsdp + 15)?;
        // ACPI 2.0+: the XSDT (64-bit entries), else the RSDT (32-bit).
        let (root, entry_size) = match read::<u64>(rsdp + 24) {
            Ok(xsdt) if revision >= 2 && xsdt != 0 => (xsdt as usize, 8),
            _ => (read::<u32>(rsdp + 16)? as usize, 4),
        };
        let root_len = read::<u32>(root + 4)? as usize;
        if root_len < HEADER || !checksum_ok(root, root_len)? {
            return Err("the RSDT/XSDT checksum fails");
        }
        for i in 0..(root_len - HEADER) / entry_size {
            let at = root + HEADER + i * entry_size;
            let table = if entry_size == 8 {
                read::<u64>(at)? as usize
            } else {
                read::<u32>(at)? as usize
            };
            if &read::<[u8; 4]>(table)? == b"APIC" {
                return parse_madt(table);
            }
        }
        Err("the ACPI tables have no MADT")
    }
}

/// Parses the MADT at `table`.
///
/// # Safety
///
/// As for [`read`].
unsafe fn parse_madt(table: usize) -> Result<Madt, &'static str> {
    // SAFETY: for every `read` and `checksum_ok` below, forwarded from the
    // caller; `read` checks each address against the identity map.
    unsafe {
        let len = read::<u32>(table + 4)? as usize;
        if len < HEADER + 8 || !checksum_ok(table, len)? {
            return Err("the MADT checksum fails");
        }
        let mut madt = Madt {
            lapic_base: read::<u32>(table + HEADER)? as usize,
            ids: [0; MAX_LAPICS],
            len: 0,
            dropped: 0,
        };
        let mut at = table + HEADER + 8;
        while at + 2 <= table + len {
            let kind = read::<u8>(at)?;
            let entry_len = read::<u8>(at + 1)? as usize;
            if entry_len < 2 || at + entry_len > table + len {
                return Err("a MADT entry overruns the table");
            }
            match kind {
                ENTRY_LAPIC if entry_len >= 8 => {
                    let apic_id = read::<u8>(at + 3)?;
                    let flags = read::<u32>(at + 4)?;
                    if flags & 1 != 0 {
                        if madt.len < MAX_LAPICS {
                            madt.ids[madt.len] = apic_id;
                            madt.len += 1;
                        } else {
                            madt.dropped += 1;
                        }
                    }
                }
                ENTRY_LAPIC_OVERRIDE if entry_len >= 12 => {
                    madt.lapic_base = read::<u64>(at + 4)? as usize;
                }
                _ => {}
            }
            at += entry_len;
        }
        Ok(madt)
    }
}
