//! `LockedHeap`: a spin-locked heap usable as `#[global_allocator]`.
//!
//! The `GlobalAlloc` contract cannot return errors, so:
//! - a failed allocation returns null, after asking the growth hook (a
//!   [`MemorySource`]) for memory, if one is set;
//! - a misuse (bad pointer, double free, corruption, wrong layout) goes to
//!   the report handler, [`panic_on_misuse`] by default.
//!
//! Neither the growth hook nor the handler runs with the heap's lock held:
//! both may allocate (a panic message does), and would otherwise deadlock.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};

use spin::{Mutex, MutexGuard};

use crate::error::HeapError;
use crate::heap::Heap;
use crate::policy::{FirstFit, FitPolicy};

/// A supplier of fresh memory: a kernel mapping new pages, a hosted
/// program calling `mmap` or `brk`.
///
/// # Safety
/// A range returned by `grow` must be valid for reads and writes, used by
/// nothing else, and never reclaimed while the heap lives.
pub unsafe trait MemorySource: Sync {
    /// Returns a fresh range of at least `min_size` bytes, or `None`.
    fn grow(&self, min_size: usize) -> Option<(NonNull<u8>, usize)>;
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

struct Hooks {
    report: ReportHandler,
    source: Option<&'static dyn MemorySource>,
}

/// How many times one allocation asks the growth hook before giving up.
const GROW_ATTEMPTS: usize = 4;

/// A [`Heap`] behind a spin lock, with a report handler and a growth hook.
pub struct LockedHeap<P: FitPolicy = FirstFit> {
    heap: Mutex<Heap<P>>,
    hooks: Mutex<Hooks>,
}

impl LockedHeap<FirstFit> {
    /// A heap with no memory yet: add some with [`LockedHeap::init`],
    /// [`LockedHeap::add_region`] or a growth hook.
    pub const fn empty() -> Self {
        Self::with_policy(None)
    }

    /// A heap with no memory that gets all of it from `source`, on first use.
    pub const fn with_source(source: &'static dyn MemorySource) -> Self {
        Self::with_policy(Some(source))
    }
}

impl<P: FitPolicy> LockedHeap<P> {
    /// An empty heap with policy `P` and an optional growth hook.
    pub const fn with_policy(source: Option<&'static dyn MemorySource>) -> Self {
        LockedHeap {
            heap: Mutex::new(Heap::with_policy()),
            hooks: Mutex::new(Hooks {
                report: panic_on_misuse,
                source,
            }),
        }
    }

    /// Gives `[start, start + size)` to the heap as its first region.
    ///
    /// # Panics
    /// If the range is refused (too small, overlapping).
    ///
    /// # Safety
    /// As for [`Heap::add_region`].
    pub unsafe fn init(&self, start: *mut u8, size: usize) {
        // SAFETY: forwarded from the caller.
        if let Err(e) = unsafe { self.add_region(start, size) } {
            panic!("region-heap: init: {e}");
        }
    }

    /// Adds a region of priority 0.
    ///
    /// # Safety
    /// As for [`Heap::add_region`].
    pub unsafe fn add_region(&self, start: *mut u8, size: usize) -> Result<(), HeapError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.heap.lock().add_region(start, size) }
    }

    /// Locks the heap for direct use (stats, check, dump, the raw API).
    pub fn lock(&self) -> MutexGuard<'_, Heap<P>> {
        self.heap.lock()
    }

    /// Sets the handler for misuses detected on the `GlobalAlloc` path.
    pub fn set_report_handler(&self, handler: ReportHandler) {
        self.hooks.lock().report = handler;
    }

    /// Sets the growth hook asked for memory when an allocation fails.
    pub fn set_memory_source(&self, source: &'static dyn MemorySource) {
        self.hooks.lock().source = Some(source);
    }

    fn report(&self, error: &HeapError) {
        let handler = self.hooks.lock().report;
        handler(error);
    }

    /// Runs `op` under the lock; on `OutOfMemory` asks the growth hook for
    /// memory (lock released), adds it and tries again.
    fn with_growth<T>(
        &self,
        layout: Layout,
        mut op: impl FnMut(&mut Heap<P>) -> Result<T, HeapError>,
    ) -> Option<T> {
        for _ in 0..=GROW_ATTEMPTS {
            let hint = {
                let mut heap = self.heap.lock();
                match op(&mut heap) {
                    Ok(value) => return Some(value),
                    Err(HeapError::OutOfMemory { .. }) => heap.growth_hint(layout),
                    Err(error) => {
                        drop(heap);
                        self.report(&error);
                        return None;
                    }
                }
            };
            let source = self.hooks.lock().source?;
            let (start, size) = source.grow(hint)?;
            // SAFETY: the MemorySource contract gives the range to the heap.
            if let Err(error) = unsafe { self.heap.lock().add_memory(start.as_ptr(), size) } {
                self.report(&error);
                return None;
            }
        }
        None
    }
}

// SAFETY: every method returns blocks from the heap, which never hands out
// overlapping live blocks and honours each layout's size and alignment.
unsafe impl<P: FitPolicy> GlobalAlloc for LockedHeap<P> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with_growth(layout, |heap| heap.allocate(layout))
            .map_or(null_mut(), NonNull::as_ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.with_growth(layout, |heap| heap.allocate_zeroed(layout))
            .map_or(null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(ptr) = NonNull::new(ptr) else {
            return;
        };
        // SAFETY: the GlobalAlloc caller owns the block and stops using it.
        let result = unsafe { self.heap.lock().deallocate(ptr, layout) };
        if let Err(error) = result {
            self.report(&error);
        }
    }

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
