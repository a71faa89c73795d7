//! Where the allocator's memory comes from: the [`Memory`] trait and
//! [`System`], the process break and anonymous mappings of
//! `region_heap_hosted::source`.
//!
//! The seed's traces fix every system call: the first heap use asks for the
//! break (`brk(0)`) and moves it once (`brk(start + 128 KiB)`); each growth
//! is one `brk(end + n)`; each large block is one
//! `mmap(NULL, size + 32, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)`
//! and its free one `munmap` of the same length. `source::ProgramBreak`,
//! `source::map` and `source::unmap` make exactly these calls and nothing
//! else (no `sbrk`, whose cached break could disagree), so [`System`] only
//! forwards to them.

use core::ptr::NonNull;

use region_heap_hosted::source;

/// A supplier of heap and mapped memory.
///
/// # Safety
/// `grow` hands out each byte once, contiguously after the previous range
/// (a heap block may grow over the boundary); `map` hands out fresh
/// ranges that nothing else uses until they are unmapped.
pub unsafe trait Memory {
    /// Extends the heap by `bytes` and returns the start of the new range
    /// (the old end), or `None` (nothing changed).
    fn grow(&self, bytes: usize) -> Option<NonNull<u8>>;

    /// A fresh writable range of `len` bytes, or `None`.
    fn map(&self, len: usize) -> Option<NonNull<u8>>;

    /// Gives back a range from [`Memory::map`].
    ///
    /// # Safety
    /// `addr..addr + len` is exactly a range `map` returned, no longer used.
    unsafe fn unmap(&self, addr: NonNull<u8>, len: usize);

    /// The page size: `os_calloc`'s mapping threshold.
    fn page_size(&self) -> usize;
}

/// The process break and anonymous mappings, one system call each.
pub struct System {
    program_break: source::ProgramBreak,
}

impl System {
    /// The process's memory; the break is not queried before first use.
    pub const fn new() -> Self {
        System {
            program_break: source::ProgramBreak::new(),
        }
    }
}

impl Default for System {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `ProgramBreak` moves the break only up, handing out contiguous
// ranges; `source::map` returns fresh anonymous mappings.
unsafe impl Memory for System {
    fn grow(&self, bytes: usize) -> Option<NonNull<u8>> {
        self.program_break.grow(bytes)
    }

    fn map(&self, len: usize) -> Option<NonNull<u8>> {
        source::map(len)
    }

    unsafe fn unmap(&self, addr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded from the caller. A refused `munmap` leaves the
        // mapping in place: the seed ignores the result too.
        unsafe { source::unmap(addr, len) };
    }

    fn page_size(&self) -> usize {
        source::page_size()
    }
}
