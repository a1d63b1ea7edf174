//! Parsing `/proc/<pid>/stat`, the one file that gives comm, ppid, flags and
//! start time in a single read.
//!
//! ```text
//! 4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 ... 123456 ...
//! pid  comm, in parens  ^state ^ppid      field 9: flags   field 22: starttime
//! ```
//!
//! `comm` may itself contain spaces and parentheses, so the fields after it
//! are found from the *last* `)`.

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, PartialEq, Eq)]
pub struct StatLine<'a> {
    /// The kernel's command name (up to 15 bytes, any bytes but NUL).
    pub comm: &'a [u8],
    /// Scheduler state (field 3): `R`, `S`, `D`, … ; `Z` for a zombie.
    pub state: u8,
    /// Parent's pid (field 4).
    pub ppid: i32,
    /// Kernel `PF_*` flags (field 9).
    pub flags: u64,
    /// Start time in clock ticks since boot (field 22).
    pub start_ticks: u64,
}

impl<'a> StatLine<'a> {
    /// Whether the process has exited and only waits to be reaped (zombie,
    /// or dead): it runs no program any more.
    pub fn exited(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }

    /// Parses the file's contents; `None` if it is not the kernel's format.
    pub fn parse(line: &'a [u8]) -> Option<Self> {
        let open = line.iter().position(|&b| b == b'(')?;
        let close = line.iter().rposition(|&b| b == b')')?;
        // None if the last `)` comes before the first `(`.
        let comm = line.get(open + 1..close)?;
        let rest = std::str::from_utf8(line.get(close + 1..)?).ok()?;
        // After comm: field 3 (state) is index 0, so field N is index N - 3.
        let fields: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
        Some(Self {
            comm,
            state: fields.first()?.bytes().next()?,
            ppid: fields.get(4 - 3)?.parse().ok()?,
            flags: fields.get(9 - 3)?.parse().ok()?,
            start_ticks: fields.get(22 - 3)?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_plain_line() {
        let line = b"4242 (java) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 12 0 987654 10000 200 18446744073709551615\n";
        let stat = StatLine::parse(line).unwrap();
        assert_eq!(
            stat,
            StatLine {
                comm: b"java",
                state: b'S',
                ppid: 1,
                flags: 4194560,
                start_ticks: 987654
            }
        );
        assert!(!stat.exited());
        let zombie =
            StatLine::parse(b"5 (defunct) Z 1 5 5 0 -1 4194316 0 0 0 0 0 0 0 0 20 0 1 0 77 0 0\n")
                .unwrap();
        assert!(zombie.exited());
    }

    #[test]
    fn comm_with_spaces_and_parens() {
        let line = b"7 (a) b (c)) R 99 7 7 0 -1 2097152 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0\n";
        let stat = StatLine::parse(line).unwrap();
        assert_eq!(stat.comm, b"a) b (c)");
        assert_eq!(stat.ppid, 99);
        assert_eq!(stat.flags, 2097152);
        assert_eq!(stat.start_ticks, 55);
    }

    #[test]
    fn rejects_garbage_and_short_lines() {
        assert_eq!(StatLine::parse(b""), None);
        assert_eq!(StatLine::parse(b"1 (x) S 1 1"), None);
        assert_eq!(
            StatLine::parse(b"1 )x( S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5"),
            None
        );
        assert_eq!(
            StatLine::parse(b"1 (x) S notanumber 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5"),
            None
        );
    }
}
