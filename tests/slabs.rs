//! The slab front end (`Heap::set_slabs`): objects without a header, found
//! from their address, and every promise a block keeps, kept for them too:
//! exact errors for double, interior and foreign frees, damage to a slab's
//! header found and quarantined, stats that never drift, `check()` and
//! `dump()` that walk slabs, and the integrity features on objects.

mod common;

use common::Arena;
use std::alloc::Layout;
use std::ptr::NonNull;

use region_heap::{
    Corruption, Heap, HeapError, BLOCK_OVERHEAD, GRANULE, GUARD_SIZE, HEADER_SIZE,
    SLAB_HEADER_SIZE, SLAB_MAX, SLAB_SIZE,
};

fn l(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// A heap with slabs on over `arena`.
fn slab_heap(arena: &Arena) -> Heap {
    let mut heap = Heap::new().with_slabs(true);
    // SAFETY: the arena outlives the heap in every test.
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    heap
}

/// Allocates `n` objects of `size` bytes, each filled with its own byte.
fn fill(heap: &mut Heap, n: usize, size: usize) -> Vec<(NonNull<u8>, u8)> {
    (0..n)
        .map(|i| {
            let p = heap.allocate(l(size)).unwrap();
            let byte = (i % 251) as u8 + 1;
            // SAFETY: a fresh object of `size` writable bytes.
            unsafe { p.as_ptr().write_bytes(byte, size) };
            (p, byte)
        })
        .collect()
}

/// Every object still holds its byte.
fn intact(objects: &[(NonNull<u8>, u8)], size: usize) {
    for &(p, byte) in objects {
        // SAFETY: live objects of `size` bytes.
        let data = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
        assert!(data.iter().all(|&b| b == byte), "object {p:p} changed");
    }
}

/// A pointer to `addr` inside `arena`, with the arena's provenance (what
/// a buggy program's stray write would use; Miri checks it).
fn at(arena: &Arena, addr: usize) -> *mut u8 {
    arena.ptr.wrapping_add(addr - arena.ptr.addr())
}

fn slab_of(p: NonNull<u8>) -> usize {
    p.as_ptr().addr() & !(SLAB_SIZE - 1)
}

#[test]
fn objects_are_packed_without_headers_and_stats_count_them() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let objects = fill(&mut heap, 100, 48);
    let stride = 48 + GUARD_SIZE;
    for pair in objects.windows(2) {
        let gap = pair[1].0.as_ptr().addr() - pair[0].0.as_ptr().addr();
        assert_eq!(gap, stride, "objects side by side, no header between");
    }
    assert!(objects
        .iter()
        .all(|(p, _)| slab_of(*p) == slab_of(objects[0].0)));
    let stats = heap.stats();
    assert_eq!((stats.slabs, stats.slab_objects), (1, 100));
    assert_eq!(stats.slab_object_bytes, 100 * 48);
    assert_eq!(stats.slab_bytes, SLAB_SIZE);
    assert_eq!(
        stats.used_blocks, 100,
        "objects count as what was handed out"
    );
    assert_eq!(
        stats.total_bytes,
        stats.in_use_bytes + stats.free_bytes + stats.metadata_bytes
    );
    heap.check().unwrap();
    intact(&objects, 48);
    for &(p, _) in &objects {
        // SAFETY: live objects of this heap.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
    let stats = heap.stats();
    assert_eq!(
        (stats.slabs, stats.slab_objects, stats.used_blocks),
        (1, 0, 0)
    );
    // An empty slab is kept for the next objects of its class, and given
    // back on a flush (or before the region reports that it is full).
    heap.flush_quick_lists().unwrap();
    let stats = heap.stats();
    assert_eq!(
        (stats.slabs, stats.in_use_bytes, stats.free_blocks),
        (0, 0, 1)
    );
    heap.check().unwrap();
}

#[test]
fn free_needs_no_layout_and_resizing_stays_within_the_class() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let p = heap.allocate(l(20)).unwrap();
    // SAFETY: `p` is a live object of this heap, 20 bytes written.
    unsafe {
        p.as_ptr().write_bytes(7, 20);
        assert_eq!(heap.usable_size(p), Ok(24), "the class of 20 bytes");
        assert_eq!(heap.realloc(p, l(20), 23), Ok(p), "same class: in place");
        assert_eq!(heap.resize_in_place(p, 24), Ok(true));
        assert_eq!(heap.resize_in_place(p, 25), Ok(false));
        let q = heap.realloc(p, l(23), 300).unwrap();
        assert_ne!(q, p, "another class: moved");
        assert!(std::slice::from_raw_parts(q.as_ptr(), 20)
            .iter()
            .all(|&b| b == 7));
        assert_eq!(heap.usable_size(q), Ok(304));
        assert_eq!(
            heap.free(p),
            Err(HeapError::DoubleFree {
                addr: p.as_ptr().addr()
            })
        );
        let big = heap.realloc(q, l(300), SLAB_MAX + 1).unwrap();
        assert!(heap.usable_size(big).unwrap() > SLAB_MAX, "a block now");
        heap.free(big).unwrap();
    }
    heap.check().unwrap();
    assert_eq!(heap.stats().used_blocks, 0);
}

#[test]
fn double_interior_and_foreign_frees_are_named_and_change_nothing() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let objects = fill(&mut heap, 40, 64);
    let (victim, _) = objects[10];
    let addr = victim.as_ptr().addr();
    let other = Arena::new(4096);
    let foreign = NonNull::new(other.ptr.wrapping_add(64)).unwrap();
    let base = NonNull::new(at(&arena, slab_of(victim))).unwrap();
    let before = heap.stats();
    // SAFETY: every call below is refused before it touches anything.
    unsafe {
        let interior = victim.add(GRANULE);
        assert_eq!(
            heap.free(interior),
            Err(HeapError::NotBlockStart {
                addr: addr + GRANULE
            })
        );
        assert_eq!(
            heap.free(base),
            Err(HeapError::NotBlockStart {
                addr: base.as_ptr().addr()
            }),
            "the slab's header is no object"
        );
        assert_eq!(
            heap.free(foreign),
            Err(HeapError::NotFromHeap {
                addr: foreign.as_ptr().addr()
            })
        );
    }
    let mut live: Vec<_> = objects
        .iter()
        .copied()
        .filter(|&(p, _)| p != victim)
        .collect();
    // SAFETY: a live object, then the same one again.
    unsafe {
        heap.free(victim).unwrap();
        assert_eq!(heap.free(victim), Err(HeapError::DoubleFree { addr }));
    }
    let after = heap.stats();
    assert_eq!(after.slab_objects, before.slab_objects - 1);
    assert_eq!(after.misuses, before.misuses + 4);
    heap.check().unwrap();
    intact(&live, 64);
    for (p, _) in live.drain(..) {
        // SAFETY: live objects.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
}

/// An overrun from the memory before a slab reaches its header's first
/// word (the seal): the next call on that slab reports the damage with the
/// slab's address, the slab is quarantined, and the heap goes on.
#[test]
fn an_overrun_into_a_slab_header_is_reported_and_quarantined() {
    let arena = Arena::new(512 << 10);
    let mut heap = slab_heap(&arena);
    let damaged = fill(&mut heap, 20, 96);
    let survivors = fill(&mut heap, 20, 200);
    let base = slab_of(damaged[0].0);
    assert_ne!(base, slab_of(survivors[0].0), "two classes, two slabs");
    // SAFETY: the first word of the slab's data, heap memory inside the
    // arena: what an overrun of the block before would write.
    unsafe { at(&arena, base).cast::<u64>().write(0) };
    let corrupted = HeapError::Corrupted {
        addr: base,
        what: Corruption::SlabHeader,
    };
    assert_eq!(heap.check(), Err(corrupted));
    // SAFETY: a live object of the damaged slab.
    assert_eq!(unsafe { heap.free(damaged[3].0) }, Err(corrupted));
    let stats = heap.stats();
    assert_eq!(stats.quarantined_blocks, 1, "the slab is taken out of use");
    assert_eq!(stats.slabs, 1);
    heap.check().unwrap();
    // New objects of that class come from a new slab.
    let fresh = heap.allocate(l(96)).unwrap();
    assert_ne!(slab_of(fresh), base);
    intact(&survivors, 200);
    for (p, _) in survivors {
        // SAFETY: live objects of the intact slab.
        unsafe { heap.free(p) }.unwrap();
    }
    // SAFETY: a live object.
    unsafe { heap.free(fresh) }.unwrap();
    heap.check().unwrap();
}

/// An underrun of a slab's first object reaches the header's last word
/// (the second seal), which the next call on the slab finds.
#[test]
fn an_underrun_of_the_first_object_is_reported() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let objects = fill(&mut heap, 4, 16);
    let first = objects[0].0;
    // SAFETY: the 16 bytes before the first object: the slab header's end.
    unsafe { first.as_ptr().sub(GRANULE).write_bytes(0x41, GRANULE) };
    assert_eq!(
        // SAFETY: a live object of the damaged slab.
        unsafe { heap.free(objects[2].0) },
        Err(HeapError::Corrupted {
            addr: slab_of(first),
            what: Corruption::SlabHeader
        })
    );
    heap.check().unwrap();
}

/// A slab list link overwritten with an address inside a live block's
/// data: it is never followed; the walk and the next allocation that needs
/// it report it, the repair rebuilds the list, and the block it names is
/// never written.
#[test]
fn a_forged_slab_list_link_is_refused() {
    let arena = Arena::new(512 << 10);
    let mut heap = slab_heap(&arena);
    heap.set_slabs(false);
    let witness = fill(&mut heap, 1, 40 << 10);
    let witness_stats = heap.stats();
    heap.set_slabs(true);
    // Two slabs of one class: fill the first and part of a second, then
    // free one object of the first, which puts it first on the list.
    let capacity_guess = (SLAB_SIZE - 512) / (32 + GUARD_SIZE);
    let objects = fill(&mut heap, capacity_guess + 50, 32);
    let first_slab = slab_of(objects[0].0);
    let freed = objects[1].0;
    // SAFETY: a live object.
    unsafe { heap.free(freed) }.unwrap();
    heap.check().unwrap();
    // The `next` link is the header's second word; point it at a
    // slab-aligned address inside the witness's data.
    let forged = (witness[0].0.as_ptr().addr() + SLAB_SIZE - 1) & !(SLAB_SIZE - 1);
    // SAFETY: heap memory inside the arena: the first slab's header.
    unsafe { at(&arena, first_slab).cast::<usize>().add(1).write(forged) };
    if cfg!(feature = "crc") {
        // The header's checksum no longer holds: the slab is damaged as a
        // whole, found by the walk and by the allocation, and quarantined.
        let broken = HeapError::Corrupted {
            addr: first_slab,
            what: Corruption::Checksum,
        };
        assert_eq!(heap.check(), Err(broken));
        assert_eq!(heap.allocate(l(32)), Err(broken));
        assert_eq!(heap.stats().quarantined_blocks, 1);
    } else {
        // The link leads to no slab: it is named where it is kept (so
        // that the repair takes nothing it points at for the damage), and
        // the repair rebuilds the list from the slabs themselves.
        let broken = HeapError::Corrupted {
            addr: first_slab,
            what: Corruption::SlabList,
        };
        assert_eq!(heap.check(), Err(broken));
        // Taking the freed slot fills the first slab: unlinking it needs
        // the forged link, which is refused.
        assert_eq!(heap.allocate(l(32)), Err(broken));
        assert_eq!(heap.stats().quarantined_blocks, 0, "a link, not a block");
        let again = heap.allocate(l(32)).unwrap();
        let witness_data = witness[0].0.as_ptr().addr()..forged + SLAB_SIZE;
        assert!(!witness_data.contains(&again.as_ptr().addr()));
    }
    heap.check().unwrap();
    // The heap never wrote where the link pointed, and the witness is
    // still a live block it will free.
    intact(&witness, 40 << 10);
    assert!(heap.stats().quarantined_blocks <= usize::from(cfg!(feature = "crc")));
    let _ = witness_stats;
    // SAFETY: the live witness block.
    unsafe { heap.free(witness[0].0) }.unwrap();
}

/// With `scramble`, a free object holds the free pattern; a write after
/// free is found when the object would be handed out again, and that
/// object never is.
#[cfg(feature = "scramble")]
#[test]
fn a_write_after_free_into_an_object_is_found_on_reuse() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let objects = fill(&mut heap, 8, 80);
    let victim = objects[5].0;
    // SAFETY: a live object; then a write into it after its free (the
    // misuse under test), inside the heap's memory.
    unsafe {
        heap.free(victim).unwrap();
        victim.as_ptr().add(8).write(0);
    }
    let addr = victim.as_ptr().addr();
    assert_eq!(
        heap.allocate(l(80)),
        Err(HeapError::Corrupted {
            addr,
            what: Corruption::Poison { at: addr + 8 }
        })
    );
    // The slab is quarantined whole: the poisoned object stays taken, so
    // its bit alone could not tell a later (double) free of it from the
    // free of a live object.
    let next = heap.allocate(l(80)).unwrap();
    assert_ne!(
        slab_of(next),
        slab_of(victim),
        "a new slab serves the class"
    );
    let slab_header = slab_of(victim) - HEADER_SIZE - GUARD_SIZE;
    let quarantined = Err(HeapError::Corrupted {
        addr: slab_header,
        what: Corruption::Quarantined,
    });
    // SAFETY: the misuse under test: the victim was freed already.
    assert_eq!(unsafe { heap.free(victim) }.map(|_| ()), quarantined);
    heap.check().unwrap();
    // The slab's live objects keep their bytes; their frees are refused.
    intact(&objects[..5], 80);
    // SAFETY: a live object of the quarantined slab.
    assert_eq!(unsafe { heap.free(objects[0].0) }.map(|_| ()), quarantined);
    intact(&objects[..5], 80);
}

/// With `guard`, each object is followed by a guard; an overrun past the
/// object's class size is reported by its free.
#[cfg(feature = "guard")]
#[test]
fn an_overrun_past_an_object_is_found_by_its_guard() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let objects = fill(&mut heap, 3, 32);
    let p = objects[1].0;
    // SAFETY: one byte past the object: its guard, heap memory.
    unsafe { p.as_ptr().add(32).write(0) };
    let addr = p.as_ptr().addr();
    assert_eq!(
        // SAFETY: a live object.
        unsafe { heap.free(p) },
        Err(HeapError::Corrupted {
            addr,
            what: Corruption::Guard { at: addr + 32 }
        })
    );
    intact(&[objects[0], objects[2]], 32);
}

/// A bitmap bit flipped (a free object marked handed out): `check()`
/// finds the count disagreeing with the bitmap (or, with `crc`, the
/// checksum).
#[test]
fn a_flipped_bitmap_bit_is_found_by_check() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let objects = fill(&mut heap, 3, 16);
    let base = slab_of(objects[0].0);
    // The bitmap follows the seal, the links and one word of counts (and
    // the checksum word with `crc`); bit 10 is a free object.
    let words = if cfg!(feature = "crc") { 5 } else { 4 };
    // SAFETY: heap memory inside the arena: the slab header.
    unsafe { *at(&arena, base).cast::<u64>().add(words) |= 1 << 10 };
    let Err(HeapError::Corrupted { addr, what }) = heap.check() else {
        panic!("a flipped bit is found");
    };
    assert_eq!(addr, base);
    let expected = if cfg!(feature = "crc") {
        Corruption::Checksum
    } else {
        Corruption::SlabHeader
    };
    assert_eq!(what, expected);
}

#[test]
fn without_room_for_a_slab_small_requests_get_blocks() {
    // Too small for a 16 KiB-aligned slab.
    let arena = Arena::new(16 << 10);
    let mut heap = slab_heap(&arena);
    let p = heap.allocate(l(32)).unwrap();
    assert_eq!(heap.stats().slabs, 0);
    // SAFETY: a live block.
    unsafe { heap.free(p) }.unwrap();
    heap.check().unwrap();
}

#[test]
fn turning_slabs_off_keeps_objects_valid_and_dump_lists_slabs() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let objects = fill(&mut heap, 10, 48);
    let mut dump = String::new();
    heap.dump(&mut dump).unwrap();
    assert!(dump.contains("slab of 48-byte objects, 10 of"), "{dump}");
    heap.set_slabs(false);
    let block = heap.allocate(l(48)).unwrap();
    assert_eq!(heap.stats().slab_objects, 10, "a block now, not an object");
    intact(&objects, 48);
    for (p, _) in objects {
        // SAFETY: live objects.
        unsafe { heap.free(p) }.unwrap();
    }
    // SAFETY: a live block.
    unsafe { heap.free(block) }.unwrap();
    heap.flush_quick_lists().unwrap();
    assert_eq!(heap.stats().slabs, 0);
    heap.check().unwrap();
}

/// An overrun of the block before a slab that reaches the slab's block
/// header (its owner word) but not the slab's seal: a free of one of the
/// slab's objects names the damaged header, never tries the previous
/// object's bytes as a header, and after the repair the slab's other
/// objects are reported as quarantined.
#[test]
fn an_overrun_into_a_slabs_block_header_is_named() {
    let arena = Arena::new(512 << 10);
    let mut heap = slab_heap(&arena);
    let objects = fill(&mut heap, 20, 64);
    let others = fill(&mut heap, 5, 300);
    let base = slab_of(objects[0].0);
    let header = base - HEADER_SIZE - GUARD_SIZE;
    // The owner word is the header's second word.
    // SAFETY: heap memory inside the arena: the slab's block header.
    unsafe { at(&arena, header).cast::<usize>().add(1).write(0x4141_4141) };
    let damaged = HeapError::Corrupted {
        addr: header,
        what: Corruption::Owner,
    };
    // SAFETY: a live object of the slab.
    assert_eq!(unsafe { heap.free(objects[4].0) }, Err(damaged));
    // The repair took the slab out of use; its objects are reported so.
    let quarantined = HeapError::Corrupted {
        addr: header,
        what: Corruption::Quarantined,
    };
    // SAFETY: a live object of the quarantined slab.
    let again = unsafe { heap.free(objects[5].0) };
    assert_eq!(again, Err(quarantined));
    heap.check().unwrap();
    intact(&others, 300);
    for (p, _) in others {
        // SAFETY: live objects of another slab.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
}

/// `reserve` over an empty slab gives the slab back first, as it would
/// find the range free with slabs off.
#[test]
fn reserve_gives_an_empty_slab_back() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let p = heap.allocate(l(32)).unwrap();
    // SAFETY: a live object.
    unsafe { heap.free(p) }.unwrap();
    assert_eq!(heap.stats().slabs, 1);
    let at = p.as_ptr().wrapping_add(256);
    let reserved = heap.reserve(at, 64).unwrap();
    assert_eq!(reserved.as_ptr(), at);
    assert_eq!(heap.stats().slabs, 0);
    // SAFETY: the reserved block.
    unsafe { heap.free(reserved) }.unwrap();
    heap.check().unwrap();
}

/// A `PerCpuHeap`'s heaps keep slabs off, whatever a caller asks: its
/// free reads the word before a pointer without a lock.
#[test]
fn per_cpu_heaps_refuse_slabs() {
    static HEAPS: region_heap::PerCpuHeap<2> = region_heap::PerCpuHeap::new(|| 0);
    let mut heap = HEAPS.heap(0).lock();
    heap.set_slabs(true);
    assert!(!heap.slabs());
}

/// Slabs are off unless asked for.
#[test]
fn slabs_are_off_by_default() {
    assert!(!Heap::new().slabs());
    const { assert!(!region_heap::DEFAULT_SLABS) };
    let arena = Arena::new(256 << 10);
    let mut heap = Heap::new();
    // SAFETY: the arena outlives the heap.
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    let p = heap.allocate(l(32)).unwrap();
    assert_eq!(heap.stats().slabs, 0);
    // SAFETY: a live block.
    unsafe { heap.free(p) }.unwrap();
}

/// An empty slab goes back to the free lists when a region would
/// otherwise report that it has no room: slabs never make a request fail
/// that blocks alone would serve.
#[test]
fn empty_slabs_go_back_before_the_heap_runs_out() {
    let arena = Arena::new(64 << 10);
    let mut heap = slab_heap(&arena);
    let objects = fill(&mut heap, 50, 64);
    assert_eq!(heap.stats().slabs, 1);
    for (p, _) in objects {
        // SAFETY: live objects.
        unsafe { heap.free(p) }.unwrap();
    }
    assert_eq!(heap.stats().slabs, 1, "kept while there is room");
    let largest = heap.stats().largest_free;
    // More than the largest free block without the slab.
    let big = heap.allocate(l(largest + 4096)).unwrap();
    assert_eq!(heap.stats().slabs, 0, "the empty slab went back");
    // SAFETY: a live block.
    unsafe { heap.free(big) }.unwrap();
    heap.check().unwrap();
}

/// With `trace`, objects are reported like blocks: the class size is
/// the block size of the event.
#[cfg(feature = "trace")]
#[test]
fn objects_are_traced() {
    use region_heap::TraceEvent;
    use std::cell::RefCell;
    thread_local! {
        static EVENTS: RefCell<Vec<TraceEvent>> = const { RefCell::new(Vec::new()) };
    }
    fn record(event: &TraceEvent) {
        EVENTS.with(|e| e.borrow_mut().push(*event));
    }
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    heap.set_trace_sink(Some(record));
    let p = heap.allocate(l(20)).unwrap();
    // SAFETY: a live object.
    unsafe { heap.free(p) }.unwrap();
    let addr = p.as_ptr().addr();
    let events = EVENTS.with(|e| std::mem::take(&mut *e.borrow_mut()));
    let allocated = TraceEvent::Allocated {
        addr,
        size: 20,
        align: 8,
        block: 24,
    };
    assert!(events.contains(&allocated), "{events:?}");
    assert_eq!(events.last(), Some(&TraceEvent::Freed { addr, block: 24 }));
}

/// Memory that held an earlier heap's slabs, given to a new heap: the stale
/// slab headers (same addresses, same region address) must not pass for
/// slabs of the new heap. The new heap's blocks that cover them are freed
/// as blocks, not taken for objects of a stale slab.
#[test]
fn an_earlier_heaps_slabs_do_not_pass_for_this_heaps() {
    let arena = Arena::new(1 << 20);
    {
        let mut old = slab_heap(&arena);
        // Slabs of several classes over the arena, left as the heap goes.
        for size in [16, 48, 96, 160, 256, 400, 512] {
            fill(&mut old, 64, size);
        }
        assert!(old.stats().slabs >= 7);
    }
    let mut heap = slab_heap(&arena);
    // One slab, so that frees consult the slab path at all.
    let object = heap.allocate(l(32)).unwrap();
    // Blocks over the stale slabs: each spans at least one 16 KiB boundary.
    let big = l(SLAB_SIZE + 1000);
    let mut blocks = Vec::new();
    while let Ok(p) = heap.allocate(big) {
        blocks.push(p);
    }
    assert!(blocks.len() >= 8, "the arena holds many blocks of {big:?}");
    for p in blocks {
        // SAFETY: a live block of this heap, freed once.
        assert_eq!(unsafe { heap.deallocate(p, big) }, Ok(()), "block {p:p}");
    }
    // SAFETY: as above.
    unsafe { heap.deallocate(object, l(32)) }.unwrap();
    heap.check().unwrap();
}

/// A write after free through a pointer to a block that a slab later
/// replaced (same 16 KiB-aligned start) overwrites both of the slab's
/// seals: the slab is still named as damaged (not its objects' frees
/// refused as bad pointers), and the repair quarantines it.
#[test]
fn a_slab_whose_seals_are_both_overwritten_is_reported_as_damaged() {
    let arena = Arena::new(1 << 20);
    let mut heap = slab_heap(&arena);
    // A block of a slab's size and alignment: the slab made next is
    // carved where it was.
    let aligned = Layout::from_size_align(SLAB_SIZE - BLOCK_OVERHEAD, SLAB_SIZE).unwrap();
    let dangling = heap.allocate(aligned).unwrap();
    // SAFETY: a live block, freed once.
    unsafe { heap.deallocate(dangling, aligned) }.unwrap();
    let objects = fill(&mut heap, 8, 80);
    assert_eq!(slab_of(objects[0].0), dangling.as_ptr().addr());
    // SAFETY: the misuse under test, inside the heap's memory: zeros over
    // the whole slab header (both seals) through the dangling pointer.
    unsafe { at(&arena, dangling.as_ptr().addr()).write_bytes(0, SLAB_HEADER_SIZE) };
    let damaged = Err(HeapError::Corrupted {
        addr: dangling.as_ptr().addr(),
        what: Corruption::SlabHeader,
    });
    // SAFETY: a live object; the free must refuse, naming the slab.
    assert_eq!(unsafe { heap.free(objects[3].0) }.map(|_| ()), damaged);
    intact(&objects, 80);
    // The repair quarantined the slab: the class goes on in a new one.
    let next = heap.allocate(l(80)).unwrap();
    assert_ne!(slab_of(next), slab_of(objects[0].0));
    heap.check().unwrap();
}

/// Classes step by 8 bytes: a 24-byte request aligned to 8 gets a 24-byte
/// object, side by side with the next (so every other one is aligned to 8
/// only); aligned to 16, the same request gets a 32-byte object of a class
/// whose objects are all 16-aligned.
#[test]
fn classes_step_by_8_bytes_and_an_alignment_of_16_gets_a_granule_multiple() {
    let arena = Arena::new(256 << 10);
    let mut heap = slab_heap(&arena);
    let narrow: Vec<NonNull<u8>> = (0..4).map(|_| heap.allocate(l(24)).unwrap()).collect();
    for pair in narrow.windows(2) {
        assert_eq!(
            pair[1].as_ptr().addr() - pair[0].as_ptr().addr(),
            24 + GUARD_SIZE
        );
    }
    assert!(narrow.iter().any(|p| p.as_ptr().addr() % 16 == 8));
    let wide = Layout::from_size_align(24, 16).unwrap();
    let aligned: Vec<NonNull<u8>> = (0..4).map(|_| heap.allocate(wide).unwrap()).collect();
    for &p in narrow.iter().chain(&aligned) {
        // SAFETY: live objects of this heap.
        unsafe { p.as_ptr().write_bytes(0x3c, 24) };
    }
    for &p in &narrow {
        assert_eq!(p.as_ptr().addr() % 8, 0);
        // SAFETY: a live object of this heap.
        assert_eq!(unsafe { heap.usable_size(p) }, Ok(24));
    }
    for &p in &aligned {
        assert_eq!(p.as_ptr().addr() % 16, 0);
        // SAFETY: a live object of this heap.
        assert_eq!(unsafe { heap.usable_size(p) }, Ok(32));
    }
    heap.check().unwrap();
    for p in narrow.into_iter().chain(aligned) {
        // SAFETY: live objects of this heap, each freed once.
        unsafe { heap.free(p) }.unwrap();
    }
    heap.check().unwrap();
}
