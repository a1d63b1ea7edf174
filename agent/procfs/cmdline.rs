//! Searching a whole command line for the subscribers' `argv_substrings`,
//! past the cut a record makes at `--max-argv-bytes`.
//!
//! A record carries at most that many bytes of a command line, but a
//! substring matches the whole line (a Java launch puts its main class after
//! tens of KiB of class path). When a line is longer and some subscriber
//! asked for substrings, the reader reads `cmdline` on to its end, one
//! [`CHUNK`] at a time into one reused buffer, and feeds every byte from the
//! first to one Aho-Corasick automaton whose state carries over from one
//! chunk to the next: a pattern that straddles two chunks is found, and the
//! memory a read takes is one chunk whatever the line's length. The time is
//! the read's own deadline ([`crate::procfs::bounded`]): the search asks
//! between chunks whether its read was given up, and stops if so.
//!
//! The line is searched as the kernel has it, with each argument's closing
//! NUL read as a space and the last one dropped: `argv` joined with single
//! spaces, as a selector and the reclaimer's rules search it. Redaction
//! comes later ([`crate::procfs::source::ProcSource::finish`]) and never
//! sees the text past the cut, so a cut line is searched unredacted, from
//! its first byte; the record carries only which patterns were found
//! (`argv_matches`), never the text.
//!
//! The kernel bounds the line: `execve` takes arguments and environment
//! together up to a quarter of the stack rlimit, at most 6 MiB (3/4 of
//! `_STK_LIM`) and never less than 128 KiB (`ARG_MAX`), less a pointer per
//! string (`bprm_stack_limits`, `fs/exec.c`); so a line, and a search, is at
//! most 6 MiB long. `/proc/<pid>/cmdline` gives the argument
//! area, or, when the process overwrote its last NUL (`setproctitle`), runs
//! on into the environment up to its first NUL (`get_mm_cmdline`,
//! `fs/proc/base.c`).

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::Anchored;
use nix::errno::Errno;

/// Bytes read per `read` past the record's limit.
pub const CHUNK: usize = 64 * 1024;

/// Substrings to search whole command lines for, compiled once. Cheap to
/// clone; equal when the substrings are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArgvPatterns(Option<Arc<Compiled>>);

struct Compiled {
    /// Sorted, without duplicates; a pattern's index is its automaton id.
    patterns: Vec<String>,
    nfa: NFA,
}

impl ArgvPatterns {
    /// No pattern: nothing is searched.
    pub const NONE: ArgvPatterns = ArgvPatterns(None);

    /// The automaton for `patterns` (none: nothing is searched).
    pub fn new(mut patterns: Vec<String>) -> Self {
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return Self::default();
        }
        // Selector entries are at most 4096 bytes and 1000 per list: no
        // limit of the builder applies.
        let nfa = NFA::new(&patterns).expect("bounded patterns compile");
        Self(Some(Arc::new(Compiled { patterns, nfa })))
    }

    /// The substrings, sorted.
    pub fn patterns(&self) -> &[String] {
        self.0.as_ref().map_or(&[], |c| &c.patterns)
    }

    /// Which patterns the line that starts with `head` holds, reading the
    /// rest of it from `fd` (positioned after `head`) in [`CHUNK`]s into
    /// `chunk`, until its end, every pattern is found, or `go_on` says the
    /// read was given up. A read that fails ends the search with what was
    /// found so far.
    pub fn search(
        &self,
        head: &[u8],
        fd: &OwnedFd,
        chunk: &mut Vec<u8>,
        mut go_on: impl FnMut() -> bool,
    ) -> Vec<String> {
        let Some(mut search) = self.start() else {
            return Vec::new();
        };
        chunk.resize(CHUNK, 0);
        let mut done = search.feed(head);
        while !done && go_on() {
            match nix::unistd::read(fd, chunk) {
                Ok(0) => break,
                Ok(n) => done = search.feed(&chunk[..n]),
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        search.found()
    }

    /// A search from the start of a line, if there are patterns.
    fn start(&self) -> Option<Search<'_>> {
        let c = self.0.as_deref()?;
        Some(Search {
            c,
            state: c.nfa.start_state(Anchored::No).expect("unanchored search"),
            nul: false,
            found: vec![false; c.patterns.len()],
            left: c.patterns.len(),
        })
    }
}

/// A search under way.
struct Search<'a> {
    c: &'a Compiled,
    state: StateID,
    /// The last byte was a NUL, not yet fed: it reads as a space unless it
    /// ends the line.
    nul: bool,
    found: Vec<bool>,
    left: usize,
}

impl Search<'_> {
    /// Feeds the next bytes of the line; true once every pattern is found.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if std::mem::replace(&mut self.nul, b == 0) && self.step(b' ') {
                return true;
            }
            if b != 0 && self.step(b) {
                return true;
            }
        }
        false
    }

    /// The patterns found, sorted.
    fn found(self) -> Vec<String> {
        let found = self.c.patterns.iter().zip(self.found).filter(|(_, f)| *f);
        found.map(|(p, _)| p.clone()).collect()
    }

    /// One byte through the automaton; true once every pattern is found.
    fn step(&mut self, b: u8) -> bool {
        let nfa = &self.c.nfa;
        self.state = nfa.next_state(Anchored::No, self.state, b);
        if nfa.is_match(self.state) {
            for i in 0..nfa.match_len(self.state) {
                let id = nfa.match_pattern(self.state, i).as_usize();
                if !std::mem::replace(&mut self.found[id], true) {
                    self.left -= 1;
                }
            }
        }
        self.left == 0
    }
}

// A compiled set is its patterns, to compare and to show.
impl PartialEq for Compiled {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for Compiled {}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.patterns.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Searches `line` fed in pieces of `piece` bytes.
    fn found(patterns: &[&str], line: &[u8], piece: usize) -> Vec<String> {
        let p = ArgvPatterns::new(patterns.iter().map(|s| s.to_string()).collect());
        let mut s = p.start().unwrap();
        for part in line.chunks(piece) {
            s.feed(part);
        }
        s.found()
    }

    #[test]
    fn nuls_read_as_spaces_but_the_last_one_is_dropped_whatever_the_pieces() {
        let line = b"java\0-jar\0app.jar\0";
        for piece in 1..=line.len() {
            assert_eq!(
                found(&["-jar app", "jar"], line, piece),
                ["-jar app", "jar"]
            );
            assert!(found(&["app.jar ", "jar\0"], line, piece).is_empty());
        }
    }

    #[test]
    fn overlapping_patterns_are_all_found() {
        assert_eq!(
            found(&["Main", "ain", "vendor.Main"], b"com.vendor.Main\0", 4).len(),
            3
        );
    }
}
