//! The region's slabs (see `slab`): making them from blocks, handing out
//! and taking back their objects, and giving empty ones back.
//!
//! A region keeps, per class, a doubly linked list of its slabs that have
//! a free object ([`SlabLists`]); a full slab is on no list. The links live
//! in the slab headers, where an overrun can reach them, so each is proven
//! before it is followed ([`Region::prove_slab`]): it names a slab-aligned
//! address whose block header, inside one of the region's chunks with room
//! for the slab, names this region in state `Slab`, whose slab header
//! holds its seals (and checksum, `crc`), of the list's class, listed, and
//! linking back. A slab reached from a program's pointer (a free) is also
//! proven in its block ring: its successor links back. Every proof a
//! change needs is made before anything is written.
//!
//! Invariants:
//! - a slab is on its class's list iff it has a free object; a slab that
//!   empties stays there, ready for the next objects of its class (no slab
//!   is made and unmade at the edge of a class's use), and every empty
//!   slab goes back to the free index (merged like any freed block)
//!   before the region reports that it has no room, and on a flush
//!   (`Heap::flush_quick_lists`);
//! - counters: `slabs`/`slab_bytes` count the blocks in state `Slab`
//!   (they are also used blocks), `slab_objects`/`slab_object_bytes` the
//!   objects handed out (class sizes), `empty_slabs` the slabs without
//!   one (so that making room costs nothing when there is none).

use core::ptr::NonNull;

use crate::block::{Block, State, DATA_OFFSET};
use crate::error::{Corruption, HeapError};
use crate::integrity;
use crate::slab::{class_size, Slab, SlabKey, SLAB_CLASSES, SLAB_DATA, SLAB_SIZE};

use super::nav::damage;
use super::{Chunk, Region};

/// Per class, the first slab with a free object (0: none), and the key
/// that seals this region's slabs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlabLists {
    first: [usize; SLAB_CLASSES],
    key: SlabKey,
}

impl SlabLists {
    /// No slab yet, and a key of the region's own.
    pub(crate) fn new() -> Self {
        SlabLists {
            first: [0; SLAB_CLASSES],
            key: SlabKey::draw(),
        }
    }
}

/// A slab object proven live: its slab and index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Object {
    pub(crate) slab: Slab,
    pub(crate) index: usize,
}

/// The list changes a planned unlink will make, every node proven.
struct Unlink {
    slab: Slab,
    next: Option<Slab>,
    prev: Option<Slab>,
}

impl Region {
    /// Proves that a slab of this region starts at `base` and returns it;
    /// `what` names the damage if it is not one: `base` is slab-aligned,
    /// the block header before it lies in one of the region's chunks with
    /// room for a slab before the chunk's sentinel, names this region in
    /// state `Slab` with a good checksum (`crc`), lies in no range a repair
    /// cut off, and the slab header's seals and counts hold.
    #[inline(always)]
    fn prove_slab(&self, base: usize, what: Corruption) -> Result<Slab, HeapError> {
        let bad = || damage(base, what);
        if !base.is_multiple_of(SLAB_SIZE) {
            return Err(bad());
        }
        let header = base.checked_sub(DATA_OFFSET).ok_or_else(bad)?;
        let chunk = self.chunk_of(header).ok_or_else(bad)?;
        let block = Self::block_in(chunk, header);
        if block.owner_word() != self.addr() | State::Slab as usize {
            return Err(bad());
        }
        self.prove_slab_header(chunk, block)
    }

    /// The rest of [`Region::prove_slab`] once the block header of
    /// the slab-aligned data at `block.data()` is found in `chunk` and its
    /// owner word names this region in state `Slab`: its checksum
    /// (`crc`), room for the slab before the sentinel, no cut-off range,
    /// the slab header's seals and counts.
    #[inline(always)]
    fn prove_slab_header(&self, chunk: &Chunk, block: Block) -> Result<Slab, HeapError> {
        let header = block.addr();
        let base = header + DATA_OFFSET;
        if !block.checksum_ok() {
            return Err(damage(header, Corruption::Checksum));
        }
        if header + SLAB_SIZE > chunk.sentinel() {
            return Err(damage(header, Corruption::Size));
        }
        if self.is_cut_off(chunk, header) {
            return Err(damage(header, Corruption::Quarantined));
        }
        // SAFETY: `base` is the data start of a block of this region whose
        // `SLAB_DATA` bytes lie inside `chunk` (before its sentinel).
        let slab = unsafe { Slab::at(chunk.at(base)) };
        slab.verify(self.slabs.key)
            .map_err(|what| damage(base, what))?;
        Ok(slab)
    }

    /// [`Region::prove_slab_header`] for a slab reached from a program's
    /// pointer, which also proves the slab's block in its ring: its
    /// successor links back and lies at least `SLAB_SIZE` bytes after it
    /// (as `nav::vet_free` proves a free block), so that only a header the
    /// region wrote, not data shaped like one, is taken for a slab.
    #[inline(always)]
    fn prove_slab_in_ring(&self, chunk: &Chunk, block: Block) -> Result<Slab, HeapError> {
        let slab = self.prove_slab_header(chunk, block)?;
        let header = block.addr();
        let next =
            Self::next_in(chunk, block).ok_or_else(|| damage(header, Corruption::BlockLinks))?;
        if next.raw_links().1 != block.raw_links().0.wrapping_neg() {
            return Err(damage(header, Corruption::BlockLinks));
        }
        if next.addr() - header < SLAB_SIZE {
            return Err(damage(header, Corruption::Size));
        }
        Ok(slab)
    }

    /// Proves the slab a list link of class `class` names, and that it
    /// links back as `back` says. `holder` is where the link is kept (the
    /// slab whose header holds it, or the region for a list's first): the
    /// damage a failed proof reports, so that the repair that follows
    /// finds it in this region, wherever the link pointed.
    fn prove_link(
        &self,
        at: usize,
        class: usize,
        holder: usize,
        back: impl FnOnce(Slab) -> bool,
    ) -> Result<Slab, HeapError> {
        let refused = || damage(holder, Corruption::SlabList);
        let slab = self.prove_slab(at, Corruption::SlabList).map_err(|error| {
            // A damaged slab is named where it is; a link to anything
            // else (a block, the middle of a block, outside the region)
            // is named where it is kept: the repair that follows must
            // not take what the link points at for the damage.
            if self.is_slab_header(at) {
                error
            } else {
                refused()
            }
        })?;
        if slab.class() != class || !slab.is_listed() || !back(slab) {
            return Err(refused());
        }
        Ok(slab)
    }

    /// Whether a slab of this region, damaged or not, is at `base`
    /// (slab-aligned): the block header before it names this region in
    /// state `Slab`, and [`Region::is_own_slab`].
    fn is_slab_header(&self, base: usize) -> bool {
        base.is_multiple_of(SLAB_SIZE)
            && base.checked_sub(DATA_OFFSET).is_some_and(|header| {
                self.chunk_of(header).is_some_and(|chunk| {
                    Self::block_in(chunk, header).owner_word() == self.addr() | State::Slab as usize
                        && self.is_own_slab(chunk, base)
                })
            })
    }

    /// Whether the slab header at `base` (in `chunk`) was written by this
    /// region: one of its seal words bears the region's key. A header an
    /// earlier heap left in this memory does not, even where its block
    /// header names this region's address; a header this region wrote
    /// keeps a seal word through the damage the seals are there to catch
    /// (an overrun meets the first, an underrun the last).
    fn is_own_slab(&self, chunk: &Chunk, base: usize) -> bool {
        base - DATA_OFFSET + SLAB_SIZE <= chunk.sentinel() && {
            // SAFETY: `SLAB_DATA` bytes at `base` lie inside `chunk`,
            // before its sentinel; only the seal words are read.
            unsafe { Slab::at(chunk.at(base)) }.bears_key(self.slabs.key)
        }
    }

    /// The slab object `ptr` designates, if it lies in a slab of this
    /// region: `None` when it does not (then it can only be a block);
    /// otherwise the live object, or why it is not one (`NotBlockStart`
    /// inside a slab but not at an object, `DoubleFree` for an object not
    /// handed out, `Corrupted` for a damaged slab).
    #[inline(always)]
    pub(crate) fn slab_object(&self, ptr: usize) -> Option<Result<Object, HeapError>> {
        if self.c.slabs == 0 {
            return None;
        }
        self.slab_object_in_slabs(ptr)
    }

    /// [`Region::slab_object`] once the region has slabs (out of line: a
    /// region without slabs pays one compare).
    #[inline(never)]
    fn slab_object_in_slabs(&self, ptr: usize) -> Option<Result<Object, HeapError>> {
        let base = ptr & !(SLAB_SIZE - 1);
        let header = base.checked_sub(DATA_OFFSET)?;
        let chunk = self.chunk_of(header)?;
        let block = Self::block_in(chunk, header);
        if block.owner_word() == self.addr() | State::Slab as usize {
            if self.is_own_slab(chunk, base) {
                return Some(self.prove_object(chunk, block, ptr));
            }
            return self.unsealed_slab(base, ptr);
        }
        // Not a slab's header, but the slab's own seals still stand there:
        // the slab's block header was damaged (an overrun of the block
        // before it), or a repair quarantined the slab. Either way `ptr`
        // is in a slab, and its neighbour's bytes are no header to try.
        if header + SLAB_SIZE <= chunk.sentinel() {
            // SAFETY: `SLAB_DATA` bytes at `base` lie inside `chunk`,
            // before its sentinel; only the seal words are read.
            let sealed = unsafe { Slab::at(chunk.at(base)) }.is_sealed(self.slabs.key);
            if sealed {
                let what = if block.owner_word() == self.addr() | State::Quarantined as usize {
                    Corruption::Quarantined
                } else {
                    Corruption::Owner
                };
                return Some(Err(damage(header, what)));
            }
        }
        None
    }

    /// A block header names this region in state `Slab` before `base`,
    /// but neither seal word of the slab header bears the region's key:
    /// either a slab header an earlier heap left in this memory, inside the
    /// data of a block of this one, or one of this region's slabs with both
    /// seals overwritten (a write after free through a pointer to a block
    /// that was there before the slab). A used block of this region that
    /// `ptr` starts tells the first (`None`: the block path frees it);
    /// anything else is reported as the damaged slab it may be.
    #[cold]
    #[inline(never)]
    fn unsealed_slab(&self, base: usize, ptr: usize) -> Option<Result<Object, HeapError>> {
        let data = NonNull::new(ptr as *mut u8)?;
        // SAFETY: this region is borrowed from its heap, so it is live.
        if unsafe { self.validate(data) }.is_ok() {
            return None;
        }
        Some(Err(damage(base, Corruption::SlabHeader)))
    }

    /// The live object at `ptr` in the slab whose block header `block`
    /// (before the slab-aligned address below `ptr`, found in `chunk`)
    /// names this region in state `Slab`; else why it is none.
    #[inline(always)]
    fn prove_object(&self, chunk: &Chunk, block: Block, ptr: usize) -> Result<Object, HeapError> {
        let base = block.addr() + DATA_OFFSET;
        let slab = self.prove_slab_in_ring(chunk, block)?;
        let index = slab
            .index_of(ptr)
            .ok_or(HeapError::NotBlockStart { addr: ptr })?;
        if !slab.is_live(index) {
            return Err(HeapError::DoubleFree { addr: ptr });
        }
        if slab.used() == 0 {
            // A bit set with no object counted: the header is damaged.
            return Err(damage(base, Corruption::SlabHeader));
        }
        Ok(Object { slab, index })
    }

    /// Hands out an object of `class`: from the first slab of its list,
    /// else from a new slab carved from the region. `Ok(None)` when the
    /// region has no room for a new slab; an error, changing nothing, when
    /// a slab or list it met is damaged.
    ///
    /// # Safety
    /// The region is live and exclusively borrowed.
    pub(crate) unsafe fn slab_allocate(
        &mut self,
        class: usize,
    ) -> Result<Option<NonNull<u8>>, HeapError> {
        let first = self.slabs.first[class];
        let slab = if first == 0 {
            // SAFETY: forwarded.
            match unsafe { self.new_slab(class)? } {
                Some(slab) => slab,
                None => return Ok(None),
            }
        } else {
            self.prove_link(first, class, self.addr(), |s| s.links().1 == 0)?
        };
        // A slab that becomes full leaves its list: prove that first.
        let unlink = if slab.used() + 1 == crate::slab::capacity_of(class) {
            Some(self.plan_unlink(slab)?)
        } else {
            None
        };
        let was_empty = slab.used() == 0;
        let index = slab
            .take()
            .ok_or_else(|| damage(slab.addr(), Corruption::SlabHeader))?;
        if was_empty {
            self.c.empty_slabs -= 1;
        }
        if let Some(unlink) = unlink {
            self.unlink(unlink);
        }
        self.c.slab_objects += 1;
        self.c.slab_object_bytes += class_size(class);
        let object = slab.object(index);
        // A free object whose pattern was overwritten (`scramble`) stays
        // taken: it is never handed out, and the error names it.
        // SAFETY: a free object of a slab of this exclusively borrowed
        // region, just taken.
        unsafe { integrity::on_object_allocate(object, class, self.scramble_depth()) }?;
        Ok(Some(object))
    }

    /// Carves a new slab of `class` from the region and puts it first on
    /// its list; `Ok(None)` if the region has no room.
    ///
    /// # Safety
    /// As for [`Region::slab_allocate`].
    #[cold]
    #[inline(never)]
    unsafe fn new_slab(&mut self, class: usize) -> Result<Option<Slab>, HeapError> {
        // The block's size is `block_size_for(SLAB_DATA)`: `SLAB_SIZE`.
        // SAFETY: forwarded; a power-of-two alignment.
        let Some(block) = (unsafe { self.allocate(SLAB_SIZE, SLAB_SIZE, false)? }) else {
            return Ok(None);
        };
        block.set_state(State::Slab);
        // SAFETY: a block just allocated, whose data nobody uses; its data
        // is `SLAB_SIZE`-aligned and `SLAB_DATA` bytes long.
        let slab = unsafe {
            integrity::on_allocate(block, SLAB_DATA);
            let slab = Slab::init(block.data(), class, self.slabs.key);
            integrity::on_new_slab(slab);
            slab
        };
        self.c.slabs += 1;
        self.c.empty_slabs += 1;
        self.c.slab_bytes += block.size();
        // The list was empty (this is called only then): no link to prove.
        slab.set_links(0, 0, true);
        self.slabs.first[class] = slab.addr();
        Ok(Some(slab))
    }

    /// Proves what unlinking `slab` from its list writes.
    fn plan_unlink(&self, slab: Slab) -> Result<Unlink, HeapError> {
        let class = slab.class();
        let (next, prev) = slab.links();
        let me = slab.addr();
        let next = match next {
            0 => None,
            at => Some(self.prove_link(at, class, me, |s| s.links().1 == me)?),
        };
        let prev = match prev {
            0 if self.slabs.first[class] == me => None,
            0 => return Err(damage(me, Corruption::SlabList)),
            at => Some(self.prove_link(at, class, me, |s| s.links().0 == me)?),
        };
        Ok(Unlink { slab, next, prev })
    }

    /// Unlinks a slab as planned.
    fn unlink(&mut self, plan: Unlink) {
        let Unlink { slab, next, prev } = plan;
        let next_addr = next.map_or(0, Slab::addr);
        let prev_addr = prev.map_or(0, Slab::addr);
        match prev {
            Some(prev) => prev.set_next(next_addr),
            None => self.slabs.first[slab.class()] = next_addr,
        }
        if let Some(next) = next {
            next.set_prev(prev_addr);
        }
        slab.set_links(0, 0, false);
    }

    /// Proves the first slab of `class`'s list, if any.
    fn proven_first(&self, class: usize) -> Result<Option<Slab>, HeapError> {
        match self.slabs.first[class] {
            0 => Ok(None),
            at => self
                .prove_link(at, class, self.addr(), |s| s.links().1 == 0)
                .map(Some),
        }
    }

    /// Puts `slab` (on no list) first on its class's list, before `old`,
    /// the list's proven first slab.
    fn push_slab(&mut self, slab: Slab, old: Option<Slab>) {
        let first = old.map_or(0, Slab::addr);
        if let Some(old) = old {
            old.set_prev(slab.addr());
        }
        slab.set_links(first, 0, true);
        self.slabs.first[slab.class()] = slab.addr();
    }

    /// Takes back a live object. A full slab goes back on its list; an
    /// empty one stays there (it goes back to the free index when the
    /// region runs out of room, or on a flush). Fails, changing nothing, on
    /// damage: the object's guard (`guard`) or the first slab of the list.
    ///
    /// # Safety
    /// `object` came from [`Region::slab_object`] with nothing changed
    /// since; nobody uses the object's data any more.
    pub(crate) unsafe fn slab_free(&mut self, object: Object) -> Result<(), HeapError> {
        let Object { slab, index } = object;
        let class = slab.class();
        let data = slab.object(index);
        integrity::check_object_guard(data, class)?;
        if !slab.is_listed() {
            // Full until now: back on its list.
            let old = self.proven_first(class)?;
            // SAFETY: as above.
            unsafe { integrity::on_object_free(data, class) };
            slab.give_back(index);
            self.count_object_freed(slab);
            self.push_slab(slab, old);
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { integrity::on_object_free(data, class) };
        slab.give_back(index);
        self.count_object_freed(slab);
        Ok(())
    }

    /// Counts an object of `slab` given back (after `give_back`).
    fn count_object_freed(&mut self, slab: Slab) {
        self.c.slab_objects -= 1;
        self.c.slab_object_bytes -= class_size(slab.class());
        if slab.used() == 0 {
            self.c.empty_slabs += 1;
        }
    }

    /// The block a proven slab is the data of.
    fn slab_block(&self, slab: Slab) -> Block {
        self.slab_block_at(slab.addr())
    }

    /// Gives an empty slab's block back to the free index.
    ///
    /// # Safety
    /// `block` is the block of a proven empty slab on no list; `merge` is
    /// its proven merge.
    unsafe fn give_back_slab(&mut self, block: Block, merge: super::release::Merge) {
        let size = block.size();
        // SAFETY: the slab's data is the heap's; its seals go, so the stale
        // header never proves again.
        unsafe {
            Slab::at(block.data()).wipe();
            integrity::on_free(block);
            self.merge(merge);
        }
        self.c.slabs -= 1;
        self.c.empty_slabs -= 1;
        self.c.slab_bytes -= size;
        self.c.used_bytes -= size;
        self.c.used_blocks -= 1;
    }

    /// Gives every empty slab back to the free index (before the region
    /// reports that it has no room); returns whether there was any. Stops
    /// at the first damage, changing nothing more.
    pub(crate) fn release_empty_slabs(&mut self) -> Result<bool, HeapError> {
        let mut released = false;
        if self.c.empty_slabs == 0 {
            return Ok(false);
        }
        for class in 0..SLAB_CLASSES {
            let mut at = self.slabs.first[class];
            let mut prev = 0;
            let mut steps = self.c.slabs + 1;
            while at != 0 && steps > 0 {
                steps -= 1;
                let holder = if prev == 0 { self.addr() } else { prev };
                let slab = self.prove_link(at, class, holder, |s| s.links().1 == prev)?;
                let (next, _) = slab.links();
                if slab.used() == 0 {
                    let unlink = self.plan_unlink(slab)?;
                    let block = self.slab_block(slab);
                    let merge = self.plan_merge(block, block.size())?;
                    self.unlink(unlink);
                    // SAFETY: empty, unlinked, merge proven.
                    unsafe { self.give_back_slab(block, merge) };
                    released = true;
                } else {
                    prev = at;
                }
                at = next;
            }
        }
        Ok(released)
    }

    /// Rebuilds the slab lists from the blocks a repair walk found in state
    /// `Slab`: each proven slab with a free object goes on its list; a slab
    /// whose header does not prove is quarantined. Called by the repair,
    /// once per slab block, in address order, after the lists were cleared.
    /// A slab whose header does not prove (seals, class, counts against the
    /// bitmap, checksum) is refused (`false`): the repair quarantines its
    /// block. Damage the proofs cannot see (a list link, the scan hint) is
    /// rewritten: links are rebuilt, the hint restarts at 0. (An error
    /// naming one of its objects, a write after free found on reuse, makes
    /// the repair quarantine the slab before it gets here; an overrun of a
    /// guard is reported without a repair.)
    pub(crate) fn refile_slab(
        &mut self,
        block: Block,
        size: usize,
        c: &mut super::Counters,
    ) -> bool {
        let base = block.data().as_ptr().addr();
        let slab = match self.prove_slab(base, Corruption::SlabHeader) {
            Ok(slab) if size >= SLAB_SIZE && slab.verify_counts(self.slabs.key).is_ok() => slab,
            _ => return false,
        };
        slab.reset_hint();
        c.slabs += 1;
        c.slab_bytes += block.size();
        c.slab_objects += slab.used();
        c.slab_object_bytes += slab.used() * class_size(slab.class());
        c.empty_slabs += usize::from(slab.used() == 0);
        slab.set_links(0, 0, false);
        if !slab.is_full() {
            // The list holds only slabs this walk refiled (and proved).
            let class = slab.class();
            let old = match self.slabs.first[class] {
                0 => None,
                // SAFETY: a slab this walk proved and refiled, unchanged.
                at => Some(unsafe { Slab::at(self.slab_block_at(at).data()) }),
            };
            self.push_slab(slab, old);
        }
        true
    }

    /// The block of the slab at `base`, already proven.
    fn slab_block_at(&self, base: usize) -> Block {
        let header = base - DATA_OFFSET;
        let chunk = self
            .chunk_of(header)
            .expect("a proven slab lies in a chunk");
        Self::block_in(chunk, header)
    }

    /// Clears the slab lists (a repair rebuilds them); the key stays.
    pub(crate) fn clear_slab_lists(&mut self) {
        self.slabs.first = [0; SLAB_CLASSES];
    }

    /// The slabs of this region's lists and full ones alike are found by
    /// walking the rings; this proves one for `check()`: its header, its
    /// counts against its bitmap, its live objects' guards (`guard`) and
    /// its free objects' pattern (`scramble`).
    pub(crate) fn check_slab(&self, block: Block) -> Result<Slab, HeapError> {
        let base = block.data().as_ptr().addr();
        let slab = self.prove_slab(base, Corruption::SlabHeader)?;
        slab.verify_counts(self.slabs.key)
            .map_err(|what| damage(base, what))?;
        let class = slab.class();
        for index in 0..crate::slab::capacity_of(class) {
            let data = slab.object(index);
            if slab.is_live(index) {
                integrity::check_object_guard(data, class)?;
            } else {
                integrity::check_free_object(data, class, self.scramble_depth())?;
            }
        }
        Ok(slab)
    }

    /// The first slab of `class`'s list (0: none), for `check()`.
    pub(crate) fn first_slab(&self, class: usize) -> usize {
        self.slabs.first[class]
    }

    /// Proves the slab a list link of `class` names, for `check()`.
    pub(crate) fn listed_slab(
        &self,
        at: usize,
        class: usize,
        prev: usize,
    ) -> Result<Slab, HeapError> {
        let holder = if prev == 0 { self.addr() } else { prev };
        self.prove_link(at, class, holder, |s| s.links().1 == prev)
    }
}

// Sizes the region asks for: a slab's block is exactly `SLAB_SIZE`.
const _: () = assert!(SLAB_DATA + crate::block::BLOCK_OVERHEAD == SLAB_SIZE);
