//! The SMP stress: every online CPU at once allocates blocks, fills them
//! with a pattern, hands every other block to another CPU through that
//! CPU's inbox, and checks and frees the blocks it receives (remote frees),
//! with its timer interrupt allocating on every tick meanwhile.
//!
//! A block in flight carries a message header in its first [`HEADER`] bytes
//! (next message, size, seed); the rest holds the pattern of its seed.
//!
//! Invariants: a block in an inbox belongs to the inbox (its sender never
//! touches it again); an inbox lock is never held while allocating or
//! freeing, and never taken by an interrupt handler; a CPU leaves the stress
//! only once every CPU has finished sending and every block sent has been
//! received and freed (`RECEIVED == SENT`), so no block outlives [`run`].

use alloc::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;
use x86_64::instructions::{hlt, interrupts};

use crate::pattern::{fill, holds};
use crate::percpu::{PerCpu, MAX_CPUS};
use crate::timer;

/// Blocks each CPU allocates.
pub const ROUNDS: usize = 50_000;
/// Blocks each CPU keeps for itself at a time.
const LOCAL: usize = 32;
/// Bytes of the message header: next message, size, seed.
const HEADER: usize = 24;

/// A CPU's inbox: the address of its first message (0: empty).
struct Inbox(Mutex<usize>);

static INBOXES: [Inbox; MAX_CPUS] = [const { Inbox(Mutex::new(0)) }; MAX_CPUS];
/// CPUs taking part.
static CPUS: AtomicUsize = AtomicUsize::new(1);
/// Set by the BSP once every AP is up: the stress begins.
static GO: AtomicBool = AtomicBool::new(false);
/// CPUs done allocating and sending.
static FINISHED: AtomicUsize = AtomicUsize::new(0);
/// CPUs done with the stress, inbox drained and timer stopped.
static LEFT: AtomicUsize = AtomicUsize::new(0);
/// Blocks sent to another CPU, and received (checked and freed) there.
static SENT: AtomicU64 = AtomicU64::new(0);
static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Blocks whose pattern did not hold when they were freed.
static DAMAGED: AtomicU64 = AtomicU64::new(0);

/// What the stress did, over every CPU.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Blocks handed from one CPU to another.
    pub sent: u64,
    /// Blocks freed with a damaged pattern.
    pub damaged: u64,
}

/// The AP side: waits for the BSP's signal, runs the stress, then halts for
/// good with interrupts disabled.
pub extern "C" fn ap_work(data: &'static PerCpu) -> ! {
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    on_this_cpu(data.index());
    interrupts::disable();
    loop {
        hlt();
    }
}

/// The BSP side: starts the stress on `cpus` CPUs (the APs wait in
/// [`ap_work`]), takes part as CPU 0 and returns once every CPU is done.
pub fn run(cpus: usize) -> Outcome {
    CPUS.store(cpus, Ordering::Relaxed);
    GO.store(true, Ordering::Release);
    on_this_cpu(0);
    while LEFT.load(Ordering::Acquire) < cpus {
        core::hint::spin_loop();
    }
    Outcome {
        sent: SENT.load(Ordering::Relaxed),
        damaged: DAMAGED.load(Ordering::Relaxed),
    }
}

/// One CPU's part, timer running.
fn on_this_cpu(cpu: usize) {
    let cpus = CPUS.load(Ordering::Relaxed);
    timer::start();
    work(cpu, cpus);
    FINISHED.fetch_add(1, Ordering::AcqRel);
    loop {
        // FINISHED first: once every CPU has finished, SENT is final.
        let all_finished = FINISHED.load(Ordering::Acquire) == cpus;
        drain(cpu);
        if all_finished && RECEIVED.load(Ordering::Acquire) == SENT.load(Ordering::Acquire) {
            break;
        }
        core::hint::spin_loop();
    }
    timer::stop();
    LEFT.fetch_add(1, Ordering::Release);
}

/// The allocation loop of CPU `cpu`.
fn work(cpu: usize, cpus: usize) {
    let mut rng = (cpu as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut local = [core::ptr::null_mut::<u8>(); LOCAL];
    for i in 0..ROUNDS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let size = HEADER + 8 + 8 * (rng % 120) as usize;
        let block = make(size, rng as usize);
        if cpus > 1 && i % 2 == 0 {
            let to = (cpu + 1 + (i / 2) % (cpus - 1)) % cpus;
            send(to, block);
        } else {
            let slot = &mut local[(rng >> 40) as usize % LOCAL];
            if !slot.is_null() {
                // SAFETY: the slot holds a message-formatted block this CPU
                // made and still owns.
                unsafe { consume(*slot) };
            }
            *slot = block;
        }
        if i % 16 == 0 {
            drain(cpu);
        }
    }
    for block in local.into_iter().filter(|b| !b.is_null()) {
        // SAFETY: as above.
        unsafe { consume(block) };
    }
}

/// Allocates a block of `size` bytes (at least [`HEADER`], a multiple of 8)
/// and writes its header and pattern.
fn make(size: usize, seed: usize) -> *mut u8 {
    let layout = Layout::from_size_align(size, 16).expect("valid layout");
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { alloc(layout) };
    if block.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: the block is fresh, `size` bytes, 16-aligned; the header
    // words lie in its first HEADER bytes, the pattern in the rest.
    unsafe {
        let words = block as *mut usize;
        words.write(0);
        words.add(1).write(size);
        words.add(2).write(seed);
        fill(block.add(HEADER), size - HEADER, seed);
    }
    block
}

/// Checks the pattern of a block made by [`make`] and frees it.
///
/// # Safety
///
/// `block` must come from [`make`], be owned by the caller, and not be used
/// again.
unsafe fn consume(block: *mut u8) {
    // SAFETY: the caller owns a block made by `make`: header then pattern.
    unsafe {
        let words = block as *const usize;
        let size = words.add(1).read();
        let seed = words.add(2).read();
        if !holds(block.add(HEADER), size - HEADER, seed) {
            DAMAGED.fetch_add(1, Ordering::Relaxed);
        }
        dealloc(block, Layout::from_size_align_unchecked(size, 16));
    }
}

/// Hands `block` (made by [`make`]) to CPU `to`.
fn send(to: usize, block: *mut u8) {
    SENT.fetch_add(1, Ordering::AcqRel);
    let mut head = INBOXES[to].0.lock();
    // SAFETY: the sender owns the block until it is in the inbox; its first
    // word is the message link.
    unsafe { (block as *mut usize).write(*head) };
    *head = block as usize;
}

/// Checks and frees every block in CPU `cpu`'s inbox.
fn drain(cpu: usize) {
    let mut next = core::mem::take(&mut *INBOXES[cpu].0.lock());
    while next != 0 {
        let block = next as *mut u8;
        // SAFETY: the inbox held the block, taken out whole above, so this
        // CPU owns it now; its first word links the next message.
        unsafe {
            next = (block as *const usize).read();
            consume(block);
        }
        RECEIVED.fetch_add(1, Ordering::AcqRel);
    }
}
