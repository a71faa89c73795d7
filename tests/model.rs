//! Property tests: random operation sequences replayed against a shadow model.
//!
//! The model is the list of live blocks with their size, alignment and fill
//! byte. After every step the test checks alignment, bounds, no overlap, the
//! fill pattern of every block it frees or moves, the heap's own `check()`,
//! and that the stats agree with the model. Regions are added and extended
//! from pieces of one arena as the sequence goes, touching or not.

mod common;

use common::Arena;
use std::alloc::Layout;
use std::ptr::NonNull;

use proptest::prelude::*;
use region_heap::{
    BestFit, FitPolicy, GoodFit, Heap, HeapError, RegionId, GRANULE, MIN_BLOCK, SLAB_MAX, SLAB_STEP,
};

const PIECES: usize = 8;
const PIECE: usize = 64 << 10;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align_shift: u32,
    },
    AllocBatch {
        size: usize,
        count: usize,
    },
    Free {
        pick: usize,
    },
    Realloc {
        pick: usize,
        size: usize,
    },
    AddPiece {
        as_region: bool,
        priority: u8,
    },
    Reserve {
        offset: usize,
        size: usize,
    },
    QuickDepth {
        depth: u8,
    },
    /// Slab front end on or off (objects already handed out stay valid).
    Slabs {
        on: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0usize..1500, prop_oneof![8 => 0u32..=4, 2 => 5u32..=12])
            .prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        2 => (0usize..600, 1usize..40).prop_map(|(size, count)| Op::AllocBatch { size, count }),
        7 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        3 => (any::<usize>(), 0usize..3000).prop_map(|(pick, size)| Op::Realloc { pick, size }),
        1 => (any::<bool>(), 0u8..3).prop_map(|(as_region, priority)| Op::AddPiece { as_region, priority }),
        1 => (0usize..PIECE * PIECES, 1usize..512).prop_map(|(offset, size)| Op::Reserve { offset, size }),
        1 => (0u8..=40).prop_map(|depth| Op::QuickDepth { depth }),
        1 => any::<bool>().prop_map(|on| Op::Slabs { on }),
    ]
}

struct Live {
    ptr: NonNull<u8>,
    size: usize,
    align: usize,
    fill: u8,
}

struct Model<P: FitPolicy> {
    heap: Heap<P>,
    arena: Arena,
    live: Vec<Live>,
    next_piece: usize,
    regions: Vec<RegionId>,
    fill: u8,
}

impl<P: FitPolicy> Model<P> {
    fn new(heap: Heap<P>) -> Self {
        let mut model = Model {
            heap,
            arena: Arena::new(PIECE * PIECES),
            live: Vec::new(),
            next_piece: 0,
            regions: Vec::new(),
            fill: 0,
        };
        model.add_piece(true, 0);
        model
    }

    /// Gives the next piece of the arena to the heap: as a new region, or
    /// as a chunk of an existing region (joined when it touches one).
    fn add_piece(&mut self, as_region: bool, priority: u8) {
        if self.next_piece == PIECES {
            return;
        }
        // Pieces go in a scattered order, so some touch and some do not.
        let order = [0, 2, 1, 5, 4, 3, 7, 6];
        let start = self.arena.ptr.wrapping_add(order[self.next_piece] * PIECE);
        self.next_piece += 1;
        // SAFETY: each piece is given once and outlives the heap.
        unsafe {
            if as_region || self.regions.is_empty() {
                let id = self
                    .heap
                    .add_region_with_priority(start, PIECE, priority)
                    .unwrap();
                self.regions.push(id);
            } else {
                let id = self.regions[priority as usize % self.regions.len()];
                self.heap.extend(id, start, PIECE).unwrap();
            }
        }
    }

    fn next_fill(&mut self) -> u8 {
        self.fill = self.fill.wrapping_add(1).max(1);
        self.fill
    }

    fn write(ptr: NonNull<u8>, size: usize, fill: u8) {
        // SAFETY: `size` bytes of a live block.
        unsafe { ptr.as_ptr().write_bytes(fill, size) };
    }

    fn verify(live: &Live, len: usize) {
        // SAFETY: a live block of at least `len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(live.ptr.as_ptr(), len) };
        assert!(
            bytes.iter().all(|&b| b == live.fill),
            "block {:p} lost its data",
            live.ptr
        );
    }

    fn admit(&mut self, ptr: NonNull<u8>, size: usize, align: usize) {
        let addr = ptr.as_ptr().addr();
        let base = self.arena.ptr.addr();
        // Blocks are granule-aligned; a slab object (a request of at most
        // `SLAB_MAX` bytes aligned to at most a granule) may be aligned to
        // `SLAB_STEP` only, when its alignment asks no more.
        let least = if size <= SLAB_MAX && align <= GRANULE {
            SLAB_STEP
        } else {
            GRANULE
        };
        assert_eq!(addr % align.max(least), 0, "misaligned");
        assert!(
            addr >= base && addr + size <= base + PIECE * PIECES,
            "out of the arena"
        );
        // SAFETY: a block just handed out.
        let usable = unsafe { self.heap.usable_size(ptr) }.unwrap();
        assert!(usable >= size);
        for other in &self.live {
            let o = other.ptr.as_ptr().addr();
            assert!(addr + size <= o || o + other.size <= addr, "overlap");
        }
        let fill = self.next_fill();
        Self::write(ptr, size, fill);
        self.live.push(Live {
            ptr,
            size,
            align,
            fill,
        });
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Alloc { size, align_shift } => {
                let align = 1usize << align_shift;
                let layout = Layout::from_size_align(size, align).unwrap();
                match self.heap.allocate(layout) {
                    Ok(ptr) => self.admit(ptr, size, align),
                    Err(HeapError::OutOfMemory { .. }) => {
                        // Never refused while a free block could obviously
                        // serve it: room for the data, the alignment and a
                        // leading gap too small to be a block.
                        let largest = self.heap.stats().largest_free;
                        assert!(
                            largest < size + align + MIN_BLOCK,
                            "refused {size}/{align} with {largest} free"
                        );
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::AllocBatch { size, count } => {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let before = self.heap.stats().allocations;
                let mut out = vec![NonNull::dangling(); count];
                match self.heap.allocate_batch(layout, &mut out) {
                    Ok(got) => {
                        assert!((1..=count).contains(&got));
                        assert_eq!(self.heap.stats().allocations, before + got as u64);
                        if got < count {
                            // Fewer only when no free block holds one more.
                            let largest = self.heap.stats().largest_free;
                            assert!(
                                largest < size + MIN_BLOCK,
                                "stopped at {got} with {largest} free"
                            );
                        }
                        for &ptr in &out[..got] {
                            self.admit(ptr, size, 8);
                        }
                    }
                    Err(HeapError::OutOfMemory { .. }) => {
                        let largest = self.heap.stats().largest_free;
                        assert!(
                            largest < size + MIN_BLOCK,
                            "refused {size} with {largest} free"
                        );
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::Free { pick } if !self.live.is_empty() => {
                let live = self.live.swap_remove(pick % self.live.len());
                Self::verify(&live, live.size);
                let layout = Layout::from_size_align(live.size, live.align).unwrap();
                // SAFETY: a live block of this heap, dropped from the model.
                unsafe { self.heap.deallocate(live.ptr, layout) }.unwrap();
            }
            Op::Realloc { pick, size } if !self.live.is_empty() => {
                let i = pick % self.live.len();
                Self::verify(&self.live[i], self.live[i].size);
                let (ptr, old, align) = (self.live[i].ptr, self.live[i].size, self.live[i].align);
                let layout = Layout::from_size_align(old, align).unwrap();
                // SAFETY: a live block of this heap.
                match unsafe { self.heap.realloc(ptr, layout, size) } {
                    Ok(new) => {
                        let mut live = self.live.swap_remove(i);
                        live.ptr = new;
                        Self::verify(&live, old.min(size));
                        self.admit(new, size, align);
                    }
                    Err(HeapError::OutOfMemory { .. }) => Self::verify(&self.live[i], old),
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::AddPiece {
                as_region,
                priority,
            } => self.add_piece(as_region, priority),
            Op::Reserve { offset, size } => {
                let start = self.arena.ptr.wrapping_add(offset & !(GRANULE - 1));
                match self.heap.reserve(start, size) {
                    Ok(ptr) => {
                        assert_eq!(ptr.as_ptr(), start);
                        self.admit(ptr, size, GRANULE);
                    }
                    Err(HeapError::RangeUnavailable { .. }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::Slabs { on } => self.heap.set_slabs(on),
            Op::QuickDepth { depth } => {
                self.heap.set_quick_depth(depth).unwrap();
                assert_eq!(self.heap.stats().cached_blocks, 0, "flushed");
            }
            _ => {}
        }
        self.heap.check().unwrap();
        let stats = self.heap.stats();
        assert_eq!(stats.used_blocks, self.live.len());
        assert_eq!(
            stats.total_bytes,
            stats.in_use_bytes + stats.free_bytes + stats.metadata_bytes
        );
        assert!(stats.allocated_bytes >= self.live.iter().map(|l| l.size).sum::<usize>());
    }

    fn finish(mut self) {
        for live in std::mem::take(&mut self.live) {
            Self::verify(&live, live.size);
            // SAFETY: a live block of this heap.
            unsafe { self.heap.free(live.ptr) }.unwrap();
        }
        self.heap.check().unwrap();
        self.heap.flush_quick_lists().unwrap();
        self.heap.check().unwrap();
        let stats = self.heap.stats();
        assert_eq!((stats.used_blocks, stats.in_use_bytes), (0, 0));
        assert_eq!(
            stats.free_blocks, stats.chunks,
            "everything merged back: one free block per chunk"
        );
    }
}

/// Longest operation sequence: shorter under Miri, which is ~1000x slower.
const MAX_OPS: usize = if cfg!(miri) { 40 } else { 200 };

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn first_fit_matches_the_model(slabs: bool, ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        let mut model = Model::new(Heap::<GoodFit>::with_policy().with_slabs(slabs));
        for op in &ops {
            model.step(op);
        }
        model.finish();
    }

    #[test]
    fn best_fit_matches_the_model(slabs: bool, ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        let mut model = Model::new(Heap::<BestFit>::with_policy().with_slabs(slabs));
        for op in &ops {
            model.step(op);
        }
        model.finish();
    }
}
