//! A real `fork` while another thread is inside a heap (its own process,
//! so no other test holds or takes a lock meanwhile): the child's handler
//! abandons that heap, and the child allocates, resizes and frees without
//! waiting for the thread it does not have, whatever heap each block
//! came from. The parent goes on as before.

use std::ptr::NonNull;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use region_heap_hosted::global;
use region_heap_hosted::malloc::{free, get_stat, malloc, realloc};

/// The child's checks; returns its exit code (0: all passed). Allocates
/// nothing through the test binary's own allocator.
fn child(held: usize, old: &[(*mut u8, usize)]) -> i32 {
    // SAFETY: the atfork child handler's call, in the child's one thread.
    unsafe { global::fork_child() };
    if global::abandoned_heaps() & (1 << held) == 0 {
        return 10;
    }
    let mut blocks = [(core::ptr::null_mut::<u8>(), 0usize); 48];
    for (i, slot) in blocks.iter_mut().enumerate() {
        let n = 1 + (i * 397) % 6000 + if i == 5 { 400 << 10 } else { 0 };
        let recycled = get_stat().recycled;
        let p = malloc(n);
        if p.is_null() {
            return 11;
        }
        // A block from this thread's own cache may be one the abandoned
        // heap handed out before the fork (the cache is consistent and
        // stays in use); a block a heap hands out in the child may not.
        let from_heap = get_stat().recycled == recycled;
        // SAFETY: a live block of `n` bytes.
        if from_heap && unsafe { global::heap_of_block(NonNull::new(p).unwrap()) } == Some(held) {
            return 12;
        }
        // SAFETY: `n` writable bytes.
        unsafe { p.write_bytes(i as u8, n) };
        *slot = (p, n);
    }
    for &(p, n) in old {
        // Blocks of the parent (some owned by the abandoned heap): grown
        // (moved off it), checked, freed.
        // SAFETY: live blocks of `n` bytes filled with 0xab by the parent.
        unsafe {
            let q = realloc(p, n + 10_000);
            if q.is_null() || !(0..n).all(|k| *q.add(k) == 0xab) {
                return 13;
            }
            free(q);
        }
    }
    for (i, &(p, n)) in blocks.iter().enumerate() {
        // SAFETY: live blocks of `n` bytes, checked, freed once.
        unsafe {
            if !(0..n).all(|k| *p.add(k) == i as u8) {
                return 14;
            }
            free(p);
        }
    }
    if get_stat().malloc == 0 {
        return 15;
    }
    0
}

#[test]
fn a_child_forked_while_a_heap_is_held_does_not_wait_for_it() {
    global::prefer_mmap();
    assert!(global::ensure_init());
    let old: Vec<(*mut u8, usize)> = (0..40)
        .map(|i| {
            let n = 100 + i * 150;
            let p = malloc(n);
            // SAFETY: `n` writable bytes.
            unsafe { p.write_bytes(0xab, n) };
            (p, n)
        })
        .collect();
    let held = 0;
    let (inside, entered) = mpsc::channel();
    let (release, wait) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        // Heap `held` stays locked while the closure waits.
        global::for_each_heap(|i, _| {
            if i == held {
                inside.send(()).unwrap();
                wait.recv().unwrap();
            }
        });
    });
    entered.recv().unwrap();
    // SAFETY: the child runs only `child` (no allocation through the test
    // binary's allocator, no unwinding) and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = child(held, &old);
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0, "fork failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    let done = loop {
        // SAFETY: our child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break true;
        }
        if Instant::now() > deadline {
            // SAFETY: our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    release.send(()).unwrap();
    holder.join().unwrap();
    assert!(done, "the child hung");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed: status {status:#x}"
    );
    // The parent abandoned nothing and goes on.
    assert_eq!(global::abandoned_heaps(), 0);
    for (p, n) in old {
        // SAFETY: live blocks, checked then freed once.
        unsafe {
            assert!((0..n).all(|k| *p.add(k) == 0xab));
            free(p);
        }
    }
}
