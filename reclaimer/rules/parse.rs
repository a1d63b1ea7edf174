//! Parsing and validating a rules document, with the line and column of
//! every error.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::matching::comm_key;
use super::{Rules, Scope, MAX_DOCUMENT_BYTES, MAX_PATTERNS, MAX_PATTERN_BYTES};

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
    line.zip(column)
        .map_or(String::new(), |(l, c)| format!("line {l}, column {c}: "))
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
            let at = e.span().map(|span| {
                // serde's type errors ("invalid type: string, expected
                // i64") do not say which key; the position does. A syntax
                // error is not about the key before it.
                let about_a_value = ["invalid ", "unknown variant"]
                    .iter()
                    .any(|p| message.starts_with(p));
                let key =
                    key_at(toml, span.start).filter(|k| about_a_value && !message.contains(k));
                if let Some(key) = key {
                    message = format!("`{key}`: {message}");
                }
                position(toml, span.start)
            });
            RulesError::Parse {
                line: at.map(|(line, _)| line),
                column: at.map(|(_, column)| column),
                message,
            }
        })?;

        if let Some(value) = doc.poll_interval_ms.filter(|v| *v.get_ref() < 0) {
            let (line, column) = position(toml, value.span().start);
            return Err(RulesError::NegativePollInterval {
                value: value.into_inner(),
                line,
                column,
            });
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
            check_count(toml, "match_uids", &list)?;
            rules.uids = list.into_inner().into_iter().collect();
        }

        Ok(rules)
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
    check_count(src, key, &list)?;
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
fn check_count<T>(src: &str, key: &'static str, list: &Spanned<Vec<T>>) -> Result<(), RulesError> {
    let count = list.get_ref().len();
    if count <= MAX_PATTERNS {
        return Ok(());
    }
    let (line, column) = position(src, list.span().start);
    Err(RulesError::TooManyPatterns {
        key,
        count,
        max: MAX_PATTERNS,
        line,
        column,
    })
}
/// The top-level key whose value holds byte `offset`: the last line at or
/// before it that starts with `key =`. A heuristic for messages only (a
/// multi-line string could fool it); `None` if no such line.
pub(super) fn key_at(src: &str, offset: usize) -> Option<&str> {
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
pub(super) fn position(src: &str, offset: usize) -> (usize, usize) {
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
