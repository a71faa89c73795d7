//! The byte patterns written into allocated blocks and read back: by the
//! self-tests, the SMP stress and the timer handler, so that a block handed
//! out twice, or damaged by the heap, shows as a changed byte.
//!
//! Invariant: the pattern of a byte depends only on the seed and the offset,
//! so any CPU can check a block another CPU filled.

/// The byte pattern of offset `i` under `seed`.
pub fn pattern(seed: usize, i: usize) -> u8 {
    (seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(7)) ^ (i >> 8)) as u8
}

/// Fills `len` bytes at `p` with the pattern of `seed`.
///
/// # Safety
///
/// `p` must be valid for writes of `len` bytes.
pub unsafe fn fill(p: *mut u8, len: usize, seed: usize) {
    for i in 0..len {
        // SAFETY: `i < len` and the caller guarantees `len` writable bytes.
        unsafe { p.add(i).write(pattern(seed, i)) };
    }
}

/// Whether `len` bytes at `p` hold the pattern of `seed`.
///
/// # Safety
///
/// `p` must be valid for reads of `len` initialized bytes.
pub unsafe fn holds(p: *const u8, len: usize, seed: usize) -> bool {
    // SAFETY: `i < len` and the caller guarantees `len` readable bytes.
    (0..len).all(|i| unsafe { p.add(i).read() } == pattern(seed, i))
}
