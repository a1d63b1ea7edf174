//! The reclaimer's connection to the agent, as a state machine:
//! `Disconnected(backoff)` → connect and `Watch` → `Connected` → stream ends
//! or fails → `Disconnected`. It survives agent restarts forever.
//!
//! It asks for exits too, so the decision loop knows which processes still
//! run. Events go to the decision loop over a bounded channel; if the loop
//! falls behind, this task waits, the agent's queue for us fills, and the
//! agent answers with `lost` + resync — the designed path, nothing silent.

use std::path::PathBuf;
use std::time::Duration;

use execwatch::proto::{WatchEvent, WatchRequest};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// What the link tells the decision loop.
#[derive(Debug)]
pub enum LinkEvent {
    /// A new stream is open; a snapshot follows.
    Connected,
    /// One stream item, in order.
    Event(Box<WatchEvent>),
    /// The stream is gone; what ran before is unknown until the next snapshot.
    Disconnected,
}

/// Runs the link forever (until the receiver is dropped).
pub async fn run(socket: PathBuf, tx: mpsc::Sender<LinkEvent>, metrics: std::sync::Arc<Metrics>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0u64;
    loop {
        match connect(&socket).await {
            Ok(mut stream) => {
                tracing::info!(socket = %socket.display(), "connected to the agent");
                backoff.reset();
                failures = 0;
                if tx.send(LinkEvent::Connected).await.is_err() {
                    return;
                }
                let mut expected = 1;
                let why = loop {
                    match stream.message().await {
                        Ok(Some(ev)) => {
                            if ev.seq != expected {
                                // The agent never leaves holes; if it did, do
                                // not trust this stream.
                                break format!(
                                    "sequence jumped from {} to {}",
                                    expected - 1,
                                    ev.seq
                                );
                            }
                            expected += 1;
                            if tx.send(LinkEvent::Event(Box::new(ev))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "the agent closed the stream".to_string(),
                        Err(status) => break format!("the stream failed: {status}"),
                    }
                };
                metrics.reconnects.inc();
                tracing::warn!("lost the agent stream ({why}); reconnecting");
                if tx.send(LinkEvent::Disconnected).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                // Say it loudly once, then quietly while it stays down.
                if failures == 1 {
                    tracing::warn!("cannot reach the agent: {e}; retrying with backoff");
                } else {
                    tracing::debug!("still cannot reach the agent: {e}");
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn connect(socket: &std::path::Path) -> Result<tonic::Streaming<WatchEvent>, String> {
    let mut client = execwatch::client::exec_events(socket)
        .await
        .map_err(|e| e.to_string())?;
    let req = WatchRequest {
        include_exits: true,
        skip_snapshot: false,
    };
    Ok(client
        .watch(req)
        .await
        .map_err(|s| s.to_string())?
        .into_inner())
}
