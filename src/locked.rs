//! `LockedHeap`: a heap behind a lock, usable as `#[global_allocator]`.
//!
//! It is generic over the [`Backend`](crate::Backend) it locks, region-heap's
//! [`Heap`] by default, so a kernel swaps heaps by changing one type; the
//! lock, the growth retry and the report handler are the same for all.
//!
//! The `GlobalAlloc` contract cannot return errors, so:
//! - a failed allocation returns null, after asking the growth hook (a
//!   [`MemorySource`]) for memory, if one is set; so does a request no heap
//!   can serve (`SizeOverflow`, `BadAlignment`), which is not a misuse;
//! - a misuse (bad pointer, double free, corruption, wrong layout) goes to
//!   the report handler, [`panic_on_misuse`] by default.
//!
//! Neither the growth hook nor the handler runs with the heap's lock held:
//! both may allocate (a panic message does), and would otherwise deadlock.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::{null_mut, NonNull};

use crate::arena::StaticArena;
use crate::backend::Backend;
use crate::error::HeapError;
use crate::heap::Heap;
use crate::inbox::{Deferred, Inbox};
use crate::lock::{LockGuard, Mutex, RawLock, SpinLock};
use crate::policy::{FitPolicy, GoodFit};
use crate::stats::Stats;

/// A supplier of fresh memory: a kernel mapping new pages, a hosted
/// program calling `mmap` or `brk`.
///
/// # Safety
/// A range returned by `grow` must be valid for reads and writes, used by
/// nothing else, and never reclaimed while the heap lives.
pub unsafe trait MemorySource: Sync {
    /// Returns a fresh range of at least `min_size` bytes, or `None`.
    fn grow(&self, min_size: usize) -> Option<(NonNull<u8>, usize)>;

    /// Takes back `[start, start + size)`, which the heap gave up
    /// ([`LockedHeap::trim`]): nothing in the heap uses it any more, and
    /// the source may unmap it or hand it out again. The range is a whole
    /// chunk of the heap, which may have come from `grow` or from memory
    /// the kernel added itself: a source takes back only what it owns and
    /// ignores the rest. Called with the heap's lock released. The default
    /// keeps everything.
    fn release(&self, start: NonNull<u8>, size: usize) {
        let _ = (start, size);
    }
}

/// What to do with a misuse detected on the `GlobalAlloc` path.
pub type ReportHandler = fn(&HeapError);

/// The default report handler: panics with the error.
pub fn panic_on_misuse(error: &HeapError) {
    panic!("region-heap: {error}");
}

/// A report handler that ignores misuses: the heap is left unchanged and
/// the call returns (null for allocations), like an `errno` return.
pub fn ignore_misuse(_: &HeapError) {}

/// Bytes of the stack buffer [`LockedHeap::dump`] renders into.
pub const DUMP_BUFFER: usize = 2048;

/// Whole lines of text in a fixed buffer; what does not fit is dropped
/// from the first line that does not fit on.
struct LineBuffer<const N: usize> {
    bytes: [u8; N],
    /// Bytes of whole lines.
    len: usize,
    /// Bytes of the current, unfinished line.
    pending: usize,
    cut: bool,
}

impl<const N: usize> LineBuffer<N> {
    fn new() -> Self {
        LineBuffer {
            bytes: [0; N],
            len: 0,
            pending: 0,
            cut: false,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `str`s are copied in, and cut at a newline.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for LineBuffer<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Err(fmt::Error);
        }
        let start = self.len + self.pending;
        if N - start < s.len() {
            self.cut = true;
            self.pending = 0;
            return Err(fmt::Error);
        }
        self.bytes[start..start + s.len()].copy_from_slice(s.as_bytes());
        self.pending += s.len();
        if let Some(end) = s.rfind('\n') {
            let whole = start + end + 1;
            self.pending = start + s.len() - whole;
            self.len = whole;
        }
        Ok(())
    }
}

struct Hooks {
    report: ReportHandler,
    source: Option<&'static dyn MemorySource>,
}

/// How many times one allocation asks the growth hook before giving up.
const GROW_ATTEMPTS: usize = 4;

/// Times an allocation is tried again after it met damage (each time the
/// heap quarantined what it met).
const DAMAGE_RETRIES: usize = 4;

/// A heap behind a lock, with a report handler and a growth hook.
///
/// The backend `B` is region-heap's [`Heap`] by default; any
/// [`Backend`](crate::Backend) fits, so a kernel swaps heaps by changing
/// one type. The lock `L` is a [`SpinLock`] by default; a kernel whose
/// interrupt handlers allocate picks an [`IrqSafeLock`](crate::IrqSafeLock)
/// (see the [`lock`](crate::RawLock) rules):
///
/// ```
/// # use region_heap::*;
/// static HEAP: LockedHeap = LockedHeap::empty();                               // region-heap, good fit
/// # mod a { use region_heap::*;
/// static HEAP: LockedHeap<Heap<BestFit>> = LockedHeap::with_backend(None);    // region-heap, best fit
/// # }
/// # #[cfg(feature = "linked-list")] mod b { use region_heap::*;
/// static HEAP: LockedHeap<LinkedListBackend> = LockedHeap::with_backend(None); // feature `linked-list`
/// # }
/// ```
pub struct LockedHeap<B: Backend = Heap<GoodFit>, L: RawLock = SpinLock> {
    heap: Mutex<B, L>,
    /// Frees left by other CPUs, done at every acquisition of `heap`.
    inbox: Inbox<L>,
    hooks: Mutex<Hooks, L>,
}

impl LockedHeap {
    /// A heap with no memory yet: add some with [`LockedHeap::init`],
    /// [`LockedHeap::add_region`] or a growth hook.
    pub const fn empty() -> Self {
        Self::with_backend(None)
    }

    /// A heap with no memory that gets all of it from `source`, on first use.
    pub const fn with_source(source: &'static dyn MemorySource) -> Self {
        Self::with_backend(Some(source))
    }
}

impl<B: Backend, L: RawLock> LockedHeap<B, L> {
    /// An empty heap of backend `B` with an optional growth hook.
    pub const fn with_backend(source: Option<&'static dyn MemorySource>) -> Self {
        Self::over(B::EMPTY, source)
    }

    /// `heap` (empty, or configured: `Heap::new().with_slabs(false)`)
    /// behind a lock, with an optional growth hook.
    pub const fn over(heap: B, source: Option<&'static dyn MemorySource>) -> Self {
        LockedHeap {
            heap: Mutex::new(heap),
            inbox: Inbox::new(),
            hooks: Mutex::new(Hooks {
                report: panic_on_misuse,
                source,
            }),
        }
    }

    /// Gives `[start, start + size)` to the heap (its first region when the
    /// heap is empty).
    ///
    /// # Panics
    /// If the range is refused (too small, overlapping, or a range the
    /// backend cannot take).
    ///
    /// # Safety
    /// As for [`Backend::add_memory`].
    pub unsafe fn init(&self, start: *mut u8, size: usize) {
        // SAFETY: forwarded from the caller.
        if let Err(e) = unsafe { self.add_memory(start, size) } {
            panic!("region-heap: init: {e}");
        }
    }

    /// Gives `[start, start + size)` to the heap ([`Backend::add_memory`]).
    ///
    /// # Safety
    /// As for [`Backend::add_memory`].
    pub unsafe fn add_memory(&self, start: *mut u8, size: usize) -> Result<(), HeapError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.acquire().add_memory(start, size) }
    }

    /// An empty heap that takes `arena` whole on its first allocation: the
    /// way to make a `LockedHeap` the `#[global_allocator]` of a std
    /// program, which allocates before `main` could call
    /// [`init`](LockedHeap::init).
    pub const fn with_static_arena<const N: usize>(arena: &'static StaticArena<N>) -> Self {
        Self::with_backend(Some(arena))
    }

    /// Gives `memory` to the heap without `unsafe` (its first region when
    /// the heap is empty): a `&'static mut` slice is memory nothing else
    /// will ever use. See [`Heap::add_region_from_slice`] for the smallest
    /// slice region-heap accepts.
    ///
    /// # Panics
    /// If the slice is refused (too small, overlapping the heap).
    pub fn init_from_slice(&self, memory: &'static mut [MaybeUninit<u8>]) {
        // The heap's contract wants initialised bytes (see
        // `Heap::add_region`): zero them once.
        memory.fill(MaybeUninit::new(0));
        // SAFETY: a `'static` exclusive borrow, now initialised: valid for
        // reads and writes, used by nothing else, for as long as the
        // program runs.
        unsafe { self.init(memory.as_mut_ptr().cast(), memory.len()) }
    }

    /// Locks the heap for direct use (the raw API).
    ///
    /// Never allocate from this heap while holding the guard (the lock
    /// spins): `format!("{}", HEAP.lock().stats())` hangs forever, since the
    /// guard lives until the end of the statement and `format!` allocates.
    /// [`LockedHeap::stats`], [`LockedHeap::check`] and
    /// [`LockedHeap::dump`] take the lock only to copy what they need.
    pub fn lock(&self) -> LockGuard<'_, B, L> {
        self.acquire()
    }

    /// Locks the heap if nobody holds it; never waits (and never calls the
    /// report handler).
    pub fn try_lock(&self) -> Option<LockGuard<'_, B, L>> {
        self.try_acquire()
    }

    /// Takes the heap lock, waiting, after doing the frees that wait in
    /// the inbox (see `inbox`); the misuses they met are reported with the
    /// lock released, and the lock taken again.
    // Always inlined: on every call of the `GlobalAlloc` path, a call and
    // its frame cost as much as the lock; the inbox's work is out of line.
    #[inline(always)]
    fn acquire(&self) -> LockGuard<'_, B, L> {
        let heap = self.heap.lock();
        if self.inbox.is_idle() {
            return heap;
        }
        self.acquire_draining(heap)
    }

    /// [`LockedHeap::acquire`] once the inbox was found holding frees (or
    /// kept misuses), with the lock `heap` held.
    #[cold]
    #[inline(never)]
    fn acquire_draining<'a>(&'a self, mut heap: LockGuard<'a, B, L>) -> LockGuard<'a, B, L> {
        loop {
            self.drain_inbox(&mut heap, true);
            let Some(kept) = self.inbox.take_kept() else {
                return heap;
            };
            drop(heap);
            for error in kept.iter() {
                self.report(error);
            }
            heap = self.heap.lock();
            if self.inbox.is_idle() {
                return heap;
            }
        }
    }

    /// [`LockedHeap::acquire`] that never waits: `None` when the heap lock
    /// or the inbox lock is held. Misuses the inbox's frees meet stay kept
    /// for the next reporting call.
    fn try_acquire(&self) -> Option<LockGuard<'_, B, L>> {
        let mut heap = self.heap.try_lock()?;
        if self.inbox.is_idle() || self.drain_inbox(&mut heap, false) {
            Some(heap)
        } else {
            None
        }
    }

    /// Does the inbox's frees on `heap` (its lock held by the caller).
    fn drain_inbox(&self, heap: &mut B, wait: bool) -> bool {
        self.inbox.drain(wait, |free| {
            // SAFETY: pushed by `defer_deallocate`, whose caller gave up
            // the block, allocated from this heap with that layout.
            unsafe { heap.deallocate(free.ptr, free.layout) }
        })
    }

    /// Leaves the free of `ptr` in the inbox, for the heap's next lock
    /// holder (waiting for the inbox lock, not the heap's); `false`
    /// (nothing done) when the inbox is full.
    ///
    /// # Safety
    /// As for [`Backend::deallocate`]; the block may be freed on another
    /// CPU at any time after the call.
    pub(crate) unsafe fn defer_deallocate(&self, ptr: NonNull<u8>, layout: Layout) -> bool {
        self.inbox.push(Deferred { ptr, layout })
    }

    /// Whether the heap's lock is held now (a hint).
    pub(crate) fn is_locked(&self) -> bool {
        self.heap.is_locked()
    }

    /// Releases the heap's lock for a holder that will never run again.
    ///
    /// # Safety
    /// As for [`RawLock::force_unlock`].
    pub(crate) unsafe fn force_unlock(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.heap.force_unlock() }
    }

    /// Releases the hook lock (report handler, growth hook) and the inbox
    /// lock if a holder that will never run again left them held.
    /// Allocation only reads the hooks under the first; only the setters
    /// write them, which a program calls at set-up, so what it guards stays
    /// usable; the inbox changes its count last, after the entry.
    ///
    /// # Safety
    /// Nobody else uses this heap during the call, and no holder of its
    /// hook or inbox lock will ever run again.
    pub(crate) unsafe fn release_side_locks_of_vanished_holder(&self) {
        if self.hooks.is_locked() {
            // SAFETY: held by a holder that will never run again (caller).
            unsafe { self.hooks.force_unlock() };
        }
        // SAFETY: as above; a push cut short leaves at worst its entry
        // uncounted (never freed: a leak), or counted and not yet in
        // `pending` (the next drain sets `pending` whole).
        unsafe { self.inbox.release_of_vanished_holder() };
    }

    /// A statistics snapshot ([`Backend::stats`]); the lock is released
    /// before it returns, so `format!("{}", HEAP.stats())` is fine.
    pub fn stats(&self) -> Stats {
        self.acquire().stats()
    }

    /// Walks the heap ([`Backend::check`]) under the lock and returns the
    /// first inconsistency.
    pub fn check(&self) -> Result<(), HeapError> {
        self.acquire().check()
    }

    /// Gives cached blocks back to the free memory ([`Backend::flush`]).
    pub fn flush(&self) -> Result<(), HeapError> {
        self.acquire().flush()
    }

    /// Writes the block list ([`Backend::dump`]) to `out`, which may
    /// allocate from this very heap (a `String`).
    ///
    /// The dump is rendered under the lock into a buffer of
    /// [`DUMP_BUFFER`] bytes on the stack, and written to `out` once the
    /// lock is released; a longer dump is cut at the last whole line that
    /// fits and ends with a line saying so. For a bigger buffer use
    /// [`LockedHeap::dump_buffered`]; for the whole list of a large heap,
    /// `HEAP.lock().dump(out)` with a writer that does not allocate from
    /// this heap (a serial port).
    pub fn dump(&self, out: &mut impl fmt::Write) -> fmt::Result {
        self.dump_buffered::<DUMP_BUFFER>(out)
    }

    /// [`LockedHeap::dump`] with an `N`-byte stack buffer.
    pub fn dump_buffered<const N: usize>(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let mut buffer = LineBuffer::<N>::new();
        // An error here only means the buffer is full.
        let _ = self.acquire().dump(&mut buffer);
        out.write_str(buffer.as_str())?;
        if buffer.cut {
            writeln!(
                out,
                "... cut: the dump is longer than {N} bytes (dump_buffered::<N>, or lock().dump() with a writer that does not allocate from this heap)"
            )?;
        }
        Ok(())
    }

    /// Sets the handler for misuses detected on the `GlobalAlloc` path.
    pub fn set_report_handler(&self, handler: ReportHandler) {
        self.hooks.lock().report = handler;
    }

    /// Sets the growth hook asked for memory when an allocation fails.
    pub fn set_memory_source(&self, source: &'static dyn MemorySource) {
        self.hooks.lock().source = Some(source);
    }

    /// Frees a block; a misuse goes to the report handler (lock released).
    ///
    /// # Safety
    /// As for [`Backend::deallocate`].
    pub(crate) unsafe fn deallocate_reporting(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        let result = unsafe { self.acquire().deallocate(ptr, layout) };
        if let Err(error) = result {
            self.report(&error);
        }
    }

    pub(crate) fn report(&self, error: &HeapError) {
        let handler = self.hooks.lock().report;
        handler(error);
    }

    /// Runs `op` under the lock; on `OutOfMemory` asks the growth hook for
    /// memory (lock released), adds it and tries again. Damage met on the
    /// way (`Corrupted`) is reported, lock released, and the request tried
    /// again: the heap quarantined it, so the retry does not meet it.
    pub(crate) fn with_growth<T>(
        &self,
        layout: Layout,
        op: impl FnMut(&mut B) -> Result<T, HeapError>,
    ) -> Option<T> {
        self.with_growth_then(layout, op, |_| {})
    }

    /// [`LockedHeap::with_growth`], calling `grown` with the lock still
    /// held each time memory from the growth hook was added (before any of
    /// it can be handed out).
    pub(crate) fn with_growth_then<T>(
        &self,
        layout: Layout,
        mut op: impl FnMut(&mut B) -> Result<T, HeapError>,
        mut grown: impl FnMut(&B),
    ) -> Option<T> {
        let mut damage_retries = DAMAGE_RETRIES;
        let mut attempts = 0;
        while attempts <= GROW_ATTEMPTS {
            let hint = {
                let mut heap = self.acquire();
                match op(&mut heap) {
                    Ok(value) => return Some(value),
                    Err(HeapError::OutOfMemory { .. }) => heap.growth_hint(layout),
                    Err(error @ HeapError::Corrupted { .. }) if damage_retries > 0 => {
                        drop(heap);
                        self.report(&error);
                        damage_retries -= 1;
                        continue;
                    }
                    Err(error) if error.is_misuse() => {
                        drop(heap);
                        self.report(&error);
                        return None;
                    }
                    // A request no heap can serve (size or alignment): null.
                    Err(_) => return None,
                }
            };
            attempts += 1;
            let source = self.hooks.lock().source?;
            let (start, size) = source.grow(hint)?;
            let mut heap = self.acquire();
            // SAFETY: the MemorySource contract gives the range to the heap.
            if let Err(error) = unsafe { heap.add_memory(start.as_ptr(), size) } {
                drop(heap);
                self.report(&error);
                return None;
            }
            grown(&heap);
        }
        None
    }

    /// Whether a growth hook is set.
    pub(crate) fn has_source(&self) -> bool {
        self.hooks.lock().source.is_some()
    }
}

/// Chunks taken out of the heap per lock acquisition by
/// [`LockedHeap::trim`].
const TRIM_BATCH: usize = 8;

impl<P: FitPolicy, L: RawLock> LockedHeap<Heap<P>, L> {
    /// Gives every chunk that holds no live block back to the memory
    /// source ([`MemorySource::release`]; see [`Heap::trim`]), taking the
    /// lock only to take the chunks out, a few at a time, and releasing
    /// them with the lock dropped. Returns the bytes given back; without a
    /// source, the chunks stay in the heap.
    ///
    /// ```
    /// # use region_heap::LockedHeap;
    /// static HEAP: LockedHeap = LockedHeap::empty();
    /// assert_eq!(HEAP.trim(), Ok(0)); // no source: nothing is given back
    /// ```
    pub fn trim(&self) -> Result<usize, HeapError> {
        let Some(source) = self.hooks.lock().source else {
            return Ok(0);
        };
        let mut total = 0;
        loop {
            let mut taken = [None; TRIM_BATCH];
            let mut count = 0;
            self.acquire().trim_at_most(TRIM_BATCH, &mut |start, len| {
                taken[count] = Some((start, len));
                count += 1;
            })?;
            for (start, len) in taken.into_iter().flatten() {
                source.release(start, len);
                total += len;
            }
            if count < TRIM_BATCH {
                return Ok(total);
            }
        }
    }

    /// Adds a region of priority 0 (region-heap only: the reference
    /// backends have no regions, use [`LockedHeap::add_memory`]).
    ///
    /// # Safety
    /// As for [`Heap::add_region`].
    pub unsafe fn add_region(&self, start: *mut u8, size: usize) -> Result<(), HeapError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.acquire().add_region(start, size) }
    }
}

impl<B: Backend, L: RawLock> fmt::Debug for LockedHeap<B, L> {
    /// The backend's name and statistics, or `<locked>` if the lock is
    /// held: formatting never waits for the lock.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_acquire() {
            Some(heap) => {
                let stats = heap.stats();
                drop(heap);
                f.debug_struct("LockedHeap")
                    .field("backend", &B::NAME)
                    .field("stats", &stats)
                    .finish_non_exhaustive()
            }
            None => f.write_str("LockedHeap { <locked> }"),
        }
    }
}

// SAFETY: every method returns blocks from the heap, which never hands out
// overlapping live blocks and honours each layout's size and alignment.
unsafe impl<B: Backend, L: RawLock> GlobalAlloc for LockedHeap<B, L> {
    /// # Safety
    /// As `GlobalAlloc::alloc` requires: `layout` has a non-zero size.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with_growth(layout, |heap| heap.allocate(layout))
            .map_or(null_mut(), NonNull::as_ptr)
    }

    /// # Safety
    /// As `GlobalAlloc::alloc` requires: `layout` has a non-zero size.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.with_growth(layout, |heap| heap.allocate_zeroed(layout))
            .map_or(null_mut(), NonNull::as_ptr)
    }

    /// # Safety
    /// As `GlobalAlloc::dealloc` requires: `ptr` was allocated by this
    /// allocator with `layout`, and nothing uses it after the call.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(ptr) = NonNull::new(ptr) else {
            return;
        };
        // SAFETY: the GlobalAlloc caller owns the block and stops using it.
        unsafe { self.deallocate_reporting(ptr, layout) }
    }

    /// # Safety
    /// As `GlobalAlloc::realloc` requires: `ptr` was allocated by this
    /// allocator with `layout`; `new_size` is non-zero and, rounded up to
    /// `layout.align()`, does not overflow `isize`.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(ptr) = NonNull::new(ptr) else {
            return null_mut();
        };
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        // SAFETY: the GlobalAlloc caller owns the block; on success the old
        // pointer is dead, on failure the block is intact.
        self.with_growth(new_layout, |heap| unsafe {
            heap.realloc(ptr, layout, new_size)
        })
        .map_or(null_mut(), NonNull::as_ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Arena;
    use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
    use spin::Mutex as SpinMutex;

    static REPORTED: SpinMutex<Option<HeapError>> = SpinMutex::new(None);
    /// Serialises the tests that read `REPORTED`.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn record(error: &HeapError) {
        *REPORTED.lock() = Some(*error);
    }

    #[test]
    fn misuse_goes_to_the_handler_and_failure_returns_null() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let arena = Arena::new(64 << 10);
        let heap = LockedHeap::empty();
        // SAFETY: the arena outlives the heap.
        unsafe { heap.init(arena.ptr(), arena.len()) };
        heap.set_report_handler(record);
        let layout = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: GlobalAlloc calls with a valid layout; the double free is
        // refused and reported.
        unsafe {
            let p = heap.alloc(layout);
            assert!(!p.is_null());
            heap.dealloc(p, layout);
            heap.dealloc(p, layout);
            let addr = p.addr();
            assert_eq!(REPORTED.lock().take(), Some(HeapError::DoubleFree { addr }));
            let huge = Layout::from_size_align(1 << 30, 8).unwrap();
            assert!(heap.alloc(huge).is_null());
            assert_eq!(REPORTED.lock().take(), None, "failure is not a misuse");
        }
        heap.lock().check().unwrap();
    }

    /// A write after free into a freed block's free-list link: the next
    /// allocation of that size meets the damage. Through `GlobalAlloc` the
    /// damage goes to the handler, and the allocation is tried again and
    /// served, elsewhere: the damaged block was quarantined.
    #[test]
    fn damage_met_while_allocating_is_reported_and_the_allocation_served() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let arena = Arena::new(64 << 10);
        let heap: LockedHeap = LockedHeap::over(Heap::new().with_slabs(false), None);
        // SAFETY: the arena outlives the heap.
        unsafe { heap.init(arena.ptr(), arena.len()) };
        heap.set_report_handler(record);
        heap.lock().set_quick_depth(0).unwrap();
        // Under 256 bytes classes are exact: the freed block is the first
        // pick for the same size.
        let layout = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: GlobalAlloc calls with a valid layout; the write after
        // free lands in the freed block's own list link, inside the arena.
        unsafe {
            let a = heap.alloc(layout);
            let _fence = heap.alloc(layout);
            assert!(!a.is_null());
            heap.dealloc(a, layout);
            // The free-list link sits right before the data with `guard`,
            // at the data without it.
            let link = a.wrapping_sub(crate::GUARD_SIZE).cast::<usize>();
            link.write(0x1000);
            let b = heap.alloc(layout);
            assert!(!b.is_null(), "the retry was served");
            assert_ne!(b, a, "not from the damaged block");
            b.write_bytes(0x5a, layout.size());
            let reported = REPORTED.lock().take();
            assert!(
                matches!(reported, Some(HeapError::Corrupted { .. })),
                "{reported:?}"
            );
            assert_eq!(heap.stats().quarantined_blocks, 1);
            heap.dealloc(b, layout);
        }
        heap.check().unwrap();
    }

    /// Hands out consecutive 64 KiB pieces of one arena.
    struct Pieces {
        base: AtomicPtr<u8>,
        given: AtomicUsize,
        calls: AtomicUsize,
    }

    // SAFETY: every piece is handed out once, from an arena that outlives
    // the heap in the test.
    unsafe impl MemorySource for Pieces {
        fn grow(&self, min_size: usize) -> Option<(NonNull<u8>, usize)> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let size = min_size.next_multiple_of(64 << 10);
            let offset = self.given.fetch_add(size, Ordering::SeqCst);
            if offset + size > 1 << 20 {
                return None;
            }
            let base = self.base.load(Ordering::SeqCst);
            Some((NonNull::new(base.wrapping_add(offset))?, size))
        }
    }

    #[test]
    fn growth_hook_feeds_an_empty_heap_and_joins_chunks() {
        let arena = Arena::new(1 << 20);
        static PIECES: Pieces = Pieces {
            base: AtomicPtr::new(core::ptr::null_mut()),
            given: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
        };
        let pieces = &PIECES;
        pieces.base.store(arena.ptr(), Ordering::SeqCst);
        let heap = LockedHeap::with_source(pieces);
        let layout = Layout::from_size_align(40 << 10, 8).unwrap();
        let mut blocks = std::vec::Vec::new();
        // SAFETY: GlobalAlloc calls with valid layouts.
        unsafe {
            for _ in 0..10 {
                let p = heap.alloc(layout);
                assert!(!p.is_null());
                p.write_bytes(0x5a, layout.size());
                blocks.push(p);
            }
        }
        let stats = heap.lock().stats();
        assert!(pieces.calls.load(Ordering::SeqCst) >= 2);
        assert_eq!(
            (stats.regions, stats.chunks),
            (1, 1),
            "touching pieces joined: {stats:?}"
        );
        for p in blocks {
            // SAFETY: live blocks written above.
            unsafe {
                assert_eq!(*p.add(layout.size() - 1), 0x5a);
                heap.dealloc(p, layout);
            }
        }
        heap.lock().check().unwrap();
        // The heap must not be used once the arena is gone.
        drop(arena);
    }

    /// A source that records what the heap gives back.
    struct Returns {
        base: AtomicPtr<u8>,
        given: AtomicUsize,
        released: AtomicUsize,
        releases: AtomicUsize,
    }

    // SAFETY: each grow hands out the next 64 KiB piece of the test's arena,
    // never twice, while the arena outlives the heap.
    unsafe impl MemorySource for Returns {
        fn grow(&self, min_size: usize) -> Option<(NonNull<u8>, usize)> {
            let piece = 64 << 10;
            let size = min_size.next_multiple_of(piece);
            let offset = self.given.fetch_add(size, Ordering::SeqCst);
            if offset + size > 1 << 20 {
                return None;
            }
            NonNull::new(self.base.load(Ordering::SeqCst).wrapping_add(offset)).map(|p| (p, size))
        }

        fn release(&self, _start: NonNull<u8>, size: usize) {
            self.released.fetch_add(size, Ordering::SeqCst);
            self.releases.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn trim_gives_free_chunks_back_to_the_source() {
        let arena = Arena::new(1 << 20);
        static SOURCE: Returns = Returns {
            base: AtomicPtr::new(core::ptr::null_mut()),
            given: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
            releases: AtomicUsize::new(0),
        };
        SOURCE.base.store(arena.ptr(), Ordering::SeqCst);
        let heap = LockedHeap::empty();
        // The region lives in the first 64 KiB, given by hand; the rest
        // comes from the source, in pieces that do not touch it.
        // SAFETY: the first piece of the arena, which outlives the heap.
        unsafe { heap.init(arena.ptr(), 64 << 10) };
        SOURCE.given.store(128 << 10, Ordering::SeqCst);
        heap.set_memory_source(&SOURCE);
        let layout = Layout::from_size_align(100 << 10, 8).unwrap();
        // SAFETY: GlobalAlloc calls with a valid layout.
        let p = unsafe { heap.alloc(layout) };
        assert!(!p.is_null());
        let before = heap.stats();
        assert_eq!(
            before.chunks, 2,
            "the grown chunk sits apart from the region's"
        );
        assert_eq!(heap.trim(), Ok(0), "a chunk with a live block stays");
        // SAFETY: the block allocated above.
        unsafe { heap.dealloc(p, layout) };
        let released = heap.trim().unwrap();
        assert!(released >= 100 << 10, "{released}");
        assert_eq!(SOURCE.released.load(Ordering::SeqCst), released);
        assert_eq!(SOURCE.releases.load(Ordering::SeqCst), 1);
        let after = heap.stats();
        assert_eq!(after.chunks, 1);
        assert_eq!(after.total_bytes, before.total_bytes - released);
        heap.check().unwrap();
        // The heap goes on, growing again when it must.
        // SAFETY: as above.
        let q = unsafe { heap.alloc(layout) };
        assert!(!q.is_null());
        // SAFETY: the block allocated just above.
        unsafe { heap.dealloc(q, layout) };
        heap.check().unwrap();
        drop(arena);
    }

    /// One workload through `GlobalAlloc` on any backend: patterns survive,
    /// a pointer outside the heap is reported, the books balance.
    fn global_alloc_workload<B: Backend>(heap: &LockedHeap<B>) {
        let layouts = [(24, 8), (100, 16), (4000, 64), (300, 4096)]
            .map(|(size, align)| Layout::from_size_align(size, align).unwrap());
        let mut live = std::vec::Vec::new();
        for round in 0..50u8 {
            let layout = layouts[round as usize % layouts.len()];
            // SAFETY: a valid layout; the block is written within its size.
            let p = unsafe { heap.alloc(layout) };
            assert!(!p.is_null(), "{}: round {round}", B::NAME);
            assert_eq!(p.addr() % layout.align(), 0);
            // SAFETY: the fresh block holds `layout.size()` bytes.
            unsafe { p.write_bytes(round, layout.size()) };
            live.push((p, layout, round));
        }
        for (i, &(p, layout, round)) in live.iter().enumerate() {
            // SAFETY: live blocks written above.
            let bytes = unsafe { core::slice::from_raw_parts(p, layout.size()) };
            assert!(bytes.iter().all(|&b| b == round), "{}: block {i}", B::NAME);
            // SAFETY: the block is live and given up.
            unsafe { heap.dealloc(p, layout) };
        }
        let outside = std::boxed::Box::new(0u64);
        let ptr = std::boxed::Box::into_raw(outside);
        // SAFETY: a foreign pointer is refused and reported, not followed
        // (each backend checks that a pointer lies in its memory).
        unsafe { heap.dealloc(ptr.cast(), Layout::new::<u64>()) };
        let addr = ptr.addr();
        assert_eq!(
            REPORTED.lock().take(),
            Some(HeapError::NotFromHeap { addr }),
            "{}",
            B::NAME
        );
        // SAFETY: `ptr` came from `Box::into_raw` and was not freed.
        drop(unsafe { std::boxed::Box::from_raw(ptr) });
        heap.lock().check().unwrap();
    }

    #[test]
    fn conveniences_take_the_lock_only_to_copy() {
        let arena = Arena::new(256 << 10);
        let heap: LockedHeap = LockedHeap::over(Heap::new().with_slabs(false), None);
        // SAFETY: the arena outlives the heap.
        unsafe { heap.init(arena.ptr(), arena.len()) };
        let layout = Layout::from_size_align(48, 8).unwrap();
        // SAFETY: GlobalAlloc calls with a valid layout.
        let blocks: std::vec::Vec<_> = (0..200).map(|_| unsafe { heap.alloc(layout) }).collect();
        assert_eq!(heap.stats().used_blocks, 200);
        heap.check().unwrap();
        // The lock is free again after each call.
        assert!(heap.heap.try_lock().is_some());

        let mut full = std::string::String::new();
        heap.lock().dump(&mut full).unwrap();
        assert!(full.len() > DUMP_BUFFER, "{} bytes", full.len());
        let mut cut = std::string::String::new();
        heap.dump(&mut cut).unwrap();
        let (head, note) = cut.rsplit_once("... cut:").expect("a cut dump says so");
        assert!(head.len() <= DUMP_BUFFER && head.ends_with('\n'));
        assert!(full.starts_with(head), "whole lines of the same dump");
        assert!(note.contains("2048 bytes"));
        let mut big = std::string::String::new();
        heap.dump_buffered::<{ 64 << 10 }>(&mut big).unwrap();
        assert_eq!(big, full, "a large enough buffer holds all of it");

        for p in blocks {
            // SAFETY: live blocks of this heap.
            unsafe { heap.dealloc(p, layout) };
        }
        heap.flush().unwrap();
        assert_eq!(heap.stats().free_blocks, 1);
        drop(arena);
    }

    #[test]
    fn init_from_slice_needs_no_unsafe() {
        let raw = std::boxed::Box::into_raw(
            std::vec![MaybeUninit::uninit(); 64 << 10].into_boxed_slice(),
        );
        // SAFETY: a live box, given back below once the heap is gone (Miri
        // reports leaks).
        let memory: &'static mut [MaybeUninit<u8>] = unsafe { &mut *raw };
        let heap = LockedHeap::empty();
        heap.init_from_slice(memory);
        // SAFETY: a valid layout.
        let p = unsafe { heap.alloc(Layout::new::<u64>()) };
        assert!(!p.is_null());
        assert_eq!(heap.stats().regions, 1);
        // SAFETY: from `Box::into_raw` above; the heap that holds it is
        // not used after this point.
        drop(unsafe { std::boxed::Box::from_raw(raw) });
    }

    #[test]
    fn smallest_slice_is_region_control_plus_a_chunk() {
        use crate::{Heap, MIN_BLOCK, REGION_SIZE, SENTINEL_SIZE};
        let min = REGION_SIZE + MIN_BLOCK + SENTINEL_SIZE;
        for (len, ok) in [(min - crate::GRANULE, false), (min, true)] {
            let arena = Arena::new(8192 + min);
            let memory = arena.ptr().cast::<MaybeUninit<u8>>();
            // SAFETY: test-only: the heap is dropped before the arena, so a
            // `'static` slice over it is never used after it is freed.
            let slice: &'static mut [MaybeUninit<u8>] =
                unsafe { core::slice::from_raw_parts_mut(memory, len) };
            {
                let mut heap = Heap::new();
                assert_eq!(heap.add_region_from_slice(slice).is_ok(), ok, "{len} bytes");
            }
            drop(arena);
        }
    }

    #[test]
    fn backends_swap_by_type() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let arena = Arena::new(1 << 20);
        let heap: LockedHeap = LockedHeap::empty();
        heap.set_report_handler(record);
        // SAFETY: the arena outlives the heap.
        unsafe { heap.init(arena.ptr(), arena.len()) };
        global_alloc_workload(&heap);
        #[cfg(feature = "linked-list")]
        {
            let arena = Arena::new(1 << 20);
            let heap: LockedHeap<crate::LinkedListBackend> = LockedHeap::with_backend(None);
            heap.set_report_handler(record);
            // SAFETY: the arena outlives the heap.
            unsafe { heap.init(arena.ptr(), arena.len()) };
            global_alloc_workload(&heap);
        }
        #[cfg(feature = "buddy")]
        {
            let arena = Arena::new(1 << 20);
            let heap: LockedHeap<crate::BuddyBackend<32>> = LockedHeap::with_backend(None);
            heap.set_report_handler(record);
            // SAFETY: the arena outlives the heap.
            unsafe { heap.init(arena.ptr(), arena.len()) };
            global_alloc_workload(&heap);
        }
    }
}
