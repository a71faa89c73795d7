//! region-heap in userspace.
//!
//! The same allocator the kernels embed, fed by the operating system
//! instead of firmware memory maps:
//! - [`source`]: the `brk` and `mmap` memory sources, every system call
//!   counted and observable.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod source;
