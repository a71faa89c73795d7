//! `Inbox`: frees that other CPUs leave for a heap, instead of taking its
//! lock, until the heap's next lock holder does them.
//!
//! A [`PerCpuHeap`](crate::PerCpuHeap) block freed by another CPU than its
//! owner's would take the owner's heap lock and touch the owner's metadata
//! from afar; with many such frees the two CPUs pass the lock and the
//! metadata's cache lines back and forth. The freeing CPU instead writes
//! the pointer and its layout into the owner heap's inbox (a small array
//! behind a lock of its own) and goes on; the owner heap's
//! [`LockedHeap`](crate::LockedHeap) does every free waiting there at each
//! acquisition of its lock, before anything else, so that:
//! - a block waiting in the inbox is never handed out again before it is
//!   freed (it is still a used block of the heap);
//! - a double free stays detectable: the second free of a block meets the
//!   first one done (or waiting behind it in the same inbox), never a block
//!   handed out again in between;
//! - stats, `check()` and `dump()` see no block as used that its program
//!   gave up.
//!
//! A misuse found while doing a deferred free is kept here and reported
//! through the heap's report handler by the next call that takes the lock
//! and may report (with the heap lock released; `try_` calls never
//! report); past [`KEPT_ERRORS`] at once, later reports are lost. A
//! full inbox refuses a push: the caller then frees as usual, under the
//! heap lock. The deferred frees run under the inbox lock, so a push waits
//! for at most one drain of [`INBOX_SLOTS`] frees.
//!
//! A free waiting here is done by the heap's *next* acquisition: a holder
//! that took the lock before the push does not see it, so a program that
//! frees one block from two CPUs at once (a double free racing with
//! itself) can have the second free done and the block handed out again
//! by that holder before the first is drained, as a double free racing
//! with the block's reuse escapes any allocator. The inbox trusts the
//! owner word that chose it: a block whose owner word was forged to name
//! another heap's region is judged (and refused: `NotBlockStart`, nothing
//! changed) by that heap, not by the heap whose memory holds it, which
//! [`PerCpuHeap::free`](crate::PerCpuHeap::free) would find.
//!
//! Invariants: `pending` is the number of entries plus kept errors, stored
//! whole under the inbox lock, so a zero read after the lock holder's
//! release (or by the thread that pushed) means nothing waits; the inbox
//! lock is taken either alone or inside the heap lock, never the other way
//! round.

use core::alloc::Layout;
use core::ptr::NonNull;

use crate::error::HeapError;
use crate::lock::{Mutex, RawLock};
use crate::sync::{AtomicUsize, Ordering};

/// Frees of blocks of one heap that other CPUs can leave waiting at once
/// (a [`PerCpuHeap`](crate::PerCpuHeap)'s `dealloc` of another CPU's
/// block); past them, a remote free takes the owner's lock.
pub const INBOX_SLOTS: usize = 32;

/// Misuse reports an inbox keeps for a reporting call; later ones are lost
/// (the first already names the damage, and the heap quarantined it).
const KEPT_ERRORS: usize = 4;

/// A free waiting in an inbox: the block and the layout it was allocated
/// with.
#[derive(Clone, Copy)]
pub(crate) struct Deferred {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) layout: Layout,
}

/// Misuse reports kept for a call that may report.
pub(crate) struct Kept {
    errors: [Option<HeapError>; KEPT_ERRORS],
}

impl Kept {
    /// The kept reports, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &HeapError> {
        self.errors.iter().map_while(Option::as_ref)
    }
}

struct Slots {
    entries: [Option<Deferred>; INBOX_SLOTS],
    len: usize,
    errors: [Option<HeapError>; KEPT_ERRORS],
    kept: usize,
}

// SAFETY: the pointers are blocks given up by their programs, kept only to
// be handed to the heap's `deallocate` under its lock; the inbox never
// dereferences them.
unsafe impl Send for Slots {}

/// Frees waiting for a heap's lock holder (see the module docs).
pub(crate) struct Inbox<L: RawLock> {
    /// Entries plus kept errors: read without the lock to skip an idle
    /// inbox with one load.
    pending: AtomicUsize,
    slots: Mutex<Slots, L>,
}

impl<L: RawLock> Inbox<L> {
    pub(crate) const fn new() -> Self {
        Inbox {
            pending: AtomicUsize::new(0),
            slots: Mutex::new(Slots {
                entries: [None; INBOX_SLOTS],
                len: 0,
                errors: [None; KEPT_ERRORS],
                kept: 0,
            }),
        }
    }

    /// Whether nothing waits: no free and no kept report.
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.load(Ordering::Relaxed) == 0
    }

    /// Leaves a free for the heap's next lock holder; `false` (nothing
    /// kept) when the inbox is full.
    pub(crate) fn push(&self, free: Deferred) -> bool {
        let mut slots = self.slots.lock();
        let len = slots.len;
        let Some(slot) = slots.entries.get_mut(len) else {
            return false;
        };
        *slot = Some(free);
        slots.len += 1;
        self.publish(&slots);
        true
    }

    /// Does every waiting free with `free` (the heap's `deallocate`, under
    /// the heap lock the caller holds), in the order they were pushed, and
    /// keeps the errors it returns for a call that may report. `false`
    /// (nothing done) when the inbox lock is held and `wait` is false.
    pub(crate) fn drain(
        &self,
        wait: bool,
        mut free: impl FnMut(Deferred) -> Result<(), HeapError>,
    ) -> bool {
        let Some(mut slots) = self.lock(wait) else {
            return false;
        };
        let n = core::mem::take(&mut slots.len);
        for i in 0..n {
            let Some(entry) = slots.entries[i].take() else {
                continue;
            };
            if let Err(error) = free(entry) {
                let kept = slots.kept;
                if let Some(slot) = slots.errors.get_mut(kept) {
                    *slot = Some(error);
                    slots.kept += 1;
                }
            }
        }
        self.publish(&slots);
        true
    }

    /// Takes the kept reports out; `None` when there are none.
    pub(crate) fn take_kept(&self) -> Option<Kept> {
        let mut slots = self.slots.lock();
        if slots.kept == 0 {
            return None;
        }
        slots.kept = 0;
        self.publish(&slots);
        Some(Kept {
            errors: core::mem::replace(&mut slots.errors, [None; KEPT_ERRORS]),
        })
    }

    /// Releases the inbox lock for a holder that will never run again.
    ///
    /// # Safety
    /// As for [`RawLock::force_unlock`], when the lock is held.
    pub(crate) unsafe fn release_of_vanished_holder(&self) {
        if self.slots.is_locked() {
            // SAFETY: held by a holder that will never run again (caller).
            unsafe { self.slots.force_unlock() };
        }
    }

    /// Sets `pending` from the slots (their lock held): stored whole, so
    /// that a count a vanished holder left unfinished is made right by the
    /// next holder.
    fn publish(&self, slots: &Slots) {
        self.pending
            .store(slots.len + slots.kept, Ordering::Relaxed);
    }

    fn lock(&self, wait: bool) -> Option<crate::lock::LockGuard<'_, Slots, L>> {
        if wait {
            Some(self.slots.lock())
        } else {
            self.slots.try_lock()
        }
    }
}
