//! Admitting connections on the agent's socket: who, how many, and how
//! quickly they must speak.
//!
//! One task accepts. A peer refused by `--allow-uid` is closed at once,
//! before any HTTP/2. A peer over its share of connections
//! (`--max-connections`, `--max-connections-per-uid`) is closed at once too;
//! the agent's own uid (its health probe) is exempt from both counts. A
//! connection that has not finished its HTTP/2 preface 5 s after it was
//! accepted (one that sends nothing included), or stays with no stream open
//! for `--idle-timeout`, is closed by its [`Connection`] (see
//! the [`h2_shim`](super::h2_shim)). Admitted connections reach tonic through a
//! channel.
//!
//! tonic's own loop only traces an `accept` error and tries again at once:
//! when the agent is out of descriptors the pending connection stays in the
//! backlog, the listener stays readable, and that loop takes a whole core
//! while the agent says nothing. Here an error is logged once, retried
//! after a growing pause (up to [`MAX_PAUSE`]), and the recovery is logged
//! with how many attempts failed.

use std::io;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::transport::h2_shim::Connection;
use crate::transport::peer::PeerCheck;
use crate::transport::quota::{Over, Quota};

/// The first pause after a failed `accept`.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Whom the socket admits and how much it serves at once (the subscribers
/// in total and per peer uid are the `ExecEvents` service's own seats).
pub struct Limits {
    /// The uid allow-list, also applied to every request.
    pub peers: PeerCheck,
    /// Connections open at once, all peers but the agent's own uid.
    pub max_connections: usize,
    /// Connections one peer uid may have open at once.
    pub max_per_uid: usize,
    /// How long an admitted connection may stay with no stream open.
    pub idle_timeout: Duration,
    /// HTTP/2 streams one connection may have open.
    pub streams_per_connection: u32,
    /// The socket file's mode.
    pub mode: u32,
}

/// The connections admitted on `listener`, for tonic's server. Accepting
/// stops when the stream is dropped (the server stops).
pub fn incoming(listener: UnixListener, limits: Limits) -> ReceiverStream<io::Result<Connection>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let own_uid = Some(nix::unistd::geteuid().as_raw());
        let quota = Quota::new(limits.max_connections, limits.max_per_uid);
        let (mut pause, mut failures) = (FIRST_PAUSE, 0u64);
        let mut over_limit = 0u64;
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let stream = match stream {
                Ok((stream, _)) => stream,
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!("cannot accept a connection: {error}; retrying with a pause of up to {MAX_PAUSE:?}");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    continue;
                }
            };
            if failures > 0 {
                tracing::info!(failed_attempts = failures, "accepting connections again");
                (pause, failures) = (FIRST_PAUSE, 0);
            }
            let cred = stream.peer_cred().ok();
            let uid = cred.map(|cred| cred.uid());
            if !limits.peers.admits(uid, cred.and_then(|cred| cred.pid())) {
                continue;
            }
            // The agent's own uid (its health probe) takes no place.
            let place = match (uid != own_uid).then(|| quota.take(uid)).transpose() {
                Ok(place) => place,
                Err(over) => {
                    let why = match over {
                        Over::Total(n) => format!("{n} connections are open (--max-connections)"),
                        Over::PerUid(n) => {
                            format!("this uid has {n} connections open (--max-connections-per-uid)")
                        }
                    };
                    // Said once per run of refusals, not per connection.
                    over_limit += 1;
                    if over_limit == 1 {
                        tracing::warn!(peer_uid = uid, "closing new connections: {why}");
                    }
                    continue;
                }
            };
            if over_limit > 0 {
                tracing::info!(closed = over_limit, "connections admitted again");
                over_limit = 0;
            }
            match Connection::new(stream, limits.idle_timeout, place) {
                Ok(conn) => {
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("cannot take over an accepted connection: {e}"),
            }
        }
    });
    ReceiverStream::new(rx)
}
