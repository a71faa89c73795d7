//! Adversarial tests: the heap under the misuses of a buggy program.
//!
//! Every test drives the one interpreter of `common/adversary.rs` (see its
//! docs for the invariants: live data unchanged, new blocks aligned, inside
//! the heap and disjoint from live ones, canaries intact, double and
//! interior frees refused, no error before damage). On top of them:
//! - `programs_without_misuse_keep_the_invariants` (proptest) shows the
//!   interpreter sound: ordinary programs see no damage and no error;
//! - `random_programs_with_misuses` (proptest) mixes misuses into random
//!   sequences, and `decoded_bytes` replays random bytes as the fuzz target
//!   does; with `crc`, damage to metadata must be detected by the end;
//! - `sweep` sets a scene per neighbour kind (used, free, cached), overruns
//!   into the neighbour by 1..=32 bytes or writes after free at offsets
//!   0..=32, with each value, runs a fixed follow-up and prints a tally
//!   (`--nocapture`); every case must keep the invariants, and in every
//!   build every case that changed metadata must be detected;
//! - `fuzz_regressions` replays every file of `fuzz/regressions/` (under Miri,
//!   those of at most 64 bytes: longer ones take Miri tens of minutes);
//! - `check_stays_out_of_the_gap_between_chunks`: a free-list link pointing
//!   into the gap between two chunks of a region is reported by `check()`,
//!   not followed.

#[path = "common/adversary.rs"]
mod adversary;
mod common;

use std::alloc::Layout;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Once;
use std::time::Duration;

use adversary::{describe, Adversary, Op, Outcome, Value};
use common::Arena;
use proptest::prelude::*;
use region_heap::{Heap, HeapError, BLOCK_OVERHEAD, GRANULE, GUARD_SIZE, HEADER_SIZE};

/// Aborts the test binary when no operation completes for two minutes: a
/// heap that loops on a damaged list must fail the run, not hang it.
fn watchdog() {
    static START: Once = Once::new();
    if cfg!(miri) {
        return;
    }
    START.call_once(|| {
        std::thread::spawn(|| {
            let mut last = usize::MAX;
            loop {
                std::thread::sleep(Duration::from_secs(120));
                let now = adversary::PROGRESS.load(Ordering::Relaxed);
                if now == last {
                    eprintln!("adversarial: no heap operation finished in 120 s: a hang");
                    std::process::abort();
                }
                last = now;
            }
        });
    });
}

/// With `crc`, damage to metadata must have been reported by the end.
fn assert_detected_under_crc(outcome: &Outcome) {
    if cfg!(feature = "crc") {
        assert!(
            !outcome.metadata_damaged || outcome.detected,
            "metadata damage went unnoticed: {}",
            describe(outcome)
        );
    }
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Zero),
        Just(Value::Ones),
        (any::<u8>(), 0u8..4).prop_map(|(pick, m)| Value::PtrIntoLive { pick, m }),
        Just(Value::PtrToSelf),
    ]
}

/// Ordinary heap calls, weighted as in `tests/model.rs`.
fn ordinary() -> impl Strategy<Value = Op> {
    let pick = any::<usize>();
    prop_oneof![
        10 => (prop_oneof![9 => 0usize..1500, 1 => 0usize..20_000], prop_oneof![8 => 0u32..=4, 2 => 5u32..=12])
            .prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        7 => pick.prop_map(|pick| Op::Free { pick }),
        3 => (pick, 0usize..3000).prop_map(|(pick, size)| Op::Realloc { pick, size }),
        1 => (0u8..=40).prop_map(|depth| Op::QuickDepth { depth }),
        1 => any::<bool>().prop_map(|on| Op::Slabs { on }),
        1 => Just(Op::Check),
    ]
}

/// The misuses of a buggy program.
fn misuse() -> impl Strategy<Value = Op> {
    let pick = any::<usize>();
    prop_oneof![
        3 => (pick, 1usize..=32, value()).prop_map(|(pick, k, value)| Op::Overrun { pick, k, value }),
        1 => (pick, 1usize..=16, value()).prop_map(|(pick, k, value)| Op::Underrun { pick, k, value }),
        3 => (pick, 0usize..=32, value())
            .prop_map(|(pick, offset, value)| Op::WriteAfterFree { pick, offset, value }),
        1 => pick.prop_map(|pick| Op::DoubleFree { pick }),
        1 => (pick, any::<usize>()).prop_map(|(pick, offset)| Op::InteriorFree { pick, offset }),
    ]
}

/// Ordinary calls with a misuse now and then (one in 23 operations).
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![22 => ordinary(), 1 => misuse()]
}

/// Longest sequence: shorter under Miri, which is ~1000x slower.
const MAX_OPS: usize = if cfg!(miri) { 30 } else { 300 };

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `ops`, with slabs turned on first if `slabs` (the programs may turn them
/// on and off again in the middle).
fn with_slabs(slabs: bool, ops: Vec<Op>) -> Vec<Op> {
    let mut program = vec![Op::Slabs { on: slabs }];
    program.extend(ops);
    program
}

proptest! {
    #![proptest_config(config())]

    /// The interpreter itself: without misuse, no damage and no error.
    #[test]
    fn programs_without_misuse_keep_the_invariants(slabs: bool, ops in prop::collection::vec(ordinary(), 1..MAX_OPS)) {
        watchdog();
        let outcome = adversary::run(&with_slabs(slabs, ops));
        prop_assert!(!outcome.damaged && outcome.errors.is_empty(), "{}", describe(&outcome));
        prop_assert_eq!(outcome.final_check, Some(Ok(())));
    }

    #[test]
    fn random_programs_with_misuses(slabs: bool, ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        watchdog();
        let outcome = adversary::run(&with_slabs(slabs, ops));
        assert_detected_under_crc(&outcome);
    }

    #[test]
    fn decoded_bytes(bytes in prop::collection::vec(any::<u8>(), 0..MAX_OPS * 4)) {
        watchdog();
        let outcome = adversary::run(&adversary::decode(&bytes));
        assert_detected_under_crc(&outcome);
    }
}

/// A neighbour block's state when the misuse hits it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Used,
    Free,
    Cached,
}

/// Block sizes of the scenes: the damaged block and fences, and the
/// neighbour (a quick-list size).
const SMALL: usize = 64;
const NEIGHBOUR: usize = 96;

fn alloc(size: usize) -> Op {
    Op::Alloc {
        size,
        align_shift: 0,
    }
}

/// Data distance from a block of `size` bytes to the next block's data.
fn block_size(size: usize) -> usize {
    (size + BLOCK_OVERHEAD).next_multiple_of(GRANULE)
}

/// Two witnesses (live 0 and 1), then the scene's blocks. Quick lists on
/// for a cached neighbour, off otherwise.
fn prelude(kind: Kind) -> Vec<Op> {
    let depth = if matches!(kind, Kind::Cached) { 32 } else { 0 };
    vec![Op::QuickDepth { depth }, alloc(200), alloc(200)]
}

/// The value with the operands the sweep uses: pointers into witness 0.
fn values() -> [Value; 4] {
    [
        Value::Zero,
        Value::Ones,
        Value::PtrIntoLive { pick: 0, m: 1 },
        Value::PtrToSelf,
    ]
}

/// Overrun of block A (live 2) by `k` bytes into neighbour B, then: free A,
/// allocate B's size four times, two small blocks, a witness-sized one,
/// check; the finish frees everything and checks.
fn overrun_case(kind: Kind, k: usize, value: Value) -> Outcome {
    let mut adv = Adversary::new();
    let mut scene = prelude(kind);
    scene.extend([alloc(SMALL), alloc(NEIGHBOUR), alloc(SMALL)]);
    for op in &scene {
        adv.step(op);
    }
    let (a, b) = (adv.live_ptr(2), adv.live_ptr(3));
    assert_eq!(
        b.as_ptr().addr() - a.as_ptr().addr(),
        block_size(SMALL),
        "scene: B follows A"
    );
    assert_eq!(
        adv.live_usable(2),
        if cfg!(feature = "guard") {
            SMALL
        } else {
            block_size(SMALL) - HEADER_SIZE
        }
    );
    if !matches!(kind, Kind::Used) {
        adv.step(&Op::Free { pick: 3 });
    }
    adv.step(&Op::Overrun { pick: 2, k, value });
    let mut follow = vec![Op::Free { pick: 2 }];
    follow.extend([alloc(NEIGHBOUR); 4]);
    follow.extend([alloc(SMALL), alloc(SMALL), alloc(200), Op::Check]);
    for op in &follow {
        adv.step(op);
    }
    adv.finish()
}

/// Write after free at `offset` into X, freed after X2 of the same size
/// (so X's list link names X2), each between fences: then allocate X's
/// size four times, free the first two fences, allocate twice more, check;
/// the finish frees everything and checks.
fn write_after_free_case(kind: Kind, offset: usize, value: Value) -> Outcome {
    let mut adv = Adversary::new();
    let mut scene = prelude(kind);
    scene.extend([
        alloc(SMALL),
        alloc(NEIGHBOUR),
        alloc(SMALL),
        alloc(NEIGHBOUR),
        alloc(SMALL),
    ]);
    for op in &scene {
        adv.step(op);
    }
    let x = adv.live_ptr(3);
    adv.step(&Op::Free { pick: 5 });
    adv.step(&Op::Free { pick: 3 });
    assert_eq!(adv.freed_ptr(0), x, "scene: X freed last");
    adv.step(&Op::WriteAfterFree {
        pick: 0,
        offset,
        value,
    });
    let mut follow = vec![alloc(NEIGHBOUR); 4];
    follow.extend([Op::Free { pick: 2 }, Op::Free { pick: 2 }]);
    follow.extend([alloc(NEIGHBOUR), alloc(NEIGHBOUR), alloc(SMALL), Op::Check]);
    for op in &follow {
        adv.step(op);
    }
    adv.finish()
}

/// Counts of one group of sweep cases.
#[derive(Default)]
struct Tally {
    cases: usize,
    /// Cases whose misuse changed heap metadata.
    metadata: usize,
    /// Of those, cases where the damage was detected.
    detected: usize,
    /// Cases whose invariants all held (no panic).
    survived: usize,
    failures: Vec<String>,
}

impl Tally {
    fn run(&mut self, label: String, case: impl FnOnce() -> Outcome) {
        if !selected(&label) {
            return;
        }
        watchdog();
        self.cases += 1;
        match catch_unwind(AssertUnwindSafe(case)) {
            Ok(outcome) => {
                self.survived += 1;
                if outcome.metadata_damaged {
                    self.metadata += 1;
                    if outcome.detected {
                        self.detected += 1;
                    } else {
                        self.failures.push(format!("{label}: undetected"));
                    }
                }
            }
            Err(_) => self.failures.push(format!("{label}: invariant broken")),
        }
    }
}

/// Whether the case is in `SWEEP_FILTER` (a substring of its label, e.g.
/// `SWEEP_FILTER="overrun into Free, k 3,"`): one case can be run alone,
/// under a debugger, when a crash takes the test binary down.
fn selected(label: &str) -> bool {
    std::env::var("SWEEP_FILTER").map_or(true, |f| label.contains(&f))
}

/// Overrun lengths and write-after-free offsets of the sweep: all of them,
/// or two under Miri (whole words, as Miri writes them), with the pointer
/// value only: 10 cases, a few minutes.
fn lengths() -> Vec<usize> {
    if cfg!(miri) {
        vec![8, 16]
    } else {
        (1..=32).collect()
    }
}

fn offsets() -> Vec<usize> {
    if cfg!(miri) {
        vec![0, 8]
    } else {
        (0..=32).collect()
    }
}

fn sweep_values() -> Vec<Value> {
    if cfg!(miri) {
        vec![Value::PtrIntoLive { pick: 0, m: 1 }]
    } else {
        values().to_vec()
    }
}

#[test]
fn sweep() {
    let mut groups: Vec<(String, Tally)> = Vec::new();
    for kind in [Kind::Used, Kind::Free, Kind::Cached] {
        let mut tally = Tally::default();
        for k in lengths() {
            for value in sweep_values() {
                let label = format!("overrun into {kind:?}, k {k}, {value:?}");
                tally.run(label, || overrun_case(kind, k, value));
            }
        }
        groups.push((format!("overrun into {kind:?}"), tally));
    }
    for kind in [Kind::Free, Kind::Cached] {
        let mut tally = Tally::default();
        for offset in offsets() {
            for value in sweep_values() {
                let label = format!("write after free into {kind:?}, offset {offset}, {value:?}");
                tally.run(label, || write_after_free_case(kind, offset, value));
            }
        }
        groups.push((format!("write after free into {kind:?}"), tally));
    }
    report(&groups);
}

/// Prints the tally and asserts: every case survived, and with `crc`
/// every metadata change was detected.
fn report(groups: &[(String, Tally)]) {
    println!(
        "{:<32} {:>6} {:>9} {:>9} {:>9}",
        "group", "cases", "metadata", "detected", "survived"
    );
    for (name, t) in groups {
        println!(
            "{name:<32} {:>6} {:>9} {:>9} {:>9}",
            t.cases, t.metadata, t.detected, t.survived
        );
    }
    for (_, t) in groups {
        for failure in t.failures.iter().take(20) {
            println!("  {failure}");
        }
    }
    for (name, t) in groups {
        assert_eq!(t.survived, t.cases, "{name}: invariants broken");
        // Every build reports every change to metadata in the sweep: the
        // proofs of `region::nav` see it when a call meets it, `check()`
        // at the end otherwise (`crc` adds nothing the sweep can miss).
        assert_eq!(t.detected, t.metadata, "{name}: metadata damage undetected");
    }
}

/// Longest reproducer `fuzz_regressions` replays under Miri.
const MIRI_REGRESSION_BYTES: usize = 64;

#[test]
fn fuzz_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return; // no regressions saved yet
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files {
        watchdog();
        let bytes = std::fs::read(&file).unwrap();
        if cfg!(miri) && bytes.len() > MIRI_REGRESSION_BYTES {
            // Long programs take Miri tens of minutes (every step checks
            // the whole arena); they run natively in every build.
            continue;
        }
        let ops = adversary::decode(&bytes);
        println!("{}: {ops:?}", file.display());
        let outcome = catch_unwind(|| adversary::run(&ops))
            .unwrap_or_else(|_| panic!("{}: invariant broken", file.display()));
        assert_detected_under_crc(&outcome);
    }
}

/// Where a free block keeps its free-list link (next, then prev): right
/// after its header.
fn free_link_of(p: *mut u8) -> *mut *mut u8 {
    p.wrapping_sub(GUARD_SIZE).cast()
}

#[test]
fn check_stays_out_of_the_gap_between_chunks() {
    const PIECE: usize = 32 << 10;
    let arena = Arena::new(3 * PIECE);
    let mut heap = Heap::new();
    // SAFETY: the arena outlives the heap; the two chunks do not touch:
    // the middle piece is the gap.
    unsafe {
        let id = heap.add_region_with_priority(arena.ptr, PIECE, 0).unwrap();
        heap.extend(id, arena.ptr.wrapping_add(2 * PIECE), PIECE)
            .unwrap();
    }
    heap.set_quick_depth(0).unwrap();
    let layout = Layout::from_size_align(600, 8).unwrap();
    let p = heap.allocate(layout).unwrap();
    let _fence = heap.allocate(layout).unwrap();
    // SAFETY: a live block of this heap.
    unsafe { heap.free(p) }.unwrap();
    heap.check().unwrap();
    // A write after free: the link's next pointer now names the gap.
    let gap = arena.ptr.wrapping_add(PIECE + PIECE / 2);
    // SAFETY: the link of a free block, inside the arena.
    unsafe { free_link_of(p.as_ptr()).write(gap) };
    let found = heap.check();
    assert!(
        matches!(found, Err(HeapError::Corrupted { .. })),
        "check() must report the link, got {found:?}"
    );
}

/// Focused regressions found by review: misuses that the single-write
/// sweep does not make.
mod review {
    use super::*;
    use region_heap::SENTINEL_SIZE;

    fn lay(n: usize) -> Layout {
        Layout::from_size_align(n, 8).unwrap()
    }

    /// The free-list node of the free block whose data starts at `p`.
    fn link(p: *mut u8) -> *mut usize {
        p.wrapping_sub(GUARD_SIZE).cast()
    }

    fn plain_heap(arena: &Arena) -> Heap {
        let mut heap = Heap::new();
        // SAFETY: the arena outlives the heap.
        unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
        heap.set_quick_depth(0).unwrap();
        heap
    }

    /// A program's own intrusive list node `{next, prev}` at the start of
    /// its blocks: it frees F while still linking it before a live block X
    /// (`F.next = X`, `X.prev = F`). The unlink proof must refuse X (a used
    /// block, not a free one) and the heap must not write into X. (With
    /// `guard` the program's node at data offset 0 does not overlay the
    /// free-list node, which sits over the front guard.)
    #[cfg(not(feature = "guard"))]
    #[test]
    fn link_shaped_program_data_is_no_free_list_neighbour() {
        let arena = Arena::new(1 << 16);
        let mut heap = plain_heap(&arena);
        let f = heap.allocate(lay(200)).unwrap();
        let _fence1 = heap.allocate(lay(200)).unwrap();
        let x = heap.allocate(lay(200)).unwrap();
        let _fence2 = heap.allocate(lay(200)).unwrap();
        let h = heap.allocate(lay(200)).unwrap();
        let _fence3 = heap.allocate(lay(200)).unwrap();
        // SAFETY: blocks of the arena; the writes after free are the misuse.
        unsafe {
            x.as_ptr().write_bytes(0x11, 200);
            heap.free(f).unwrap();
            *link(f.as_ptr()) = link(x.as_ptr()) as usize;
            *link(x.as_ptr()).add(1) = link(f.as_ptr()) as usize;
        }
        // SAFETY: X is live.
        let before = unsafe { std::slice::from_raw_parts(x.as_ptr(), 200) }.to_vec();
        let got = heap.allocate(lay(200));
        assert!(
            matches!(
                got,
                Err(HeapError::Corrupted {
                    what: region_heap::Corruption::FreeList,
                    ..
                })
            ),
            "{got:?}"
        );
        // SAFETY: a live block of this heap.
        unsafe { heap.free(h) }.unwrap();
        heap.allocate(lay(200)).unwrap();
        // SAFETY: X is live.
        let after = unsafe { std::slice::from_raw_parts(x.as_ptr(), 200) };
        assert_eq!(before, after, "the heap wrote into live block X");
        heap.check().unwrap();
    }

    /// Two writes after free of the block's own node address (next and
    /// prev): a self-loop is no list.
    #[test]
    fn a_self_looped_free_link_is_refused() {
        let arena = Arena::new(1 << 16);
        let mut heap = plain_heap(&arena);
        let f = heap.allocate(lay(200)).unwrap();
        let _fence = heap.allocate(lay(200)).unwrap();
        let g = heap.allocate(lay(200)).unwrap();
        let _fence2 = heap.allocate(lay(200)).unwrap();
        // SAFETY: the freed block's own node; the writes are the misuse.
        unsafe {
            heap.free(f).unwrap();
            let me = link(f.as_ptr()) as usize;
            *link(f.as_ptr()) = me;
            *link(f.as_ptr()).add(1) = me;
        }
        let got = heap.allocate(lay(200));
        assert!(matches!(got, Err(HeapError::Corrupted { .. })), "{got:?}");
        let p = heap.allocate(lay(200)).unwrap();
        assert_ne!(p, f, "the damaged block is quarantined");
        // SAFETY: p is live.
        unsafe { p.as_ptr().write_bytes(0x33, 200) };
        // SAFETY: a live block of this heap.
        unsafe { heap.free(g) }.unwrap();
        // SAFETY: p is live.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), 200) };
        assert!(
            bytes.iter().all(|&b| b == 0x33),
            "the heap wrote into a live block"
        );
        heap.check().unwrap();
    }

    /// A free block whose next link names the sentinel, skipping live
    /// blocks; a repair triggered by other damage must not trust that link
    /// against the intact sentinel and hand out memory over the live ones.
    #[test]
    fn repair_does_not_trust_a_link_that_skips_to_the_sentinel() {
        let arena = Arena::new(1 << 16);
        let mut heap = plain_heap(&arena);
        let a = heap.allocate(lay(200)).unwrap();
        let l1 = heap.allocate(lay(200)).unwrap();
        let l2 = heap.allocate(lay(200)).unwrap();
        let p = heap.allocate(lay(200)).unwrap();
        let data = HEADER_SIZE + GUARD_SIZE;
        // SAFETY: blocks and headers of the arena; the writes are the misuse.
        unsafe {
            l1.as_ptr().write_bytes(0x11, 200);
            l2.as_ptr().write_bytes(0x22, 200);
            heap.free(a).unwrap();
            let a_header = a.as_ptr().wrapping_sub(data);
            let sentinel = arena.ptr as usize + arena.len() - SENTINEL_SIZE;
            a_header
                .cast::<i32>()
                .write(((sentinel - a_header as usize) / GRANULE) as i32);
            *p.as_ptr()
                .wrapping_sub(data)
                .wrapping_add(8)
                .cast::<usize>() |= 7;
        }
        // SAFETY: p is the damaged block; the free reports it.
        assert!(matches!(
            unsafe { heap.free(p) },
            Err(HeapError::Corrupted { .. })
        ));
        heap.check().unwrap();
        while let Ok(big) = heap.allocate(lay(4000)) {
            let range = big.as_ptr() as usize..big.as_ptr() as usize + 4000;
            for live in [l1, l2] {
                assert!(
                    !range.contains(&(live.as_ptr() as usize)),
                    "overlaps a live block"
                );
            }
        }
        for (live, fill) in [(l1, 0x11), (l2, 0x22)] {
            // SAFETY: live blocks.
            let bytes = unsafe { std::slice::from_raw_parts(live.as_ptr(), 200) };
            assert!(bytes.iter().all(|&b| b == fill));
            // SAFETY: live blocks of this heap: they free without a panic.
            let _ = unsafe { heap.free(live) };
        }
        heap.check().unwrap();
    }

    /// A four-byte overrun writing a pointer-like value into the next
    /// header's link: no overflow anywhere (32-bit targets scale it by 16).
    #[test]
    fn an_overrun_with_a_large_link_value_is_reported() {
        let arena = Arena::new(1 << 14);
        let mut heap = plain_heap(&arena);
        let a = heap.allocate(lay(32)).unwrap();
        let b = heap.allocate(lay(32)).unwrap();
        // SAFETY: a live block of this heap.
        let usable = unsafe { heap.usable_size(a) }.unwrap();
        // SAFETY: the bytes right after `a`'s usable end: `b`'s header.
        unsafe {
            a.as_ptr()
                .add(usable + GUARD_SIZE)
                .cast::<u32>()
                .write_unaligned(0x4141_4141)
        };
        // SAFETY: b is live; its header is damaged.
        assert!(unsafe { heap.free(b) }.is_err());
        heap.check().unwrap();
        // SAFETY: a live block of this heap.
        unsafe { heap.free(a) }.unwrap();
        heap.check().unwrap();
    }

    /// `guard`: an underrun that reaches the header's `requested` word is
    /// reported, not an overflow.
    #[cfg(feature = "guard")]
    #[test]
    fn an_underrun_into_the_requested_size_is_reported() {
        let arena = Arena::new(1 << 16);
        let mut heap = plain_heap(&arena);
        let p = heap.allocate(lay(100)).unwrap();
        let q = heap.allocate(lay(100)).unwrap();
        // SAFETY: `p`'s own header, 16..24 bytes into it.
        unsafe {
            p.as_ptr()
                .sub(HEADER_SIZE + GUARD_SIZE - 16)
                .write_bytes(0xff, 8)
        };
        assert!(heap.check().is_err());
        // SAFETY: p is live; its header is damaged.
        assert!(unsafe { heap.free(p) }.is_err());
        // SAFETY: a live block of this heap.
        unsafe { heap.free(q) }.unwrap();
    }
}

// Repairs that meet a second damage (found by the random programs and a
// review, 2026-12-06): the repair must never take back memory it cut off,
// nor accept a link that skipped live blocks.

/// Eight blocks of 64 bytes in a row, quick lists off.
fn eight_blocks(arena: &Arena) -> (Heap, Vec<std::ptr::NonNull<u8>>) {
    let mut heap = Heap::new();
    // SAFETY: the arena outlives the heap.
    unsafe { heap.add_region(arena.ptr, arena.len()) }.unwrap();
    heap.set_quick_depth(0).unwrap();
    let layout = Layout::from_size_align(64, 8).unwrap();
    let blocks: Vec<_> = (0..8).map(|_| heap.allocate(layout).unwrap()).collect();
    for (i, &b) in blocks.iter().enumerate() {
        // SAFETY: a live block of 64 bytes.
        unsafe { b.as_ptr().write_bytes(i as u8, 64) };
    }
    (heap, blocks)
}

/// The owner word before `data` (the plain build's header layout or the
/// features', through the exported offset).
fn owner_word_of(data: std::ptr::NonNull<u8>) -> *mut usize {
    data.as_ptr()
        .wrapping_sub(region_heap::raw::OWNER_OFFSET)
        .cast()
}

/// The ring's `next` link (granules, an `i32` at the header's start).
fn next_link_of(data: std::ptr::NonNull<u8>) -> *mut i32 {
    data.as_ptr()
        .wrapping_sub(region_heap::raw::DATA_OFFSET)
        .cast()
}

/// Every block `allocate` hands out until it has no more room lies clear
/// of the `held` blocks (64 bytes each), which keep their bytes.
fn allocations_avoid(heap: &mut Heap, held: &[(std::ptr::NonNull<u8>, u8)]) {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let mut got = 0;
    while let Ok(p) = heap.allocate(layout) {
        let a = p.as_ptr().addr();
        for &(h, _) in held {
            let h = h.as_ptr().addr();
            assert!(
                a + 64 <= h || h + 64 <= a,
                "{a:#x} overlaps a held block {h:#x}"
            );
        }
        got += 1;
        assert!(got < 10_000, "allocations go on for ever");
    }
    assert!(got > 100, "the heap still serves 64-byte blocks ({got})");
    for &(h, fill) in held {
        // SAFETY: the program's own live blocks.
        let bytes = unsafe { std::slice::from_raw_parts(h.as_ptr(), 64) };
        assert!(bytes.iter().all(|&b| b == fill), "held block {h:?} changed");
    }
}

/// A header cut off by a quarantine whose owner word was damaged at the
/// time (so no retag reached it) is written back, and the quarantined
/// block's own `next` link is pointed at it: neither a free of it nor the
/// repair's walks take it back, and allocation keeps working.
#[test]
fn memory_a_repair_cut_off_stays_cut_off() {
    let arena = Arena::new(64 << 10);
    let (mut heap, b) = eight_blocks(&arena);
    // SAFETY: the program's blocks and their header words, as a buggy
    // program writes them; the heap must report, never follow.
    unsafe {
        heap.free(b[3]).unwrap();
        let saved: Vec<usize> = (2..=4).map(|i| owner_word_of(b[i]).read()).collect();
        for &block in &b[2..=4] {
            owner_word_of(block).write(0);
        }
        assert!(matches!(heap.free(b[1]), Err(HeapError::Corrupted { .. })));
        for (k, i) in (2..=4).enumerate() {
            owner_word_of(b[i]).write(saved[k]);
        }
        // The cut-off block 2 looks valid again: refused all the same.
        assert!(matches!(
            heap.free(b[2]),
            Err(HeapError::Corrupted { .. } | HeapError::NotBlockStart { .. })
        ));
        // The quarantined block's `next` link now names block 2.
        let granules = ((b[2].as_ptr().addr() - b[1].as_ptr().addr()) / GRANULE) as i32;
        next_link_of(b[1]).write(granules);
        let _ = heap.free(b[5]);
    }
    // Blocks 2 and 4 are still the program's (it never freed them).
    allocations_avoid(&mut heap, &[(b[2], 2), (b[4], 4)]);
    heap.check().unwrap();
}

/// A one-granule-step overrun makes a free block's `next` link skip two
/// live blocks and land exactly on a real header: the repair quarantines
/// the free block alone, and the skipped blocks stay the program's, intact
/// and freeable.
#[test]
fn a_link_that_skips_live_blocks_is_not_accepted() {
    let arena = Arena::new(64 << 10);
    let (mut heap, b) = eight_blocks(&arena);
    // SAFETY: as above.
    unsafe {
        heap.free(b[2]).unwrap();
        // Block 2 is free; its link now skips blocks 3 and 4 to block 5.
        let granules = ((b[5].as_ptr().addr() - b[2].as_ptr().addr()) / GRANULE) as i32;
        next_link_of(b[2]).write(granules);
        // Freeing block 3 meets the broken ring and is refused; the repair
        // quarantines block 2 (its link is the damage) and block 3, which
        // the error named.
        assert!(matches!(heap.free(b[3]), Err(HeapError::Corrupted { .. })));
        heap.check().unwrap();
        let quarantined = HeapError::Corrupted {
            addr: b[3].as_ptr().addr() - region_heap::raw::DATA_OFFSET,
            what: region_heap::Corruption::Quarantined,
        };
        assert_eq!(heap.free(b[3]), Err(quarantined));
        // Block 4 was not taken: freed as any live block.
        assert!((0..64).all(|k| b[4].as_ptr().add(k).read() == 4));
        heap.free(b[4]).unwrap();
    }
    allocations_avoid(&mut heap, &[(b[1], 1), (b[3], 3), (b[5], 5), (b[6], 6)]);
    heap.check().unwrap();
}
