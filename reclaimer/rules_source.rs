//! Where the rules come from, kept current: the per-node ConfigMap (watched,
//! so an edit takes effect within a second or two), a local file (re-read
//! when it changes), or the embedded demo rules.
//!
//! A document that does not parse never replaces good rules: the error is
//! logged with its line, counted, and shown by the `rules_invalid` gauge
//! until a good document arrives. A missing ConfigMap or key means inert.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::rules::{Rules, DEFAULT_RULES};

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
    /// The built-in demo rules.
    Embedded,
}

/// Error reading the initial rules file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("cannot read the rules file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("the rules file {path} is invalid: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::rules::RulesError,
    },
}

/// Loads the rules file once, strictly (used at start-up, where a bad file
/// is a configuration error, not something to ride out).
pub fn load_file(path: &std::path::Path) -> Result<Rules, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Read {
        path: path.into(),
        source,
    })?;
    Rules::parse(&text).map_err(|source| SourceError::Parse {
        path: path.into(),
        source,
    })
}

/// Sends every new rule set on `tx`, forever.
pub async fn run(source: RulesSource, tx: mpsc::Sender<Rules>, metrics: Arc<Metrics>) {
    let mut feed = Feed { tx, metrics };
    match source {
        RulesSource::Embedded => {
            let rules = Rules::parse(DEFAULT_RULES).expect("the embedded rules parse");
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
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let what = format!("ConfigMap {namespace}/{name}");
            let mut stream = watcher(api, config).default_backoff().boxed();
            let mut seen_in_init = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init) => seen_in_init = false,
                    Ok(watcher::Event::InitApply(cm)) => {
                        seen_in_init = true;
                        feed.document(&what, cm.data.as_ref().and_then(|d| d.get(DATA_KEY)))
                            .await;
                    }
                    Ok(watcher::Event::InitDone) if !seen_in_init => {
                        feed.good(&format!("{what} is absent"), Rules::inert())
                            .await
                    }
                    Ok(watcher::Event::InitDone) => {}
                    Ok(watcher::Event::Apply(cm)) => {
                        feed.document(&what, cm.data.as_ref().and_then(|d| d.get(DATA_KEY)))
                            .await
                    }
                    Ok(watcher::Event::Delete(_)) => {
                        feed.good(&format!("{what} was deleted"), Rules::inert())
                            .await
                    }
                    Err(e) => tracing::warn!("watching {what}: {e}; retrying"),
                }
            }
        }
    }
}

struct Feed {
    tx: mpsc::Sender<Rules>,
    metrics: Arc<Metrics>,
}

impl Feed {
    /// A document (or its absence) from `what`.
    async fn document(&mut self, what: &str, text: Option<&String>) {
        match text {
            None => {
                self.good(&format!("{what} has no {DATA_KEY} key"), Rules::inert())
                    .await
            }
            Some(text) => match Rules::parse(text) {
                Ok(rules) => self.good(what, rules).await,
                Err(e) => self.bad(what, &e),
            },
        }
    }

    async fn good(&mut self, what: &str, rules: Rules) {
        self.metrics.rule_reloads.inc();
        self.metrics.rules_invalid.store(0, Relaxed);
        self.metrics
            .rules_inert
            .store(u64::from(rules.is_inert()), Relaxed);
        tracing::info!(rules = %rules.summary(), "rules loaded from {what}");
        let _ = self.tx.send(rules).await;
    }

    fn bad(&mut self, what: &str, e: &crate::rules::RulesError) {
        self.metrics.rule_errors.inc();
        self.metrics.rules_invalid.store(1, Relaxed);
        tracing::error!(
            line = e.line(),
            "rules in {what} rejected, keeping the last good rules: {e}"
        );
    }
}

async fn watch_file(path: PathBuf, mut feed: Feed) {
    let what = format!("file {}", path.display());
    let mut last = None;
    loop {
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let stamp = (meta.modified().ok(), meta.len());
                if last != Some(stamp) {
                    last = Some(stamp);
                    match std::fs::read_to_string(&path) {
                        Ok(text) => feed.document(&what, Some(&text)).await,
                        Err(e) => {
                            tracing::error!("cannot read {what}: {e}; keeping the last good rules")
                        }
                    }
                }
            }
            Err(e) if last.is_some() => {
                last = None;
                tracing::error!("cannot read {what}: {e}; keeping the last good rules");
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
