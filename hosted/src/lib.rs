//! region-heap in userspace: the allocator behind the C `malloc` ABI.
//!
//! The same heap the kernels embed, fed by the operating system instead
//! of firmware memory maps:
//! - [`source`]: the `brk` and `mmap` memory sources, every system call
//!   counted and observable;
//! - [`arenas`]: the core's `PerCpuHeap` (one region-heap per CPU, each
//!   with its own lock, the pointer-to-heap lookup) fed from one
//!   preallocation and the growth hook, with the heap hints, the
//!   accounting and the fork handling of a process;
//! - [`large`]: large blocks in mappings of their own, reused through a
//!   bounded cache, resized with `mremap`;
//! - [`tcache`] and [`thread`]: the per-thread cache of small blocks, the
//!   thread's heap hint and counters, flushed when the thread exits;
//! - [`depot`]: whole bins of cached blocks passed from the threads that
//!   free them to the threads that allocate them;
//! - [`global`]: the process-wide allocator made of those parts;
//! - [`malloc`]: the C functions with glibc's semantics (errno, overflow,
//!   alignment, `realloc` rules), which the `region-heap-shim` cdylib
//!   exports;
//! - [`stats`]: the `get_stat` counters; [`misuse`]: the report of an
//!   invalid or double free before `abort`;
//! - [`lock`], [`cpu`], [`text`]: userspace spin locks (the heaps' is a
//!   core `RawLock`), CPU numbers,
//!   messages without allocating.
//!
//! Block headers are the core's: the fast paths read a block's owner and
//! size through `region_heap::raw`, which derives every offset from the
//! core's layout (whatever its features) and states when a read without
//! the heap's lock is sound.
//!
//! Nothing in this crate exports a C symbol: only the shim does.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod arenas;
pub mod cpu;
pub mod depot;
pub mod global;
pub mod large;
pub mod lock;
pub mod malloc;
pub mod misuse;
pub mod seal;
pub mod source;
pub mod stats;
pub mod tcache;
pub mod text;
pub mod thread;
