//! The replayer: runs a trace's `os_*` calls against `libosmem.so`.
//!
//! It runs in its own process (`osmem-check replay`), traced from outside
//! by the checker's recorder, by `strace` or run under valgrind, and:
//! - loads the library with `dlopen`, exactly as a C program would use it;
//! - maps each address of the trace to a real pointer: an address the
//!   reference returned earlier stands for the pointer our call returned
//!   then; `HeapStart + x` never returned stands for the real break + x;
//! - brackets each call with markers (see `events`) carrying the call's
//!   index, its real arguments and its result;
//! - checks each result against the reference (same heap offset, or a
//!   mapping), the data of every live block (a pattern written after each
//!   allocation must survive until the block is freed, and be carried over
//!   by `os_realloc`; `os_calloc` must return zeroes) and the heap's headers
//!   (`seedheap`) after every call; it stops at the first divergence;
//! - with `--free-all`, frees every block the trace left live and checks
//!   that the whole heap is free (the basis of the valgrind leak check).
//!
//! Between the first call and the last, the replayer must not move the
//! break itself: everything it needs is allocated before the first call,
//! and glibc's malloc is told to use `mmap` only and never trim
//! (`mallopt`), so its own allocations cannot touch the break the library
//! owns. The recorder reports any `brk` outside the library's calls.

use std::ffi::{c_void, CString};

use crate::events::{emit, Marker};
use crate::seedheap;
use crate::trace::{self, Addr, Call, Step};

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);

/// The four functions of the library.
struct Osmem {
    malloc: MallocFn,
    calloc: CallocFn,
    realloc: ReallocFn,
    free: FreeFn,
}

impl Osmem {
    fn load(path: &str) -> Result<Osmem, String> {
        let c_path = CString::new(path).map_err(|e| e.to_string())?;
        // SAFETY: loads a shared library by path; its initialisers are
        // Rust statics with no side effect.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("cannot dlopen {path}"));
        }
        let symbol = |name: &str| -> Result<*mut c_void, String> {
            let c_name = CString::new(name).map_err(|e| e.to_string())?;
            // SAFETY: `handle` is a loaded library, `c_name` a C string.
            let sym = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
            if sym.is_null() {
                Err(format!("{path} does not export {name}"))
            } else {
                Ok(sym)
            }
        };
        // SAFETY: the seed's prototypes (include/osmem.h) for each symbol.
        unsafe {
            Ok(Osmem {
                malloc: std::mem::transmute::<*mut c_void, MallocFn>(symbol("os_malloc")?),
                calloc: std::mem::transmute::<*mut c_void, CallocFn>(symbol("os_calloc")?),
                realloc: std::mem::transmute::<*mut c_void, ReallocFn>(symbol("os_realloc")?),
                free: std::mem::transmute::<*mut c_void, FreeFn>(symbol("os_free")?),
            })
        }
    }
}

/// A block the replay holds: payload, bytes asked for, pattern seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    /// The payload.
    pub ptr: usize,
    /// Bytes requested (the pattern covers them).
    pub len: usize,
    /// Seed of the pattern written over them.
    pub seed: usize,
}

/// Why a replay stopped.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Unresolved(Addr),
    Result { got: usize },
    Pattern { ptr: usize },
    NotZeroed { ptr: usize },
    Moved { ptr: usize },
    Heap(seedheap::Fault),
}

fn pattern_byte(seed: usize, i: usize) -> u8 {
    (seed.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8
}

fn fill(block: Live) {
    // SAFETY: a live payload of at least `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(block.ptr as *mut u8, block.len) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern_byte(block.seed, i);
    }
}

/// Whether the first `len` bytes at `ptr` hold `seed`'s pattern.
fn holds_pattern(ptr: usize, len: usize, seed: usize) -> bool {
    // SAFETY: `ptr` is a live payload of at least `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_byte(seed, i))
}

/// The state of one replay, allocated before the first call.
struct Replay {
    lib: Osmem,
    heap_start: usize,
    /// Reference result → our pointer, latest first to match.
    learned: Vec<(Addr, usize)>,
    /// Blocks held, sorted by address.
    live: Vec<Live>,
}

impl Replay {
    fn resolve(&self, addr: Addr) -> Result<usize, Failure> {
        if addr == Addr::Null {
            return Ok(0);
        }
        if let Some(&(_, ptr)) = self.learned.iter().rev().find(|(a, _)| *a == addr) {
            return Ok(ptr);
        }
        match addr {
            Addr::Heap(off) => Ok(self.heap_start + off),
            _ => Err(Failure::Unresolved(addr)),
        }
    }

    fn learn(&mut self, addr: Addr, ptr: usize) {
        debug_assert!(self.learned.len() < self.learned.capacity());
        self.learned.push((addr, ptr));
    }

    fn position(&self, ptr: usize) -> Result<usize, usize> {
        self.live.binary_search_by_key(&ptr, |l| l.ptr)
    }

    fn hold(&mut self, block: Live) {
        fill(block);
        let at = self.position(block.ptr).unwrap_or_else(|at| at);
        debug_assert!(self.live.len() < self.live.capacity());
        self.live.insert(at, block);
    }

    /// Takes `ptr` off the live blocks after checking its pattern.
    fn release(&mut self, ptr: usize) -> Result<Option<Live>, Failure> {
        let Ok(at) = self.position(ptr) else {
            return Ok(None);
        };
        let block = self.live.remove(at);
        if !holds_pattern(block.ptr, block.len, block.seed) {
            return Err(Failure::Pattern { ptr });
        }
        Ok(Some(block))
    }

    fn check_result(&self, expected: Addr, got: usize) -> Result<(), Failure> {
        let ok = match expected {
            Addr::Null => got == 0,
            Addr::Heap(off) => got == self.heap_start + off,
            Addr::Mapped(..) => {
                got != 0 && (got < self.heap_start || got >= seedheap::current_break())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Failure::Result { got })
        }
    }

    /// Runs one call: markers, the call, then every check.
    fn step(&mut self, index: usize, step: &Step) -> Result<(), Failure> {
        let got = match step.call {
            Call::Malloc(size) => {
                let got = self.call(index, &[size], |lib| {
                    // SAFETY: the seed's os_malloc accepts any size.
                    unsafe { (lib.malloc)(size) }
                });
                self.check_result(step.result, got)?;
                self.hold_new(got, size, index);
                got
            }
            Call::Calloc(nmemb, size) => {
                let got = self.call(index, &[nmemb, size], |lib| {
                    // SAFETY: the seed's os_calloc accepts any sizes.
                    unsafe { (lib.calloc)(nmemb, size) }
                });
                self.check_result(step.result, got)?;
                let total = nmemb.saturating_mul(size);
                if got != 0 && !holds_zeroes(got, total) {
                    return Err(Failure::NotZeroed { ptr: got });
                }
                self.hold_new(got, total, index);
                got
            }
            Call::Realloc(addr, size) => {
                let ptr = self.resolve(addr)?;
                let old = self.release(ptr)?;
                let got = self.call(index, &[ptr, size], |lib| {
                    // SAFETY: `ptr` is NULL or a pointer the library
                    // returned (possibly freed since, which the seed allows).
                    unsafe { (lib.realloc)(ptr as *mut c_void, size) }
                });
                self.check_result(step.result, got)?;
                if let Some(old) = old {
                    if got == 0 && size != 0 {
                        // Refused: the old block stays ours, unchanged.
                        self.hold(old);
                    } else if got != 0 && !holds_pattern(got, old.len.min(size), old.seed) {
                        return Err(Failure::Moved { ptr: got });
                    }
                }
                self.hold_new(got, size, index);
                got
            }
            Call::Free(addr) => {
                let ptr = self.resolve(addr)?;
                self.release(ptr)?;
                self.call(index, &[ptr], |lib| {
                    // SAFETY: as for realloc.
                    unsafe { (lib.free)(ptr as *mut c_void) };
                    std::ptr::null_mut()
                });
                0
            }
        };
        if step.call.returns_pointer() && got != 0 {
            self.learn(step.result, got);
        }
        // SAFETY: the library is between calls; `live` holds its payloads.
        unsafe { seedheap::check(self.heap_start, &self.live, false) }.map_err(Failure::Heap)
    }

    fn hold_new(&mut self, ptr: usize, len: usize, seed: usize) {
        if ptr != 0 {
            self.hold(Live { ptr, len, seed });
        }
    }

    /// Calls the library between markers.
    fn call(&self, index: usize, args: &[usize], f: impl FnOnce(&Osmem) -> *mut c_void) -> usize {
        emit(Marker::Begin, index);
        for &arg in args {
            emit(Marker::Arg, arg);
        }
        let result = f(&self.lib) as usize;
        emit(Marker::End, result);
        result
    }

    /// Frees every block still held and checks that the heap is all free.
    fn free_all(&mut self) -> Result<(), Failure> {
        while let Some(block) = self.live.last().copied() {
            self.release(block.ptr)?;
            // SAFETY: a live block of the library.
            unsafe { (self.lib.free)(block.ptr as *mut c_void) };
        }
        // SAFETY: the library is idle and nothing is held.
        unsafe { seedheap::check(self.heap_start, &[], true) }.map_err(Failure::Heap)
    }
}

fn holds_zeroes(ptr: usize, len: usize) -> bool {
    // SAFETY: `ptr` is a fresh payload of at least `len` bytes.
    unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
        .iter()
        .all(|&b| b == 0)
}

fn describe(failure: Failure) -> String {
    match failure {
        Failure::Unresolved(addr) => format!("argument {addr} was never returned"),
        Failure::Result { got } => format!("returned {got:#x}, not what the reference returned"),
        Failure::Pattern { ptr } => format!("data of live block {ptr:#x} changed"),
        Failure::NotZeroed { ptr } => format!("os_calloc block {ptr:#x} is not zeroed"),
        Failure::Moved { ptr } => format!("os_realloc to {ptr:#x} lost the data"),
        Failure::Heap(f) => format!("heap headers: {} at {:#x}", f.what, f.at),
    }
}

/// Replays `trace_path` against the library at `lib`; returns the exit
/// status (0: every call matched and every check held).
pub fn run(lib: &str, trace_path: &str, free_all: bool) -> Result<i32, String> {
    let text = std::fs::read_to_string(trace_path).map_err(|e| format!("{trace_path}: {e}"))?;
    let steps = trace::parse(&text)?;
    let lib = Osmem::load(lib)?;
    // SAFETY: mallopt only sets glibc malloc parameters: mmap for every
    // new chunk, never give the brk heap back (trimming moves the break).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
    let heap_start = seedheap::current_break();
    let mut replay = Replay {
        lib,
        heap_start,
        learned: Vec::with_capacity(steps.len()),
        live: Vec::with_capacity(steps.len() + 1),
    };
    emit(Marker::Heap, heap_start);
    let mut outcome = Ok(());
    for (index, step) in steps.iter().enumerate() {
        outcome = replay.step(index, step).map_err(|f| (step.line, f));
        if outcome.is_err() {
            break;
        }
    }
    if outcome.is_ok() && free_all {
        outcome = replay.free_all().map_err(|f| (0, f));
    }
    match outcome {
        Ok(()) => Ok(0),
        Err((line, failure)) => {
            eprintln!("{trace_path}:{line}: {}", describe(failure));
            Ok(1)
        }
    }
}
