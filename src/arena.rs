//! `StaticArena<N>`: a ready [`MemorySource`] over a static array.
//!
//! A std program that makes a [`LockedHeap`](crate::LockedHeap) its
//! `#[global_allocator]` cannot call `init` in `main`: the runtime allocates
//! before `main` runs. A `StaticArena` in a `static` solves this: the heap
//! starts empty, and its first allocation asks the growth hook, which hands
//! over the whole array, once (the path every [`MemorySource`] takes). A
//! kernel with a fixed heap area does the same without any `unsafe`.
//!
//! For memory from the operating system (`mmap`, `brk`) see the `hosted/`
//! crate of the repository (`region-heap-hosted`), whose sources implement
//! the same trait.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use crate::locked::MemorySource;
use crate::sync::{AtomicBool, Ordering};

/// `N` bytes in a `static`, given to a heap on its first allocation.
///
/// ```
/// use region_heap::{LockedHeap, StaticArena};
///
/// static ARENA: StaticArena<{ 1 << 20 }> = StaticArena::new();
/// // In a program: #[global_allocator]
/// static HEAP: LockedHeap = LockedHeap::with_static_arena(&ARENA);
///
/// let layout = core::alloc::Layout::new::<u64>();
/// // SAFETY: a valid layout; the block is freed with it.
/// unsafe {
///     use core::alloc::GlobalAlloc;
///     let p = HEAP.alloc(layout);
///     assert!(ARENA.contains(p));
///     HEAP.dealloc(p, layout);
/// }
/// assert!(ARENA.is_given());
/// ```
///
/// The array is aligned to 16 bytes (the heap's granule) and handed out
/// whole, once, whatever size the first request asks for. It starts
/// zeroed (in `.bss`: no cost in the binary), as `Heap::add_region`'s
/// contract wants initialised memory.
#[repr(C, align(16))]
pub struct StaticArena<const N: usize> {
    memory: UnsafeCell<[MaybeUninit<u8>; N]>,
    given: AtomicBool,
}

// SAFETY: the array is reached only through `grow`, which hands it out at
// most once (an atomic swap); after that the heap owns it.
unsafe impl<const N: usize> Sync for StaticArena<N> {}

impl<const N: usize> StaticArena<N> {
    /// An arena not yet given to any heap.
    pub const fn new() -> Self {
        StaticArena {
            memory: UnsafeCell::new([MaybeUninit::new(0); N]),
            given: AtomicBool::new(false),
        }
    }

    /// The arena's size in bytes.
    pub const fn size(&self) -> usize {
        N
    }

    /// Whether a heap has taken the arena.
    pub fn is_given(&self) -> bool {
        self.given.load(Ordering::Acquire)
    }

    /// Whether `ptr` points into the arena (for tests and assertions).
    pub fn contains<T>(&self, ptr: *const T) -> bool {
        let start = self.memory.get().addr();
        (start..start + N).contains(&ptr.addr())
    }
}

impl<const N: usize> Default for StaticArena<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for StaticArena<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StaticArena")
            .field("start", &self.memory.get())
            .field("size", &N)
            .field("given", &self.is_given())
            .finish()
    }
}

// SAFETY: the array lives as long as the program (`&'static self` through
// `LockedHeap::with_static_arena`, or a `static` owner for any other use:
// a `MemorySource` the heap keeps is `&'static`), is handed out once, and
// nothing else reaches it.
unsafe impl<const N: usize> MemorySource for StaticArena<N> {
    fn grow(&self, _min_size: usize) -> Option<(NonNull<u8>, usize)> {
        if N == 0 || self.given.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some((NonNull::new(self.memory.get().cast::<u8>())?, N))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_array_once() {
        let raw = std::boxed::Box::into_raw(std::boxed::Box::<StaticArena<4096>>::default());
        // SAFETY: a live box, given back below once nothing uses it (Miri
        // reports leaks).
        let arena: &'static StaticArena<4096> = unsafe { &*raw };
        let (ptr, size) = arena.grow(10).unwrap();
        assert_eq!(size, 4096);
        assert!(arena.contains(ptr.as_ptr()));
        assert!(ptr.as_ptr().addr().is_multiple_of(16));
        assert!(arena.is_given());
        assert!(arena.grow(10).is_none(), "a second grow gets nothing");
        // SAFETY: from `Box::into_raw` above; the reference is dead.
        drop(unsafe { std::boxed::Box::from_raw(raw) });
    }
}
