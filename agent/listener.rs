//! Accepting connections on the agent's socket without spinning.
//!
//! tonic's own loop only traces an `accept` error and tries again at once.
//! When the agent is out of descriptors the pending connection stays in the
//! backlog, the listener stays readable, and that loop takes a whole core
//! while the agent says nothing. Here an error is logged once, retried after
//! a growing pause (up to [`MAX_PAUSE`]), and the recovery is logged with
//! how many attempts failed.

use std::io;
use std::time::Duration;

use futures::Stream;
use tokio::net::UnixListener;

use crate::connection::Connection;

/// The first pause after a failed `accept`.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The listener's state between accepted connections.
struct Acceptor {
    listener: UnixListener,
    pause: Duration,
    failures: u64,
}

/// The connections accepted on `listener`. Never yields an error: tonic
/// would only drop it.
pub fn incoming(listener: UnixListener) -> impl Stream<Item = io::Result<Connection>> {
    let acceptor = Acceptor {
        listener,
        pause: FIRST_PAUSE,
        failures: 0,
    };
    futures::stream::unfold(acceptor, |mut a| async move {
        loop {
            let error = match a.listener.accept().await {
                Ok((stream, _)) => match Connection::new(stream) {
                    Ok(conn) => {
                        if a.failures > 0 {
                            tracing::info!(
                                failed_attempts = a.failures,
                                "accepting connections again"
                            );
                        }
                        a.pause = FIRST_PAUSE;
                        a.failures = 0;
                        return Some((Ok(conn), a));
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            a.failures += 1;
            if a.failures == 1 {
                tracing::warn!("cannot accept a connection: {error}; retrying with a pause of up to {MAX_PAUSE:?}");
            }
            tokio::time::sleep(a.pause).await;
            a.pause = (a.pause * 2).min(MAX_PAUSE);
        }
    })
}
