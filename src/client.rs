//! Connecting to the agent's Unix socket as a gRPC client.
//!
//! tonic dials `unix:` endpoints itself. The `:authority` it sends is set to
//! a plain `localhost`, which every HTTP/2 server accepts.

use std::path::{Path, PathBuf};

use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::exec_events_client::ExecEventsClient;

/// Failure to reach the agent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The HTTP/2 connection over the socket could not be set up.
    #[error("cannot connect to the agent at {path}: {}", error_chain(error))]
    Connect {
        /// The socket path that was dialled.
        path: PathBuf,
        /// What the transport said (its causes are in the message, so it
        /// is not chained again as a source).
        error: tonic::transport::Error,
    },
    /// The path cannot be written as a `unix:` URI.
    #[error("cannot connect to the agent at {path}: the socket path is not valid UTF-8")]
    NotUtf8 {
        /// The socket path.
        path: PathBuf,
    },
}

/// An error and its causes on one line, `outer: cause: root`, each cause
/// once: a cause whose text the line already holds (an error that quotes
/// its source in its own message) is not repeated. Here because tonic's
/// transport error alone says only "transport error", and the cause (no
/// such file, permission denied) is what an operator needs; the binaries
/// report their fatal errors with it too.
#[doc(hidden)]
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    for cause in std::iter::successors(err.source(), |e| e.source()) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Opens a gRPC channel to the agent listening on the Unix socket `path`.
///
/// Connects eagerly, so a missing socket or a refused connection is reported
/// here rather than on the first call.
pub async fn connect(path: impl AsRef<Path>) -> Result<Channel, ConnectError> {
    let path = path.as_ref().to_path_buf();
    let Some(text) = path.to_str() else {
        return Err(ConnectError::NotUtf8 { path });
    };
    // `unix://` then the path as it is: tonic strips exactly that prefix.
    let endpoint = Endpoint::from_shared(format!("unix://{text}"));
    let origin = Uri::from_static("http://localhost");
    match endpoint {
        Ok(endpoint) => endpoint.origin(origin).connect().await,
        Err(error) => Err(error),
    }
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

    /// What `connect` says about `path`, on a runtime of its own.
    fn connect_error(path: &Path) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(connect(path)).unwrap_err().to_string()
    }

    #[test]
    fn a_missing_or_dead_socket_fails_at_connect_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        assert_eq!(
            connect_error(&path),
            format!(
                "cannot connect to the agent at {}: transport error: No such file or directory (os error 2)",
                path.display()
            )
        );
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert_eq!(
            connect_error(&path),
            format!(
                "cannot connect to the agent at {}: transport error: Connection refused (os error 111)",
                path.display()
            )
        );
    }

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

    #[test]
    fn a_path_that_is_not_utf8_is_refused_before_dialling() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/run/agent\xff.sock"));
        assert_eq!(
            connect_error(path),
            "cannot connect to the agent at /run/agent\u{fffd}.sock: the socket path is not valid UTF-8"
        );
    }
}
