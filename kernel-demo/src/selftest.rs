//! In-kernel self-tests of the global heap, printed to the serial console.
//!
//! Each stage writes a pattern into what it allocates and reads it back, then
//! the runner calls the heap's `check()`. A stage fails with a message (QEMU
//! exit status 35); a panic gives status 37.

use alloc::alloc::{alloc, dealloc, realloc, Layout};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;
use core::ptr;

use region_heap::{Heap, HeapError};

use crate::grow::GROWTH;
use crate::heap::{self, HEAP};
use crate::memmap::BootInfo;
use crate::pattern::{fill, holds, pattern};
use crate::plan::HUGE_PAGE;
use crate::println;
use crate::serial::Console;

/// A stage's verdict: `Err` carries what went wrong.
type Outcome = Result<(), String>;

/// Fails the stage with a formatted message when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("{} (line {})", format_args!($($msg)+), line!()));
        }
    };
}

/// A named self-test.
type Stage = (&'static str, fn() -> Outcome);

/// The stages, in order.
const STAGES: &[Stage] = &[
    ("box", test_box),
    ("vec growth and shrink", test_vec),
    ("string", test_string),
    ("btreemap 100000 entries", test_btreemap),
    ("aligned allocations up to 4 KiB", test_aligned),
    ("realloc in place", test_realloc_in_place),
    ("allocation failure through try_reserve", test_try_reserve),
    ("growth hook", test_growth),
    ("trim gives memory back", test_trim),
    ("double free on a private heap", test_double_free),
    ("slab objects on a private heap", test_slabs),
    ("header corruption detected", test_corruption),
];

/// Runs every stage, checks the heap after each, then checks for leaks and
/// prints the statistics.
pub fn run(boot_info: &BootInfo) -> Outcome {
    println!(
        "self-tests ({} memory map entries kept from boot)",
        boot_info.entries().len()
    );
    let baseline = HEAP.heap(0).lock().stats();
    for (name, stage) in STAGES {
        println!("[test] {name}");
        stage().map_err(|e| format!("{name}: {e}"))?;
        let checked = HEAP.heap(0).lock().check();
        checked.map_err(|e| format!("heap check after {name}: {e}"))?;
        println!("[test] {name}: ok, check ok");
    }

    let stats = HEAP.heap(0).lock().stats();
    ensure!(
        stats.used_blocks == baseline.used_blocks && stats.in_use_bytes == baseline.in_use_bytes,
        "leak: {} blocks / {} bytes in use, {} / {} before the tests",
        stats.used_blocks,
        stats.in_use_bytes,
        baseline.used_blocks,
        baseline.in_use_bytes
    );
    ensure!(
        heap::reports() == 0,
        "the heap reported {} error(s)",
        heap::reports()
    );
    println!(
        "no leak: {} blocks in use, as before the tests",
        stats.used_blocks
    );
    println!("heap statistics:");
    crate::print!("{stats}");
    println!("block list:");
    // The dump goes straight to the console: writing it into a String would
    // allocate while the heap is locked.
    let dumped = HEAP.heap(0).lock().dump(&mut Console);
    ensure!(dumped.is_ok(), "dump failed");
    Ok(())
}

/// A 64-bit pattern word.
fn word(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5A5A_5A5A
}

fn test_box() -> Outcome {
    let one = Box::new(0x1234_5678_9ABC_DEF0_u64);
    ensure!(*one == 0x1234_5678_9ABC_DEF0, "Box<u64> lost its value");

    let mut page = Box::new([0u64; 512]);
    for (i, w) in page.iter_mut().enumerate() {
        *w = word(i as u64);
    }
    let boxes: Vec<Box<[u8; 100]>> = (0..1000).map(|i| Box::new([i as u8; 100])).collect();
    ensure!(
        page.iter().enumerate().all(|(i, w)| *w == word(i as u64)),
        "Box<[u64; 512]> lost its pattern"
    );
    ensure!(
        boxes
            .iter()
            .enumerate()
            .all(|(i, b)| b.iter().all(|&x| x == i as u8)),
        "one of 1000 boxes lost its pattern"
    );
    let dyn_box: Box<dyn Fn(u64) -> u64> = Box::new(move |x| x + *one);
    ensure!(dyn_box(1) == 0x1234_5678_9ABC_DEF1, "boxed closure");
    println!("  Box<u64>, Box<[u64; 512]>, 1000 x Box<[u8; 100]>, Box<dyn Fn>: ok");
    Ok(())
}

fn test_vec() -> Outcome {
    const N: usize = 1 << 20;
    let mut v: Vec<u64> = Vec::new();
    let mut reallocs = 0;
    let mut moves = 0;
    let mut last = (v.as_ptr(), v.capacity());
    for i in 0..N {
        v.push(word(i as u64));
        if v.capacity() != last.1 {
            reallocs += 1;
            if v.as_ptr() != last.0 {
                moves += 1;
            }
            last = (v.as_ptr(), v.capacity());
        }
    }
    ensure!(
        v.iter().enumerate().all(|(i, &w)| w == word(i as u64)),
        "Vec<u64> of {N} lost its pattern while growing"
    );
    println!(
        "  grew to {N} u64 ({} MiB): {reallocs} reallocations, {moves} moved",
        (N * 8) >> 20
    );

    v.truncate(1000);
    v.shrink_to_fit();
    ensure!(
        v.capacity() == 1000,
        "capacity {} after shrink_to_fit",
        v.capacity()
    );
    ensure!(
        v.iter().enumerate().all(|(i, &w)| w == word(i as u64)),
        "Vec<u64> lost its pattern while shrinking"
    );

    let mut bytes: Vec<u8> = Vec::new();
    for round in 0..64usize {
        let len = (round * 7919) % 20_000 + 1;
        bytes.resize(len, 0);
        // SAFETY: the vector holds `len` initialized bytes.
        unsafe { fill(bytes.as_mut_ptr(), len, round) };
        bytes.shrink_to_fit();
        // SAFETY: as above; shrinking kept the first `len` bytes.
        let intact = unsafe { holds(bytes.as_ptr(), len, round) };
        ensure!(intact, "Vec<u8> round {round} lost its pattern");
    }
    println!("  shrank to 1000 u64, then 64 resize/shrink rounds of a Vec<u8>: ok");
    Ok(())
}

fn test_string() -> Outcome {
    let mut s = String::new();
    for i in 0..10_000 {
        let _ = write!(s, "{i},");
    }
    let parsed = s
        .split_terminator(',')
        .enumerate()
        .all(|(i, part)| part.parse::<usize>() == Ok(i));
    ensure!(parsed, "String of numbers does not read back");
    let len = s.len();
    s.truncate(100);
    s.shrink_to_fit();
    ensure!(s.starts_with("0,1,2,3,4,5,6,7,8,9,10,"), "prefix lost: {s}");
    let greeting = format!("{} {}", "region", "heap").to_uppercase() + "!";
    ensure!(greeting == "REGION HEAP!", "format! gave {greeting}");
    let words: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    ensure!(words.concat().len() == 190, "concat of 100 numbers");
    println!("  {len} bytes of formatted numbers read back, truncated and shrunk: ok");
    Ok(())
}

fn test_btreemap() -> Outcome {
    const N: u64 = 100_000;
    // An odd multiplier permutes the keys, so the inserts land in random order.
    let key = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut map = BTreeMap::new();
    for i in 0..N {
        map.insert(key(i), i);
    }
    ensure!(
        map.len() == N as usize,
        "len {} after {N} inserts",
        map.len()
    );
    let in_use = HEAP.heap(0).lock().stats().in_use_bytes;
    ensure!(
        (0..N).all(|i| map.get(&key(i)) == Some(&i)),
        "lookup after inserts"
    );
    ensure!(
        map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b),
        "keys out of order"
    );
    for i in (0..N).step_by(2) {
        ensure!(map.remove(&key(i)) == Some(i), "remove {i}");
    }
    ensure!(
        map.len() == (N / 2) as usize,
        "len {} after removes",
        map.len()
    );
    ensure!(
        (0..N).all(|i| map.contains_key(&key(i)) == (i % 2 == 1)),
        "lookup after removes"
    );
    println!(
        "  {N} inserts, lookups, in-order walk, {} removes: ok (heap in use at the peak: {} KiB)",
        N / 2,
        in_use / 1024
    );
    Ok(())
}

fn test_aligned() -> Outcome {
    let mut blocks: Vec<(*mut u8, Layout, usize)> = Vec::new();
    for shift in 3..=12 {
        let align = 1usize << shift;
        for size in [1, align / 2 + 1, align, 2 * align, 3 * align + 5] {
            let layout = Layout::from_size_align(size, align).map_err(|e| e.to_string())?;
            // SAFETY: the layout has a non-zero size.
            let p = unsafe { alloc(layout) };
            ensure!(
                !p.is_null(),
                "alloc of {size} bytes aligned to {align} failed"
            );
            ensure!(
                (p as usize).is_multiple_of(align),
                "{p:p} is not aligned to {align}"
            );
            let seed = blocks.len();
            // SAFETY: `p` is a fresh block of `size` bytes.
            unsafe { fill(p, size, seed) };
            blocks.push((p, layout, seed));
        }
    }
    let count = blocks.len();
    for (p, layout, seed) in blocks {
        // SAFETY: the block is live and was filled with `layout.size()` bytes.
        let intact = unsafe { holds(p, layout.size(), seed) };
        // SAFETY: `p` came from `alloc` with this layout and is freed once.
        unsafe { dealloc(p, layout) };
        ensure!(intact, "block {p:p} ({layout:?}) was overwritten");
    }
    let mut page = Box::new(Page([0; 4096]));
    page.0
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = pattern(4096, i));
    ensure!(
        (&*page as *const Page as usize).is_multiple_of(4096),
        "Box<Page> is not 4 KiB aligned"
    );
    ensure!(
        page.0
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(4096, i)),
        "Box<Page> lost its pattern"
    );
    println!(
        "  {count} blocks aligned to 8..4096 bytes, all patterns intact, plus a Box<Page>: ok"
    );
    Ok(())
}

/// A page-aligned page.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

fn test_realloc_in_place() -> Outcome {
    let small = Layout::from_size_align(256, 8).map_err(|e| e.to_string())?;
    let gap = Layout::from_size_align(4096, 8).map_err(|e| e.to_string())?;
    let fence = Layout::from_size_align(64, 8).map_err(|e| e.to_string())?;
    // Find three blocks carved one after the other: `a`, then `b` right after
    // it (so that freeing `b` leaves free space right after `a`), then `c`.
    // Blocks from earlier attempts fill holes and are freed at the end.
    // Cached 256-byte blocks (quick lists) sit wherever earlier tests freed
    // them: give them back first, so that `a` is carved from the free lists.
    let flushed = HEAP.heap(0).lock().flush_quick_lists();
    ensure!(flushed.is_ok(), "flush_quick_lists: {:?}", flushed);
    let mut held: Vec<(*mut u8, Layout)> = Vec::with_capacity(3 * 64);
    let mut found = None;
    for _ in 0..64 {
        // SAFETY: the layouts have non-zero sizes.
        let (a, b, c) = unsafe { (alloc(small), alloc(gap), alloc(fence)) };
        ensure!(!a.is_null() && !b.is_null() && !c.is_null(), "alloc failed");
        let distance = (b as usize).wrapping_sub(a as usize);
        if (256..=256 + 64).contains(&distance) {
            found = Some((a, b, c));
            break;
        }
        held.extend([(a, small), (b, gap), (c, fence)]);
    }
    let Some((a, b, c)) = found else {
        return Err("no two consecutive blocks in 64 attempts".to_string());
    };
    // SAFETY: `a` is a live block of 256 bytes.
    unsafe { fill(a, 256, 1) };
    // SAFETY: `b` came from `alloc(gap)` and is freed once.
    unsafe { dealloc(b, gap) };
    let before = HEAP.heap(0).lock().stats().in_place_reallocations;

    // SAFETY: `a` is live with layout `small`; the new size is non-zero.
    let grown = unsafe { realloc(a, small, 2048) };
    ensure!(!grown.is_null(), "realloc to 2048 failed");
    ensure!(grown == a, "grew from {a:p} to {grown:p}: moved");
    // SAFETY: `grown` is a live block of 2048 bytes whose first 256 are kept.
    ensure!(unsafe { holds(grown, 256, 1) }, "data lost while growing");
    // SAFETY: as above.
    unsafe { fill(grown, 2048, 2) };

    let grown_layout = Layout::from_size_align(2048, 8).map_err(|e| e.to_string())?;
    // SAFETY: `grown` is live with layout `grown_layout`; 128 is non-zero.
    let shrunk = unsafe { realloc(grown, grown_layout, 128) };
    ensure!(
        shrunk == grown,
        "shrank from {grown:p} to {shrunk:p}: moved"
    );
    // SAFETY: `shrunk` is a live block of 128 bytes, kept from the pattern.
    let intact = unsafe { holds(shrunk, 128, 2) };
    ensure!(intact, "data lost while shrinking");
    let after = HEAP.heap(0).lock().stats().in_place_reallocations;
    ensure!(
        after >= before + 2,
        "in-place counter went from {before} to {after}"
    );

    let shrunk_layout = Layout::from_size_align(128, 8).map_err(|e| e.to_string())?;
    // SAFETY: each block is live with its layout and freed once.
    unsafe {
        dealloc(shrunk, shrunk_layout);
        dealloc(c, fence);
        for (p, layout) in held {
            dealloc(p, layout);
        }
    }
    println!("  256 -> 2048 -> 128 bytes at {a:p} without moving, data kept: ok");
    Ok(())
}

fn test_try_reserve() -> Outcome {
    let before = HEAP.heap(0).lock().stats();
    let growth = GROWTH.stats();
    // More than the heap holds and the growth pool could add: the heap
    // fails, asks the hook, and the hook refuses.
    let too_big = before.total_bytes + growth.remaining + (1 << 20);
    let mut v: Vec<u8> = Vec::new();
    let refused = v.try_reserve(too_big);
    ensure!(refused.is_err(), "try_reserve({too_big}) succeeded");
    ensure!(
        GROWTH.stats().refused > growth.refused,
        "the growth hook was not asked for {too_big} bytes"
    );
    ensure!(
        HEAP.heap(0).lock().stats().failures > before.failures,
        "the heap did not count the failure"
    );
    println!(
        "  try_reserve({} MiB): {}",
        too_big >> 20,
        refused.unwrap_err()
    );
    let huge = v.try_reserve(1 << 40);
    ensure!(huge.is_err(), "try_reserve(1 TiB) succeeded");
    println!("  try_reserve(1 TiB): {}", huge.unwrap_err());
    let overflow = v.try_reserve(usize::MAX);
    ensure!(overflow.is_err(), "try_reserve(usize::MAX) succeeded");
    println!("  try_reserve(usize::MAX): {}", overflow.unwrap_err());
    let layout = Layout::from_size_align(too_big, 4096).map_err(|e| e.to_string())?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc(layout) };
    ensure!(p.is_null(), "alloc of {too_big} bytes returned {p:p}");

    let ok = v.try_reserve(1 << 20);
    ensure!(ok.is_ok(), "try_reserve(1 MiB) failed after the failures");
    v.extend((0..1 << 20).map(|i| pattern(9, i)));
    ensure!(
        v.iter().enumerate().all(|(i, &b)| b == pattern(9, i)),
        "1 MiB vector lost its pattern"
    );
    println!(
        "  alloc({} MiB) returned null; the heap still serves 1 MiB: ok",
        too_big >> 20
    );
    Ok(())
}

fn test_growth() -> Outcome {
    let grows = GROWTH.stats().grows;
    let before = HEAP.heap(0).lock().stats();
    // More than every free byte of the heap: only the growth hook can serve it.
    let bytes = before.free_bytes + (16 << 20);
    let words = bytes / 8;
    let mut v: Vec<u64> = Vec::new();
    let reserved = v.try_reserve_exact(words);
    ensure!(reserved.is_ok(), "try_reserve_exact({bytes}) failed");
    v.extend((0..words as u64).map(word));
    ensure!(
        v.iter().enumerate().all(|(i, &w)| w == word(i as u64)),
        "grown block lost its pattern"
    );
    let after = HEAP.heap(0).lock().stats();
    let growth = GROWTH.stats();
    ensure!(growth.grows > grows, "the growth hook was not called");
    ensure!(
        after.total_bytes > before.total_bytes,
        "the heap did not grow"
    );
    println!(
        "  {} MiB block (free before: {} KiB): heap grew from {} to {} KiB, {} chunk(s)",
        bytes >> 20,
        before.free_bytes / 1024,
        before.total_bytes / 1024,
        after.total_bytes / 1024,
        after.chunks
    );
    Ok(())
}

/// The grown chunk holds no live block after the growth test: a trim gives
/// it back to the growth hook, which unmaps its pages; the heap goes on and
/// grows again when it must.
fn test_trim() -> Outcome {
    let before = HEAP.heap(0).lock().stats();
    let released_before = GROWTH.stats().released;
    let given = HEAP.trim().map_err(|e| format!("trim: {e}"))?;
    let after = HEAP.heap(0).lock().stats();
    let unmapped = GROWTH.stats().released - released_before;
    ensure!(given > 0, "trim gave nothing back");
    ensure!(
        after.total_bytes == before.total_bytes - given && after.chunks < before.chunks,
        "trim gave {given} bytes, but the heap went from {} to {} bytes",
        before.total_bytes,
        after.total_bytes
    );
    ensure!(
        unmapped >= HUGE_PAGE,
        "the growth hook unmapped {unmapped} bytes"
    );
    ensure!(
        !crate::grow::is_mapped(crate::grow::WINDOW_BASE),
        "the first grown page is still mapped"
    );
    println!(
        "  gave back {} KiB in {} chunk(s); {} MiB unmapped and back in the pool",
        given >> 10,
        before.chunks - after.chunks,
        unmapped >> 20
    );
    // The heap grows again: more than every free byte.
    let bytes = after.free_bytes + (4 << 20);
    let mut v: Vec<u8> = Vec::new();
    ensure!(
        v.try_reserve_exact(bytes).is_ok(),
        "no growth after the trim"
    );
    v.resize(bytes, 0x5a);
    ensure!(
        v.iter().all(|&b| b == 0x5a),
        "regrown memory lost its pattern"
    );
    Ok(())
}
fn test_double_free() -> Outcome {
    let mut arena: Vec<u64> = vec![0; 8192];
    let mut private = Heap::new();
    // SAFETY: the arena is a live, exclusively owned buffer that outlives
    // `private` (dropped first, below) and is not touched while it is used.
    let added = unsafe { private.add_region(arena.as_mut_ptr().cast(), arena.len() * 8) };
    ensure!(added.is_ok(), "add_region: {:?}", added);
    let layout = Layout::from_size_align(100, 8).map_err(|e| e.to_string())?;
    let p = private.allocate(layout).map_err(|e| e.to_string())?;
    // SAFETY: `p` is a live block of 100 bytes.
    unsafe { fill(p.as_ptr(), 100, 3) };
    // SAFETY: `p` is a live block of `private`.
    let first = unsafe { private.free(p) };
    ensure!(first.is_ok(), "first free: {:?}", first);
    // SAFETY: `Heap::free` only requires that a *live* block be no longer
    // used; `p` is not live any more, so this second free is within the
    // contract, and the heap must detect it from the header in the arena.
    let second = unsafe { private.free(p) };
    ensure!(
        matches!(second, Err(HeapError::DoubleFree { .. })),
        "second free gave {:?}",
        second
    );
    println!("  second free detected: {}", second.unwrap_err());
    let checked = private.check();
    ensure!(checked.is_ok(), "private heap check: {:?}", checked);
    // `private` (declared after `arena`) goes out of scope first.
    Ok(())
}

/// The slab front end on a private heap: small objects from slabs, their
/// data kept, a double free and an interior free named, the slabs given
/// back once empty.
fn test_slabs() -> Outcome {
    // 2 MiB: room for a 16 KiB slab of each of the 63 classes, aligned.
    let mut arena: Vec<u64> = vec![0; 256 << 10];
    let mut private = Heap::new().with_slabs(true);
    // SAFETY: the arena is a live, exclusively owned buffer that outlives
    // `private` (dropped first, below) and is not touched while it is used.
    let added = unsafe { private.add_region(arena.as_mut_ptr().cast(), arena.len() * 8) };
    ensure!(added.is_ok(), "add_region: {:?}", added);
    let mut objects = Vec::new();
    for i in 0..600usize {
        let size = 1 + (i * 37) % 512;
        let layout = Layout::from_size_align(size, 8).map_err(|e| e.to_string())?;
        let p = private.allocate(layout).map_err(|e| e.to_string())?;
        // SAFETY: `p` is a live object of `size` bytes.
        unsafe { fill(p.as_ptr(), size, i) };
        objects.push((p, size, i));
    }
    let stats = private.stats();
    ensure!(
        stats.slabs > 0 && stats.slab_objects == 600,
        "{} slabs, {} objects",
        stats.slabs,
        stats.slab_objects
    );
    let (victim, _, _) = objects.swap_remove(7);
    // SAFETY: a live object, then freed again and freed inside: both
    // refused from the slab's bitmap, nothing changed.
    unsafe {
        ensure!(private.free(victim).is_ok(), "free");
        let again = private.free(victim);
        ensure!(
            matches!(again, Err(HeapError::DoubleFree { .. })),
            "second free gave {:?}",
            again
        );
        let inside = private.free(objects[0].0.add(8));
        ensure!(
            matches!(inside, Err(HeapError::NotBlockStart { .. })),
            "interior free gave {:?}",
            inside
        );
    }
    for (p, size, seed) in objects.drain(..) {
        // SAFETY: live objects of `size` bytes, filled above.
        ensure!(
            unsafe { holds(p.as_ptr(), size, seed) },
            "object {p:p} changed"
        );
        // SAFETY: a live object of `private`.
        let freed = unsafe { private.free(p) };
        ensure!(freed.is_ok(), "free: {:?}", freed);
    }
    let checked = private.check();
    ensure!(checked.is_ok(), "private heap check: {:?}", checked);
    let flushed = private.flush_quick_lists();
    ensure!(flushed.is_ok(), "flush: {:?}", flushed);
    let stats = private.stats();
    ensure!(
        stats.slabs == 0 && stats.in_use_bytes == 0,
        "slabs kept: {}",
        stats.slabs
    );
    println!("  600 objects in slabs, double and interior frees refused, slabs given back");
    Ok(())
}

fn test_corruption() -> Outcome {
    const HEADER: usize = 16;
    let layout = Layout::from_size_align(64, 8).map_err(|e| e.to_string())?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc(layout) };
    ensure!(!p.is_null(), "alloc failed");
    // SAFETY: `p` is a live block of 64 bytes.
    unsafe { fill(p, 64, 5) };
    let header = p.wrapping_sub(HEADER);
    // SAFETY: the 16 bytes before a block are its header, inside the heap's
    // region and readable.
    let saved = unsafe { ptr::read(header as *const [u8; HEADER]) };
    // SAFETY: the heap lock is taken right away for the check, and the bytes
    // are restored before any other heap call; nothing else runs meanwhile
    // (one CPU, interrupts off).
    unsafe { ptr::write(header as *mut [u8; HEADER], [0xA5; HEADER]) };
    let detected = HEAP.heap(0).lock().check();
    // SAFETY: puts back the header saved above.
    unsafe { ptr::write(header as *mut [u8; HEADER], saved) };
    ensure!(
        matches!(detected, Err(HeapError::Corrupted { .. })),
        "check() after overwriting the header of {p:p} gave {:?}",
        detected
    );
    println!("  header of {p:p} overwritten: {}", detected.unwrap_err());
    let restored = HEAP.heap(0).lock().check();
    ensure!(restored.is_ok(), "check after restoring: {:?}", restored);
    // SAFETY: `p` is live with its pattern of 64 bytes.
    ensure!(unsafe { holds(p, 64, 5) }, "data lost");
    // SAFETY: `p` came from `alloc(layout)` and is freed once.
    unsafe { dealloc(p, layout) };
    println!("  header restored: check ok, block freed");
    Ok(())
}
