//! Recording a replay with `strace` instead of the checker's own recorder,
//! to verify the recorder against an independent tool.
//!
//! `strace -e trace=brk,mmap,munmap,lseek -e raw=all` prints every call of
//! interest with its arguments undecoded (`mmap(0, 0x32020, 0x3, 0x22,
//! 0xffffffff, 0) = 0x7f...`), which parse back into the same [`Event`]s as
//! the recorder makes; rendered, the two must give the same text.

use std::process::Command;

use crate::events::Event;
use crate::record::Exit;

/// Whether `strace` can be run.
pub fn available() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `argv` under strace and returns its events and how it ended.
pub fn record(argv: &[String], scratch: &std::path::Path) -> Result<(Vec<Event>, Exit), String> {
    let status = Command::new("strace")
        .arg("-o")
        .arg(scratch)
        .args(["-e", "trace=brk,mmap,munmap,lseek", "-e", "raw=all", "--"])
        .args(argv)
        .status()
        .map_err(|e| format!("cannot run strace: {e}"))?;
    let text = std::fs::read_to_string(scratch).map_err(|e| format!("{scratch:?}: {e}"))?;
    let _ = std::fs::remove_file(scratch);
    let (events, exit) = parse(&text)?;
    match exit {
        Some(exit) => Ok((events, exit)),
        None => Err(format!("strace output has no exit line (strace {status})")),
    }
}

fn number(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse::<i64>().map(|v| v as u64),
    };
    parsed.map_err(|e| format!("number {text:?}: {e}"))
}

fn syscall_number(name: &str) -> Option<u64> {
    let nr = match name {
        "brk" => libc::SYS_brk,
        "mmap" => libc::SYS_mmap,
        "munmap" => libc::SYS_munmap,
        "lseek" => libc::SYS_lseek,
        _ => return None,
    };
    Some(nr as u64)
}

/// The events and exit of an strace log.
fn parse(text: &str) -> Result<(Vec<Event>, Option<Exit>), String> {
    let mut events = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("+++ exited with ") {
            let status = rest.trim_end_matches(" +++").trim();
            let status = status.parse().map_err(|e| format!("{line}: {e}"))?;
            return Ok((events, Some(Exit::Status(status))));
        }
        if line.starts_with("+++ killed by") {
            return Ok((events, Some(Exit::Signal(0))));
        }
        let Some((name, rest)) = line.split_once('(') else {
            continue;
        };
        let Some(nr) = syscall_number(name) else {
            continue;
        };
        let (args, result) = rest
            .split_once(" = ")
            .and_then(|(args, result)| Some((args.trim_end().strip_suffix(')')?, result)))
            .ok_or_else(|| format!("unfinished strace line: {line}"))?;
        let mut values = [0u64; 6];
        for (slot, arg) in values.iter_mut().zip(args.split(", ")) {
            *slot = number(arg)?;
        }
        let result = number(result.split_whitespace().next().unwrap_or(""))? as i64;
        events.extend(Event::from_syscall(nr, values, result));
    }
    Ok((events, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Marker;

    #[test]
    fn raw_strace_lines_become_events() {
        let log = "brk(0)                                  = 0x5587efffb000\n\
                   mmap(0, 0x32020, 0x3, 0x22, 0xffffffff, 0) = 0x7f37db924000\n\
                   munmap(0x7f37db924000, 0x32020)         = 0\n\
                   lseek(0xffffffff, 0x5, 0)               = -1 EBADF (Bad file descriptor)\n\
                   +++ exited with 0 +++\n";
        let (events, exit) = parse(log).unwrap();
        assert_eq!(exit, Some(Exit::Status(0)));
        assert_eq!(
            events,
            [
                Event::Brk {
                    request: 0,
                    result: 0x5587efffb000
                },
                Event::Mmap {
                    args: [0, 0x32020, 3, 0x22, 0xffffffff, 0],
                    result: 0x7f37db924000
                },
                Event::Munmap {
                    addr: 0x7f37db924000,
                    len: 0x32020,
                    result: 0
                },
                Event::Marker(Marker::Begin, 5),
            ]
        );
    }
}
