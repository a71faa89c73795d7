//! Seals: the process's secret key, and the damage a seal reveals.
//!
//! The shim keeps some of its metadata in memory the program can write:
//! the links of the thread caches' blocks (in the freed blocks' data) and
//! the headers of large blocks (just before their data). Each such record
//! carries a seal, a word mixing its fields, its address and this key;
//! the shim checks the seal before it follows or trusts a field. A program
//! that overwrites the record by mistake (a write after free, an overrun,
//! an underrun) cannot produce a matching seal, nor can one that writes a
//! crafted record without knowing the key. The key is drawn once, at
//! initialisation, before anything is sealed, and never changes (a forked
//! child keeps its parent's, with its parent's sealed records).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

static KEY: AtomicUsize = AtomicUsize::new(0);

/// A sealed record found overwritten: the block it belongs to (its data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damaged(pub NonNull<u8>);

/// Draws the key, before anything is sealed; later calls keep the key
/// drawn first (records sealed with it stay valid).
pub fn init() {
    if key() == 0 {
        let _ = KEY.compare_exchange(0, fresh(), Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The key.
#[inline(always)]
pub fn key() -> usize {
    KEY.load(Ordering::Relaxed)
}

/// A random odd word (from `getrandom`, else from the stack's address).
fn fresh() -> usize {
    let mut key: usize = 0;
    // SAFETY: fills the eight bytes of `key`.
    let got = unsafe {
        libc::getrandom(
            (&mut key as *mut usize).cast(),
            core::mem::size_of::<usize>(),
            libc::GRND_NONBLOCK,
        )
    };
    if got != core::mem::size_of::<usize>() as isize {
        key = (&key as *const usize as usize).rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    }
    key | 1
}
