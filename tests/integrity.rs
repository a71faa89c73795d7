//! The integrity features, each provoked the way a buggy program would:
//! an overwritten header byte (`crc`), a byte written past the end or
//! before the start (`guard`), a write after free (`scramble`), and every
//! operation reported (`trace`); plus misuse detection with no feature, on
//! the `GlobalAlloc` path. Each test asserts the exact error, then shows the
//! other live blocks still hold their data and can be freed.
//!
//! Run with the feature of interest, e.g.
//! `cargo test --features crc --test integrity`; tests of features that are
//! off are not compiled.

mod common;

#[allow(unused_imports)] // each feature uses a part
use common::{free_witnesses, witnessed_heap, Arena};
use std::alloc::Layout;
use std::ptr::NonNull;

#[allow(unused_imports)] // each feature uses a part
use region_heap::{integrity, Corruption, Heap, HeapError, GRANULE, GUARD_SIZE, HEADER_SIZE};

fn l(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// The header of the block whose data starts at `p`.
#[allow(dead_code)]
fn header_of(p: NonNull<u8>) -> *mut u8 {
    p.as_ptr().wrapping_sub(HEADER_SIZE + GUARD_SIZE)
}

#[cfg(feature = "crc")]
mod crc {
    use super::*;

    #[test]
    fn an_overwritten_header_byte_is_caught_once_then_quarantined() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        let victim = heap.allocate(l(64)).unwrap();
        let after = heap.allocate(l(64)).unwrap();
        let header = header_of(victim);
        // One byte of the owner word (region address bits), as a stray
        // store would: the links still agree, only the checksum can tell.
        // SAFETY: a header byte inside the arena.
        let byte = unsafe { header.add(9) };
        unsafe { byte.write(byte.read() ^ 0x10) };
        assert_eq!(
            heap.check(),
            Err(HeapError::Corrupted {
                addr: header.addr(),
                what: Corruption::Checksum,
            })
        );
        let misuses = heap.stats().misuses;
        assert_eq!(
            unsafe { heap.free(victim) }.map(|_| ()),
            Err(HeapError::Corrupted {
                addr: header.addr(),
                what: Corruption::Checksum,
            })
        );
        // Named once; from then on the block is out of use, whatever asks.
        let quarantined: Result<(), HeapError> = Err(HeapError::Corrupted {
            addr: header.addr(),
            what: Corruption::Quarantined,
        });
        assert_eq!(
            unsafe { heap.realloc(victim, l(64), 128) },
            quarantined.map(|_| victim)
        );
        assert_eq!(unsafe { heap.usable_size(victim) }, quarantined.map(|_| 0));
        assert_eq!(
            unsafe { heap.resize_in_place(victim, 16) },
            quarantined.map(|_| false)
        );
        assert_eq!(
            heap.stats().misuses,
            misuses + 3,
            "free, realloc, resize (usable_size reads only)"
        );
        heap.check().unwrap();
        assert_eq!(heap.stats().quarantined_blocks, 1);
        // The heap goes on: its neighbour frees, new blocks never overlap it.
        unsafe { heap.free(after) }.unwrap();
        for _ in 0..8 {
            let p = heap.allocate(l(64)).unwrap();
            assert_ne!(p, victim);
        }
        free_witnesses(&mut heap, w);
        heap.check().unwrap();
    }

    #[test]
    fn a_damaged_free_header_is_caught_before_reuse_or_merge() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        heap.set_quick_depth(0).unwrap(); // frees go to the free lists
        let a = heap.allocate(l(96)).unwrap();
        let b = heap.allocate(l(96)).unwrap();
        let _c = heap.allocate(l(96)).unwrap();
        unsafe { heap.free(b) }.unwrap(); // b: a free block between a and c
        let header = header_of(b);
        let expected = HeapError::Corrupted {
            addr: header.addr(),
            what: Corruption::Checksum,
        };
        // SAFETY: the free block's header.
        unsafe { header.write(header.read() ^ 1) }; // a bit of its next link
        assert_eq!(heap.check(), Err(expected));
        // Freeing `a` would merge with the damaged block: refused, with `a`
        // still live, and the damaged block quarantined.
        assert_eq!(unsafe { heap.free(a) }, Err(expected));
        heap.check().unwrap();
        assert_eq!(heap.stats().quarantined_blocks, 1);
        // Reserving inside it is refused: it is no free memory any more.
        assert!(matches!(
            heap.reserve(b.as_ptr(), 16),
            Err(HeapError::RangeUnavailable { .. })
        ));
        // `a` frees now, without merging into the quarantined block.
        unsafe { heap.free(a) }.unwrap();
        free_witnesses(&mut heap, w);
        heap.check().unwrap();
        assert_eq!(heap.stats().used_blocks, 1, "only `_c` is live");
    }
}

#[cfg(feature = "guard")]
mod guard {
    use super::*;
    use integrity::{GUARD_FRONT, GUARD_TAIL};

    #[test]
    fn one_byte_past_the_end_is_caught_in_the_rounding_slack() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        // 100 bytes: the block rounds up, the slack after byte 100 is guarded.
        let p = heap.allocate(l(100)).unwrap();
        assert_eq!(unsafe { heap.usable_size(p) }, Ok(100));
        let at = p.as_ptr().wrapping_add(100);
        let expected = Err(HeapError::Corrupted {
            addr: header_of(p).addr(),
            what: Corruption::Guard { at: at.addr() },
        });
        unsafe { p.as_ptr().write_bytes(0x11, 100) }; // all the data: fine
        heap.check().unwrap();
        unsafe { at.write(0) }; // one byte too many
        assert_eq!(heap.check(), expected);
        assert_eq!(unsafe { heap.free(p) }.map(|_| ()), expected);
        assert_eq!(unsafe { heap.realloc(p, l(100), 50) }, expected.map(|_| p));
        assert_eq!(unsafe { heap.usable_size(p) }, expected.map(|_| 0));
        free_witnesses(&mut heap, w);
        unsafe { at.write(GUARD_TAIL) };
        unsafe { heap.free(p) }.unwrap();
        heap.check().unwrap();
    }

    #[test]
    fn one_byte_before_the_start_is_caught() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        let p = heap.allocate(l(32)).unwrap();
        let at = p.as_ptr().wrapping_sub(1);
        unsafe { at.write(0x42) };
        let expected = Err(HeapError::Corrupted {
            addr: header_of(p).addr(),
            what: Corruption::Guard { at: at.addr() },
        });
        assert_eq!(unsafe { heap.free(p) }.map(|_| ()), expected);
        assert_eq!(heap.check(), expected);
        free_witnesses(&mut heap, w);
        unsafe { at.write(GUARD_FRONT) };
        unsafe { heap.free(p) }.unwrap();
        heap.check().unwrap();
    }

    #[test]
    fn resizing_moves_the_tail_guard() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        let p = heap.allocate(l(100)).unwrap();
        unsafe {
            p.as_ptr().write_bytes(7, 100);
            let q = heap.realloc(p, l(100), 300).unwrap();
            assert_eq!(q, p, "grew in place into the free tail");
            assert_eq!(heap.usable_size(q), Ok(300));
            q.as_ptr().add(299).write(7); // the last byte is the caller's now
            heap.check().unwrap();
            q.as_ptr().add(300).write(7); // one past: caught
            assert!(matches!(
                heap.check(),
                Err(HeapError::Corrupted {
                    what: Corruption::Guard { .. },
                    ..
                })
            ));
            q.as_ptr().add(300).write(GUARD_TAIL);
            assert!((0..100).all(|i| *q.as_ptr().add(i) == 7));
            heap.free(q).unwrap();
        }
        free_witnesses(&mut heap, w);
        heap.check().unwrap();
    }
}

#[cfg(feature = "scramble")]
mod scramble {
    use super::*;
    use integrity::{ALLOC_PATTERN, FREE_PATTERN};

    /// Fills the heap so that a block freed afterwards is the only free
    /// memory: its reuse is then certain.
    fn fill_up(heap: &mut Heap) -> Vec<NonNull<u8>> {
        let mut fillers = Vec::new();
        for size in [4096, 256, 16, 0] {
            while let Ok(p) = heap.allocate(l(size)) {
                fillers.push(p);
            }
        }
        fillers
    }

    #[test]
    fn a_write_after_free_is_caught_on_reuse_and_by_check() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        let victim = heap.allocate(l(200)).unwrap();
        let fillers = fill_up(&mut heap);
        unsafe { heap.free(victim) }.unwrap();
        // The stale pointer is written through after the free.
        let at = victim.as_ptr().wrapping_add(32);
        unsafe { at.write(0x00) };
        let expected = Err(HeapError::Corrupted {
            addr: header_of(victim).addr(),
            what: Corruption::Poison { at: at.addr() },
        });
        assert_eq!(heap.check(), expected);
        assert_eq!(heap.allocate(l(200)), expected.map(|_| victim));
        free_witnesses(&mut heap, w);
        for p in fillers {
            unsafe { heap.free(p) }.unwrap();
        }
        unsafe { at.write(FREE_PATTERN) };
        heap.check().unwrap();
    }

    #[test]
    fn a_batch_checks_every_block_it_carves_as_single_calls_do() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        heap.set_quick_depth(0).unwrap();
        let victim = heap.allocate(l(1000)).unwrap();
        let fillers = fill_up(&mut heap);
        unsafe { heap.free(victim) }.unwrap();
        // A write after free where the second 64-byte block of a run will
        // have its data: the proof of the freed block covers its ends only.
        let stride = (64 + region_heap::BLOCK_OVERHEAD)
            .next_multiple_of(GRANULE)
            .max(region_heap::MIN_BLOCK);
        let second = header_of(victim).wrapping_add(stride);
        let at = second.wrapping_add(HEADER_SIZE + 16);
        unsafe { at.write(0x00) };
        let mut out = [NonNull::dangling(); 4];
        let got = heap.allocate_batch(l(64), &mut out);
        // The first block is carved and handed out; the second one's
        // pattern is checked before it is taken, and the batch ends there.
        assert_eq!(got, Ok(1));
        assert_eq!(out[0], victim);
        assert_eq!(heap.stats().misuses, 1);
        heap.check().unwrap();
        free_witnesses(&mut heap, w);
        for p in fillers.into_iter().chain([out[0]]) {
            unsafe { heap.free(p) }.unwrap();
        }
        heap.check().unwrap();
    }

    #[test]
    fn the_check_depth_is_a_setting() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        let big = heap.allocate(l(4000)).unwrap();
        let _blocker = heap.allocate(l(16)).unwrap();
        unsafe { heap.free(big) }.unwrap();
        // A write in the middle of the freed block, beyond the default depth.
        let at = big.as_ptr().wrapping_add(2000);
        unsafe { at.write(0x00) };
        heap.check().unwrap();
        heap.set_scramble_check_depth(usize::MAX);
        assert_eq!(
            heap.check(),
            Err(HeapError::Corrupted {
                addr: header_of(big).addr(),
                what: Corruption::Poison { at: at.addr() },
            })
        );
        unsafe { at.write(FREE_PATTERN) };
        heap.check().unwrap();
        free_witnesses(&mut heap, w);
    }

    #[test]
    fn realloc_in_place_keeps_the_data() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        heap.set_scramble_check_depth(usize::MAX);
        let p = heap.allocate(l(100)).unwrap();
        unsafe {
            assert!((0..100).all(|i| *p.as_ptr().add(i) == ALLOC_PATTERN));
            p.as_ptr().write_bytes(0x33, 100);
            let q = heap.realloc(p, l(100), 1000).unwrap();
            assert_eq!(q, p, "grown in place");
            assert!((0..100).all(|i| *q.as_ptr().add(i) == 0x33), "data kept");
            assert!(
                (100..1000).all(|i| *q.as_ptr().add(i) == ALLOC_PATTERN),
                "new bytes scrambled"
            );
            q.as_ptr().write_bytes(0x44, 1000);
            let r = heap.realloc(q, l(1000), 40).unwrap();
            assert_eq!(r, p, "shrunk in place");
            assert!((0..40).all(|i| *r.as_ptr().add(i) == 0x44), "data kept");
            assert!(heap.resize_in_place(r, 500).unwrap());
            assert!((0..40).all(|i| *r.as_ptr().add(i) == 0x44), "data kept");
            heap.check().unwrap();
            heap.free(r).unwrap();
        }
        free_witnesses(&mut heap, w);
        heap.check().unwrap();
    }
}

#[cfg(feature = "trace")]
mod trace {
    use super::*;
    use region_heap::TraceEvent;
    use std::cell::RefCell;

    thread_local! {
        static EVENTS: RefCell<Vec<TraceEvent>> = const { RefCell::new(Vec::new()) };
    }

    fn record(event: &TraceEvent) {
        EVENTS.with(|e| e.borrow_mut().push(*event));
    }

    fn take() -> Vec<TraceEvent> {
        EVENTS.with(|e| std::mem::take(&mut *e.borrow_mut()))
    }

    #[test]
    fn every_operation_is_reported() {
        let arena = Arena::new(128 << 10);
        let mut heap = Heap::new();
        heap.set_trace_sink(Some(record));
        heap.set_quick_depth(0).unwrap(); // every free merges, and says so
        let id = unsafe { heap.add_region_with_priority(arena.ptr, 64 << 10, 0) }.unwrap();
        let events = take();
        assert!(matches!(
            events[..],
            [TraceEvent::RegionAdded { region, start, size: 65536, priority: 0 }]
                if region == id.addr() && start == arena.ptr.addr()
        ));
        let a = heap.allocate(l(100)).unwrap();
        let events = take();
        assert!(
            matches!(events[..], [TraceEvent::Split { .. }, TraceEvent::Allocated { addr, size: 100, align: 8, .. }] if addr == a.as_ptr().addr())
        );
        let b = heap.allocate(l(100)).unwrap();
        take();
        let moved = unsafe { heap.realloc(a, l(100), 50) }.unwrap();
        assert_eq!(moved, a);
        assert!(take().iter().any(|e| matches!(
            e,
            TraceEvent::Reallocated { old, new, size: 50, in_place: true } if *old == *new
        )));
        unsafe { heap.free(a) }.unwrap();
        let events = take();
        assert!(events
            .iter()
            .any(|e| matches!(e, TraceEvent::Freed { addr, .. } if *addr == a.as_ptr().addr())));
        unsafe { heap.free(b) }.unwrap();
        let events = take();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, TraceEvent::Merged { .. })),
            "{events:?}"
        );
        assert!(matches!(events.last(), Some(TraceEvent::Freed { .. })));
        let error = unsafe { heap.free(b) }.unwrap_err();
        assert_eq!(take(), vec![TraceEvent::Misuse { error }]);
        unsafe { heap.extend(id, arena.ptr.wrapping_add(64 << 10), 64 << 10) }.unwrap();
        assert!(
            matches!(take()[..], [.., TraceEvent::Extended { region, size: 65536, .. }] if region == id.addr())
        );
        heap.set_trace_sink(None);
        let c = heap.allocate(l(10)).unwrap();
        unsafe { heap.free(c) }.unwrap();
        assert!(take().is_empty(), "no sink, no events");
        heap.check().unwrap();
    }
}

/// Misuse detection needs no feature: on the `GlobalAlloc` path it reaches
/// the report handler with the exact error and address, and the heap keeps
/// every other block.
/// Quick lists (no feature needed): a cached block is vetted before reuse.
mod quick {
    use super::*;

    /// Two cached blocks of one size, `b` under `a` on their quick list.
    fn two_cached(heap: &mut Heap) -> (NonNull<u8>, NonNull<u8>) {
        let a = heap.allocate(l(96)).unwrap();
        let b = heap.allocate(l(96)).unwrap();
        let _fence = heap.allocate(l(96)).unwrap();
        unsafe { heap.free(b) }.unwrap();
        unsafe { heap.free(a) }.unwrap();
        assert_eq!(heap.stats().cached_blocks, 2);
        (a, b)
    }

    /// Where a cached block keeps its quick-list link: right after its
    /// header, where a free block keeps its free-list link.
    /// Read and written as a pointer, so that a restored link keeps its
    /// provenance (Miri checks it).
    fn link_of(p: NonNull<u8>) -> *mut *mut u8 {
        header_of(p).wrapping_add(HEADER_SIZE).cast()
    }

    #[test]
    fn a_broken_quick_link_is_caught_before_reuse() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        let (a, b) = two_cached(&mut heap);
        let link = link_of(a);
        // SAFETY: the link of a cached block.
        assert_eq!(
            unsafe { link.read() }.addr(),
            header_of(b).addr(),
            "a's link names b"
        );
        // A write after free: an address outside the heap.
        unsafe { link.write(std::ptr::without_provenance_mut(0x1000)) };
        let expected = HeapError::Corrupted {
            addr: header_of(a).addr(),
            what: Corruption::QuickList,
        };
        assert_eq!(heap.check(), Err(expected));
        assert_eq!(heap.allocate(l(96)), Err(expected));
        assert_eq!(heap.stats().misuses, 1);
        // Named once: `a` is quarantined, `b` went back to the free lists,
        // and the next request of that size is served.
        heap.check().unwrap();
        assert_eq!(heap.stats().quarantined_blocks, 1);
        let p = heap.allocate(l(96)).unwrap();
        assert_ne!(p, a);
        assert_eq!(heap.stats().misuses, 1);
        free_witnesses(&mut heap, w);
        heap.check().unwrap();
    }

    #[test]
    fn a_cached_header_that_lies_about_its_state_is_caught() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        let (a, _) = two_cached(&mut heap);
        let owner = header_of(a).wrapping_add(8).cast::<usize>();
        unsafe { owner.write(owner.read() ^ 0b101) }; // cached -> used
        let what = if cfg!(feature = "crc") {
            Corruption::Checksum
        } else {
            Corruption::QuickList
        };
        let expected = HeapError::Corrupted {
            addr: header_of(a).addr(),
            what,
        };
        assert_eq!(heap.allocate(l(96)), Err(expected));
        // Quarantined: a free of it (a double free, since it was cached)
        // is refused, and the heap is whole.
        heap.check().unwrap();
        assert_eq!(
            unsafe { heap.free(a) },
            Err(HeapError::Corrupted {
                addr: header_of(a).addr(),
                what: Corruption::Quarantined
            })
        );
        assert_ne!(heap.allocate(l(96)).unwrap(), a);
        free_witnesses(&mut heap, w);
        heap.check().unwrap();
    }

    #[test]
    fn a_double_free_of_a_cached_block_is_refused() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        let (a, _) = two_cached(&mut heap);
        assert_eq!(
            unsafe { heap.free(a) },
            Err(HeapError::DoubleFree {
                addr: a.as_ptr().addr()
            })
        );
        free_witnesses(&mut heap, w);
        heap.check().unwrap();
    }

    #[cfg(feature = "scramble")]
    #[test]
    fn a_write_after_free_into_a_cached_block_is_caught_on_reuse() {
        let arena = Arena::new(64 << 10);
        let (mut heap, w) = witnessed_heap(&arena);
        let (a, _) = two_cached(&mut heap);
        let at = a.as_ptr().wrapping_add(40);
        unsafe { at.write(0) };
        let expected = HeapError::Corrupted {
            addr: header_of(a).addr(),
            what: Corruption::Poison { at: at.addr() },
        };
        assert_eq!(heap.check(), Err(expected));
        assert_eq!(heap.allocate(l(96)), Err(expected));
        // Quarantined with the write in it; the next request is served
        // elsewhere.
        heap.check().unwrap();
        assert_ne!(heap.allocate(l(96)).unwrap(), a);
        free_witnesses(&mut heap, w);
        heap.check().unwrap();
    }
}

mod misuse {
    use super::*;
    use region_heap::LockedHeap;
    use std::alloc::GlobalAlloc;
    use std::sync::Mutex;

    static REPORTED: Mutex<Vec<HeapError>> = Mutex::new(Vec::new());

    fn record(error: &HeapError) {
        REPORTED.lock().unwrap().push(*error);
    }

    #[test]
    fn double_free_interior_and_foreign_pointers_reach_the_handler() {
        let arena = Arena::new(64 << 10);
        let other = Arena::new(64 << 10);
        let heap: LockedHeap = LockedHeap::empty();
        let foreign_heap: LockedHeap = LockedHeap::empty();
        unsafe {
            heap.init(arena.ptr, arena.len());
            foreign_heap.init(other.ptr, other.len());
        }
        heap.set_report_handler(record);
        let layout = l(128);
        unsafe {
            let keep = heap.alloc(layout);
            keep.write_bytes(0x77, 128);
            let a = heap.alloc(layout);
            let b = heap.alloc(layout);
            heap.dealloc(a, layout);
            heap.dealloc(a, layout); // twice
            heap.dealloc(b, layout); // merges with a's block
            heap.dealloc(b, layout); // twice, after the merge
            heap.dealloc(keep.add(16), layout); // interior
            let foreign = foreign_heap.alloc(layout);
            heap.dealloc(foreign, layout); // another heap's block
            assert_eq!(
                *REPORTED.lock().unwrap(),
                vec![
                    HeapError::DoubleFree { addr: a.addr() },
                    HeapError::DoubleFree { addr: b.addr() },
                    HeapError::NotBlockStart {
                        addr: keep.addr() + 16
                    },
                    HeapError::NotFromHeap {
                        addr: foreign.addr()
                    },
                ]
            );
            assert!((0..128).all(|i| *keep.add(i) == 0x77));
            heap.dealloc(keep, layout);
            foreign_heap.dealloc(foreign, layout);
        }
        heap.lock().check().unwrap();
        assert_eq!(heap.lock().stats().used_blocks, 0);
        assert_eq!(heap.lock().stats().misuses, 4);
    }
}
