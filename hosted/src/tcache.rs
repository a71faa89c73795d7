//! A per-thread cache of small blocks: segregated LIFO bins, no lock.
//!
//! Bin `b < 128` holds region blocks of exactly `(b + 1) * 16` usable
//! bytes, from 16 to [`EXACT_MAX`] (2 KiB); above, four bins per doubling
//! up to [`MAX_SIZE`] (32 KiB: 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10... KiB) hold
//! blocks of at least their size ([`usable_of_bin`]). A request of
//! `n <= MAX_SIZE` bytes looks in the first bin whose size is at least `n`
//! (`(n - 1) / 16` up to 2 KiB), whose blocks all fit it; a freed block
//! goes to the largest bin whose size it holds (a block of 48 usable bytes
//! given for a 40-byte request goes back to the 48-byte bin; one of 3,100
//! bytes to the 3 KiB bin). A refill allocates exactly the bin's size, so
//! a block from a refill rounds a request up by less than a quarter; a
//! block freed into a bin may be up to one bin step bigger than the bin's
//! size (the price of serving 2-32 KiB requests without a lock:
//! glibc-bench's thread workload runs 1.7x faster with them). Cached
//! blocks stay *used* in their heap:
//! to the core they are allocated; the cache only decides who gets them
//! next. A bin holds at most [`limit`] blocks (about [`BIN_BYTES`] of
//! them); a full bin goes whole to the depot (while several threads use
//! their caches) or sends its older half back to the heaps, and an empty
//! one takes a chain from the depot or is refilled with a batch taken
//! under one heap lock. The cache keeps to its budget (see [`budget`]): a
//! quarter of what the heaps have handed out, between [`MIN_THREAD_BYTES`]
//! and [`MAX_THREAD_BYTES`]; a free that finds it over budget has every bin
//! give half its blocks away (see `global`; a chain taken from the depot
//! may take the cache over budget until the next free).
//!
//! A lone thread (the only one with its cache active) has bins
//! `1 << LONE_SHIFT` times longer and, when over budget, makes room for
//! another budget's worth, up to [`LONE_THREAD_BYTES`]
//! ([`Bins::set_budget`], [`Bins::make_room`]): a program that frees most
//! of its blocks at once and allocates the same sizes again (the rounds of
//! a symbolic workload such as `bench/hosted/mixed_small.c`) gets them
//! back from its cache instead of merging each one in a heap and carving
//! it out again (that round trip cost about 350 instructions a block
//! against 30). Blocks it leaves idle go back instead: whenever it has
//! taken another budget's worth from the heaps while its cache is over
//! budget, each bin gives back half of its blocks that stayed idle since
//! the last time ([`Bins::note_refill`], [`Bins::detach_cold`]). With
//! several threads the limits and budget are the shared ones. The floor
//! is what a larson-style server (threads freeing each other's blocks)
//! needs to beat glibc: at 512 KiB it falls to 0.9x glibc's throughput,
//! at 1 MiB it runs at 1.25x; a program with a big heap gets a bigger
//! cache, which amortises the heap locks over more blocks.
//!
//! A cached block's first 16 data bytes hold the link and its seal:
//!
//! ```text
//! data + 0  next: *mut u8   next block of the bin (null at the end)
//! data + 8  seal: usize     seal(block, next): the process's cache key, the
//!                           link and the block's address mixed; 0 once taken
//! ```
//!
//! A link is followed only once its seal proves it: a write after free
//! into a cached block (zeros, ones, a crafted pointer) changes the link or
//! the seal, and the next pop, walk or flush that reaches the block reports
//! it ([`Damaged`]) instead of following the link, so damaged links never
//! steer `malloc` to an address of the program's choosing nor make it read
//! one. A pair copied from another cached block does not fit this block's
//! address. (A program that reads a cached block, learns the key and then
//! forges a seal is out of reach, as with glibc's safe-linking.)
//!
//! A block's seal is cleared whenever it leaves the caches (a pop, or the
//! way back to a heap), so a free of a block whose seal word fits its link
//! is a double free: the block is in this thread's bin, on a depot shelf,
//! or in another thread's bin (a walk of the bin and of the shelf tells a
//! damaged bin apart; glibc's tcache walks its own bin only). Every region
//! block has at least 16 usable bytes, so the words always fit.
//!
//! Invariants: `counts[b]` is the length of bin `b`'s list and at most
//! `limits[b]` (or 0 before the first refresh) once the thread's first
//! free or refill refreshed them; `low[b]` is read clamped to `counts[b]` (pops
//! lower the length, not the mark); every listed block is a used region block of at least
//! `usable_of_bin(b)` usable bytes and less than the next bin's size (so
//! a block a little bigger than its bin, an unsplit tail or a neighbour's
//! alignment gap, is fine) whose seal word holds `seal(block, next, key)`
//! unless a program wrote over it. `bytes` counts each block at its bin's
//! size ([`block_of_bin`]), so it may undercount a geometric bin's blocks
//! by up to a bin step.

use core::cell::Cell;
use core::ptr::{null_mut, NonNull};

use region_heap::raw::owner_word;

use crate::seal::Damaged;
use region_heap::GRANULE;

/// Largest usable size of the exact bins (one per 16-byte granule).
pub const EXACT_MAX: usize = 2048;
/// Bins above [`EXACT_MAX`] per doubling of the size.
const STEPS: usize = 4;
/// Doublings above [`EXACT_MAX`] that have bins.
const DOUBLINGS: usize = 4;
/// Largest usable size cached.
pub const MAX_SIZE: usize = EXACT_MAX << DOUBLINGS;
/// Number of exact bins.
const EXACT_BINS: usize = EXACT_MAX / GRANULE;
/// Number of bins.
pub const BINS: usize = EXACT_BINS + STEPS * DOUBLINGS;
/// Bytes of blocks a full bin holds, roughly (see [`limit`]).
pub const BIN_BYTES: usize = 128 << 10;
/// Smallest budget of one thread's cache, in bytes of blocks.
pub const MIN_THREAD_BYTES: usize = 1 << 20;
/// Largest budget of one thread's cache.
pub const MAX_THREAD_BYTES: usize = 4 << 20;

/// Most bytes of blocks the cache of a lone thread (the only one with
/// its cache active) holds; see [`Bins::set_budget`].
pub const LONE_THREAD_BYTES: usize = 64 << 20;
/// A lone thread's bins hold up to `limit(bin) << LONE_SHIFT` blocks (the
/// cache as a whole stays within [`LONE_THREAD_BYTES`]).
const LONE_SHIFT: u32 = 8;

/// The budget of a thread's cache when the heaps have handed out
/// `handed_out` bytes (a lone thread's cache may grow past it, see
/// [`Bins::set_budget`]).
#[inline]
pub fn budget(handed_out: usize) -> usize {
    (handed_out / 4).clamp(MIN_THREAD_BYTES, MAX_THREAD_BYTES)
}
/// Fewest and most blocks of a bin.
const LIMIT_RANGE: (usize, usize) = (8, 4096);

/// The bin whose blocks fit a request of `size <= MAX_SIZE` bytes.
#[inline]
pub fn bin_of_request(size: usize) -> usize {
    if size <= EXACT_MAX {
        size.saturating_sub(1) / GRANULE
    } else {
        // The first geometric bin whose size is at least `size`.
        let above = size - 1;
        let log = above.ilog2() as usize; // 11..=14
        let step = (above >> (log - STEPS.ilog2() as usize)) - STEPS; // 0..STEPS
        EXACT_BINS + (log - EXACT_MAX.ilog2() as usize) * STEPS + step
    }
}

/// The bin of a block of `usable` bytes, if it is cached at all: the
/// largest bin whose size it holds (exact up to [`EXACT_MAX`]).
#[inline]
pub fn bin_of_usable(usable: usize) -> Option<usize> {
    if usable <= EXACT_MAX {
        return (usable >= GRANULE).then(|| usable / GRANULE - 1);
    }
    if usable > MAX_SIZE {
        return None;
    }
    let log = usable.ilog2() as usize; // 11..=15
    let step = (usable >> (log - STEPS.ilog2() as usize)) - STEPS;
    Some(EXACT_BINS + (log - EXACT_MAX.ilog2() as usize) * STEPS + step - 1)
}

/// Usable bytes of the blocks of bin `bin`: the smallest a block in it
/// may have (a refill allocates exactly this; a freed block may have more,
/// up to the next bin's size).
#[inline]
pub const fn usable_of_bin(bin: usize) -> usize {
    if bin < EXACT_BINS {
        (bin + 1) * GRANULE
    } else {
        let g = bin - EXACT_BINS + 1; // 1..=STEPS * DOUBLINGS
        (EXACT_MAX << (g / STEPS)) / STEPS * (STEPS + g % STEPS)
    }
}

/// Most blocks bin `bin` holds: about [`BIN_BYTES`] of blocks, between 8
/// and 4096 (so the 8 blocks of a bin above 16 KiB hold more).
#[inline]
pub fn limit(bin: usize) -> u32 {
    SIZES[bin].limit
}

/// Bytes a block of bin `bin` is counted for: its usable size and a
/// header.
#[inline]
pub fn block_of_bin(bin: usize) -> usize {
    SIZES[bin].block as usize
}

/// What the fast paths need of a bin, side by side.
#[derive(Clone, Copy)]
struct BinSizes {
    limit: u32,
    block: u32,
}

/// [`limit`] and [`block_of_bin`] of every bin, computed once (no
/// division nor branch on the fast paths).
static SIZES: [BinSizes; BINS] = {
    let mut sizes = [BinSizes { limit: 0, block: 0 }; BINS];
    let mut bin = 0;
    while bin < BINS {
        let block = usable_of_bin(bin) + GRANULE;
        let n = BIN_BYTES / block;
        sizes[bin] = BinSizes {
            limit: if n < LIMIT_RANGE.0 {
                LIMIT_RANGE.0 as u32
            } else if n > LIMIT_RANGE.1 {
                LIMIT_RANGE.1 as u32
            } else {
                n as u32
            },
            block: block as u32,
        };
        bin += 1;
    }
    sizes
};

/// Blocks a refill of bin `bin` takes from a heap at once: about
/// [`BATCH_BYTES`], between 2 and 64, so that refilling every bin once
/// stays within twice [`MIN_THREAD_BYTES`] (a thread that starts by
/// allocating all sizes only sheds once).
#[inline]
pub fn batch(bin: usize) -> usize {
    (BATCH_BYTES / block_of_bin(bin)).clamp(2, 64)
}

/// Bytes of blocks a refill takes, roughly (see [`batch`]).
pub const BATCH_BYTES: usize = 3 << 10;

/// Asks the CPU to bring the block a bin will hand out next into the
/// cache: its link is read on that pop, usually long after this one.
#[inline(always)]
fn prefetch(block: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(block.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = block;
}

/// The seal of cached block `block` whose link is `next`: the key, the
/// link, the block's address and its owner word (the word before the
/// data, where glibc keeps a chunk's size: a write there while the block
/// is cached is caught too). Not the ring links, which a neighbour's
/// split or alignment gap may change.
///
/// The seal is `salt ^ next`, the salt being what is the block's own (see
/// [`salt`]): a free computes it once for its double-free check and its
/// push.
#[derive(Clone, Copy)]
pub struct Salt(usize);

/// The salt of `block`'s seals: the key, the block's address and its
/// owner word.
///
/// # Safety
/// `block` is a region block's data (its owner word is readable).
#[inline(always)]
pub unsafe fn salt(block: NonNull<u8>, key: usize) -> Salt {
    // SAFETY: forwarded from the caller.
    let owner = unsafe { owner_word(block.as_ptr()) };
    Salt(key ^ block.as_ptr() as usize ^ owner)
}

/// Writes `block`'s link and seal.
///
/// # Safety
/// The block's first 16 bytes belong to the cache; `salt` is its salt.
#[inline(always)]
unsafe fn set_link(block: NonNull<u8>, next: *mut u8, salt: Salt) {
    // SAFETY: forwarded from the caller.
    unsafe {
        block.as_ptr().cast::<*mut u8>().write(next);
        block
            .as_ptr()
            .add(8)
            .cast::<usize>()
            .write(salt.0 ^ next as usize);
    }
}

/// `block`'s link, once its seal proves it.
///
/// # Safety
/// `block` is a listed block (its first 16 bytes and its owner word are
/// readable).
#[inline(always)]
unsafe fn link(block: NonNull<u8>, key: usize) -> Result<*mut u8, Damaged> {
    // SAFETY: forwarded from the caller.
    unsafe { salted_link(block, salt(block, key)) }
}

/// [`link`] with the block's salt.
///
/// # Safety
/// As for [`link`]; `salt` is the block's.
#[inline(always)]
unsafe fn salted_link(block: NonNull<u8>, salt: Salt) -> Result<*mut u8, Damaged> {
    // SAFETY: forwarded from the caller.
    let (next, sealed) = unsafe {
        (
            block.as_ptr().cast::<*mut u8>().read(),
            block.as_ptr().add(8).cast::<usize>().read(),
        )
    };
    if sealed == salt.0 ^ next as usize {
        Ok(next)
    } else {
        Err(Damaged(block))
    }
}

/// Clears `block`'s seal as it leaves the caches for a heap (a pop clears
/// it too): only cached blocks have a seal that fits.
///
/// # Safety
/// `block` was just taken out of the caches (its first 16 bytes are the
/// cache's).
#[inline]
pub unsafe fn unseal(block: NonNull<u8>) {
    // SAFETY: forwarded from the caller.
    unsafe { block.as_ptr().add(8).cast::<usize>().write(0) };
}

/// Whether `block`'s seal word fits its link: the block is in a bin or on
/// a depot shelf (a free of it is a double free), or the program wrote the
/// improbable pair itself.
///
/// # Safety
/// `block` is a used region block's data (16 usable bytes at least);
/// `salt` is its salt.
#[inline(always)]
pub unsafe fn looks_cached(block: NonNull<u8>, salt: Salt) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { salted_link(block, salt) }.is_ok()
}

/// A list of blocks taken out of a bin. It stops at a damaged block
/// (which it does not yield: see [`Detached::damaged`]).
pub struct Detached {
    next: *mut u8,
    key: usize,
    damaged: Option<Damaged>,
    /// The bin and length of a list cut off whole and not walked yet (it
    /// can become a [`Chain`]); `None` otherwise.
    whole: Option<(usize, u32)>,
}

impl Detached {
    fn new(head: *mut u8, key: usize) -> Self {
        Detached {
            next: head,
            key,
            damaged: None,
            whole: None,
        }
    }

    /// The damaged block the list stopped at, if any.
    pub fn damaged(&self) -> Option<Damaged> {
        self.damaged
    }

    /// Walks the list for `block`; `Err` if it stops at a damaged block
    /// first.
    fn find(mut self, block: NonNull<u8>) -> Result<bool, Damaged> {
        let found = self.any(|b| b == block);
        match self.damaged() {
            Some(damaged) if !found => Err(damaged),
            _ => Ok(found),
        }
    }

    /// The list as a [`Chain`], if it was cut off whole from a bin and
    /// not walked since; else the list itself, to walk.
    pub fn into_chain(self) -> Result<Chain, Detached> {
        match (self.whole, NonNull::new(self.next)) {
            (Some((bin, len)), Some(head)) if len > 0 => Ok(Chain { head, bin, len }),
            _ => Err(self),
        }
    }
}

/// A whole list of one bin's blocks, as a bin held it (links sealed), moved
/// between threads as a unit (see `depot`): its head, bin and length.
///
/// Invariant (made only by [`Detached::into_chain`]): `head` starts a list
/// of `len` blocks, each a used region block of at least
/// `usable_of_bin(bin)` usable bytes that nothing else uses, linked and sealed as a
/// bin's blocks are, the last link null unless a program wrote over it.
pub struct Chain {
    head: NonNull<u8>,
    bin: usize,
    len: u32,
}

// SAFETY: a chain owns its blocks (nothing else uses them); nothing in it
// belongs to a thread.
unsafe impl Send for Chain {}

impl Chain {
    /// The bin whose blocks it holds.
    pub fn bin(&self) -> usize {
        self.bin
    }

    /// Blocks it holds (at least one).
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// Bytes of its blocks (as [`block_of_bin`] counts them).
    pub fn bytes(&self) -> usize {
        self.len as usize * block_of_bin(self.bin)
    }

    /// Whether `block` is one of its blocks; `Err` if the walk meets a
    /// block overwritten since it was cached.
    pub fn contains(&self, block: NonNull<u8>, key: usize) -> Result<bool, Damaged> {
        Detached::new(self.head.as_ptr(), key).find(block)
    }

    /// Its blocks, one by one (to give them back to their heaps).
    pub fn into_list(self, key: usize) -> Detached {
        Detached::new(self.head.as_ptr(), key)
    }
}

impl Iterator for Detached {
    type Item = NonNull<u8>;

    fn next(&mut self) -> Option<NonNull<u8>> {
        // Walked: no longer a whole list (see `into_chain`).
        self.whole = None;
        let block = NonNull::new(self.next)?;
        // SAFETY: a listed block (module invariant): reached from a head
        // or through a link its seal proved.
        match unsafe { link(block, self.key) } {
            Ok(next) => {
                self.next = next;
                Some(block)
            }
            Err(damaged) => {
                self.next = null_mut();
                self.damaged = Some(damaged);
                None
            }
        }
    }
}

/// The bins of one thread.
pub struct Bins {
    heads: [Cell<*mut u8>; BINS],
    counts: [Cell<u32>; BINS],
    /// Sum of `block_of_bin` over the cached blocks.
    bytes: Cell<usize>,
    /// Most bytes the cache holds before it sheds (see [`budget`]).
    cap: Cell<usize>,
    /// [`budget`] as last refreshed.
    soft: Cell<usize>,
    /// Most blocks of each bin: [`limit`], shifted left by [`LONE_SHIFT`]
    /// for a lone thread; 0 until the first [`Bins::set_budget`] (a fresh
    /// thread's bins look full, so its first free sets them).
    limits: [Cell<u32>; BINS],
    /// Whether `limits` are a lone thread's.
    alone: Cell<bool>,
    /// Blocks of each bin that may have stayed idle since the last
    /// [`Bins::detach_cold`] (a low-water mark as the cold paths see it: the
    /// length the bin was left with then, lowered as blocks are detached,
    /// 0 once the bin ran empty). Pops do not update it (it costs the
    /// malloc fast path nothing), so it may exceed the bin's length (it is
    /// clamped to it when read) and may count blocks that were taken and
    /// replaced by later frees.
    low: [Cell<u32>; BINS],
    /// Bytes refilled from the heaps since the last `detach_cold`.
    refilled: Cell<usize>,
}

impl Bins {
    /// Empty bins.
    pub const fn new() -> Self {
        Self {
            heads: [const { Cell::new(null_mut()) }; BINS],
            counts: [const { Cell::new(0) }; BINS],
            bytes: Cell::new(0),
            cap: Cell::new(0),
            soft: Cell::new(0),
            limits: [const { Cell::new(0) }; BINS],
            alone: Cell::new(false),
            low: [const { Cell::new(0) }; BINS],
            refilled: Cell::new(0),
        }
    }

    /// Empty bins with a shared-mode budget (tests).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        let bins = Self::new();
        bins.set_budget(budget(0), false);
        bins
    }

    /// Blocks in bin `bin`.
    pub fn len(&self, bin: usize) -> u32 {
        self.counts[bin].get()
    }

    /// Whether every bin is empty.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| c.get() == 0)
    }

    /// Bytes of the cached blocks (as [`block_of_bin`] counts them).
    #[inline]
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Whether the cache holds more than its budget.
    #[inline]
    pub fn over_budget(&self) -> bool {
        self.bytes.get() > self.cap.get()
    }

    /// Sets the budget to `soft` (see [`budget`]; refreshed at every
    /// refill and shed). A lone thread (`alone`) keeps the room it was
    /// given (see [`Bins::make_room`]) and gets longer bins: a program
    /// that frees most of its blocks at once and allocates the same sizes
    /// again (rounds of a symbolic workload) then gets them back from its
    /// cache, not one by one through the heaps; blocks it does not use
    /// again go back as [`Bins::detach_cold`] finds them. With several
    /// threads, the budget and bin limits are the shared ones (a cached
    /// block is of no use to another thread's allocations).
    pub fn set_budget(&self, soft: usize, alone: bool) {
        self.soft.set(soft);
        let cap = if alone {
            self.cap.get().max(soft)
        } else {
            soft
        };
        self.cap.set(cap);
        if alone != self.alone.get() || self.limits[0].get() == 0 {
            self.alone.set(alone);
            let shift = if alone { LONE_SHIFT } else { 0 };
            for (bin, most) in self.limits.iter().enumerate() {
                most.set(limit(bin) << shift);
            }
        }
    }

    /// Most blocks bin `bin` holds now (see [`Bins::set_budget`]).
    pub fn limit(&self, bin: usize) -> u32 {
        self.limits[bin].get()
    }

    /// Lets a lone thread's cache, over its budget, hold another
    /// [`budget`]'s worth of blocks, up to [`LONE_THREAD_BYTES`]; false if
    /// it is at that bound already.
    pub fn make_room(&self) -> bool {
        let cap = (self.bytes.get() + self.soft.get()).min(LONE_THREAD_BYTES);
        self.cap.set(cap);
        !self.over_budget()
    }

    /// Counts `bytes` about to be refilled from the heaps; true when it is
    /// time for [`Bins::detach_cold`]: the cache holds more than its
    /// [`budget`] and that much again came from the heaps since the last
    /// time (so a lone thread that moves on to other sizes gives back the
    /// blocks of the sizes it left).
    #[inline]
    pub fn note_refill(&self, bytes: usize) -> bool {
        let refilled = self.refilled.get() + bytes;
        let soft = self.soft.get();
        let due = refilled >= soft && self.bytes.get() > soft;
        self.refilled.set(if due { 0 } else { refilled });
        due
    }

    /// Takes the cold half of bin `bin`: half its low-water mark (see
    /// `low`), its oldest blocks; `None` if there is none. The mark
    /// restarts at the length left.
    pub fn detach_cold(&self, bin: usize, key: usize) -> Option<Detached> {
        let len = self.counts[bin].get();
        // Clamped: pops that left the bin non-empty lowered its length
        // below the mark.
        let cold = self.low[bin].replace(len).min(len) / 2;
        if cold == 0 {
            return None;
        }
        self.low[bin].set(len - cold);
        Some(self.detach_after(bin, len - cold, key))
    }

    /// Sets bin `bin`'s length to `len`, lowering its low-water mark.
    #[inline(always)]
    fn set_len(&self, bin: usize, len: u32) {
        self.counts[bin].set(len);
        self.low[bin].set(self.low[bin].get().min(len));
    }

    /// Takes a block from bin `bin`; `Err` (nothing changed) if the block
    /// was overwritten while cached.
    #[inline]
    pub fn pop(&self, bin: usize, key: usize) -> Result<Option<NonNull<u8>>, Damaged> {
        let Some(block) = NonNull::new(self.heads[bin].get()) else {
            // Ran empty: no block it held was idle (see `low`).
            self.low[bin].set(0);
            return Ok(None);
        };
        // SAFETY: a listed block (module invariant).
        let next = unsafe { link(block, key) }?;
        // SAFETY: its seal word is the cache's; cleared as it leaves.
        unsafe { unseal(block) };
        self.heads[bin].set(next);
        prefetch(next);
        self.counts[bin].set(self.counts[bin].get() - 1);
        self.bytes.set(self.bytes.get() - block_of_bin(bin));
        Ok(Some(block))
    }

    /// Whether bin `bin` is at its limit (longer for a lone thread, see
    /// [`Bins::set_budget`]).
    #[inline]
    pub fn is_full(&self, bin: usize) -> bool {
        self.counts[bin].get() >= self.limits[bin].get()
    }

    /// Puts a block in bin `bin` (which must not be full).
    ///
    /// # Safety
    /// `block` is a used region block of at least `usable_of_bin(bin)`
    /// usable bytes that nothing else uses, and not in any bin; `salt` is
    /// its [`salt`].
    #[inline]
    pub unsafe fn push(&self, bin: usize, block: NonNull<u8>, salt: Salt) {
        debug_assert!(!self.is_full(bin));
        // SAFETY: the block's first 16 bytes are ours now (caller).
        unsafe { set_link(block, self.heads[bin].get(), salt) };
        self.heads[bin].set(block.as_ptr());
        self.counts[bin].set(self.counts[bin].get() + 1);
        self.bytes.set(self.bytes.get() + block_of_bin(bin));
    }

    /// Whether `block` is listed in bin `bin`; `Err` if the walk meets a
    /// block overwritten while cached.
    pub fn contains(&self, bin: usize, block: NonNull<u8>, key: usize) -> Result<bool, Damaged> {
        Detached::new(self.heads[bin].get(), key).find(block)
    }

    /// Keeps the `keep` most recently cached blocks of bin `bin` and
    /// returns the others (a list that stops at a damaged block, which
    /// it reports: the bin is then left as it was).
    pub fn detach_after(&self, bin: usize, keep: u32, key: usize) -> Detached {
        if keep == 0 {
            return self.detach_all(bin, key);
        }
        let mut list = Detached::new(self.heads[bin].get(), key);
        let mut kept = 0;
        let Some(mut last) = list.next() else {
            return list;
        };
        kept += 1;
        while kept < keep {
            match list.next() {
                Some(b) => last = b,
                None => return list,
            }
            kept += 1;
        }
        // SAFETY: `last` is a listed block; cutting its link ends the bin.
        unsafe { set_link(last, null_mut(), salt(last, key)) };
        let gone = self.counts[bin].get() - keep;
        self.bytes
            .set(self.bytes.get() - gone as usize * block_of_bin(bin));
        self.set_len(bin, keep);
        list.whole = Some((bin, gone));
        list
    }

    /// Empties bin `bin` and returns its blocks.
    pub fn detach_all(&self, bin: usize, key: usize) -> Detached {
        let gone = self.counts[bin].get();
        self.set_len(bin, 0);
        self.bytes
            .set(self.bytes.get() - gone as usize * block_of_bin(bin));
        let mut list = Detached::new(self.heads[bin].replace(null_mut()), key);
        list.whole = Some((bin, gone));
        list
    }

    /// Makes `chain` the content of its bin, which must be empty (a bin
    /// about to be refilled); gives the chain back if the bin is not.
    pub fn adopt(&self, chain: Chain) -> Result<(), Chain> {
        let bin = chain.bin;
        if self.counts[bin].get() != 0 || chain.len > limit(bin) {
            return Err(chain);
        }
        self.heads[bin].set(chain.head.as_ptr());
        self.counts[bin].set(chain.len);
        self.bytes.set(self.bytes.get() + chain.bytes());
        Ok(())
    }
}

impl Default for Bins {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_map_requests_to_blocks_that_fit() {
        assert_eq!(bin_of_request(0), 0);
        assert_eq!(bin_of_request(1), 0);
        assert_eq!(bin_of_request(16), 0);
        assert_eq!(bin_of_request(17), 1);
        assert_eq!(bin_of_request(MAX_SIZE), BINS - 1);
        assert_eq!(BINS, 128 + 16);
        for size in 1..=MAX_SIZE {
            let bin = bin_of_request(size);
            assert!(usable_of_bin(bin) >= size, "{size}");
            if size <= EXACT_MAX {
                assert!(usable_of_bin(bin) < size + GRANULE);
            } else {
                assert!(usable_of_bin(bin) < size + size / 4 + GRANULE, "{size}");
                assert!(usable_of_bin(bin - 1) < size, "{size}: the first that fits");
            }
        }
        let geometric: Vec<_> = (128..BINS).map(|b| usable_of_bin(b) >> 9).collect();
        assert_eq!(
            geometric,
            [5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64]
        );
        for usable in (GRANULE..=MAX_SIZE).step_by(GRANULE) {
            // The largest bin whose size the block holds.
            let bin = bin_of_usable(usable).unwrap();
            assert!(usable_of_bin(bin) <= usable, "{usable}");
            assert!(
                bin == BINS - 1 || usable_of_bin(bin + 1) > usable,
                "{usable}"
            );
            assert_eq!(bin_of_request(usable_of_bin(bin)), bin);
        }
        assert_eq!(bin_of_usable(48), Some(2));
        assert_eq!(bin_of_usable(3100 / 16 * 16), Some(129));
        assert_eq!(bin_of_usable(MAX_SIZE + 16), None);
        assert_eq!(bin_of_usable(0), None);
        assert!((0..BINS).all(|b| (8..=4096).contains(&limit(b)) && batch(b) >= 2));
        assert_eq!(batch(0), 64);
        assert!((0..BINS).all(|b| batch(b) as u32 <= limit(b) / 2));
        let refill_all: usize = (0..BINS).map(|b| batch(b) * block_of_bin(b)).sum();
        assert!(refill_all <= 2 * MIN_THREAD_BYTES, "{refill_all}");
        assert_eq!(budget(0), MIN_THREAD_BYTES);
        assert_eq!(budget(8 << 20), 2 << 20);
        assert_eq!(budget(1 << 40), MAX_THREAD_BYTES);
        assert_eq!(limit(0), 4096);
        assert_eq!(limit(BINS - 1), 8, "at least 8 blocks, even of 32 KiB");
        assert_eq!(limit(127), (BIN_BYTES / (EXACT_MAX + 16)) as u32);
        assert_eq!(limit(63), (BIN_BYTES / (64 * 16 + 16)) as u32);
    }

    use region_heap::raw::OWNER_OFFSET;

    #[test]
    fn a_lone_thread_gets_longer_bins_room_and_gives_idle_blocks_back() {
        let bins = Bins::new();
        assert!(bins.is_full(0), "a fresh cache's first free sets limits");
        bins.set_budget(16, true);
        assert_eq!(bins.limit(5), limit(5) << LONE_SHIFT);
        let key = 0x5eed;
        let bin = 3;
        let mut slots = vec![[0u64; 10]; 6];
        let ptrs: Vec<_> = slots.iter_mut().map(slot_data).collect();
        for &p in &ptrs {
            // SAFETY: test slots of 64 bytes, each pushed once.
            unsafe { bins.push(bin, p, salt(p, key)) };
        }
        // Room: another budget's worth, up to the lone bound.
        assert!(bins.over_budget() && bins.make_room());
        assert_eq!(bins.cap.get(), bins.bytes() + 16);
        // A refresh keeps the room; company takes it away.
        bins.set_budget(16, true);
        assert!(!bins.over_budget());
        bins.set_budget(16, false);
        assert!(bins.over_budget());
        assert_eq!(bins.limit(5), limit(5));
        // Idle since the mark was set: half the mark goes, oldest first.
        assert!(bins.detach_cold(bin, key).is_none(), "no mark yet");
        assert!(!bins.note_refill(8) && bins.note_refill(8));
        let cold: Vec<_> = bins.detach_cold(bin, key).unwrap().collect();
        assert_eq!(cold, [ptrs[2], ptrs[1], ptrs[0]]);
        assert_eq!(bins.len(bin), 3);
        // A bin that ran empty had no idle block.
        while bins.pop(bin, key).unwrap().is_some() {}
        assert!(bins.detach_cold(bin, key).is_none());
    }

    /// `pop` lowers a bin's length but not its `low` mark, so after pops
    /// that do not empty the bin the mark exceeds the length: the cold
    /// pass clamps it (unclamped, `len - low / 2` underflowed: a panic with
    /// overflow checks, a walk of the whole bin that gave nothing back
    /// without).
    #[test]
    fn detach_cold_after_pops_that_leave_the_bin_non_empty() {
        let bins = Bins::for_tests();
        bins.set_budget(16, true);
        let key = 0x5eed;
        let bin = 3;
        let mut slots = vec![[0u64; 10]; 10];
        let ptrs: Vec<_> = slots.iter_mut().map(slot_data).collect();
        for &p in &ptrs {
            // SAFETY: test slots of 64 bytes, each pushed once.
            unsafe { bins.push(bin, p, salt(p, key)) };
        }
        // The first cold pass sets the mark at the bin's length (10).
        assert!(bins.detach_cold(bin, key).is_none());
        // The program takes 7 of them back (the bin is not emptied).
        for _ in 0..7 {
            assert!(bins.pop(bin, key).unwrap().is_some());
        }
        assert_eq!(bins.len(bin), 3);
        // The next cold pass: at most the 3 blocks left go, and the bin's
        // accounting stays consistent.
        let cold = bins.detach_cold(bin, key).map_or(0, |l| l.count());
        assert!(cold <= 3);
        assert_eq!(bins.len(bin) as usize + cold, 3);
        assert!(bins.low[bin].get() <= bins.len(bin));
    }

    /// The data of a test slot: 64 bytes after a 16-byte header.
    fn slot_data(slot: &mut [u64; 10]) -> NonNull<u8> {
        // Derived from the whole slot: the header words are reachable.
        NonNull::new(slot.as_mut_ptr().wrapping_add(2).cast::<u8>()).unwrap()
    }

    #[test]
    fn only_lists_cut_off_whole_become_chains_and_only_empty_bins_adopt() {
        let key = 0x5eed;
        let bin = 3;
        let mut slots = vec![[0u64; 10]; 4];
        let ptrs: Vec<_> = slots.iter_mut().map(slot_data).collect();
        let bins = Bins::for_tests();
        for &p in &ptrs {
            // SAFETY: test slots of 64 bytes, each pushed once.
            unsafe { bins.push(bin, p, salt(p, key)) };
        }
        let tail = bins.detach_after(bin, 1, key).into_chain().ok().unwrap();
        assert_eq!((tail.bin(), tail.len()), (bin, 3));
        assert_eq!(tail.contains(ptrs[0], key), Ok(true));
        assert_eq!(tail.contains(ptrs[3], key), Ok(false), "kept in the bin");
        // A list that has been walked is no chain any more.
        let mut walked = bins.detach_all(bin, key);
        assert_eq!(walked.next(), Some(ptrs[3]));
        assert!(walked.into_chain().is_err());
        // An empty bin's list is none either.
        assert!(bins.detach_all(bin, key).into_chain().is_err());
        // A bin holding blocks refuses a chain; an empty one takes it.
        // SAFETY: a slot taken out of the bin above.
        unsafe { bins.push(bin, ptrs[3], salt(ptrs[3], key)) };
        let tail = bins.adopt(tail).err().unwrap();
        assert_eq!(bins.len(bin), 1);
        assert_eq!(bins.pop(bin, key), Ok(Some(ptrs[3])));
        bins.adopt(tail).ok().unwrap();
        assert_eq!(bins.len(bin), 3);
        assert_eq!(bins.bytes(), 3 * block_of_bin(bin));
        assert_eq!(
            bins.detach_all(bin, key).collect::<Vec<_>>(),
            ptrs[..3].iter().rev().copied().collect::<Vec<_>>()
        );
    }

    #[test]
    fn lifo_with_keys_and_cold_half_detached() {
        let bins = Bins::for_tests();
        let key = 0x5eed;
        let bin = 3;
        let n = limit(bin);
        // Slots of 64 bytes (the bin's usable size) after a 16-byte header,
        // 8-aligned.
        let mut slots = vec![[0u64; 10]; n as usize];
        let ptrs: Vec<_> = slots.iter_mut().map(slot_data).collect();
        for &p in &ptrs {
            // SAFETY: test slots of 64 bytes, each pushed once.
            unsafe { bins.push(bin, p, salt(p, key)) };
            // SAFETY: a cached slot.
            assert!(unsafe { looks_cached(p, salt(p, key)) });
        }
        assert!(bins.is_full(bin));
        assert_eq!(bins.contains(bin, ptrs[0], key), Ok(true));
        let cold: Vec<_> = bins.detach_after(bin, n / 2, key).collect();
        assert_eq!(cold.len(), (n - n / 2) as usize);
        assert_eq!(
            cold[0],
            ptrs[(n - n / 2 - 1) as usize],
            "oldest half leaves"
        );
        assert_eq!(bins.len(bin), n / 2);
        assert_eq!(bins.bytes(), (n / 2) as usize * block_of_bin(bin));
        let top = bins.pop(bin, key).unwrap().unwrap();
        assert_eq!(top, ptrs[n as usize - 1], "last in, first out");
        // SAFETY: a slot just taken from the bin.
        assert_eq!(unsafe { top.as_ptr().add(8).cast::<usize>().read() }, 0);
        assert_eq!(bins.contains(bin, top, key), Ok(false));
        assert_eq!(bins.detach_all(bin, key).count(), (n / 2 - 1) as usize);
        assert!(bins.is_empty() && bins.pop(bin, key) == Ok(None));
        assert_eq!(bins.bytes(), 0);
    }

    /// A write after free into a cached block, of zeros, ones, a crafted
    /// pointer or the link of another cached block, is caught before the
    /// link is followed: by a pop (nothing changes), a walk and a flush.
    #[test]
    fn overwritten_links_are_caught_before_they_are_followed() {
        let key = 0x5eed_1234_5678_9abd;
        let mut target = [0u64; 8];
        let crafted = target.as_mut_ptr().cast::<u8>();
        // What the program writes over the second block, given the blocks.
        type Write = Box<dyn Fn(&[NonNull<u8>]) -> [usize; 2]>;
        let values: [Write; 5] = [
            Box::new(|_| [0, 0]),
            Box::new(|_| [usize::MAX, usize::MAX]),
            Box::new(move |_| [crafted as usize, 0]),
            // Only the link: the seal left as it was.
            Box::new(move |p| {
                [crafted as usize, unsafe {
                    p[1].as_ptr().add(8).cast::<usize>().read()
                }]
            }),
            // The words of the block below it in the bin.
            Box::new(|p| unsafe {
                [
                    p[0].as_ptr().cast::<usize>().read(),
                    p[0].as_ptr().add(8).cast::<usize>().read(),
                ]
            }),
        ];
        for value in values {
            let bins = Bins::for_tests();
            let bin = 3;
            let mut slots = vec![[0u64; 10]; 3];
            let ptrs: Vec<_> = slots.iter_mut().map(slot_data).collect();
            for &p in &ptrs {
                // SAFETY: test slots of 64 bytes, each pushed once.
                unsafe { bins.push(bin, p, salt(p, key)) };
            }
            // The program writes over the second block (ptrs[1]), which
            // links to the first.
            let [next, sealed] = value(&ptrs);
            // SAFETY: the test's own slot.
            unsafe {
                ptrs[1].as_ptr().cast::<usize>().write(next);
                ptrs[1].as_ptr().add(8).cast::<usize>().write(sealed);
            }
            assert_eq!(bins.contains(bin, ptrs[0], key), Err(Damaged(ptrs[1])));
            assert_eq!(bins.pop(bin, key), Ok(Some(ptrs[2])));
            assert_eq!(bins.pop(bin, key), Err(Damaged(ptrs[1])));
            assert_eq!(bins.len(bin), 2, "the damaged block stays listed");
            let mut flushed = bins.detach_all(bin, key);
            assert_eq!(flushed.next(), None, "nothing past the damage");
            assert_eq!(flushed.damaged(), Some(Damaged(ptrs[1])));
            assert_eq!(target, [0; 8], "the crafted address is never written");
        }
        // The word before a cached block's data (its owner word, where
        // glibc keeps a chunk's size) overwritten: the next pop says so.
        let bins = Bins::for_tests();
        let mut slot = [0u64; 10];
        let block = slot_data(&mut slot);
        // SAFETY: the test's own slot.
        unsafe { bins.push(3, block, salt(block, key)) };
        // SAFETY: the slot's owner word.
        unsafe { block.as_ptr().sub(OWNER_OFFSET).cast::<usize>().write(0x41) };
        assert_eq!(bins.pop(3, key), Err(Damaged(block)));
    }
}
