//! Valgrind client requests: tell memcheck which blocks are handed out.
//!
//! The library takes its memory from `brk` and `mmap`, which memcheck sees
//! as plain mappings: without annotations it could neither report a block
//! the library never takes back (a leak) nor a use after `os_free`. These
//! requests mark payloads as malloc-like blocks, as `valgrind.h` and
//! `memcheck.h` do for custom allocators.
//!
//! A client request is a sequence of register rotations that leaves every
//! register unchanged (`rol rdi` by 3 + 13 + 61 + 51 = 128 bits) followed by
//! `xchg rbx, rbx`: natively it does nothing and makes no system call;
//! valgrind recognises it and performs the request. On targets other than
//! x86_64 Linux (and under Miri) the requests compile to nothing.

/// `VG_USERREQ__MALLOCLIKE_BLOCK` (valgrind.h).
const MALLOCLIKE_BLOCK: usize = 0x1301;
/// `VG_USERREQ__FREELIKE_BLOCK` (valgrind.h).
const FREELIKE_BLOCK: usize = 0x1302;
/// `VG_USERREQ__RESIZEINPLACE_BLOCK` (valgrind.h).
const RESIZEINPLACE_BLOCK: usize = 0x130b;
/// `VG_USERREQ__MAKE_MEM_UNDEFINED` (memcheck.h): tool base `'M','C'` + 1.
const MAKE_MEM_UNDEFINED: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16 | 1;

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
fn request(code: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> usize {
    let args: [usize; 6] = [code, a1, a2, a3, a4, 0];
    let result: usize;
    // SAFETY: the rotations by 128 bits in total restore `rdi`, and
    // `xchg rbx, rbx` changes nothing: natively the sequence only clobbers
    // the flags. Under valgrind it reads `args` (alive for the whole
    // statement) and writes the result to `rdx`.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") 0usize => result,
            in("rax") args.as_ptr(),
            options(nostack),
        );
    }
    result
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
fn request(_code: usize, _a1: usize, _a2: usize, _a3: usize, _a4: usize) -> usize {
    0
}

/// `payload..payload + size` was just handed out (`zeroed`: its content is
/// defined, as after `calloc`).
pub fn malloclike(payload: *mut u8, size: usize, zeroed: bool) {
    request(MALLOCLIKE_BLOCK, payload as usize, size, 0, zeroed as usize);
}

/// The block at `payload` was just taken back.
pub fn freelike(payload: *mut u8) {
    request(FREELIKE_BLOCK, payload as usize, 0, 0, 0);
}

/// The block at `payload` now holds `new_size` bytes instead of `old_size`.
pub fn resize_in_place(payload: *mut u8, old_size: usize, new_size: usize) {
    request(RESIZEINPLACE_BLOCK, payload as usize, old_size, new_size, 0);
}

/// The allocator is about to reuse `len` bytes at `addr` for itself (a
/// header inside memory that was a payload).
pub fn make_mem_undefined(addr: *mut u8, len: usize) {
    request(MAKE_MEM_UNDEFINED, addr as usize, len, 0, 0);
}
