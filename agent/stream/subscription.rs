//! One subscriber's stream: a snapshot of running processes, then live
//! events, and after any loss a `lost` marker followed by a fresh snapshot.
//!
//! The stream is what `Watch` hands to tonic, and it reads the subscriber's
//! own fan-out queue: each item is taken from that queue (or from `/proc`,
//! for a snapshot) when HTTP/2 asks for the next message. There is no task
//! and no second buffer per subscriber. A client that stops reading stops
//! its stream being polled; the detector never waits on it (it `try_send`s
//! into the queue, which overflows into `lost` and a resync).
//!
//! The subscriber is hooked into the [`Fanout`] when `Watch` is called,
//! *before* `/proc` is scanned, so live events that happen during the scan
//! wait in its queue: a process started mid-snapshot is seen at least once.
//!
//! When the agent stops, every stream ends at once with UNAVAILABLE,
//! whatever it was doing; one that cannot go on (cut off, snapshot failed)
//! ends with its own status.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use execwatch::proto::{
    watch_event::Kind, LossSite, Lost, SnapshotCause, SnapshotComplete, WatchEvent,
};
use futures::Stream;
use tokio::sync::watch;
use tonic::Status;

use crate::procfs::mount::ProcMount;
use crate::procfs::worker::{read_chunk, Worker};
use crate::stream::fanout::{self, Fanout, Item, Missed, Subscription};
use crate::stream::selector::Choice;
use crate::totals::Totals;
use crate::transport::quota::Place;
use crate::transport::rpc_error::RpcError;
use execwatch::internal::clock;

/// Overflows tolerated within [`OVERFLOW_WINDOW`] before a subscriber is cut off.
const MAX_OVERFLOWS: usize = 3;
/// The window over which overflows are counted.
const OVERFLOW_WINDOW: Duration = Duration::from_secs(60);

/// How long a snapshot keeps retrying reads that fail for the agent's own
/// reasons (out of descriptors or memory) before it ends the stream.
pub const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(5);

/// What every subscriber's stream needs.
pub struct Shared {
    /// Where detectors publish.
    pub fanout: Arc<Fanout>,
    /// Totals.
    pub stats: Arc<Totals>,
    /// Where and how snapshots read processes.
    pub procfs: Arc<ProcMount>,
    /// Becomes `true` when the agent stops: every stream ends.
    pub stop: watch::Receiver<bool>,
    /// Snapshot reads under way at once (each on a blocking-pool thread), so
    /// that many subscribers joining at once cannot crowd out the rest.
    pub snapshot_reads: tokio::sync::Semaphore,
}

/// The response stream of one `Watch`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

/// Why a stream ends early: the status its client gets, and how the
/// disconnect line says it ended.
struct End(Status, &'static str);

/// The end of every stream when the agent stops.
fn stopping() -> End {
    End(RpcError::ShuttingDown.into(), "agent stopping")
}

/// Hooks a subscriber from a peer with `peer_uid` into the fan-out and
/// returns its stream, which holds `seat` for as long as it lives.
pub fn watch(
    shared: Arc<Shared>,
    peer_uid: Option<u32>,
    choice: Choice,
    seat: Place,
) -> WatchStream {
    shared.stats.add_subscribers_total(1);
    tracing::info!(
        peer_uid,
        include_exits = choice.include_exits,
        skip_snapshot = choice.skip_snapshot,
        filtered = choice.filter.is_some(),
        "subscriber connected"
    );
    let sub = shared.fanout.subscribe(&choice);
    let mut stop = shared.stop.clone();
    let watcher = Watcher {
        sub,
        snapshot: (!choice.skip_snapshot).then(|| Snapshot::new(SnapshotCause::Subscribe)),
        overflows: VecDeque::new(),
        seq: 0,
        ended: None,
        choice,
        peer_uid,
        started: Instant::now(),
        shared,
        _seat: seat,
    };
    // One future for the stream's life, polled only while the stream waits:
    // no new waiter per item.
    let stopped: Stopped = Box::pin(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    Box::pin(futures::stream::unfold(
        (watcher, stopped),
        |(mut w, mut stopped)| async move {
            let item = w.next(&mut stopped).await?;
            Some((item, (w, stopped)))
        },
    ))
}

/// Ready once the agent stops.
type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One subscriber's stream: where its items come from, and how it ends.
struct Watcher {
    shared: Arc<Shared>,
    /// Its fan-out queue.
    sub: Subscription,
    /// The snapshot under way, if any; live items wait in `sub` meanwhile.
    snapshot: Option<Snapshot>,
    /// When it overflowed, within [`OVERFLOW_WINDOW`].
    overflows: VecDeque<Instant>,
    /// The last `seq` sent.
    seq: u64,
    /// Set once the stream has said its last word.
    ended: Option<&'static str>,
    /// What it chose: its selector, the fields it does not need, exits,
    /// a snapshot.
    choice: Choice,
    peer_uid: Option<u32>,
    started: Instant,
    /// Held for as long as the stream lives.
    _seat: Place,
}

impl Watcher {
    /// The next message, or `None` once the stream has ended.
    async fn next(&mut self, stopped: &mut Stopped) -> Option<Result<WatchEvent, Status>> {
        if self.ended.is_some() {
            return None;
        }
        // A plain atomic load (the shared receiver never marks the stop
        // seen): the agent stopping ends the stream at once, even if its
        // queue is never empty.
        let next = if self.shared.stop.has_changed().unwrap_or(true) {
            Err(stopping())
        } else {
            tokio::select! {
                biased;
                next = self.produce() => next,
                _ = stopped => Err(stopping()),
            }
        };
        match next {
            Ok(kind) => {
                self.seq += 1;
                Some(Ok(WatchEvent {
                    seq: self.seq,
                    kind: Some(kind),
                }))
            }
            Err(End(status, ending)) => {
                self.ended = Some(ending);
                Some(Err(status))
            }
        }
    }

    /// The next item: from the snapshot under way, else from the queue.
    async fn produce(&mut self) -> Result<Kind, End> {
        if let Some(snapshot) = &mut self.snapshot {
            let kind = snapshot.next(&self.shared, &self.choice, &self.sub).await?;
            if matches!(kind, Kind::SnapshotComplete(_)) {
                self.snapshot = None;
                // From here on a filtered stream gets only the exits of
                // what it was sent.
                let mut ledger = self.sub.ledger();
                fanout::snapshot_end(self.choice.filter.as_deref(), &mut ledger);
                ledger.floor = 0;
            }
            return Ok(kind);
        }
        match self.sub.recv().await {
            // The last subscriber to take an event takes it without a copy.
            Some(Item::Exec(p)) => {
                let mut p = Arc::unwrap_or_clone(p);
                self.choice.omit.apply(&mut p);
                Ok(Kind::Exec(p))
            }
            Some(Item::Exit(e)) => Ok(Kind::Exit(e)),
            Some(Item::DetectorLost(loss)) => {
                let cause = match loss.site {
                    LossSite::Audit => SnapshotCause::Audit,
                    _ => SnapshotCause::Resync,
                };
                self.snapshot = Some(Snapshot::new(cause));
                Ok(lost(loss.site, loss.reason.clone(), loss.count))
            }
            // The fan-out let go of us, which it does only when we fell
            // behind (it outlives every subscription).
            None if !self.sub.overflowed() => Err(stopping()),
            None => self.overflowed(),
        }
    }

    /// After an overflow: cut off, or re-hooked with a `lost` and a resync.
    fn overflowed(&mut self) -> Result<Kind, End> {
        let now = Instant::now();
        let overflows = &mut self.overflows;
        overflows.retain(|t| now.duration_since(*t) <= OVERFLOW_WINDOW);
        overflows.push_back(now);
        let fanout = &self.shared.fanout;
        if overflows.len() > MAX_OVERFLOWS {
            self.shared.stats.add_subscribers_cut_off(1);
            let err = RpcError::CutOff {
                queue_len: fanout.queue_len,
                overflows: overflows.len(),
                window_secs: OVERFLOW_WINDOW.as_secs(),
            };
            tracing::warn!("{err}");
            return Err(End(err.into(), "cut off"));
        }
        let (next, missed) = fanout.resubscribe(&self.sub, &self.choice);
        self.sub = next;
        self.snapshot = Some(Snapshot::new(SnapshotCause::Resync));
        Ok(overflow_lost(fanout.queue_len, missed))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        tracing::info!(
            peer_uid = self.peer_uid,
            include_exits = self.choice.include_exits,
            skip_snapshot = self.choice.skip_snapshot,
            items_sent = self.seq,
            filtered = self.choice.filter.is_some(),
            duration_ms = self.started.elapsed().as_millis() as u64,
            ended = self.ended.unwrap_or("client gone"),
            "subscriber disconnected"
        );
    }
}

/// The `lost` for a subscriber that overflowed: its queue's drops, or the
/// detector's loss it missed meanwhile, which makes the count what that
/// loss's count makes it.
fn overflow_lost(queue_len: usize, missed: Option<Missed>) -> Kind {
    let queue =
        format!("this subscriber did not keep up and its queue of {queue_len} events filled");
    let (events, upstream) = missed.map_or((0, None), |m| (m.events, m.upstream));
    match upstream {
        None => lost(LossSite::SubscriberQueue, queue, Some(events)),
        Some(upstream) => lost(
            upstream.site,
            format!(
                "{}; meanwhile {queue} ({events} events dropped there)",
                upstream.reason
            ),
            upstream.count.map(|n| n + events),
        ),
    }
}

fn lost(site: LossSite, reason: String, count: Option<u64>) -> Kind {
    Kind::Lost(Lost {
        site: site as i32,
        reason,
        count: count.unwrap_or(0),
        count_known: count.is_some(),
        detected_unix_ns: clock::unix_ns(),
    })
}

/// Waits before another try at a snapshot read, or gives up at `deadline`.
async fn again(delay: &mut Duration, deadline: Instant, why: &str) -> Result<(), End> {
    if Instant::now() + *delay > deadline {
        let err = RpcError::SnapshotIncomplete {
            patience_secs: SNAPSHOT_PATIENCE.as_secs(),
            why: why.to_string(),
        };
        tracing::warn!("{err}");
        return Err(End(err.into(), "snapshot failed"));
    }
    tracing::warn!("snapshot waiting: {why}; retrying in {delay:?}");
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(Duration::from_secs(1));
    Ok(())
}

/// A snapshot under way: every running process as `existing`, then
/// `snapshot_complete`.
///
/// Never presented as whole when it is not: a listing or a record that
/// cannot be read for the agent's own reasons is tried again (records only
/// for the processes that failed, so none is listed twice) for up to
/// [`SNAPSHOT_PATIENCE`]; after that the stream ends with UNAVAILABLE and
/// no `snapshot_complete`, and the client reconnects.
///
/// `/proc` reads block, so they run on the blocking pool, but in short
/// chunks that never wait for the client: a subscriber that stops reading
/// holds at most one chunk of records, never a pool thread.
#[derive(Default)]
struct Snapshot {
    cause: SnapshotCause,
    /// When it gives up retrying; set when it starts.
    deadline: Option<Instant>,
    /// The wait before the next retry.
    delay: Duration,
    /// Pids still to read, last first; `None` until `/proc` is listed.
    pending: Option<Vec<i32>>,
    /// Records read and not sent yet: the rest of one chunk.
    ready: VecDeque<Kind>,
    /// Pids whose reads failed in this pass, and the last reason.
    failed: Vec<i32>,
    why: Option<String>,
    /// Records sent.
    count: u64,
    /// Reads the chunks, one after the other.
    worker: Option<Worker>,
}

impl Snapshot {
    fn new(cause: SnapshotCause) -> Self {
        Self {
            cause,
            ..Self::default()
        }
    }

    /// The next item: a record (the rest of its chunk waits in `ready`), or
    /// `snapshot_complete` once every process is read.
    async fn next(
        &mut self,
        shared: &Arc<Shared>,
        choice: &Choice,
        sub: &Subscription,
    ) -> Result<Kind, End> {
        let filter = &choice.filter;
        let deadline = *self.deadline.get_or_insert_with(|| {
            shared.stats.add_snapshots(1);
            self.delay = Duration::from_millis(50);
            if filter.as_ref().is_some_and(|f| f.selector.nothing) {
                // Nothing to list: no need to read /proc.
                self.pending = Some(Vec::new());
            }
            Instant::now() + SNAPSHOT_PATIENCE
        });
        loop {
            if let Some(kind) = self.ready.pop_front() {
                return Ok(kind);
            }
            let Some(pending) = &mut self.pending else {
                let procfs = shared.procfs.clone();
                // Off the runtime thread: /proc may block.
                let listed = tokio::task::spawn_blocking(move || {
                    let reader = procfs.reader().map_err(|e| e.to_string())?;
                    reader
                        .pids()
                        .map_err(|e| format!("cannot list {}: {e}", procfs.root))
                })
                .await
                .unwrap_or_else(|e| Err(format!("snapshot task failed: {e}")));
                match listed {
                    // Read in listing order (the chunks pop from the end).
                    Ok(pids) => self.pending = Some(pids.into_iter().rev().collect()),
                    Err(why) => again(&mut self.delay, deadline, &why).await?,
                }
                continue;
            };
            if pending.is_empty() {
                self.worker = None;
                let Some(why) = self.why.take() else {
                    return Ok(Kind::SnapshotComplete(SnapshotComplete {
                        processes: self.count,
                        cause: self.cause as i32,
                    }));
                };
                let why = format!("{} processes unread: {why}", self.failed.len());
                again(&mut self.delay, deadline, &why).await?;
                self.pending = Some(self.failed.drain(..).rev().collect());
                continue;
            }
            let (pids, shared, worker) =
                (std::mem::take(pending), shared.clone(), self.worker.take());
            let argv = filter.as_ref().map(|f| f.selector.argv.clone());
            // Its own task takes the read permit and gives it back, and
            // keeps the read's deadline: this stream is polled only while
            // its client has room, and a permit handed to a stream that is
            // not polled would never return.
            let read = tokio::spawn(async move {
                let _permit = shared.snapshot_reads.acquire().await;
                let argv = argv.unwrap_or_default();
                read_chunk(worker, shared.procfs.clone(), pids, argv).await
            });
            let (worker, chunk, rest) = read
                .await
                .unwrap_or_else(|e| Err(format!("snapshot task failed: {e}")))
                .map_err(|e| End(RpcError::SnapshotFailed(e).into(), "snapshot failed"))?;
            *pending = rest;
            self.worker = Some(worker);
            let (mut ledger, round) = (sub.ledger(), sub.round());
            let wanted =
                (chunk.records.into_iter()).filter(|p| ledger.offer(p, filter.as_deref(), round));
            for mut p in wanted {
                self.count += 1;
                choice.omit.apply(&mut p);
                self.ready.push_back(Kind::Existing(p));
            }
            self.failed.extend(chunk.failed);
            self.why = chunk.why.map(|e| e.to_string()).or(self.why.take());
        }
    }
}

#[cfg(test)]
mod tests;
