//! CRC-32C (Castagnoli), the block header checksum of the `crc` feature.
//!
//! Why this checksum: a CRC detects every error burst of up to 32 bits, so
//! any overwrite of up to four consecutive header bytes (the typical
//! off-by-a-few store of a buggy program) is always caught, which no hash
//! guarantees; the Castagnoli polynomial (`0x1EDC6F41`, reflected
//! `0x82F63B78`) keeps a Hamming distance of 6 up to 5,243 message bits
//! (Koopman, "32-bit cyclic redundancy codes for Internet applications",
//! DSN 2002) against 268 for the IEEE polynomial, and it is the one x86-64
//! (SSE4.2 `crc32`) and ARMv8 compute in hardware. It is the metadata
//! checksum of iSCSI, ext4 and Btrfs for the same reasons.
//!
//! Computation: the message is a few 64-bit words, processed one word at a
//! time, least significant byte first. On x86-64 the `crc32` instruction is
//! used when the build enables SSE4.2 (inlined), or for whole checksums
//! when the CPU reports it at run time (checked once with `cpuid`);
//! otherwise, and under Miri, slicing-by-8 tables built at compile time
//! (8 KiB) give the same result.
//!
//! CRCs are linear: for messages of equal length, `crc(a) ^ crc(b) ==
//! raw(a ^ b)` where `raw` runs the register from zero without the final
//! inversion. Header updates use this to patch a checksum instead of
//! recomputing it ([`raw_words`] of the words' change), which
//! also keeps a checksum that was already wrong wrong: an update never
//! launders earlier damage.

/// The reflected CRC-32C polynomial.
const POLY: u32 = 0x82F6_3B78;

/// Slicing-by-8 tables: `TABLES[k][b]` is the register after byte `b`
/// followed by `k` zero bytes.
static TABLES: [[u32; 256]; 8] = tables();

const fn tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            bit += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// The tables as a constant, for compile-time evaluation (the static above
/// is what runs, so the tables exist once in the binary).
const TABLES_CONST: [[u32; 256]; 8] = tables();

/// One register step over a 64-bit word with the tables `t`.
#[inline]
const fn table_word(t: &[[u32; 256]; 8], crc: u32, word: u64) -> u32 {
    let x = word ^ crc as u64;
    t[7][(x & 0xff) as usize]
        ^ t[6][((x >> 8) & 0xff) as usize]
        ^ t[5][((x >> 16) & 0xff) as usize]
        ^ t[4][((x >> 24) & 0xff) as usize]
        ^ t[3][((x >> 32) & 0xff) as usize]
        ^ t[2][((x >> 40) & 0xff) as usize]
        ^ t[1][((x >> 48) & 0xff) as usize]
        ^ t[0][(x >> 56) as usize]
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
mod hw {
    use core::sync::atomic::{AtomicU8, Ordering};

    /// The `crc32` instruction over the words, from register `crc`.
    ///
    /// # Safety
    /// The CPU supports SSE4.2.
    #[inline]
    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn words(mut crc: u32, words: &[u64]) -> u32 {
        for &w in words {
            crc = core::arch::x86_64::_mm_crc32_u64(crc as u64, w) as u32;
        }
        crc
    }

    const UNKNOWN: u8 = 0;
    const ABSENT: u8 = 1;
    const PRESENT: u8 = 2;
    static SSE42: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// Whether the CPU has SSE4.2 (`cpuid` leaf 1, ECX bit 20), asked once.
    #[inline]
    pub(super) fn available() -> bool {
        if cfg!(target_feature = "sse4.2") {
            return true;
        }
        match SSE42.load(Ordering::Relaxed) {
            PRESENT => true,
            ABSENT => false,
            _ => detect(),
        }
    }

    #[cold]
    fn detect() -> bool {
        let present = core::arch::x86_64::__cpuid(1).ecx & (1 << 20) != 0;
        SSE42.store(if present { PRESENT } else { ABSENT }, Ordering::Relaxed);
        present
    }
}

/// Runs the register from `crc` over `words` (no inversions).
#[inline]
fn raw_words(crc: u32, words: &[u64]) -> u32 {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if hw::available() {
        // SAFETY: the CPU supports SSE4.2 (checked just above).
        return unsafe { hw::words(crc, words) };
    }
    words.iter().fold(crc, |c, &w| table_word(&TABLES, c, w))
}

/// CRC-32C of a message of 64-bit words (initial value and final XOR
/// `0xFFFF_FFFF`, as standardised).
#[inline]
pub(crate) fn checksum(words: &[u64]) -> u32 {
    !raw_words(!0, words)
}

/// The change of the checksum when the *last* word of a message changes by
/// `delta` (the XOR of its old and new values). One register step: the
/// `crc32` instruction when the build enables SSE4.2, else the tables,
/// inline (a run-time dispatch would cost more than the step).
#[inline]
pub(crate) fn last_word_delta(delta: u64) -> u32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse4.2", not(miri)))]
    // SAFETY: the build targets CPUs with SSE4.2.
    return unsafe { hw::words(0, &[delta]) };
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse4.2", not(miri))))]
    return table_word(&TABLES, 0, delta);
}

/// The change of the checksum when the word `zeros_after` words before the
/// end of the message changes by `delta`.
#[cfg(any(test, feature = "guard"))]
#[inline]
pub(crate) fn word_delta(delta: u64, zeros_after: usize) -> u32 {
    let mut words = [0u64; 4];
    words[0] = delta;
    raw_words(0, &words[..=zeros_after])
}

/// [`word_delta`] at compile time, for constant deltas (state bits).
pub(crate) const fn const_word_delta(delta: u64, zeros_after: usize) -> u32 {
    let mut crc = table_word(&TABLES_CONST, 0, delta);
    let mut i = 0;
    while i < zeros_after {
        crc = table_word(&TABLES_CONST, crc, 0);
        i += 1;
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes to little-endian words, zero padded (test helper).
    fn bytes_to_words(bytes: &[u8]) -> std::vec::Vec<u64> {
        bytes
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect()
    }

    #[test]
    fn matches_the_standard_check_value() {
        // The catalogue check value of CRC-32C is crc("123456789") =
        // 0xE3069283; with whole words, the 16 bytes "123456789abcdefg"
        // are checked against a bitwise reference instead.
        fn bitwise(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in bytes {
                crc ^= b as u32;
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ POLY
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        assert_eq!(bitwise(b"123456789"), 0xE306_9283);
        let msg = b"123456789abcdefg";
        assert_eq!(checksum(&bytes_to_words(msg)), bitwise(msg));
        let soft = !bytes_to_words(msg)
            .iter()
            .fold(!0, |c, &w| table_word(&TABLES, c, w));
        assert_eq!(soft, bitwise(msg), "tables and hardware agree");
    }

    #[test]
    fn deltas_patch_the_checksum() {
        let a = [0x1234_5678_9abc_def0u64, 42, 0xdead_beef];
        let mut b = a;
        b[2] ^= 0x0000_0100_0000_0001;
        assert_eq!(checksum(&a) ^ last_word_delta(a[2] ^ b[2]), checksum(&b));
        let mut c = a;
        c[0] ^= 3;
        assert_eq!(checksum(&a) ^ word_delta(3, 2), checksum(&c));
        assert_eq!(word_delta(3, 2), const_word_delta(3, 2));
        let mut d = a;
        d[1] ^= 0xffff;
        assert_eq!(checksum(&a) ^ word_delta(0xffff, 1), checksum(&d));
    }

    #[test]
    fn every_burst_up_to_32_bits_is_detected() {
        let msg = [0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210, 7];
        let sum = checksum(&msg);
        for start in 0..(64 * 3 - 32) {
            for pattern in [1u64, 0x8000_0001, 0xffff_ffff, 0x1_0001] {
                let mut bad = msg;
                let (w, b) = (start / 64, start % 64);
                bad[w] ^= pattern << b;
                if b > 0 && w + 1 < 3 {
                    bad[w + 1] ^= pattern >> (64 - b);
                }
                assert_ne!(checksum(&bad), sum, "burst at bit {start}");
            }
        }
    }
}
