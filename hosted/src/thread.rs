//! Per-thread state: the small-block cache, the heap hint, the call
//! counters; and the registry of live threads that `get_stat` sums.
//!
//! The state lives in thread-local storage and is all zeroes when a thread
//! starts (the `Fresh` phase is 0), so it needs no initialiser and reaching
//! it never allocates. On x86_64 Linux it is a `.tbss` object reached with
//! the initial-exec TLS model (two instructions: the thread pointer plus
//! the offset from the GOT), written with `global_asm!`/`asm!` because
//! stable Rust compiles a `thread_local!` in a shared library to a
//! `__tls_get_addr` call, a tenth of the malloc fast path. Initial-exec is
//! what jemalloc and glibc use too; its one limit is that a library using
//! it cannot be `dlopen`ed after start-up when the state (about 1.8 KiB)
//! is larger than glibc's spare static TLS (512 bytes by default). A
//! malloc is never `dlopen`ed: it is preloaded or linked, and gets its
//! static TLS at start-up. Elsewhere a `thread_local!` holds the state.
//!
//! Its life has three phases:
//! - `Fresh`: not used yet; the first slow-path call (an allocation, or
//!   the free of a block the cache holds) activates it;
//! - `Active`: the cache is in use; the state is on the registry and a
//!   `pthread` key holds its address, so that the key's destructor flushes
//!   the cache when the thread exits;
//! - `Bypass`: while activating (`pthread_setspecific` may itself call
//!   `calloc`), after the thread's exit destructor ran (later destructors
//!   may still free), or when the key could not be created: every call goes
//!   straight to the heaps, counted in the shared counters.
//!
//! Fork: nothing is locked before `fork`; in the child,
//! [`after_fork_in_child`] keeps only the forking thread on the registry
//! (it checks the registry's lock word as `fork` copied it, see there).
//!
//! Invariants: a state is on the registry iff it is `Active` (or a dead
//! thread's state in a forked child, dropped by [`after_fork_in_child`]);
//! only its own thread writes its bins and counters.

use core::cell::Cell;
use core::ptr::null;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use spin::Mutex;

use crate::cpu::current_cpu;
use crate::lock::acquire;
use crate::stats::{Counter, Counts};
use crate::tcache::Bins;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
#[allow(dead_code)] // `Fresh` is made by zeroed TLS, not by code
enum Phase {
    /// Zero: what a new thread's TLS holds.
    Fresh = 0,
    Active = 1,
    Bypass = 2,
}

/// Calls in a row a thread's heap may leave to other heaps (it was locked
/// or full) before the thread's hint moves to the heap that served: a
/// moment of contention does not move a thread, whose frees go on filling
/// its old heap while it allocates from the new one (both heaps then grow
/// to the thread's working set); lasting contention still spreads threads.
pub const STRAYS_TO_MOVE: u32 = 4;

/// One thread's allocator state (the bins first: the fast paths reach
/// them at the state's own address).
#[repr(C)]
pub struct ThreadState {
    /// The small-block cache.
    pub bins: Bins,
    phase: Cell<Phase>,
    hint: Cell<usize>,
    /// Calls served in a row by a heap other than the hint's.
    strays: Cell<u32>,
    counts: Counts,
    next: Cell<*const ThreadState>,
    prev: Cell<*const ThreadState>,
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
core::arch::global_asm!(
    ".pushsection .tbss.regionheap_thread_state,\"awT\",@nobits",
    ".p2align 6",
    ".globl regionheap_thread_state",
    ".hidden regionheap_thread_state",
    ".type regionheap_thread_state, @object",
    ".size regionheap_thread_state, {size}",
    "regionheap_thread_state:",
    ".zero {size}",
    ".popsection",
    size = const core::mem::size_of::<ThreadState>(),
);

/// The calling thread's state (initial-exec TLS).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
fn current() -> *const ThreadState {
    let state: usize;
    // SAFETY: reads the GOT entry holding the object's offset from the
    // thread pointer and the thread pointer itself (`%fs:0` points to the
    // thread control block on x86_64 Linux); both are fixed for a thread.
    unsafe {
        core::arch::asm!(
            "mov {s}, qword ptr [rip + regionheap_thread_state@GOTTPOFF]",
            "add {s}, qword ptr fs:[0]",
            s = out(reg) state,
            options(pure, readonly, nostack),
        );
    }
    state as *const ThreadState
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
thread_local! {
    static THREAD: ThreadState = const { ThreadState::new() };
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
#[inline(always)]
fn current() -> *const ThreadState {
    THREAD.with(|s| s as *const ThreadState)
}

/// Runs `f` on the calling thread's state.
#[inline(always)]
pub fn with<R>(f: impl FnOnce(&ThreadState) -> R) -> R {
    // SAFETY: the thread's own state: all zeroes at thread start, which is
    // `ThreadState::new()` (checked by a test), and only ever shared with
    // other threads through its atomics and the registry's links.
    f(unsafe { &*current() })
}

struct Registry {
    head: *const ThreadState,
}

// SAFETY: the registry only links states; each is read by other threads
// through atomics (counters) and unlinked by its thread before it dies.
unsafe impl Send for Registry {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { head: null() });
/// Calls of exited threads and of threads in the `Bypass` phase.
static SHARED: Counts = Counts::new();
static KEY: AtomicU32 = AtomicU32::new(0);
/// States on the registry (threads whose cache is active).
static ACTIVE_THREADS: AtomicUsize = AtomicUsize::new(0);
static KEY_READY: AtomicBool = AtomicBool::new(false);

/// Creates the `pthread` key whose destructor flushes an exiting thread's
/// cache through `flush`. Call once, at start-up; returns success.
pub fn init_exit_hook(flush: fn(&Bins)) -> bool {
    FLUSH.store(flush as usize, Ordering::Release);
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out pointer; `on_thread_exit` has the
    // destructor's signature. `pthread_key_create` does not allocate.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } != 0 {
        return false;
    }
    KEY.store(key, Ordering::Relaxed);
    KEY_READY.store(true, Ordering::Release);
    true
}

static FLUSH: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn flush(bins: &Bins) {
    let raw = FLUSH.load(Ordering::Acquire);
    if raw != 0 {
        // SAFETY: only `init_exit_hook` stores it, as a `fn(&Bins)`.
        let f: fn(&Bins) = unsafe { core::mem::transmute::<usize, fn(&Bins)>(raw) };
        f(bins);
    }
}

extern "C" fn on_thread_exit(state: *mut libc::c_void) {
    // SAFETY: the key holds the address of this thread's state, set by
    // `activate`; the state outlives the key's destructors.
    let state = unsafe { &*(state as *const ThreadState) };
    state.phase.set(Phase::Bypass);
    flush(&state.bins);
    let mut registry = acquire(&REGISTRY);
    SHARED.absorb(&state.counts);
    state.counts.clear();
    unlink(&mut registry, state);
}

fn unlink(registry: &mut Registry, state: &ThreadState) {
    let (next, prev) = (state.next.get(), state.prev.get());
    if prev.is_null() {
        registry.head = next;
    } else {
        // SAFETY: registry members are live states (module invariant).
        unsafe { (*prev).next.set(next) };
    }
    if !next.is_null() {
        // SAFETY: as above.
        unsafe { (*next).prev.set(prev) };
    }
    state.next.set(null());
    state.prev.set(null());
    ACTIVE_THREADS.fetch_sub(1, Ordering::Relaxed);
}

/// Whether more than one thread has its cache active: only then may a
/// block one thread frees be allocated by another soon (see `depot`).
#[inline]
pub fn several_active() -> bool {
    ACTIVE_THREADS.load(Ordering::Relaxed) > 1
}

impl ThreadState {
    /// The state of a thread that has not allocated yet: all zeroes.
    #[cfg_attr(not(test), allow(dead_code))] // the TLS object is zero-filled instead
    pub(crate) const fn new() -> Self {
        Self {
            phase: Cell::new(Phase::Fresh),
            hint: Cell::new(0),
            strays: Cell::new(0),
            bins: Bins::new(),
            counts: Counts::new(),
            next: Cell::new(null()),
            prev: Cell::new(null()),
        }
    }

    /// Whether the cache is in use.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.phase.get() == Phase::Active
    }

    /// Activates a fresh state (see the module docs); returns whether the
    /// cache may be used now.
    pub fn activate(&self) -> bool {
        match self.phase.get() {
            Phase::Active => return true,
            Phase::Bypass => return false,
            Phase::Fresh => {}
        }
        self.phase.set(Phase::Bypass);
        self.hint.set(current_cpu());
        if !KEY_READY.load(Ordering::Acquire) {
            return false;
        }
        {
            let mut registry = acquire(&REGISTRY);
            self.next.set(registry.head);
            if !registry.head.is_null() {
                // SAFETY: the head is a live registered state.
                unsafe { (*registry.head).prev.set(self) };
            }
            registry.head = self;
            ACTIVE_THREADS.fetch_add(1, Ordering::Relaxed);
        }
        let key = KEY.load(Ordering::Relaxed);
        // SAFETY: a key created by `init_exit_hook`; the value is this
        // thread's state, which lives as long as the thread.
        if unsafe { libc::pthread_setspecific(key, (self as *const Self).cast()) } != 0 {
            unlink(&mut acquire(&REGISTRY), self);
            return false;
        }
        self.phase.set(Phase::Active);
        true
    }

    /// The heap hint: the CPU the thread ran on when it first allocated,
    /// then the heap that served it [`STRAYS_TO_MOVE`] times in a row while
    /// its own was contended or full (see `arenas`).
    #[inline]
    pub fn hint(&self) -> usize {
        self.hint.get()
    }

    /// Runs `allocate` with a copy of the thread's hint, which it sets to
    /// the heap that served (as `Arenas::allocate` does), then records that
    /// heap ([`ThreadState::set_hint`]).
    #[inline]
    pub fn with_hint<T>(&self, allocate: impl FnOnce(&mut usize) -> T) -> T {
        let mut hint = self.hint();
        let value = allocate(&mut hint);
        self.set_hint(hint);
        value
    }

    /// Records the heap that served the thread: the hint moves there once
    /// [`STRAYS_TO_MOVE`] calls in a row were served away from it.
    #[inline]
    pub fn set_hint(&self, served: usize) {
        if served == self.hint.get() {
            self.strays.set(0);
            return;
        }
        let strays = self.strays.get() + 1;
        if strays >= STRAYS_TO_MOVE {
            self.hint.set(served);
            self.strays.set(0);
        } else {
            self.strays.set(strays);
        }
    }

    /// Counts one call of a thread known to be active.
    #[inline(always)]
    pub fn count_active(&self, counter: Counter) {
        debug_assert!(self.is_active());
        self.counts.bump_owned(counter);
    }

    /// Counts one call.
    #[inline]
    pub fn count(&self, counter: Counter) {
        if self.is_active() {
            self.counts.bump_owned(counter);
        } else {
            SHARED.add_shared(counter, 1);
        }
    }
}

/// Adds the calls of every thread, live or exited, to `into`.
pub fn sum_counts(into: &Counts) {
    let registry = acquire(&REGISTRY);
    into.absorb(&SHARED);
    let mut state = registry.head;
    while !state.is_null() {
        // SAFETY: registry members are live states.
        let s = unsafe { &*state };
        into.absorb(&s.counts);
        state = s.next.get();
    }
}

/// In the child after `fork`: only the calling thread survives, and the
/// registry keeps only it. The other threads' cached blocks stay
/// allocated in their heaps (a bounded leak: they cannot be reached
/// safely); the calling thread's own cache is consistent (only it ever
/// touched it) and stays in use.
///
/// If `fork` copied the registry's lock free, the list is consistent and
/// the other threads' counters join the shared ones. If it copied it held
/// (a thread was linking or unlinking itself), the list may be half
/// changed: it is not walked, the lock is reset and the other threads'
/// counters are dropped (`get_stat` in the child then counts fewer calls
/// than were made; it never hangs).
///
/// # Safety
/// Only in a child just forked, in its one thread (the atfork child
/// handler), before the child makes any other allocator call.
pub unsafe fn after_fork_in_child() {
    let me = with(|s| s as *const ThreadState);
    if REGISTRY.is_locked() {
        // SAFETY: its holder does not exist in the child.
        unsafe { REGISTRY.force_unlock() };
        let mut registry = acquire(&REGISTRY);
        // SAFETY: this thread's own state.
        let s = unsafe { &*me };
        if s.is_active() {
            // An active state is on the registry (module invariant).
            s.next.set(null());
            s.prev.set(null());
            registry.head = me;
        } else {
            registry.head = null();
        }
        ACTIVE_THREADS.store(usize::from(s.is_active()), Ordering::Relaxed);
        return;
    }
    let mut registry = acquire(&REGISTRY);
    let mut state = registry.head;
    registry.head = null();
    while !state.is_null() {
        // SAFETY: registry members: their memory was copied into the child.
        let s = unsafe { &*state };
        state = s.next.get();
        if core::ptr::eq(s, me) {
            s.next.set(null());
            s.prev.set(null());
            registry.head = s;
        } else {
            SHARED.absorb(&s.counts);
        }
    }
    ACTIVE_THREADS.store(usize::from(!registry.head.is_null()), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_memory_is_a_fresh_state() {
        // SAFETY: every field of the state is valid all-zero (a `u8` enum
        // whose variant 0 exists, integers, atomics, null pointers): this
        // is what a new thread's `.tbss` holds.
        let zeroed: ThreadState = unsafe { core::mem::zeroed() };
        assert_eq!(zeroed.phase.get(), Phase::Fresh);
        assert_eq!(zeroed.hint.get(), 0);
        assert!(zeroed.bins.is_empty());
        assert!(zeroed.next.get().is_null() && zeroed.prev.get().is_null());
        assert_eq!(zeroed.counts.get(Counter::Malloc), 0);
        std::thread::spawn(|| {
            with(|s| {
                assert_eq!(s.phase.get(), Phase::Fresh);
                assert!(s.bins.is_empty());
            })
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_counts_privately_until_it_exits() {
        crate::global::init_for_tests();
        let before = Counts::new();
        sum_counts(&before);
        let shared_before = SHARED.get(Counter::Calloc);
        std::thread::spawn(|| {
            with(|s| {
                assert!(s.activate() && s.is_active());
                // SAFETY: `sysconf` reads a constant of the system.
                let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) } as usize;
                assert!(s.hint() < cpus, "starts on its CPU's heap");
                let home = s.hint();
                for stray in 1..STRAYS_TO_MOVE {
                    s.set_hint(7);
                    assert_eq!(s.hint(), home, "stray {stray} keeps the hint");
                }
                s.set_hint(home);
                for _ in 1..STRAYS_TO_MOVE {
                    s.set_hint(7);
                }
                assert_eq!(s.hint(), home, "a call served at home restarts the count");
                s.set_hint(7);
                for _ in 0..10 {
                    s.count(Counter::Calloc);
                }
                assert_eq!(s.hint(), 7);
            })
        })
        .join()
        .unwrap();
        let after = Counts::new();
        sum_counts(&after);
        assert!(after.get(Counter::Calloc) >= before.get(Counter::Calloc) + 10);
        // The exit hook moved the thread's counts to the shared ones.
        assert!(SHARED.get(Counter::Calloc) >= shared_before + 10);
    }
}
