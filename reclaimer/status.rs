//! The reclaimer's liveness and readiness, without a port: the running
//! decision loop rewrites a small status file every few seconds, and
//! `reclaimer health-check` (the exec probe) fails when the file is missing
//! or stale, and with `--ready` also while the reclaimer has no stream from
//! the agent.
//!
//! ```text
//! updated_unix=1795408157 agent_connected=true rules=commands=3 ...
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the loop rewrites the file.
pub const PERIOD: Duration = Duration::from_secs(5);

/// Why the health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No readable status file.
    #[error("cannot read the status file {path}: {source} (is the reclaimer running with --status-file?)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not in the expected format.
    #[error("the status file {0} is not a reclaimer status")]
    Format(PathBuf),
    /// Not updated recently: the decision loop is stuck or gone.
    #[error("the status file {path} is {age:?} old (limit {max_age:?}): the reclaimer's loop is not running")]
    Stale {
        /// The file.
        path: PathBuf,
        /// Its age.
        age: Duration,
        /// The limit.
        max_age: Duration,
    },
    /// Fresh, but the reclaimer has no stream from the agent (asked with
    /// `--ready`).
    #[error("the reclaimer is not connected to the agent (status file {0}): it sees no launches")]
    NotConnected(PathBuf),
}

/// Writes the status atomically (write a temporary file, then rename), so a
/// probe never reads half a line.
pub fn write(path: &Path, agent_connected: bool, rules: &str) -> std::io::Result<()> {
    let now = execwatch::internal::clock::unix_ns() / 1_000_000_000;
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("updated_unix={now} agent_connected={agent_connected} rules={rules}\n"),
    )?;
    std::fs::rename(&tmp, path)
}

/// Checks that `path` was updated within `max_age` and, if `ready`, that the
/// reclaimer was streaming from the agent then; returns its contents.
pub fn check(path: &Path, max_age: Duration, ready: bool) -> Result<String, HealthError> {
    let text = std::fs::read_to_string(path).map_err(|source| HealthError::Read {
        path: path.into(),
        source,
    })?;
    let updated: u64 = text
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("updated_unix="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| HealthError::Format(path.into()))?;
    let now = execwatch::internal::clock::unix_ns() / 1_000_000_000;
    let age = Duration::from_secs(now.saturating_sub(updated));
    if age > max_age {
        return Err(HealthError::Stale {
            path: path.into(),
            age,
            max_age,
        });
    }
    if ready
        && !text
            .split_whitespace()
            .any(|kv| kv == "agent_connected=true")
    {
        return Err(HealthError::NotConnected(path.into()));
    }
    Ok(text.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_stale_missing_and_garbled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reclaimer.status");
        assert!(matches!(
            check(&path, PERIOD, false),
            Err(HealthError::Read { .. })
        ));
        write(&path, true, "commands=1").unwrap();
        let text = check(&path, Duration::from_secs(30), true).unwrap();
        assert!(
            text.contains("agent_connected=true rules=commands=1"),
            "{text}"
        );
        // Alive but not ready while there is no stream from the agent.
        write(&path, false, "commands=1").unwrap();
        check(&path, Duration::from_secs(30), false).unwrap();
        assert!(matches!(
            check(&path, Duration::from_secs(30), true),
            Err(HealthError::NotConnected(_))
        ));
        std::fs::write(&path, "updated_unix=1000 agent_connected=false rules=x\n").unwrap();
        assert!(matches!(
            check(&path, Duration::from_secs(30), false),
            Err(HealthError::Stale { .. })
        ));
        std::fs::write(&path, "hello\n").unwrap();
        assert!(matches!(
            check(&path, Duration::from_secs(30), false),
            Err(HealthError::Format(_))
        ));
    }
}
