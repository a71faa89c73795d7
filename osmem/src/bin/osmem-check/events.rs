//! What a replay looks like from outside: its system calls, with markers.
//!
//! The replayer tells whoever traces it (this checker's recorder, `strace`)
//! where each `os_*` call starts and ends by making a system call that
//! fails and has no effect: `lseek(-1, value, kind)`. The traced stream is
//! then, per call:
//!
//! ```text
//! lseek(-1, i, BEGIN)  lseek(-1, arg, ARG)...  <brk/mmap/munmap of os_*>  lseek(-1, result, END)
//! ```
//!
//! plus one `HEAP` marker with the break found before the first call.
//! Every system call between `BEGIN` and `END` is the library's (the
//! seed allows only `brk`, `mmap` and `munmap`); those outside are the
//! replayer's own.

/// The kinds of marker, passed as `lseek`'s `whence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// A call starts; the value is its index in the trace.
    Begin,
    /// One argument of the current call.
    Arg,
    /// The current call returned this value (0 for `os_free`).
    End,
    /// The break before the first call: `HeapStart`.
    Heap,
}

impl Marker {
    fn code(self) -> u64 {
        match self {
            Marker::Begin => 0,
            Marker::Arg => 1,
            Marker::End => 2,
            Marker::Heap => 3,
        }
    }

    fn from_code(code: u64) -> Option<Marker> {
        [Marker::Begin, Marker::Arg, Marker::End, Marker::Heap]
            .into_iter()
            .find(|m| m.code() == code)
    }
}

/// The file descriptor of the markers: never open, so `lseek` fails.
const MARKER_FD: u64 = u32::MAX as u64;

/// Emits a marker (one failing `lseek`; allocates nothing).
pub fn emit(marker: Marker, value: usize) {
    // SAFETY: `lseek` on a descriptor that is not open fails with EBADF
    // and touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_lseek,
            -1 as libc::c_long,
            value as libc::c_long,
            marker.code() as libc::c_long,
        );
    }
}

/// One system call of interest made by the replayer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A marker and its value.
    Marker(Marker, usize),
    /// `brk(request)` returned `result`.
    Brk {
        /// The requested break, 0 to query it.
        request: usize,
        /// The break after the call.
        result: usize,
    },
    /// `mmap(addr, len, prot, flags, fd, offset)` returned `result`.
    Mmap {
        /// The six arguments.
        args: [u64; 6],
        /// The address mapped (or `MAP_FAILED`).
        result: usize,
    },
    /// Any other system call (the library must make none).
    Other {
        /// Its number.
        nr: u64,
        /// Its result.
        result: i64,
    },
    /// `munmap(addr, len)` returned `result`.
    Munmap {
        /// Start of the range.
        addr: usize,
        /// Its length.
        len: usize,
        /// 0 or -1.
        result: i64,
    },
}

impl Event {
    /// The event of a finished system call (`None` for an `lseek` that is
    /// not a marker).
    pub fn from_syscall(nr: u64, args: [u64; 6], result: i64) -> Option<Event> {
        let number = nr;
        let nr = nr as libc::c_long;
        if nr == libc::SYS_brk {
            Some(Event::Brk {
                request: args[0] as usize,
                result: result as usize,
            })
        } else if nr == libc::SYS_mmap {
            Some(Event::Mmap {
                args,
                result: result as usize,
            })
        } else if nr == libc::SYS_munmap {
            Some(Event::Munmap {
                addr: args[0] as usize,
                len: args[1] as usize,
                result,
            })
        } else if nr == libc::SYS_lseek && args[0] & MARKER_FD == MARKER_FD {
            Marker::from_code(args[2]).map(|m| Event::Marker(m, args[1] as usize))
        } else {
            Some(Event::Other { nr: number, result })
        }
    }
}
