//! The policy over an arena: headers, list links, statuses and data, which
//! the traces do not show.

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::sync::Mutex;

use super::*;
use crate::meta::BlockMeta;

/// `Osmem`s share the one list head: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const PAGE: usize = 4096;

/// Memory for a test: a break inside an owned buffer, mappings from the
/// global allocator, every unmap checked against its map.
struct Arena {
    base: *mut u8,
    cap: usize,
    end: Cell<usize>,
    maps: RefCell<Vec<(usize, usize)>>,
}

impl Arena {
    fn new(cap: usize) -> Arena {
        let layout = Layout::from_size_align(cap, PAGE).unwrap();
        // SAFETY: a non-zero size.
        let base = unsafe { std::alloc::alloc(layout) };
        assert!(!base.is_null());
        Arena {
            base,
            cap,
            end: Cell::new(0),
            maps: RefCell::new(Vec::new()),
        }
    }

    fn start(&self) -> usize {
        self.base as usize
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for &(addr, len) in self.maps.borrow().iter() {
            // SAFETY: a mapping the test left: allocated by `map` with
            // this layout.
            unsafe {
                std::alloc::dealloc(addr as *mut u8, Layout::from_size_align(len, PAGE).unwrap())
            }
        }
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.base, Layout::from_size_align(self.cap, PAGE).unwrap()) }
    }
}

// SAFETY: the break hands out each byte of the buffer once, in order;
// mappings are fresh allocations.
unsafe impl Memory for Arena {
    fn grow(&self, bytes: usize) -> Option<NonNull<u8>> {
        let old = self.end.get();
        if old + bytes > self.cap {
            return None;
        }
        self.end.set(old + bytes);
        // SAFETY: `old` is inside the buffer (or its end).
        NonNull::new(unsafe { self.base.add(old) })
    }

    fn map(&self, len: usize) -> Option<NonNull<u8>> {
        // SAFETY: a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(Layout::from_size_align(len, PAGE).unwrap()) };
        self.maps.borrow_mut().push((p as usize, len));
        NonNull::new(p)
    }

    unsafe fn unmap(&self, addr: NonNull<u8>, len: usize) {
        let mut maps = self.maps.borrow_mut();
        let at = maps
            .iter()
            .position(|&m| m == (addr.as_ptr() as usize, len))
            .expect("unmap of exactly a mapping");
        maps.remove(at);
        // SAFETY: allocated by `map` with this layout, unused now.
        unsafe { std::alloc::dealloc(addr.as_ptr(), Layout::from_size_align(len, PAGE).unwrap()) }
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

/// The seed tests' `MOCK_PREALLOC`: the largest request that takes the
/// whole preallocation (8 bytes stay, too few to split off).
const MOCK_PREALLOC: usize = PREALLOC_SIZE - META_SIZE - 8;

fn with_osmem(test: impl FnOnce(&mut Osmem<&Arena>, &Arena)) {
    with_osmem_in(1 << 20, test)
}

fn with_osmem_in(cap: usize, test: impl FnOnce(&mut Osmem<&Arena>, &Arena)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let arena = Arena::new(cap);
    // SAFETY: `SERIAL` makes this the only `Osmem`; it is dropped (and the
    // list head reset) before the arena.
    let mut osmem = unsafe { Osmem::new(&arena) };
    test(&mut osmem, &arena);
}

// SAFETY: forwards to the arena.
unsafe impl Memory for &Arena {
    fn grow(&self, bytes: usize) -> Option<NonNull<u8>> {
        (**self).grow(bytes)
    }
    fn map(&self, len: usize) -> Option<NonNull<u8>> {
        (**self).map(len)
    }
    unsafe fn unmap(&self, addr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded.
        unsafe { (**self).unmap(addr, len) }
    }
    fn page_size(&self) -> usize {
        PAGE
    }
}

fn meta(payload: *mut u8) -> &'static BlockMeta {
    // SAFETY: tests pass payloads of the allocator under test.
    unsafe { &*(payload.sub(META_SIZE) as *const BlockMeta) }
}

fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: `p` holds at least `len` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) }
    }
}

fn holds(p: *const u8, len: usize, seed: u8) -> bool {
    // SAFETY: `p` holds at least `len` bytes.
    (0..len).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
}

#[test]
fn first_allocation_splits_the_preallocation_with_seed_headers() {
    with_osmem(|osmem, arena| {
        let p = osmem.malloc(100);
        assert_eq!(p as usize, arena.start() + META_SIZE);
        assert_eq!(arena.end.get(), PREALLOC_SIZE);
        let head = meta(p);
        assert_eq!((head.size, head.status), (104, STATUS_ALLOC));
        let rest = head.next;
        assert_eq!(rest as usize, arena.start() + META_SIZE + 104);
        assert!(head.prev.is_null());
        // SAFETY: `rest` is the remainder's header.
        let rest = unsafe { &*rest };
        assert_eq!(rest.size, PREALLOC_SIZE - 2 * META_SIZE - 104);
        assert_eq!(rest.status, STATUS_FREE);
        assert_eq!(rest.prev as usize, arena.start());
        assert!(rest.next.is_null(), "the seed's list ends with NULL");
        let blocks: Vec<usize> = osmem.blocks().iter().map(|b| b.addr()).collect();
        assert_eq!(blocks, [arena.start(), arena.start() + META_SIZE + 104]);
        for b in osmem.blocks().iter() {
            // SAFETY: `b` is on the list.
            assert!(unsafe { osmem.blocks().is_consistent(b) });
        }
    });
}

#[test]
fn large_blocks_are_mapped_with_their_header_and_unmapped_on_free() {
    with_osmem(|osmem, arena| {
        let p = osmem.malloc(MMAP_THRESHOLD - META_SIZE);
        let head = meta(p);
        assert_eq!(
            (head.size, head.status),
            (MMAP_THRESHOLD - META_SIZE, STATUS_MAPPED)
        );
        assert!(head.prev.is_null() && head.next.is_null());
        assert_eq!(
            *arena.maps.borrow(),
            [(p as usize - META_SIZE, MMAP_THRESHOLD)]
        );
        assert_eq!(arena.end.get(), 0, "no heap use");
        // One byte less still rounds up to a block that reaches it.
        let r = osmem.malloc(MMAP_THRESHOLD - META_SIZE - 1);
        assert_eq!(meta(r).status, STATUS_MAPPED);
        // The largest heap request: 8 bytes fewer.
        let q = osmem.malloc(MMAP_THRESHOLD - META_SIZE - 8);
        assert_eq!(meta(q).status, STATUS_ALLOC);
        // SAFETY: payloads of this allocator.
        unsafe {
            osmem.free(p);
            osmem.free(r);
            osmem.free(q);
        }
        assert!(arena.maps.borrow().is_empty());
        assert_eq!(meta(q).status, STATUS_FREE);
    });
}

#[test]
fn calloc_maps_from_a_page_and_zeroes_reused_memory() {
    with_osmem(|osmem, arena| {
        let dirty = osmem.malloc(512);
        fill(dirty, 512, 0xa5);
        // SAFETY: a payload of this allocator.
        unsafe { osmem.free(dirty) };
        let p = osmem.calloc(16, 32);
        assert_eq!(p, dirty, "best fit reuses the freed block");
        // SAFETY: 512 bytes were asked for.
        assert!(unsafe { std::slice::from_raw_parts(p, 512) }
            .iter()
            .all(|&b| b == 0));
        let page = osmem.calloc(1, PAGE - META_SIZE);
        assert_eq!(meta(page).status, STATUS_MAPPED);
        let below = osmem.calloc(PAGE - META_SIZE - 8, 1);
        assert_eq!(meta(below).status, STATUS_ALLOC);
        assert_eq!(arena.maps.borrow().len(), 1);
        assert!(osmem.calloc(0, 8).is_null() && osmem.calloc(8, 0).is_null());
        assert!(osmem.calloc(usize::MAX, 2).is_null());
        // SAFETY: a payload of this allocator.
        unsafe { osmem.free(page) };
        assert!(arena.maps.borrow().is_empty());
    });
}

#[test]
fn free_blocks_coalesce_before_a_best_fit_search() {
    with_osmem(|osmem, _| {
        let a = osmem.malloc(64);
        let b = osmem.malloc(64);
        let c = osmem.malloc(64);
        let d = osmem.malloc(40);
        let e = osmem.malloc(64);
        fill(a, 64, 1);
        fill(e, 64, 5);
        // SAFETY: payloads of this allocator.
        unsafe {
            osmem.free(b);
            osmem.free(c);
            osmem.free(d);
        }
        // b and c merge into 64 + 32 + 64 = 160 bytes, then d (40) too:
        // 232 bytes, split for 150 (152) with 48 left.
        let f = osmem.malloc(150);
        assert_eq!(f, b);
        assert_eq!(meta(f).size, 152);
        let rest = meta(f).next;
        // SAFETY: the remainder's header.
        assert_eq!(unsafe { ((*rest).size, (*rest).status) }, (48, STATUS_FREE));
        // Best fit: the 48-byte rest, not the large block at the end.
        let g = osmem.malloc(40);
        assert_eq!(g as usize, rest as usize + META_SIZE);
        assert!(
            holds(a, 64, 1) && holds(e, 64, 5),
            "live neighbours survive"
        );
    });
}

#[test]
fn realloc_grows_in_place_moves_and_refuses_free_blocks() {
    with_osmem(|osmem, arena| {
        let a = osmem.malloc(100);
        let b = osmem.malloc(100);
        fill(a, 100, 7);
        fill(b, 100, 9);
        // SAFETY: payloads of this allocator throughout.
        unsafe {
            // `a` cannot grow over the live `b`: it moves, data kept.
            let moved = osmem.realloc(a, 300);
            assert_ne!(moved, a);
            assert!(holds(moved, 100, 7) && holds(b, 100, 9));
            assert_eq!(meta(a).status, STATUS_FREE);
            assert!(osmem.realloc(a, 50).is_null(), "a free block gives NULL");
            assert_eq!(meta(a).status, STATUS_FREE);
            // Shrinking in place splits the tail off.
            assert_eq!(osmem.realloc(moved, 16), moved);
            assert_eq!(meta(moved).size, 16);
            assert!(holds(moved, 16, 7));
            // Growing back absorbs the split-off tail in place.
            assert_eq!(osmem.realloc(moved, 200), moved);
            assert!(holds(moved, 16, 7));
            assert!(osmem.realloc(moved, 0).is_null());
            assert_eq!(meta(moved).status, STATUS_FREE);
            let fresh = osmem.realloc(core::ptr::null_mut(), 24);
            assert_eq!(meta(fresh).status, STATUS_ALLOC);
        }
        assert!(arena.end.get() >= PREALLOC_SIZE);
    });
}

#[test]
fn the_last_block_grows_with_the_break() {
    with_osmem_in(PREALLOC_SIZE + 4096, |osmem, arena| {
        let whole = osmem.malloc(MOCK_PREALLOC);
        assert_eq!(meta(whole).size, PREALLOC_SIZE - META_SIZE, "not split");
        let p = osmem.malloc(10);
        assert_eq!(p as usize, arena.start() + PREALLOC_SIZE + META_SIZE);
        assert_eq!(arena.end.get(), PREALLOC_SIZE + META_SIZE + 16);
        fill(p, 10, 3);
        // SAFETY: payloads of this allocator.
        unsafe {
            assert_eq!(osmem.realloc(p, 1000), p);
            assert_eq!(arena.end.get(), PREALLOC_SIZE + META_SIZE + 1000);
            assert!(holds(p, 10, 3));
            osmem.free(p);
        }
        // The free last block is grown rather than a new one appended.
        let q = osmem.malloc(2000);
        assert_eq!(q, p);
        assert_eq!(arena.end.get(), PREALLOC_SIZE + META_SIZE + 2000);
        assert_eq!(meta(whole).status, STATUS_ALLOC);
        // When the break cannot move, the request fails and nothing changes.
        let blocks = osmem.blocks().iter().count();
        assert!(osmem.malloc(5000).is_null());
        assert_eq!(arena.end.get(), PREALLOC_SIZE + META_SIZE + 2000);
        assert_eq!(osmem.blocks().iter().count(), blocks);
    });
}
