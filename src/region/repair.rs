//! Quarantine: damaged blocks are taken out of use, and the heap goes on.
//!
//! When an operation finds damage ([`super::nav`] reports it, or a `crc`,
//! `guard` or `scramble` check fails), it returns `Corrupted` and the heap
//! calls [`Region::repair`] with the address it named. The block ring of
//! each chunk is the region's source of truth, so repair works from it:
//!
//! 1. **Mend the rings.** Each chunk is walked forward from its first block
//!    and backward from its sentinel (whose place the chunk table knows),
//!    accepting only own headers whose links agree. Where the two walks
//!    stop, the bytes between them become one *quarantined* block: a fresh
//!    header in state `Quarantined`, linked to the good blocks on both
//!    sides. A damaged sentinel is rewritten in place.
//! 2. **Rebuild the lists.** The free index and the quick lists are cleared
//!    and refilled from the rings: runs of free and cached blocks merge
//!    into one free block each; the block that the error named is
//!    quarantined instead (its header or free memory is what was found
//!    damaged, whatever state it claims); used and quarantined blocks stay.
//!    The slab lists are cleared too, and every slab block whose header
//!    still proves (seals, counts against its bitmap, checksum) goes back
//!    on its class's list if it has a free object; one that does not prove,
//!    or one of whose objects the error named (a write after free found
//!    when the object was reused: it stays taken, and its bit could not
//!    tell it from a live object), is quarantined whole (see `slabs`).
//! 3. **Recount.** The counters are recomputed from the walk.
//!
//! A quarantined block is never handed out, merged or freed again (a free
//! of it is `Corrupted { what: Quarantined }`); `check()` accepts it and
//! `dump()` lists it, and the stats count it apart. Quarantining more than
//! the damage is always safe (memory is lost, never shared); memory is
//! never handed out unless both walks agree on where it is. Repair costs
//! a walk of the region and runs only after damage.

use crate::block::{Block, RelLink, State, GRANULE, MIN_BLOCK};
use crate::clist::Link;
use crate::index::FreeIndex;
use crate::integrity;
use crate::quick::QuickLists;
use crate::slab::OBJECTS_OFFSET;

use super::chunks::Chunk;
use super::{Counters, Region};

/// Ranges quarantined in one chunk before the rest of it is given up.
const MAX_MENDS: usize = 16;

/// What a walk of one chunk's ring found.
enum Break {
    /// The ring is whole.
    None,
    /// The ring is whole but for the sentinel's prev link, which must name
    /// this block.
    SentinelPrev(Block),
    /// `(before, from, to)`: the bytes `[from, to)` must become one
    /// quarantined block between the good blocks `before` and `to`.
    Range(Block, Block, Block),
}

impl Region {
    /// Quarantines the damage reported at `damaged` and every damaged
    /// header of the region's rings, rebuilds the free lists from the
    /// rings, and recounts.
    #[cold]
    #[inline(never)]
    pub(crate) fn repair(&mut self, damaged: usize) {
        for i in 0..self.chunks.len() {
            let chunk = self.chunks.as_slice()[i];
            self.mend_ring(&chunk);
        }
        self.rebuild_lists(damaged);
    }

    /// Whether `addr` lies among the objects of the slab block `block` of
    /// `size` bytes (past its slab header).
    fn is_in_objects(block: Block, size: usize, addr: usize) -> bool {
        let objects = block.data().as_ptr().addr() + OBJECTS_OFFSET;
        objects <= addr && addr < block.addr() + size
    }

    /// Makes the block ring of `chunk` whole, quarantining what lies
    /// between the good blocks found from both ends.
    fn mend_ring(&mut self, chunk: &Chunk) {
        let sentinel = Self::block_in_sentinel(chunk);
        let rewritten = !self.is_own_sentinel(chunk, sentinel);
        if rewritten {
            // SAFETY: the sentinel's place is the chunk table's; its links
            // are set again right below and by the quarantine.
            unsafe { self.rewrite_sentinel(chunk) };
        }
        for _ in 0..MAX_MENDS {
            match self.first_break(chunk, rewritten) {
                Break::None => return,
                Break::SentinelPrev(last) => {
                    // SAFETY: the walk proved every block up to `last`.
                    unsafe { RelLink::set_prev(sentinel.link(), last.link()) };
                    return;
                }
                // SAFETY: `before` and `to` are good headers of `chunk`
                // around `from < to`, and nothing between them is trusted.
                Break::Range(before, from, to) => unsafe {
                    self.quarantine_range(chunk, before, from, to)
                },
            }
        }
        // Damage everywhere: give up the whole chunk.
        let first = Self::block_in(chunk, chunk.first());
        let sentinel = Self::block_in_sentinel(chunk);
        // SAFETY: the chunk's blocks end at its sentinel.
        unsafe { self.quarantine_range(chunk, sentinel, first, sentinel) };
    }

    /// The chunk's sentinel header.
    fn block_in_sentinel(chunk: &Chunk) -> Block {
        // SAFETY: the sentinel header lies inside the chunk.
        unsafe { Block::from_header(chunk.at(chunk.sentinel()).cast()) }
    }

    /// Whether the sentinel's header is intact and links to the first block.
    fn is_own_sentinel(&self, chunk: &Chunk, sentinel: Block) -> bool {
        sentinel.owner() == self.addr()
            && sentinel.state() == State::Sentinel
            && sentinel.checksum_ok()
            && super::nav::offset(sentinel.addr(), sentinel.raw_links().0) == Some(chunk.first())
    }

    /// Writes a fresh sentinel header whose next is the chunk's first block
    /// (its prev is set by the walk that follows).
    ///
    /// # Safety
    /// `chunk` is a chunk of this region.
    unsafe fn rewrite_sentinel(&mut self, chunk: &Chunk) {
        let first = Self::block_in(chunk, chunk.first());
        // SAFETY: the sentinel's place inside the chunk (caller).
        unsafe {
            let sentinel = Block::write(chunk.at(chunk.sentinel()), self.addr(), State::Sentinel);
            RelLink::set_next(sentinel.link(), first.link());
        }
    }

    /// The first break of `chunk`'s ring, walking forward from its first
    /// block over own headers whose prev link names the block before.
    ///
    /// When the walk reaches the sentinel and the sentinel's prev link
    /// disagrees, the walk alone is trusted only if the sentinel was just
    /// rewritten (its prev link is unknown): otherwise the sentinel's
    /// intact link outvotes a damaged next link that skipped blocks, and
    /// the walk from the back decides.
    fn first_break(&self, chunk: &Chunk, sentinel_rewritten: bool) -> Break {
        let sentinel = Self::block_in_sentinel(chunk);
        let mut before = sentinel;
        let mut at = Self::block_in(chunk, chunk.first());
        loop {
            let back = Self::prev_in(chunk, at) == Some(before);
            if at == sentinel {
                return if back {
                    Break::None
                } else if sentinel_rewritten {
                    // Every block up to here links both ways; the
                    // sentinel's prev link is the one unknown.
                    Break::SentinelPrev(before)
                } else {
                    self.backward_to(chunk, before, at)
                };
            }
            if !back || !self.is_own_header(at) || self.is_inside_cut_off(at.addr()) {
                return self.backward_to(chunk, before, at);
            }
            match Self::next_in(chunk, at) {
                Some(next) => {
                    before = at;
                    at = next;
                }
                // `at`'s own next link is bad; the walk from the back finds
                // where it really ends.
                None => return self.backward_to(chunk, before, at),
            }
        }
    }

    /// Completes [`Region::first_break`]: `before` is the last good block
    /// from the front (the sentinel if none) and its next link leads to
    /// `at`. Walks back from the sentinel over own headers whose next link
    /// names the block after, down to the break, and places the
    /// quarantined block.
    fn backward_to(&self, chunk: &Chunk, before: Block, at: Block) -> Break {
        let sentinel = Self::block_in_sentinel(chunk);
        let mut to = sentinel;
        while let Some(prev) = Self::prev_in(chunk, to) {
            let past_front = before != sentinel && prev.addr() <= before.addr();
            if (prev == at && !self.skipped_to(chunk, before, at))
                || past_front
                || Self::next_in(chunk, prev) != Some(to)
                || !self.is_own_header(prev)
                || self.is_inside_cut_off(prev.addr())
            {
                break;
            }
            to = prev;
        }
        let first = Self::block_in(chunk, chunk.first());
        let (mut before, mut from) = if before == sentinel {
            (sentinel, first)
        } else if at.addr() > before.addr()
            && Self::prev_in(chunk, to) == Some(at)
            && !self.has_header_between(chunk, before.addr(), at.addr())
        {
            // Both walks agree on where the damaged block starts, and
            // `before`'s next link skipped no header on the way to it.
            (before, at)
        } else {
            // `before`'s next link agrees with nothing behind: it may be
            // damaged itself, so it goes too.
            (Self::prev_in(chunk, before).unwrap_or(sentinel), before)
        };
        // A quarantined block needs room for a header: take good blocks
        // along on either side when the gap is too small.
        while to.addr() - from.addr() < MIN_BLOCK && to != sentinel {
            to = Self::next_in(chunk, to).unwrap_or(sentinel);
        }
        while to.addr() - from.addr() < MIN_BLOCK && before != sentinel {
            from = before;
            before = Self::prev_in(chunk, before).unwrap_or(sentinel);
        }
        if from == sentinel || from.addr() >= to.addr() {
            return Break::Range(sentinel, first, sentinel);
        }
        Break::Range(before, from, to)
    }

    /// Whether `before`'s next link, which leads to `at`, skipped blocks:
    /// `at`'s own prev link names a block after `before`. Then `before`'s
    /// link is the damaged one, and `at`, reached from the back over good
    /// links, is one more good block; otherwise `at`'s prev link is.
    fn skipped_to(&self, chunk: &Chunk, before: Block, at: Block) -> bool {
        before != Self::block_in_sentinel(chunk)
            && Self::prev_in(chunk, at).is_some_and(|p| p.addr() > before.addr())
    }

    /// Whether a granule strictly between `from` and `to` holds what looks
    /// like a header of this region (owner word with an own state): then
    /// the link from `from` to `to` skipped blocks, whatever else agrees
    /// with it. Data that merely looks like a header makes the repair
    /// quarantine more, never less.
    fn has_header_between(&self, chunk: &Chunk, from: usize, to: usize) -> bool {
        (from + GRANULE..to).step_by(GRANULE).any(|at| {
            let block = Self::block_in_or_sentinel(chunk, at);
            block.owner() == self.addr()
                && matches!(
                    block.state(),
                    State::Used | State::Free | State::Cached | State::Quarantined | State::Slab
                )
        })
    }

    /// Writes a quarantined block over `[from, to)`, linked between the
    /// good blocks `before` and `to`.
    ///
    /// # Safety
    /// `before` and `to` are good headers of one chunk of this region (or
    /// its sentinel), `before` precedes `from` (or is the sentinel when
    /// `from` is the chunk's first block) and `from < to`; no block between
    /// them is trusted any more.
    unsafe fn quarantine_range(&mut self, chunk: &Chunk, before: Block, from: Block, to: Block) {
        self.retag_inner_headers(chunk, from.addr(), to.addr());
        self.cut_off.record(from.addr(), to.addr());
        // SAFETY: `from` is a granule of the chunk with room for a header
        // before `to` (caller); its neighbours are good headers.
        unsafe {
            let q = Block::write(from.as_bytes(), self.addr(), State::Quarantined);
            RelLink::set_next(q.link(), to.link());
            RelLink::set_prev(q.link(), before.link());
            RelLink::set_next(before.link(), q.link());
            RelLink::set_prev(to.link(), q.link());
        }
    }

    /// Marks `Quarantined` every header strictly inside `(from, to)` that
    /// still looks like a block of this region (an own state, links that
    /// stay inside the range): such a block, cut off from the ring by the
    /// damage around it, must not be freed or merged later. Only such
    /// headers' owner words are written; data that merely resembles an
    /// owner word without links inside the range is left alone.
    fn retag_inner_headers(&mut self, chunk: &Chunk, from: usize, to: usize) {
        let mut at = from + GRANULE;
        while at < to {
            let block = Self::block_in_or_sentinel(chunk, at);
            let own = block.owner() == self.addr()
                && matches!(
                    block.state(),
                    State::Used | State::Free | State::Cached | State::Slab
                );
            let inside = own
                && Self::next_in(chunk, block).is_some_and(|n| n.addr() <= to)
                && Self::prev_in(chunk, block).is_some_and(|p| p.addr() >= from);
            if inside {
                block.set_state(State::Quarantined);
            }
            at += GRANULE;
        }
    }

    /// Clears the free index and the quick lists and refills them from the
    /// (whole) rings; quarantines the free or cached block at `damaged`;
    /// recomputes the counters.
    fn rebuild_lists(&mut self, damaged: usize) {
        self.index = FreeIndex::new();
        self.quick = QuickLists::new(self.quick.depth());
        self.clear_slab_lists();
        let mut c = Counters {
            total_bytes: self.c.total_bytes,
            metadata_bytes: self.c.metadata_bytes,
            ..Counters::default()
        };
        for i in 0..self.chunks.len() {
            let chunk = self.chunks.as_slice()[i];
            // SAFETY: the chunk's ring was mended by `repair`.
            unsafe { self.refile_chunk(&chunk, damaged, &mut c) };
        }
        self.c = c;
    }

    /// Refiles the blocks of one whole ring (see [`Region::rebuild_lists`]).
    ///
    /// # Safety
    /// `chunk`'s ring is whole: every link in it was proven.
    unsafe fn refile_chunk(&mut self, chunk: &Chunk, damaged: usize, c: &mut Counters) {
        let sentinel = Self::block_in_sentinel(chunk);
        let mut run: Option<(Block, usize)> = None;
        let mut at = Self::block_in(chunk, chunk.first());
        while at != sentinel {
            let next = Self::next_in(chunk, at).unwrap_or(sentinel);
            let size = next.addr() - at.addr();
            let state = match at.state() {
                State::Used | State::Free | State::Cached | State::Slab if at.addr() == damaged => {
                    at.set_state(State::Quarantined);
                    State::Quarantined
                }
                // Damage to one of a slab's objects (a write after free
                // found on reuse): the object stays taken, so its bit
                // cannot tell it from a live one, and a later free of it
                // would be accepted. The slab goes whole.
                State::Slab if Self::is_in_objects(at, size, damaged) => {
                    at.set_state(State::Quarantined);
                    State::Quarantined
                }
                State::Cached => State::Free,
                State::Slab if self.refile_slab(at, size, c) => State::Slab,
                State::Slab => {
                    at.set_state(State::Quarantined);
                    State::Quarantined
                }
                state => state,
            };
            match state {
                State::Free => match run {
                    Some((head, total)) => {
                        // SAFETY: `at` follows `head`'s run in a whole ring.
                        unsafe {
                            crate::clist::unlink(at.link());
                            at.set_state(State::Absorbed);
                            integrity::on_absorb(at);
                        }
                        run = Some((head, total + size));
                    }
                    None => run = Some((at, size)),
                },
                State::Used | State::Slab => {
                    c.used_bytes += size;
                    c.used_blocks += 1;
                }
                _ => {
                    c.quarantined_bytes += size;
                    c.quarantined_blocks += 1;
                }
            }
            if state != State::Free {
                // SAFETY: a run of free blocks of this region ends here.
                unsafe { self.file_run(run.take(), c) };
            }
            at = next;
        }
        // SAFETY: as above.
        unsafe { self.file_run(run.take(), c) };
    }

    /// Files a run of merged free blocks as one free block.
    ///
    /// # Safety
    /// `run` is a block of a whole ring of this region, on no list, of the
    /// given size.
    unsafe fn file_run(&mut self, run: Option<(Block, usize)>, c: &mut Counters) {
        if let Some((block, size)) = run {
            block.set_state(State::Free);
            // SAFETY: a free block on no list (caller); the index is fresh.
            unsafe { self.index.insert(block, size) };
            c.free_blocks += 1;
        }
    }
}
