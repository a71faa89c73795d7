//! The `Allocator` trait for `&LockedHeap` and `&PerCpuHeap`:
//! allocator-api2's (feature `allocator-api2`, stable Rust) and core's
//! (feature `nightly`, nightly Rust's `allocator_api`), so collections can
//! live in a heap of their own: `Vec::new_in(&heap)`.
//!
//! Both go through the same paths as `GlobalAlloc`: an allocation that
//! fails asks the growth hook, a misuse goes to the report handler, a grow
//! or shrink with the same alignment is a `realloc` (in place when it can).
//! A zero-sized layout gets a real, unique block (the backends serve it).
//!
//! If another crate enables allocator-api2's own `nightly` feature, its
//! trait *is* core's, and the two features of this crate cannot both be on.

use core::alloc::Layout;
use core::ptr::NonNull;

use crate::backend::Backend;
use crate::lock::RawLock;
use crate::locked::LockedHeap;
use crate::percpu::PerCpuHeap;
use crate::policy::FitPolicy;

impl<B: Backend, L: RawLock> LockedHeap<B, L> {
    fn allocator_allocate(&self, layout: Layout, zeroed: bool) -> Option<NonNull<[u8]>> {
        let ptr = if zeroed {
            self.with_growth(layout, |heap| heap.allocate_zeroed(layout))?
        } else {
            self.with_growth(layout, |heap| heap.allocate(layout))?
        };
        Some(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    /// # Safety
    /// `ptr` is a live block of this heap allocated with `old`; `new` has
    /// the same alignment.
    unsafe fn allocator_realloc(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        // SAFETY: forwarded from the caller; on failure the block is intact.
        let moved = self.with_growth(new, |heap| unsafe { heap.realloc(ptr, old, new.size()) })?;
        Some(NonNull::slice_from_raw_parts(moved, new.size()))
    }
}

impl<const CPUS: usize, P: FitPolicy, L: RawLock> PerCpuHeap<CPUS, P, L> {
    fn allocator_allocate(&self, layout: Layout, zeroed: bool) -> Option<NonNull<[u8]>> {
        let ptr = if zeroed {
            self.allocate_zeroed(layout).ok()?
        } else {
            self.allocate(layout).ok()?
        };
        Some(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    /// # Safety
    /// `ptr` is a live block of this heap allocated with `old`; `new` has
    /// the same alignment.
    unsafe fn allocator_realloc(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<[u8]>> {
        // SAFETY: forwarded from the caller; on failure the block is intact.
        let moved = NonNull::new(unsafe { self.realloc_reporting(ptr, old, new.size()) })?;
        Some(NonNull::slice_from_raw_parts(moved, new.size()))
    }
}

/// Implements `$allocator` for `&'a $heap`, a heap type with the three
/// paths above (`allocator_allocate`, `allocator_realloc`,
/// `deallocate_reporting`), generic over `$generics`.
macro_rules! impl_allocator {
    ($allocator:path, $error:path, $feature:literal, [$($generics:tt)*], $heap:ty) => {
        // SAFETY: blocks come from the backend, which hands out aligned,
        // disjoint blocks of at least the layout's size (`Backend`'s
        // contract) that stay valid while the heap lives (`&'a`); a block
        // may be freed through any copy of the reference.
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        unsafe impl<'a, $($generics)*> $allocator for &'a $heap {
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, $error> {
                self.allocator_allocate(layout, false).ok_or($error)
            }

            fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, $error> {
                self.allocator_allocate(layout, true).ok_or($error)
            }

            /// # Safety
            /// As the `Allocator` trait requires: `ptr` is a block this
            /// allocator handed out for `layout`, and nothing uses it after the
            /// call.
            unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                // SAFETY: the Allocator caller owns the block and gives it up.
                unsafe { self.deallocate_reporting(ptr, layout) }
            }

            /// # Safety
            /// As the `Allocator` trait requires: `ptr` is a block this
            /// allocator handed out for `old`, and `new.size()` is at least
            /// `old.size()`.
            unsafe fn grow(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                if old.align() == new.align() {
                    // SAFETY: the caller's block, allocated with `old`.
                    return unsafe { self.allocator_realloc(ptr, old, new) }.ok_or($error);
                }
                let fresh = self.allocate(new)?;
                // SAFETY: both blocks are live and disjoint; the new one is
                // at least as large; the caller gives the old one up.
                unsafe {
                    fresh.cast::<u8>().copy_from_nonoverlapping(ptr, old.size());
                    self.deallocate(ptr, old);
                }
                Ok(fresh)
            }

            /// # Safety
            /// As the `Allocator` trait requires: `ptr` is a block this
            /// allocator handed out for `old`, and `new.size()` is at most
            /// `old.size()`.
            unsafe fn shrink(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $error> {
                if old.align() == new.align() {
                    // SAFETY: the caller's block, allocated with `old`.
                    return unsafe { self.allocator_realloc(ptr, old, new) }.ok_or($error);
                }
                let fresh = self.allocate(new)?;
                // SAFETY: both blocks are live and disjoint; the new one
                // holds `new.size()` bytes; the caller gives the old one up.
                unsafe {
                    fresh.cast::<u8>().copy_from_nonoverlapping(ptr, new.size());
                    self.deallocate(ptr, old);
                }
                Ok(fresh)
            }
        }
    };
}

#[cfg(feature = "allocator-api2")]
impl_allocator!(
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError,
    "allocator-api2",
    [B: Backend, L: RawLock],
    LockedHeap<B, L>
);

#[cfg(feature = "allocator-api2")]
impl_allocator!(
    allocator_api2::alloc::Allocator,
    allocator_api2::alloc::AllocError,
    "allocator-api2",
    [const CPUS: usize, P: FitPolicy, L: RawLock],
    PerCpuHeap<CPUS, P, L>
);

#[cfg(feature = "nightly")]
impl_allocator!(
    core::alloc::Allocator,
    core::alloc::AllocError,
    "nightly",
    [B: Backend, L: RawLock],
    LockedHeap<B, L>
);

#[cfg(feature = "nightly")]
impl_allocator!(
    core::alloc::Allocator,
    core::alloc::AllocError,
    "nightly",
    [const CPUS: usize, P: FitPolicy, L: RawLock],
    PerCpuHeap<CPUS, P, L>
);
