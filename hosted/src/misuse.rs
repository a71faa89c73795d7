//! Reporting a misuse (invalid or double free, broken header): a message
//! naming the call and the address on stderr, then `abort`, as glibc does.
//!
//! The message is assembled in a stack buffer and written with one
//! `write(2)`: nothing here allocates, since the heap may be what is broken.

use region_heap::HeapError;

use crate::text::Text;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// The block was already freed.
    DoubleFree,
    /// The pointer is not the start of a block this allocator handed out.
    InvalidPointer,
    /// The block's header (or its neighbours') is damaged.
    Corrupted,
    /// A freed block the allocator keeps for reuse was written to: its
    /// link, seal or the word before its data no longer fit (a write
    /// after free, or an overrun from the block before it).
    Overwritten,
}

impl Misuse {
    /// The misuse a heap error describes.
    pub fn of(error: &HeapError) -> Misuse {
        match error {
            HeapError::DoubleFree { .. } => Misuse::DoubleFree,
            HeapError::Corrupted { .. } => Misuse::Corrupted,
            _ => Misuse::InvalidPointer,
        }
    }

    fn text(self) -> &'static [u8] {
        match self {
            Misuse::DoubleFree => b"double free",
            Misuse::InvalidPointer => b"invalid pointer",
            Misuse::Corrupted => b"corrupted block header",
            Misuse::Overwritten => b"freed block overwritten",
        }
    }
}

/// Longest report: prefix, call, misuse, address.
const REPORT_MAX: usize = 128;

/// The report: `region-heap: <call>(): <misuse> at 0x<addr>\n`.
pub fn format_report(call: &str, misuse: Misuse, addr: usize) -> Text<REPORT_MAX> {
    let mut text = Text::new();
    text.put(b"region-heap: ")
        .put(call.as_bytes())
        .put(b"(): ")
        .put(misuse.text())
        .put(b" at 0x")
        .hex(addr)
        .put(b"\n");
    text
}

/// Reports the misuse on stderr and aborts the process.
#[cold]
pub fn report(call: &str, misuse: Misuse, addr: usize) -> ! {
    format_report(call, misuse, addr).write_stderr();
    // SAFETY: `abort` takes no arguments; it does not return.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_name_the_call_and_the_address() {
        let report = format_report("free", Misuse::DoubleFree, 0x7f00_dead_bee0);
        assert_eq!(
            report.as_bytes(),
            b"region-heap: free(): double free at 0x7f00deadbee0\n"
        );
        let report = format_report("realloc", Misuse::InvalidPointer, 0);
        assert_eq!(
            report.as_bytes(),
            b"region-heap: realloc(): invalid pointer at 0x0\n"
        );
        let report = format_report("free", Misuse::Corrupted, usize::MAX);
        assert_eq!(
            report.as_bytes(),
            b"region-heap: free(): corrupted block header at 0xffffffffffffffff\n"
        );
    }

    #[test]
    fn heap_errors_map_to_misuses() {
        assert_eq!(
            Misuse::of(&HeapError::DoubleFree { addr: 16 }),
            Misuse::DoubleFree
        );
        assert_eq!(
            Misuse::of(&HeapError::NotBlockStart { addr: 16 }),
            Misuse::InvalidPointer
        );
        assert_eq!(
            Misuse::of(&HeapError::NotFromHeap { addr: 16 }),
            Misuse::InvalidPointer
        );
    }
}
