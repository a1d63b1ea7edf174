//! Redaction of secrets in command lines, before a record leaves the agent.
//!
//! Command lines can carry secrets (`--password=hunter2`). With redaction
//! configured, every record the agent sends (live exec events of either
//! detector and every snapshot entry: all leave through
//! [`crate::procfs::mount::ProcMount::finish`]) has the matching text
//! replaced by [`REDACTED`] and `argv_redacted` set.
//!
//! Two kinds of pattern (Rust `regex` syntax, searched for anywhere in one
//! argument; anchor with `^` and `$`):
//!
//! - **in the argument** (`--redact-argv`): with capture groups, only the
//!   text the groups captured is replaced (`^--password=(.+)` turns
//!   `--password=hunter2` into `--password=<redacted>`); without a group the
//!   whole argument is replaced.
//! - **the next argument** (`--redact-argv-next`): an argument that matches
//!   is kept and the one after it is replaced whole (`^--password$` turns
//!   `--password hunter2` into `--password <redacted>`).
//!
//! Every pattern is matched against the original argument, and the union of
//! what they select is replaced. A non-UTF-8 argument is matched as the lossy
//! string consumers see in `argv`, and the same stretch is replaced in its
//! exact bytes (`argv_raw`), so both stay consistent.

use std::ops::Range;

use execwatch::proto::Process;
use regex::Regex;

/// What replaces redacted text.
pub const REDACTED: &str = "<redacted>";

/// Compiled redaction patterns.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Patterns applied inside each argument.
    inside: Vec<Regex>,
    /// Patterns whose match redacts the following argument.
    next: Vec<Regex>,
}

impl Redactor {
    /// A redactor, or `None` when no pattern is given (redaction off); logs
    /// how many patterns of each kind it has.
    pub fn new(inside: Vec<Regex>, next: Vec<Regex>) -> Option<Redactor> {
        let (in_argument, next_argument) = (inside.len(), next.len());
        if in_argument + next_argument == 0 {
            return None;
        }
        tracing::info!(
            in_argument,
            next_argument,
            "argv redaction on: matching text is replaced with {REDACTED}"
        );
        Some(Redactor { inside, next })
    }

    /// Redacts `p`'s argv (and argv_raw) in place; returns true if anything
    /// was replaced, which is also recorded in `argv_redacted`.
    pub fn redact(&self, p: &mut Process) -> bool {
        // Decide on the original arguments first, so that one redaction
        // never hides or creates another pattern's match.
        let mut edits = Vec::with_capacity(p.argv.len());
        let mut follows = false;
        for arg in &p.argv {
            edits.push(if follows {
                Some(std::iter::once(0..arg.len()).collect())
            } else {
                self.spans(arg)
            });
            follows = self.next.iter().any(|r| r.is_match(arg));
        }
        if edits.iter().all(Option::is_none) {
            return false;
        }
        if p.argv_lossy && p.argv_raw.len() != p.argv.len() {
            // Bytes that do not line up with the text cannot be redacted by
            // position: drop them rather than let a secret through.
            p.argv_raw.clear();
        }
        for (i, edit) in edits.into_iter().enumerate() {
            let Some(spans) = edit else { continue };
            let raw = p.argv_raw.get_mut(i).filter(|_| p.argv_lossy);
            edit_argument(&mut p.argv[i], raw, &spans);
        }
        p.argv_redacted = true;
        // A secret that held the only invalid bytes leaves an exact argv.
        let raw = &p.argv_raw;
        if p.argv_lossy && !raw.is_empty() && raw.iter().all(|a| std::str::from_utf8(a).is_ok()) {
            p.argv_lossy = false;
            p.argv_raw.clear();
        }
        true
    }

    /// What the in-argument patterns select in `arg`, if anything: byte
    /// ranges of it, sorted and disjoint (the whole of it for a pattern
    /// without a capture group).
    fn spans(&self, arg: &str) -> Option<Vec<Range<usize>>> {
        let mut spans = Vec::new();
        for regex in &self.inside {
            if regex.captures_len() == 1 {
                if regex.is_match(arg) {
                    return Some(std::iter::once(0..arg.len()).collect());
                }
                continue;
            }
            for caps in regex.captures_iter(arg) {
                spans.extend(caps.iter().skip(1).flatten().map(|m| m.range()));
            }
        }
        spans.retain(|s| !s.is_empty());
        spans.sort_by_key(|s| s.start);
        // Each span that starts within the one kept before it joins it.
        spans.dedup_by(|s, kept| {
            let joins = s.start <= kept.end;
            if joins {
                kept.end = kept.end.max(s.end);
            }
            joins
        });
        (!spans.is_empty()).then_some(spans)
    }
}

/// Replaces `spans` of one argument's text and, for a lossy argv, the same
/// stretches of its bytes.
fn edit_argument(text: &mut String, raw: Option<&mut Vec<u8>>, spans: &[Range<usize>]) {
    let Some(raw) = raw else {
        let edited = replace(text.as_bytes(), spans.iter().cloned());
        *text = String::from_utf8(edited).expect("spans of a str match lie on char boundaries");
        return;
    };
    // The text must be what the bytes read as; if it ever is not, the
    // offsets cannot be trusted and the whole argument goes.
    *raw = if String::from_utf8_lossy(raw) == text.as_str() {
        let map = lossy_to_raw(raw);
        replace(raw, spans.iter().map(|s| map[s.start]..map[s.end]))
    } else {
        REDACTED.as_bytes().to_vec()
    };
    *text = String::from_utf8_lossy(raw).into_owned();
}

/// `src` with each of the sorted, disjoint `spans` replaced by [`REDACTED`].
fn replace(src: &[u8], spans: impl Iterator<Item = Range<usize>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() + REDACTED.len());
    let mut at = 0;
    for s in spans {
        out.extend_from_slice(&src[at..s.start]);
        out.extend_from_slice(REDACTED.as_bytes());
        at = s.end;
    }
    out.extend_from_slice(&src[at..]);
    out
}

/// For every byte offset of `raw`'s lossy text that is a char boundary, the
/// matching offset in `raw`. An invalid sequence reads as one U+FFFD (three
/// bytes of text); offsets inside it are never asked for.
fn lossy_to_raw(raw: &[u8]) -> Vec<usize> {
    let mut map = Vec::with_capacity(raw.len() + 1);
    let mut at = 0;
    for chunk in raw.utf8_chunks() {
        map.extend((0..chunk.valid().len()).map(|k| at + k));
        at += chunk.valid().len();
        if !chunk.invalid().is_empty() {
            map.extend([at; 3]);
            at += chunk.invalid().len();
        }
    }
    map.push(at);
    map
}

pub mod patterns;

#[cfg(test)]
mod tests;
