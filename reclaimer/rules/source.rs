//! Where the rules come from, kept current: the per-node ConfigMap (watched,
//! so an edit takes effect within a second or two), a local file (re-read
//! when it changes), or the embedded demo rules.
//!
//! A document that does not parse never replaces good rules: the error is
//! logged with its line, counted, and shown by the `rules_invalid` gauge
//! until a good document arrives.
//!
//! No document at all (the ConfigMap absent, deleted, without the
//! `reclaim.toml` key, or that key blank; a rules file emptied or removed)
//! means no rules: the node is disarmed. That is 5-Spot's contract: its
//! controller deletes `reclaim-agent-<node>` when the user empties
//! `killIfCommands`, and its own agent goes idle on it. The reclaimer warns,
//! naming the rules it dropped, and sets the `rules_missing` gauge.
//! `--keep-rules-when-missing` keeps the rules in force instead (for a
//! cluster where deletions are more often accidents than decisions; 5-Spot's
//! disarm then needs `match_commands = []` or the pod's removal).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use execwatch::proto::WatchRequest;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::rules::{Rules, MAX_DOCUMENT_BYTES};

/// The ConfigMap data key holding the rules.
pub const DATA_KEY: &str = "reclaim.toml";

/// A source of rules.
pub enum RulesSource {
    /// The ConfigMap `name` in `namespace`.
    ConfigMap {
        /// API client.
        client: kube::Client,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A TOML file, re-read when its modification time or size changes.
    File(PathBuf),
    /// The built-in demo rules, parsed.
    Embedded(Rules),
}

/// Sends every new rule set on `tx`, and its selector on `selector`,
/// forever. Without a document, the rules in force are dropped (the node
/// is disarmed: 5-Spot's contract) unless `keep_rules_when_missing`
/// (`--keep-rules-when-missing`) keeps them until a document arrives again.
pub async fn run(
    source: RulesSource,
    keep_rules_when_missing: bool,
    tx: mpsc::Sender<Rules>,
    selector: watch::Sender<WatchRequest>,
    metrics: Arc<Metrics>,
) {
    let mut feed = Feed {
        tx,
        selector,
        metrics,
        keep_rules_when_missing,
        in_force: None,
        warned: HashSet::new(),
        key: matches!(source, RulesSource::ConfigMap { .. }).then_some(DATA_KEY),
    };
    match source {
        RulesSource::Embedded(rules) => {
            feed.good("embedded demo rules", rules).await;
            std::future::pending::<()>().await;
        }
        RulesSource::File(path) => watch_file(path, feed).await,
        RulesSource::ConfigMap {
            client,
            namespace,
            name,
        } => {
            let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
            let what = format!("ConfigMap {namespace}/{name}");
            // Some(ConfigMap) when it is found or changes, None when it is
            // deleted or a (re-)list does not find it.
            let mut stream = watcher::watch_object(api, &name).default_backoff().boxed();
            // Whether the last news was the ConfigMap itself: its absence
            // then is a deletion.
            let mut seen = false;
            while let Some(news) = stream.next().await {
                match news {
                    Ok(Some(cm)) => {
                        seen = true;
                        feed.document(&what, cm.data.as_ref().and_then(|d| d.get(DATA_KEY)))
                            .await;
                    }
                    Ok(None) if std::mem::take(&mut seen) => {
                        feed.missing(&what, "was deleted").await
                    }
                    Ok(None) => feed.missing(&what, "is absent").await,
                    Err(e) => tracing::warn!("watching {what}: {e}; retrying"),
                }
            }
        }
    }
}

struct Feed {
    tx: mpsc::Sender<Rules>,
    /// The link subscribes with the selector of the rules in force.
    selector: watch::Sender<WatchRequest>,
    metrics: Arc<Metrics>,
    /// `--keep-rules-when-missing`: keep the rules in force without a
    /// document, instead of disarming.
    keep_rules_when_missing: bool,
    /// Summary of the rules from a document in force; `None` while the
    /// decision loop holds no such rules (at start, or after a disarm).
    in_force: Option<String>,
    /// The `match_exe_paths` entries already warned about.
    warned: HashSet<String>,
    /// The ConfigMap data key the documents come from; `None` for a file.
    key: Option<&'static str>,
}

impl Feed {
    /// A document (or its absence) from `what`.
    async fn document(&mut self, what: &str, text: Option<&String>) {
        match text {
            None => self.missing(what, &format!("has no {DATA_KEY} key")).await,
            // A huge document is refused as too large by the parser, even
            // if what was read of it is only comments.
            Some(text) if text.len() <= MAX_DOCUMENT_BYTES && is_blank(text) => {
                let why = match self.key {
                    Some(key) => format!("has an empty {key} (no key set)"),
                    None => "is empty (no key set)".to_owned(),
                };
                self.missing(what, &why).await
            }
            Some(text) => match Rules::parse(text) {
                Ok(rules) => self.good(what, rules).await,
                Err(e) => self.refused(
                    e.line(),
                    format_args!("rules in {what} rejected, keeping the last good rules: {e}"),
                ),
            },
        }
    }

    /// `what` holds no rules document: disarm, or keep the rules in force
    /// with `--keep-rules-when-missing`. Not a reload: no rule set was loaded.
    async fn missing(&mut self, what: &str, why: &str) {
        // No document is not an invalid one.
        self.metrics.rules_invalid.set(0);
        self.metrics.rules_missing.set(1);
        match self.in_force.take() {
            Some(rules) if self.keep_rules_when_missing => {
                tracing::warn!(
                    rules = %rules,
                    "{what} {why}: keeping the rules in force until it holds rules again \
                     (--keep-rules-when-missing; to disarm this node, set match_commands = []; \
                     a restarted reclaimer starts without them)"
                );
                self.in_force = Some(rules);
            }
            // Disarm: 5-Spot's contract.
            Some(rules) => {
                tracing::warn!(
                    dropped = %rules,
                    "{what} {why}: rules dropped; this node is not armed until it holds rules again"
                );
                self.apply(Rules::inert()).await;
            }
            // The decision loop holds no rules from a document: inert already.
            None => tracing::warn!("{what} {why}: no rules yet; this node is not armed"),
        }
    }

    async fn good(&mut self, what: &str, rules: Rules) {
        self.metrics.rule_reloads.inc();
        self.metrics.rules_invalid.set(0);
        self.metrics.rules_missing.set(0);
        let summary = rules.summary();
        tracing::info!(rules = %summary, "rules loaded from {what}");
        for (path, why) in rules.exe_paths_through_links() {
            if self.warned.insert(path.to_string()) {
                self.metrics.exe_path_warnings.inc();
                tracing::warn!(
                    path,
                    "match_exe_paths entry {path} probably never matches: {why}, and a process's exe \
                     is the path the kernel resolved; match the launcher with match_commands or \
                     match_argv_substrings instead (docs/rules.md)"
                );
            }
        }
        self.in_force = Some(summary);
        self.apply(rules).await;
    }

    /// Puts `rules` in force: the one place that hands rules to the decision
    /// loop, and so the one that sets `rules_inert`. Their selector goes to
    /// the link, which re-subscribes when it changes (only then: a re-read of
    /// the same rules costs the agent nothing).
    async fn apply(&mut self, rules: Rules) {
        self.metrics.rules_inert.set(i64::from(rules.is_inert()));
        let next = rules.selector();
        self.selector.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
        let _ = self.tx.send(rules).await;
    }

    /// A document that does not parse (`line` says where), or a rules file
    /// that is not one the reclaimer reads (a FIFO, a device, a directory,
    /// too large): the last good rules stay.
    fn refused(&mut self, line: Option<usize>, message: std::fmt::Arguments<'_>) {
        self.metrics.rule_errors.inc();
        self.metrics.rules_invalid.set(1);
        self.metrics.rules_missing.set(0);
        tracing::error!(line, "{message}");
    }
}

/// True if `text` sets no key: only blank lines and comments. Such a
/// document is treated as no document.
fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

/// Why a rules file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It is not there, or may not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Something other than a regular file is there.
    #[error("{0} is not a regular file; refusing to read it")]
    NotAFile(&'static str),
    /// The file is larger than a rules document may be.
    #[error(
        "the file is {0} bytes long, at most {MAX_DOCUMENT_BYTES} are allowed; refusing to read it"
    )]
    TooLarge(u64),
}

/// Reads a rules file, at most [`MAX_DOCUMENT_BYTES`] + 1 bytes of it, so
/// that a huge file is refused by [`Rules::parse`] without being read whole.
///
/// Opened without blocking and checked before any read: a FIFO (or a
/// device) swapped in at the path must not hang the reclaimer's only
/// thread in `open` or `read`.
pub fn read_capped(path: &std::path::Path) -> Result<String, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if kind.is_file() && meta.len() > MAX_DOCUMENT_BYTES as u64 {
        return Err(ReadError::TooLarge(meta.len()));
    }
    if !kind.is_file() {
        let kinds = [
            (kind.is_fifo(), "a FIFO"),
            (kind.is_dir(), "a directory"),
            (kind.is_socket(), "a socket"),
        ];
        let name = kinds
            .iter()
            .find(|(is, _)| *is)
            .map_or("a device", |(_, name)| name);
        return Err(ReadError::NotAFile(name));
    }
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        // Cut anywhere, perhaps inside a character: only its size matters.
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    String::from_utf8(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()).into())
}

async fn watch_file(path: PathBuf, mut feed: Feed) {
    let what = format!("file {}", path.display());
    let mut last = None;
    loop {
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let stamp = (meta.modified().ok(), meta.len());
                if last.replace(stamp) != Some(stamp) {
                    match read_capped(&path) {
                        Ok(text) => feed.document(&what, Some(&text)).await,
                        Err(ReadError::NotAFile(kind)) => feed.refused(None, format_args!("{what} refused, keeping the last good rules: it is {kind}, not a regular file")),
                        Err(e @ ReadError::TooLarge(_)) => feed.refused(None, format_args!("{what} refused, keeping the last good rules: {e}")),
                        Err(e) => feed.missing(&what, &format!("cannot be read ({e})")).await,
                    }
                }
            }
            Err(e) if last.take().is_some() => {
                feed.missing(&what, &format!("cannot be read ({e})")).await
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests;
