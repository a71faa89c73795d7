//! Taking a spin lock in userspace: spin briefly, then yield the CPU.
//!
//! A pure spin lock is fine in a kernel with interrupts off, but in a
//! process the holder can be preempted; spinning then burns the waiter's
//! whole time slice. [`acquire`] spins a bounded number of times and then
//! calls `sched_yield` between attempts, so a preempted holder gets the
//! CPU back.
//!
//! Invariant: nothing here allocates (it runs inside `malloc`).

use spin::{Mutex, MutexGuard};

/// Attempts between two `sched_yield` calls.
const SPINS_BEFORE_YIELD: u32 = 64;

/// Takes `mutex`, spinning then yielding while it is held elsewhere.
#[inline]
pub fn acquire<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    if let Some(guard) = mutex.try_lock() {
        return guard;
    }
    acquire_contended(mutex)
}

#[cold]
fn acquire_contended<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    loop {
        for _ in 0..SPINS_BEFORE_YIELD {
            if !mutex.is_locked() {
                if let Some(guard) = mutex.try_lock() {
                    return guard;
                }
            }
            core::hint::spin_loop();
        }
        // SAFETY: `sched_yield` takes no arguments and touches no memory.
        unsafe { libc::sched_yield() };
    }
}

/// A value on its own cache lines, so that two locks never share one.
#[repr(align(128))]
pub struct Padded<T>(pub T);

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
}
