//! The free-block index of a region: segregated free lists found by bitmaps.
//!
//! Free blocks are filed by size class on free lists (`freelist`), TLSF style: a first level
//! per power of two and [`SL_COUNT`] second-level classes that split it
//! evenly. Sizes below [`SMALL_LIMIT`] get one exact class per granule. A
//! first-level bitmap says which levels hold a non-empty class and one
//! second-level bitmap per level says which classes do, so finding a class
//! with a block large enough costs two bit scans, whatever the number of
//! blocks: allocation and free are O(1).
//!
//! Invariants: a free block is on exactly the list of `class_of(size)`; a
//! bitmap bit is set if and only if its list (or level) is non-empty.

use crate::block::{Block, GRANULE, MAX_CHUNK_SIZE};
use crate::freelist::{FreeLink, List};

/// log2 of the number of second-level classes per first level.
const SL_LOG: u32 = 4;
/// Second-level classes per first level.
pub(crate) const SL_COUNT: usize = 1 << SL_LOG;
/// Sizes below this have exact classes, one per granule.
pub(crate) const SMALL_LIMIT: usize = SL_COUNT * GRANULE;
const FL_SHIFT: u32 = SMALL_LIMIT.trailing_zeros();
/// First-level classes: level 0 for small sizes, then one per power of two
/// up to [`MAX_CHUNK_SIZE`].
pub(crate) const FL_COUNT: usize = (MAX_CHUNK_SIZE.ilog2() - FL_SHIFT + 2) as usize;

const _: () = assert!(FL_COUNT <= u32::BITS as usize);
const _: () = assert!(SL_COUNT <= u16::BITS as usize);

/// A size class: (first level, second level).
pub(crate) type Class = (usize, usize);

/// The class a free block of `size` bytes is filed under.
#[inline]
pub(crate) fn class_of(size: usize) -> Class {
    if size < SMALL_LIMIT {
        (0, size / GRANULE)
    } else {
        let log = size.ilog2();
        let fl = (log - FL_SHIFT + 1) as usize;
        let sl = (size >> (log - SL_LOG)) - SL_COUNT;
        (fl, sl)
    }
}

/// The smallest class whose every block holds at least `size` bytes, or
/// `None` past the largest class.
#[inline]
pub(crate) fn class_at_least(size: usize) -> Option<Class> {
    let rounded = if size < SMALL_LIMIT {
        size
    } else {
        size.saturating_add((1 << (size.ilog2() - SL_LOG)) - 1)
    };
    let class = class_of(rounded);
    (class.0 < FL_COUNT).then_some(class)
}

/// Segregated free lists of one region with their bitmaps.
pub(crate) struct FreeIndex {
    fl_bitmap: u32,
    sl_bitmap: [u16; FL_COUNT],
    lists: [[List; SL_COUNT]; FL_COUNT],
}

impl FreeIndex {
    /// An index with every list empty.
    pub(crate) const fn new() -> Self {
        FreeIndex {
            fl_bitmap: 0,
            sl_bitmap: [0; FL_COUNT],
            lists: [const { [const { List::new() }; SL_COUNT] }; FL_COUNT],
        }
    }

    /// Files a free block of `size` bytes under its class.
    ///
    /// # Safety
    /// `block` is a free block of this index's region, of `size` bytes, on
    /// no free list.
    #[inline]
    pub(crate) unsafe fn insert(&mut self, block: Block, size: usize) {
        debug_assert_eq!(size, block.size());
        let (fl, sl) = class_of(size);
        // SAFETY: blocks are at most MAX_CHUNK_SIZE, whose class is in range
        // (`largest_chunk_has_a_class`); the block's data holds its link.
        unsafe {
            self.lists
                .get_unchecked_mut(fl)
                .get_unchecked_mut(sl)
                .push_front(block.free_link());
            *self.sl_bitmap.get_unchecked_mut(fl) |= 1 << sl;
        }
        self.fl_bitmap |= 1 << fl;
    }

    /// Takes a free block of `size` bytes off its list; call before its
    /// size changes.
    ///
    /// # Safety
    /// `block` is on this index, of `size` bytes.
    #[inline]
    pub(crate) unsafe fn remove(&mut self, block: Block, size: usize) {
        debug_assert_eq!(size, block.size());
        let (fl, sl) = class_of(size);
        // SAFETY: as in `insert`; the block's link is on this list (caller).
        unsafe {
            let list = self.lists.get_unchecked_mut(fl).get_unchecked_mut(sl);
            list.remove(block.free_link());
            if list.is_empty() {
                self.clear_bit(fl, sl);
            }
        }
    }

    /// Takes a free block off the list of `class`, whose node's links
    /// `links` were read and proven: neither the class nor the links are
    /// computed or read again.
    ///
    /// # Safety
    /// The block is on the list of `class` of this index and `links` are
    /// its node's current, proven links (`region::nav`).
    #[inline]
    pub(crate) unsafe fn remove_linked(&mut self, (fl, sl): Class, links: FreeLink) {
        // SAFETY: as in `remove`.
        unsafe {
            let list = self.lists.get_unchecked_mut(fl).get_unchecked_mut(sl);
            list.remove_linked(links);
            if list.is_empty() {
                self.clear_bit(fl, sl);
            }
        }
    }

    /// [`FreeIndex::remove`] of a block whose class is known.
    ///
    /// # Safety
    /// `block` is on the list of `class` of this index, its node's links
    /// proven (`region::nav`) and changed since only by other removals.
    #[inline]
    pub(crate) unsafe fn remove_in(&mut self, class: Class, block: Block) {
        // SAFETY: as in `remove`; the node lies in the block's data.
        unsafe { self.remove_linked(class, FreeLink::read(block.free_link())) }
    }

    /// Clears the bit of the class `(fl, sl)`, whose list just emptied,
    /// and its level's bit with its last class.
    ///
    /// # Safety
    /// `fl < FL_COUNT` and `sl < SL_COUNT`.
    #[inline]
    unsafe fn clear_bit(&mut self, fl: usize, sl: usize) {
        // SAFETY: in range (caller).
        let bits = unsafe { self.sl_bitmap.get_unchecked_mut(fl) };
        *bits &= !(1 << sl);
        if *bits == 0 {
            self.fl_bitmap &= !(1 << fl);
        }
    }

    /// The first non-empty class at or after `class`, in size order.
    #[inline]
    pub(crate) fn next_nonempty(&self, (fl, sl): Class) -> Option<Class> {
        let here = self.sl_bitmap[fl] & (u16::MAX << sl);
        if here != 0 {
            return Some((fl, here.trailing_zeros() as usize));
        }
        let above = self.fl_bitmap & u32::MAX.checked_shl(fl as u32 + 1).unwrap_or(0);
        if above == 0 {
            return None;
        }
        let fl = above.trailing_zeros() as usize;
        Some((fl, self.sl_bitmap[fl].trailing_zeros() as usize))
    }

    /// The first block of a class's list.
    #[inline]
    pub(crate) fn first_of(&self, (fl, sl): Class) -> Option<Block> {
        let link = self.lists[fl][sl].first()?;
        // SAFETY: every link on a free list is the free link of a free block
        // of this region (index invariant).
        Some(unsafe { Block::from_free_link(link) })
    }

    /// A block of at least `size` bytes in O(1) ("good fit"): the head of
    /// the first non-empty class whose every block is large enough.
    #[inline]
    pub(crate) fn find_good_fit(&self, size: usize) -> Option<Block> {
        let class = self.next_nonempty(class_at_least(size)?)?;
        self.first_of(class)
    }

    /// Every class, with its bitmap bit.
    pub(crate) fn classes(&self) -> impl Iterator<Item = (Class, bool)> + '_ {
        (0..FL_COUNT).flat_map(move |fl| {
            (0..SL_COUNT).map(move |sl| {
                let bit = self.fl_bitmap & (1 << fl) != 0 && self.sl_bitmap[fl] & (1 << sl) != 0;
                ((fl, sl), bit)
            })
        })
    }

    /// The largest class holding a block, if any.
    pub(crate) fn last_nonempty(&self) -> Option<Class> {
        if self.fl_bitmap == 0 {
            return None;
        }
        let fl = (u32::BITS - 1 - self.fl_bitmap.leading_zeros()) as usize;
        let sl = (u16::BITS - 1 - self.sl_bitmap[fl].leading_zeros()) as usize;
        Some((fl, sl))
    }

    /// Whether the list of `class` is empty.
    pub(crate) fn list_is_empty(&self, (fl, sl): Class) -> bool {
        self.lists[fl][sl].is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MIN_BLOCK;

    #[test]
    fn small_classes_are_exact() {
        assert_eq!(class_of(32), (0, 2));
        assert_eq!(class_of(240), (0, 15));
        assert_eq!(class_at_least(48), Some((0, 3)));
    }

    #[test]
    fn classes_grow_monotonically_and_round_up() {
        let mut last = class_of(MIN_BLOCK);
        let mut size = MIN_BLOCK;
        while size < 1 << 24 {
            let class = class_of(size);
            assert!(class >= last, "class of {size} went backwards");
            last = class;
            // Every block filed at or above class_at_least(size) fits `size`.
            let (fl, sl) = class_at_least(size).unwrap();
            let lowest_in_class = if fl == 0 {
                sl * GRANULE
            } else {
                let base = 1usize << (fl as u32 + FL_SHIFT - 1);
                base + sl * (base / SL_COUNT)
            };
            assert!(
                lowest_in_class >= size,
                "size {size}: class floor {lowest_in_class}"
            );
            assert_eq!(class_of(lowest_in_class), (fl, sl));
            size += GRANULE * (1 + size / 64);
        }
    }

    #[test]
    fn largest_chunk_has_a_class() {
        let (fl, _) = class_of(MAX_CHUNK_SIZE);
        assert!(fl < FL_COUNT);
        assert!(class_at_least(MAX_CHUNK_SIZE).is_some());
        assert_eq!(class_at_least(MAX_CHUNK_SIZE.saturating_mul(4)), None);
        assert_eq!(class_at_least(usize::MAX), None);
    }

    #[test]
    fn bitmaps_find_the_next_class() {
        let index = FreeIndex::new();
        assert_eq!(index.next_nonempty((0, 0)), None);
        assert_eq!(index.last_nonempty(), None);
        assert!(index.find_good_fit(64).is_none());
    }
}
