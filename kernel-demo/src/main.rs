//! An x86_64 kernel, booted by QEMU through the PVH entry, whose heap is
//! region-heap fed with the RAM of the machine.
//!
//! Boot data flow: [`boot`] enters long mode and calls [`kernel_start`] with
//! the physical address of the PVH start info; [`memmap`] copies the memory
//! map out of it; [`plan`] splits the usable RAM into heap regions and a
//! growth pool; [`heap`] gives the regions to the global [`heap::HEAP`] and the
//! pool to the growth hook of [`grow`]; [`stack`] moves the kernel to a heap
//! stack so that the boot stack becomes one more region; [`selftest`] runs the
//! self-tests on the BSP alone. Then the SMP stage: [`acpi`] finds the CPUs
//! in the MADT, [`apic`] maps the local APIC, [`smp`] starts the APs through
//! a real-mode trampoline, and [`stress`] runs an allocation stress on every
//! CPU at once while [`timer`] interrupts allocate on every tick; [`exit`]
//! ends QEMU with the verdict. [`percpu`] gives each CPU its index (GS base).

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod acpi;
mod apic;
mod boot;
mod exit;
mod grow;
mod heap;
mod memmap;
mod pattern;
mod percpu;
mod pit;
mod plan;
mod range;
mod selftest;
mod serial;
mod smp;
mod stack;
mod stress;
mod timer;
mod trap;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::panic::PanicInfo;

use exit::{exit, Status};
use grow::{GROWTH, WINDOW_BASE};
use heap::HEAP;
use memmap::BootInfo;
use range::Range;

/// The 64-bit entry, called by the boot stub on the boot stack with the
/// physical address of the PVH `hvm_start_info`.
#[unsafe(no_mangle)]
extern "C" fn kernel_start(start_info: usize) -> ! {
    // SAFETY: this is the BSP's first code; nothing has allocated or asked
    // for the CPU index yet.
    unsafe { percpu::install_bsp() };
    serial::init();
    trap::init();
    println!("region-heap kernel demo");
    println!(
        "booted through PVH: long mode, first {} MiB identity-mapped with 2 MiB pages",
        boot::IDENTITY_MAPPED >> 20
    );

    // SAFETY: `start_info` is the %ebx value of the PVH entry, passed through
    // unchanged by the boot stub; low memory is identity-mapped and nothing
    // has written to it since the loader.
    let boot_info = match unsafe { BootInfo::read(start_info) } {
        Ok(info) => info,
        Err(e) => {
            println!("FAIL: {e}");
            exit(Status::Failure);
        }
    };
    println!(
        "PVH start info at {:#x}, version {}, command line {:?}",
        boot_info.start_info,
        boot_info.version,
        boot_info.cmdline()
    );
    println!("memory map, {} entries:", boot_info.entries().len());
    for entry in boot_info.entries() {
        println!("  {entry}");
    }
    if boot_info.dropped_entries > 0 {
        println!("  ({} more entries ignored)", boot_info.dropped_entries);
    }
    let (kernel_start, kernel_end) = boot::kernel_image();
    let kernel = Range::new(kernel_start, kernel_end);
    println!("kernel image {kernel} {:>8} KiB", kernel.len() / 1024);

    let plan = match plan::plan(&boot_info, kernel) {
        Ok(plan) => plan,
        Err(_) => {
            println!("FAIL: the memory map has too many ranges");
            exit(Status::Failure);
        }
    };
    println!(
        "heap regions from the memory map ({} MiB of usable RAM):",
        plan.usable >> 20
    );
    // SAFETY: the plan's regions are identity-mapped usable RAM outside the
    // kernel image and the boot data, and its pool is usable RAM outside
    // them too; the start info has been copied, and nothing else uses RAM.
    unsafe { heap::init(&plan) };
    println!(
        "growth pool: {} MiB of RAM in {} range(s), mapped on demand at {WINDOW_BASE:#x}",
        plan.pool.total() >> 20,
        plan.pool.as_slice().len()
    );
    report_check("heap init");

    let boot_info = Box::leak(Box::new(boot_info));
    stack::switch_to_heap_stack(kernel_main, boot_info as *const BootInfo as usize)
}

/// The rest of the kernel, on a heap-allocated stack.
extern "C" fn kernel_main(boot_info: usize) -> ! {
    // SAFETY: `kernel_start` passes a pointer to a leaked, never freed
    // `BootInfo`.
    let boot_info = unsafe { &*(boot_info as *const BootInfo) };
    let (stack, size) = boot::boot_stack();
    let stack = Range::new(stack, stack + size);
    // SAFETY: the kernel now runs on the heap stack; the boot stub and
    // `kernel_start` frames on the boot stack are abandoned and nothing
    // points into it, and the boot stack lies in the kernel image, which no
    // other region overlaps.
    match unsafe { HEAP.heap(0).add_region(stack.start as *mut u8, stack.len()) } {
        Ok(()) => println!(
            "boot stack {stack} {:>8} KiB reclaimed as a heap region (now {} regions)",
            stack.len() / 1024,
            HEAP.heap(0).lock().region_count()
        ),
        Err(e) => println!("boot stack {stack} not reclaimed: {e}"),
    }
    report_check("boot stack reclaim");

    let outcome = match requested_failure(boot_info) {
        Some(failure) => failure,
        None => selftest::run(boot_info).and_then(|()| smp_stage(boot_info)),
    };
    match outcome {
        Ok(()) => {
            let growth = GROWTH.stats();
            println!(
                "growth hook: {} grow(s), {} refused, {} MiB mapped, {} MiB given back by trim",
                growth.grows,
                growth.refused,
                growth.mapped >> 20,
                growth.released >> 20
            );
            println!("ALL TESTS PASSED");
            exit(Status::Success)
        }
        Err(failure) => {
            println!("TEST FAILED: {failure}");
            exit(Status::Failure)
        }
    }
}

/// Starts every CPU the MADT lists, runs the stress on all of them at once
/// with their timers allocating, then checks every heap, looks for leaks and
/// prints each CPU's counters.
fn smp_stage(boot_info: &BootInfo) -> Result<(), String> {
    // SAFETY: the firmware's ACPI tables are intact (QEMU keeps them in
    // reserved memory) and nothing writes them.
    let madt = unsafe { acpi::find_madt(boot_info.rsdp) }.map_err(|e| format!("ACPI: {e}"))?;
    let ids = madt.apic_ids();
    println!(
        "SMP: the MADT lists {} CPU(s) (APIC IDs {ids:?}), local APIC at {:#x}",
        ids.len(),
        madt.lapic_base
    );
    // SAFETY: on the BSP, once, before any AP starts; the address is the
    // MADT's.
    unsafe { apic::map(madt.lapic_base) }.map_err(|e| format!("local APIC: {e}"))?;
    apic::enable();
    let counts = timer::calibrate();
    println!(
        "local APIC timer: {} counts per {} us (divide 16), measured against the PIT",
        counts,
        timer::PERIOD_US
    );
    // SAFETY: on the BSP, once, after `apic::map`, interrupts disabled
    // (they are until the stress); the memory plan keeps the trampoline
    // page out of the heap.
    let (online, cpus) = unsafe { smp::start_aps(&madt, stress::ap_work) }?;
    println!("  cpu 0: APIC ID {} (BSP)", online[0]);
    for (cpu, apic_id) in online[..cpus].iter().enumerate().skip(1) {
        let given = heap::provision(cpu).map_err(|e| format!("heap of cpu {cpu}: {e}"))?;
        println!(
            "  cpu {cpu}: APIC ID {apic_id}, started (stack and per-CPU data from the heap), its heap given {} MiB by the growth hook",
            given >> 20
        );
    }
    println!("{cpus} CPU(s) online");

    let counters: Vec<_> = (0..cpus).map(|cpu| HEAP.cpu_counters(cpu)).collect();
    let before = HEAP.stats();
    let outcome = stress::run(cpus);
    println!(
        "stress: {cpus} CPU(s) x {} allocations, {} blocks handed to another CPU",
        stress::ROUNDS,
        outcome.sent
    );
    if outcome.damaged > 0 || timer::failures() > 0 {
        return Err(format!(
            "{} block(s) damaged in the stress, {} timer tick(s) failed",
            outcome.damaged,
            timer::failures()
        ));
    }
    HEAP.check()
        .map_err(|e| format!("heap check after the SMP stress: {e}"))?;
    let after = HEAP.stats();
    if after.in_use_bytes != before.in_use_bytes || after.used_blocks != before.used_blocks {
        return Err(format!(
            "leak in the SMP stress: {} blocks / {} bytes in use, {} / {} before",
            after.used_blocks, after.in_use_bytes, before.used_blocks, before.in_use_bytes
        ));
    }
    println!(
        "check ok (SMP stress), no leak: {} bytes in use, as before the stress",
        after.in_use_bytes
    );
    println!("per-CPU heap counters over the SMP stage:");
    for (cpu, before) in counters.iter().enumerate() {
        let now = HEAP.cpu_counters(cpu);
        println!(
            "cpu {cpu}: {} allocations, {} frees, {} remote frees",
            now.allocations - before.allocations,
            now.frees - before.frees,
            now.remote_frees - before.remote_frees
        );
    }
    println!("irq: {} allocations", timer::allocations());
    Ok(())
}

/// Acts on `demo=panic`, `demo=fault` or `demo=fail` on the command line
/// (`-append`): the boot test uses them to check that each way of failing
/// gives its own QEMU exit status.
fn requested_failure(boot_info: &BootInfo) -> Option<Result<(), String>> {
    let mode = boot_info
        .cmdline()
        .split_whitespace()
        .find_map(|word| word.strip_prefix("demo="))?;
    match mode {
        "panic" => panic!("deliberate panic (demo=panic on the command line)"),
        "fault" => {
            let unmapped = 0x4000_0000_0000 as *const u64;
            // SAFETY: a volatile read of an address outside every Rust
            // allocation; nothing maps it, so it faults, and the page fault
            // handler reports and exits without returning here.
            let value = unsafe { unmapped.read_volatile() };
            Some(Err(format!(
                "reading {unmapped:p} gave {value} instead of a fault"
            )))
        }
        "fail" => Some(Err(
            "deliberate failure (demo=fail on the command line)".to_string()
        )),
        other => Some(Err(format!("unknown demo={other} on the command line"))),
    }
}

/// Runs the heap's consistency check, exiting with the failure status if it
/// finds damage.
fn report_check(stage: &str) {
    let result = HEAP.check();
    match result {
        Ok(()) => println!("check ok ({stage})"),
        Err(e) => {
            println!("FAIL: heap check after {stage}: {e}");
            exit(Status::Failure);
        }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    eprintln!("PANIC: {info}");
    exit(Status::Panic)
}
