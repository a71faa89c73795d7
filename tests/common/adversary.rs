//! The adversary: an operation language that mixes ordinary heap calls with
//! the misuses of a buggy program, and the one interpreter that replays it
//! against a shadow model. `tests/adversarial.rs` (proptest, sweep,
//! regression replays) and the fuzz target `fuzz/fuzz_targets/adversarial.rs`
//! both include this file, so every finding replays the same way everywhere.
//!
//! Misuses: a write of 1..=32 bytes past a live block's usable end
//! (`Overrun`), of 1..=16 bytes before its data (`Underrun`), an 8-byte write
//! into a freed block (`WriteAfterFree`), a second free (`DoubleFree`) and a
//! free of an interior pointer (`InteriorFree`). The written values are
//! zeros, `0xff` bytes, a pointer into a live block, or the damaged block's
//! own data address (what an unlink attack plants).
//!
//! What the interpreter checks, after every operation:
//! - every live block holds exactly the bytes the program wrote (its fill
//!   byte, or what a misuse wrote into it): the heap changed no byte of a
//!   block it handed out;
//! - a new block is aligned, lies inside memory given to the heap and
//!   overlaps no live block;
//! - canary bytes around and between the pieces of memory given to the
//!   heap (two chunks of one region with a gap, and a second region) are
//!   intact;
//! - a double or interior free is refused, whatever happened before;
//! - until a misuse changes a byte outside every live block's data, every
//!   call succeeds (or reports `OutOfMemory`) and `check()` passes.
//!
//! After such a change, calls may fail; every error is recorded in the
//! [`Outcome`], and the damage counts as detected when a later call returns
//! `Corrupted`, `DoubleFree`, `NotBlockStart` or `NotFromHeap` (errors that
//! answer a double or interior free op do not count) or when the final
//! `check()` fails. A misuse that changed no byte is not damage. While the
//! heap is intact, the changed bytes are classified with `Heap::dump`: those
//! in a header's fields, a free or cached block's list link, a sentinel, a
//! guard zone or a slab's header are *metadata*
//! ([`Outcome::metadata_damaged`]).
//!
//! The operation count is bounded ([`MAX_OPS`] for decoded input); a heap
//! that loops forever is caught by the caller (a watchdog in the tests,
//! libFuzzer's `-timeout` in the fuzz target).
#![allow(dead_code)] // each includer uses its own part

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fmt::Write as _;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use region_heap::{
    Heap, HeapError, GRANULE, GUARD_SIZE, HEADER_SIZE, SENTINEL_SIZE, SLAB_HEADER_SIZE, SLAB_MAX,
    SLAB_STEP,
};

/// A value a misuse writes (repeated over the bytes it covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// Zero bytes.
    Zero,
    /// `0xff` bytes.
    Ones,
    /// The address of a live block's data (`pick` among the live blocks)
    /// plus `16 * m`, as a pointer.
    PtrIntoLive { pick: u8, m: u8 },
    /// The damaged (overrun or freed) block's own data address.
    PtrToSelf,
}

/// One step of a program: an ordinary call or a misuse.
///
/// `pick` chooses among live blocks (in allocation order, `pick % len`) or,
/// for `WriteAfterFree` and `DoubleFree`, among the recently freed pointers
/// (`0` is the most recent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Alloc {
        size: usize,
        align_shift: u32,
    },
    Free {
        pick: usize,
    },
    Realloc {
        pick: usize,
        size: usize,
    },
    QuickDepth {
        depth: u8,
    },
    /// Slabs on or off (`Heap::set_slabs`): small requests become headerless
    /// objects of slabs, whose headers the misuses can reach too.
    Slabs {
        on: bool,
    },
    Check,
    /// `k` (1..=32) bytes right after the block's usable end.
    Overrun {
        pick: usize,
        k: usize,
        value: Value,
    },
    /// `k` (1..=16) bytes right before the block's data.
    Underrun {
        pick: usize,
        k: usize,
        value: Value,
    },
    /// 8 bytes at `data + offset` (0..=32) of a freed block, clamped to
    /// its old usable extent.
    WriteAfterFree {
        pick: usize,
        offset: usize,
        value: Value,
    },
    DoubleFree {
        pick: usize,
    },
    /// A free of `data + 1 + offset % (usable - 1)`.
    InteriorFree {
        pick: usize,
        offset: usize,
    },
}

/// Most operations [`decode`] returns.
pub const MAX_OPS: usize = 512;

/// Freed pointers remembered for `WriteAfterFree` and `DoubleFree`.
const FREED_KEPT: usize = 16;

/// Bumped on every operation: lets a watchdog tell a hang from slow work.
pub static PROGRESS: AtomicUsize = AtomicUsize::new(0);

/// Reads bytes as operations; missing bytes read as zero.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn word(&mut self) -> usize {
        usize::from(u16::from_le_bytes([self.byte(), self.byte()]))
    }

    fn value(&mut self) -> Value {
        match self.byte() % 4 {
            0 => Value::Zero,
            1 => Value::Ones,
            2 => Value::PtrIntoLive {
                pick: self.byte(),
                m: self.byte() % 4,
            },
            _ => Value::PtrToSelf,
        }
    }

    fn alloc(&mut self) -> Op {
        let big = self.byte().is_multiple_of(16);
        let size = if big {
            self.word() % 20_001
        } else {
            self.word() % 1500
        };
        let a = self.byte();
        let align_shift = if a < 200 {
            u32::from(a % 5)
        } else {
            5 + u32::from(a % 8)
        };
        Op::Alloc { size, align_shift }
    }

    fn op(&mut self) -> Op {
        let pick = |r: &mut Self| usize::from(r.byte());
        match self.byte() % 32 {
            0..=11 => self.alloc(),
            12..=18 => Op::Free { pick: pick(self) },
            19..=21 => Op::Realloc {
                pick: pick(self),
                size: self.word() % 3000,
            },
            // The ten highest bytes (rare) turn slabs on or off.
            22 => match self.byte() {
                b @ 246.. => Op::Slabs { on: b % 2 == 0 },
                b => Op::QuickDepth { depth: b % 41 },
            },
            23 => Op::Check,
            24 | 25 => Op::Overrun {
                pick: pick(self),
                k: 1 + usize::from(self.byte() % 32),
                value: self.value(),
            },
            26 => Op::Underrun {
                pick: pick(self),
                k: 1 + usize::from(self.byte() % 16),
                value: self.value(),
            },
            27 | 28 => Op::WriteAfterFree {
                pick: pick(self),
                offset: usize::from(self.byte() % 33),
                value: self.value(),
            },
            29 => Op::DoubleFree { pick: pick(self) },
            30 => Op::InteriorFree {
                pick: pick(self),
                offset: self.word(),
            },
            _ => Op::Alloc {
                size: usize::from(self.byte()) * 2 % 513,
                align_shift: 0,
            },
        }
    }
}

/// Decodes fuzzer bytes into at most [`MAX_OPS`] operations (the fuzz
/// target and the regression replays share it).
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut reader = Reader(data);
    let mut ops = Vec::new();
    while !reader.0.is_empty() && ops.len() < MAX_OPS {
        ops.push(reader.op());
    }
    ops
}

/// What a run saw: every error the heap returned after damage, whether
/// the damage was detected, and the final `check()`.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Misuse operations carried out.
    pub misuses: usize,
    /// A misuse changed a byte outside every live block's data.
    pub damaged: bool,
    /// The first such change hit heap metadata (header fields, a list link,
    /// a sentinel, a guard zone).
    pub metadata_damaged: bool,
    /// After the damage, a call reported a misuse or damage, or the final
    /// `check()` failed.
    pub detected: bool,
    /// Every error returned after the damage (and by refused double or
    /// interior frees), in order.
    pub errors: Vec<HeapError>,
    /// The final `check()`, after every live block was freed and the quick
    /// lists flushed.
    pub final_check: Option<Result<(), HeapError>>,
}

/// Canary bytes around and between the pieces of memory given to the heap.
const CANARY: u8 = 0xc3;
/// Canary zone length: before, between and after the pieces.
const GAP: usize = if cfg!(miri) { 256 } else { 4096 };
/// The pieces: region A's first chunk, region A's second chunk (not
/// touching the first), region B.
const PIECES: [usize; 3] = [64 << 10, 32 << 10, 32 << 10];

/// One allocation holding the pieces with canary zones around them.
pub struct Memory {
    base: *mut u8,
    layout: Layout,
}

impl Memory {
    fn new() -> Memory {
        let size = PIECES.iter().sum::<usize>() + GAP * (PIECES.len() + 1);
        let layout = Layout::from_size_align(size, 4096).unwrap();
        // SAFETY: non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null());
        let memory = Memory { base, layout };
        for (start, len) in memory.gaps() {
            // SAFETY: inside the allocation.
            unsafe { memory.at(start).write_bytes(CANARY, len) };
        }
        memory
    }

    fn start(&self) -> usize {
        self.base.addr()
    }

    /// A pointer to `addr` with the allocation's provenance.
    fn at(&self, addr: usize) -> *mut u8 {
        self.base.wrapping_add(addr.wrapping_sub(self.start()))
    }

    /// Pieces as `(start address, length)`.
    fn pieces(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        PIECES.iter().scan(self.start() + GAP, |at, &len| {
            let piece = (*at, len);
            *at += len + GAP;
            Some(piece)
        })
    }

    /// Canary zones as `(start address, length)`.
    fn gaps(&self) -> Vec<(usize, usize)> {
        let mut gaps = vec![(self.start(), GAP)];
        gaps.extend(self.pieces().map(|(start, len)| (start + len, GAP)));
        gaps
    }

    /// Whether `[addr, addr + len)` lies inside one piece.
    fn in_piece(&self, addr: usize, len: usize) -> bool {
        self.pieces()
            .any(|(start, size)| addr >= start && addr.saturating_add(len) <= start + size)
    }

    fn read(&self, addr: usize, len: usize) -> Vec<u8> {
        // SAFETY: callers pass ranges inside the allocation.
        unsafe { std::slice::from_raw_parts(self.at(addr), len) }.to_vec()
    }

    fn check_canaries(&self) {
        for (start, len) in self.gaps() {
            if let Some(i) = self.read(start, len).iter().position(|&b| b != CANARY) {
                panic!("canary at {:#x} overwritten", start + i);
            }
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base, self.layout) }
    }
}

/// A block the program owns, with the bytes it expects in it.
struct Live {
    ptr: NonNull<u8>,
    align: usize,
    usable: usize,
    expected: Vec<u8>,
}

impl Live {
    fn addr(&self) -> usize {
        self.ptr.as_ptr().addr()
    }

    fn holds(&self, addr: usize) -> bool {
        addr >= self.addr() && addr < self.addr() + self.expected.len()
    }
}

/// A pointer the program freed, with its usable size at the time.
#[derive(Clone, Copy)]
struct Freed {
    ptr: NonNull<u8>,
    usable: usize,
}

/// The interpreter: a heap over [`Memory`] and the shadow model.
pub struct Adversary {
    // Declared before `memory`: dropped first, while its memory exists.
    heap: Heap,
    memory: Memory,
    live: Vec<Live>,
    freed: Vec<Freed>,
    fill: u8,
    step: usize,
    outcome: Outcome,
    /// The metadata bytes the first damaging write changed, with their
    /// values before it: a later misuse that writes every one of them back
    /// undoes the damage before the heap could see it.
    pending_metadata: Vec<(usize, u8)>,
}

impl Default for Adversary {
    fn default() -> Self {
        Self::new()
    }
}

impl Adversary {
    /// A heap with region A (two chunks with a gap between them) and region
    /// B, each piece surrounded by canaries.
    pub fn new() -> Adversary {
        let memory = Memory::new();
        let pieces: Vec<(usize, usize)> = memory.pieces().collect();
        let mut heap = Heap::new();
        // SAFETY: the pieces lie in `memory`, which outlives the heap.
        unsafe {
            let a = heap
                .add_region_with_priority(memory.at(pieces[0].0), pieces[0].1, 0)
                .unwrap();
            heap.extend(a, memory.at(pieces[1].0), pieces[1].1).unwrap();
            heap.add_region(memory.at(pieces[2].0), pieces[2].1)
                .unwrap();
        }
        Adversary {
            heap,
            memory,
            live: Vec::new(),
            freed: Vec::new(),
            fill: 0,
            step: 0,
            outcome: Outcome::default(),
            pending_metadata: Vec::new(),
        }
    }

    /// The data pointer of live block `i` (allocation order).
    pub fn live_ptr(&self, i: usize) -> NonNull<u8> {
        self.live[i].ptr
    }

    /// The freed pointer `pick` (0 = most recent).
    pub fn freed_ptr(&self, pick: usize) -> NonNull<u8> {
        self.freed[self.freed.len() - 1 - pick].ptr
    }

    /// Usable size of live block `i` as the heap reported it.
    pub fn live_usable(&self, i: usize) -> usize {
        self.live[i].usable
    }

    /// The outcome so far.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Carries out one operation, then checks the invariants.
    pub fn step(&mut self, op: &Op) {
        PROGRESS.fetch_add(1, Ordering::Relaxed);
        self.step += 1;
        match *op {
            Op::Alloc { size, align_shift } => self.alloc(size, 1 << align_shift.min(12)),
            Op::Free { pick } => self.free(pick),
            Op::Realloc { pick, size } => self.realloc(pick, size),
            Op::QuickDepth { depth } => {
                let result = self.heap.set_quick_depth(depth);
                self.answer("set_quick_depth", result);
            }
            Op::Slabs { on } => self.heap.set_slabs(on),
            Op::Check => {
                let result = self.heap.check();
                self.answer("check", result);
            }
            Op::Overrun { pick, k, value } => self.overrun(pick, k.clamp(1, 32), value),
            Op::Underrun { pick, k, value } => self.underrun(pick, k.clamp(1, 16), value),
            Op::WriteAfterFree {
                pick,
                offset,
                value,
            } => self.write_after_free(pick, offset.min(32), value),
            Op::DoubleFree { pick } => self.double_free(pick),
            Op::InteriorFree { pick, offset } => self.interior_free(pick, offset),
        }
        self.verify();
        if !self.outcome.damaged {
            let result = self.heap.check();
            self.answer("check after an intact step", result);
        }
    }

    /// Frees every live block, flushes the quick lists, runs the final
    /// `check()` and returns the outcome.
    pub fn finish(mut self) -> Outcome {
        for i in (0..self.live.len()).rev() {
            self.free(i);
        }
        let flushed = self.heap.flush_quick_lists();
        self.answer("flush_quick_lists", flushed);
        let check = self.heap.check();
        if let Err(e) = check {
            assert!(self.outcome.damaged, "final check: {e} without damage");
            self.outcome.detected = true;
        }
        self.outcome.final_check = Some(check);
        self.verify();
        std::mem::take(&mut self.outcome)
    }

    /// Takes the result of a call: errors are fatal while the heap is
    /// intact (except `OutOfMemory`), recorded after damage.
    fn answer<T>(&mut self, what: &str, result: Result<T, HeapError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(HeapError::OutOfMemory { .. }) => None,
            Err(e) => {
                assert!(
                    self.outcome.damaged,
                    "step {}: {what} failed with {e} on an intact heap",
                    self.step
                );
                self.outcome.errors.push(e);
                if matches!(
                    e,
                    HeapError::Corrupted { .. }
                        | HeapError::DoubleFree { .. }
                        | HeapError::NotBlockStart { .. }
                        | HeapError::NotFromHeap { .. }
                ) {
                    self.outcome.detected = true;
                }
                None
            }
        }
    }

    fn next_fill(&mut self) -> u8 {
        self.fill = self.fill.wrapping_add(1).max(1);
        self.fill
    }

    fn alloc(&mut self, size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        let result = self.heap.allocate(layout);
        if let Some(ptr) = self.answer("allocate", result) {
            self.admit(ptr, size, align);
        }
    }

    /// Checks a block just handed out and takes it into the model.
    fn admit(&mut self, ptr: NonNull<u8>, size: usize, align: usize) {
        let addr = ptr.as_ptr().addr();
        let step = self.step;
        // Blocks are granule-aligned; a slab object may be aligned to
        // `SLAB_STEP` only, when the request's alignment asks no more.
        let least = if size <= SLAB_MAX && align <= GRANULE {
            SLAB_STEP
        } else {
            GRANULE
        };
        assert_eq!(
            addr % align.max(least),
            0,
            "step {step}: misaligned {addr:#x}"
        );
        assert!(
            self.memory.in_piece(addr, size.max(1)),
            "step {step}: block {addr:#x}+{size} outside the heap's memory"
        );
        for other in &self.live {
            let o = other.addr();
            assert!(
                addr + size.max(1) <= o || o + other.expected.len().max(1) <= addr,
                "step {step}: block {addr:#x}+{size} overlaps live block {o:#x}"
            );
        }
        // SAFETY: a block just handed out.
        let usable = unsafe { self.heap.usable_size(ptr) };
        let usable = self.answer("usable_size", usable).unwrap_or(size);
        assert!(usable >= size, "step {step}: usable {usable} < {size}");
        let fill = self.next_fill();
        // SAFETY: `size` bytes of a block the program now owns.
        unsafe { ptr.as_ptr().write_bytes(fill, size) };
        self.live.push(Live {
            ptr,
            align,
            usable,
            expected: vec![fill; size],
        });
    }

    fn remember_freed(&mut self, ptr: NonNull<u8>, usable: usize) {
        if self.freed.len() == FREED_KEPT {
            self.freed.remove(0);
        }
        self.freed.push(Freed { ptr, usable });
    }

    fn free(&mut self, pick: usize) {
        if self.live.is_empty() {
            return;
        }
        let i = pick % self.live.len();
        // SAFETY: a live block of this heap; dropped from the model below
        // if the heap takes it.
        let result = unsafe { self.heap.free(self.live[i].ptr) };
        if self.answer("free", result).is_some() {
            let live = self.live.remove(i);
            self.remember_freed(live.ptr, live.usable);
        }
    }

    fn realloc(&mut self, pick: usize, size: usize) {
        if self.live.is_empty() {
            return;
        }
        let i = pick % self.live.len();
        let (ptr, old, align) = (
            self.live[i].ptr,
            self.live[i].expected.len(),
            self.live[i].align,
        );
        let layout = Layout::from_size_align(old, align).unwrap();
        // SAFETY: a live block of this heap, allocated with `layout`.
        let result = unsafe { self.heap.realloc(ptr, layout, size) };
        let Some(new) = self.answer("realloc", result) else {
            return;
        };
        let live = self.live.remove(i);
        let keep = old.min(size);
        let addr = new.as_ptr().addr();
        assert!(
            self.memory.in_piece(addr, keep.max(1)),
            "step {}: realloc returned {addr:#x} outside the heap's memory",
            self.step
        );
        assert_eq!(
            self.memory.read(addr, keep),
            live.expected[..keep],
            "step {}: realloc lost the data",
            self.step
        );
        if new != ptr {
            self.remember_freed(ptr, live.usable);
        }
        self.admit(new, size, align);
    }

    /// The pointer value a misuse writes, with the memory's provenance.
    fn value_ptr(&self, value: Value, own: NonNull<u8>) -> Option<*mut u8> {
        match value {
            Value::PtrToSelf => Some(self.memory.at(own.as_ptr().addr())),
            Value::PtrIntoLive { pick, m } if !self.live.is_empty() => {
                let live = &self.live[usize::from(pick) % self.live.len()];
                Some(self.memory.at(live.addr() + 16 * usize::from(m)))
            }
            // No live block: an address 16 * m into the first piece.
            Value::PtrIntoLive { m, .. } => {
                let first = self.memory.pieces().next().unwrap().0;
                Some(self.memory.at(first + 16 * usize::from(m)))
            }
            Value::Zero | Value::Ones => None,
        }
    }

    /// Writes `value` over `[addr, addr + len)` as a buggy program would,
    /// then accounts for every byte it changed.
    fn write(&mut self, addr: usize, len: usize, value: Value, own: NonNull<u8>) {
        // Under Miri, pointers are written whole (a partial pointer loses
        // its provenance, which Miri would report in the heap, not here).
        let (addr, len) = if cfg!(miri) {
            let start = addr & !7;
            (start, (addr + len).next_multiple_of(8) - start)
        } else {
            (addr, len)
        };
        if len == 0 || !self.memory.in_piece(addr, len) {
            return;
        }
        self.outcome.misuses += 1;
        let metadata = (!self.outcome.damaged).then(|| self.metadata());
        let before = self.memory.read(addr, len);
        self.store(addr, len, value, own);
        let after = self.memory.read(addr, len);
        let mut outside = false;
        let mut changed_metadata = Vec::new();
        for (j, (b, a)) in before.iter().zip(&after).enumerate() {
            if b == a {
                continue;
            }
            let at = addr + j;
            if let Some(live) = self.live.iter_mut().find(|l| l.holds(at)) {
                let offset = at - live.addr();
                live.expected[offset] = *a;
            } else {
                outside = true;
                if metadata.as_ref().is_some_and(|m| m.contains(at)) {
                    changed_metadata.push((at, *b));
                }
            }
        }
        if outside && !self.outcome.damaged {
            self.outcome.damaged = true;
            self.outcome.metadata_damaged = !changed_metadata.is_empty();
            self.pending_metadata = changed_metadata;
        } else if !self.pending_metadata.is_empty() {
            self.forget_undone_metadata();
        }
    }

    /// Drops the pending metadata bytes that hold their first value again;
    /// once none is left and nothing was detected, the damage was undone
    /// by the program before the heap could see it: nothing to report.
    fn forget_undone_metadata(&mut self) {
        let memory = &self.memory;
        self.pending_metadata
            .retain(|&(at, original)| memory.read(at, 1)[0] != original);
        if self.pending_metadata.is_empty() && !self.outcome.detected {
            self.outcome.metadata_damaged = false;
        }
    }

    /// The raw store of a misuse.
    fn store(&mut self, addr: usize, len: usize, value: Value, own: NonNull<u8>) {
        let dst = self.memory.at(addr);
        match self.value_ptr(value, own) {
            Some(p) => {
                // Whole 8-byte words as pointers (they keep their
                // provenance), the ragged ends byte by byte.
                let bytes = p.addr().to_le_bytes();
                let mut j = 0;
                while j < len {
                    if (addr + j).is_multiple_of(8) && j + 8 <= len {
                        // SAFETY: 8 aligned bytes inside a piece.
                        unsafe { dst.add(j).cast::<*mut u8>().write(p) };
                        j += 8;
                    } else {
                        // SAFETY: a byte inside a piece.
                        unsafe { dst.add(j).write(bytes[(addr + j) % 8]) };
                        j += 1;
                    }
                }
            }
            None => {
                let byte = if value == Value::Ones { 0xff } else { 0 };
                // SAFETY: inside a piece (checked by `write`).
                unsafe { dst.write_bytes(byte, len) };
            }
        }
    }

    fn overrun(&mut self, pick: usize, k: usize, value: Value) {
        if self.live.is_empty() {
            return;
        }
        let live = &self.live[pick % self.live.len()];
        let (ptr, end) = (live.ptr, live.addr() + live.usable);
        self.write(end, k, value, ptr);
    }

    fn underrun(&mut self, pick: usize, k: usize, value: Value) {
        if self.live.is_empty() {
            return;
        }
        let live = &self.live[pick % self.live.len()];
        let ptr = live.ptr;
        self.write(live.addr() - k, k, value, ptr);
    }

    fn write_after_free(&mut self, pick: usize, offset: usize, value: Value) {
        let Some(freed) = self.pick_freed(pick) else {
            return;
        };
        let len = freed.usable.min(8);
        let offset = offset.min(freed.usable - len);
        self.write(freed.ptr.as_ptr().addr() + offset, len, value, freed.ptr);
    }

    fn pick_freed(&self, pick: usize) -> Option<Freed> {
        let n = self.freed.len();
        (n > 0).then(|| self.freed[n - 1 - pick % n])
    }

    /// A free the heap must refuse, whatever state it is in.
    fn refused_free(&mut self, what: &str, ptr: NonNull<u8>) {
        self.outcome.misuses += 1;
        // SAFETY: not a live block start (callers make sure): the heap
        // must validate it before touching anything.
        match unsafe { self.heap.free(ptr) } {
            Ok(_) => panic!("step {}: {what} of {ptr:p} was accepted", self.step),
            Err(e) => {
                assert!(e.is_misuse(), "step {}: {what} answered {e}", self.step);
                // A refusal that names damage (a double free of a block
                // whose header an overrun hit, refused as `Corrupted`)
                // reports that damage: it is detected.
                if self.outcome.damaged && matches!(e, HeapError::Corrupted { .. }) {
                    self.outcome.detected = true;
                }
                self.outcome.errors.push(e);
            }
        }
    }

    fn double_free(&mut self, pick: usize) {
        let Some(freed) = self.pick_freed(pick) else {
            return;
        };
        if self.live.iter().any(|l| l.ptr == freed.ptr) {
            return; // handed out again: a free of a live block, not a misuse
        }
        self.refused_free("double free", freed.ptr);
    }

    fn interior_free(&mut self, pick: usize, offset: usize) {
        if self.live.is_empty() {
            return;
        }
        let live = &self.live[pick % self.live.len()];
        if live.usable < 2 {
            return;
        }
        let ptr = live
            .ptr
            .as_ptr()
            .wrapping_add(1 + offset % (live.usable - 1));
        let ptr = NonNull::new(self.memory.at(ptr.addr())).unwrap();
        if self.live.iter().any(|l| l.ptr == ptr) {
            return;
        }
        self.refused_free("interior free", ptr);
    }

    /// Every live block holds its expected bytes; canaries intact.
    fn verify(&self) {
        for live in &self.live {
            let got = self.memory.read(live.addr(), live.expected.len());
            if let Some(i) = got.iter().zip(&live.expected).position(|(g, e)| g != e) {
                panic!(
                    "step {}: live block {:#x} changed at +{i}: {:#04x}, expected {:#04x}",
                    self.step,
                    live.addr(),
                    got[i],
                    live.expected[i]
                );
            }
        }
        self.memory.check_canaries();
    }

    /// Heap metadata of the intact heap, read from `Heap::dump`.
    fn metadata(&self) -> Metadata {
        let mut text = String::new();
        self.heap.dump(&mut text).unwrap();
        let mut ranges = Vec::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["chunk", span] => {
                    let end = parse_hex(span.split("..").nth(1).unwrap());
                    let sentinel = end - SENTINEL_SIZE;
                    header_fields(sentinel, &mut ranges);
                    ranges.push((sentinel + HEADER_SIZE, sentinel + HEADER_SIZE + 16));
                }
                [addr, size, state] if addr.starts_with("0x") => {
                    let (h, size) = (parse_hex(addr), size.parse::<usize>().unwrap());
                    self.block_metadata(h, size, state, &mut ranges);
                }
                // "<addr> <size> slab of <n>-byte objects, <u> of <c> used":
                // the block header, its front guard, and the slab header.
                [addr, _, "slab", ..] if addr.starts_with("0x") => {
                    let h = parse_hex(addr);
                    header_fields(h, &mut ranges);
                    let data = h + HEADER_SIZE + GUARD_SIZE;
                    ranges.push((h + HEADER_SIZE, data));
                    ranges.push((data, data + SLAB_HEADER_SIZE));
                }
                _ => {}
            }
        }
        Metadata(ranges)
    }

    fn block_metadata(&self, h: usize, size: usize, state: &str, out: &mut Vec<(usize, usize)>) {
        header_fields(h, out);
        let after = h + HEADER_SIZE;
        match state {
            "free" => out.push((after, after + 16)),
            "cached" => out.push((after, after + 8)),
            _ if cfg!(feature = "guard") => {
                let data = after + GUARD_SIZE;
                out.push((after, data));
                if let Some(live) = self.live.iter().find(|l| l.addr() == data) {
                    out.push((data + live.expected.len(), h + size));
                }
            }
            _ => {}
        }
    }
}

/// Header fields a damaged header can be told by (ARCHITECTURE.md, "Block
/// layout per feature"): links and owner, the requested size (`guard`),
/// the checksum (`crc`); not the zero padding.
fn header_fields(h: usize, out: &mut Vec<(usize, usize)>) {
    out.push((h, h + 16));
    let mut at = h + 16;
    if cfg!(feature = "guard") {
        out.push((at, at + 8));
        at += 8;
    }
    if cfg!(feature = "crc") {
        out.push((at, at + 4));
    }
}

fn parse_hex(s: &str) -> usize {
    usize::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// Address ranges of heap metadata.
struct Metadata(Vec<(usize, usize)>);

impl Metadata {
    fn contains(&self, addr: usize) -> bool {
        self.0.iter().any(|&(s, e)| addr >= s && addr < e)
    }
}

/// Replays `ops` on a fresh heap and returns what happened; panics when an
/// invariant fails.
pub fn run(ops: &[Op]) -> Outcome {
    let mut adversary = Adversary::new();
    for op in ops {
        adversary.step(op);
    }
    adversary.finish()
}

/// A one-line account of an outcome, for failure messages and tallies.
pub fn describe(outcome: &Outcome) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "misuses {}, damaged {}, metadata {}, detected {}, errors {:?}, final check {:?}",
        outcome.misuses,
        outcome.damaged,
        outcome.metadata_damaged,
        outcome.detected,
        outcome.errors,
        outcome.final_check
    );
    s
}
