//! Slabs: pools of equal objects without a header of their own.
//!
//! Seed 000 serves small requests from rings of fixed-size blocks, seed 002
//! asks for pools carved once and split, and MutekH names a slab allocator
//! as its next step. A *slab* is one ordinary block of a region, in state
//! `Slab`, whose data (aligned to [`SLAB_SIZE`]) starts with a
//! [`SlabHeader`] and is cut into objects of one *class*:
//!
//! ```text
//! [block header][SlabHeader: seal, list links, class, counts, bitmap, seal][obj][obj]...[obj][slack]
//!               ^ data, aligned to SLAB_SIZE (the block takes SLAB_SIZE bytes, header included)
//! ```
//!
//! Classes step by [`SLAB_STEP`] (8 bytes) from a granule to [`SLAB_MAX`]
//! (16, 24, 32, ... 512 bytes): a request aligned to at most 8 loses at
//! most 7 bytes to rounding, half what a block's data loses, and saves the
//! block's header. A request aligned to 16 gets the next class whose size
//! is a granule multiple: the objects of those (even) classes are all
//! 16-aligned, those of the odd classes only 8-aligned. What a slab loses
//! instead is its header, its slack (the bytes after the last whole
//! object) and its free slots; the stats report them (`slab_bytes`
//! against `slab_object_bytes`).
//!
//! An object is found from its address alone: its slab's data starts at
//! the address rounded down to [`SLAB_SIZE`], and the block header right
//! before it says `Slab` (the region proves it, see `region::slabs`).
//!
//! What this module keeps true of one slab (the region keeps the lists):
//! - the header starts and ends with the same *seal* word, a function of
//!   the slab's address, its class and its region's [`SlabKey`], so an
//!   overrun into the header from the block before, or an underrun from
//!   the first object, breaks a seal before it reaches a count, a link or
//!   the bitmap; with `crc` the whole header also carries a CRC-32C,
//!   updated by every change;
//! - a slab header left in memory by an earlier region (an earlier heap
//!   over the same memory, whose region had the same address) does not
//!   hold the seals of the region there now: every region draws its own
//!   key;
//! - bit `i` of the bitmap is set iff object `i` is handed out; the bits
//!   past the last object are set, so they are never handed out; `used` is
//!   the number of set bits of real objects;
//! - no word of the slab's memory that a program may write (an object's
//!   bytes) is ever read as metadata: a write after free cannot steer the
//!   slab; with `scramble` it is found instead (free objects hold the free
//!   pattern, verified when they are reused);
//! - with `guard`, each object is followed by [`GUARD_SIZE`] bytes of the
//!   tail guard pattern, verified when it is freed and by `check()`.

use core::mem::size_of;
use core::ptr::NonNull;

use crate::block::{BLOCK_OVERHEAD, GRANULE, GUARD_SIZE};
use crate::error::Corruption;
use crate::sync::{AtomicUsize, Ordering};

/// Bytes one slab takes, block header included; a slab's data is aligned
/// to it, so an object's slab is found by rounding its address down.
pub const SLAB_SIZE: usize = 16 * 1024;
/// Largest request a slab serves; larger ones get a block.
pub const SLAB_MAX: usize = 512;
/// Step between two classes' sizes: half a granule, so that an object
/// of a request aligned to at most 8 bytes loses at most 7 bytes to
/// rounding.
pub const SLAB_STEP: usize = GRANULE / 2;
/// Number of classes: every [`SLAB_STEP`] multiple from a granule to
/// [`SLAB_MAX`].
pub const SLAB_CLASSES: usize = (SLAB_MAX - GRANULE) / SLAB_STEP + 1;

/// Bytes of a slab's header, at the start of its data (every byte of it
/// is a field that the seals, counts or checksum cover); the objects start
/// at the next granule.
pub const SLAB_HEADER_SIZE: usize = size_of::<SlabHeader>();
/// Data bytes of a slab's block (what the region is asked for).
pub(crate) const SLAB_DATA: usize = SLAB_SIZE - BLOCK_OVERHEAD;
/// Distance from a slab's data start to its first object.
pub(crate) const OBJECTS_OFFSET: usize = size_of::<SlabHeader>().next_multiple_of(GRANULE);
/// Most objects of a slab (the smallest class's count).
const MOST_OBJECTS: usize = (SLAB_DATA - OBJECTS_OFFSET) / stride_of(0);
/// Words of the allocation bitmap.
const WORDS: usize = (SLAB_DATA / stride_of(0)).div_ceil(64);
/// Mixed into every seal, so that zeros or a copied address are no seal.
const SEAL_MAGIC: usize = 0x5a1b_c1a5_5e7d_0b1e_u64 as usize;

const _: () = assert!(WORDS * 64 >= MOST_OBJECTS);
const _: () = assert!(
    SLAB_SIZE.is_power_of_two() && SLAB_DATA > OBJECTS_OFFSET + stride_of(SLAB_CLASSES - 1) * 8
);

/// The class of a request of `size` bytes (`0..=SLAB_MAX`) aligned to
/// `align` (at most a granule): the smallest whose size holds it and, for
/// an alignment above [`SLAB_STEP`], whose size is a granule multiple, so
/// that all its objects are granule-aligned (odd classes' objects are
/// aligned to [`SLAB_STEP`] only).
#[inline]
pub(crate) const fn class_of(size: usize, align: usize) -> usize {
    let class = size.saturating_sub(GRANULE).div_ceil(SLAB_STEP);
    if align > SLAB_STEP {
        class.next_multiple_of(2)
    } else {
        class
    }
}

/// Usable bytes of an object of `class`.
#[inline]
pub(crate) const fn class_size(class: usize) -> usize {
    GRANULE + class * SLAB_STEP
}

/// Distance between two objects of `class`: the object and its guard.
#[inline]
pub(crate) const fn stride_of(class: usize) -> usize {
    class_size(class) + GUARD_SIZE
}

/// Objects a slab of `class` holds.
#[inline]
pub(crate) const fn capacity_of(class: usize) -> usize {
    CAPACITIES[class] as usize
}

/// [`capacity_of`] per class, computed once (a division at build time).
const CAPACITIES: [u16; SLAB_CLASSES] = {
    let mut c = [0; SLAB_CLASSES];
    let mut class = 0;
    while class < SLAB_CLASSES {
        c[class] = ((SLAB_DATA - OBJECTS_OFFSET) / stride_of(class)) as u16;
        class += 1;
    }
    c
};

/// `ceil(2^32 / stride)` per class: `(n * r) >> 32 == n / stride` for
/// every `n < SLAB_DATA` (the error `r * stride - 2^32` is below the stride,
/// below 2^10, so `n * error < 2^24 < 2^32`).
const RECIPROCALS: [u64; SLAB_CLASSES] = {
    let mut r = [0; SLAB_CLASSES];
    let mut class = 0;
    while class < SLAB_CLASSES {
        r[class] = (1u64 << 32).div_ceil(stride_of(class) as u64);
        class += 1;
    }
    r
};

const _: () = assert!(SLAB_DATA < 1 << 14 && stride_of(SLAB_CLASSES - 1) < 1 << 10);

/// A region's own term of its slabs' seals: drawn once per region, never
/// the same twice in a run, so that a stale slab header (memory an earlier
/// heap left, at the same address and with the same region address in its
/// block header) never proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlabKey(usize);

impl SlabKey {
    /// A key no region of this run had before.
    pub(crate) fn draw() -> SlabKey {
        static DRAWN: AtomicUsize = AtomicUsize::new(0);
        let n = DRAWN.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        // Odd multiplier: distinct counts give distinct keys.
        SlabKey(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize))
    }
}

/// The seal of the slab whose data starts at `addr`, for `class`, in the
/// region of `key`.
#[inline]
fn seal(addr: usize, class: usize, key: SlabKey) -> usize {
    addr.rotate_left(23) ^ SEAL_MAGIC ^ class ^ key.0
}

/// The metadata at the start of a slab's data.
#[repr(C)]
pub(crate) struct SlabHeader {
    /// [`seal`] of the slab: the first word an overrun from before meets.
    front: usize,
    /// Next slab of the class's list of slabs with free objects (0: none).
    next: usize,
    /// Previous slab of that list (0: this is its first).
    prev: usize,
    /// The class.
    class: u16,
    /// Objects handed out.
    used: u16,
    /// Lowest bitmap word that may have a clear bit.
    hint: u16,
    /// Whether the slab is on its class's list.
    listed: u16,
    /// CRC-32C of every other word of the header (feature `crc`).
    #[cfg(feature = "crc")]
    crc: u64,
    /// Bit `i`: object `i` is handed out (bits past the last object: set).
    bitmap: [u64; WORDS],
    /// [`seal`] again: the first word an underrun from the objects meets.
    back: usize,
}

/// A handle on a slab's header.
///
/// Type invariant: the pointer designates the data start of a block in
/// state `Slab` of a live region, [`SLAB_DATA`] bytes of readable chunk
/// memory that the holder may access as the region's borrow allows
/// (exclusive for the methods that take `&mut`-like effects: each of those
/// is called only by the region with `&mut self`). The constructor that
/// can break it is `unsafe`. Reading the header's words is memory-safe;
/// their values are trusted only once [`Slab::verify`] accepted them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Slab(NonNull<SlabHeader>);

impl Slab {
    /// A handle on the slab whose data starts at `data`.
    ///
    /// # Safety
    /// `data` is the data start of a block of state `Slab` (or of a used
    /// block about to become one, for [`Slab::init`]), with at least
    /// [`SLAB_DATA`] bytes of chunk memory, and the type invariant holds.
    #[inline]
    pub(crate) unsafe fn at(data: NonNull<u8>) -> Slab {
        Slab(data.cast())
    }

    /// Writes a fresh header for `class`, sealed with the region's `key`:
    /// no object handed out, on no list.
    ///
    /// # Safety
    /// As for [`Slab::at`]; the data is the heap's (nobody uses it).
    pub(crate) unsafe fn init(data: NonNull<u8>, class: usize, key: SlabKey) -> Slab {
        let addr = data.as_ptr().addr();
        let mut bitmap = [0u64; WORDS];
        let capacity = capacity_of(class);
        for (i, word) in bitmap.iter_mut().enumerate() {
            let first = i * 64;
            if first + 64 <= capacity {
                continue;
            }
            let real = capacity.saturating_sub(first);
            *word = if real == 0 {
                u64::MAX
            } else {
                u64::MAX << real
            };
        }
        let header = SlabHeader {
            front: seal(addr, class, key),
            next: 0,
            prev: 0,
            class: class as u16,
            used: 0,
            hint: 0,
            listed: 0,
            #[cfg(feature = "crc")]
            crc: 0,
            bitmap,
            back: seal(addr, class, key),
        };
        // SAFETY: `SLAB_DATA` writable bytes at `data` (caller), aligned to
        // `SLAB_SIZE`, more than the header's alignment.
        unsafe { data.cast::<SlabHeader>().write(header) };
        let slab = Slab(data.cast());
        slab.reseal();
        slab
    }

    /// Address of the slab's data (its header).
    #[inline]
    pub(crate) fn addr(self) -> usize {
        self.0.as_ptr().addr()
    }

    #[inline]
    fn header(&self) -> &SlabHeader {
        // SAFETY: readable, initialised header memory (type invariant).
        unsafe { &*self.0.as_ptr() }
    }

    #[inline]
    #[allow(clippy::mut_from_ref)]
    fn header_mut(&self) -> &mut SlabHeader {
        // SAFETY: the region holds the slab exclusively while it changes it
        // (type invariant); no other reference to the header lives across
        // this call.
        unsafe { &mut *self.0.as_ptr() }
    }

    /// The class, as stored (trusted once verified).
    #[inline]
    pub(crate) fn class(self) -> usize {
        self.header().class as usize
    }

    /// Objects handed out.
    #[inline]
    pub(crate) fn used(self) -> usize {
        self.header().used as usize
    }

    /// Whether every object is handed out.
    #[inline]
    pub(crate) fn is_full(self) -> bool {
        self.used() == capacity_of(self.class())
    }

    /// The list links `(next, prev)` as stored (0: none); proven by the
    /// region before they are followed.
    #[inline]
    pub(crate) fn links(self) -> (usize, usize) {
        let h = self.header();
        (h.next, h.prev)
    }

    /// Whether the slab is on its class's list.
    #[inline]
    pub(crate) fn is_listed(self) -> bool {
        self.header().listed != 0
    }

    /// Sets the list links and the listed flag.
    #[inline]
    pub(crate) fn set_links(self, next: usize, prev: usize, listed: bool) {
        let h = self.header_mut();
        h.next = next;
        h.prev = prev;
        h.listed = listed as u16;
        self.reseal();
    }

    /// Sets the next link only.
    #[inline]
    pub(crate) fn set_next(self, next: usize) {
        self.header_mut().next = next;
        self.reseal();
    }

    /// Sets the previous link only.
    #[inline]
    pub(crate) fn set_prev(self, prev: usize) {
        self.header_mut().prev = prev;
        self.reseal();
    }

    /// Whether both seal words hold for the class the header names, in the
    /// region of `key` (the slab's block header may be damaged; its own
    /// header is not).
    pub(crate) fn is_sealed(self, key: SlabKey) -> bool {
        let h = self.header();
        let class = h.class as usize;
        class < SLAB_CLASSES && h.front == seal(self.addr(), class, key) && h.back == h.front
    }

    /// Whether either seal word is one of the region of `key`, for any
    /// class (the class field may be damaged): the header was written by
    /// that region, whatever happened to it since.
    pub(crate) fn bears_key(self, key: SlabKey) -> bool {
        let h = self.header();
        let classless = seal(self.addr(), 0, key);
        (h.front ^ classless) < SLAB_CLASSES || (h.back ^ classless) < SLAB_CLASSES
    }

    /// Checks what the slab's own header can vouch for: both seals (of the
    /// region of `key`), the class, the count against the bitmap's
    /// capacity, the checksum (`crc`). The first failure, as the damage it
    /// shows.
    #[inline]
    pub(crate) fn verify(self, key: SlabKey) -> Result<(), Corruption> {
        let h = self.header();
        if !self.is_sealed(key) {
            return Err(Corruption::SlabHeader);
        }
        if h.used as usize > capacity_of(h.class as usize)
            || h.hint as usize >= WORDS
            || h.listed > 1
        {
            return Err(Corruption::SlabHeader);
        }
        #[cfg(feature = "crc")]
        if h.crc != self.checksum() {
            return Err(Corruption::Checksum);
        }
        Ok(())
    }

    /// The full check `check()` makes: [`Slab::verify`], and `used` equals
    /// the number of objects the bitmap says are handed out, and the bits
    /// past the last object are set.
    pub(crate) fn verify_counts(self, key: SlabKey) -> Result<(), Corruption> {
        self.verify(key)?;
        let h = self.header();
        let capacity = capacity_of(self.class());
        let mut live = 0;
        for (i, &word) in h.bitmap.iter().enumerate() {
            let first = i * 64;
            let real = capacity.saturating_sub(first).min(64);
            let pad = if real == 64 { 0 } else { u64::MAX << real };
            if word & pad != pad {
                return Err(Corruption::SlabHeader);
            }
            live += (word & !pad).count_ones() as usize;
        }
        if live != self.used() {
            return Err(Corruption::SlabHeader);
        }
        Ok(())
    }

    /// Hands out the lowest free object: its index, or `None` when full.
    /// Call only on a verified slab.
    #[inline]
    pub(crate) fn take(self) -> Option<usize> {
        let h = self.header_mut();
        let mut w = h.hint as usize;
        while w < WORDS {
            let free = !h.bitmap[w];
            if free != 0 {
                let bit = free.trailing_zeros() as usize;
                if w * 64 + bit >= capacity_of(h.class as usize) {
                    // A padding bit cleared: damage, which the caller
                    // reports; nothing past the objects is handed out.
                    return None;
                }
                h.bitmap[w] |= 1 << bit;
                h.used += 1;
                h.hint = w as u16;
                self.reseal();
                return Some(w * 64 + bit);
            }
            w += 1;
        }
        h.hint = (WORDS - 1) as u16;
        self.reseal();
        None
    }

    /// Whether object `index` is handed out.
    #[inline]
    pub(crate) fn is_live(self, index: usize) -> bool {
        self.header().bitmap[index / 64] & (1 << (index % 64)) != 0
    }

    /// Takes object `index` back. Call only on a verified slab, for a live
    /// object.
    #[inline]
    pub(crate) fn give_back(self, index: usize) {
        let h = self.header_mut();
        let w = index / 64;
        h.bitmap[w] &= !(1 << (index % 64));
        h.used -= 1;
        h.hint = h.hint.min(w as u16);
        self.reseal();
    }

    /// The index of the object that starts at `addr`, if one does (not
    /// necessarily live).
    #[inline]
    pub(crate) fn index_of(self, addr: usize) -> Option<usize> {
        let class = self.class();
        let offset = addr.checked_sub(self.addr() + OBJECTS_OFFSET)?;
        if offset >= SLAB_DATA {
            return None;
        }
        // `offset / stride` by a multiplication: exact for offsets below
        // 2^14 and strides below 2^10 (see `RECIPROCALS`).
        let index = ((offset as u64 * RECIPROCALS[class]) >> 32) as usize;
        (index * stride_of(class) == offset && index < capacity_of(class)).then_some(index)
    }

    /// The object of index `index`.
    #[inline]
    pub(crate) fn object(self, index: usize) -> NonNull<u8> {
        let offset = OBJECTS_OFFSET + index * stride_of(self.class());
        debug_assert!(offset + stride_of(self.class()) <= SLAB_DATA);
        // SAFETY: inside the slab's data (the index is below the capacity,
        // so the object ends inside `SLAB_DATA`).
        unsafe { self.0.cast::<u8>().add(offset) }
    }

    /// Restarts the scan for a free object at the first word.
    pub(crate) fn reset_hint(self) {
        self.header_mut().hint = 0;
        self.reseal();
    }

    /// Breaks both seals of a slab whose block goes back to the free
    /// index, so that its stale header never proves again.
    pub(crate) fn wipe(self) {
        let h = self.header_mut();
        h.front = 0;
        h.back = 0;
    }

    /// Updates the checksum after a change (`crc`; nothing otherwise).
    #[inline]
    fn reseal(self) {
        #[cfg(feature = "crc")]
        {
            let crc = self.checksum();
            self.header_mut().crc = crc;
        }
    }

    /// CRC-32C of the header without its checksum word (`crc`).
    #[cfg(feature = "crc")]
    fn checksum(self) -> u64 {
        let h = self.header();
        let mut words = [0u64; 6 + WORDS];
        words[0] = h.front as u64;
        words[1] = h.next as u64;
        words[2] = h.prev as u64;
        words[3] = h.class as u64
            | (h.used as u64) << 16
            | (h.hint as u64) << 32
            | (h.listed as u64) << 48;
        words[4] = h.back as u64;
        words[5] = self.addr() as u64;
        words[6..].copy_from_slice(&h.bitmap);
        crate::crc::checksum(&words) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    #[test]
    fn classes_step_by_8_bytes_and_fit_the_bitmap() {
        assert_eq!(class_of(0, 1), 0);
        assert_eq!(class_of(1, 8), 0);
        assert_eq!(class_of(16, 16), 0);
        assert_eq!(class_of(17, 8), 1);
        assert_eq!(class_size(class_of(17, 8)), 24);
        assert_eq!(class_size(class_of(24, 8)), 24);
        assert_eq!(class_size(class_of(25, 8)), 32);
        // Aligned to 16: the next granule multiple.
        assert_eq!(class_size(class_of(17, 16)), 32);
        assert_eq!(class_size(class_of(40, 16)), 48);
        assert_eq!(class_of(SLAB_MAX, 8), SLAB_CLASSES - 1);
        assert_eq!(class_of(SLAB_MAX, 16), SLAB_CLASSES - 1);
        for size in 0..=SLAB_MAX {
            for align in [1, 2, 4, 8, 16] {
                let class = class_of(size, align);
                assert!(class < SLAB_CLASSES);
                assert!(class_size(class) >= size);
                assert!(class_size(class) < size.max(GRANULE) + align.max(SLAB_STEP));
                // Every object of the class is aligned to `align`.
                assert!(OBJECTS_OFFSET.is_multiple_of(align));
                assert!(stride_of(class).is_multiple_of(align), "{size} {align}");
            }
        }
        for class in 0..SLAB_CLASSES {
            assert!(capacity_of(class) <= WORDS * 64);
            assert!(capacity_of(class) >= 8, "class {class}");
            assert!(OBJECTS_OFFSET + capacity_of(class) * stride_of(class) <= SLAB_DATA);
        }
    }

    /// The figures the README gives for the plain build.
    #[cfg(not(any(feature = "crc", feature = "guard")))]
    #[test]
    fn the_documented_layout() {
        assert_eq!(OBJECTS_OFFSET, 176);
        assert_eq!(capacity_of(0), 1012);
        assert_eq!(capacity_of(1), 674);
        assert_eq!(capacity_of(SLAB_CLASSES - 1), 31);
        assert_eq!(SLAB_CLASSES, 63);
    }

    #[repr(C, align(16384))]
    struct Page([u8; SLAB_SIZE]);

    #[test]
    fn the_reciprocals_divide_exactly() {
        for (class, &reciprocal) in RECIPROCALS.iter().enumerate() {
            let stride = stride_of(class) as u64;
            let step = if cfg!(miri) { 97 } else { 1 };
            for n in (0..SLAB_DATA as u64).step_by(step) {
                assert_eq!((n * reciprocal) >> 32, n / stride, "{n} / {stride}");
            }
        }
    }

    #[test]
    fn take_hands_out_each_object_once_then_nothing() {
        let mut page = Box::new(Page([0; SLAB_SIZE]));
        let data = NonNull::new(page.0.as_mut_ptr()).unwrap();
        let key = SlabKey::draw();
        for class in [0, 7, SLAB_CLASSES - 1] {
            // SAFETY: a private page of `SLAB_SIZE` bytes.
            let slab = unsafe { Slab::init(data, class, key) };
            slab.verify_counts(key).unwrap();
            let n = capacity_of(class);
            let got: Vec<usize> = core::iter::from_fn(|| slab.take()).collect();
            assert_eq!(got, (0..n).collect::<Vec<_>>());
            assert!(slab.is_full());
            slab.verify_counts(key).unwrap();
            slab.give_back(3);
            assert!(!slab.is_live(3));
            assert_eq!(slab.take(), Some(3));
            let first = slab.object(0).as_ptr().addr();
            assert_eq!(slab.index_of(first), Some(0));
            assert_eq!(slab.index_of(first + stride_of(class)), Some(1));
            assert_eq!(slab.index_of(first + 1), None);
            assert_eq!(slab.index_of(first - GRANULE), None);
        }
    }

    #[test]
    fn a_write_over_either_seal_is_found() {
        let mut page = Box::new(Page([0; SLAB_SIZE]));
        let data = NonNull::new(page.0.as_mut_ptr()).unwrap();
        let key = SlabKey::draw();
        // SAFETY: a private page.
        let slab = unsafe { Slab::init(data, 3, key) };
        let flip = |at: usize| {
            // SAFETY: a byte of the private page, written through the
            // pointer the slab was made from.
            unsafe { *data.as_ptr().add(at) ^= 0xff };
        };
        flip(0);
        assert_eq!(slab.verify(key), Err(Corruption::SlabHeader));
        flip(0);
        slab.verify(key).unwrap();
        flip(size_of::<SlabHeader>() - 1);
        assert_eq!(slab.verify(key), Err(Corruption::SlabHeader));
        drop(page);
    }

    #[test]
    fn another_regions_key_does_not_prove_a_slab() {
        let mut page = Box::new(Page([0; SLAB_SIZE]));
        let data = NonNull::new(page.0.as_mut_ptr()).unwrap();
        let (old, new) = (SlabKey::draw(), SlabKey::draw());
        assert_ne!(old, new);
        // SAFETY: a private page.
        let slab = unsafe { Slab::init(data, 5, old) };
        slab.verify(old).unwrap();
        assert!(!slab.is_sealed(new) && !slab.bears_key(new));
        assert!(slab.bears_key(old));
        assert_eq!(slab.verify(new), Err(Corruption::SlabHeader));
        drop(page);
    }
}
