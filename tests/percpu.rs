//! `PerCpuHeap` under threads that play CPUs: allocation from the own
//! heap, fallback to the others when it is busy or full, frees from any
//! CPU to the owning heap, growth per heap, misuse reported precisely,
//! counters and statistics that add up.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;

use common::Arena;
use region_heap::{HeapError, MemorySource, PerCpuHeap, INBOX_SLOTS};

thread_local! {
    /// The CPU this test thread plays.
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn cpu_id() -> usize {
    CPU.with(Cell::get)
}

fn play_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

const ARENA: usize = if cfg!(miri) { 1 << 16 } else { 1 << 20 };

/// A heap of `N` CPUs, each given its own arena.
fn heap_over<const N: usize>(arenas: &[Arena]) -> PerCpuHeap<N> {
    let heap = PerCpuHeap::new(cpu_id);
    for (cpu, arena) in arenas.iter().enumerate() {
        // SAFETY: each arena outlives the heap and is given to one heap.
        unsafe { heap.add_memory(cpu, arena.ptr, arena.len()) }.unwrap();
    }
    heap
}

fn arenas(n: usize, size: usize) -> Vec<Arena> {
    (0..n).map(|_| Arena::new(size)).collect()
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Which CPU's arena holds `ptr`.
fn arena_of(arenas: &[Arena], ptr: NonNull<u8>) -> usize {
    let addr = ptr.as_ptr().addr();
    arenas
        .iter()
        .position(|a| (a.ptr.addr()..a.ptr.addr() + a.len()).contains(&addr))
        .expect("a block of the heap lies in an arena")
}

fn fill(ptr: NonNull<u8>, size: usize, seed: u8) {
    // SAFETY: a live block of at least `size` bytes, the caller's.
    unsafe { ptr.as_ptr().write_bytes(seed, size) };
}

fn holds(ptr: NonNull<u8>, size: usize, seed: u8) -> bool {
    // SAFETY: as above.
    unsafe { std::slice::from_raw_parts(ptr.as_ptr(), size) }
        .iter()
        .all(|&b| b == seed)
}

#[test]
fn each_cpu_allocates_from_its_own_heap() {
    let arenas = arenas(3, ARENA);
    let heap = heap_over::<3>(&arenas);
    for cpu in 0..3 {
        play_cpu(cpu);
        let p = heap.allocate(layout(64)).unwrap();
        assert_eq!(arena_of(&arenas, p), cpu);
        // SAFETY: a live block, no longer used.
        unsafe { heap.free(p) }.unwrap();
        assert_eq!(heap.cpu_counters(cpu).allocations, 1);
        assert_eq!(heap.cpu_counters(cpu).frees, 1);
        assert_eq!(heap.cpu_counters(cpu).remote_frees, 0);
    }
    heap.check().unwrap();
}

#[test]
fn a_busy_heap_sends_the_allocation_to_another_without_waiting() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<2>(&arenas);
    play_cpu(0);
    let held = heap.heap(0).lock();
    // Cpu 0's heap is locked (as by an interrupted holder): both paths
    // take heap 1 instead of spinning.
    let p = heap.allocate(layout(100)).unwrap();
    assert_eq!(arena_of(&arenas, p), 1);
    let q = heap.try_allocate(layout(100)).unwrap();
    assert_eq!(arena_of(&arenas, q), 1);
    let other = heap.heap(1).lock();
    assert_eq!(heap.try_allocate(layout(100)), None, "every heap is locked");
    drop(other);
    // A free whose owner is locked does not wait either, and leaves the block.
    play_cpu(1);
    let r = heap.allocate(layout(100)).unwrap();
    let on_zero = {
        drop(held);
        play_cpu(0);
        heap.allocate(layout(100)).unwrap()
    };
    assert_eq!(arena_of(&arenas, on_zero), 0);
    let held = heap.heap(0).lock();
    // SAFETY: live blocks, no longer used.
    assert!(unsafe { heap.try_free(on_zero) }.is_none());
    drop(held);
    for block in [p, q, r, on_zero] {
        // SAFETY: as above.
        unsafe { heap.free(block) }.unwrap();
    }
    heap.check().unwrap();
    assert_eq!(heap.stats().used_blocks, 0);
}

#[test]
fn a_full_heap_sends_the_allocation_to_another() {
    let mut arenas = arenas(1, 8192);
    arenas.push(Arena::new(ARENA));
    let heap = heap_over::<2>(&arenas);
    play_cpu(0);
    let blocks: Vec<_> = (0..64)
        .map(|_| heap.allocate(layout(512)).unwrap())
        .collect();
    let served: Vec<_> = blocks.iter().map(|&p| arena_of(&arenas, p)).collect();
    assert!(served.contains(&0) && served.contains(&1), "{served:?}");
    for p in blocks {
        // SAFETY: live blocks, no longer used.
        unsafe { heap.free(p) }.unwrap();
    }
    let counters = heap.cpu_counters(0);
    assert_eq!((counters.allocations, counters.frees), (64, 64));
    let from_heap_1 = served.iter().filter(|&&h| h == 1).count() as u64;
    assert_eq!(
        counters.remote_frees, from_heap_1,
        "frees of heap 1's blocks by cpu 0"
    );
}

/// Hands out fresh arenas and keeps them until the test ends.
struct Arenas {
    given: Mutex<Vec<Arena>>,
    grows: AtomicUsize,
}

// SAFETY: every range is a fresh arena, used by nothing else and freed
// only when the source is dropped, after the heap that used it.
unsafe impl MemorySource for Arenas {
    fn grow(&self, min_size: usize) -> Option<(NonNull<u8>, usize)> {
        let arena = Arena::new(min_size.max(1 << 14).next_multiple_of(4096));
        let range = (NonNull::new(arena.ptr)?, arena.len());
        self.given.lock().unwrap().push(arena);
        self.grows.fetch_add(1, Ordering::Relaxed);
        Some(range)
    }
}

#[test]
fn misuse_is_reported_precisely_whichever_cpu_frees() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<2>(&arenas);
    play_cpu(0);
    let keep = heap.allocate(layout(200)).unwrap();
    fill(keep, 200, 0x5E);
    let p = heap.allocate(layout(200)).unwrap();
    let addr = p.as_ptr().addr();
    play_cpu(1);
    // SAFETY: a live block, no longer used.
    assert_eq!(unsafe { heap.free(p) }.map(|_| ()), Ok(()));
    // A second free, from either CPU.
    for cpu in [1, 0] {
        play_cpu(cpu);
        // SAFETY: a double free: the word before `p` is heap memory that no
        // other thread writes meanwhile.
        assert_eq!(unsafe { heap.free(p) }, Err(HeapError::DoubleFree { addr }));
    }
    // An interior pointer of a live block.
    let inner = NonNull::new(keep.as_ptr().wrapping_add(16)).unwrap();
    // SAFETY: the word before `inner` lies in `keep`, readable.
    assert_eq!(
        unsafe { heap.free(inner) },
        Err(HeapError::NotBlockStart {
            addr: inner.as_ptr().addr()
        })
    );
    // A pointer of another allocator.
    let foreign = Box::new([7u64; 8]);
    let f = NonNull::new(foreign.as_ptr().wrapping_add(2) as *mut u8).unwrap();
    // SAFETY: the word before `f` is in the box.
    assert_eq!(
        unsafe { heap.free(f) },
        Err(HeapError::NotFromHeap {
            addr: f.as_ptr().addr()
        })
    );
    assert!(holds(keep, 200, 0x5E), "the live block is intact");
    assert_eq!(*foreign, [7; 8]);
    // SAFETY: a live block, no longer used.
    unsafe { heap.free(keep) }.unwrap();
    heap.check().unwrap();
    assert_eq!(heap.stats().used_blocks, 0);
}

#[test]
fn a_forged_owner_word_cannot_steer_a_free() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<2>(&arenas);
    play_cpu(0);
    let a = heap.allocate(layout(64)).unwrap();
    play_cpu(1);
    let b = heap.allocate(layout(256)).unwrap();
    // Teach the region table both regions.
    let (a2, b2) = (heap.allocate(layout(64)).unwrap(), {
        play_cpu(0);
        heap.allocate(layout(64)).unwrap()
    });
    // SAFETY: live blocks, no longer used.
    unsafe {
        heap.free(a2).unwrap();
        heap.free(b2).unwrap();
    }
    // A buffer in cpu 1's block whose words look like a header naming cpu
    // 0's region: a free of a pointer into it goes to heap 0 by the table,
    // which does not span it, and is then refused precisely by heap 1.
    // SAFETY: `a` is a live block: its owner word is readable.
    let owner = unsafe { region_heap::raw::owner_word(a.as_ptr()) };
    let fake = NonNull::new(b.as_ptr().wrapping_add(128)).unwrap();
    // SAFETY: `b` holds 256 writable bytes, and the owner word of `fake`
    // lies at most `DATA_OFFSET` bytes before it, inside `b`.
    unsafe {
        fake.as_ptr()
            .sub(region_heap::raw::OWNER_OFFSET)
            .cast::<usize>()
            .write(owner)
    };
    // SAFETY: the word before `fake` lies in `b`.
    let result = unsafe { heap.free(fake) };
    assert_eq!(
        result,
        Err(HeapError::NotBlockStart {
            addr: fake.as_ptr().addr()
        })
    );
    // SAFETY: live blocks, no longer used.
    unsafe {
        heap.free(a).unwrap();
        heap.free(b).unwrap();
    }
    heap.check().unwrap();
}

/// A block handed to another thread: its pointer, size and fill byte.
struct Handed(NonNull<u8>, usize, u8);

// SAFETY: the block is handed over whole: the sender never touches it again.
unsafe impl Send for Handed {}

#[test]
fn cpus_hand_blocks_to_each_other_and_everything_adds_up() {
    const CPUS: usize = 4;
    let rounds = if cfg!(miri) { 20 } else { 5_000 };
    let arenas = arenas(CPUS, ARENA * 4);
    let heap = heap_over::<CPUS>(&arenas);
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..CPUS).map(|_| mpsc::channel::<Handed>()).unzip();
    // Each thread counts the frees it makes of blocks outside its own
    // heap's arena: what its `remote_frees` counter must say exactly.
    let spans: Vec<std::ops::Range<usize>> = arenas
        .iter()
        .map(|a| a.ptr.addr()..a.ptr.addr() + a.len())
        .collect();
    let remote: Vec<u64> = std::thread::scope(|s| {
        let threads: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(cpu, inbox)| {
                let senders = senders.clone();
                let (heap, own) = (&heap, spans[cpu].clone());
                s.spawn(move || {
                    play_cpu(cpu);
                    let mut remote = 0;
                    let mut free = |p: NonNull<u8>| {
                        remote += u64::from(!own.contains(&p.as_ptr().addr()));
                        // SAFETY: a live block this thread owns, no longer used.
                        unsafe { heap.free(p) }.unwrap();
                    };
                    for i in 0..rounds {
                        let size = 16 + (i * 37 + cpu * 101) % 700;
                        let seed = (i + cpu) as u8;
                        let p = heap.allocate(layout(size)).unwrap();
                        fill(p, size, seed);
                        // Every other block goes to the next CPU.
                        if i % 2 == 0 {
                            senders[(cpu + 1) % CPUS]
                                .send(Handed(p, size, seed))
                                .unwrap();
                        } else {
                            assert!(holds(p, size, seed));
                            free(p);
                        }
                        while let Ok(Handed(p, size, seed)) = inbox.try_recv() {
                            assert!(holds(p, size, seed), "a received block is intact");
                            free(p);
                        }
                    }
                    drop(senders);
                    for Handed(p, size, seed) in inbox {
                        assert!(holds(p, size, seed));
                        free(p);
                    }
                    remote
                })
            })
            .collect();
        drop(senders);
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    heap.check().unwrap();
    let stats = heap.stats();
    assert_eq!(stats.used_blocks, 0, "no leak");
    let total: Vec<_> = (0..CPUS).map(|c| heap.cpu_counters(c)).collect();
    let allocations: u64 = total.iter().map(|c| c.allocations).sum();
    let frees: u64 = total.iter().map(|c| c.frees).sum();
    assert_eq!(allocations, (CPUS * rounds) as u64);
    assert_eq!(frees, allocations);
    assert_eq!(stats.allocations, allocations, "the heaps count the same");
    assert_eq!(stats.frees, frees);
    for (cpu, c) in total.iter().enumerate() {
        // Half its frees are of blocks another CPU allocated, from that
        // CPU's heap unless it fell back to another (how often depends on
        // the machine's load): the counter says exactly how many frees
        // went to another heap, and there are some.
        assert_eq!(
            c.remote_frees, remote[cpu],
            "cpu {cpu} counted its frees to other heaps: {c:?}"
        );
        assert!(c.remote_frees > 0, "cpu {cpu} freed remotely: {c:?}");
    }
}

static REPORTS: Mutex<Vec<HeapError>> = Mutex::new(Vec::new());

fn record(error: &HeapError) {
    REPORTS.lock().unwrap().push(*error);
}

#[test]
fn global_alloc_paths_reallocate_in_the_owner_and_report_misuse() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<2>(&arenas);
    heap.set_report_handler(record);
    play_cpu(0);
    // SAFETY: GlobalAlloc calls with valid layouts on blocks of this heap.
    unsafe {
        let p = heap.alloc(layout(100));
        assert!(!p.is_null());
        p.write_bytes(0x3C, 100);
        play_cpu(1);
        let q = heap.realloc(p, layout(100), 3000);
        assert!(!q.is_null());
        let q = NonNull::new(q).unwrap();
        assert_eq!(
            arena_of(&arenas, q),
            0,
            "the block stays in its owner's heap"
        );
        assert!(holds(q, 100, 0x3C));
        // CPU 1 frees heap 0's block twice: both frees wait in heap 0's
        // inbox, and heap 0 reports the second when it next takes its lock.
        heap.dealloc(q.as_ptr(), layout(3000));
        heap.dealloc(q.as_ptr(), layout(3000));
        assert_eq!(heap.cpu_counters(1).remote_frees, 2);
        assert!(REPORTS.lock().unwrap().is_empty(), "not done yet");
        assert_eq!(heap.heap(0).stats().in_use_bytes, 0, "done first");
        let addr = q.as_ptr().addr();
        assert_eq!(*REPORTS.lock().unwrap(), [HeapError::DoubleFree { addr }]);
    }
    heap.check().unwrap();
}

static INBOX_REPORTS: Mutex<Vec<HeapError>> = Mutex::new(Vec::new());

fn record_inbox(error: &HeapError) {
    INBOX_REPORTS.lock().unwrap().push(*error);
}

/// A block freed remotely waits in its owner's inbox; the owner's next
/// lock holder frees it before anything else, so a second free of it from
/// the owner's own CPU is reported as a double free, never taken for the
/// free of a block handed out again.
#[test]
fn a_free_left_in_the_inbox_is_done_before_the_owner_goes_on() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<2>(&arenas);
    heap.set_report_handler(record_inbox);
    play_cpu(0);
    // SAFETY: GlobalAlloc calls with valid layouts; the double free is
    // the misuse under test, on memory the heap still owns.
    unsafe {
        let p = heap.alloc(layout(48));
        let witness = NonNull::new(heap.alloc(layout(48))).unwrap();
        fill(witness, 48, 0x5A);
        play_cpu(1);
        heap.dealloc(p, layout(48));
        assert_eq!(heap.cpu_counters(1).remote_frees, 1);
        play_cpu(0);
        // The buggy program frees it again on its owner's CPU.
        heap.dealloc(p, layout(48));
        let addr = p.addr();
        assert_eq!(
            *INBOX_REPORTS.lock().unwrap(),
            [HeapError::DoubleFree { addr }]
        );
        let q = heap.alloc(layout(48));
        assert_eq!(q, p, "freed once, handed out once");
        assert!(holds(witness, 48, 0x5A));
        heap.dealloc(q, layout(48));
        heap.dealloc(witness.as_ptr(), layout(48));
    }
    heap.check().unwrap();
    assert_eq!(heap.stats().used_blocks, 0);
}

/// A free left in the inbox is done before a `try_` call on the owner goes
/// on, too (the path of interrupt handlers): the owner's `try_free` of the
/// same block is a double free.
#[test]
fn try_free_meets_the_free_left_in_the_inbox() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<2>(&arenas);
    play_cpu(0);
    // SAFETY: GlobalAlloc calls with valid layouts; the second free is the
    // misuse under test, on memory the heap still owns.
    unsafe {
        let p = heap.alloc(layout(48));
        play_cpu(1);
        heap.dealloc(p, layout(48));
        play_cpu(0);
        let ptr = NonNull::new(p).unwrap();
        let addr = p.addr();
        assert_eq!(
            heap.try_free(ptr),
            Some(Err(HeapError::DoubleFree { addr }))
        );
    }
    assert_eq!(heap.stats().used_blocks, 0);
    heap.check().unwrap();
}

/// Past `INBOX_SLOTS` waiting frees, a remote free takes the owner's lock
/// (it waits for it): every free is done once the owner's lock is free.
#[test]
fn a_full_inbox_sends_the_free_to_the_owners_lock() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<2>(&arenas);
    play_cpu(0);
    let blocks: Vec<Handed> = (0..INBOX_SLOTS + 8)
        // SAFETY: a valid layout.
        .map(|_| {
            Handed(
                NonNull::new(unsafe { heap.alloc(layout(64)) }).unwrap(),
                64,
                0,
            )
        })
        .collect();
    let n = blocks.len();
    let held = heap.heap(0).lock();
    std::thread::scope(|s| {
        let heap = &heap;
        let freeing = s.spawn(move || {
            play_cpu(1);
            for b in &blocks {
                // SAFETY: live blocks of heap 0, given up.
                unsafe { heap.dealloc(b.0.as_ptr(), layout(64)) };
            }
        });
        // The first INBOX_SLOTS frees wait in the inbox; the next one
        // waits for heap 0's lock, held here.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while heap.cpu_counters(1).remote_frees < INBOX_SLOTS as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "remote frees wait for the owner's lock instead of its inbox"
            );
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(heap.cpu_counters(1).remote_frees, INBOX_SLOTS as u64);
        assert_eq!(held.stats().used_blocks, n, "none done yet");
        drop(held);
        freeing.join().unwrap();
    });
    assert_eq!(heap.cpu_counters(1).remote_frees, n as u64);
    assert_eq!(heap.stats().used_blocks, 0);
    heap.check().unwrap();
}

// Regressions of the review of the first PerCpuHeap (2026-12-06).

/// Heap 0 holds `[A, A+S)` and `[A+2S, A+3S)` (one region, two chunks),
/// heap 1 `[A+S, A+2S)`: heap 0's region spans heap 1's chunk.
fn interleaved(arena: &Arena) -> PerCpuHeap<2> {
    const S: usize = 64 << 10;
    let heap = PerCpuHeap::new(cpu_id);
    // SAFETY: three disjoint thirds of the arena, each given to one heap.
    unsafe {
        heap.add_memory(0, arena.ptr, S).unwrap();
        heap.add_memory(1, arena.ptr.add(S), S).unwrap();
        heap.add_memory(0, arena.ptr.add(2 * S), S).unwrap();
    }
    assert_eq!(heap.heap(0).stats().regions, 1);
    heap
}

/// An underrun that overwrites a block's owner word, with zeros, ones, or
/// a plausible pointer (heap 0's region, as a used or a free block would
/// name it): whichever CPU frees the block, the free gets exactly the
/// error the owning heap gives, the misuse is counted (and quarantined) by
/// that heap only, and the other live blocks keep their bytes.
#[test]
fn damage_in_interleaved_memory_is_reported_and_quarantined_by_its_owner() {
    play_cpu(0);
    let region_0 = {
        let arena = Arena::new(3 * (64 << 10));
        let heap = interleaved(&arena);
        let a = heap.allocate(layout(64)).unwrap();
        // SAFETY: a live block: its owner word is readable.
        region_heap::raw::owner_region(unsafe { region_heap::raw::owner_word(a.as_ptr()) })
            .wrapping_sub(arena.ptr.addr())
    };
    for (value, freeing_cpu) in [(0, 1), (!0, 0), (region_0, 1), (region_0 | 3, 0)] {
        let arena = Arena::new(3 * (64 << 10));
        let heap = interleaved(&arena);
        // The same offset in this arena: heap 0's region address.
        let value = if value == 0 || value == !0 {
            value
        } else {
            value.wrapping_add(arena.ptr.addr())
        };
        play_cpu(1);
        let x = heap.allocate(layout(64)).unwrap();
        fill(x, 64, 0x3C);
        let y = heap.allocate(layout(64)).unwrap();
        // SAFETY: the word lies in y's header, in the arena.
        unsafe {
            y.as_ptr()
                .sub(region_heap::raw::OWNER_OFFSET)
                .cast::<usize>()
                .write(value)
        };
        // SAFETY: `usable_size` validates without dereferencing outside.
        let owner_says = unsafe { heap.heap(1).lock().usable_size(y) };
        assert!(
            matches!(owner_says, Err(HeapError::Corrupted { .. })),
            "{value:#x}: {owner_says:?}"
        );
        play_cpu(freeing_cpu);
        // SAFETY: the word before `y` is arena memory no thread writes.
        assert_eq!(unsafe { heap.free(y) }, owner_says.map(|_| 0), "{value:#x}");
        let misuses = [0, 1].map(|i| heap.heap(i).stats().misuses);
        assert_eq!(misuses, [0, 1], "{value:#x}: counted by heap 1 only");
        assert!(holds(x, 64, 0x3C), "{value:#x}: the live block is intact");
        heap.check().unwrap();
    }
}

#[test]
fn a_forged_owner_word_in_interleaved_memory_is_refused_by_the_right_heap() {
    let arena = Arena::new(3 * (64 << 10));
    let heap = interleaved(&arena);
    play_cpu(0);
    let a = heap.allocate(layout(64)).unwrap();
    play_cpu(1);
    let b = heap.allocate(layout(256)).unwrap();
    // SAFETY: `a` is live: its owner word is readable.
    let owner = unsafe { region_heap::raw::owner_word(a.as_ptr()) };
    let fake = NonNull::new(b.as_ptr().wrapping_add(128)).unwrap();
    // SAFETY: the word lies inside `b`.
    unsafe {
        fake.as_ptr()
            .sub(region_heap::raw::OWNER_OFFSET)
            .cast::<usize>()
            .write(owner)
    };
    let addr = fake.as_ptr().addr();
    // SAFETY: the word before `fake` lies in `b`.
    assert_eq!(
        unsafe { heap.free(fake) },
        Err(HeapError::NotBlockStart { addr })
    );
    let misuses = [0, 1].map(|i| heap.heap(i).stats().misuses);
    assert_eq!(misuses, [0, 1], "the misuse is heap 1's, whose block it is");
}

/// Each CPU's empty heap grows through the source (not taking another
/// heap's room), and a block freed by another CPU keeps its bytes and goes
/// back to its own heap.
#[test]
fn heaps_that_start_empty_each_grow_their_own_memory() {
    // The source must outlive the heap: `'static` by leaking is what a
    // kernel does, but Miri reports leaks, so this test's source is a
    // static that keeps its arenas until the heap is gone.
    static SOURCE: Arenas = Arenas {
        given: Mutex::new(Vec::new()),
        grows: AtomicUsize::new(0),
    };
    {
        let heap: PerCpuHeap<4> = PerCpuHeap::new(cpu_id);
        heap.set_memory_source(&SOURCE);
        let mut blocks = Vec::new();
        for cpu in 0..4 {
            play_cpu(cpu);
            for _ in 0..10 {
                let p = heap.allocate(layout(100)).unwrap();
                fill(p, 100, cpu as u8);
                blocks.push((p, cpu as u8));
            }
        }
        assert_eq!(
            SOURCE.grows.load(Ordering::Relaxed),
            4,
            "one growth per heap"
        );
        let used = [0, 1, 2, 3].map(|c| heap.heap(c).stats().used_blocks);
        assert_eq!(used, [10; 4], "each CPU served by its own heap");
        play_cpu(0);
        for (p, seed) in blocks {
            assert!(holds(p, 100, seed));
            // SAFETY: live blocks, no longer used.
            unsafe { heap.free(p) }.unwrap();
        }
        assert_eq!(heap.cpu_counters(0).remote_frees, 30);
        assert_eq!(heap.stats().used_blocks, 0);
        heap.check().unwrap();
    }
    SOURCE.given.lock().unwrap().clear();
}

#[test]
fn realloc_moves_to_another_heap_when_the_owner_is_full() {
    // Heap 0 small, heap 1 large.
    let arenas = [Arena::new(8192), Arena::new(1 << 20)];
    let heap = heap_over::<2>(&arenas);
    play_cpu(0);
    // SAFETY: GlobalAlloc calls on blocks of this heap with their layouts.
    unsafe {
        let p = NonNull::new(heap.alloc(layout(100))).unwrap();
        fill(p, 100, 0x42);
        let q = NonNull::new(heap.realloc(p.as_ptr(), layout(100), 16 << 10)).unwrap();
        assert_eq!(arena_of(&arenas, q), 1);
        assert!(holds(q, 100, 0x42), "the bytes moved with the block");
        heap.dealloc(q.as_ptr(), layout(16 << 10));
    }
    assert_eq!(heap.stats().used_blocks, 0, "the old block was freed");
    heap.check().unwrap();
}

static TRY_REPORTS: AtomicUsize = AtomicUsize::new(0);

fn count_report(_: &HeapError) {
    TRY_REPORTS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn try_allocate_never_runs_the_report_handler() {
    let arena = Arena::new(1 << 16);
    let heap: PerCpuHeap<1> = PerCpuHeap::new(cpu_id);
    // SAFETY: the arena outlives the heap.
    unsafe { heap.add_memory(0, arena.ptr, arena.len()) }.unwrap();
    heap.set_report_handler(count_report);
    play_cpu(0);
    let p = heap.allocate(layout(4000)).unwrap();
    let keep = heap.allocate(layout(64)).unwrap();
    // SAFETY: a live block, no longer used.
    unsafe { heap.free(p) }.unwrap();
    // A write after free trashes the free block's owner word.
    // SAFETY: the word lies in the arena.
    unsafe {
        p.as_ptr()
            .sub(region_heap::raw::OWNER_OFFSET)
            .cast::<usize>()
            .write(0xdead_bee0)
    };
    let _ = heap.try_allocate(layout(3000));
    assert_eq!(
        TRY_REPORTS.load(Ordering::SeqCst),
        0,
        "no handler on the never-wait path"
    );
    assert_eq!(
        heap.stats().misuses,
        1,
        "the damage is counted and quarantined"
    );
    // SAFETY: a live block, no longer used.
    unsafe { heap.free(keep) }.unwrap();
    heap.check().unwrap();
}

#[test]
fn a_heap_rebuilt_on_other_memory_does_not_leave_a_stale_owner() {
    const S: usize = 64 << 10;
    let arena = Arena::new(3 * S);
    // SAFETY: thirds of the arena.
    let (lo, mid, hi) = unsafe { (arena.ptr, arena.ptr.add(S), arena.ptr.add(2 * S)) };
    let heap: PerCpuHeap<2> = PerCpuHeap::new(cpu_id);
    play_cpu(0);
    // SAFETY: `mid` is given to heap 0 only.
    unsafe { heap.add_memory(0, mid, S) }.unwrap();
    let p = heap.allocate(layout(64)).unwrap();
    // SAFETY: a live block, no longer used.
    unsafe { heap.free(p) }.unwrap();
    // Heap 0 retired (no live block) and rebuilt elsewhere; `mid` goes to heap 1.
    *heap.heap(0).lock() = region_heap::Heap::new();
    // SAFETY: disjoint ranges, `mid` no longer used by heap 0.
    unsafe {
        heap.add_memory(0, lo, S).unwrap();
        heap.add_memory(0, hi, S).unwrap();
        heap.add_memory(1, mid, S).unwrap();
    }
    play_cpu(1);
    let q = heap.allocate(layout(64)).unwrap();
    // SAFETY: a live block, no longer used.
    assert!(unsafe { heap.free(q) }.is_ok(), "a valid free is served");
}

/// The owner word of a live block names its region: the table's key.
fn region_of(ptr: NonNull<u8>) -> usize {
    // SAFETY: a live block of the heap: its header is readable.
    region_heap::raw::owner_region(unsafe { region_heap::raw::owner_word(ptr.as_ptr()) })
}

#[test]
fn the_heap_count_is_decided_at_run_time() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<8>(&arenas);
    assert_eq!(heap.cpu_count(), 8, "every heap is in use by default");
    heap.set_cpu_count(2);
    assert_eq!(heap.cpu_count(), 2);
    // Cpu ids past the count are taken modulo it: cpu 5 allocates from
    // heap 1, cpu 6 from heap 0; no heap past the count serves.
    for (cpu, expected) in [(0, 0), (1, 1), (5, 1), (6, 0)] {
        play_cpu(cpu);
        let p = heap.allocate(layout(64)).unwrap();
        assert_eq!(arena_of(&arenas, p), expected);
        // SAFETY: a live block, no longer used.
        unsafe { heap.free(p) }.unwrap();
    }
    // Heaps 0 and 1 busy: the allocation waits for its own heap rather
    // than take an empty heap past the count (it gets it at once here,
    // since the test holds only heap 1).
    play_cpu(0);
    let held = heap.heap(1).lock();
    let p = heap.allocate(layout(64)).unwrap();
    assert_eq!(arena_of(&arenas, p), 0);
    drop(held);
    // SAFETY: as above.
    unsafe { heap.free(p) }.unwrap();
    let mut dump = String::new();
    heap.dump(&mut dump).unwrap();
    assert!(dump.contains("heap 1:") && !dump.contains("heap 2:"));
    assert_eq!(heap.stats().used_blocks, 0);
    heap.check().unwrap();
    heap.set_cpu_count(0);
    assert_eq!(heap.cpu_count(), 1, "at least one heap");
    heap.set_cpu_count(100);
    assert_eq!(heap.cpu_count(), 8, "at most CPUS");
}

#[test]
fn regions_are_known_to_the_table_from_the_start() {
    static SOURCE: Arenas = Arenas {
        given: Mutex::new(Vec::new()),
        grows: AtomicUsize::new(0),
    };
    let arenas = arenas(1, ARENA);
    let heap = heap_over::<2>(&arenas);
    heap.set_memory_source(&SOURCE);
    play_cpu(0);
    let p = heap.allocate(layout(64)).unwrap();
    assert_eq!(heap.heap_of_region(region_of(p)), Some(0), "added memory");
    // Heap 1 has no memory: its first region comes from the growth hook,
    // and is in the table before the block leaves the heap.
    play_cpu(1);
    let busy = heap.heap(0).lock();
    let q = heap.allocate(layout(64)).unwrap();
    drop(busy);
    assert_eq!(heap.heap_of_region(region_of(q)), Some(1), "grown memory");
    assert_eq!(heap.heap_of_region(region_of(q) + 16), None);
    assert_eq!(heap.heap_of_region(0), None);
    assert!(heap.knows_region(region_of(p)) && heap.knows_region(region_of(q)));
    assert!(!heap.knows_region(region_of(q) + 16));
    assert!(!heap.knows_region(0) && !heap.knows_region(1));
    // SAFETY: live blocks, no longer used.
    unsafe {
        heap.free(p).unwrap();
        heap.free(q).unwrap();
    }
    heap.check().unwrap();
    let _ = heap;
    SOURCE.given.lock().unwrap().clear();
}

#[test]
fn with_heap_starts_from_the_callers_heap_and_says_which_served() {
    let arenas = arenas(3, ARENA);
    let heap = heap_over::<3>(&arenas);
    play_cpu(0);
    let batch = |heap: &mut region_heap::Heap| {
        let mut blocks = Vec::new();
        while blocks.len() < 8 {
            blocks.push(heap.allocate(layout(48))?);
        }
        Ok(blocks)
    };
    let (blocks, served) = heap.with_heap(2, layout(48), batch).unwrap();
    assert_eq!(served, 2, "an idle starting heap serves");
    assert!(blocks.iter().all(|&p| arena_of(&arenas, p) == 2));
    assert_eq!(
        heap.cpu_counters(2).allocations,
        1,
        "a batch is one call, counted on the CPU that started it"
    );
    // A starting heap past the count is taken modulo it; a busy one
    // passes the call to the next heap that is free.
    let held = heap.heap(2).lock();
    let (p, served) = heap
        .with_heap(5, layout(100), |heap| heap.allocate(layout(100)))
        .unwrap();
    drop(held);
    assert_eq!((served, arena_of(&arenas, p)), (0, 0));
    // A request no heap can serve (not a misuse) comes back at once.
    let huge = Layout::from_size_align(isize::MAX as usize & !15, 16).unwrap();
    assert!(heap.with_heap(1, huge, |heap| heap.allocate(huge)).is_err());
    // Blocks of two heaps, interleaved, freed in one call: runs of one
    // owner share a lock; the bytes add up to what single frees return.
    let (others, _) = heap.with_heap(1, layout(48), batch).unwrap();
    let expected: usize = blocks
        .iter()
        .chain(&others)
        // SAFETY: live blocks of the heap.
        .map(|&b| unsafe { region_heap::raw::used_block_size(b.as_ptr()) }.unwrap())
        .sum();
    let mut all = blocks.iter().zip(&others).flat_map(|(a, b)| [*a, *b]);
    // SAFETY: live blocks, each freed once.
    let (bytes, result) = unsafe { heap.free_all(|| all.next()) };
    result.unwrap();
    assert_eq!(bytes, expected);
    assert_eq!(heap.cpu_counters(0).frees, 16);
    assert_eq!(heap.cpu_counters(0).remote_frees, 16, "owned by heaps 1, 2");
    // A double free stops the batch: the blocks before it are freed and
    // counted in the bytes, the error is the one `free` gives.
    let a = heap.allocate(layout(64)).unwrap();
    let mut list = [a, a, p].into_iter();
    // SAFETY: `a` is live (then freed twice: the error), `p` is live.
    let (bytes, result) = unsafe { heap.free_all(|| list.next()) };
    assert_eq!(
        result,
        Err(HeapError::DoubleFree {
            addr: a.as_ptr().addr()
        })
    );
    assert!(bytes >= 64);
    assert_eq!(list.next(), Some(p), "nothing taken past the error");
    // SAFETY: a live block, no longer used.
    unsafe { heap.free(p) }.unwrap();
    assert_eq!(heap.stats().used_blocks, 0);
    heap.check().unwrap();
}

#[test]
fn with_owner_runs_on_the_owning_heap() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<2>(&arenas);
    play_cpu(1);
    let p = heap.allocate(layout(100)).unwrap();
    play_cpu(0);
    // SAFETY: a live block; `resize_in_place` keeps it live.
    let grown = unsafe {
        heap.with_owner(p, |heap| {
            assert!(heap.in_use_bytes() > 0);
            heap.resize_in_place(p, 3000)
        })
    };
    assert_eq!(grown, Ok(Some(true)));
    assert_eq!(heap.heap(1).stats().used_blocks, 1);
    // SAFETY: as above; `usable_size` only reads.
    let usable = unsafe { heap.with_owner(p, |heap| heap.usable_size(p)) };
    assert!(usable.unwrap().unwrap() >= 3000);
    assert_eq!(heap.cpu_counters(0).frees, 0, "not a free");
    // A pointer no heap holds: the precise error.
    let foreign = Arena::new(4096);
    // SAFETY: the word before the pointer is readable (zeroed arena).
    let ptr = NonNull::new(unsafe { foreign.ptr.add(64) }).unwrap();
    // SAFETY: as above.
    let refused = unsafe { heap.with_owner(ptr, |heap| heap.usable_size(ptr)) };
    assert_eq!(
        refused,
        Err(HeapError::NotFromHeap {
            addr: ptr.as_ptr().addr()
        })
    );
    // SAFETY: a live block, no longer used.
    unsafe { heap.free(p) }.unwrap();
    heap.check().unwrap();
}

/// What a forked child does with a heap whose lock a vanished thread
/// held (simulated: a guard forgotten): the heap is abandoned for good,
/// its lock released; allocation never chooses it, its blocks are left
/// alone by frees and `with_owner`, the walks skip it, `realloc` copies
/// its block elsewhere; the other heaps go on.
#[test]
fn a_heap_whose_lock_is_held_can_be_abandoned() {
    let arenas = arenas(2, ARENA);
    let heap = heap_over::<2>(&arenas);
    play_cpu(1);
    let old = heap.allocate(layout(200)).unwrap();
    fill(old, 200, 7);
    let kept = heap.allocate(layout(200)).unwrap();
    play_cpu(0);
    let survivor = heap.allocate(layout(200)).unwrap();
    std::mem::forget(heap.heap(1).lock());
    // SAFETY: no other thread uses the heap; the "holder" never runs again.
    assert_eq!(unsafe { heap.abandon_locked_heaps() }, 1);
    assert!(heap.is_abandoned(1) && !heap.is_abandoned(0));
    assert!(heap.heap(1).try_lock().is_some(), "its lock was released");
    let used_before = heap.heap(1).stats().used_blocks;
    play_cpu(1);
    for _ in 0..4 {
        let p = heap.allocate(layout(64)).unwrap();
        assert_eq!(arena_of(&arenas, p), 0, "never from the abandoned heap");
        let (q, served) = heap
            .with_heap(1, layout(64), |heap| heap.allocate(layout(64)))
            .unwrap();
        assert_eq!((served, arena_of(&arenas, q)), (0, 0));
        // SAFETY: live blocks, no longer used.
        unsafe {
            heap.free(p).unwrap();
            heap.free(q).unwrap();
        }
    }
    // SAFETY: live blocks of the abandoned heap: left alone.
    unsafe {
        assert_eq!(heap.free(kept), Ok(0));
        assert_eq!(heap.try_free(kept), Some(Ok(0)));
        assert_eq!(
            heap.with_owner(kept, |heap| heap.usable_size(kept)),
            Ok(None)
        );
        let (bytes, result) = heap.free_all({
            let mut once = Some(kept);
            move || once.take()
        });
        assert_eq!((bytes, result), (0, Ok(())));
    }
    assert_eq!(heap.heap(1).stats().used_blocks, used_before);
    // GlobalAlloc: a realloc copies the block to a live heap.
    // SAFETY: a live block of `layout(200)`.
    let moved = unsafe { heap.realloc(old.as_ptr(), layout(200), 400) };
    let moved = NonNull::new(moved).unwrap();
    assert_eq!(arena_of(&arenas, moved), 0);
    assert!(holds(moved, 200, 7));
    // The walks visit heap 0 only.
    let mut dump = String::new();
    heap.dump(&mut dump).unwrap();
    assert!(!dump.contains("heap 1:"));
    heap.check().unwrap();
    // SAFETY: live blocks of heap 0, no longer used.
    unsafe {
        heap.free(survivor).unwrap();
        heap.free(moved).unwrap();
    }
    assert_eq!(heap.stats().used_blocks, 0);
    // Abandoned for good: a second call finds nothing more to abandon.
    // SAFETY: as above.
    assert_eq!(unsafe { heap.abandon_locked_heaps() }, 0);
    assert!(heap.is_abandoned(1));
}
