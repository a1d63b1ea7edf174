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

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

mod matching;
mod parse;
mod selector;
pub mod source;

pub use parse::RulesError;

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

impl Rules {
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

#[cfg(test)]
mod tests;
