//! Large blocks: ranges of mapped memory, kept for reuse instead of
//! unmapped.
//!
//! Policy:
//! - a request of at least [`THRESHOLD`] bytes gets a page-rounded range
//!   of mapped memory of its own, with a header before the data (the
//!   range, the mapping it came from, and a tag word where a region block
//!   has its owner word, so `free` tells the two kinds apart with one load);
//! - a freed range goes to a cache (at most [`MAX_CACHED`] ranges) instead
//!   of `munmap`: unmapping every large free and faulting the pages back in
//!   is 7-8x slower on workloads that reuse large buffers. A freed range
//!   merges with cached ranges it touches that came from the same mapping,
//!   as freed heap blocks coalesce;
//! - a request takes the smallest cached range that fits and splits off
//!   the tail (at least [`SPLIT_MIN`] and an eighth of the request) as a
//!   range of its own, with no system call, so its resident pages serve the
//!   next request as a heap's split block would; failing a fit, it grows
//!   the largest cached range with `mremap`, which keeps its pages and
//!   faults in only the difference; only with an empty cache does it map
//!   fresh memory (then known zeroed: `calloc` skips clearing it);
//! - memory goes back to the system (`munmap`, oldest ranges first) when
//!   caching a freed range would let `cached + live` exceed 1.25 times the
//!   highest `live` total seen so far (at least [`CACHE_FLOOR`]), or the
//!   cache would exceed [`CACHE_CEILING`] or [`MAX_CACHED`] ranges. The
//!   cache thus keeps the footprint of large blocks within a quarter above
//!   their own peak, as a heap that keeps its freed holes does;
//! - `realloc` of a large block resizes its range with `mremap`: no copy,
//!   and a shrink gives the tail pages back.
//!
//! Fork: in a child whose copy of the cache's lock was held (a thread,
//! gone in the child, was changing the cache),
//! [`LargeBlocks::after_fork_in_child`] empties the cache instead of
//! abandoning it: the cache only lists ranges nobody uses, so forgetting
//! them leaks address space in the child and nothing else, and large
//! blocks work as before. The live and peak byte counts are kept (each is
//! one word, written whole); they may miss the interrupted operation, so
//! they saturate instead of wrapping.
//!
//! Invariants: every cached range is page-aligned, unused, and lies inside
//! the one kernel mapping its `origin` names (ranges are split, remapped —
//! which gives them a new origin when they move — and merged only with a
//! touching range of the same origin, so `mremap` and `munmap` of a range
//! are valid); `cached_bytes` is the sum of the cached lengths and
//! `live_bytes` that of the ranges handed out.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use region_heap::raw::OWNER_OFFSET;
use spin::Mutex;

use crate::lock::acquire;
use crate::seal::{self, Damaged};
use crate::source::{map, page_size, remap, round_up, unmap};

/// Smallest request served by a range of its own.
pub const THRESHOLD: usize = 256 << 10;
/// Most ranges the cache keeps.
pub const MAX_CACHED: usize = 32;
/// Bytes the cache may always hold, whatever the peak.
pub const CACHE_FLOOR: usize = 64 << 20;
/// Bytes the cache never exceeds.
pub const CACHE_CEILING: usize = 1 << 30;
/// Smallest tail `split` keeps apart from a reused range: one that can
/// serve a large request by itself.
pub const SPLIT_MIN: usize = THRESHOLD;
/// Bytes reserved before a large block's data for its header.
pub const HEADER: usize = (OWNER_OFFSET + 32).next_multiple_of(16);

/// The header of a large block, placed so that `tag` lies where a region
/// block has its owner word ([`OWNER_OFFSET`] before the data), and sealed
/// ([`crate::seal`]): `free`, `realloc` and `malloc_usable_size` trust its
/// range only once the seal proves it, so an underrun that rewrites it
/// cannot make the shim unmap or remap memory of the program's choosing.
/// A cached range keeps a freed header, sealed too, at its first block's
/// place, checked when the range is reused.
#[repr(C)]
struct LargeHeader {
    seal: usize,
    origin: usize,
    len: usize,
    start: usize,
    /// [`tag_used`] or [`tag_freed`].
    tag: usize,
}

/// The address that tags large blocks (never a region address: it lies in
/// this library's data).
static TAG_ANCHOR: u64 = 0;

/// Tag word of a large block handed out.
#[inline]
pub fn tag_used() -> usize {
    core::ptr::addr_of!(TAG_ANCHOR) as usize | 1
}

/// Tag word of a large block freed (cached or unmapped).
#[inline]
pub fn tag_freed() -> usize {
    core::ptr::addr_of!(TAG_ANCHOR) as usize | 2
}

/// A page-aligned range of mapped memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: usize,
    len: usize,
    /// Start of the kernel mapping the range lies in.
    origin: usize,
}

impl Range {
    const EMPTY: Range = Range {
        start: 0,
        len: 0,
        origin: 0,
    };

    fn end(self) -> usize {
        self.start + self.len
    }
}

struct Cache {
    /// Oldest first.
    entries: [Range; MAX_CACHED],
    count: usize,
    cached_bytes: usize,
    live_bytes: usize,
    peak_live: usize,
}

/// The large-block allocator and its cache.
pub struct LargeBlocks {
    cache: Mutex<Cache>,
    recycled: AtomicU64,
}

/// A large block handed out.
pub struct Grant {
    /// The data.
    pub ptr: NonNull<u8>,
    /// Whether every byte is zero (a fresh mapping).
    pub zeroed: bool,
}

fn header(data: NonNull<u8>) -> *mut LargeHeader {
    data.as_ptr().wrapping_sub(OWNER_OFFSET + 32).cast()
}

/// The seal of the header of the block at `data` over `range`, tagged
/// `tag`.
fn seal_of(data: NonNull<u8>, range: Range, tag: usize) -> usize {
    seal::key()
        ^ (data.as_ptr() as usize)
        ^ range.start.rotate_left(13)
        ^ range.len.rotate_left(29)
        ^ range.origin.rotate_left(41)
        ^ tag.rotate_left(53)
}

/// Writes the header of the block at `data` over `range`, tagged `tag`.
///
/// # Safety
/// The header's bytes before `data` lie inside `range`, which the caller
/// owns.
unsafe fn write_header(data: NonNull<u8>, range: Range, tag: usize) {
    // SAFETY: forwarded.
    unsafe {
        header(data).write(LargeHeader {
            seal: seal_of(data, range, tag),
            origin: range.origin,
            len: range.len,
            start: range.start,
            tag,
        })
    };
}

/// The range of the block at `data` as its header says, once its tag is
/// `tag` and its seal fits.
///
/// # Safety
/// The header's bytes before `data` are readable.
unsafe fn read_header(data: NonNull<u8>, tag: usize) -> Result<Range, Damaged> {
    // SAFETY: forwarded.
    let h = unsafe { header(data).read() };
    let range = Range {
        start: h.start,
        len: h.len,
        origin: h.origin,
    };
    if h.tag == tag && h.seal == seal_of(data, range, tag) {
        Ok(range)
    } else {
        Err(Damaged(data))
    }
}

/// The data of a cached range's first block, where its freed header lies.
fn first_data(range: Range) -> NonNull<u8> {
    NonNull::new((range.start + HEADER) as *mut u8).expect("a mapped range")
}

impl LargeBlocks {
    /// No ranges.
    pub const fn new() -> Self {
        Self {
            cache: Mutex::new(Cache {
                entries: [Range::EMPTY; MAX_CACHED],
                count: 0,
                cached_bytes: 0,
                live_bytes: 0,
                peak_live: 0,
            }),
            recycled: AtomicU64::new(0),
        }
    }

    /// Allocations served from the cache so far.
    pub fn recycled(&self) -> u64 {
        self.recycled.load(Ordering::Relaxed)
    }

    /// `(cached ranges, cached bytes, live bytes)`.
    pub fn footprint(&self) -> (usize, usize, usize) {
        let cache = acquire(&self.cache);
        (cache.count, cache.cached_bytes, cache.live_bytes)
    }

    /// A block of `size` bytes aligned to `align` (a power of two); `Ok(None)`
    /// when the system has no memory or the size overflows, `Err` when the
    /// cached range it would reuse was written to since it was freed.
    pub fn allocate(&self, size: usize, align: usize) -> Result<Option<Grant>, Damaged> {
        let page = page_size();
        let slack = if align <= page {
            round_up(HEADER, align.max(16))
        } else {
            align.checked_add(HEADER)
        };
        let Some(len) = slack
            .and_then(|slack| size.checked_add(slack))
            .and_then(|n| round_up(n, page))
        else {
            return Ok(None);
        };
        let Some((range, zeroed)) = self.range_for(len)? else {
            return Ok(None);
        };
        let data = round_up(range.start + HEADER, align.max(16));
        let Some(ptr) = data.and_then(|d| NonNull::new(d as *mut u8)) else {
            return Ok(None);
        };
        // SAFETY: the header lies inside the range, which we own.
        unsafe { write_header(ptr, range, tag_used()) };
        Ok(Some(Grant { ptr, zeroed }))
    }

    /// A range of at least `len` bytes (page multiple): from the cache if
    /// it holds anything, else fresh (then `true`: zeroed); `Err` if the
    /// cached range was written to since it was freed.
    fn range_for(&self, len: usize) -> Result<Option<(Range, bool)>, Damaged> {
        let (taken, spare) = {
            let mut cache = acquire(&self.cache);
            match cache.pick(len) {
                Some(i) => {
                    let cached = cache.take(i)?;
                    let (head, tail) = split(cached, len);
                    let spare = tail.and_then(|t| cache.try_push(t));
                    (Some(head), spare)
                }
                None => (None, None),
            }
        };
        if let Some(tail) = spare {
            // SAFETY: the unused end of a cached range, cached no more.
            unsafe { unmap_range(tail) };
        }
        let (range, zeroed) = match taken {
            Some(cached) => {
                let Some(fitted) = grow_to(cached, len) else {
                    return Ok(None);
                };
                self.recycled.fetch_add(1, Ordering::Relaxed);
                (fitted, false)
            }
            None => {
                let Some(mapped) = map(len) else {
                    return Ok(None);
                };
                let start = mapped.as_ptr() as usize;
                let fresh = Range {
                    start,
                    len,
                    origin: start,
                };
                (fresh, true)
            }
        };
        self.note_live(range.len as isize);
        Ok(Some((range, zeroed)))
    }

    fn note_live(&self, delta: isize) {
        let mut cache = acquire(&self.cache);
        cache.live_bytes = cache.live_bytes.saturating_add_signed(delta);
        cache.peak_live = cache.peak_live.max(cache.live_bytes);
    }

    /// Usable bytes of the large block at `data`; `Err` if its header was
    /// overwritten.
    ///
    /// # Safety
    /// `data` is a large block handed out (its header is readable).
    pub unsafe fn usable_size(data: NonNull<u8>) -> Result<usize, Damaged> {
        // SAFETY: forwarded.
        let range = unsafe { read_header(data, tag_used()) }?;
        Ok(range.end().saturating_sub(data.as_ptr() as usize))
    }

    /// Whether the block at `data` is a large block that was freed (its
    /// range is then cached; a freed and unmapped block cannot be read).
    ///
    /// # Safety
    /// The eight bytes before `data` are readable.
    pub unsafe fn is_freed(data: NonNull<u8>) -> bool {
        // SAFETY: readable (caller).
        unsafe { (*header(data)).tag == tag_freed() }
    }

    /// Frees the large block at `data`: cached, or unmapped if the cache
    /// policy says so; `Err` (nothing done) if its header was overwritten.
    ///
    /// # Safety
    /// `data` is a large block handed out (its header is readable) that
    /// nothing uses any more.
    pub unsafe fn free(&self, data: NonNull<u8>) -> Result<(), Damaged> {
        // SAFETY: forwarded.
        let freed = unsafe { read_header(data, tag_used()) }?;
        // SAFETY: the block's own header, proven; tagged freed for a later
        // double free.
        unsafe { write_header(data, freed, tag_freed()) };
        let mut evicted = [Range::EMPTY; MAX_CACHED + 1];
        let mut n = 0;
        {
            let mut cache = acquire(&self.cache);
            cache.live_bytes = cache.live_bytes.saturating_sub(freed.len);
            let merged = cache.merge_neighbours(freed)?;
            let budget = (cache.peak_live + cache.peak_live / 4).max(CACHE_FLOOR);
            let fits = |c: &Cache| {
                c.count < MAX_CACHED
                    && c.cached_bytes + merged.len + c.live_bytes <= budget
                    && c.cached_bytes + merged.len <= CACHE_CEILING
            };
            while cache.count > 0 && !fits(&cache) {
                evicted[n] = cache.remove(0);
                n += 1;
            }
            if fits(&cache) {
                cache.push(merged);
            } else {
                evicted[n] = merged;
                n += 1;
            }
        }
        for range in &evicted[..n] {
            // SAFETY: a range nobody uses (cached or just freed).
            unsafe { unmap_range(*range) };
        }
        Ok(())
    }

    /// Resizes the large block at `data` to hold `size` bytes by remapping
    /// its range; returns its (possibly moved) data, or `None` (unchanged:
    /// the system refused).
    ///
    /// # Safety
    /// `data` is a large block handed out (its header is readable) that
    /// the caller owns.
    pub unsafe fn resize(
        &self,
        data: NonNull<u8>,
        size: usize,
    ) -> Result<Option<NonNull<u8>>, Damaged> {
        // SAFETY: forwarded.
        let old = unsafe { read_header(data, tag_used()) }?;
        let offset = data.as_ptr() as usize - old.start;
        let Some(new_len) = size
            .checked_add(offset)
            .and_then(|n| round_up(n, page_size()))
        else {
            return Ok(None);
        };
        if new_len == old.len {
            return Ok(Some(data));
        }
        let Some(moved) = remap_range(old, new_len) else {
            return Ok(None);
        };
        let new_data = NonNull::new((moved.start + offset) as *mut u8).expect("a mapped range");
        // SAFETY: the header moved with the range.
        unsafe { write_header(new_data, moved, tag_used()) };
        self.note_live(new_len as isize - old.len as isize);
        Ok(Some(new_data))
    }

    /// The `pthread_atfork` child handler's part for large blocks: if
    /// `fork` copied the cache's lock held, resets the lock and empties
    /// the cache (see the module docs). Returns whether it did.
    ///
    /// # Safety
    /// Only in a child just forked, in its one thread, before the child
    /// makes any other call into the large blocks.
    pub unsafe fn after_fork_in_child(&self) -> bool {
        if !self.cache.is_locked() {
            return false;
        }
        // SAFETY: its holder does not exist in the child.
        unsafe { self.cache.force_unlock() };
        let mut cache = acquire(&self.cache);
        cache.count = 0;
        cache.cached_bytes = 0;
        true
    }
}

impl Default for LargeBlocks {
    fn default() -> Self {
        Self::new()
    }
}

impl Cache {
    /// The smallest entry of at least `len` bytes, else the largest one.
    fn pick(&self, len: usize) -> Option<usize> {
        let entries = &self.entries[..self.count];
        let fitting = (0..entries.len())
            .filter(|&i| entries[i].len >= len)
            .min_by_key(|&i| entries[i].len);
        fitting.or_else(|| (0..entries.len()).max_by_key(|&i| entries[i].len))
    }

    fn remove(&mut self, i: usize) -> Range {
        let r = self.entries[i];
        self.entries.copy_within(i + 1..self.count, i);
        self.count -= 1;
        self.cached_bytes -= r.len;
        r
    }

    /// Caches `r` (an entry must be free), with a sealed freed header at
    /// its first block's place.
    fn push(&mut self, r: Range) {
        // SAFETY: a range nobody uses, mapped and at least a page long:
        // the header before its first block's data lies inside it.
        unsafe { write_header(first_data(r), r, tag_freed()) };
        self.entries[self.count] = r;
        self.count += 1;
        self.cached_bytes += r.len;
    }

    /// Takes entry `i` out for reuse, once its freed header proves that
    /// nothing wrote it since it was cached; `Err` (entry dropped from the
    /// cache, its memory left alone) otherwise.
    fn take(&mut self, i: usize) -> Result<Range, Damaged> {
        let r = self.remove(i);
        // SAFETY: a cached range: mapped, its header written by `push`.
        match unsafe { read_header(first_data(r), tag_freed()) } {
            Ok(sealed) if sealed == r => Ok(r),
            _ => Err(Damaged(first_data(r))),
        }
    }

    /// Caches `r` if there is a free entry; else gives it back.
    fn try_push(&mut self, r: Range) -> Option<Range> {
        if self.count == MAX_CACHED {
            return Some(r);
        }
        self.push(r);
        None
    }

    /// Takes the cached ranges of `r`'s mapping that touch it out of the
    /// cache and returns `r` joined with them; `Err` at a neighbour written
    /// to since it was cached.
    fn merge_neighbours(&mut self, mut r: Range) -> Result<Range, Damaged> {
        while let Some(i) = (0..self.count).find(|&i| {
            let c = self.entries[i];
            c.origin == r.origin && (c.end() == r.start || r.end() == c.start)
        }) {
            let c = self.take(i)?;
            r = Range {
                start: r.start.min(c.start),
                len: r.len + c.len,
                origin: r.origin,
            };
        }
        Ok(r)
    }
}

/// Splits a cached range for a request of `len` bytes: the head to hand
/// out, and the tail when it is worth keeping apart (at least
/// [`SPLIT_MIN`] and an eighth of the request). No system call: the tail
/// stays mapped and resident, like the rest of a split heap block.
fn split(r: Range, len: usize) -> (Range, Option<Range>) {
    if r.len < len || r.len - len < SPLIT_MIN.max(len / 8) {
        return (r, None);
    }
    let head = Range { len, ..r };
    let tail = Range {
        start: r.start + len,
        len: r.len - len,
        origin: r.origin,
    };
    (head, Some(tail))
}

/// Makes a cached range at least `len` bytes long, growing it with
/// `mremap` (which keeps its pages) if it is short. `None` (and the range
/// unmapped) if the system refuses.
fn grow_to(r: Range, len: usize) -> Option<Range> {
    if r.len >= len {
        return Some(r);
    }
    let grown = remap_range(r, len);
    if grown.is_none() {
        // SAFETY: a cached range nobody uses, cached no more.
        unsafe { unmap_range(r) };
    }
    grown
}

/// Resizes a range with `mremap`; a range that moves starts a mapping of
/// its own. `None` (range unchanged) if the system refuses.
fn remap_range(r: Range, len: usize) -> Option<Range> {
    let start = NonNull::new(r.start as *mut u8)?;
    // SAFETY: a range its caller owns, inside one mapping (invariant).
    let moved = unsafe { remap(start, r.len, len) }?.as_ptr() as usize;
    let origin = if moved == r.start { r.origin } else { moved };
    Some(Range {
        start: moved,
        len,
        origin,
    })
}

/// # Safety
/// `r` is a range nobody uses.
unsafe fn unmap_range(r: Range) {
    if let Some(start) = NonNull::new(r.start as *mut u8) {
        // SAFETY: forwarded.
        unsafe { unmap(start, r.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::counts;

    /// A fresh set of large blocks, with the process key drawn first: the
    /// key must not change under a sealed header, and the shim's own tests
    /// initialise it concurrently.
    fn blocks() -> LargeBlocks {
        seal::init();
        LargeBlocks::new()
    }

    fn fill(p: NonNull<u8>, len: usize, byte: u8) {
        // SAFETY: `len` writable bytes (the tests' own blocks).
        unsafe { p.as_ptr().write_bytes(byte, len) };
    }

    fn holds(p: NonNull<u8>, len: usize, byte: u8) -> bool {
        // SAFETY: `len` readable bytes.
        unsafe { core::slice::from_raw_parts(p.as_ptr(), len) }
            .iter()
            .all(|&b| b == byte)
    }

    #[test]
    fn freed_mappings_are_reused_not_remapped() {
        let large = blocks();
        let size = 5 << 20;
        let first = large.allocate(size, 16).unwrap().unwrap();
        assert!(first.zeroed && holds(first.ptr, size, 0));
        fill(first.ptr, size, 1);
        // SAFETY: a live block, freed once.
        unsafe {
            assert!(LargeBlocks::usable_size(first.ptr).unwrap() >= size);
            large.free(first.ptr).unwrap();
            assert!(LargeBlocks::is_freed(first.ptr));
        }
        let maps = counts().mmap;
        let again = large.allocate(size - 4096, 16).unwrap().unwrap();
        assert_eq!(again.ptr, first.ptr, "the cached mapping came back");
        assert!(!again.zeroed);
        assert_eq!(large.recycled(), 1);
        // Other tests may map concurrently, but this one did not wait for
        // a fresh mapping: its block is the old one, with the old bytes.
        assert!(holds(again.ptr, size - 4096, 1));
        assert!(counts().mmap >= maps);
        // SAFETY: live.
        unsafe { large.free(again.ptr).unwrap() };
        assert_eq!(large.footprint().0, 1);
    }

    #[test]
    fn a_short_cached_range_grows_and_a_long_one_is_split() {
        let large = blocks();
        let small = large.allocate(1 << 20, 16).unwrap().unwrap();
        fill(small.ptr, 1 << 20, 7);
        // SAFETY: live, freed once.
        unsafe { large.free(small.ptr).unwrap() };
        let big = large.allocate(8 << 20, 16).unwrap().unwrap();
        assert!(holds(big.ptr, 1 << 20, 7), "mremap kept the pages");
        fill(big.ptr, 8 << 20, 9);
        // SAFETY: live, freed once.
        unsafe { large.free(big.ptr).unwrap() };
        let maps = counts().munmap;
        let head = large.allocate(2 << 20, 16).unwrap().unwrap();
        // SAFETY: live.
        let usable = unsafe { LargeBlocks::usable_size(head.ptr).unwrap() };
        assert!((2 << 20..(2 << 20) + 8192).contains(&usable), "{usable}");
        assert!(holds(head.ptr, 2 << 20, 9));
        let (count, cached, live) = large.footprint();
        assert_eq!(count, 1, "the tail stays cached, split off");
        assert_eq!(cached + live, (8 << 20) + 4096);
        // The tail serves the next request, with the bytes it had.
        let tail = large.allocate(5 << 20, 16).unwrap().unwrap();
        assert!(!tail.zeroed && holds(tail.ptr, 5 << 20, 9));
        assert!(counts().munmap >= maps);
        // SAFETY: live blocks, freed once.
        unsafe {
            large.free(head.ptr).unwrap();
            large.free(tail.ptr).unwrap();
        }
        let (_, _, live) = large.footprint();
        assert_eq!(live, 0);
    }

    #[test]
    fn aligned_blocks_and_resizes() {
        let large = blocks();
        for align in [16, 64, 4096, 1 << 16, 1 << 21] {
            let g = large.allocate(300 << 10, align).unwrap().unwrap();
            assert_eq!(g.ptr.as_ptr() as usize % align, 0);
            fill(g.ptr, 300 << 10, 3);
            // SAFETY: live blocks.
            unsafe {
                let grown = large.resize(g.ptr, 3 << 20).unwrap().unwrap();
                assert!(holds(grown, 300 << 10, 3));
                fill(grown, 3 << 20, 4);
                let shrunk = large.resize(grown, 260 << 10).unwrap().unwrap();
                assert!(holds(shrunk, 260 << 10, 4));
                assert!(
                    LargeBlocks::usable_size(shrunk).unwrap() < (260 << 10) + 2 * align.max(4096)
                );
                large.free(shrunk).unwrap();
            }
        }
        assert!(large.allocate(usize::MAX - 100, 16).unwrap().is_none());
    }

    #[test]
    fn the_cache_stays_within_a_quarter_above_the_peak() {
        let large = blocks();
        let blocks: Vec<_> = (0..80)
            .map(|_| large.allocate(3 << 20, 16).unwrap().unwrap())
            .collect();
        let peak = large.footprint().2;
        let bound = (peak + peak / 4).max(CACHE_FLOOR);
        // Every other block first, so that the cached ranges cannot merge.
        for g in blocks
            .iter()
            .step_by(2)
            .chain(blocks.iter().skip(1).step_by(2))
        {
            // SAFETY: live blocks, each freed once.
            unsafe { large.free(g.ptr).unwrap() };
            let (count, cached, live) = large.footprint();
            assert!(count <= MAX_CACHED);
            assert!(cached + live <= bound, "{cached} + {live} > {bound}");
        }
        assert_eq!(large.footprint().2, 0);
    }

    /// A forked child whose copy of the cache's lock was held empties the
    /// cache (its ranges leak) and goes on using large blocks; one whose
    /// copy was free keeps the cache.
    #[test]
    fn a_child_empties_a_cache_locked_at_fork() {
        let large = blocks();
        let kept = large.allocate(1 << 20, 16).unwrap().unwrap();
        let cached = large.allocate(2 << 20, 16).unwrap().unwrap();
        // SAFETY: live, freed once.
        unsafe { large.free(cached.ptr).unwrap() };
        // SAFETY: a simulated child, no other thread uses `large`.
        assert!(!unsafe { large.after_fork_in_child() }, "lock copied free");
        assert_eq!(large.footprint().0, 1, "the cache is kept");
        core::mem::forget(acquire(&large.cache));
        // SAFETY: as above.
        assert!(unsafe { large.after_fork_in_child() });
        let (count, bytes, live) = large.footprint();
        assert_eq!((count, bytes), (0, 0), "the cache was emptied");
        assert!(live >= 1 << 20);
        let fresh = large.allocate(2 << 20, 16).unwrap().unwrap();
        assert!(fresh.zeroed, "a fresh mapping, not the forgotten range");
        fill(fresh.ptr, 2 << 20, 5);
        // SAFETY: live blocks, freed once.
        unsafe {
            large.free(kept.ptr).unwrap();
            large.free(fresh.ptr).unwrap();
        }
        assert_eq!(large.footprint().2, 0);
    }

    #[test]
    fn freed_neighbours_of_one_mapping_merge() {
        let large = blocks();
        let whole = large.allocate(12 << 20, 16).unwrap().unwrap();
        // SAFETY: live, freed once.
        unsafe { large.free(whole.ptr).unwrap() };
        // Two pieces of the same mapping, the second split off the first.
        let a = large.allocate(4 << 20, 16).unwrap().unwrap();
        let b = large.allocate(4 << 20, 16).unwrap().unwrap();
        assert_eq!(a.ptr, whole.ptr);
        assert_eq!(
            b.ptr.as_ptr() as usize - a.ptr.as_ptr() as usize,
            (4 << 20) + 4096,
            "b is the tail split off after a"
        );
        // SAFETY: live blocks, freed once.
        unsafe {
            large.free(b.ptr).unwrap();
            large.free(a.ptr).unwrap();
        }
        let (count, cached, live) = large.footprint();
        assert_eq!((count, live), (1, 0), "the pieces merged back");
        assert_eq!(cached, (12 << 20) + 4096);
        let again = large.allocate(12 << 20, 16).unwrap().unwrap();
        assert_eq!(again.ptr, whole.ptr);
        // SAFETY: live.
        unsafe { large.free(again.ptr).unwrap() };
    }

    /// An underrun over a live block's header: `free`, `realloc` and
    /// `usable_size` refuse it and change nothing; a write into a cached
    /// range's freed header: its reuse is refused.
    #[test]
    fn overwritten_headers_are_refused() {
        let large = blocks();
        let g = large.allocate(1 << 20, 16).unwrap().unwrap();
        let h = header(g.ptr);
        // SAFETY: the block's own header; restored below.
        let saved = unsafe { h.read() };
        for damage in [0usize, usize::MAX, 4096] {
            // SAFETY: as above.
            unsafe { (*h).len = damage };
            // SAFETY: a block handed out, its header damaged.
            unsafe {
                assert_eq!(LargeBlocks::usable_size(g.ptr), Err(Damaged(g.ptr)));
                assert_eq!(large.resize(g.ptr, 2 << 20), Err(Damaged(g.ptr)));
                assert_eq!(large.free(g.ptr), Err(Damaged(g.ptr)));
            }
        }
        // SAFETY: as above.
        unsafe { h.write(saved) };
        fill(g.ptr, 1 << 20, 7);
        // SAFETY: intact again: freed, and its range cached.
        unsafe { large.free(g.ptr).unwrap() };
        // SAFETY: the cached range is still mapped; the test writes into
        // its freed header as a write after free would.
        unsafe { (*h).start ^= 4096 };
        assert_eq!(large.allocate(1 << 20, 16).err(), Some(Damaged(g.ptr)));
    }
}
