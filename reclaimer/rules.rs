//! Reclaim rules: which process launches mean "the owner wants this
//! workstation back".
//!
//! The rules are a small TOML document, read from the `reclaim.toml` key of a
//! ConfigMap or from a file. The format is the one the 5-Spot controller's
//! reclaim agent reads, plus a few optional keys that are off by default.
//! This module is pure: it parses and validates the document and answers
//! "does this process match?", and does no I/O and no logging.
//!
//! # Format
//!
//! ```toml
//! # Exact, case-sensitive match on the kernel's command name (`comm`).
//! match_commands = ["java", "idea", "steam"]
//!
//! # Case-sensitive substring of the command line (argv joined with single
//! # spaces), so a pattern may span arguments: "-jar app" matches
//! # `java -jar app.jar`.
//! match_argv_substrings = ["-jar app", "execwatch-demo"]
//!
//! # Accepted for compatibility with the 5-Spot reclaim agent and ignored.
//! poll_interval_ms = 1000
//!
//! # Optional, off by default.
//! match_exe_paths = ["/opt/idea/bin/idea"]   # exact executable path
//! match_uids = [1000]                         # only these real uids can match
//! scope = "host"                              # "host" (default) or "all"
//! ```
//!
//! Every key is optional. An unknown key is an error that names the key, so a
//! typo (`match_comands`) cannot silently disable reclaiming.
//!
//! # Matchers
//!
//! A process matches when it passes both filters ([`Scope`] and
//! `match_uids`) and then any one matcher. Matchers are tried in a fixed
//! order, commands, then argv substrings, then exe paths; within the argv list
//! in document order. The first hit wins and is reported as a [`Match`], so the
//! same process always yields the same reason.
//!
//! - **`match_commands`**: exact, case-sensitive equality with
//!   [`Process::comm`], the name the kernel keeps for the process: the
//!   basename of the executed file, cut by the kernel to its first 15 bytes.
//!   A configured command longer than 15 bytes is accepted and compared on its
//!   first 15 bytes too, since that is all the kernel keeps: the user who
//!   writes `"jetbrains-toolbox"` means the process the kernel calls
//!   `"jetbrains-toolb"`. (Rejecting it would only make the user look up the
//!   truncation rule; two long commands that share their first 15 bytes both
//!   report the one written first.) `comm` follows the executed file, not
//!   argv\[0\]: use `match_argv_substrings` for a program started under
//!   another name.
//! - **`match_argv_substrings`**: case-sensitive substring of
//!   [`Process::argv`] joined with single spaces. When the command line was
//!   not valid UTF-8 (`argv_lossy`), the agent's lossy strings (invalid bytes
//!   as U+FFFD) are searched. An empty string is rejected: it would match
//!   every process.
//! - **`match_exe_paths`** (extra): exact equality with [`Process::exe`], the
//!   absolute path of the executable. The agent can only read it for other
//!   users' processes with `CAP_SYS_PTRACE`; when it is unavailable this
//!   matcher cannot match (the other matchers still can). A binary replaced on
//!   disk while it runs reads as `"<path> (deleted)"` and no longer matches.
//!   Each path must be absolute.
//!
//! # Filters
//!
//! - **`scope`** (extra): `"host"`, the default, considers only processes
//!   *outside* Kubernetes pods ([`Cgroup::in_kubernetes_pod`] false): the
//!   node's own cluster workloads, say a JVM pod, must never reclaim the node.
//!   A process whose cgroup is unknown (`cgroup` absent, e.g. it exited before
//!   the agent read it) counts as a host process, so an owner's launch is
//!   never missed. `"all"` considers every process.
//! - **`match_uids`** (extra): when non-empty, only a process whose *real* uid
//!   is in the list can match at all; it restricts the matchers above (a
//!   logical AND), it never matches on its own. A process whose credentials
//!   are unknown does not pass a non-empty list.
//!
//! # Inert rules
//!
//! With no matcher configured (`match_commands`, `match_argv_substrings` and
//! `match_exe_paths` all missing or empty) the rules are *inert*: they never
//! fire, whatever the filters say. An empty document, and a missing ConfigMap
//! ([`Rules::inert`]), mean the same.
//!
//! # `poll_interval_ms`
//!
//! The 5-Spot reclaim agent polls `/proc` at this interval. The reclaimer is
//! pushed every launch by the execwatch agent, so the value means nothing
//! here; it is still validated (a non-negative integer) so a document that
//! works with one consumer works with the other.
//!
//! # Limits
//!
//! A document holds at most [`MAX_DOCUMENT_BYTES`] bytes, each list at most
//! [`MAX_PATTERNS`] entries and each pattern at most [`MAX_PATTERN_BYTES`]
//! bytes. Every error but the document's size says where:
//! [`RulesError::line`].
//!
//! [`Process::comm`]: execwatch::proto::Process::comm
//! [`Process::argv`]: execwatch::proto::Process::argv
//! [`Process::exe`]: execwatch::proto::Process::exe
//! [`Cgroup::in_kubernetes_pod`]: execwatch::proto::Cgroup::in_kubernetes_pod

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;

use execwatch::proto::Process;
use serde::Deserialize;
use toml::Spanned;

/// The rules the README's demo uses when no `--rules-file` is given.
///
/// `bash -c 'exec -a execwatch-demo sleep 30'` matches them on any Linux
/// machine: both the shell's command line and `sleep`'s (whose argv\[0\] is
/// then `execwatch-demo`) contain the pattern.
pub const DEFAULT_RULES: &str = r#"# execwatch reclaimer: built-in demo rules (used when no --rules-file is given).

# Exact, case-sensitive match on the kernel's command name (comm: the basename
# of the executed file, at most 15 bytes).
match_commands = ["java", "idea", "steam"]

# Case-sensitive substring of the command line (arguments joined with single
# spaces). Try it: bash -c 'exec -a execwatch-demo sleep 30'
match_argv_substrings = ["execwatch-demo"]

# "host": only processes outside Kubernetes pods can match, so the node's own
# workloads never reclaim it. "all": every process.
scope = "host"

# Optional, off by default:
# match_exe_paths = ["/usr/bin/steam"]  # exact executable path (needs CAP_SYS_PTRACE for other users)
# match_uids = [1000]                   # only processes of these real uids can match
# poll_interval_ms = 1000               # accepted for 5-Spot compatibility, ignored
"#;

/// Most entries one list (`match_commands`, `match_argv_substrings`,
/// `match_exe_paths`, `match_uids`) may hold.
pub const MAX_PATTERNS: usize = 1000;

/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// Largest rules document, in bytes: what a ConfigMap can hold at most
/// (1 MiB), for a rules file too.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// How many bytes of a command name the kernel keeps (`TASK_COMM_LEN` - 1).
pub const COMM_MAX_BYTES: usize = 15;

/// Why a rules document was refused.
///
/// Every variant carries the 1-based line and column of the offending value
/// (the column counts characters); [`RulesError::line`] reads the line from
/// any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The document is not valid TOML, names an unknown key, or gives a key a
    /// value of the wrong type (`message` is the TOML parser's, one line).
    /// `line` and `column` are `None` only when the parser gave no position.
    #[error("reclaim rules: {}{message}", at(*.line, *.column))]
    Parse {
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column (in characters) of the error, when known.
        column: Option<usize>,
        /// What the parser objected to, e.g. "unknown field `match_comands`, ...".
        message: String,
    },

    /// A list holds an empty string, which would match every process (or, for
    /// `match_commands`, every process whose name is unknown).
    #[error("reclaim rules: line {line}, column {column}: `{key}` contains an empty string, which would match every process")]
    EmptyPattern {
        /// The key whose list holds it.
        key: &'static str,
        /// 1-based line of the empty string.
        line: usize,
        /// 1-based column of the empty string.
        column: usize,
    },

    /// A list holds more than [`MAX_PATTERNS`] entries.
    #[error("reclaim rules: line {line}, column {column}: `{key}` has {count} entries, at most {max} are allowed")]
    TooManyPatterns {
        /// The key whose list is too long.
        key: &'static str,
        /// How many entries it holds.
        count: usize,
        /// The limit ([`MAX_PATTERNS`]).
        max: usize,
        /// 1-based line where the list starts.
        line: usize,
        /// 1-based column where the list starts.
        column: usize,
    },

    /// A pattern is longer than [`MAX_PATTERN_BYTES`].
    #[error("reclaim rules: line {line}, column {column}: a `{key}` pattern is {bytes} bytes long, at most {max} are allowed")]
    PatternTooLong {
        /// The key whose list holds it.
        key: &'static str,
        /// Its length in bytes.
        bytes: usize,
        /// The limit ([`MAX_PATTERN_BYTES`]).
        max: usize,
        /// 1-based line of the pattern.
        line: usize,
        /// 1-based column of the pattern.
        column: usize,
    },

    /// A `match_exe_paths` entry is not an absolute path, so it could never
    /// equal the executable path the kernel reports.
    #[error("reclaim rules: line {line}, column {column}: `match_exe_paths` entry {path:?} is not an absolute path (it must start with '/', e.g. \"/usr/bin/java\")")]
    RelativeExePath {
        /// The configured path.
        path: String,
        /// 1-based line of the path.
        line: usize,
        /// 1-based column of the path.
        column: usize,
    },

    /// The document is larger than [`MAX_DOCUMENT_BYTES`]; it is refused
    /// before it is parsed.
    #[error("reclaim rules: the document is {bytes} bytes long, at most {max} are allowed")]
    DocumentTooLarge {
        /// Its length in bytes (for a file: as much as was read).
        bytes: usize,
        /// The limit ([`MAX_DOCUMENT_BYTES`]).
        max: usize,
    },

    /// `poll_interval_ms` is negative.
    #[error("reclaim rules: line {line}, column {column}: `poll_interval_ms` is {value}, it must be a non-negative integer (it is accepted for compatibility and ignored)")]
    NegativePollInterval {
        /// The configured value.
        value: i64,
        /// 1-based line of the value.
        line: usize,
        /// 1-based column of the value.
        column: usize,
    },
}

impl RulesError {
    /// The 1-based line the error points at, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            RulesError::Parse { line, .. } => *line,
            RulesError::DocumentTooLarge { .. } => None,
            RulesError::EmptyPattern { line, .. }
            | RulesError::TooManyPatterns { line, .. }
            | RulesError::PatternTooLong { line, .. }
            | RulesError::RelativeExePath { line, .. }
            | RulesError::NegativePollInterval { line, .. } => Some(*line),
        }
    }
}

/// "line L, column C: " or nothing, for [`RulesError::Parse`]'s message.
fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
}

/// Which processes the rules consider at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Only processes outside Kubernetes pods, or whose cgroup is unknown
    /// (the default).
    #[default]
    Host,
    /// Every process, pods included.
    All,
}

impl Scope {
    /// The TOML spelling: `"host"` or `"all"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Host => "host",
            Scope::All => "all",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which matcher fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatcherKind {
    /// `match_commands`: the command name equalled the pattern.
    Command,
    /// `match_argv_substrings`: the command line contained the pattern.
    ArgvSubstring,
    /// `match_exe_paths`: the executable path equalled the pattern.
    ExePath,
}

impl MatcherKind {
    /// The TOML key of this matcher, e.g. `"match_commands"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatcherKind::Command => "match_commands",
            MatcherKind::ArgvSubstring => "match_argv_substrings",
            MatcherKind::ExePath => "match_exe_paths",
        }
    }
}

impl fmt::Display for MatcherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A process matched the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The configured pattern that matched, as written in the document (for a
    /// command longer than 15 bytes, the whole configured command).
    pub pattern: String,
    /// The matcher that fired.
    pub matcher: MatcherKind,
}

impl Match {
    /// The value of the Node annotation `5spot.finos.org/reclaim-reason`:
    /// `"process-match: <pattern>"`.
    pub fn reason(&self) -> String {
        format!("process-match: {}", self.pattern)
    }
}

/// A validated rule set. Cheap to query from any thread; see the module docs
/// for the format and semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Command name as the kernel would keep it (first 15 bytes) → the
    /// configured command (the first written, if several share a key).
    commands: HashMap<String, String>,
    /// Substrings in document order, without duplicates.
    argv_substrings: Vec<String>,
    /// Exact executable paths.
    exe_paths: HashSet<String>,
    /// Real uids allowed to match; empty means any.
    uids: HashSet<u32>,
    /// Which processes are considered.
    scope: Scope,
}

/// The document as written, with positions for the validation errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    match_commands: Option<Spanned<Vec<Spanned<String>>>>,
    match_argv_substrings: Option<Spanned<Vec<Spanned<String>>>>,
    poll_interval_ms: Option<Spanned<i64>>,
    match_exe_paths: Option<Spanned<Vec<Spanned<String>>>>,
    match_uids: Option<Spanned<Vec<u32>>>,
    scope: Option<Scope>,
}

impl Rules {
    /// Parses and validates a rules document (the contents of `reclaim.toml`).
    ///
    /// An empty document gives inert rules. Errors carry the line and column.
    pub fn parse(toml: &str) -> Result<Rules, RulesError> {
        if toml.len() > MAX_DOCUMENT_BYTES {
            return Err(RulesError::DocumentTooLarge {
                bytes: toml.len(),
                max: MAX_DOCUMENT_BYTES,
            });
        }
        let doc: Document = toml::from_str(toml).map_err(|e| {
            let mut message = e.message().trim_end().to_owned();
            let (line, column) = match e.span() {
                Some(span) => {
                    // serde's type errors ("invalid type: string, expected
                    // i64") do not say which key; the position does. A
                    // syntax error is not about the key before it.
                    let about_a_value = ["invalid ", "unknown variant"]
                        .iter()
                        .any(|p| message.starts_with(p));
                    if let Some(key) = key_at(toml, span.start).filter(|_| about_a_value) {
                        if !message.contains(key) {
                            message = format!("`{key}`: {message}");
                        }
                    }
                    let (l, c) = position(toml, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            RulesError::Parse {
                line,
                column,
                message,
            }
        })?;

        if let Some(value) = &doc.poll_interval_ms {
            if *value.get_ref() < 0 {
                let (line, column) = position(toml, value.span().start);
                return Err(RulesError::NegativePollInterval {
                    value: *value.get_ref(),
                    line,
                    column,
                });
            }
        }

        let mut rules = Rules {
            scope: doc.scope.unwrap_or_default(),
            ..Rules::default()
        };

        for (command, _) in patterns(toml, "match_commands", doc.match_commands)? {
            rules.commands.entry(comm_key(&command)).or_insert(command);
        }

        for (substring, _) in patterns(toml, "match_argv_substrings", doc.match_argv_substrings)? {
            if !rules.argv_substrings.contains(&substring) {
                rules.argv_substrings.push(substring);
            }
        }

        for (path, span) in patterns(toml, "match_exe_paths", doc.match_exe_paths)? {
            if !path.starts_with('/') {
                let (line, column) = position(toml, span.start);
                return Err(RulesError::RelativeExePath { path, line, column });
            }
            rules.exe_paths.insert(path);
        }

        if let Some(list) = doc.match_uids {
            check_count(toml, "match_uids", list.get_ref().len(), list.span())?;
            rules.uids = list.into_inner().into_iter().collect();
        }

        Ok(rules)
    }

    /// Rules that never fire: what a missing ConfigMap or rules file means.
    pub fn inert() -> Rules {
        Rules::default()
    }

    /// True if no matcher is configured, so [`Rules::matches`] always returns
    /// `None` (the filters alone never fire).
    pub fn is_inert(&self) -> bool {
        self.commands.is_empty() && self.argv_substrings.is_empty() && self.exe_paths.is_empty()
    }

    /// Which processes the rules consider.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The first matcher that matches `p`, if `p` passes the filters.
    ///
    /// Called for every exec on the node: it allocates only to build the
    /// returned [`Match`]; joining argv reuses a per-thread buffer (which keeps
    /// the capacity of the longest command line seen, itself bounded by the
    /// agent's read limit).
    pub fn matches(&self, p: &Process) -> Option<Match> {
        if self.is_inert() {
            return None;
        }
        // Unknown cgroup counts as host: better a launch in a pod wrongly
        // considered than an owner's launch missed.
        if self.scope == Scope::Host && p.cgroup.as_ref().is_some_and(|c| c.in_kubernetes_pod) {
            return None;
        }
        if !self.uids.is_empty() {
            match &p.credentials {
                Some(c) if self.uids.contains(&c.uid) => {}
                _ => return None,
            }
        }

        // The agent's comm is at most 15 bytes before its lossy UTF-8
        // conversion (which may lengthen it); only another producer's longer
        // name needs cutting.
        let command = self
            .commands
            .get(p.comm.as_str())
            .or_else(|| self.commands.get(comm_prefix(&p.comm)?));
        if let Some(pattern) = command {
            return Some(Match {
                pattern: pattern.clone(),
                matcher: MatcherKind::Command,
            });
        }

        if !self.argv_substrings.is_empty() {
            if let Some(pattern) = self.find_in_argv(&p.argv) {
                return Some(Match {
                    pattern: pattern.clone(),
                    matcher: MatcherKind::ArgvSubstring,
                });
            }
        }

        if let Some(exe) = &p.exe {
            if let Some(pattern) = self.exe_paths.get(exe.as_str()) {
                return Some(Match {
                    pattern: pattern.clone(),
                    matcher: MatcherKind::ExePath,
                });
            }
        }

        None
    }

    /// The first argv substring (in document order) found in `argv` joined
    /// with single spaces.
    fn find_in_argv(&self, argv: &[String]) -> Option<&String> {
        let find = |line: &str| {
            self.argv_substrings
                .iter()
                .find(|s| line.contains(s.as_str()))
        };
        match argv {
            [] => None,
            [only] => find(only),
            _ => {
                thread_local! {
                    static JOINED: RefCell<String> = const { RefCell::new(String::new()) };
                }
                JOINED.with(|buf| {
                    let mut joined = buf.borrow_mut();
                    joined.clear();
                    for (i, arg) in argv.iter().enumerate() {
                        if i > 0 {
                            joined.push(' ');
                        }
                        joined.push_str(arg);
                    }
                    find(&joined)
                })
            }
        }
    }

    /// One line for logs, e.g.
    /// `commands=3 argv_substrings=1 exe_paths=0 uids=any scope=host`
    /// (counts of distinct patterns), or `inert (...)`.
    pub fn summary(&self) -> String {
        let uids = if self.uids.is_empty() {
            "any".to_owned()
        } else {
            self.uids.len().to_string()
        };
        let counts = format!(
            "commands={} argv_substrings={} exe_paths={} uids={uids} scope={}",
            self.commands.len(),
            self.argv_substrings.len(),
            self.exe_paths.len(),
            self.scope,
        );
        if self.is_inert() {
            format!("inert (no matcher configured; never fires) {counts}")
        } else {
            counts
        }
    }
}

/// Validates one list of string patterns and returns them in document
/// order, each with its byte span in the document.
fn patterns(
    src: &str,
    key: &'static str,
    list: Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<Vec<(String, Range<usize>)>, RulesError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    check_count(src, key, list.get_ref().len(), list.span())?;
    let mut out = Vec::with_capacity(list.get_ref().len());
    for pattern in list.into_inner() {
        let span = pattern.span();
        let pattern = pattern.into_inner();
        if pattern.is_empty() {
            let (line, column) = position(src, span.start);
            return Err(RulesError::EmptyPattern { key, line, column });
        }
        if pattern.len() > MAX_PATTERN_BYTES {
            let (line, column) = position(src, span.start);
            return Err(RulesError::PatternTooLong {
                key,
                bytes: pattern.len(),
                max: MAX_PATTERN_BYTES,
                line,
                column,
            });
        }
        out.push((pattern, span));
    }
    Ok(out)
}

/// Refuses a list longer than [`MAX_PATTERNS`].
fn check_count(
    src: &str,
    key: &'static str,
    count: usize,
    span: Range<usize>,
) -> Result<(), RulesError> {
    if count <= MAX_PATTERNS {
        return Ok(());
    }
    let (line, column) = position(src, span.start);
    Err(RulesError::TooManyPatterns {
        key,
        count,
        max: MAX_PATTERNS,
        line,
        column,
    })
}

/// A configured command as the kernel would keep it: its first 15 bytes,
/// converted the way the agent converts `comm` (a character cut in half
/// becomes U+FFFD).
fn comm_key(command: &str) -> String {
    let bytes = command.as_bytes();
    let kept = &bytes[..bytes.len().min(COMM_MAX_BYTES)];
    String::from_utf8_lossy(kept).into_owned()
}

/// A reported command name longer than 15 bytes cut to 15 (at a character
/// boundary), for producers that send the whole name; `None` if it is not
/// longer.
fn comm_prefix(comm: &str) -> Option<&str> {
    if comm.len() <= COMM_MAX_BYTES {
        return None;
    }
    let mut end = COMM_MAX_BYTES;
    while !comm.is_char_boundary(end) {
        end -= 1;
    }
    Some(&comm[..end])
}

/// The top-level key whose value holds byte `offset`: the last line at or
/// before it that starts with `key =`. A heuristic for messages only (a
/// multi-line string could fool it); `None` if no such line.
fn key_at(src: &str, offset: usize) -> Option<&str> {
    // Up to the end of the line holding `offset` (a newline is a char boundary).
    let offset = offset.min(src.len());
    let end = src.as_bytes()[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(src.len(), |i| offset + i);
    src.get(..end)?.lines().rev().find_map(|line| {
        let line = line.trim_start();
        let key_len = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(line.len());
        let (key, rest) = line.split_at(key_len);
        (!key.is_empty() && rest.trim_start().starts_with('=')).then_some(key)
    })
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
fn position(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = match src.get(line_start..offset) {
        Some(text) => text.chars().count(),
        None => offset - line_start,
    };
    (line, column + 1)
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
