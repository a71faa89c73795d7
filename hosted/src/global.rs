//! The process-wide allocator: per-CPU heaps, large mappings and thread
//! caches put together, with the allocation, free and resize primitives
//! the C functions (`malloc` module) are made of.
//!
//! Start-up (`ensure_init`, on the first call from any thread) takes the
//! preallocation, creates the heaps and the exit hook, and chooses the
//! cache key; it makes system calls only, never allocates, so a `malloc`
//! during start-up cannot recurse. Other threads wait for it.
//!
//! Routing:
//! - `size >= large::THRESHOLD`, or an alignment that large: a mapping;
//! - `size <= tcache::MAX_SIZE` (32 KiB): the thread cache, refilled in
//!   batches;
//! - otherwise: a per-CPU heap, under its lock.
//!
//! `free` reads the owner word before the data (where the core's
//! `region_heap::raw` says it lies, without the heap's lock): a used
//! region block's owner word names a region, which the core's lock-free
//! region table knows (`Arenas::is_region`, `PerCpuHeap::knows_region`);
//! a large block has a tag there instead. Anything
//! else is a misuse, reported with its address before the process aborts.
//! The fast paths also read a used block's size there (to pick a thread
//! cache bin); `raw` states why that is sound for a block the caller owns.
//!
//! When the core is built with its `guard` feature (guard zones around
//! the data), usable sizes come from the heap and the thread cache is off
//! (a cached block's links could land on guard bytes): see
//! `raw::EXACT_USABLE`.
//!
//! Fork: [`fork_child`] is the only `pthread_atfork` handler; nothing is
//! locked before `fork`. Taking every lock in a prepare handler (as this
//! module once did) hangs correct programs: the forking thread would hold
//! the heaps and then wait, inside glibc's `fork`, for stdio's list lock,
//! held by a thread in `fflush(NULL)` that waits for a `FILE` lock, held
//! by a thread in `getline` that waits for a heap (glibc bug 19431); and a
//! signal handler that forks while its thread is inside `malloc` would
//! wait for the lock that very call holds. Instead, the child looks at
//! every lock as `fork` copied it (each module's `after_fork_in_child`):
//! a lock copied free guards a consistent structure, used as before; a
//! lock copied held means a thread, gone in the child, was changing the
//! structure. What the child then may and may not do:
//! - it may call every function of the allocator, from any thread it
//!   creates: no call waits for a thread of the parent;
//! - a heap whose lock was held is abandoned (see `arenas`): it serves no
//!   allocation, a free of one of its blocks is dropped (the block leaks
//!   in the child, which usually execs or exits soon), `realloc` moves
//!   such a block and `malloc_usable_size` reads its header. `get_stat`
//!   works. A double free of such a block is not always detected;
//! - if every heap was abandoned, a spare heap serves the child; past the
//!   spares, every request is served by a large mapping (slow, sound);
//! - the large-block cache, if its lock was held, is emptied (its ranges
//!   leak), and large blocks work as before; so is each depot shelf whose
//!   lock was held (its chains leak);
//! - the thread registry keeps only the forking thread; its thread cache
//!   stays in use, the other threads' caches leak; their counters are
//!   kept if the registry's lock was free, else dropped from `get_stat`;
//! - a fork during the allocator's start-up in another thread leaves the
//!   child without an allocator: every allocation fails with `ENOMEM`;
//! - a fork from a signal handler that interrupted an allocator call
//!   does not hang, in the parent or the child; the child may then only
//!   make async-signal-safe calls (`_exit`, `exec`...), as POSIX and glibc
//!   say: the heap the interrupted call held is abandoned, but that
//!   thread's own cache may be half updated;
//! - a `pthread_atfork` child handler registered before this library's
//!   (by a library initialised earlier) that allocates runs before
//!   [`fork_child`] and may wait for a held lock; glibc's own fork code
//!   does not allocate there.
//!
//! The parent needs nothing: its threads go on.
//!
//! Invariants: nothing on these paths allocates through the allocator;
//! every pointer handed out is 16-aligned and is either a used region
//! block or a large block.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use region_heap::raw::{owner_region, owner_word, usable_size_unlocked, used_owner, EXACT_USABLE};
use region_heap::{HeapError, MIN_BLOCK};

use crate::arenas::Arenas;
use crate::cpu::online_cpus;
use crate::depot::Depot;
use crate::large::{self, tag_freed, tag_used, LargeBlocks};
use crate::misuse::{report, Misuse};
use crate::seal::{self, Damaged};
use crate::source;
use crate::stats::{Counter, Counts, Stat};
use crate::tcache::{self, bin_of_request, bin_of_usable, Bins, Detached};
use crate::text::Text;
use crate::thread::{self, ThreadState};

/// Largest request ever tried; larger ones fail with `ENOMEM` at once.
pub const MAX_REQUEST: usize = isize::MAX as usize;

static ARENAS: Arenas = Arenas::new();
static LARGE: LargeBlocks = LargeBlocks::new();
/// Whole bins passed from freeing threads to allocating ones.
static DEPOT: Depot = Depot::new();

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

const BRK_FROM_ENV: u8 = 0;
const BRK_NO: u8 = 2;
static BRK_CHOICE: AtomicU8 = AtomicU8::new(BRK_FROM_ENV);

/// Makes the heaps take their memory from `mmap` only, never the break
/// (for processes where another allocator uses `sbrk` concurrently, such
/// as Rust test binaries running on glibc's malloc). Effective only
/// before the first allocation. `REGIONHEAP_BRK=0` in the environment has
/// the same effect.
pub fn prefer_mmap() {
    BRK_CHOICE.store(BRK_NO, Ordering::Relaxed);
}

/// Initialises the allocator if needed; false if the system refused the
/// preallocation (every allocation then fails with `ENOMEM`).
#[inline]
pub fn ensure_init() -> bool {
    STATE.load(Ordering::Acquire) == READY || init_slow()
}

#[cold]
fn init_slow() -> bool {
    match STATE.compare_exchange(UNINIT, RUNNING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {
            let ok = init_now();
            STATE.store(if ok { READY } else { FAILED }, Ordering::Release);
            ok
        }
        Err(_) => loop {
            match STATE.load(Ordering::Acquire) {
                READY => return true,
                FAILED => return false,
                // SAFETY: `sched_yield` touches no memory of ours.
                _ => unsafe {
                    libc::sched_yield();
                },
            }
        },
    }
}

fn init_now() -> bool {
    seal::init();
    let use_brk = BRK_CHOICE.load(Ordering::Relaxed) != BRK_NO && env_allows_brk();
    if ARENAS.init(online_cpus(), use_brk).is_none() {
        return false;
    }
    // Without the exit hook, threads simply never use their cache.
    thread::init_exit_hook(flush_bins);
    true
}

/// Whether `REGIONHEAP_BRK` allows the break (anything but `0`).
fn env_allows_brk() -> bool {
    // SAFETY: a NUL-terminated name; `getenv` does not allocate.
    let value = unsafe { libc::getenv(c"REGIONHEAP_BRK".as_ptr()) };
    // SAFETY: a non-null result is a NUL-terminated string.
    value.is_null() || unsafe { *value } as u8 != b'0'
}

/// Whether the thread caches are used (not with the core's guard zones).
const CACHE_ENABLED: bool = EXACT_USABLE;

/// Usable bytes of a used region block.
///
/// # Safety
/// `ptr` is a used region block the caller owns.
#[inline]
unsafe fn region_usable(ptr: NonNull<u8>) -> usize {
    if EXACT_USABLE {
        // SAFETY: forwarded.
        unsafe { usable_size_unlocked(ptr.as_ptr()) }
    } else {
        // SAFETY: forwarded.
        unsafe { ARENAS.usable_size(ptr) }.unwrap_or(0)
    }
}

// ---- allocation ----

/// Allocates `size` bytes (16-aligned), counting the call as `counter`
/// (if any). Returns the block and whether it is known to be zeroed.
#[inline]
pub fn allocate(size: usize, counter: Option<Counter>) -> Option<(NonNull<u8>, bool)> {
    if CACHE_ENABLED && size <= tcache::MAX_SIZE {
        let bin = bin_of_request(size);
        let hit = thread::with(|t| {
            if !t.is_active() {
                return None;
            }
            let block = match t.bins.pop(bin, seal::key()) {
                Ok(block) => block?,
                Err(Damaged(at)) => report("malloc", Misuse::Overwritten, at.as_ptr() as usize),
            };
            if let Some(c) = counter {
                t.count_active(c);
            }
            t.count_active(Counter::Recycled);
            Some(block)
        });
        if let Some(block) = hit {
            return Some((block, false));
        }
    }
    allocate_slow(size, counter)
}

fn allocate_slow(size: usize, counter: Option<Counter>) -> Option<(NonNull<u8>, bool)> {
    thread::with(|t| {
        if let Some(c) = counter {
            t.count(c);
        }
        if size > MAX_REQUEST || !ensure_init() {
            return None;
        }
        if size >= large::THRESHOLD || !ARENAS.has_usable_heap() {
            return large_allocate(size.max(1), 16, counter).map(|g| (g.ptr, g.zeroed));
        }
        let cache_on = t.activate();
        if CACHE_ENABLED && size <= tcache::MAX_SIZE && cache_on {
            return refill(t, bin_of_request(size)).map(|p| (p, false));
        }
        let layout = Layout::from_size_align(size.max(1), 16).ok()?;
        t.with_hint(|hint| ARENAS.allocate(hint, layout))
            .map(|p| (p, false))
    })
}

/// Fills the (empty) bin `bin` and takes one block for the caller: a
/// whole chain from the depot if its shelf has one, else a batch from a
/// heap (`Heap::allocate_batch`, under one lock).
fn refill(t: &ThreadState, bin: usize) -> Option<NonNull<u8>> {
    if let Some(chain) = DEPOT.take(bin) {
        if let Err(chain) = t.bins.adopt(chain) {
            free_list(chain.into_list(seal::key()), "malloc");
        }
        match t.bins.pop(bin, seal::key()) {
            Ok(Some(block)) => return Some(block),
            Ok(None) => {}
            Err(Damaged(at)) => report("malloc", Misuse::Overwritten, at.as_ptr() as usize),
        }
    }
    let layout = Layout::from_size_align(tcache::usable_of_bin(bin), 16).ok()?;
    let mut got = [NonNull::dangling(); 64];
    let want = tcache::batch(bin).min(got.len());
    if t.bins.note_refill(want * tcache::block_of_bin(bin)) {
        give_back_cold(&t.bins, "malloc");
    }
    let n = t.with_hint(|hint| ARENAS.allocate_batch(hint, layout, &mut got[..want]));
    refresh_budget(&t.bins);
    let key = seal::key();
    // Pushed last to first, so that the bin hands them out in address
    // order (a run's blocks lie side by side).
    for &block in got[1..n.max(1)].iter().rev() {
        // SAFETY: a fresh used block of at least the bin's size; the bin
        // was empty and a batch is at most half its limit.
        unsafe { t.bins.push(bin, block, tcache::salt(block, key)) };
    }
    (n > 0).then_some(got[0])
}

/// Allocates `size` bytes aligned to `align` (a power of two).
pub fn allocate_aligned(size: usize, align: usize, counter: Counter) -> Option<NonNull<u8>> {
    if align <= 16 {
        return allocate(size, Some(counter)).map(|(p, _)| p);
    }
    thread::with(|t| {
        t.count(counter);
        if size > MAX_REQUEST || !ensure_init() {
            return None;
        }
        if size >= large::THRESHOLD || align >= large::THRESHOLD || !ARENAS.has_usable_heap() {
            return large_allocate(size.max(1), align, Some(counter)).map(|g| g.ptr);
        }
        t.activate();
        let layout = Layout::from_size_align(size.max(1), align).ok()?;
        t.with_hint(|hint| ARENAS.allocate(hint, layout))
    })
}

/// A large block from [`LARGE`], reporting a cached range overwritten
/// since its free (the call is named by its counter).
fn large_allocate(size: usize, align: usize, counter: Option<Counter>) -> Option<large::Grant> {
    let call = match counter {
        Some(Counter::Calloc) => "calloc",
        Some(Counter::Realloc) => "realloc",
        _ => "malloc",
    };
    sealed(LARGE.allocate(size, align), call, Misuse::Overwritten)
}

/// The value of a call that checked a seal; on damage, the report (which
/// aborts).
fn sealed<T>(result: Result<T, Damaged>, call: &'static str, misuse: Misuse) -> T {
    match result {
        Ok(value) => value,
        Err(Damaged(at)) => report(call, misuse, at.as_ptr() as usize),
    }
}

// ---- free ----

/// What the word before a block's data says it is.
enum Kind {
    /// A used block of a per-CPU heap.
    Region,
    /// A large block, handed out.
    Large,
}

/// Classifies the block at `ptr`, reporting (and aborting on) a misuse.
///
/// # Safety
/// The eight bytes before `ptr` are readable if `ptr` is 16-aligned.
#[inline]
unsafe fn classify(ptr: NonNull<u8>, call: &'static str) -> Kind {
    let addr = ptr.as_ptr() as usize;
    if !addr.is_multiple_of(16) || addr < 4096 {
        report(call, Misuse::InvalidPointer, addr);
    }
    // SAFETY: readable (caller).
    let owner = unsafe { owner_word(ptr.as_ptr()) };
    let region = ARENAS.is_region(owner_region(owner));
    if region && used_owner(owner).is_some() {
        return Kind::Region;
    }
    if owner == tag_used() {
        return Kind::Large;
    }
    // SAFETY: forwarded.
    if unsafe { unrecorded_region_block(ptr, owner) } {
        return Kind::Region;
    }
    // SAFETY: forwarded.
    unsafe { misuse_of(ptr, owner, region, call) }
}

/// Whether `ptr` is a used block of a region the core's region table does
/// not know (it records 256 regions; a process whose heaps made more, by
/// growing in many scattered chunks, has such regions): asks every heap,
/// slowly, under their locks.
///
/// # Safety
/// As for [`classify`].
#[cold]
unsafe fn unrecorded_region_block(ptr: NonNull<u8>, owner: usize) -> bool {
    // SAFETY: the heaps validate `ptr` before they read past its header.
    used_owner(owner).is_some() && unsafe { ARENAS.usable_size(ptr) }.is_ok()
}

/// Reports the misuse a pointer that `classify` refused stands for (a
/// double free, or whatever the owning heap finds), then aborts.
///
/// # Safety
/// As for [`classify`]: `ptr` came from the C caller as a block to free,
/// and `region` is true only if its owner word names a per-CPU heap's
/// region (the heap then validates it before anything is read past it).
#[cold]
unsafe fn misuse_of(ptr: NonNull<u8>, owner: usize, region: bool, call: &'static str) -> ! {
    let addr = ptr.as_ptr() as usize;
    if owner == tag_freed() {
        report(call, Misuse::DoubleFree, addr);
    }
    if region {
        // The heap validates the block fully and names the fault.
        // SAFETY: a refused free changes nothing.
        if let Err(e) = unsafe { ARENAS.free(ptr) } {
            report(call, Misuse::of(&e), addr);
        }
    }
    report(call, Misuse::InvalidPointer, addr)
}

/// Frees the block at `ptr` (any non-null pointer: misuses abort).
///
/// The fast path (a used region block of a cached size, on a thread whose
/// cache is active) reads two header words (owner and size, through
/// `region_heap::raw`) and touches only the thread's bin; everything else
/// goes through `release_slow`.
///
/// # Safety
/// If `ptr` is a live block of this allocator, nothing uses it any more.
#[inline]
pub unsafe fn release(ptr: NonNull<u8>, call: &'static str, counted: bool) {
    let addr = ptr.as_ptr() as usize;
    if CACHE_ENABLED && addr.is_multiple_of(16) && addr >= 4096 {
        // SAFETY: a 16-aligned pointer the caller says is ours: its owner
        // word is readable (as glibc reads its chunk header).
        let owner = unsafe { owner_word(ptr.as_ptr()) };
        if used_owner(owner).is_some_and(|region| ARENAS.is_region(region)) {
            // SAFETY: a used region block the caller gives up (so owns).
            let usable = unsafe { usable_size_unlocked(ptr.as_ptr()) };
            if let Some(bin) = bin_of_usable(usable) {
                // SAFETY: a used region block of at least
                // `usable_of_bin(bin)` usable bytes (exact: the cache is on
                // only when `EXACT_USABLE`).
                if thread::with(|t| unsafe { cache(t, bin, ptr, call, counted) }) {
                    return;
                }
            }
        }
    }
    // SAFETY: forwarded.
    unsafe { release_slow(ptr, call, counted) }
}

/// Puts a freed block into the thread's bin; false if the cache is off.
///
/// # Safety
/// `ptr` is a used region block of at least `usable_of_bin(bin)` usable
/// bytes (less than the next bin's) that
/// nothing uses any more.
#[inline(always)]
unsafe fn cache(
    t: &ThreadState,
    bin: usize,
    ptr: NonNull<u8>,
    call: &'static str,
    counted: bool,
) -> bool {
    if !t.is_active() {
        return false;
    }
    if counted {
        t.count_active(Counter::Free);
    }
    // SAFETY: a used region block (its owner word is readable).
    let salt = unsafe { tcache::salt(ptr, seal::key()) };
    // SAFETY: the block has at least 16 usable bytes.
    if unsafe { tcache::looks_cached(ptr, salt) } || t.bins.is_full(bin) {
        // Out of line and last, so that the common path keeps nothing
        // across a call (no registers to save, the slow part a tail call).
        // SAFETY: forwarded.
        unsafe { cache_after_checks(t, bin, ptr, salt, call) };
        return true;
    }
    // SAFETY: a used block of this bin's size, given up, not cached, and
    // the bin is not full.
    unsafe { push(t, bin, ptr, salt, call) };
    true
}

/// Pushes a freed block onto its bin, then sheds blocks if the cache is
/// over its budget.
///
/// # Safety
/// As for [`Bins::push`](tcache::Bins::push): a used block of this bin's
/// size, given up, not cached; the bin is not full. `salt` is the block's.
#[inline(always)]
unsafe fn push(
    t: &ThreadState,
    bin: usize,
    ptr: NonNull<u8>,
    salt: tcache::Salt,
    call: &'static str,
) {
    // SAFETY: forwarded.
    unsafe { t.bins.push(bin, ptr, salt) };
    if t.bins.over_budget() {
        shed_over_budget(&t.bins, call);
    }
}

/// The rest of [`cache`] for a block whose first words look like a cached
/// block's (a double free, unless the program's data happens to fit the
/// seal) or whose bin is full: checks, makes room, pushes.
///
/// # Safety
/// As for [`cache`]; `salt` is the block's.
#[cold]
#[inline(never)]
unsafe fn cache_after_checks(
    t: &ThreadState,
    bin: usize,
    ptr: NonNull<u8>,
    salt: tcache::Salt,
    call: &'static str,
) {
    // SAFETY: the block has at least 16 usable bytes.
    if unsafe { tcache::looks_cached(ptr, salt) } {
        check_not_cached(t, bin, ptr, call);
    }
    if t.bins.is_full(bin) {
        empty_full_bin(&t.bins, bin, call);
    }
    // SAFETY: a used block of this bin's size, given up, not cached (a
    // cached one was reported above), and the bin has room now.
    unsafe { push(t, bin, ptr, salt, call) };
}

/// A cache over its budget: refreshes the budget (it follows the heaps'
/// size, and a thread that only frees never refills) and, if the cache is
/// still over it, gives half of every bin back to the heaps.
#[cold]
fn shed_over_budget(bins: &Bins, call: &'static str) {
    let alone = refresh_budget(bins);
    if !bins.over_budget() || alone && bins.make_room() {
        return;
    }
    for bin in 0..tcache::BINS {
        let len = bins.len(bin);
        if len > 1 {
            give_back(bins.detach_after(bin, len / 2, seal::key()), call);
        }
    }
}

/// Refreshes the cache's budget (it follows the heaps' size and whether
/// the thread is alone, see `Bins::set_budget`); true if the thread is
/// alone.
fn refresh_budget(bins: &Bins) -> bool {
    let alone = !thread::several_active();
    bins.set_budget(tcache::budget(ARENAS.handed_out()), alone);
    alone
}

/// Gives back the blocks of every bin that no allocation took since the
/// last time (half its low-water mark, see `Bins::detach_cold`): a thread
/// that takes new blocks from the heaps does not keep others idle.
#[cold]
fn give_back_cold(bins: &Bins, call: &'static str) {
    for bin in 0..tcache::BINS {
        if let Some(list) = bins.detach_cold(bin, seal::key()) {
            give_back(list, call);
        }
    }
}

/// A freed block's seal fits its link: the block is cached (a seal is
/// cleared whenever a block leaves the caches: `pop`, [`free_list`]), so
/// this free is a double free. The walk of this thread's bin and of the
/// depot's shelf tells it from a write that damaged the bin; a block found
/// in neither sits in another thread's bin.
#[cold]
fn check_not_cached(t: &ThreadState, bin: usize, ptr: NonNull<u8>, call: &'static str) {
    let key = seal::key();
    let found = match t.bins.contains(bin, ptr, key) {
        Ok(false) => DEPOT.contains(bin, ptr, key),
        other => other,
    };
    match found {
        Ok(_) => report(call, Misuse::DoubleFree, ptr.as_ptr() as usize),
        Err(Damaged(at)) => report(call, Misuse::Overwritten, at.as_ptr() as usize),
    }
}

/// Every free the fast path does not take: large blocks, blocks too big
/// to cache, threads without a cache, and misuses.
///
/// # Safety
/// As for [`release`].
#[inline(never)]
unsafe fn release_slow(ptr: NonNull<u8>, call: &'static str, counted: bool) {
    // SAFETY: forwarded.
    match unsafe { classify(ptr, call) } {
        // SAFETY: a used region block (classified).
        Kind::Region => unsafe { release_region(ptr, call, counted) },
        Kind::Large => {
            count_shared_or_own(Counter::Free, counted);
            // SAFETY: a live large block.
            let freed = unsafe { LARGE.free(ptr) };
            sealed(freed, call, Misuse::Corrupted)
        }
    }
}

fn count_shared_or_own(counter: Counter, counted: bool) {
    if counted {
        count_call(counter);
    }
}

/// Counts one call of the kind `counter` (for calls that fail before
/// reaching an allocation path).
pub fn count_call(counter: Counter) {
    thread::with(|t| t.count(counter));
}

/// Frees a used region block: into the thread's cache if its size is
/// cached, else to its heap.
///
/// # Safety
/// `ptr` is a used region block nothing uses any more.
unsafe fn release_region(ptr: NonNull<u8>, call: &'static str, counted: bool) {
    let bin = if CACHE_ENABLED {
        // SAFETY: a used region block the caller gives up.
        bin_of_usable(unsafe { region_usable(ptr) })
    } else {
        None
    };
    // A thread that only frees (the consumer of a producer/consumer pair)
    // gets its cache on its first free, as one that allocates does on its
    // first allocation: else each of its frees would take a heap's lock.
    // SAFETY: a used block of the bin's size, given up.
    let cached = bin.is_some_and(|bin| {
        thread::with(|t| t.activate() && unsafe { cache(t, bin, ptr, call, counted) })
    });
    if cached {
        return;
    }
    // This thread's cache is off, or the block is in another's.
    if bin.is_some() {
        // SAFETY: a used region block of a cached size.
        unsafe { refuse_if_cached(ptr, call) };
    }
    count_shared_or_own(Counter::Free, counted);
    // SAFETY: forwarded.
    if let Err(e) = unsafe { ARENAS.free(ptr) } {
        report(call, Misuse::of(&e), fault_addr(&e, ptr));
    }
}

/// Reports a double free if `ptr` is still in some thread's cache or on
/// a depot shelf: a cached block is still used in its heap, and only its
/// seal (which only cached blocks carry) tells that it was freed.
///
/// # Safety
/// `ptr` is a used region block of a cached size (its owner word and 16
/// data bytes are readable).
unsafe fn refuse_if_cached(ptr: NonNull<u8>, call: &'static str) {
    // SAFETY: forwarded from the caller.
    if unsafe { tcache::looks_cached(ptr, tcache::salt(ptr, seal::key())) } {
        report(call, Misuse::DoubleFree, ptr.as_ptr() as usize);
    }
}

fn fault_addr(e: &HeapError, ptr: NonNull<u8>) -> usize {
    match *e {
        HeapError::NotFromHeap { addr }
        | HeapError::NotBlockStart { addr }
        | HeapError::DoubleFree { addr }
        | HeapError::Corrupted { addr, .. } => addr,
        _ => ptr.as_ptr() as usize,
    }
}

/// Makes room in full bin `bin`: the whole bin onto the depot's shelf
/// (no walk) while several threads use their caches, else (or if the
/// shelf refuses it) its older half back to the heaps.
#[cold]
fn empty_full_bin(bins: &Bins, bin: usize, call: &'static str) {
    // A fresh cache's limits, or the thread's company, may have changed.
    refresh_budget(bins);
    if !bins.is_full(bin) {
        return;
    }
    let key = seal::key();
    // A single thread gets nothing from the depot: it would only keep the
    // blocks from merging back in the heap.
    if thread::several_active() {
        let refused = match bins.detach_all(bin, key).into_chain() {
            Ok(chain) => match DEPOT.put(chain) {
                Ok(()) => return,
                Err(chain) => chain,
            },
            // Not for a full bin; handled all the same.
            Err(list) => return free_list(list, call),
        };
        if let Err(chain) = bins.adopt(refused) {
            return free_list(chain.into_list(key), call);
        }
    }
    free_list(bins.detach_after(bin, bins.limit(bin) / 2, key), call);
}

/// Gives a list detached from a bin to the threads that allocate:
/// onto the depot's shelf if it fits there, else back to the heaps.
fn give_back(list: Detached, call: &'static str) {
    if !thread::several_active() {
        return free_list(list, call);
    }
    match list.into_chain() {
        Ok(chain) => {
            if let Err(chain) = DEPOT.put(chain) {
                free_list(chain.into_list(seal::key()), call);
            }
        }
        Err(list) => free_list(list, call),
    }
}

/// Gives a detached list of cached blocks back to their heaps, each with
/// its seal cleared first (so that a block the heaps hand out again never
/// looks cached).
fn free_list(mut list: Detached, call: &'static str) {
    let mut next = || {
        let block = list.next()?;
        // SAFETY: a detached block: its first 16 bytes are the cache's.
        unsafe { tcache::unseal(block) };
        Some(block)
    };
    // SAFETY: cached blocks are used region blocks nobody uses.
    if let Err(e) = unsafe { ARENAS.free_all(&mut next) } {
        let addr = fault_addr(&e, NonNull::dangling());
        report(call, Misuse::of(&e), addr);
    }
    if let Some(Damaged(at)) = list.damaged() {
        report(call, Misuse::Overwritten, at.as_ptr() as usize);
    }
}

/// Empties every bin (a thread's exit hook).
fn flush_bins(bins: &Bins) {
    for bin in 0..tcache::BINS {
        if bins.len(bin) > 0 {
            free_list(bins.detach_all(bin, seal::key()), "free");
        }
    }
}

// ---- resize ----

/// Resizes the block at `ptr` to `size > 0` bytes, moving it if it must;
/// `None` when memory ran out (the block is then unchanged).
///
/// # Safety
/// `ptr` is a live block of this allocator that the caller owns (misuses
/// abort).
pub unsafe fn resize(ptr: NonNull<u8>, size: usize, call: &'static str) -> Option<NonNull<u8>> {
    if size > MAX_REQUEST {
        return None;
    }
    // SAFETY: forwarded.
    match unsafe { classify(ptr, call) } {
        // SAFETY: a used region block the caller owns.
        Kind::Region => unsafe { resize_region(ptr, size, call) },
        // SAFETY: a live large block the caller owns.
        Kind::Large => unsafe { resize_large(ptr, size, call) },
    }
}

/// # Safety
/// `ptr` is a used region block the caller owns.
unsafe fn resize_region(ptr: NonNull<u8>, size: usize, call: &'static str) -> Option<NonNull<u8>> {
    // SAFETY: the caller owns the block.
    let usable = unsafe { region_usable(ptr) };
    if CACHE_ENABLED && bin_of_usable(usable).is_some() {
        // SAFETY: a used region block of a cached size.
        unsafe { refuse_if_cached(ptr, call) };
    }
    let in_place = if size <= usable {
        // A shrink gives the tail back as glibc does (programs such as
        // CPython over-allocate, then shrink to the final size): a block
        // of an exact bin's size (up to 2 KiB) moves to the right bin
        // without a lock, a bigger one is split under its heap's lock. A
        // tail of less than the core's smallest block would not make a
        // block of its own.
        if usable - size < MIN_BLOCK {
            return Some(ptr);
        }
        usable > tcache::EXACT_MAX
    } else {
        size > tcache::EXACT_MAX && size < large::THRESHOLD
    };
    if in_place {
        // SAFETY: a used region block the caller owns.
        match unsafe { ARENAS.resize_in_place(ptr, size) } {
            Ok(true) => return Some(ptr),
            Ok(false) if size <= usable => return Some(ptr),
            Ok(false) => {}
            Err(e) => report(call, Misuse::of(&e), fault_addr(&e, ptr)),
        }
    }
    let (moved, _) = allocate(size, None)?;
    // SAFETY: both blocks are live and distinct; `usable < size` bytes
    // of the old one are initialised as far as the caller knows.
    unsafe {
        core::ptr::copy_nonoverlapping(ptr.as_ptr(), moved.as_ptr(), usable.min(size));
        release_region(ptr, call, false);
    }
    Some(moved)
}

/// # Safety
/// `ptr` is a live large block the caller owns.
unsafe fn resize_large(ptr: NonNull<u8>, size: usize, call: &'static str) -> Option<NonNull<u8>> {
    if size >= large::THRESHOLD / 2 {
        // SAFETY: forwarded.
        let resized = unsafe { LARGE.resize(ptr, size) };
        if let Some(resized) = sealed(resized, call, Misuse::Corrupted) {
            return Some(resized);
        }
        // `mremap` refused (no memory, or the user split the mapping with
        // `mprotect`): copy instead.
    }
    // SAFETY: a live large block (caller).
    let usable = sealed(
        unsafe { LargeBlocks::usable_size(ptr) },
        call,
        Misuse::Corrupted,
    );
    let (moved, _) = allocate(size, None)?;
    // SAFETY: both blocks are live and distinct.
    unsafe {
        core::ptr::copy_nonoverlapping(ptr.as_ptr(), moved.as_ptr(), size.min(usable));
        let freed = LARGE.free(ptr);
        sealed(freed, call, Misuse::Corrupted);
    }
    Some(moved)
}

/// Usable bytes of the block at `ptr`; 0 for a pointer that is not a live
/// block (as glibc answers for a freed chunk).
///
/// # Safety
/// The eight bytes before `ptr` are readable if `ptr` is 16-aligned.
pub unsafe fn usable(ptr: NonNull<u8>) -> usize {
    let addr = ptr.as_ptr() as usize;
    if !addr.is_multiple_of(16) || addr < 4096 {
        return 0;
    }
    // SAFETY: readable (caller).
    let owner = unsafe { owner_word(ptr.as_ptr()) };
    if used_owner(owner).is_some_and(|region| ARENAS.is_region(region)) {
        // SAFETY: a used region block.
        unsafe { region_usable(ptr) }
    } else if owner == tag_used() {
        // SAFETY: a large block handed out; 0 if its header was overwritten
        // (as for any pointer that is no live block).
        unsafe { LargeBlocks::usable_size(ptr) }.unwrap_or(0)
    } else if used_owner(owner).is_some() {
        // Perhaps a block of a region the table does not know.
        // SAFETY: the heaps validate `ptr` before they read past its header.
        unsafe { ARENAS.usable_size(ptr) }.unwrap_or(0)
    } else {
        0
    }
}

// ---- statistics, fork ----

/// The counters `get_stat()` reports.
pub fn stat() -> Stat {
    let calls = Counts::new();
    thread::sum_counts(&calls);
    let sys = source::counts();
    Stat {
        malloc: calls.get(Counter::Malloc),
        free: calls.get(Counter::Free),
        realloc: calls.get(Counter::Realloc),
        calloc: calls.get(Counter::Calloc),
        recycled: calls.get(Counter::Recycled) + LARGE.recycled(),
        mmap: sys.mmap,
        munmap: sys.munmap,
        brk: sys.brk,
        mremap: source::remap_count(),
    }
}

/// Writes the statistics to stderr (the report at exit); with `heaps`,
/// also one line per heap and the large-block cache.
pub fn print_stat(heaps: bool) {
    stat().format().write_stderr();
    if !heaps {
        return;
    }
    ARENAS.for_each(|i, heap| {
        let s = heap.stats();
        let mut line = Text::<256>::new();
        line.put(b"  heap ")
            .dec(i as u64)
            .put(b": total ")
            .dec(s.total_bytes as u64)
            .put(b" in_use ")
            .dec(s.in_use_bytes as u64)
            .put(b" peak ")
            .dec(s.peak_in_use_bytes as u64)
            .put(b" free ")
            .dec(s.free_bytes as u64)
            .put(b" largest_free ")
            .dec(s.largest_free as u64)
            .put(b" chunks ")
            .dec(s.chunks as u64)
            .put(b" used_blocks ")
            .dec(s.used_blocks as u64)
            .put(b"\n");
        line.write_stderr();
    });
    let (count, cached, live) = LARGE.footprint();
    let mut line = Text::<128>::new();
    line.put(b"  large: cached ")
        .dec(count as u64)
        .put(b" mappings, ")
        .dec(cached as u64)
        .put(b" bytes; live ")
        .dec(live as u64)
        .put(b" bytes\n");
    line.write_stderr();
    let mut line = Text::<64>::new();
    line.put(b"  depot: ")
        .dec(DEPOT.bytes() as u64)
        .put(b" bytes of cached blocks\n");
    line.write_stderr();
}

/// `pthread_atfork` child handler (the only fork handler: see the module
/// docs): abandons the heaps whose lock `fork` copied held, empties the
/// large-block cache if its lock was held, and keeps only this thread on
/// the registry; resets every lock copied held.
///
/// # Safety
/// Only as the atfork child handler: in a child just forked, in its one
/// thread, before it makes any other allocator call.
pub unsafe fn fork_child() {
    match STATE.load(Ordering::Acquire) {
        READY => {}
        RUNNING => {
            // Start-up was under way in a thread the child does not have.
            STATE.store(FAILED, Ordering::Release);
            return;
        }
        _ => return,
    }
    // SAFETY: in the child's one thread (caller).
    unsafe {
        ARENAS.after_fork_in_child();
        LARGE.after_fork_in_child();
        DEPOT.after_fork_in_child();
        thread::after_fork_in_child();
    }
}

/// The heap owning the used region block at `ptr`, if it is one (tests,
/// diagnostics).
///
/// # Safety
/// `ptr` is a live block of this allocator.
pub unsafe fn heap_of_block(ptr: NonNull<u8>) -> Option<usize> {
    // SAFETY: a live block's owner word is readable (caller).
    let owner = unsafe { owner_word(ptr.as_ptr()) };
    used_owner(owner).and_then(|region| ARENAS.heap_of(region))
}

/// Heaps a forked child found locked and abandoned, as a bit set (bit `i`:
/// heap `i`); 0 in a process that never forked.
pub fn abandoned_heaps() -> u64 {
    ARENAS.abandoned()
}

/// Initialises the allocator off the break, for tests in a process whose
/// own malloc (glibc's) uses `sbrk`.
#[cfg(test)]
pub(crate) fn init_for_tests() {
    prefer_mmap();
    assert!(ensure_init());
}

/// Blocks on the depot's shelves: used in their heaps, waiting for a
/// thread to take them (tests, diagnostics).
pub fn depot_blocks() -> usize {
    DEPOT.blocks()
}

/// Runs `f` on each per-CPU heap under its lock (tests, diagnostics).
pub fn for_each_heap(f: impl FnMut(usize, &mut crate::arenas::HostHeap)) {
    ARENAS.for_each(f);
}
