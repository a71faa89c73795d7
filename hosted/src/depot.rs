//! The depot: whole bins of cached blocks, passed from the threads that
//! free them to the threads that allocate them, without the heaps.
//!
//! When one thread allocates and another frees (a producer and its
//! consumer), the freeing thread's bin fills up and the allocating
//! thread's bin runs dry, over and over. Without the depot, the first
//! gives half its bin back to the heaps block by block and the second
//! takes a batch out of them again: every block crosses a heap lock twice
//! and is merged and split on the way. With it, a full bin goes whole
//! onto its shelf here as one [`Chain`] (one lock, no walk; an over-budget
//! cache's halves go there too), and an
//! empty bin takes a chain from the shelf before it asks a heap; the
//! blocks stay used in their heaps throughout, exactly as cached blocks
//! do. (tcmalloc's transfer cache plays this part.)
//!
//! Bounds: a shelf holds at most [`SLOTS`] chains, the depot at most
//! [`MAX_BYTES`] of blocks; a chain that does not fit goes back to the
//! heaps as before. Only while several threads have their cache active
//! does a thread shelve anything (`thread::several_active`): for a single
//! thread the depot would only keep blocks from merging in the heap. Neither side ever waits here: a shelf whose lock is
//! busy is skipped (`try_lock`), as if it were full or empty.
//!
//! Misuses: chains keep the bins' sealed links, so a write after free into
//! a block on a shelf is reported by the thread that takes the chain, when
//! its pop or flush reaches the block. A free of a block whose seal fits
//! looks on the shelf of the block's bin (see [`Depot::contains`]), so a
//! double free of a shelved block is reported, not cached twice.
//!
//! Fork: a shelf whose lock `fork` copied held is emptied in the child (its
//! chains leak there), see [`Depot::after_fork_in_child`].
//!
//! Invariants: every shelved chain is a [`Chain`] of its shelf's bin (its
//! invariant holds: nothing else uses its blocks); `bytes` is at least the
//! sum of the shelved chains' bytes (a chain is counted a moment before it
//! is shelved), and that sum never exceeds [`MAX_BYTES`] (a put that would
//! take `bytes` past it is refused and uncounted, so `bytes` itself exceeds
//! the bound only for that moment).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Mutex;

use crate::lock::acquire;
use crate::seal::Damaged;
use crate::tcache::{Chain, BINS};

/// Chains one shelf holds.
pub const SLOTS: usize = 4;
/// Bytes of blocks the whole depot holds, at most.
pub const MAX_BYTES: usize = 4 << 20;

/// The chains of one bin.
struct Shelf {
    chains: [Option<Chain>; SLOTS],
    len: usize,
}

/// A shelf on a cache line of its own (threads using different bins do
/// not share lines).
#[repr(align(64))]
struct Padded(Mutex<Shelf>);

/// The shelves of every bin.
pub struct Depot {
    shelves: [Padded; BINS],
    bytes: AtomicUsize,
}

impl Depot {
    /// An empty depot.
    pub const fn new() -> Self {
        Self {
            shelves: [const {
                Padded(Mutex::new(Shelf {
                    chains: [const { None }; SLOTS],
                    len: 0,
                }))
            }; BINS],
            bytes: AtomicUsize::new(0),
        }
    }

    /// Shelves `chain`; gives it back if its shelf is full or busy or the
    /// depot would exceed [`MAX_BYTES`].
    pub fn put(&self, chain: Chain) -> Result<(), Chain> {
        let bytes = chain.bytes();
        // Counted before it is shelved, so that racing puts never exceed
        // the bound together.
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_BYTES {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(chain);
        }
        let shelved = match self.shelves[chain.bin()].0.try_lock() {
            Some(mut shelf) => shelf.push(chain),
            None => Err(chain),
        };
        if shelved.is_err() {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        shelved
    }

    /// The chain shelved last for bin `bin`, if any (and its shelf is not
    /// busy).
    pub fn take(&self, bin: usize) -> Option<Chain> {
        if self.bytes.load(Ordering::Relaxed) == 0 {
            return None; // the common case of a single thread: no lock
        }
        let mut shelf = self.shelves[bin].0.try_lock()?;
        let chain = shelf.pop()?;
        self.bytes.fetch_sub(chain.bytes(), Ordering::Relaxed);
        Some(chain)
    }

    /// Whether `block` is on bin `bin`'s shelf (waits for the shelf: a
    /// double-free check must not miss it); `Err` if a walk meets a block
    /// overwritten since it was cached.
    pub fn contains(&self, bin: usize, block: NonNull<u8>, key: usize) -> Result<bool, Damaged> {
        let shelf = acquire(&self.shelves[bin].0);
        for chain in shelf.chains[..shelf.len].iter().flatten() {
            if chain.contains(block, key)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Blocks on the shelves (waits for each shelf: diagnostics).
    pub fn blocks(&self) -> usize {
        let mut blocks = 0;
        for padded in &self.shelves {
            let shelf = acquire(&padded.0);
            let len = shelf.len;
            blocks += shelf.chains[..len]
                .iter()
                .flatten()
                .map(|c| c.len() as usize)
                .sum::<usize>();
        }
        blocks
    }

    /// Bytes of the shelved blocks.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// In a child just forked: empties every shelf whose lock `fork`
    /// copied held (its chains leak in the child) and recounts the bytes.
    ///
    /// # Safety
    /// Only in a child just forked, in its one thread, before the child
    /// makes any other call into the depot.
    pub unsafe fn after_fork_in_child(&self) {
        let mut bytes = 0;
        for padded in &self.shelves {
            if padded.0.is_locked() {
                // SAFETY: its holder does not exist in the child (caller).
                unsafe { padded.0.force_unlock() };
                let mut shelf = acquire(&padded.0);
                // The interrupted holder may have left a slot half
                // written: drop every chain unread (a chain owns no
                // resource: its blocks simply leak).
                shelf.chains = [const { None }; SLOTS];
                shelf.len = 0;
            }
            let shelf = acquire(&padded.0);
            bytes += shelf.chains[..shelf.len]
                .iter()
                .flatten()
                .map(Chain::bytes)
                .sum::<usize>();
        }
        self.bytes.store(bytes, Ordering::Relaxed);
    }
}

impl Default for Depot {
    fn default() -> Self {
        Self::new()
    }
}

impl Shelf {
    fn push(&mut self, chain: Chain) -> Result<(), Chain> {
        if self.len == SLOTS {
            return Err(chain);
        }
        self.chains[self.len] = Some(chain);
        self.len += 1;
        Ok(())
    }

    fn pop(&mut self) -> Option<Chain> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.chains[self.len].take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcache::{block_of_bin, salt, Bins};

    const KEY: usize = 0x5eed_0123_4567_89ab;
    const BIN: usize = 3;

    /// `n` test blocks of bin 3 (64 usable bytes after a 16-byte header).
    fn slots(n: usize) -> Vec<[u64; 10]> {
        vec![[0u64; 10]; n]
    }

    fn data(slot: &mut [u64; 10]) -> NonNull<u8> {
        NonNull::new(slot.as_mut_ptr().wrapping_add(2).cast::<u8>()).unwrap()
    }

    /// A chain of the given blocks, made as a full bin makes one.
    fn chain_of(blocks: &[NonNull<u8>]) -> Chain {
        let bins = Bins::for_tests();
        for &p in blocks {
            // SAFETY: test blocks of the bin's size, each pushed once.
            unsafe { bins.push(BIN, p, salt(p, KEY)) };
        }
        let chain = bins.detach_all(BIN, KEY).into_chain();
        chain.ok().expect("a whole bin makes a chain")
    }

    #[test]
    fn a_shelved_chain_fills_an_empty_bin_of_another_thread() {
        let depot = Depot::new();
        let mut mem = slots(5);
        let blocks: Vec<_> = mem.iter_mut().map(data).collect();
        depot.put(chain_of(&blocks)).ok().unwrap();
        assert_eq!(depot.bytes(), 5 * block_of_bin(BIN));
        assert_eq!(depot.blocks(), 5);
        assert!(depot.take(BIN + 1).is_none(), "shelves are per bin");
        let chain = depot.take(BIN).unwrap();
        assert_eq!((chain.bin(), chain.len()), (BIN, 5));
        assert_eq!(depot.bytes(), 0);
        assert!(depot.take(BIN).is_none());
        let taker = Bins::for_tests();
        taker.adopt(chain).ok().unwrap();
        assert_eq!(taker.len(BIN), 5);
        assert_eq!(taker.bytes(), 5 * block_of_bin(BIN));
        let popped: Vec<_> = (0..5)
            .map(|_| taker.pop(BIN, KEY).unwrap().unwrap())
            .collect();
        let mut expected = blocks.clone();
        expected.reverse();
        assert_eq!(popped, expected, "the bin's order, newest first");
        assert_eq!(taker.pop(BIN, KEY), Ok(None));
    }

    #[test]
    fn shelves_and_the_depot_are_bounded() {
        let depot = Depot::new();
        let mut mem = slots(SLOTS + 1);
        let blocks: Vec<_> = mem.iter_mut().map(data).collect();
        for &b in &blocks[..SLOTS] {
            depot.put(chain_of(&[b])).ok().unwrap();
        }
        let refused = depot.put(chain_of(&blocks[SLOTS..])).err().unwrap();
        assert_eq!(refused.len(), 1, "a full shelf gives the chain back");
        assert_eq!(depot.bytes(), SLOTS * block_of_bin(BIN));
        // A bin is never fuller than its limit, so a chain is small; count
        // a depot as almost full to reach the byte bound.
        let other = Depot::new();
        other
            .bytes
            .store(MAX_BYTES - block_of_bin(BIN) + 1, Ordering::Relaxed);
        assert!(other.put(refused).is_err(), "past MAX_BYTES");
        assert_eq!(other.bytes(), MAX_BYTES - block_of_bin(BIN) + 1);
    }

    #[test]
    fn a_busy_shelf_is_skipped_not_waited_for() {
        let depot = Depot::new();
        let mut mem = slots(1);
        let block = data(&mut mem[0]);
        depot.put(chain_of(&[block])).ok().unwrap();
        let guard = depot.shelves[BIN].0.lock();
        assert!(depot.take(BIN).is_none());
        let mut more = slots(1);
        assert!(depot.put(chain_of(&[data(&mut more[0])])).is_err());
        assert_eq!(
            depot.bytes(),
            block_of_bin(BIN),
            "a refused put is uncounted"
        );
        drop(guard);
        assert!(depot.take(BIN).is_some());
    }

    #[test]
    fn a_shelved_block_is_found_and_damage_is_reported() {
        let depot = Depot::new();
        let mut mem = slots(3);
        let blocks: Vec<_> = mem.iter_mut().map(data).collect();
        depot.put(chain_of(&blocks)).ok().unwrap();
        for &b in &blocks {
            assert_eq!(depot.contains(BIN, b, KEY), Ok(true));
        }
        let mut stranger = slots(1);
        let outside = data(&mut stranger[0]);
        assert_eq!(depot.contains(BIN, outside, KEY), Ok(false));
        assert_eq!(depot.contains(BIN + 1, blocks[0], KEY), Ok(false));
        // A write after free of zeros over the middle block's link and seal
        // (the chain runs newest first: blocks[2], blocks[1], blocks[0]).
        // SAFETY: the test's own slot.
        unsafe { blocks[1].as_ptr().cast::<[u64; 2]>().write([0, 0]) };
        assert_eq!(depot.contains(BIN, blocks[2], KEY), Ok(true));
        assert_eq!(depot.contains(BIN, outside, KEY), Err(Damaged(blocks[1])));
        // The thread that takes the chain stops at the damaged block.
        let taker = Bins::for_tests();
        taker.adopt(depot.take(BIN).unwrap()).ok().unwrap();
        assert_eq!(taker.pop(BIN, KEY), Ok(Some(blocks[2])));
        assert_eq!(taker.pop(BIN, KEY), Err(Damaged(blocks[1])));
    }

    #[test]
    fn a_fork_empties_the_shelves_it_copied_held() {
        let depot = Depot::new();
        let mut mem = slots(2);
        let blocks: Vec<_> = mem.iter_mut().map(data).collect();
        depot.put(chain_of(&blocks[..1])).ok().unwrap();
        let mut other = slots(1);
        let kept = data(&mut other[0]);
        let bins = Bins::for_tests();
        // SAFETY: a test block of bin 4's size class as far as the test
        // goes (nothing reads past its first 16 bytes).
        unsafe { bins.push(BIN + 1, kept, salt(kept, KEY)) };
        depot
            .put(bins.detach_all(BIN + 1, KEY).into_chain().ok().unwrap())
            .ok()
            .unwrap();
        // A thread that held bin 3's shelf at the fork.
        core::mem::forget(depot.shelves[BIN].0.lock());
        // SAFETY: no other thread uses `depot`.
        unsafe { depot.after_fork_in_child() };
        assert!(depot.take(BIN).is_none(), "the held shelf is emptied");
        assert_eq!(depot.bytes(), block_of_bin(BIN + 1), "recounted");
        assert_eq!(depot.take(BIN + 1).map(|c| c.len()), Some(1));
        depot.put(chain_of(&blocks[1..])).ok().unwrap();
        assert_eq!(depot.take(BIN).map(|c| c.len()), Some(1), "usable again");
    }
}
