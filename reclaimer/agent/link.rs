//! The reclaimer's connection to the agent, as a state machine:
//! `Disconnected(backoff)` → connect and `Watch` → `Connected` → stream ends
//! or fails → `Disconnected`. It survives agent restarts forever.
//!
//! It asks for exits too, so the decision loop knows which processes still
//! run. Events go to the decision loop over a bounded channel; if the loop
//! falls behind, this task waits, the agent's queue for us fills, and the
//! agent answers with `lost` + resync — the designed path, nothing silent.
//!
//! While connected it also reads the agent's `GetStats` every
//! [`stats::POLL`] on the same connection, for the metrics.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use execwatch::proto::exec_events_client::ExecEventsClient;
use execwatch::proto::{StatsRequest, WatchEvent, WatchRequest};
use kube::runtime::utils::Backoff as _;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::agent::stats::{self, AgentStats};
use crate::metrics::Metrics;
use crate::node::retry;

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
pub async fn run(socket: PathBuf, tx: mpsc::Sender<LinkEvent>, metrics: Arc<Metrics>) {
    // Waits from 50-100 ms up to 2.5-5 s.
    let mut backoff = retry::backoff(Duration::from_millis(50), Duration::from_millis(2500));
    let mut failures = 0u64;
    loop {
        match connect(&socket).await {
            Ok((client, mut stream)) => {
                tracing::info!(socket = %socket.display(), "connected to the agent");
                let stats = PollStats(tokio::spawn(poll_stats(client, metrics.agent.clone())));
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
                drop(stats);
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
        tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
    }
}

type Client = ExecEventsClient<Channel>;

async fn connect(
    socket: &std::path::Path,
) -> Result<(Client, tonic::Streaming<WatchEvent>), String> {
    let mut client = execwatch::client::exec_events(socket)
        .await
        .map_err(|e| e.to_string())?;
    let req = WatchRequest {
        include_exits: true,
        skip_snapshot: false,
    };
    let stream = client
        .watch(req)
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    Ok((client, stream))
}

/// The stats poller of one connection: stopped, and the agent's counters
/// forgotten, when the connection ends (this is dropped).
struct PollStats(tokio::task::JoinHandle<()>);

impl Drop for PollStats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the agent's counters now and every [`stats::POLL`]. A failed
/// read forgets them (the stream's own end says why the agent is gone).
async fn poll_stats(mut client: Client, stats: Arc<AgentStats>) {
    let _forget = Forget(stats.clone());
    let mut tick = tokio::time::interval(stats::POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(STATS_TIMEOUT, client.get_stats(StatsRequest {})).await {
            Ok(Ok(reply)) => stats.set(reply.into_inner()),
            Ok(Err(status)) => {
                tracing::debug!("GetStats failed: {status}");
                stats.clear();
            }
            Err(_) => {
                tracing::debug!("GetStats took longer than {STATS_TIMEOUT:?}");
                stats.clear();
            }
        }
    }
}

/// How long one `GetStats` may take.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Clears the agent's counters when the poller ends, aborted included.
struct Forget(Arc<AgentStats>);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.clear();
    }
}
