//! The PVH `hvm_start_info` structure and its memory map, copied out of the
//! boot-time memory that holds them.
//!
//! Layout (Xen public header `arch-x86/hvm/start_info.h`): u32 magic
//! (0x336ec578) @0, u32 version @4, u32 flags @8, u32 nr_modules @12,
//! u64 modlist_paddr @16, u64 cmdline_paddr @24, u64 rsdp_paddr @32,
//! u64 memmap_paddr @40, u32 memmap_entries @48, u32 reserved @52. The memory
//! map fields exist from version 1. Each memory map entry is 24 bytes:
//! u64 addr, u64 size, u32 type (1 = usable RAM), u32 reserved.

use core::fmt;
use core::ptr;

use crate::range::Range;

/// `hvm_start_info.magic`.
const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Memory map entry type of usable RAM.
pub const TYPE_RAM: u32 = 1;
/// At most this many memory map entries are kept (QEMU passes about 7).
const MAX_ENTRIES: usize = 32;
/// At most this many bytes of the command line are kept.
const MAX_CMDLINE: usize = 128;
/// Size of one `hvm_modlist_entry`.
const MODLIST_ENTRY_SIZE: usize = 32;

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// One memory map entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEntry {
    /// Physical start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type: 1 usable, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS,
    /// 5 unusable.
    pub kind: u32,
}

impl MemoryEntry {
    /// The entry's range, clipped to the address space (`None` if it lies
    /// wholly above it or is empty).
    pub fn range(&self) -> Option<Range> {
        let start = usize::try_from(self.addr).ok()?;
        let end = self
            .addr
            .checked_add(self.size)
            .map_or(usize::MAX, |e| usize::try_from(e).unwrap_or(usize::MAX));
        (end > start).then_some(Range::new(start, end))
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            1 => "usable",
            2 => "reserved",
            3 => "ACPI",
            4 => "ACPI NVS",
            5 => "unusable",
            _ => "other",
        }
    }
}

impl fmt::Display for MemoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#012x}..{:#012x} {:>10} KiB  type {} ({})",
            self.addr,
            self.addr.saturating_add(self.size),
            self.size / 1024,
            self.kind,
            self.kind_name()
        )
    }
}

/// Why the start info cannot be used.
#[derive(Clone, Copy, Debug)]
pub enum BootInfoError {
    /// `%ebx` did not point at an `hvm_start_info`.
    BadMagic(u32),
    /// Version 0 has no memory map.
    NoMemoryMap { version: u32 },
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => {
                write!(
                    f,
                    "bad hvm_start_info magic {m:#x} (not booted through PVH?)"
                )
            }
            BootInfoError::NoMemoryMap { version } => {
                write!(f, "hvm_start_info version {version} carries no memory map")
            }
        }
    }
}

/// What the kernel keeps of the start info: the memory map, the command line,
/// the RSDP address and the physical ranges that held them, which stay out of the heap.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// Physical address of `hvm_start_info`.
    pub start_info: usize,
    /// `hvm_start_info.version`.
    pub version: u32,
    /// `hvm_start_info.rsdp_paddr`: the ACPI RSDP (0 if the loader gives
    /// none).
    pub rsdp: usize,
    entries: [MemoryEntry; MAX_ENTRIES],
    len: usize,
    /// Entries that did not fit in the copy.
    pub dropped_entries: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    boot_data: [Range; 4],
    boot_data_len: usize,
}

impl BootInfo {
    /// Copies the start info at physical address `start_info`.
    ///
    /// # Safety
    ///
    /// `start_info` must be the value the PVH loader passed in `%ebx`, and the
    /// memory holding the start info, its memory map and its command line must
    /// be identity-mapped and not yet reused.
    pub unsafe fn read(start_info: usize) -> Result<BootInfo, BootInfoError> {
        // SAFETY: the caller guarantees that a PVH start info lives at this
        // identity-mapped address; the read is unaligned-tolerant.
        let info = unsafe { ptr::read_unaligned(start_info as *const HvmStartInfo) };
        if info.magic != START_INFO_MAGIC {
            return Err(BootInfoError::BadMagic(info.magic));
        }
        if info.version < 1 {
            return Err(BootInfoError::NoMemoryMap {
                version: info.version,
            });
        }
        let mut boot = BootInfo {
            start_info,
            version: info.version,
            rsdp: info.rsdp_paddr as usize,
            entries: [MemoryEntry::default(); MAX_ENTRIES],
            len: 0,
            dropped_entries: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            boot_data: [Range::new(0, 0); 4],
            boot_data_len: 0,
        };
        boot.keep_out(start_info, size_of::<HvmStartInfo>());

        let map = info.memmap_paddr as usize;
        let count = info.memmap_entries as usize;
        boot.keep_out(map, count.saturating_mul(size_of::<HvmMemmapEntry>()));
        for i in 0..count {
            if boot.len == MAX_ENTRIES {
                boot.dropped_entries = count - i;
                break;
            }
            let entry_ptr = (map as *const HvmMemmapEntry).wrapping_add(i);
            // SAFETY: the loader wrote `count` entries at `memmap_paddr`, which
            // the caller guarantees is identity-mapped and intact.
            let entry = unsafe { ptr::read_unaligned(entry_ptr) };
            boot.entries[boot.len] = MemoryEntry {
                addr: entry.addr,
                size: entry.size,
                kind: entry.kind,
            };
            boot.len += 1;
        }

        let cmdline = info.cmdline_paddr as usize;
        if cmdline != 0 {
            let mut len = 0;
            loop {
                // SAFETY: the loader passed a NUL-terminated string at
                // `cmdline_paddr`; reading stops at the NUL.
                let byte = unsafe { ptr::read((cmdline as *const u8).wrapping_add(len)) };
                if byte == 0 {
                    break;
                }
                if len < MAX_CMDLINE {
                    boot.cmdline[len] = byte;
                    boot.cmdline_len = len + 1;
                }
                len += 1;
            }
            boot.keep_out(cmdline, len + 1);
        }
        if info.nr_modules != 0 {
            boot.keep_out(
                info.modlist_paddr as usize,
                (info.nr_modules as usize).saturating_mul(MODLIST_ENTRY_SIZE),
            );
        }
        Ok(boot)
    }

    fn keep_out(&mut self, start: usize, len: usize) {
        if len > 0 && self.boot_data_len < self.boot_data.len() {
            self.boot_data[self.boot_data_len] = Range::new(start, start.saturating_add(len));
            self.boot_data_len += 1;
        }
    }

    /// The memory map entries, in the loader's order.
    pub fn entries(&self) -> &[MemoryEntry] {
        &self.entries[..self.len]
    }

    /// The command line (`-append`), lossy if it is not UTF-8.
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len];
        core::str::from_utf8(bytes).unwrap_or("<not UTF-8>")
    }

    /// The ranges that held the start info, memory map, command line and
    /// module list.
    pub fn boot_data(&self) -> &[Range] {
        &self.boot_data[..self.boot_data_len]
    }
}
