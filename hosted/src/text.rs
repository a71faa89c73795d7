//! Messages built in a stack buffer, for code that must not allocate
//! (reports written from inside `malloc`).

/// A fixed-capacity byte string; what does not fit is cut off.
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    /// An empty text.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// Appends bytes.
    pub fn put(&mut self, bytes: &[u8]) -> &mut Self {
        let n = bytes.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self
    }

    /// Appends `value` in decimal.
    pub fn dec(&mut self, value: u64) -> &mut Self {
        self.digits(value, 10)
    }

    /// Appends `value` in lowercase hexadecimal, without a prefix.
    pub fn hex(&mut self, value: usize) -> &mut Self {
        self.digits(value as u64, 16)
    }

    fn digits(&mut self, value: u64, base: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut n = 0;
        let mut rest = value;
        loop {
            digits[n] = b"0123456789abcdef"[(rest % base) as usize];
            n += 1;
            rest /= base;
            if rest == 0 {
                break;
            }
        }
        digits[..n].reverse();
        self.put(&digits[..n])
    }

    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the text to stderr with one `write(2)`.
    pub fn write_stderr(&self) {
        // SAFETY: writes `len` initialised bytes of the buffer to fd 2.
        unsafe { libc::write(2, self.buf.as_ptr().cast(), self.len) };
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_truncation() {
        let mut t = Text::<32>::new();
        t.put(b"n=")
            .dec(0)
            .put(b" ")
            .dec(u64::MAX)
            .put(b" 0x")
            .hex(0xbeef);
        assert_eq!(t.as_bytes(), b"n=0 18446744073709551615 0xbeef");
        t.put(b"cut");
        assert_eq!(t.as_bytes().len(), 32);
        assert!(
            t.as_bytes().ends_with(b"0xbeefc"),
            "cut after the first byte"
        );
    }
}
