//! Reclaim rules: which process launches mean "the owner wants this
//! workstation back".
//!
//! The rules are a small TOML document, read from the `reclaim.toml` key of a
//! ConfigMap or from a file, in the format 5-Spot's /proc-poll agent reads
//! plus a few optional keys that are off by default. Its keys, how each one
//! matches, its limits and its errors are described once, for the operators
//! who write it, in [docs/rules.md](../docs/rules.md). This module is pure:
//! it parses and validates the document ([`parse::RulesError::line`] says where an
//! error is) and answers "does this process match?" ([`Rules::matches`]),
//! and does no I/O and no logging.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

mod matching;
mod parse;
mod selector;
pub mod source;

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

/// The TOML spelling: `"host"` or `"all"`.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Host => "host",
            Scope::All => "all",
        })
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

/// The TOML key of the matcher, e.g. `"match_commands"`.
impl fmt::Display for MatcherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatcherKind::Command => "match_commands",
            MatcherKind::ArgvSubstring => "match_argv_substrings",
            MatcherKind::ExePath => "match_exe_paths",
        })
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
/// for the format and semantics. The sets are ordered, so the selector and
/// the warnings list them in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Command name as the kernel would keep it (first 15 bytes) → the
    /// configured command (the first written, if several share a key).
    commands: BTreeMap<String, String>,
    /// Substrings in document order, without duplicates.
    argv_substrings: Vec<String>,
    /// Exact executable paths.
    exe_paths: BTreeSet<String>,
    /// Real uids allowed to match; empty means any.
    uids: BTreeSet<u32>,
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
        let uids = match self.uids.len() {
            0 => "any".to_owned(),
            n => n.to_string(),
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
