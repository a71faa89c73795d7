//! Memory sources: where hosted heaps get their memory from the kernel.
//!
//! Three system calls, issued raw (never through glibc's `sbrk`, which
//! keeps its own idea of the break) so that every call is ours, counted
//! and reported to an observer:
//! - [`brk`]: moves the program break. [`ProgramBreak`] tracks the break
//!   this process owns and grows it contiguously;
//! - [`map`]: an anonymous private mapping;
//! - [`unmap`]: gives a mapping back.
//!
//! [`BrkSource`] and [`MmapSource`] wrap them as
//! [`region_heap::MemorySource`]s, the trait a kernel's growth hook
//! implements too. `BrkSource` falls back to `mmap` when the break cannot
//! move (a limit, or another library moved it).
//!
//! Two additions for the malloc shim: [`SharedBreak`] grows the break
//! through glibc's `brk` wrapper, so that glibc's cached break (used by
//! any `sbrk` caller in the process) stays right; [`remap`] (`mremap`)
//! resizes a large block's mapping, counted by [`remap_count`].
//!
//! Invariants:
//! - nothing here allocates: the functions run inside `malloc`;
//! - [`ProgramBreak`] hands out only memory between the break it found at
//!   its first call and the break it last set; it never moves the break
//!   back below memory it handed out.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use region_heap::MemorySource;
use spin::Mutex;

/// One system call made by this module, with its arguments and result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    /// `brk(request)` returned `result` (the new break; the old one on
    /// failure).
    Brk {
        /// The requested break (0 asks for the current one).
        request: usize,
        /// The break after the call.
        result: usize,
    },
    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
    /// -1, 0)` returned `result` (`usize::MAX` is `MAP_FAILED`).
    Mmap {
        /// Length of the mapping.
        len: usize,
        /// Its address, or `usize::MAX`.
        result: usize,
    },
    /// `munmap(addr, len)` returned `result`.
    Munmap {
        /// Start of the mapping.
        addr: usize,
        /// Its length.
        len: usize,
        /// 0 on success, -1 on failure.
        result: i32,
    },
}

/// How many system calls of each kind this module has made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCounts {
    /// `brk` calls, including queries of the current break.
    pub brk: u64,
    /// `mmap` calls.
    pub mmap: u64,
    /// `munmap` calls.
    pub munmap: u64,
}

static BRK_CALLS: AtomicU64 = AtomicU64::new(0);
static MMAP_CALLS: AtomicU64 = AtomicU64::new(0);
static MUNMAP_CALLS: AtomicU64 = AtomicU64::new(0);
/// The observer, as a `fn(&Syscall)` cast to `usize`; 0 when none.
static OBSERVER: AtomicUsize = AtomicUsize::new(0);

/// The system calls made so far.
pub fn counts() -> SyscallCounts {
    SyscallCounts {
        brk: BRK_CALLS.load(Ordering::Relaxed),
        mmap: MMAP_CALLS.load(Ordering::Relaxed),
        munmap: MUNMAP_CALLS.load(Ordering::Relaxed),
    }
}

/// Calls `observer` after every system call of this module (`None`
/// removes it). The observer runs inside `malloc`: it must not allocate
/// through the heap that called it.
pub fn set_observer(observer: Option<fn(&Syscall)>) {
    OBSERVER.store(observer.map_or(0, |f| f as usize), Ordering::Release);
}

fn observe(call: Syscall) {
    let raw = OBSERVER.load(Ordering::Acquire);
    if raw != 0 {
        // SAFETY: only `set_observer` stores a non-zero value, and it
        // stores a `fn(&Syscall)` cast to `usize`.
        let observer: fn(&Syscall) = unsafe { core::mem::transmute::<usize, fn(&Syscall)>(raw) };
        observer(&call);
    }
}

/// The raw `brk` system call: asks for the break to be `request` (0 to
/// query it) and returns the break after the call.
pub fn brk(request: usize) -> usize {
    // SAFETY: `brk` takes one integer and touches no memory of ours;
    // moving the break over memory in use is what `ProgramBreak` prevents.
    let result = unsafe { libc::syscall(libc::SYS_brk, request) } as usize;
    BRK_CALLS.fetch_add(1, Ordering::Relaxed);
    observe(Syscall::Brk { request, result });
    result
}

/// Maps `len` bytes of fresh zeroed memory, read-write and private.
pub fn map(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous mapping at an address the kernel chooses
    // overlaps nothing we own.
    let ptr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    MMAP_CALLS.fetch_add(1, Ordering::Relaxed);
    observe(Syscall::Mmap {
        len,
        result: ptr as usize,
    });
    if ptr == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(ptr.cast())
    }
}

/// Unmaps `len` bytes at `addr`; returns whether the kernel agreed.
///
/// # Safety
/// The range must be a mapping (or whole pages of one) that nothing uses
/// any more.
pub unsafe fn unmap(addr: NonNull<u8>, len: usize) -> bool {
    // SAFETY: the caller guarantees the range is unused.
    let result = unsafe { libc::munmap(addr.as_ptr().cast(), len) };
    MUNMAP_CALLS.fetch_add(1, Ordering::Relaxed);
    observe(Syscall::Munmap {
        addr: addr.as_ptr() as usize,
        len,
        result,
    });
    result == 0
}

/// The page size of the machine.
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: `sysconf` reads a constant of the system.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    };
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// The part of the data segment this process grows with `brk`.
///
/// The first call asks the kernel for the current break (`brk(0)`); each
/// growth then asks for exactly the new end, one system call.
pub struct ProgramBreak {
    /// The break as last set by us; 0 before the first call.
    end: Mutex<usize>,
}

impl ProgramBreak {
    /// A break not queried yet: no system call until first use.
    pub const fn new() -> Self {
        Self { end: Mutex::new(0) }
    }

    /// The current break (queried with `brk(0)` on first use).
    pub fn current(&self) -> usize {
        let mut end = self.end.lock();
        Self::ensure_known(&mut end);
        *end
    }

    fn ensure_known(end: &mut usize) {
        if *end == 0 {
            *end = brk(0);
        }
    }

    /// Moves the break up by `bytes` and returns the start of the new
    /// range, or `None` (break unchanged) when the kernel refuses or
    /// `bytes` would overflow.
    pub fn grow(&self, bytes: usize) -> Option<NonNull<u8>> {
        let mut end = self.end.lock();
        Self::ensure_known(&mut end);
        let old = *end;
        let new = old.checked_add(bytes)?;
        let result = brk(new);
        if result != new {
            // Another library may have moved the break: learn where it is,
            // but hand out nothing.
            *end = result;
            return None;
        }
        *end = new;
        NonNull::new(old as *mut u8)
    }

    /// Moves the break down by `bytes` (memory handed out last comes
    /// back to the kernel); returns whether it moved.
    ///
    /// # Safety
    /// The top `bytes` below the current break must be memory this break
    /// handed out and nothing uses any more.
    pub unsafe fn shrink(&self, bytes: usize) -> bool {
        let mut end = self.end.lock();
        let Some(new) = end.checked_sub(bytes) else {
            return false;
        };
        if *end == 0 {
            return false;
        }
        let result = brk(new);
        *end = result;
        result == new
    }
}

impl Default for ProgramBreak {
    fn default() -> Self {
        Self::new()
    }
}

/// Rounds `size` up to a multiple of `unit` (a power of two), or `None` on
/// overflow.
pub fn round_up(size: usize, unit: usize) -> Option<usize> {
    debug_assert!(unit.is_power_of_two());
    Some(size.checked_add(unit - 1)? & !(unit - 1))
}

/// A growth hook over the program break, with `mmap` as the fallback.
///
/// Each growth asks for at least `step` bytes so that a heap grows in few
/// system calls; when the break cannot move it maps the same amount.
pub struct BrkSource {
    program_break: ProgramBreak,
    step: usize,
}

impl BrkSource {
    /// A source that grows the break by at least `step` bytes at a time.
    pub const fn new(step: usize) -> Self {
        Self {
            program_break: ProgramBreak::new(),
            step,
        }
    }

    /// The program break this source moves.
    pub fn program_break(&self) -> &ProgramBreak {
        &self.program_break
    }
}

// SAFETY: the break only moves up over memory nobody else was given, and
// mappings are fresh; neither is ever given back while handed out.
unsafe impl MemorySource for BrkSource {
    fn grow(&self, min_size: usize) -> Option<(NonNull<u8>, usize)> {
        let size = round_up(min_size.max(self.step), page_size())?;
        if let Some(start) = self.program_break.grow(size) {
            return Some((start, size));
        }
        map(size).map(|start| (start, size))
    }
}

/// A growth hook that maps fresh memory, at least `step` bytes at a time.
pub struct MmapSource {
    step: usize,
}

impl MmapSource {
    /// A source that maps at least `step` bytes at a time.
    pub const fn new(step: usize) -> Self {
        Self { step }
    }
}

// SAFETY: every range is a fresh mapping, never unmapped by this source.
unsafe impl MemorySource for MmapSource {
    fn grow(&self, min_size: usize) -> Option<(NonNull<u8>, usize)> {
        let size = round_up(min_size.max(self.step), page_size())?;
        map(size).map(|start| (start, size))
    }
}

/// The program break shared with glibc's own `brk`/`sbrk`.
///
/// [`ProgramBreak`] keeps a private idea of the break; a library that
/// later calls glibc's `sbrk` would then start from glibc's stale break
/// and could move it *down* over our memory. `SharedBreak` instead asks
/// the kernel where the break is (`brk(0)`, raw) and moves it with glibc's
/// `brk` wrapper, which updates glibc's cached break too: two system calls
/// per growth, both counted and observed. Whoever moved the break before
/// (glibc, another library) is respected: growth starts where it is now.
pub struct SharedBreak {
    lock: Mutex<()>,
}

impl SharedBreak {
    /// A break source; no system call until first use.
    pub const fn new() -> Self {
        Self {
            lock: Mutex::new(()),
        }
    }

    /// Moves the break up by `bytes` and returns the start of the new
    /// range, or `None` (break unchanged) when the kernel refuses.
    pub fn grow(&self, bytes: usize) -> Option<NonNull<u8>> {
        let _serialised = self.lock.lock();
        let current = brk(0);
        let new = current.checked_add(bytes)?;
        // SAFETY: glibc's `brk` only moves the break up here, over memory
        // nobody was given; it also records the new break for `sbrk`.
        let moved = unsafe { libc::brk(new as *mut libc::c_void) } == 0;
        BRK_CALLS.fetch_add(1, Ordering::Relaxed);
        observe(Syscall::Brk {
            request: new,
            result: if moved { new } else { current },
        });
        if moved {
            NonNull::new(current as *mut u8)
        } else {
            None
        }
    }
}

impl SharedBreak {
    /// In a forked child: frees the lock if `fork` copied it held. The
    /// lock guards no memory of ours, only the order of the two calls, and
    /// [`SharedBreak::grow`] asks the kernel where the break is each time.
    ///
    /// # Safety
    /// Only in a child just forked, in its one thread.
    pub unsafe fn after_fork_in_child(&self) {
        if self.lock.is_locked() {
            // SAFETY: its holder does not exist in the child.
            unsafe { self.lock.force_unlock() };
        }
    }
}

impl Default for SharedBreak {
    fn default() -> Self {
        Self::new()
    }
}

static MREMAP_CALLS: AtomicU64 = AtomicU64::new(0);

/// `mremap` calls made by [`remap`] (kept apart from [`SyscallCounts`],
/// whose fields are fixed, and not reported to the observer, whose
/// [`Syscall`] variants are fixed too).
pub fn remap_count() -> u64 {
    MREMAP_CALLS.load(Ordering::Relaxed)
}

/// Resizes the mapping `[addr, addr + old_len)` to `new_len` bytes, moving
/// it if it cannot grow in place (`MREMAP_MAYMOVE`); the pages it had keep
/// their contents. Returns the new address, or `None` (mapping unchanged).
///
/// # Safety
/// The range is a whole mapping (page-aligned) that the caller owns; on
/// success the old addresses must no longer be used.
pub unsafe fn remap(addr: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
    // SAFETY: the caller owns the mapping; the kernel moves it as a whole.
    let ptr = unsafe { libc::mremap(addr.as_ptr().cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
    MREMAP_CALLS.fetch_add(1, Ordering::Relaxed);
    if ptr == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(ptr.cast())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn break_grows_contiguously_and_is_counted() {
        let before = counts();
        let program_break = ProgramBreak::new();
        let start = program_break.current();
        let a = program_break.grow(4096).expect("brk grows");
        let b = program_break.grow(8192).expect("brk grows");
        assert_eq!(a.as_ptr() as usize, start);
        assert_eq!(b.as_ptr() as usize, start + 4096);
        // SAFETY: the pages were just handed out by this break and are
        // unused.
        unsafe {
            a.as_ptr().write(1);
            b.as_ptr().add(8191).write(2);
            assert!(program_break.shrink(8192 + 4096));
        }
        assert_eq!(program_break.current(), start);
        let after = counts();
        assert!(after.brk >= before.brk + 4);
    }

    #[test]
    fn mappings_are_zeroed_and_counted() {
        let before = counts();
        let len = 3 * page_size();
        let p = map(len).expect("mmap");
        // SAFETY: a fresh mapping of `len` bytes.
        unsafe {
            assert_eq!(p.as_ptr().add(len - 1).read(), 0);
            p.as_ptr().write(7);
            assert!(unmap(p, len));
        }
        let after = counts();
        assert!(after.mmap > before.mmap && after.munmap > before.munmap);
    }

    #[test]
    fn remapping_keeps_contents_and_is_counted() {
        let before = remap_count();
        let len = page_size();
        let p = map(len).expect("mmap");
        // SAFETY: a fresh mapping, grown then unmapped at its new place.
        unsafe {
            p.as_ptr().write(42);
            let q = remap(p, len, 4 * len).expect("mremap");
            assert_eq!(q.as_ptr().read(), 42);
            q.as_ptr().add(4 * len - 1).write(1);
            assert!(unmap(q, 4 * len));
        }
        assert!(remap_count() > before);
    }

    #[test]
    fn sources_round_to_pages() {
        let source = MmapSource::new(1);
        let (p, size) = source.grow(10).expect("mmap");
        assert_eq!(size, page_size());
        // SAFETY: a fresh mapping of `size` bytes, unused.
        assert!(unsafe { unmap(p, size) });
    }
}
