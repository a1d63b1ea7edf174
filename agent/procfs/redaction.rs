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

/// What to do with one argument.
enum Edit {
    /// Replace all of it.
    Whole,
    /// Replace these byte ranges of its (lossy) text; sorted, disjoint.
    Spans(Vec<Range<usize>>),
}

impl Redactor {
    /// A redactor, or `None` when no pattern is given (redaction off).
    pub fn new(inside: Vec<Regex>, next: Vec<Regex>) -> Option<Redactor> {
        (!inside.is_empty() || !next.is_empty()).then_some(Redactor { inside, next })
    }

    /// How many patterns of each kind (for the start-up log).
    pub fn counts(&self) -> (usize, usize) {
        (self.inside.len(), self.next.len())
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
                Some(Edit::Whole)
            } else {
                self.spans(arg)
            });
            follows = self.next.iter().any(|r| r.is_match(arg));
        }
        if p.argv_lossy && p.argv_raw.len() != p.argv.len() && edits.iter().any(Option::is_some) {
            // Bytes that do not line up with the text cannot be redacted by
            // position: drop them rather than let a secret through.
            p.argv_raw.clear();
        }
        let mut changed = false;
        for (i, edit) in edits.into_iter().enumerate() {
            let Some(edit) = edit else { continue };
            changed = true;
            let raw = p.argv_raw.get_mut(i).filter(|_| p.argv_lossy);
            edit_argument(&mut p.argv[i], raw, edit);
        }
        if changed {
            p.argv_redacted = true;
            // A secret that held the only invalid bytes leaves an exact argv.
            let raw = &p.argv_raw;
            if p.argv_lossy && !raw.is_empty() && raw.iter().all(|a| std::str::from_utf8(a).is_ok())
            {
                p.argv_lossy = false;
                p.argv_raw.clear();
            }
        }
        changed
    }

    /// What the in-argument patterns select in `arg`, if anything.
    fn spans(&self, arg: &str) -> Option<Edit> {
        let mut spans = Vec::new();
        for regex in &self.inside {
            if regex.captures_len() == 1 {
                if regex.is_match(arg) {
                    return Some(Edit::Whole);
                }
                continue;
            }
            for caps in regex.captures_iter(arg) {
                spans.extend(caps.iter().skip(1).flatten().map(|m| m.range()));
            }
        }
        spans.retain(|s| !s.is_empty());
        if spans.is_empty() {
            return None;
        }
        spans.sort_by_key(|s| s.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
        for s in spans {
            match merged.last_mut() {
                Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
                _ => merged.push(s),
            }
        }
        Some(Edit::Spans(merged))
    }
}

/// Applies `edit` to one argument's text and, for a lossy argv, its bytes.
fn edit_argument(text: &mut String, raw: Option<&mut Vec<u8>>, edit: Edit) {
    if let Some(raw) = raw {
        // The text must be what the bytes read as; if it ever is not, the
        // offsets cannot be trusted and the whole argument goes.
        let map = (String::from_utf8_lossy(raw) == text.as_str()).then(|| lossy_to_raw(raw));
        match (&edit, map) {
            (Edit::Spans(spans), Some(map)) => {
                let raw_spans: Vec<_> = spans.iter().map(|s| map[s.start]..map[s.end]).collect();
                *raw = replace(raw, &raw_spans, REDACTED.as_bytes());
            }
            _ => *raw = REDACTED.as_bytes().to_vec(),
        }
        *text = String::from_utf8_lossy(raw).into_owned();
        return;
    }
    *text = match edit {
        Edit::Spans(spans) => {
            String::from_utf8(replace(text.as_bytes(), &spans, REDACTED.as_bytes()))
                .expect("spans of a str match lie on char boundaries")
        }
        Edit::Whole => REDACTED.to_owned(),
    };
}

/// `src` with each of the sorted, disjoint `spans` replaced by `with`.
fn replace(src: &[u8], spans: &[Range<usize>], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() + spans.len() * with.len());
    let mut at = 0;
    for s in spans {
        out.extend_from_slice(&src[at..s.start]);
        out.extend_from_slice(with);
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
