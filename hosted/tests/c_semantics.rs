//! The C functions of `region_heap_hosted::malloc`, called from Rust: the
//! glibc semantics (errno, NULL, overflow, alignment, realloc rules), data
//! integrity across every resize path, and threads sharing the heaps.
//!
//! The test binary's own allocations go to glibc's malloc, which uses
//! `sbrk`; the heaps here are kept off the break (`prefer_mmap`).

use region_heap_hosted::global;
use region_heap_hosted::large;
use region_heap_hosted::malloc::*;

fn setup() {
    global::prefer_mmap();
    assert!(global::ensure_init());
}

fn errno() -> i32 {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

fn clear_errno() {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = 0 };
}

fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: `len` writable bytes (the caller's block).
        unsafe { *p.add(i) = seed.wrapping_add((i % 251) as u8) };
    }
}

/// A whole block set to one byte (cheap enough for the thread tests).
fn paint(p: *mut u8, len: usize, byte: u8) {
    // SAFETY: `len` writable bytes (the caller's block).
    unsafe { core::slice::from_raw_parts_mut(p, len) }.fill(byte);
}

fn painted(p: *const u8, len: usize, byte: u8) -> bool {
    // SAFETY: `len` readable bytes.
    let bytes = unsafe { core::slice::from_raw_parts(p, len) };
    bytes.chunks(8).all(|c| c.iter().all(|&b| b == byte))
}

fn holds(p: *const u8, len: usize, seed: u8) -> bool {
    // SAFETY: `len` readable bytes.
    (0..len).all(|i| unsafe { *p.add(i) } == seed.wrapping_add((i % 251) as u8))
}

#[test]
fn malloc_zero_returns_unique_pointers() {
    setup();
    let a = malloc(0);
    let b = malloc(0);
    assert!(!a.is_null() && !b.is_null() && a != b);
    assert_eq!(a as usize % 16, 0);
    // SAFETY: live blocks of this allocator.
    unsafe {
        assert!(malloc_usable_size(a) >= 1);
        free(a);
        free(b);
        free(core::ptr::null_mut());
        assert_eq!(malloc_usable_size(core::ptr::null_mut()), 0);
    }
}

#[test]
fn impossible_sizes_fail_with_enomem() {
    setup();
    for size in [
        usize::MAX,
        usize::MAX - 4096,
        isize::MAX as usize + 1,
        1 << 62,
        1 << 50,
    ] {
        clear_errno();
        assert!(malloc(size).is_null(), "malloc({size})");
        assert_eq!(errno(), libc::ENOMEM);
    }
    clear_errno();
    assert!(calloc(1 << 33, 1 << 33).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    clear_errno();
    assert!(calloc(usize::MAX, 2).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    clear_errno();
    assert!(pvalloc(usize::MAX - 10).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    // A success leaves errno alone.
    // SAFETY: errno is this thread's.
    unsafe { *libc::__errno_location() = 1234 };
    let p = malloc(100);
    assert!(!p.is_null());
    assert_eq!(errno(), 1234);
    // SAFETY: a live block.
    unsafe { free(p) };
}

#[test]
fn calloc_zeroes_reused_memory() {
    setup();
    for size in [1, 24, 100, 1000, 2048, 5000, 100_000, 300_000, 3 << 20] {
        let dirty = malloc(size);
        fill(dirty, size, 0xa5);
        // SAFETY: a live block; the same size class comes back next.
        unsafe { free(dirty) };
        let p = calloc(size, 1);
        assert!(!p.is_null());
        // SAFETY: `size` readable bytes.
        assert!(
            (0..size).all(|i| unsafe { *p.add(i) } == 0),
            "calloc({size})"
        );
        // SAFETY: a live block.
        unsafe { free(p) };
    }
    let p = calloc(1000, 1000);
    // SAFETY: a million readable bytes.
    assert!((0..1_000_000)
        .step_by(997)
        .all(|i| unsafe { *p.add(i) } == 0));
    // SAFETY: a live block.
    unsafe { free(p) };
}

#[test]
fn realloc_keeps_data_on_every_path() {
    setup();
    // small -> small (cache), -> medium (in place or moved), -> large
    // (a mapping), -> larger (mremap), -> smaller large, -> small again.
    let sizes = [
        10,
        40,
        1500,
        3000,
        20_000,
        large::THRESHOLD + 1,
        4 << 20,
        9 << 20,
        (large::THRESHOLD / 2) + 10,
        2000,
        100,
        7,
    ];
    let mut p = malloc(sizes[0]);
    fill(p, sizes[0], 3);
    let mut valid = sizes[0];
    for &size in &sizes[1..] {
        // SAFETY: `p` is live and owned.
        let q = unsafe { realloc(p, size) };
        assert!(!q.is_null(), "realloc to {size}");
        let kept = valid.min(size);
        assert!(holds(q, kept, 3), "data kept when resizing to {size}");
        // SAFETY: a live block.
        assert!(unsafe { malloc_usable_size(q) } >= size);
        fill(q, size, 3);
        valid = size;
        p = q;
    }
    // SAFETY: a live block; realloc(p, 0) frees it and returns NULL.
    assert!(unsafe { realloc(p, 0) }.is_null());
    // SAFETY: realloc(NULL, n) is malloc(n).
    let fresh = unsafe { realloc(core::ptr::null_mut(), 64) };
    assert!(!fresh.is_null());
    // SAFETY: a live block.
    unsafe { free(fresh) };
}

#[test]
fn failed_reallocs_leave_the_block_alone() {
    setup();
    let p = malloc(200);
    fill(p, 200, 9);
    clear_errno();
    // SAFETY: `p` is live; the request is impossible.
    assert!(unsafe { realloc(p, usize::MAX / 2) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    clear_errno();
    // SAFETY: as above; the product overflows.
    assert!(unsafe { reallocarray(p, usize::MAX / 2, 3) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    assert!(holds(p, 200, 9));
    // SAFETY: `p` is live.
    let q = unsafe { reallocarray(p, 100, 4) };
    assert!(!q.is_null() && holds(q, 200, 9));
    // SAFETY: a live block.
    unsafe { free(q) };
}

#[test]
fn alignment_rules_follow_glibc() {
    setup();
    let mut out = 0x1234 as *mut u8;
    for bad in [0, 3, 4, 12, 24, 100] {
        // SAFETY: `out` is writable.
        assert_eq!(
            unsafe { posix_memalign(&mut out, bad, 10) },
            libc::EINVAL,
            "{bad}"
        );
        assert_eq!(out as usize, 0x1234, "left alone on EINVAL");
    }
    // SAFETY: as above.
    assert_eq!(
        unsafe { posix_memalign(&mut out, 64, usize::MAX - 8) },
        libc::ENOMEM
    );
    for shift in 3..=22 {
        let align = 1usize << shift;
        for size in [0, 1, 100, 5000, 300_000] {
            // SAFETY: `out` is writable.
            assert_eq!(unsafe { posix_memalign(&mut out, align, size) }, 0);
            assert_eq!(out as usize % align, 0);
            fill(out, size, shift as u8);
            let b = aligned_alloc(align, size);
            assert_eq!(b as usize % align, 0);
            fill(b, size, 1);
            assert!(holds(out, size, shift as u8));
            // SAFETY: live blocks.
            unsafe {
                assert!(malloc_usable_size(out) >= size);
                free(out);
                free(b);
            }
        }
    }
    clear_errno();
    assert!(aligned_alloc(24, 48).is_null());
    assert_eq!(errno(), libc::EINVAL);
    clear_errno();
    assert!(memalign(usize::MAX / 2 + 2, 48).is_null());
    assert_eq!(errno(), libc::EINVAL);
    let m = memalign(48, 10);
    assert_eq!(m as usize % 64, 0, "rounded up to a power of two");
    let page = 4096;
    let v = valloc(10);
    let pv = pvalloc(10);
    assert_eq!((v as usize % page, pv as usize % page), (0, 0));
    // SAFETY: live blocks.
    unsafe {
        assert!(malloc_usable_size(pv) >= page);
        free(m);
        free(v);
        free(pv);
    }
}

#[test]
fn usable_size_covers_the_request() {
    setup();
    let mut live = Vec::new();
    for size in (0..5000).step_by(7).chain([large::THRESHOLD, 1 << 20]) {
        let p = malloc(size);
        // SAFETY: a live block.
        let usable = unsafe { malloc_usable_size(p) };
        // A large block may reuse a cached range with an unsplit tail. A
        // cached block is at least its bin's size and less than the next
        // bin's: above 2 KiB a bin step is at most a quarter, so a request
        // may get up to about 1.25 x 1.25 its size (the 2 KiB bin holds
        // blocks up to the 2.5 KiB bin's size).
        let slack = if size >= large::THRESHOLD {
            (size / 8).max(large::SPLIT_MIN) + 8192
        } else if size > region_heap_hosted::tcache::EXACT_MAX - 64 {
            size * 9 / 16 + 64
        } else {
            64
        };
        assert!(usable >= size && usable < size + slack, "{size}: {usable}");
        fill(p, usable, size as u8);
        live.push((p, usable, size as u8));
    }
    for (p, usable, seed) in live {
        assert!(holds(p, usable, seed), "neighbours untouched");
        // SAFETY: a live block.
        unsafe { free(p) };
    }
}

#[test]
fn threads_share_heaps_and_free_each_others_blocks() {
    setup();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, usize, u8)>();
    let producers: Vec<_> = (0..4u8)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9u32 ^ t as u32;
                let mut mine = Vec::new();
                for i in 0..12_000u32 {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let size = match seed % 1000 {
                        0..=2 => 100_000 + (seed as usize % 400_000),
                        3..=60 => 2048 + (seed as usize % 20_000),
                        _ => 1 + (seed as usize % 600),
                    };
                    let p = malloc(size);
                    let tag = (i as u8).wrapping_mul(7) ^ t;
                    paint(p, size, tag);
                    if i % 3 == 0 {
                        tx.send((p as usize, size, tag)).unwrap();
                    } else {
                        mine.push((p, size, tag));
                    }
                    if mine.len() > 200 {
                        let (q, n, s) = mine.swap_remove((seed as usize) % mine.len());
                        assert!(painted(q, n, s));
                        // SAFETY: a live block of this thread.
                        unsafe { free(q) };
                    }
                }
                for (q, n, s) in mine {
                    assert!(painted(q, n, s));
                    // SAFETY: live blocks.
                    unsafe { free(q) };
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for (p, size, tag) in rx {
            assert!(
                painted(p as *const u8, size, tag),
                "block from another thread intact"
            );
            // SAFETY: a live block another thread allocated.
            unsafe { free(p as *mut u8) };
            n += 1;
        }
        n
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 4 * 4000);
    global::for_each_heap(|_, heap| heap.check().unwrap());
}

#[test]
fn counters_count_every_call() {
    setup();
    let before = get_stat();
    let mut ptrs = Vec::new();
    for i in 0..100 {
        ptrs.push(malloc(i * 10));
    }
    for p in &mut ptrs {
        // SAFETY: live blocks.
        *p = unsafe { realloc(*p, 3000) };
    }
    let c = calloc(10, 10);
    for p in ptrs {
        // SAFETY: live blocks.
        unsafe { free(p) };
    }
    // SAFETY: a live block.
    unsafe { free(c) };
    let after = get_stat();
    assert!(after.malloc >= before.malloc + 100);
    assert!(after.realloc >= before.realloc + 100);
    assert!(after.calloc > before.calloc);
    assert!(after.free >= before.free + 101);
    if region_heap::raw::EXACT_USABLE {
        // The thread cache is on (it is off with the core's guard zones).
        assert!(after.recycled > before.recycled, "freed blocks came back");
    }
    assert!(after.mmap >= 1, "the preallocation is a mapping here");
}
