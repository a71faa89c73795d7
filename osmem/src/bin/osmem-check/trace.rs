//! The reference traces: parsing their `os_*` calls and printing lines in
//! their layout.
//!
//! A trace (`osmem/ref/*.ref`, made by `ltrace -S -x 'os_*'` and
//! rewritten) has one line per `os_*` call, followed by one indented line
//! per `brk`, `mmap` or `munmap` it made, and an exit line:
//!
//! ```text
//! os_malloc (['131032'])                          ...  = HeapStart + 0x20
//!   brk (['0'])                                   ...  = HeapStart + 0x0
//!   mmap (['0', '204832', 'PROT_READ | PROT_WRITE', 'MAP_PRIVATE | MAP_ANON', '-1', '0']) = <mapped-addr1>
//! +++ exited (status 0) +++
//! ```
//!
//! The call and its arguments are left-aligned in a 90-column field, then
//! `= ` and the result. Addresses are offsets from the break found before
//! the first call (`HeapStart + 0x...`) or from the N-th mapping made
//! (`<mapped-addrN>`, `+ 0x...` when not at its start).

use std::fmt;

/// Width of the field holding the call and its arguments.
pub const CALL_FIELD: usize = 90;

/// One line of a trace in the reference layout.
pub fn line(indent: bool, name: &str, args: &[String], result: &str) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let call = format!(
        "{}{name} ([{}])",
        if indent { "  " } else { "" },
        quoted.join(", ")
    );
    format!("{call:<CALL_FIELD$}= {result}")
}

/// The exit line.
pub fn exit_line(status: i32) -> String {
    format!("+++ exited (status {status}) +++")
}

/// An address as the traces write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `0`: NULL.
    Null,
    /// `HeapStart + 0x...`.
    Heap(usize),
    /// `<mapped-addrN>` (+ offset).
    Mapped(u32, usize),
}

impl Addr {
    fn parse(text: &str) -> Result<Addr, String> {
        let (base, offset) = match text.split_once(" + ") {
            Some((base, off)) => {
                let hex = off
                    .strip_prefix("0x")
                    .ok_or_else(|| format!("offset without 0x: {text}"))?;
                let off = usize::from_str_radix(hex, 16).map_err(|e| format!("{text}: {e}"))?;
                (base, off)
            }
            None => (text, 0),
        };
        if base == "0" && offset == 0 {
            Ok(Addr::Null)
        } else if base == "HeapStart" {
            Ok(Addr::Heap(offset))
        } else if let Some(n) = base
            .strip_prefix("<mapped-addr")
            .and_then(|s| s.strip_suffix('>'))
        {
            let n = n.parse().map_err(|e| format!("{text}: {e}"))?;
            Ok(Addr::Mapped(n, offset))
        } else {
            Err(format!("not an address: {text}"))
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Addr::Null => write!(f, "0"),
            Addr::Heap(off) => write!(f, "HeapStart + {off:#x}"),
            Addr::Mapped(n, 0) => write!(f, "<mapped-addr{n}>"),
            Addr::Mapped(n, off) => write!(f, "<mapped-addr{n}> + {off:#x}"),
        }
    }
}

/// One `os_*` call of a trace, with the arguments and result recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `os_malloc(size)`.
    Malloc(usize),
    /// `os_calloc(nmemb, size)`.
    Calloc(usize, usize),
    /// `os_realloc(ptr, size)`.
    Realloc(Addr, usize),
    /// `os_free(ptr)`.
    Free(Addr),
}

/// Whether a call's argument is an address or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A pointer, written as an [`Addr`].
    Pointer,
    /// A size, written in decimal.
    Size,
}

impl Call {
    /// The function's name.
    pub fn name(self) -> &'static str {
        match self {
            Call::Malloc(_) => "os_malloc",
            Call::Calloc(..) => "os_calloc",
            Call::Realloc(..) => "os_realloc",
            Call::Free(_) => "os_free",
        }
    }

    /// The kinds of its arguments, in order.
    pub fn arg_kinds(self) -> &'static [ArgKind] {
        match self {
            Call::Malloc(_) => &[ArgKind::Size],
            Call::Calloc(..) => &[ArgKind::Size, ArgKind::Size],
            Call::Realloc(..) => &[ArgKind::Pointer, ArgKind::Size],
            Call::Free(_) => &[ArgKind::Pointer],
        }
    }

    /// Whether it returns a pointer (`os_free` returns nothing).
    pub fn returns_pointer(self) -> bool {
        !matches!(self, Call::Free(_))
    }
}

/// A call and what the reference says it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The call.
    pub call: Call,
    /// Its result (`Null` for `os_free`).
    pub result: Addr,
    /// Its line in the reference, from 1.
    pub line: usize,
}

/// The `os_*` calls of a trace, in order.
pub fn parse(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if !raw.starts_with("os_") {
            continue;
        }
        let step = parse_call(raw).map_err(|e| format!("line {line}: {e}"))?;
        steps.push(Step { line, ..step });
    }
    Ok(steps)
}

fn parse_call(raw: &str) -> Result<Step, String> {
    let (call, result) = raw
        .rsplit_once("= ")
        .ok_or_else(|| "no result".to_string())?;
    let (name, args) = call
        .trim_end()
        .split_once(" ([")
        .ok_or_else(|| "no argument list".to_string())?;
    let args: Vec<&str> = args
        .strip_suffix("])")
        .ok_or_else(|| "unterminated argument list".to_string())?
        .split(", ")
        .map(|a| a.trim_matches('\''))
        .collect();
    let size = |i: usize| -> Result<usize, String> {
        let text = args.get(i).ok_or("missing argument")?;
        text.parse().map_err(|e| format!("size {text}: {e}"))
    };
    let addr =
        |i: usize| -> Result<Addr, String> { Addr::parse(args.get(i).ok_or("missing argument")?) };
    let call = match name {
        "os_malloc" => Call::Malloc(size(0)?),
        "os_calloc" => Call::Calloc(size(0)?, size(1)?),
        "os_realloc" => Call::Realloc(addr(0)?, size(1)?),
        "os_free" => Call::Free(addr(0)?),
        other => return Err(format!("unknown function {other}")),
    };
    let result = match result.trim() {
        "<void>" => Addr::Null,
        text => Addr::parse(text)?,
    };
    Ok(Step {
        call,
        result,
        line: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_lines_parse_and_print_back() {
        let text = "os_realloc (['<mapped-addr4> + 0x20', '204800'])                                          = <mapped-addr5> + 0x20\n  mmap (['0', '204832', 'PROT_READ | PROT_WRITE', 'MAP_PRIVATE | MAP_ANON', '-1', '0']) = <mapped-addr5>\nos_free (['HeapStart + 0x20']) = <void>\n";
        let steps = parse(text).unwrap();
        assert_eq!(
            steps,
            [
                Step {
                    call: Call::Realloc(Addr::Mapped(4, 0x20), 204800),
                    result: Addr::Mapped(5, 0x20),
                    line: 1
                },
                Step {
                    call: Call::Free(Addr::Heap(0x20)),
                    result: Addr::Null,
                    line: 3
                }
            ]
        );
        let first = text.lines().next().unwrap();
        let args = ["<mapped-addr4> + 0x20".to_string(), "204800".to_string()];
        assert_eq!(
            line(false, "os_realloc", &args, "<mapped-addr5> + 0x20"),
            first
        );
        assert_eq!(Addr::Mapped(5, 0).to_string(), "<mapped-addr5>");
        assert_eq!(Addr::Heap(0).to_string(), "HeapStart + 0x0");
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(parse("os_malloc (['x']) = 0").is_err());
        assert!(parse("os_free (['HeapStart + 20']) = <void>").is_err());
        assert!(parse("os_new (['1']) = 0").is_err());
    }
}
