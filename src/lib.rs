//! # region-heap
//!
//! A `no_std` heap for kernels on the MutekH region model, with O(1)
//! allocation and free, misuse detection and a full consistency walk.
//!
//! Memory comes in **regions**; each region is carved into **blocks**, a
//! 16-byte header followed by data. The blocks of a chunk sit on a circular
//! doubly linked list in address order (a CLIST); free blocks also sit
//! on segregated free lists indexed by bitmaps, so finding a block costs two
//! bit scans whatever the number of blocks. An allocated block's header
//! leads back to its region, so [`Heap::free`] needs neither a region nor a
//! layout; it validates the header and merges with both neighbours in O(1).
//!
//! ```
//! use core::alloc::Layout;
//! use region_heap::Heap;
//!
//! #[repr(align(16))]
//! struct Arena([u8; 1 << 16]);
//! let mut arena = Arena([0; 1 << 16]);
//! let mut heap = Heap::new();
//! // SAFETY: the arena outlives the heap and nothing else uses it.
//! unsafe { heap.add_region(arena.0.as_mut_ptr(), arena.0.len()) }.unwrap();
//! let p = heap.allocate(Layout::from_size_align(100, 8).unwrap()).unwrap();
//! // SAFETY: `p` is a live block of this heap.
//! unsafe { heap.free(p) }.unwrap();
//! // A second free is caught, and the heap is unchanged.
//! assert!(unsafe { heap.free(p) }.is_err());
//! heap.check().unwrap();
//! ```
//!
//! An allocator built on the heap that must find a block's owner or size
//! without taking a lock (a malloc's `free` fast path) reads the header
//! through [`raw`], which derives every offset from the core's own layout
//! and states when such a read is sound.
//!
//! As a global allocator:
//!
//! ```no_run
//! use region_heap::LockedHeap;
//!
//! #[global_allocator]
//! static HEAP: LockedHeap = LockedHeap::empty();
//!
//! static mut ARENA: [u8; 1 << 20] = [0; 1 << 20];
//!
//! fn main() {
//!     // SAFETY: the arena is given to the heap, once, before any allocation.
//!     unsafe { HEAP.init(core::ptr::addr_of_mut!(ARENA).cast(), 1 << 20) };
//! }
//! ```
#![no_std]
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Links written `[`NAME`](crate::NAME)` keep the public documentation
// pointing at the crate root's re-export; with private items documented,
// rustdoc finds the same item by the bare name and calls the target
// redundant.
#![allow(rustdoc::redundant_explicit_links)]

#[cfg(test)]
extern crate std;

/// Reports an event to a trace sink (feature `trace`); expands to nothing
/// without the feature, so tracing costs nothing when it is off.
macro_rules! trace {
    ($sink:expr, $event:expr) => {
        #[cfg(feature = "trace")]
        {
            if let Some(sink) = $sink {
                sink(&$event);
            }
        }
    };
}

#[cfg(any(feature = "allocator-api2", feature = "nightly"))]
mod allocator;
mod arena;
pub mod backend;
mod block;
mod check;
pub mod clist;
#[cfg(feature = "crc")]
mod crc;
mod error;
mod freelist;
mod heap;
mod inbox;
mod index;
pub mod integrity;
mod lock;
mod locked;
mod percpu;
mod policy;
mod quick;
pub mod raw;
mod region;
mod slab;
mod stats;
mod sync;
#[cfg(feature = "trace")]
mod trace;
#[cfg(all(feature = "x86_64", target_arch = "x86_64"))]
#[cfg_attr(docsrs, doc(cfg(feature = "x86_64")))]
pub mod x86_64;

pub use arena::StaticArena;
pub use backend::Backend;
#[cfg(feature = "buddy")]
#[cfg_attr(docsrs, doc(cfg(feature = "buddy")))]
pub use backend::BuddyBackend;
#[cfg(feature = "linked-list")]
#[cfg_attr(docsrs, doc(cfg(feature = "linked-list")))]
pub use backend::LinkedListBackend;
pub use block::{BLOCK_OVERHEAD, GRANULE, GUARD_SIZE, HEADER_SIZE, MAX_CHUNK_SIZE, MIN_BLOCK};
pub use error::{Corruption, HeapError};
pub use heap::{Heap, RegionId, DEFAULT_SLABS, MAX_REGIONS};
pub use inbox::INBOX_SLOTS;
pub use lock::{InterruptControl, IrqSafeLock, LockGuard, RawLock, SpinLock};
pub use locked::{
    ignore_misuse, panic_on_misuse, LockedHeap, MemorySource, ReportHandler, DUMP_BUFFER,
};
pub use percpu::{CpuCounters, PerCpuHeap};
#[allow(deprecated)]
pub use policy::FirstFit;
pub use policy::{BestFit, FitPolicy, GoodFit};
pub use quick::{DEFAULT_QUICK_DEPTH, QUICK_MAX};
pub use region::{MAX_CHUNKS, REGION_SIZE, SENTINEL_SIZE};
pub use slab::{SLAB_CLASSES, SLAB_HEADER_SIZE, SLAB_MAX, SLAB_SIZE, SLAB_STEP};
pub use spin;
pub use stats::Stats;
#[cfg(feature = "trace")]
#[cfg_attr(docsrs, doc(cfg(feature = "trace")))]
pub use trace::{TraceEvent, TraceSink};

#[cfg(test)]
mod testutil;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The kernel demo's README (the integration walk-through), as doctests.
#[cfg(doctest)]
#[doc = include_str!("../kernel-demo/README.md")]
pub struct KernelDemoReadmeDoctests;
