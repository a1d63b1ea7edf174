//! Connecting to the agent's Unix socket as a gRPC client.
//!
//! tonic's channel speaks HTTP/2 over any connector; here the connector
//! ignores the URI and dials the socket path. The URI's authority becomes the
//! `:authority` header, so it is a plain `localhost` that every HTTP/2 server
//! accepts.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::proto::exec_events_client::ExecEventsClient;

/// Failure to reach the agent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The HTTP/2 connection over the socket could not be set up.
    #[error("cannot connect to the agent at {path}: {}", chain(error))]
    Connect {
        /// The socket path that was dialled.
        path: PathBuf,
        /// What the transport said (its causes are in the message, so it
        /// is not chained again as a source).
        error: tonic::transport::Error,
    },
}

/// The error and its causes on one line: tonic's transport error alone says
/// only "transport error", the cause (no such file, permission denied) is
/// what an operator needs.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut last = text.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        // Wrappers often repeat their cause's message; say it once.
        let this = c.to_string();
        if this != last {
            text.push_str(": ");
            text.push_str(&this);
        }
        last = this;
        cause = c.source();
    }
    text
}

/// Opens a gRPC channel to the agent listening on the Unix socket `path`.
///
/// Connects eagerly, so a missing socket or a refused connection is reported
/// here rather than on the first call.
pub async fn connect(path: impl AsRef<Path>) -> Result<Channel, ConnectError> {
    let path = path.as_ref().to_path_buf();
    let dial = path.clone();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let dial = dial.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(dial).await?)) }
        }))
        .await
        .map_err(|error| ConnectError::Connect { path, error })
}

/// Shorthand for a typed `ExecEvents` client on the socket `path`.
pub async fn exec_events(
    path: impl AsRef<Path>,
) -> Result<ExecEventsClient<Channel>, ConnectError> {
    Ok(ExecEventsClient::new(connect(path).await?))
}

/// Longest Unix socket path, in bytes: `sun_path` holds 108 bytes with the
/// terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Checks a socket path from the command line: it must fit in a Unix socket
/// address, or no connect or bind on it can ever work.
pub fn socket_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the socket path is empty".into());
    }
    if s.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "the socket path is {} bytes long; a Unix socket path holds at most {MAX_SOCKET_PATH}",
            s.len()
        ));
    }
    Ok(PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_fit_in_sun_path() {
        let longest = format!("/{}", "s".repeat(MAX_SOCKET_PATH - 1));
        assert_eq!(socket_path(&longest), Ok(PathBuf::from(&longest)));
        let err = socket_path(&format!("{longest}x")).unwrap_err();
        assert!(err.contains("108 bytes long"), "{err}");
        assert!(err.contains("at most 107"), "{err}");
        assert!(socket_path("").is_err());
    }
}
