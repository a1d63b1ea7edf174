//! Process plumbing both binaries share: log set-up, the one-line report of
//! a fatal error, the shutdown signal, and how a lock is taken.

use std::sync::{Mutex, MutexGuard};

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
///
/// In JSON each line is one object with `timestamp`, `level`, `target`,
/// `message` and the event's own fields at the top level, numbers and
/// booleans as JSON numbers and booleans, so a log tool indexes them without
/// digging into a nested `fields` object.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a pod's log is a file, read by people
    // with grep and by collectors that keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// An error and its causes on one line, each cause once.
pub use crate::client::error_chain;

/// Locks `m`. A panic elsewhere leaves plain values behind (every state
/// behind these locks is written whole or counted), still usable: the
/// poison is ignored rather than spread.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs SIGTERM and SIGINT handlers now and returns a future that
/// completes when either arrives. Call it before the process announces
/// itself (binds its socket): until the handlers exist, SIGTERM would kill it
/// without cleanup. Must be called inside a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        /// Quotes its source.
        #[error("cannot open the socket: {0}")]
        Quoting(#[source] std::io::Error),
        /// Leaves its source to the chain.
        #[error("cannot start")]
        Silent(#[source] std::io::Error),
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::from_raw_os_error(1);
        let quoting = Outer::Quoting(io());
        assert_eq!(
            error_chain(&quoting),
            format!("cannot open the socket: {}", io())
        );
        let silent = Outer::Silent(io());
        assert_eq!(error_chain(&silent), format!("cannot start: {}", io()));
    }
}
