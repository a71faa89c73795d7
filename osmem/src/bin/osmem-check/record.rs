//! Recording a replay's system calls with `ptrace`, as `ltrace -S` and
//! `strace` do.
//!
//! The replay runs in a child process that asks to be traced and `exec`s
//! the replayer; the parent stops it at each system call entry and exit
//! (`PTRACE_SYSCALL`) and reads the call with `PTRACE_GET_SYSCALL_INFO`
//! (Linux 5.3, any architecture). Because the calls are observed from
//! outside, what is recorded is what the loaded `libosmem.so` really did,
//! including any call it should not have made.

use std::ffi::CString;
use std::mem::MaybeUninit;

use crate::events::Event;

/// How the traced process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit(status)`.
    Status(i32),
    /// Killed by a signal.
    Signal(i32),
}

/// Runs `argv` under ptrace and returns its events and how it ended.
pub fn record(argv: &[String]) -> Result<(Vec<Event>, Exit), String> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut pointers: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    // SAFETY: the checker is single-threaded here; the child only calls
    // async-signal-safe functions (ptrace, execv, _exit) before exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        // SAFETY: in the child: ask to be traced, then run the replayer;
        // `pointers` is a NULL-terminated array of C strings alive here.
        unsafe {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::execv(pointers[0], pointers.as_ptr());
            libc::_exit(127);
        }
    }
    trace_child(pid)
}

fn wait(pid: libc::pid_t) -> Result<i32, String> {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err("waitpid failed".into());
    }
    Ok(status)
}

fn trace_child(pid: libc::pid_t) -> Result<(Vec<Event>, Exit), String> {
    // The child stops with SIGTRAP once its exec succeeded.
    let status = wait(pid)?;
    if !libc::WIFSTOPPED(status) {
        return Err(format!("replayer did not start (status {status:#x})"));
    }
    let options = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL;
    // SAFETY: `pid` is our stopped tracee.
    if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, options) } != 0 {
        return Err("PTRACE_SETOPTIONS failed".into());
    }
    let mut events = Vec::new();
    let mut entry: Option<(u64, [u64; 6])> = None;
    let mut signal = 0;
    loop {
        // SAFETY: `pid` is our stopped tracee; resume it to the next stop.
        if unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, signal) } != 0 {
            return Err("PTRACE_SYSCALL failed".into());
        }
        signal = 0;
        let status = wait(pid)?;
        if libc::WIFEXITED(status) {
            return Ok((events, Exit::Status(libc::WEXITSTATUS(status))));
        }
        if libc::WIFSIGNALED(status) {
            return Ok((events, Exit::Signal(libc::WTERMSIG(status))));
        }
        let stop = libc::WSTOPSIG(status);
        if stop != libc::SIGTRAP | 0x80 {
            // A signal for the tracee: deliver it.
            signal = stop;
            continue;
        }
        let info = syscall_info(pid)?;
        match info.op {
            libc::PTRACE_SYSCALL_INFO_ENTRY => {
                // SAFETY: `op` says the `entry` variant is filled.
                let e = unsafe { info.u.entry };
                entry = Some((e.nr, e.args));
            }
            libc::PTRACE_SYSCALL_INFO_EXIT => {
                // SAFETY: `op` says the `exit` variant is filled.
                let result = unsafe { info.u.exit.sval };
                if let Some((nr, args)) = entry.take() {
                    events.extend(Event::from_syscall(nr, args, result));
                }
            }
            _ => {}
        }
    }
}

fn syscall_info(pid: libc::pid_t) -> Result<libc::ptrace_syscall_info, String> {
    let mut info = MaybeUninit::<libc::ptrace_syscall_info>::zeroed();
    let size = std::mem::size_of::<libc::ptrace_syscall_info>();
    // SAFETY: the kernel writes at most `size` bytes into `info`.
    let got = unsafe { libc::ptrace(libc::PTRACE_GET_SYSCALL_INFO, pid, size, info.as_mut_ptr()) };
    if got <= 0 {
        return Err("PTRACE_GET_SYSCALL_INFO failed (Linux 5.3 or later needed)".into());
    }
    // SAFETY: zero-initialised, then filled by the kernel: every field is
    // plain data for which any bytes are valid.
    Ok(unsafe { info.assume_init() })
}
