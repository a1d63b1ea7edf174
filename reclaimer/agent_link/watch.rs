//! The reclaimer's connection to the agent, as a state machine:
//! `Disconnected(backoff)` → connect and `Watch` → `Connected` → stream ends
//! or fails → `Disconnected`. It survives agent restarts forever.
//!
//! It asks for exits too, so the decision loop knows which processes still
//! run, and only for the processes the rules could match: the rules'
//! selector ([`Rules::selector`](crate::rules::Rules::selector)), which it
//! is handed on a watch channel. When the rules change, it re-subscribes
//! without a gap (see [`switch`]). Events go to the decision loop over a
//! bounded channel; if the loop falls behind, this task waits, the agent's
//! queue for us fills, and the agent answers with `lost` + resync — the
//! designed path, nothing silent.
//!
//! While connected it also reads the agent's `GetStats` every
//! [`agent_metrics::POLL`] on the same connection, for the metrics.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use execwatch::proto::exec_events_client::ExecEventsClient;
use execwatch::proto::{watch_event::Kind, StatsRequest, WatchEvent, WatchRequest};
use kube::runtime::utils::Backoff as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::agent_link::agent_metrics::{self, AgentStats};
use crate::backoff;
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

/// Runs the link forever (until the receiver is dropped), subscribing with
/// the latest of `selectors`.
pub async fn run(
    socket: PathBuf,
    tx: mpsc::Sender<LinkEvent>,
    metrics: Arc<Metrics>,
    agent_stats: Arc<AgentStats>,
    mut selectors: watch::Receiver<WatchRequest>,
) {
    // Waits from 50-100 ms up to 2.5-5 s.
    let mut backoff = backoff::exponential(Duration::from_millis(50), Duration::from_millis(2500));
    let mut failures = 0u64;
    loop {
        let req = request(&mut selectors);
        let opened = async {
            let mut client = execwatch::client::exec_events(&socket).await?;
            let stream = watch(&mut client, req).await?;
            Ok::<_, LinkError>((client, stream))
        };
        match opened.await {
            Ok((client, stream)) => {
                tracing::info!(socket = %socket.display(), "connected to the agent");
                // The stats poller of this connection: a JoinSet aborts it
                // when dropped, on every way out of the connection.
                let mut stats = JoinSet::new();
                stats.spawn(poll_stats(client.clone(), agent_stats.clone()));
                backoff.reset();
                failures = 0;
                let Err(why) = follow(client, stream, &tx, &mut selectors).await;
                if let LinkError::Gone(_) = why {
                    return;
                }
                // Aborted, the poller is never polled again (the reclaimer's
                // runtime has one thread): nothing sets the agent's counters
                // after they are forgotten here.
                drop(stats);
                agent_stats.clear();
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

/// Feeds the decision loop from a new connection's `stream`, re-subscribing
/// on `client` when the selector changes, until the stream fails.
async fn follow(
    client: Client,
    stream: Stream,
    tx: &mpsc::Sender<LinkEvent>,
    selectors: &mut watch::Receiver<WatchRequest>,
) -> Result<Infallible, LinkError> {
    tx.send(LinkEvent::Connected).await?;
    let mut current = Current {
        stream,
        expected: 1,
    };
    loop {
        tokio::select! {
            msg = current.stream.message() => {
                tx.send(LinkEvent::Event(Box::new(current.accept(msg)?))).await?;
            }
            Ok(()) = selectors.changed() => {
                switch(client.clone(), request(selectors), &mut current, tx).await?;
            }
        }
    }
}

/// Why the link lost, or could not open, its stream; the link then
/// reconnects after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket could not be dialled.
    #[error(transparent)]
    Connect(#[from] execwatch::client::ConnectError),
    /// The agent refused the `Watch`.
    #[error("{0}")]
    Refused(#[from] tonic::Status),
    /// An item's `seq` was not the next one: the stream cannot be trusted.
    #[error("sequence jumped from {after} to {got}")]
    SequenceJump {
        /// The last `seq` received.
        after: u64,
        /// The one that came instead of `after + 1`.
        got: u64,
    },
    /// The agent ended the stream.
    #[error("the agent closed the stream")]
    Closed,
    /// The stream failed.
    #[error("the stream failed: {0}")]
    Failed(tonic::Status),
    /// The new stream for new rules could not be opened, or failed before
    /// its first item.
    #[error("re-subscribing failed: {0}")]
    Resubscribe(Box<LinkError>),
    /// The decision loop is gone (the reclaimer is stopping): the link ends.
    #[error("the decision loop is gone")]
    Gone(#[from] mpsc::error::SendError<LinkEvent>),
}

type Client = ExecEventsClient<Channel>;
type Stream = tonic::Streaming<WatchEvent>;

/// The request for the latest selector: exits too, and a snapshot.
fn request(selectors: &mut watch::Receiver<WatchRequest>) -> WatchRequest {
    WatchRequest {
        include_exits: true,
        skip_snapshot: false,
        ..selectors.borrow_and_update().clone()
    }
}

/// Opens a stream for `req`. A selector the agent refuses (one this build
/// thinks valid and the agent does not) must not leave the reclaimer
/// blind: it subscribes to every process instead, which the rules then
/// sift as before selectors.
async fn watch(client: &mut Client, req: WatchRequest) -> Result<Stream, LinkError> {
    match client.watch(req.clone()).await {
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            tracing::warn!(
                "the agent refused the rules' selector ({}); subscribing to every process instead",
                status.message()
            );
            let every = WatchRequest {
                include_exits: req.include_exits,
                skip_snapshot: req.skip_snapshot,
                ..Default::default()
            };
            Ok(client.watch(every).await?.into_inner())
        }
        other => Ok(other?.into_inner()),
    }
}

/// The stream the decision loop is fed from, and the `seq` it expects next.
struct Current {
    stream: Stream,
    expected: u64,
}

impl Current {
    /// The next item, if it is one in order.
    fn accept(
        &mut self,
        msg: Result<Option<WatchEvent>, tonic::Status>,
    ) -> Result<WatchEvent, LinkError> {
        match msg {
            Ok(Some(ev)) if ev.seq == self.expected => {
                self.expected += 1;
                Ok(ev)
            }
            // The agent never leaves holes; if it did, do not trust this
            // stream.
            Ok(Some(ev)) => Err(LinkError::SequenceJump {
                after: self.expected - 1,
                got: ev.seq,
            }),
            Ok(None) => Err(LinkError::Closed),
            Err(status) => Err(LinkError::Failed(status)),
        }
    }
}

/// How long the old stream is read after the new one's first item while it
/// still delivers (see [`switch`]).
const CATCH_UP_QUIET: Duration = Duration::from_millis(50);
/// The longest the old stream is read after the new one's first item.
const CATCH_UP_MAX: Duration = Duration::from_secs(2);

/// Moves the decision loop from `current` to a new stream for `req`, with
/// no launch left out in between (docs/rules.md, "New rules and the
/// stream"):
///
/// 1. The new `Watch` is opened while the old stream goes on being read and
///    forwarded. The agent hooks a subscriber into its fan-out before it
///    sends it anything, so once the new stream's first item has arrived,
///    every later launch the new selector wants is on the new stream.
/// 2. The old stream is then read until it has caught up with that point:
///    until it delivers an item the agent observed after the new stream's
///    first item, or it is quiet for [`CATCH_UP_QUIET`] (at most
///    [`CATCH_UP_MAX`]). What it delivers meanwhile is forwarded too (a
///    launch reported twice is harmless: the table is keyed by pid).
/// 3. The decision loop is told `Connected` and fed the new stream, starting
///    with that first item: a snapshot of every running process the new
///    rules could match.
///
/// `Err` if the new stream could not be opened (the link then reconnects,
/// with the latest selector) or the decision loop is gone.
async fn switch(
    mut client: Client,
    req: WatchRequest,
    current: &mut Current,
    tx: &mpsc::Sender<LinkEvent>,
) -> Result<(), LinkError> {
    tracing::info!("the rules changed: re-subscribing with their selector");
    // The new stream, opened and with its first item.
    let opening = async move {
        let mut next = Current {
            stream: watch(&mut client, req).await?,
            expected: 1,
        };
        let msg = next.stream.message().await;
        let first = next.accept(msg)?;
        Ok::<_, LinkError>((next, first))
    };
    tokio::pin!(opening);
    let mut old_open = true;
    let (next, first) = loop {
        tokio::select! {
            opened = &mut opening => break opened.map_err(|e| LinkError::Resubscribe(Box::new(e)))?,
            msg = current.stream.message(), if old_open => match current.accept(msg) {
                Ok(ev) => tx.send(LinkEvent::Event(Box::new(ev))).await?,
                Err(_) => old_open = false,
            },
        }
    };
    let mark = observed(&first);
    let give_up = tokio::time::Instant::now() + CATCH_UP_MAX;
    // Only an old stream still open can have more to deliver.
    if old_open {
        loop {
            let quiet = (tokio::time::Instant::now() + CATCH_UP_QUIET).min(give_up);
            let Ok(msg) = tokio::time::timeout_at(quiet, current.stream.message()).await else {
                break;
            };
            let Ok(ev) = current.accept(msg) else { break };
            // Live items (execs, exits) are published in the order the agent
            // observed them, so one observed after the mark means every live
            // item before it has been delivered. A snapshot's records are
            // read later than the live items that queue behind them, so they
            // say nothing.
            let live = matches!(ev.kind, Some(Kind::Exec(_) | Kind::Exit(_)));
            let caught_up = live && observed(&ev).zip(mark).is_some_and(|(at, mark)| at >= mark);
            tx.send(LinkEvent::Event(Box::new(ev))).await?;
            if caught_up {
                break;
            }
        }
    }
    *current = next;
    tx.send(LinkEvent::Connected).await?;
    Ok(tx.send(LinkEvent::Event(Box::new(first))).await?)
}

/// When the agent observed the process an item reports, if it reports one.
fn observed(ev: &WatchEvent) -> Option<u64> {
    match &ev.kind {
        Some(Kind::Exec(p) | Kind::Existing(p)) => Some(p.observed_unix_ns),
        Some(Kind::Exit(e)) => Some(e.observed_unix_ns),
        _ => None,
    }
}

/// Reads the agent's counters now and every [`agent_metrics::POLL`]. A failed
/// read forgets them (the stream's own end says why the agent is gone).
async fn poll_stats(mut client: Client, stats: Arc<AgentStats>) {
    let mut tick = tokio::time::interval(agent_metrics::POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(STATS_TIMEOUT, client.get_stats(StatsRequest {})).await {
            Ok(Ok(reply)) => {
                stats.set(reply.into_inner());
                continue;
            }
            Ok(Err(status)) => tracing::debug!("GetStats failed: {status}"),
            Err(_) => tracing::debug!("GetStats took longer than {STATS_TIMEOUT:?}"),
        }
        stats.clear();
    }
}

/// How long one `GetStats` may take.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);
