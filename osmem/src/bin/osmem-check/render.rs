//! Turning recorded events back into trace lines, addresses rewritten the
//! way the reference writes them.
//!
//! - `HeapStart` is the break the replayer found before its first call
//!   (its `HEAP` marker);
//! - every `mmap` result opens mapping N+1, so an address the kernel hands
//!   out again after a `munmap` gets a new number, as in the reference;
//!   addresses inside a live mapping are written from its start;
//! - other addresses at or above `HeapStart` are heap offsets.
//!
//! Every system call made between a call's `BEGIN` and `END` markers is
//! printed under it: any call other than `brk`, `mmap` and `munmap` shows
//! as `syscall_<number>` and cannot match the reference. A `brk` that moves
//! the break outside any call is reported as a problem: the replayer itself
//! would have touched the library's heap.

use crate::events::{Event, Marker};
use crate::record::Exit;
use crate::trace::{self, Addr, ArgKind, Step};

/// The rendered trace and what went wrong while rendering it.
pub struct Rendered {
    /// The lines, in the reference layout.
    pub lines: Vec<String>,
    /// Stream errors (markers out of order, break moved between calls).
    pub problems: Vec<String>,
}

/// A call whose `END` marker has not come yet.
struct Open {
    index: usize,
    /// Arguments, named when passed (a freed mapping loses its name).
    args: Vec<String>,
    syscalls: Vec<String>,
}

#[derive(Default)]
struct Addresses {
    heap_start: Option<usize>,
    /// (start, length, number) of the live mappings.
    mappings: Vec<(usize, usize, u32)>,
    mapped: u32,
}

impl Addresses {
    fn name(&self, addr: usize) -> String {
        if addr == 0 {
            return Addr::Null.to_string();
        }
        if let Some(&(start, _, n)) = self
            .mappings
            .iter()
            .find(|&&(start, len, _)| addr >= start && addr < start + len)
        {
            return Addr::Mapped(n, addr - start).to_string();
        }
        match self.heap_start {
            Some(start) if addr >= start => Addr::Heap(addr - start).to_string(),
            _ => format!("{addr:#x}"),
        }
    }

    fn mapped(&mut self, start: usize, len: usize) {
        self.mappings
            .retain(|&(s, l, _)| s + l <= start || start + len <= s);
        self.mapped += 1;
        self.mappings.push((start, len, self.mapped));
    }

    fn unmapped(&mut self, start: usize, len: usize) {
        self.mappings.retain(|&(s, l, _)| !(s == start && l == len));
    }
}

fn flags(value: u64, names: &[(u64, &str)], none: &str) -> String {
    if value == 0 {
        return none.to_string();
    }
    let mut parts: Vec<String> = names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect();
    let rest = names.iter().fold(value, |v, (bit, _)| v & !bit);
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    parts.join(" | ")
}

const PROT: &[(u64, &str)] = &[(1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC")];
const MAP: &[(u64, &str)] = &[
    (0x01, "MAP_SHARED"),
    (0x02, "MAP_PRIVATE"),
    (0x10, "MAP_FIXED"),
    (0x20, "MAP_ANON"),
    (0x4000, "MAP_NORESERVE"),
];

/// One system call line, updating the mappings.
fn syscall_line(event: &Event, names: &mut Addresses) -> Option<String> {
    let line = match *event {
        Event::Brk { request, result } => {
            let request = if request == 0 {
                "0".to_string()
            } else {
                names.name(request)
            };
            trace::line(true, "brk", &[request], &names.name(result))
        }
        Event::Mmap { args, result } => {
            if result as isize > 0 {
                names.mapped(result, args[1] as usize);
            }
            let args = [
                names.name(args[0] as usize),
                args[1].to_string(),
                flags(args[2], PROT, "PROT_NONE"),
                flags(args[3], MAP, "0"),
                (args[4] as i32).to_string(),
                args[5].to_string(),
            ];
            trace::line(true, "mmap", &args, &names.name(result))
        }
        Event::Munmap { addr, len, result } => {
            let line = trace::line(
                true,
                "munmap",
                &[names.name(addr), len.to_string()],
                &result.to_string(),
            );
            if result == 0 {
                names.unmapped(addr, len);
            }
            line
        }
        Event::Other { nr, result } => {
            trace::line(true, &format!("syscall_{nr}"), &[], &result.to_string())
        }
        Event::Marker(..) => return None,
    };
    Some(line)
}

/// Renders `events` of a replay of `steps` that ended with `exit`.
pub fn render(steps: &[Step], events: &[Event], exit: Exit) -> Rendered {
    let mut out = Rendered {
        lines: Vec::new(),
        problems: Vec::new(),
    };
    let mut names = Addresses::default();
    let mut open: Option<Open> = None;
    for event in events {
        match (*event, open.as_mut()) {
            (Event::Marker(Marker::Heap, value), _) => names.heap_start = Some(value),
            (Event::Marker(Marker::Begin, index), None) if index < steps.len() => {
                open = Some(Open {
                    index,
                    args: Vec::new(),
                    syscalls: Vec::new(),
                });
            }
            (Event::Marker(Marker::Arg, value), Some(call)) => {
                let kinds = steps[call.index].call.arg_kinds();
                call.args.push(match kinds.get(call.args.len()) {
                    Some(ArgKind::Pointer) => names.name(value),
                    _ => value.to_string(),
                });
            }
            (Event::Marker(Marker::End, result), Some(_)) => {
                if let Some(call) = open.take() {
                    out.lines
                        .push(call_line(&steps[call.index], &call.args, result, &names));
                    out.lines.extend(call.syscalls);
                }
            }
            (Event::Marker(marker, value), _) => out
                .problems
                .push(format!("marker {marker:?}({value}) out of order")),
            (_, Some(call)) => call.syscalls.extend(syscall_line(event, &mut names)),
            (_, None) => {
                if let Event::Brk { request, result } = *event {
                    if request != 0 && names.heap_start.is_some() {
                        out.problems.push(format!(
                            "the replayer moved the break between calls: brk({request:#x}) = {result:#x}"
                        ));
                    }
                }
            }
        }
    }
    if let Some(call) = open {
        out.problems
            .push(format!("call {} never returned", steps[call.index].line));
    }
    out.lines.push(match exit {
        Exit::Status(status) => trace::exit_line(status),
        Exit::Signal(signal) => format!("+++ killed by signal {signal} +++"),
    });
    out
}

fn call_line(step: &Step, args: &[String], result: usize, names: &Addresses) -> String {
    let result = if step.call.returns_pointer() {
        names.name(result)
    } else {
        "<void>".to_string()
    };
    trace::line(false, step.call.name(), args, &result)
}
