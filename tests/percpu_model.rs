//! Property test of `PerCpuHeap` against a shadow model: random sequences
//! of allocations, frees and reallocations made on random CPUs, with other
//! CPUs' heaps held locked at random (as by an interrupted holder) and
//! misuses mixed in: double frees, interior pointers, foreign pointers.
//!
//! The model knows every live block (size, fill byte, owning heap) and
//! which heaps are locked, so it predicts exactly which heap serves each
//! allocation, which free is remote, what each misuse reports, when a
//! `try_free` must give up, and each CPU's counters; after every step the
//! touched blocks are checked byte by byte, and at the end every block,
//! `check()` and the statistics.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr::NonNull;

use common::Arena;
use proptest::prelude::*;
use region_heap::{CpuCounters, HeapError, LockGuard, PerCpuHeap, SpinLock, GRANULE, INBOX_SLOTS};

const CPUS: usize = 3;
const ARENA: usize = 256 << 10;

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn cpu_id() -> usize {
    CPU.with(Cell::get)
}

#[derive(Clone, Debug)]
enum Op {
    /// Run the next steps on this CPU (its heap is released if held).
    On(usize),
    /// Lock this CPU's heap from outside (not the running CPU's).
    Hold(usize),
    Release(usize),
    Alloc {
        size: usize,
        align_shift: u32,
    },
    Free {
        pick: usize,
    },
    TryFree {
        pick: usize,
    },
    /// `GlobalAlloc::dealloc`: another CPU's block waits in its owner's
    /// inbox, even while the model holds the owner's lock.
    Dealloc {
        pick: usize,
    },
    Realloc {
        pick: usize,
        size: usize,
    },
    DoubleFree {
        pick: usize,
    },
    Interior {
        pick: usize,
        granules: usize,
    },
    Foreign,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CPUS).prop_map(Op::On),
        2 => (0..CPUS).prop_map(Op::Hold),
        2 => (0..CPUS).prop_map(Op::Release),
        10 => (1usize..1500, 0u32..=6).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        6 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        2 => any::<usize>().prop_map(|pick| Op::TryFree { pick }),
        4 => any::<usize>().prop_map(|pick| Op::Dealloc { pick }),
        3 => (any::<usize>(), 1usize..3000).prop_map(|(pick, size)| Op::Realloc { pick, size }),
        1 => any::<usize>().prop_map(|pick| Op::DoubleFree { pick }),
        1 => (any::<usize>(), 1usize..8).prop_map(|(pick, granules)| Op::Interior { pick, granules }),
        1 => Just(Op::Foreign),
    ]
}

#[derive(Clone, Copy)]
struct Live {
    ptr: NonNull<u8>,
    size: usize,
    align: usize,
    fill: u8,
    heap: usize,
}

type Heaps = PerCpuHeap<CPUS>;

struct Model<'h> {
    heap: &'h Heaps,
    arenas: &'h [Arena],
    held: [Option<LockGuard<'h, region_heap::Heap, SpinLock>>; CPUS],
    live: Vec<Live>,
    /// Blocks freed and not handed out again (pointers, not addresses:
    /// they keep their provenance for Miri).
    freed: Vec<NonNull<u8>>,
    counters: [CpuCounters; CPUS],
    /// At least how many frees wait in each heap's inbox (reset when the
    /// model takes the heap's lock, which does them).
    deferred: [usize; CPUS],
    fill: u8,
}

impl<'h> Model<'h> {
    fn cpu(&self) -> usize {
        cpu_id()
    }

    fn heap_of(&self, ptr: NonNull<u8>) -> usize {
        let addr = ptr.as_ptr().addr();
        self.arenas
            .iter()
            .position(|a| (a.ptr.addr()..a.ptr.addr() + a.len()).contains(&addr))
            .expect("every block lies in an arena")
    }

    fn next_fill(&mut self) -> u8 {
        // Never scramble's free pattern (0xA5), which the heap reads as
        // freed memory.
        self.fill = self.fill.wrapping_add(1);
        if self.fill == 0xA5 {
            self.fill = 0xA6;
        }
        self.fill
    }

    fn intact(block: &Live) -> bool {
        // SAFETY: a live block of at least `size` bytes.
        unsafe { std::slice::from_raw_parts(block.ptr.as_ptr(), block.size) }
            .iter()
            .all(|&b| b == block.fill)
    }

    fn pick(&self, pick: usize) -> Option<usize> {
        (!self.live.is_empty()).then(|| pick % self.live.len())
    }

    /// What the heap whose arena holds `ptr` says of it, asked directly
    /// (`usable_size` validates as a free does, without counting).
    fn owner_says(&self, ptr: NonNull<u8>) -> Result<(), HeapError> {
        let heap = self.heap_of(ptr);
        // SAFETY: `usable_size` reports invalid pointers without
        // dereferencing outside the heap's memory.
        unsafe { self.heap.heap(heap).lock().usable_size(ptr) }.map(|_| ())
    }

    /// Forgets the freed blocks whose header memory the live block at
    /// `ptr` (owned by heap `heap`) now covers: a later free of them meets
    /// whatever that block's owner wrote there, not a freed header.
    fn reused(&mut self, ptr: NonNull<u8>, heap: usize) {
        // SAFETY: a live block of this heap.
        let usable = unsafe { self.heap.heap(heap).lock().usable_size(ptr) }.unwrap();
        let lo = ptr.as_ptr().addr() - region_heap::raw::DATA_OFFSET;
        let hi = ptr.as_ptr().addr() + usable;
        self.freed.retain(|f| {
            let f = f.as_ptr().addr();
            !(f - region_heap::raw::DATA_OFFSET < hi && f > lo)
        });
    }

    /// Whether `addr` lies in a live block or the header before it.
    fn covered(&self, addr: usize) -> bool {
        self.live.iter().any(|b| {
            let start = b.ptr.as_ptr().addr() - region_heap::raw::DATA_OFFSET;
            (start..b.ptr.as_ptr().addr() + b.size.max(GRANULE) + GRANULE).contains(&addr)
        })
    }

    fn step(&mut self, op: Op) {
        let cpu = self.cpu();
        match op {
            Op::On(next) => {
                self.held[next] = None;
                CPU.with(|c| c.set(next));
            }
            Op::Hold(other) => {
                if other != cpu && self.held[other].is_none() {
                    self.held[other] = Some(self.heap.heap(other).lock());
                    self.deferred[other] = 0;
                }
            }
            Op::Release(other) => self.held[other] = None,
            Op::Alloc { size, align_shift } => {
                let layout = Layout::from_size_align(size, 8 << align_shift).unwrap();
                let ptr = self.heap.allocate(layout).unwrap();
                assert_eq!(self.heap_of(ptr), cpu, "the running CPU's heap serves");
                assert!(ptr.as_ptr().addr().is_multiple_of(layout.align()));
                let fill = self.next_fill();
                // SAFETY: a fresh block of `size` bytes.
                unsafe { ptr.as_ptr().write_bytes(fill, size) };
                self.reused(ptr, cpu);
                self.live.push(Live {
                    ptr,
                    size,
                    align: layout.align(),
                    fill,
                    heap: cpu,
                });
                self.counters[cpu].allocations += 1;
            }
            Op::Free { pick } | Op::TryFree { pick } => {
                let Some(i) = self.pick(pick) else { return };
                let block = self.live[i];
                assert!(Self::intact(&block));
                let owner_held = self.held[block.heap].is_some();
                let result = if matches!(op, Op::TryFree { .. }) || owner_held {
                    // SAFETY: a live block, given up if the call frees it.
                    let tried = unsafe { self.heap.try_free(block.ptr) };
                    if owner_held {
                        assert!(tried.is_none(), "the owner is locked: no wait");
                        assert!(Self::intact(&block), "and the block untouched");
                        return;
                    }
                    tried.expect("the owner is not locked")
                } else {
                    // SAFETY: as above.
                    unsafe { self.heap.free(block.ptr) }
                };
                assert!(result.is_ok(), "{result:?}");
                self.live.swap_remove(i);
                self.freed.push(block.ptr);
                self.counters[cpu].frees += 1;
                if block.heap != cpu {
                    self.counters[cpu].remote_frees += 1;
                }
            }
            Op::Dealloc { pick } => {
                let Some(i) = self.pick(pick) else { return };
                let block = self.live[i];
                assert!(Self::intact(&block));
                if self.held[block.heap].is_some() {
                    if block.heap == cpu || self.deferred[block.heap] >= INBOX_SLOTS {
                        return; // the free would wait for the held lock
                    }
                    self.deferred[block.heap] += 1;
                }
                let layout = Layout::from_size_align(block.size, block.align).unwrap();
                // SAFETY: a live block allocated with `layout`, given up.
                unsafe { self.heap.dealloc(block.ptr.as_ptr(), layout) };
                if self.held[block.heap].is_some() {
                    assert!(Self::intact(&block), "waiting, untouched");
                }
                self.live.swap_remove(i);
                self.freed.push(block.ptr);
                self.counters[cpu].frees += 1;
                if block.heap != cpu {
                    self.counters[cpu].remote_frees += 1;
                }
            }
            Op::Realloc { pick, size } => {
                let Some(i) = self.pick(pick) else { return };
                let block = self.live[i];
                if self.held[block.heap].is_some() {
                    return; // realloc waits for the owner's lock
                }
                let layout = Layout::from_size_align(block.size, block.align).unwrap();
                // SAFETY: a live block allocated with `layout`.
                let new = unsafe { self.heap.realloc(block.ptr.as_ptr(), layout, size) };
                let new = NonNull::new(new).expect("the arena has room");
                assert_eq!(self.heap_of(new), block.heap, "realloc stays in the owner");
                let kept = Live {
                    ptr: new,
                    size: block.size.min(size),
                    ..block
                };
                assert!(Self::intact(&kept), "realloc kept the bytes");
                // SAFETY: the block now holds `size` bytes.
                unsafe { new.as_ptr().write_bytes(block.fill, size) };
                if new != block.ptr {
                    self.freed.push(block.ptr);
                }
                self.reused(new, block.heap);
                self.live[i] = Live {
                    ptr: new,
                    size,
                    ..block
                };
            }
            Op::DoubleFree { pick } => {
                if self.freed.is_empty() || self.held.iter().any(Option::is_some) {
                    return; // the slow path asks every heap, waiting
                }
                let ptr = self.freed[pick % self.freed.len()];
                let addr = ptr.as_ptr().addr();
                if self.covered(addr) {
                    return; // its memory is a live block's again
                }
                let owner_says = self.owner_says(ptr);
                // A double free; or, once the freed header was absorbed by
                // a merge and then overwritten (a later free block's list
                // links, `scramble`'s free pattern), a pointer to no block.
                // Either way, the error the owning heap gives.
                assert!(
                    matches!(
                        owner_says,
                        Err(HeapError::DoubleFree { .. } | HeapError::NotBlockStart { .. })
                    ),
                    "{owner_says:?}"
                );
                // SAFETY: a freed block of an arena: readable heap memory.
                let result = unsafe { self.heap.free(ptr) };
                assert_eq!(result.map(|_| ()), owner_says, "the owning heap's error");
            }
            Op::Interior { pick, granules } => {
                if self.held.iter().any(Option::is_some) {
                    return;
                }
                let Some(i) = self.pick(pick) else { return };
                let block = self.live[i];
                if block.size <= granules * GRANULE {
                    return;
                }
                let inner =
                    NonNull::new(block.ptr.as_ptr().wrapping_add(granules * GRANULE)).unwrap();
                // SAFETY: the word before `inner` lies in the live block.
                let result = unsafe { self.heap.free(inner) };
                assert_eq!(
                    result,
                    Err(HeapError::NotBlockStart {
                        addr: inner.as_ptr().addr()
                    })
                );
                assert!(Self::intact(&block));
            }
            Op::Foreign => {
                if self.held.iter().any(Option::is_some) {
                    return;
                }
                let foreign = [0x77u64; 8];
                let ptr = NonNull::new(foreign.as_ptr().wrapping_add(4) as *mut u8).unwrap();
                // SAFETY: the word before `ptr` lies in `foreign`.
                let result = unsafe { self.heap.free(ptr) };
                assert_eq!(
                    result,
                    Err(HeapError::NotFromHeap {
                        addr: ptr.as_ptr().addr()
                    })
                );
                assert_eq!(foreign, [0x77; 8]);
            }
        }
    }

    fn finish(mut self) {
        self.held = [None, None, None];
        for block in &self.live {
            assert!(Self::intact(block));
        }
        self.heap.check().unwrap();
        assert_eq!(self.heap.stats().used_blocks, self.live.len());
        for cpu in 0..CPUS {
            assert_eq!(self.heap.cpu_counters(cpu), self.counters[cpu], "cpu {cpu}");
        }
        for block in self.live.drain(..) {
            // SAFETY: live blocks, no longer used.
            unsafe { self.heap.free(block.ptr) }.unwrap();
        }
        assert_eq!(self.heap.stats().used_blocks, 0);
    }
}

fn run(ops: Vec<Op>) {
    let arenas: Vec<Arena> = (0..CPUS).map(|_| Arena::new(ARENA)).collect();
    let heap: Heaps = PerCpuHeap::new(cpu_id);
    for (cpu, arena) in arenas.iter().enumerate() {
        // SAFETY: each arena outlives the heap and is given to one heap.
        unsafe { heap.add_memory(cpu, arena.ptr, arena.len()) }.unwrap();
    }
    CPU.with(|c| c.set(0));
    let mut model = Model {
        heap: &heap,
        arenas: &arenas,
        held: [None, None, None],
        live: Vec::new(),
        freed: Vec::new(),
        counters: [CpuCounters::default(); CPUS],
        deferred: [0; CPUS],
        fill: 0,
    };
    for op in ops {
        model.step(op);
    }
    model.finish();
}

proptest! {
    // Cases: PROPTEST_CASES (256 by default; `cargo xtask test` runs 4
    // under Miri). No failure file: a finding is printed, and Miri has no
    // file system.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn per_cpu_heap_matches_the_model(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 40 } else { 300 })) {
        run(ops);
    }
}
