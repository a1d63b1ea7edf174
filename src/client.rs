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
    #[error("cannot connect to the agent at {path}: {source}")]
    Connect {
        /// The socket path that was dialled.
        path: PathBuf,
        /// What the transport said.
        #[source]
        source: tonic::transport::Error,
    },
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
        .map_err(|source| ConnectError::Connect { path, source })
}

/// Shorthand for a typed `ExecEvents` client on the socket `path`.
pub async fn exec_events(
    path: impl AsRef<Path>,
) -> Result<ExecEventsClient<Channel>, ConnectError> {
    Ok(ExecEventsClient::new(connect(path).await?))
}
