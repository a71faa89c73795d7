//! The locks a heap can sit behind: the [`RawLock`] trait, the default
//! [`SpinLock`], the interrupt-safe [`IrqSafeLock`], and the [`Mutex`]
//! that pairs a lock with the value it guards.
//!
//! [`LockedHeap`](crate::LockedHeap) and [`PerCpuHeap`](crate::PerCpuHeap)
//! are generic over the lock, so a kernel picks the discipline its heap
//! needs by type:
//! - [`SpinLock`] (the default): a test-and-test-and-set spin lock. An
//!   interrupt handler must not allocate from a heap behind it: if the
//!   interrupted code holds the lock on the same CPU, the handler spins
//!   forever.
//! - [`IrqSafeLock`]: interrupts are disabled while the lock is held and
//!   restored to their previous state on release, so no handler can run
//!   on a CPU that holds it, and handlers may allocate. With feature
//!   `x86_64`, [`crate::x86_64::IrqSafeLock`] is the one for x86_64
//!   (`cli`/`sti`); another architecture supplies its [`InterruptControl`].
//!
//! Invariants: a [`Mutex`]'s value is reached only through a
//! [`LockGuard`], which exists only while its lock is held and stays on
//! the thread that took it; the guard unlocks on drop. [`IrqSafeLock`]
//! restores the interrupt state it saved, which is right as long as the
//! locks one CPU holds at once are released in reverse order (see there).

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use crate::sync::{AtomicBool, Ordering};

/// A lock without data: what a heap sits behind
/// ([`LockedHeap`](crate::LockedHeap), [`PerCpuHeap`](crate::PerCpuHeap)).
///
/// # Safety
/// `lock` and a successful `try_lock` give mutual exclusion: between one
/// of them returning and the matching `unlock`, no other call of either
/// returns (successfully); `unlock` makes the holder's writes visible to
/// the next holder (release/acquire).
pub unsafe trait RawLock: Sync + Send {
    /// A lock that is not held.
    const UNLOCKED: Self;

    /// Takes the lock, waiting as long as it takes.
    fn lock(&self);

    /// Takes the lock if nobody holds it; never waits.
    fn try_lock(&self) -> bool;

    /// Releases the lock.
    ///
    /// # Safety
    /// The caller holds the lock (it took it with `lock` or a successful
    /// `try_lock`, and has not released it since).
    unsafe fn unlock(&self);

    /// Whether somebody holds the lock now (a hint: it may change at once).
    fn is_locked(&self) -> bool;

    /// Releases the lock on behalf of a holder that will never run again
    /// (a thread that `fork` did not copy into the child): the lock only,
    /// none of the holder's other state. The default is [`RawLock::unlock`];
    /// a lock whose `unlock` does more than release the lock overrides it
    /// ([`IrqSafeLock`] does not restore the interrupt state the holder
    /// saved, which belongs to the holder's CPU).
    ///
    /// # Safety
    /// The lock is held, its holder will never touch the lock or what it
    /// guards again, and nobody else releases it meanwhile.
    unsafe fn force_unlock(&self) {
        // SAFETY: the caller stands in for the holder, which is gone.
        unsafe { self.unlock() }
    }
}

/// The default lock: `spin`'s mutex, which spins until the lock is free
/// (test-and-test-and-set, so waiters read rather than write the word).
pub struct SpinLock {
    spin: spin::Mutex<()>,
}

// SAFETY: `spin::Mutex` gives mutual exclusion with acquire/release
// ordering; a guard is forgotten when taken, and `force_unlock` is its
// release, called only by the holder (`unlock`'s contract).
unsafe impl RawLock for SpinLock {
    const UNLOCKED: Self = SpinLock {
        spin: spin::Mutex::new(()),
    };

    #[inline]
    fn lock(&self) {
        core::mem::forget(self.spin.lock());
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.spin.try_lock().map(core::mem::forget).is_some()
    }

    /// # Safety
    /// As `RawLock::unlock` requires: the caller holds the lock.
    #[inline]
    unsafe fn unlock(&self) {
        // SAFETY: the caller holds the lock, whose guard was forgotten.
        unsafe { self.spin.force_unlock() }
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.spin.is_locked()
    }
}

impl fmt::Debug for SpinLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpinLock")
            .field("held", &self.is_locked())
            .finish()
    }
}

/// How a CPU masks its interrupts: what [`IrqSafeLock`] needs of the
/// architecture.
///
/// # Safety
/// After `disable` returns, no interrupt handler runs on the calling CPU
/// until `restore(true)` (or an instruction outside this trait) enables
/// them again.
pub unsafe trait InterruptControl {
    /// Disables interrupts on this CPU; returns whether they were enabled.
    fn disable() -> bool;

    /// Enables interrupts on this CPU if `enabled`, else leaves them off.
    ///
    /// # Safety
    /// `enabled` is what the matching `disable` returned, and the code
    /// that runs after interrupts come back on is ready for them (holds
    /// no lock a handler may take).
    unsafe fn restore(enabled: bool);
}

/// A spin lock held with interrupts disabled on the CPU that holds it:
/// the lock to put a heap behind when interrupt handlers allocate.
///
/// `lock` disables interrupts, then spins (re-enabling them between tries
/// if they were on, so a waiting CPU still takes its interrupts) and keeps
/// them disabled once it holds the lock; `unlock` releases the lock, then
/// restores the state `lock` found. Since no handler can run on a CPU
/// while it holds the lock, a handler never finds its own CPU holding it:
/// if it finds the lock held, another CPU holds it and will release it.
///
/// The saved state lives in the lock (only its holder writes or reads
/// it), so when one CPU holds several `IrqSafeLock`s at once, it must
/// release them in the reverse order it took them: releasing the outer
/// one first turns interrupts back on while the inner one is still held.
/// The library never holds two heap locks at once; code that holds a
/// heap's guard (`lock()`) and takes another `IrqSafeLock` keeps to this
/// order (guards dropped at the end of a scope are). Guards are not `Send`,
/// so a lock is always released on the CPU that took it.
///
/// Only maskable interrupts are kept out: a non-maskable interrupt or an
/// exception handler must never allocate from a heap behind any lock.
pub struct IrqSafeLock<C: InterruptControl> {
    spin: SpinLock,
    /// Whether interrupts were enabled when the holder took the lock.
    were_enabled: AtomicBool,
    control: PhantomData<fn() -> C>,
}

// SAFETY: mutual exclusion and ordering are `SpinLock`'s; the interrupt
// state is written only by the holder, after it took the lock, and read by
// the holder before it releases it.
unsafe impl<C: InterruptControl> RawLock for IrqSafeLock<C> {
    const UNLOCKED: Self = IrqSafeLock {
        spin: SpinLock::UNLOCKED,
        were_enabled: AtomicBool::new(false),
        control: PhantomData,
    };

    fn lock(&self) {
        loop {
            let enabled = C::disable();
            if self.spin.try_lock() {
                self.were_enabled.store(enabled, Ordering::Relaxed);
                return;
            }
            // SAFETY: what `disable` returned; this CPU holds no lock of
            // this heap (it just failed to take it).
            unsafe { C::restore(enabled) };
            while self.spin.is_locked() {
                core::hint::spin_loop();
            }
        }
    }

    fn try_lock(&self) -> bool {
        let enabled = C::disable();
        if self.spin.try_lock() {
            self.were_enabled.store(enabled, Ordering::Relaxed);
            return true;
        }
        // SAFETY: what `disable` returned; the lock was not taken.
        unsafe { C::restore(enabled) };
        false
    }

    /// # Safety
    /// As `RawLock::unlock` requires: the caller holds the lock.
    unsafe fn unlock(&self) {
        let enabled = self.were_enabled.load(Ordering::Relaxed);
        // SAFETY: the caller holds the lock.
        unsafe { self.spin.unlock() };
        // SAFETY: the state the holder's `lock` saved; the lock is released.
        unsafe { C::restore(enabled) };
    }

    fn is_locked(&self) -> bool {
        self.spin.is_locked()
    }

    /// # Safety
    /// As `RawLock::force_unlock` requires: the lock is held by a holder that
    /// will never run again, and nobody else releases it meanwhile.
    unsafe fn force_unlock(&self) {
        // SAFETY: forwarded from the caller; the saved interrupt state is
        // the vanished holder's, and is left alone.
        unsafe { self.spin.unlock() }
    }
}

impl<C: InterruptControl> fmt::Debug for IrqSafeLock<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IrqSafeLock")
            .field("held", &self.is_locked())
            .finish()
    }
}

/// A value behind a [`RawLock`].
pub(crate) struct Mutex<T, L: RawLock> {
    lock: L,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard, which exists only
// while the lock is held: one thread at a time, so `T: Send` suffices.
unsafe impl<T: Send, L: RawLock> Sync for Mutex<T, L> {}

impl<T, L: RawLock> Mutex<T, L> {
    pub(crate) const fn new(value: T) -> Self {
        Mutex {
            lock: L::UNLOCKED,
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> LockGuard<'_, T, L> {
        self.lock.lock();
        LockGuard {
            mutex: self,
            stays: PhantomData,
        }
    }

    /// Whether the lock is held now (a hint).
    pub(crate) fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    /// [`RawLock::force_unlock`] of the lock.
    ///
    /// # Safety
    /// As for [`RawLock::force_unlock`].
    pub(crate) unsafe fn force_unlock(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.lock.force_unlock() }
    }

    #[inline]
    pub(crate) fn try_lock(&self) -> Option<LockGuard<'_, T, L>> {
        // Not `then_some`: it would build (and drop, unlocking) a guard
        // when the lock was not taken.
        self.lock.try_lock().then(|| LockGuard {
            mutex: self,
            stays: PhantomData,
        })
    }
}

/// Exclusive access to a locked value; the lock is released on drop.
///
/// A guard stays on the thread (the CPU) that took the lock: it is not
/// `Send`, since an [`IrqSafeLock`] released on another CPU would restore
/// the interrupt state there. It is `Sync` only when the value is, as
/// sharing it shares `&T`.
pub struct LockGuard<'a, T, L: RawLock> {
    mutex: &'a Mutex<T, L>,
    /// Neither `Send` nor `Sync` by default (see the type doc).
    stays: PhantomData<*const ()>,
}

// SAFETY: a shared guard gives out only `&T`, which threads may share when
// `T: Sync`; the lock itself is only released by the guard's owner (drop).
unsafe impl<T: Sync, L: RawLock> Sync for LockGuard<'_, T, L> {}

impl<T, L: RawLock> Deref for LockGuard<'_, T, L> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T, L: RawLock> DerefMut for LockGuard<'_, T, L> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and is
        // borrowed exclusively.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T, L: RawLock> Drop for LockGuard<'_, T, L> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard was made when the lock was taken, and is
        // dropped once.
        unsafe { self.mutex.lock.unlock() }
    }
}

impl<T: fmt::Debug, L: RawLock> fmt::Debug for LockGuard<'_, T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Arc;

    std::thread_local! {
        /// The interrupt flag of this (simulated) CPU.
        static ENABLED: Cell<bool> = const { Cell::new(true) };
    }

    /// Interrupts of a simulated CPU: one flag per thread.
    struct Simulated;

    // SAFETY: no real interrupts exist in the test; the flag is the model.
    unsafe impl InterruptControl for Simulated {
        fn disable() -> bool {
            ENABLED.with(|e| e.replace(false))
        }

        /// # Safety
        /// As `InterruptControl::restore` requires: `enabled` is what the
        /// matching `disable` returned, and the code that runs next is ready
        /// for interrupts.
        unsafe fn restore(enabled: bool) {
            if enabled {
                ENABLED.with(|e| e.set(true));
            }
        }
    }

    fn enabled() -> bool {
        ENABLED.with(Cell::get)
    }

    /// `<T as NotSend<_>>::check()` compiles only if `T` is not `Send`: for
    /// a `Send` type both impls apply and the `_` is ambiguous.
    trait NotSend<A> {
        fn check() {}
    }
    impl<T: ?Sized> NotSend<()> for T {}
    impl<T: ?Sized + Send> NotSend<u8> for T {}

    #[test]
    fn a_guard_stays_on_its_thread_and_is_shared_only_for_sync_values() {
        // Not `Send`: an IrqSafeLock must be released on the CPU that took it.
        <LockGuard<'static, u32, SpinLock> as NotSend<_>>::check();
        <LockGuard<'static, u32, IrqSafeLock<Simulated>> as NotSend<_>>::check();
        fn shared<T: Sync>() {}
        shared::<LockGuard<'static, u32, SpinLock>>();
    }

    #[test]
    fn irq_safe_lock_masks_interrupts_while_held_and_restores_them() {
        let a: Mutex<u32, IrqSafeLock<Simulated>> = Mutex::new(0);
        let b: Mutex<u32, IrqSafeLock<Simulated>> = Mutex::new(0);
        assert!(enabled());
        {
            let mut outer = a.lock();
            assert!(!enabled(), "interrupts are off while the lock is held");
            {
                let mut inner = b.lock();
                *inner += 1;
                assert!(!enabled());
            }
            assert!(!enabled(), "releasing the inner lock keeps them off");
            *outer += 1;
        }
        assert!(enabled(), "releasing the outer lock turns them back on");

        // Taken with interrupts already off: released, they stay off.
        Simulated::disable();
        drop(a.lock());
        assert!(!enabled());
        // SAFETY: the simulated flag only.
        unsafe { Simulated::restore(true) };
    }

    #[test]
    fn try_lock_on_a_held_irq_safe_lock_leaves_interrupts_as_they_were() {
        let m: Arc<Mutex<u32, IrqSafeLock<Simulated>>> = Arc::new(Mutex::new(0));
        let held = m.lock();
        let other = Arc::clone(&m);
        std::thread::spawn(move || {
            assert!(other.try_lock().is_none());
            assert!(enabled(), "a failed try_lock restores the state");
        })
        .join()
        .unwrap();
        drop(held);
        assert!(m.try_lock().is_some());
        assert!(enabled());
    }

    fn count_under_contention<L: RawLock + 'static>() {
        let m: Arc<Mutex<u64, L>> = Arc::new(Mutex::new(0));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..if cfg!(miri) { 50 } else { 20_000 } {
                        if i % 2 == 0 {
                            *m.lock() += 1;
                        } else {
                            loop {
                                if let Some(mut g) = m.try_lock() {
                                    *g += 1;
                                    break;
                                }
                                std::thread::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), if cfg!(miri) { 200 } else { 80_000 });
    }

    #[test]
    fn spin_lock_counts_every_increment() {
        count_under_contention::<SpinLock>();
    }

    #[test]
    fn irq_safe_lock_counts_every_increment() {
        count_under_contention::<IrqSafeLock<Simulated>>();
        assert!(enabled());
    }
}
