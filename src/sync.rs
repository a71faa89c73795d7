//! Atomics for the library's own flags and counters: `core`'s, or
//! `portable-atomic`'s (feature `portable-atomic`) on targets without
//! compare-and-swap such as `thumbv6m-none-eabi`.

#[cfg(not(feature = "portable-atomic"))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(feature = "portable-atomic")]
pub(crate) use portable_atomic::{AtomicBool, AtomicUsize, Ordering};
