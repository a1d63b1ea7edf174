//! The Unix socket and everything served on it: `ExecEvents`, gRPC health
//! and reflection (v1 and v1alpha, so grpcurl 1.8 works), all behind the
//! peer check.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use execwatch::proto::exec_events_server::{ExecEvents, ExecEventsServer};
use execwatch::proto::FILE_DESCRIPTOR_SET;
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch};
use tonic_health::ServingStatus;

use tonic::service::interceptor::InterceptorLayer;
use tonic::transport::Server;

use crate::transport::admission::{self, Limits};

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A file-system step failed: creating the socket's directory,
    /// removing a stale socket, bind(2) or chmod.
    #[error("cannot {step}: {source}")]
    Io {
        /// The step, with the path it was taken on.
        step: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file that is not a directory sits where the socket's directory
    /// (or one of its parents) should be.
    #[error("cannot create the socket {socket}: {path} exists and is not a directory")]
    NotADirectory {
        /// The socket.
        socket: PathBuf,
        /// The file in the way.
        path: PathBuf,
    },
    /// The agent may not create files in the socket's directory.
    #[error("cannot create the socket {path}: the directory {dir} is not writable by uid {uid} ({source})")]
    NotWritable {
        /// The socket.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// The agent's uid.
        uid: u32,
        /// Why (permission denied, read-only file system).
        #[source]
        source: io::Error,
    },
    /// Another process answers on the socket path.
    #[error("another agent is serving {0}; stop it first, or choose another --socket")]
    InUse(PathBuf),
    /// Something that is not a socket sits at the socket path.
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// Reflection could not be built from the embedded descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The gRPC server stopped without being asked to.
    #[error("the gRPC server stopped unexpectedly")]
    Ended,
}

/// Binds `path` with file mode `mode`, replacing a stale socket (one nobody
/// answers on) and refusing a live one. The path's length was checked with
/// the command line (`execwatch::client::socket_path`), the only caller.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, ServeError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        // The nearest existing ancestor must be a directory; create_dir_all
        // would only say "File exists" or "Not a directory".
        let existing = dir.ancestors().find(|a| fs::metadata(a).is_ok());
        if let Some(existing) = existing.filter(|a| !a.is_dir()) {
            return Err(ServeError::NotADirectory {
                socket: path.into(),
                path: existing.into(),
            });
        }
        fs::create_dir_all(dir).map_err(io_step("create the socket directory", dir))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A live socket answers; taking it over would leave its agent's
            // subscribers on an orphan.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::InUse(path.into()));
            }
            fs::remove_file(path).map_err(io_step("remove the stale socket", path))?
        }
        Ok(_) => return Err(ServeError::NotASocket(path.into())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| match source.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            ServeError::NotWritable {
                path: path.into(),
                dir: dir.unwrap_or(Path::new(".")).into(),
                uid: nix::unistd::getuid().as_raw(),
                source,
            }
        }
        _ => io_step("listen on", path)(source),
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_step(format!("set mode {mode:o} on"), path))?;
    Ok(listener)
}

/// The error of file-system `step` on `path` (see [`ServeError::Io`]).
fn io_step(step: impl std::fmt::Display, path: &Path) -> impl FnOnce(io::Error) -> ServeError {
    let step = format!("{step} {}", path.display());
    |source| ServeError::Io { step, source }
}

/// How long open connections get to take their last words once the agent
/// stops; a client that does not read is not waited for longer.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// Why serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM or SIGINT.
    Signal,
    /// The detector failed: the agent is blind and must not pretend otherwise.
    DetectorFailed(String),
}

/// Installs the signal handlers, binds `path` (see [`bind`]) and serves
/// `exec_events` and the other services on it until SIGTERM or SIGINT, or
/// the detector's failure (`failed`), then stops at once: health says
/// NOT_SERVING, the socket is removed, every open `Watch` ends with
/// UNAVAILABLE, and connections get [`STOP_GRACE`] to close (a second
/// signal cuts even that short).
pub async fn serve<S: ExecEvents>(
    path: &Path,
    exec_events: S,
    limits: Limits,
    failed: oneshot::Receiver<String>,
    streams_end: watch::Sender<bool>,
) -> Result<StopReason, ServeError> {
    // Before bind: no client finds the socket before SIGTERM is handled.
    let signal = execwatch::internal::shutdown::shutdown_signal();
    let listener = bind(path, limits.mode)?;
    // The mode in octal, as chmod and ls write it: JSON has no octal
    // numbers, and 432 would be read as a mode by nobody. The uids as the
    // flag takes them: tracing records scalars only, not lists.
    let listed = &limits.peers.listed;
    let allow_uid: Vec<String> = listed.iter().map(u32::to_string).collect();
    tracing::info!(
        socket = %path.display(),
        mode = format!("{:04o}", limits.mode),
        allow_uid = allow_uid.join(","),
        peer_check = !listed.is_empty(),
        "serving"
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ExecEventsServer<S>>().await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };

    let mut drain = streams_end.subscribe();
    // The peer check wraps every service, and paths no service serves.
    let server = Server::builder()
        .max_concurrent_streams(limits.streams_per_connection)
        .layer(InterceptorLayer::new(limits.peers.clone()))
        .add_service(ExecEventsServer::new(exec_events))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .serve_with_incoming_shutdown(admission::incoming(listener, limits), async {
            let _ = drain.wait_for(|end| *end).await;
        });
    tokio::pin!(server);
    let why = tokio::select! {
        result = &mut server => {
            let _ = fs::remove_file(path);
            result?;
            // The server never ends on its own without an error.
            return Err(ServeError::Ended);
        }
        _ = signal => StopReason::Signal,
        Ok(why) = failed => StopReason::DetectorFailed(why),
    };
    match &why {
        StopReason::Signal => tracing::info!("stopping: ending every stream"),
        StopReason::DetectorFailed(e) => {
            tracing::error!("stopping: the detector failed ({e}); ending every stream")
        }
    }
    // In this order: probes see NOT_SERVING, no new client finds the
    // socket, then the streams end with a status their clients understand.
    health.set_not_serving::<ExecEventsServer<S>>().await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let _ = fs::remove_file(path);
    // Also tells the server to stop accepting and drain.
    let _ = streams_end.send(true);
    let second = execwatch::internal::shutdown::shutdown_signal();
    tokio::select! {
        result = &mut server => result?,
        _ = tokio::time::sleep(STOP_GRACE) => {
            tracing::warn!("connections still open after {STOP_GRACE:?} (clients that do not read); closing them");
        }
        _ = second => tracing::info!("second signal: exiting now"),
    }
    Ok(why)
}
