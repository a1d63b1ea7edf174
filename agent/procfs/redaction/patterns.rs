//! The redaction patterns of the command line: parsing the flag values and
//! the `common` preset (see [`crate::procfs::redaction`] for what they do).
//!
//! One flag value (or environment variable) may hold several patterns
//! separated by commas. A comma inside `{…}` (a repetition such as `{1,3}`)
//! or `[…]` (a class), or escaped as `\,`, belongs to the pattern.

use clap::ValueEnum;
use regex::Regex;

/// Patterns given in one flag value.
#[derive(Debug, Clone)]
pub struct Patterns(pub Vec<Regex>);

/// Why a pattern was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// Not a valid regular expression.
    #[error("pattern `{pattern}` is not a valid regular expression: {source}")]
    Invalid {
        /// The pattern as given.
        pattern: String,
        /// The regex parser's explanation.
        #[source]
        source: regex::Error,
    },
    /// It matches the empty string, so it would redact every argument.
    #[error("pattern `{0}` matches the empty string, so it would redact every argument")]
    MatchesEmpty(String),
    /// The value holds no pattern at all.
    #[error("empty pattern: give a regular expression such as `^--password=(.+)`")]
    Empty,
}

/// Parses one flag value: comma-separated patterns, each compiled and
/// checked. The error names the pattern.
pub fn parse(value: &str) -> Result<Patterns, PatternError> {
    let parts = split(value);
    if parts.iter().all(|p| p.is_empty()) {
        return Err(PatternError::Empty);
    }
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| compile(&p))
        .collect::<Result<_, _>>()
        .map(Patterns)
}

/// Compiles one pattern, refusing one that matches the empty string.
fn compile(pattern: &str) -> Result<Regex, PatternError> {
    let regex = Regex::new(pattern).map_err(|source| PatternError::Invalid {
        pattern: pattern.to_owned(),
        source,
    })?;
    if regex.is_match("") {
        return Err(PatternError::MatchesEmpty(pattern.to_owned()));
    }
    Ok(regex)
}

/// Splits at the commas that separate patterns (outside `{…}` and `[…]`,
/// not escaped). Parts are trimmed of surrounding whitespace.
fn split(value: &str) -> Vec<String> {
    let (mut parts, mut part) = (Vec::new(), String::new());
    let (mut braces, mut brackets, mut escaped) = (0usize, 0usize, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
        } else {
            match c {
                '\\' => escaped = true,
                '[' => brackets += 1,
                ']' => brackets = brackets.saturating_sub(1),
                '{' if brackets == 0 => braces += 1,
                '}' if brackets == 0 => braces = braces.saturating_sub(1),
                ',' if braces == 0 && brackets == 0 => {
                    parts.push(part.trim().to_owned());
                    part.clear();
                    continue;
                }
                _ => {}
            }
        }
        part.push(c);
    }
    parts.push(part.trim().to_owned());
    parts
}

/// Ready-made pattern sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// `--password=…`-style options and `NAME_PASSWORD=…` assignments,
    /// `--password <secret>`, passwords in URLs, and HTTP
    /// `Authorization:` headers.
    Common,
}

/// The words that make an option or variable name secret in [`Preset::Common`].
const SECRET_WORDS: &str = r"(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)";

impl Preset {
    /// The preset's in-argument patterns and next-argument patterns.
    pub fn patterns(self) -> (Vec<Regex>, Vec<Regex>) {
        // The one preset; a second one makes this a `match`.
        let Preset::Common = self;
        let inside = [
            // --db-password=x, -Dtrust.keyStorePassword=x, API_TOKEN=x
            format!(r"(?i)^-*[a-z0-9_.-]*{SECRET_WORDS}[a-z0-9_.-]*=(.+)$"),
            // postgres://user:x@host/db
            r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:\s]*:([^/?#@\s]+)@".to_owned(),
            // -H 'Authorization: Bearer x'
            r"(?i)\b(?:proxy-)?authorization:\s*(.+)$".to_owned(),
        ];
        // --password x, -client-secret x
        let next = [format!(r"(?i)^--?[a-z0-9_.-]*{SECRET_WORDS}[a-z0-9_.-]*$")];
        let build = |p: &String| compile(p).expect("the preset patterns compile");
        let (inside, next) = (inside.iter().map(build), next.iter().map(build));
        (inside.collect(), next.collect())
    }
}
