//! MutekH's known flaws (shared/design/mutekh-model.md, "Known flaws"), one
//! test per flaw, named after it. Each test fails on the MutekH behaviour:
//! it measures or provokes exactly what MutekH gets wrong.

mod common;

use common::Arena;
use std::alloc::Layout;
use std::ptr::NonNull;

use region_heap::{
    BestFit, Corruption, FitPolicy, GoodFit, Heap, HeapError, LockedHeap, BLOCK_OVERHEAD, GRANULE,
    GUARD_SIZE, HEADER_SIZE, MAX_CHUNK_SIZE,
};

fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn header_of(p: NonNull<u8>) -> *mut u8 {
    p.as_ptr().wrapping_sub(HEADER_SIZE + GUARD_SIZE)
}

/// A poisoned free-list link: its address and the value it had.
type PoisonedLink = (*mut [u8; 16], [u8; 16]);

/// A heap over `arena` with `small_free` small free blocks (no quick
/// lists: all on their free lists) in front of the large free rest, their
/// free-list links poisoned (all ones), as a write after free would.
/// Returns the heap, each link's address and its saved value.
fn heap_with_poisoned_small_blocks<P: FitPolicy>(
    arena: &Arena,
    small_free: usize,
) -> (Heap<P>, Vec<PoisonedLink>) {
    let mut heap: Heap<P> = Heap::with_policy();
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    heap.set_quick_depth(0).unwrap();
    let pairs: Vec<_> = (0..small_free)
        .map(|_| {
            let hole = heap.allocate(l(16, 8)).unwrap();
            let spacer = heap.allocate(l(16, 8)).unwrap();
            (hole, spacer)
        })
        .collect();
    for &(hole, _) in &pairs {
        unsafe { heap.free(hole) }.unwrap();
    }
    assert_eq!(heap.stats().free_blocks, small_free + 1);
    let links = pairs
        .iter()
        .map(|&(hole, _)| {
            // The free-list link (two words) right after the free header.
            let link: *mut [u8; 16] = header_of(hole).wrapping_add(HEADER_SIZE).cast();
            // SAFETY: the link lies in a free block of the arena (a write
            // after free, as a buggy program makes); its value is saved.
            let saved = unsafe { link.read() };
            unsafe { link.write([0xFF; 16]) };
            (link, saved)
        })
        .collect();
    (heap, links)
}

/// Serves `ops` allocate+free pairs of a block that only the heap's tail
/// can hold, past `small_free` poisoned small free blocks: a search that
/// read any of them would meet the poison and report `Corrupted` (the
/// test below shows it does), so every pair succeeding with no misuse
/// proves the search never looked at them, however many there are. The
/// links are restored before the final `check()`.
fn large_requests_past_poisoned_blocks<P: FitPolicy>(small_free: usize, ops: usize) {
    let arena = Arena::new(4 << 20);
    let (mut heap, links) = heap_with_poisoned_small_blocks::<P>(&arena, small_free);
    let big = l(64 << 10, 8);
    for _ in 0..ops {
        let p = heap.allocate(big).unwrap();
        unsafe { heap.free(p) }.unwrap();
    }
    assert_eq!(
        heap.stats().misuses,
        0,
        "{small_free} small blocks in front"
    );
    for (link, value) in links {
        // SAFETY: as when poisoned.
        unsafe { link.write(value) };
    }
    heap.check().unwrap();
}

/// The tripwire works: a search that reads a poisoned block reports it.
#[test]
fn a_search_that_reads_a_poisoned_free_block_reports_it() {
    let arena = Arena::new(1 << 20);
    let (mut heap, _) = heap_with_poisoned_small_blocks::<GoodFit>(&arena, 100);
    assert!(matches!(
        heap.allocate(l(16, 8)),
        Err(HeapError::Corrupted { .. })
    ));
    assert_eq!(heap.stats().misuses, 1);
}

/// MutekH: "O(n) search on every allocation and reserve ...; best fit
/// scans everything". A linear free-list walk visits every small free
/// block in front of the one that can serve a large request; here the
/// search goes straight to the large block's class, whatever the number of
/// small free blocks in front: it never reads them (they are poisoned).
#[test]
fn o_n_search_and_best_fit_scans_everything() {
    for small_free in [10, 10_000] {
        large_requests_past_poisoned_blocks::<GoodFit>(small_free, 200);
        large_requests_past_poisoned_blocks::<BestFit>(small_free, 200);
    }
}

/// MutekH: "A bitwise, non-standard CRC recomputed on every neighbour
/// change". The header checksum is the standard CRC-32C (checked here
/// against a bitwise reference over the documented fields), patched
/// incrementally on neighbour changes (unit test
/// `block::tests::a_damaged_header_stays_damaged_through_updates`).
#[cfg(feature = "crc")]
#[test]
fn a_bitwise_non_standard_crc() {
    fn crc32c(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    assert_eq!(
        crc32c(b"123456789"),
        0xE306_9283,
        "the catalogue check value"
    );
    let arena = Arena::new(64 << 10);
    let mut heap = Heap::new();
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    let a = heap.allocate(l(100, 8)).unwrap();
    let b = heap.allocate(l(100, 8)).unwrap();
    unsafe { heap.free(a) }.unwrap(); // neighbours change: split, free
    for p in [a, b] {
        let header = header_of(p);
        // SAFETY: a header in the arena: link (8), owner (8), then with
        // `guard` the requested size (8), then the CRC.
        let bytes = unsafe { std::slice::from_raw_parts(header, HEADER_SIZE) };
        let mut message = bytes[8..16].to_vec(); // owner
        let crc_at = if cfg!(feature = "guard") {
            message.extend_from_slice(&bytes[16..24]); // requested
            24
        } else {
            16
        };
        message.extend_from_slice(&bytes[0..8]); // link
        let stored = u32::from_le_bytes(bytes[crc_at..crc_at + 4].try_into().unwrap());
        assert_eq!(stored, crc32c(&message));
    }
}

/// MutekH: "resize with SCRAMBLE fills the whole user area with 0x5a: data
/// is destroyed on growth or shrink in place".
#[test]
fn resize_with_scramble_destroys_data() {
    let arena = Arena::new(64 << 10);
    let mut heap = Heap::new();
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    let p = heap.allocate(l(64, 8)).unwrap();
    unsafe {
        p.as_ptr().write_bytes(0xc3, 64);
        assert!(heap.resize_in_place(p, 2000).unwrap(), "grows in place");
        assert!((0..64).all(|i| *p.as_ptr().add(i) == 0xc3));
        let q = heap.realloc(p, l(2000, 8), 16).unwrap();
        assert_eq!(q, p, "shrinks in place");
        assert!((0..16).all(|i| *q.as_ptr().add(i) == 0xc3));
        heap.free(q).unwrap();
    }
    heap.check().unwrap();
}

/// MutekH: "Stats drift after `extend` (the sentinel is counted as free);
/// the walk's assert then fails".
#[test]
fn stats_drift_after_extend() {
    let arena = Arena::new(192 << 10);
    let mut heap = Heap::new();
    let piece = 64 << 10;
    let id = unsafe { heap.add_region_with_priority(arena.ptr, piece, 0) }.unwrap();
    let before = heap.stats();
    unsafe { heap.extend(id, arena.ptr.wrapping_add(2 * piece), piece) }.unwrap();
    let after = heap.stats();
    heap.check().unwrap();
    assert_eq!(after.chunks, 2);
    assert_eq!(after.total_bytes, before.total_bytes + piece);
    // The new chunk's sentinel is metadata, never free memory.
    assert_eq!(
        after.free_bytes - before.free_bytes + (after.metadata_bytes - before.metadata_bytes),
        piece
    );
    assert_eq!(
        after.total_bytes,
        after.in_use_bytes + after.free_bytes + after.metadata_bytes
    );
    let p = heap.allocate(l(50 << 10, 8)).unwrap();
    unsafe { heap.free(p) }.unwrap();
    heap.check().unwrap();
}

/// MutekH: "Double free after the block was merged into its predecessor
/// is not detected".
#[test]
fn double_free_after_merge_into_predecessor() {
    let arena = Arena::new(64 << 10);
    let mut heap = Heap::new();
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    let a = heap.allocate(l(100, 8)).unwrap();
    let b = heap.allocate(l(100, 8)).unwrap();
    let keep = heap.allocate(l(100, 8)).unwrap();
    unsafe {
        keep.as_ptr().write_bytes(9, 100);
        heap.free(a).unwrap();
        heap.free(b).unwrap(); // merged into its free predecessor `a`
        let addr = b.as_ptr().addr();
        assert_eq!(heap.free(b), Err(HeapError::DoubleFree { addr }));
        assert!((0..100).all(|i| *keep.as_ptr().add(i) == 9));
        heap.free(keep).unwrap();
    }
    heap.check().unwrap();
    assert_eq!(heap.stats().used_blocks, 0);
}

/// MutekH: "No overflow checks: a huge size wraps to a tiny block; calloc
/// does not check nmemb * size; free does not check that the pointer
/// belongs to any region".
#[test]
fn no_overflow_checks_and_no_free_membership() {
    let arena = Arena::new(64 << 10);
    let mut heap = Heap::new();
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    for size in [usize::MAX - 7, usize::MAX - GRANULE, MAX_CHUNK_SIZE + 1] {
        let align = if size > isize::MAX as usize { 1 } else { 8 };
        if let Ok(layout) = Layout::from_size_align(size, align) {
            assert_eq!(heap.allocate(layout), Err(HeapError::SizeOverflow { size }));
            assert_eq!(
                heap.allocate_zeroed(layout),
                Err(HeapError::SizeOverflow { size })
            );
        }
    }
    // calloc's nmemb * size: an overflowing product cannot become a layout,
    // and the largest one that can is refused, not wrapped.
    assert!(Layout::array::<u64>(usize::MAX / 4).is_err());
    let huge = Layout::array::<u64>(isize::MAX as usize / 8).unwrap();
    assert_eq!(
        heap.allocate_zeroed(huge),
        Err(HeapError::SizeOverflow { size: huge.size() })
    );
    let p = heap.allocate(l(32, 8)).unwrap();
    let p_realloc = unsafe { heap.realloc(p, l(32, 8), usize::MAX - 3) };
    assert_eq!(
        p_realloc,
        Err(HeapError::SizeOverflow {
            size: usize::MAX - 3
        })
    );
    let outside = 0u128;
    let addr = std::ptr::addr_of!(outside).addr();
    let foreign = NonNull::from(&outside).cast::<u8>();
    assert_eq!(
        unsafe { heap.free(foreign) },
        Err(HeapError::NotFromHeap { addr })
    );
    unsafe { heap.free(p) }.unwrap();
    heap.check().unwrap();
    assert_eq!(heap.stats().used_blocks, 0);
}

/// MutekH: "The guard misses the rounding slack between the user's end and
/// the tail guard".
#[cfg(feature = "guard")]
#[test]
fn guard_misses_the_rounding_slack() {
    let arena = Arena::new(64 << 10);
    let mut heap = Heap::new();
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    // 33 bytes: rounding leaves 15 bytes of slack before a granule boundary.
    let p = heap.allocate(l(33, 8)).unwrap();
    for offset in 33..48 {
        let at = p.as_ptr().wrapping_add(offset);
        unsafe { at.write(0) };
        assert_eq!(
            unsafe { heap.usable_size(p) },
            Err(HeapError::Corrupted {
                addr: header_of(p).addr(),
                what: Corruption::Guard { at: at.addr() },
            })
        );
        unsafe { at.write(region_heap::integrity::GUARD_TAIL) };
    }
    unsafe { heap.free(p) }.unwrap();
    heap.check().unwrap();
}

/// MutekH: "The walk never checks the free list or address order".
#[test]
fn walk_never_checks_the_free_list_or_address_order() {
    let arena = Arena::new(64 << 10);
    let mut heap = Heap::new();
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    // Freed blocks go to the free lists at once (no quick lists).
    heap.set_quick_depth(0).unwrap();
    let a = heap.allocate(l(64, 8)).unwrap();
    let b = heap.allocate(l(64, 8)).unwrap();
    let _c = heap.allocate(l(64, 8)).unwrap();
    unsafe { heap.free(b) }.unwrap();
    // The free block's list link (right after its header): point it astray.
    let link = b.as_ptr().wrapping_sub(GUARD_SIZE).cast::<usize>();
    let saved = unsafe { link.read() };
    unsafe { link.write(a.as_ptr().addr()) };
    let free_list = heap.check();
    unsafe { link.write(saved) };
    heap.check().unwrap();
    assert!(
        matches!(
            free_list,
            Err(HeapError::Corrupted {
                what: Corruption::FreeList,
                ..
            })
        ),
        "{free_list:?}"
    );
    // A block whose next link goes backwards: out of address order. With
    // `crc` the checksum sees it first, which is the point of the feature.
    let header = header_of(a).cast::<i32>();
    let saved = unsafe { header.read() };
    unsafe { header.write(-1) };
    let order = heap.check();
    unsafe { header.write(saved) };
    heap.check().unwrap();
    let what = if cfg!(feature = "crc") {
        Corruption::Checksum
    } else {
        Corruption::AddressOrder
    };
    assert_eq!(
        order,
        Err(HeapError::Corrupted {
            addr: header.addr(),
            what
        })
    );
}

/// MutekH: "dumps read without the lock". `LockedHeap` gives `dump` (and
/// `check`, `stats`) only through `lock()`: a dump waits for a writer that
/// holds the lock and sees its completed work, never a half-done change.
#[test]
fn dumps_read_without_the_lock() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let arena = Arena::new(64 << 10);
    let heap: Arc<LockedHeap> = Arc::new(LockedHeap::empty());
    unsafe { heap.init(arena.ptr, arena.len()) };
    let holding = Arc::new(AtomicBool::new(false));
    let writer = {
        let (heap, holding) = (Arc::clone(&heap), Arc::clone(&holding));
        std::thread::spawn(move || {
            let mut guard = heap.lock();
            holding.store(true, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            let p = guard
                .allocate(Layout::from_size_align(1000, 8).unwrap())
                .unwrap();
            p.as_ptr().addr()
        })
    };
    while !holding.load(Ordering::SeqCst) {
        std::hint::spin_loop();
    }
    let mut dump = String::new();
    heap.lock().dump(&mut dump).unwrap();
    let addr = writer.join().unwrap();
    assert!(
        dump.contains("used in 1 block(s)"),
        "the dump waited for the writer: {dump}"
    );
    let ptr = NonNull::new(addr as *mut u8).unwrap();
    unsafe { heap.lock().free(ptr) }.unwrap();
    heap.lock().check().unwrap();
}

/// MutekH: "Aligned allocation searches for size + align and can refuse an
/// exact fit".
#[test]
fn aligned_allocation_refuses_an_exact_fit() {
    let arena = Arena::new(64 << 10);
    let mut heap = Heap::new();
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    let big = heap.allocate(l(4096, 4096)).unwrap();
    let mut fillers = Vec::new();
    for size in [1024, 64, 0] {
        while let Ok(p) = heap.allocate(l(size, 8)) {
            fillers.push(p);
        }
    }
    unsafe { heap.free(big) }.unwrap();
    // The only free memory is exactly the freed block: size + align would
    // not fit, the exact placement does.
    assert_eq!(heap.stats().free_blocks, 1);
    let again = heap.allocate(l(4096, 4096)).unwrap();
    assert_eq!(again, big);
    for p in fillers.into_iter().chain([again]) {
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
}

/// An aligned request is carved from the end of the hole the good fit
/// finds: the block ends where the hole ended, the front stays one free
/// block (no gap block is filed), and the block before the hole keeps its
/// size (no gap is given to it).
#[test]
fn an_aligned_block_is_carved_from_the_end_of_a_hole() {
    let arena = Arena::new(64 << 10);
    let mut heap = Heap::new().with_slabs(false);
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    heap.set_quick_depth(0).unwrap();
    let before = heap.allocate(l(100, 8)).unwrap();
    let hole = heap.allocate(l(2000, 8)).unwrap();
    let after = heap.allocate(l(100, 8)).unwrap();
    // SAFETY: a live block of this heap.
    let before_size = unsafe { region_heap::raw::used_block_size(before.as_ptr()) };
    unsafe { heap.free(hole) }.unwrap();
    let free_blocks = heap.stats().free_blocks;
    let p = heap.allocate(l(200, 64)).unwrap();
    let after_header = after.as_ptr().addr() - region_heap::raw::DATA_OFFSET;
    assert_eq!(p.as_ptr().addr() % 64, 0);
    assert!(p.as_ptr().addr() > hole.as_ptr().addr(), "not at the front");
    assert!(
        after_header - (p.as_ptr().addr() + 200) < 64 + BLOCK_OVERHEAD,
        "ends where the hole ended"
    );
    assert_eq!(
        heap.stats().free_blocks,
        free_blocks,
        "the front stays free"
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { region_heap::raw::used_block_size(before.as_ptr()) },
        before_size
    );
    unsafe {
        heap.free(p).unwrap();
        heap.free(before).unwrap();
        heap.free(after).unwrap();
    }
    heap.check().unwrap();
}

/// An aligned block carved from the free space at a chunk's end would sit
/// between that space and memory added next to the chunk: the last block of
/// a chunk is carved from its front, so a range `extend` joins to the chunk
/// merges with the free space (review finding, 2026-12-07).
#[test]
fn growth_by_an_adjacent_range_still_joins_the_free_space() {
    let arena = Arena::new(128 << 10);
    let mut heap = Heap::new();
    let piece = 64 << 10;
    let id = unsafe { heap.add_region_with_priority(arena.ptr, piece, 0) }.unwrap();
    let page = heap.allocate(l(64, 4096)).unwrap();
    assert!(
        page.as_ptr().addr() < arena.ptr.addr() + piece / 2,
        "carved from the front of the chunk's last block"
    );
    unsafe { heap.extend(id, arena.ptr.wrapping_add(piece), piece) }.unwrap();
    assert_eq!(heap.stats().chunks, 1, "joined into one chunk");
    // More than either piece holds: only the joined free space serves it.
    let big = heap.allocate(l(100 << 10, 8)).unwrap();
    unsafe {
        heap.free(big).unwrap();
        heap.free(page).unwrap();
    }
    heap.check().unwrap();
}

/// MutekH: "`extend` never joins adjacent chunks and does not align its
/// arguments".
#[test]
fn extend_never_joins_adjacent_chunks_nor_aligns() {
    let arena = Arena::new(256 << 10);
    let mut heap = Heap::new();
    let piece = 64 << 10;
    let id = unsafe { heap.add_region_with_priority(arena.ptr, piece, 0) }.unwrap();
    // A misaligned range that touches the first chunk's end once aligned.
    let start = arena.ptr.wrapping_add(piece - 3);
    unsafe { heap.extend(id, start, piece + 3 + 5) }.unwrap();
    let s = heap.stats();
    assert_eq!((s.chunks, s.free_blocks), (1, 1), "joined into one chunk");
    // One block spanning both pieces proves the join.
    let p = heap.allocate(l(piece + piece / 2, 8)).unwrap();
    assert_eq!(p.as_ptr().addr() % GRANULE, 0);
    unsafe { heap.free(p) }.unwrap();
    heap.check().unwrap();
}
