//! A std program whose `#[global_allocator]` is a `LockedHeap` over a
//! `StaticArena` (no `init`: the arena is taken on the first allocation,
//! before `main`), and the `LockedHeap` conveniences used from it: `stats`,
//! `check` and `dump` take the lock only to copy, so formatting their
//! results, which allocates from the same heap, cannot deadlock.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use region_heap::{LockedHeap, StaticArena};

static ARENA: StaticArena<{ 16 << 20 }> = StaticArena::new();

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::with_static_arena(&ARENA);

/// Runs `work` on a thread and fails the test if it does not finish within
/// 30 s. A deadlocked spin lock would also hang the panic machinery (it
/// allocates), so a timeout exits the process without allocating.
fn within_timeout(name: &'static str, work: fn()) {
    static DONE: AtomicBool = AtomicBool::new(false);
    DONE.store(false, Ordering::SeqCst);
    std::thread::spawn(move || {
        work();
        DONE.store(true, Ordering::SeqCst);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !DONE.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            let _ = std::io::stderr().write_all(name.as_bytes());
            let _ = std::io::stderr().write_all(b": deadlocked (30 s)\n");
            std::process::exit(101);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Serialises the tests: the timeout flag is shared.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn std_allocates_from_the_static_arena() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(ARENA.is_given(), "std allocated before the test ran");
    let boxed = Box::new(7u64);
    assert!(ARENA.contains(&*boxed));
    let words: Vec<String> = (0..10_000).map(|i| format!("w{i}")).collect();
    assert!(ARENA.contains(words.as_ptr()));
    assert_eq!(HEAP.stats().regions, 1);
    HEAP.check().unwrap();
}

#[test]
fn formatting_stats_does_not_deadlock() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    within_timeout("format!(\"{}\", HEAP.stats())", || {
        let table = format!("{}", HEAP.stats());
        assert!(table.contains("allocations"), "{table}");
    });
}

#[test]
fn check_and_dump_into_a_string_do_not_deadlock() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    within_timeout("HEAP.dump(&mut String)", || {
        let kept: Vec<Box<[u8; 100]>> = (0..500).map(|_| Box::new([1; 100])).collect();
        let message = format!("{:?}", HEAP.check());
        assert_eq!(message, "Ok(())");
        let mut dump = String::new();
        HEAP.dump(&mut dump).unwrap();
        assert!(dump.starts_with("region "), "{dump}");
        assert!(
            dump.contains("... cut:"),
            "500 live blocks do not fit 2 KiB"
        );
        drop(kept);
    });
}
