//! `get_stat` counters: calls of each C function, recycled blocks, and the
//! system calls of the memory sources.
//!
//! Calls are counted per thread (see `thread`), each counter written only
//! by its thread, so the fast paths never share a cache line; a snapshot
//! sums the live threads' counters with those of the threads that have
//! exited (folded into [`Counts`] held globally).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::text::Text;

/// One counter of calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `malloc` and the aligned allocations (`posix_memalign`,
    /// `aligned_alloc`, `memalign`, `valloc`, `pvalloc`).
    Malloc,
    /// `free` of a non-null pointer (and `realloc(p, 0)`).
    Free,
    /// `realloc` and `reallocarray`.
    Realloc,
    /// `calloc`.
    Calloc,
    /// Allocations served by a block a thread cache held.
    Recycled,
}

/// Counters of calls; see [`Counter`].
#[derive(Default)]
pub struct Counts {
    values: [AtomicU64; 5],
}

impl Counts {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            values: [const { AtomicU64::new(0) }; 5],
        }
    }

    /// Adds one, for a counter only one thread writes (no atomic
    /// read-modify-write: a plain load and store).
    #[inline]
    pub fn bump_owned(&self, counter: Counter) {
        let c = &self.values[counter as usize];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Adds `n`, for a counter many threads write.
    #[inline]
    pub fn add_shared(&self, counter: Counter, n: u64) {
        self.values[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// One counter's value.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize].load(Ordering::Relaxed)
    }

    /// Adds every counter of `other` to `self` (shared).
    pub fn absorb(&self, other: &Counts) {
        for (mine, theirs) in self.values.iter().zip(&other.values) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Sets every counter to zero.
    pub fn clear(&self) {
        for c in &self.values {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The statistics `get_stat()` returns (the C layout of
/// `struct regionheap_stat` in `shim/include/regionheap.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// `malloc` calls, aligned allocations included.
    pub malloc: u64,
    /// `free` calls with a non-null pointer.
    pub free: u64,
    /// `realloc` and `reallocarray` calls.
    pub realloc: u64,
    /// `calloc` calls.
    pub calloc: u64,
    /// Allocations served from a cache (thread cache or large-mapping
    /// cache) instead of the heaps or a fresh mapping.
    pub recycled: u64,
    /// `mmap` system calls.
    pub mmap: u64,
    /// `munmap` system calls.
    pub munmap: u64,
    /// `brk` system calls (queries included).
    pub brk: u64,
    /// `mremap` system calls.
    pub mremap: u64,
}

impl Stat {
    /// The statistics, one line per counter (the report at exit).
    pub fn format(&self) -> Text<512> {
        let rows: [(&[u8], u64); 9] = [
            (b"malloc", self.malloc),
            (b"free", self.free),
            (b"realloc", self.realloc),
            (b"calloc", self.calloc),
            (b"recycled", self.recycled),
            (b"mmap", self.mmap),
            (b"munmap", self.munmap),
            (b"brk", self.brk),
            (b"mremap", self.mremap),
        ];
        let mut text = Text::new();
        text.put(b"region-heap stats:\n");
        for (name, value) in rows {
            text.put(b"  ").put(name).put(b" ").dec(value).put(b"\n");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_and_absorb() {
        let a = Counts::new();
        let b = Counts::new();
        a.bump_owned(Counter::Malloc);
        a.bump_owned(Counter::Malloc);
        b.add_shared(Counter::Free, 5);
        a.absorb(&b);
        assert_eq!((a.get(Counter::Malloc), a.get(Counter::Free)), (2, 5));
        a.clear();
        assert_eq!(a.get(Counter::Malloc), 0);
    }

    #[test]
    fn the_report_lists_every_counter() {
        let stat = Stat {
            malloc: 1234567,
            free: 0,
            brk: 3,
            ..Stat::default()
        };
        let report = stat.format();
        let text = core::str::from_utf8(report.as_bytes()).unwrap();
        assert!(text.starts_with("region-heap stats:\n  malloc 1234567\n  free 0\n"));
        assert!(text.contains("\n  brk 3\n"));
        assert_eq!(text.lines().count(), 10);
    }
}
