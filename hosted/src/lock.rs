//! Taking a spin lock in userspace: spin briefly, then yield the CPU.
//!
//! A pure spin lock is fine in a kernel with interrupts off, but in a
//! process the holder can be preempted; spinning then burns the waiter's
//! whole time slice. [`acquire`] (for `spin` mutexes) and [`YieldingLock`]
//! (the core's [`RawLock`], which the per-CPU heaps sit behind) spin a
//! bounded number of times and then call `sched_yield` between attempts,
//! so a preempted holder gets the CPU back.
//!
//! Invariant: nothing here allocates (it runs inside `malloc`).

use core::sync::atomic::{AtomicBool, Ordering};

use region_heap::RawLock;
use spin::{Mutex, MutexGuard};

/// Attempts between two `sched_yield` calls.
const SPINS_BEFORE_YIELD: u32 = 64;

/// Takes `mutex`, spinning then yielding while it is held elsewhere.
#[inline]
pub fn acquire<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    if let Some(guard) = mutex.try_lock() {
        return guard;
    }
    contended(|| mutex.is_locked(), || mutex.try_lock())
}

/// Waits until `take` succeeds, trying again only when `held` says the
/// lock looks free, yielding the CPU every [`SPINS_BEFORE_YIELD`] looks.
#[cold]
fn contended<G>(held: impl Fn() -> bool, take: impl Fn() -> Option<G>) -> G {
    loop {
        for _ in 0..SPINS_BEFORE_YIELD {
            if !held() {
                if let Some(guard) = take() {
                    return guard;
                }
            }
            core::hint::spin_loop();
        }
        // SAFETY: `sched_yield` takes no arguments and touches no memory.
        unsafe { libc::sched_yield() };
    }
}

/// A test-and-test-and-set lock that yields the CPU while it waits: the
/// lock of the per-CPU heaps (see `arenas`).
pub struct YieldingLock {
    held: AtomicBool,
}

// SAFETY: a successful compare-and-swap from false to true (acquire) is
// the only way to take the lock, so one holder at a time; `unlock` stores
// false with release ordering, so the holder's writes are visible to the
// next one.
unsafe impl RawLock for YieldingLock {
    const UNLOCKED: Self = YieldingLock {
        held: AtomicBool::new(false),
    };

    #[inline]
    fn lock(&self) {
        if !self.try_lock() {
            contended(|| self.is_locked(), || self.try_lock().then_some(()));
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.held
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// # Safety
    /// As `RawLock::unlock` requires: the caller holds the lock.
    #[inline]
    unsafe fn unlock(&self) {
        self.held.store(false, Ordering::Release);
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn contended_lock_counts_every_increment() {
        let counter = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *acquire(&counter) += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*acquire(&counter), 80_000);
    }

    /// A plain counter behind a `YieldingLock`, for the test below.
    struct Guarded {
        lock: YieldingLock,
        value: core::cell::UnsafeCell<u64>,
    }

    // SAFETY: `value` is touched only with `lock` held.
    unsafe impl Sync for Guarded {}

    #[test]
    fn yielding_lock_counts_every_increment() {
        let guarded = Arc::new(Guarded {
            lock: YieldingLock::UNLOCKED,
            value: core::cell::UnsafeCell::new(0),
        });
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let g = Arc::clone(&guarded);
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        if (i + t) % 3 == 0 {
                            while !g.lock.try_lock() {
                                std::thread::yield_now();
                            }
                        } else {
                            g.lock.lock();
                        }
                        // SAFETY: the lock is held.
                        unsafe {
                            *g.value.get() += 1;
                            g.lock.unlock();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(!guarded.lock.is_locked());
        // SAFETY: every thread is done.
        assert_eq!(unsafe { *guarded.value.get() }, 80_000);
    }
}
