//! One subscriber's stream: a snapshot of running processes, then live
//! events, and after any loss a `lost` marker followed by a fresh snapshot.
//!
//! Each subscriber gets its own task. It hooks into the [`Fanout`] *before*
//! scanning `/proc`, so live events that happen during the scan wait in its
//! queue: a process started mid-snapshot is seen at least once. The task may
//! wait on its own client (HTTP/2 flow control); the detector never does.
//!
//! When the agent stops, every task ends its stream at once with
//! UNAVAILABLE, whatever it was doing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use execwatch::proto::{
    watch_event::Kind, LossSite, Lost, SnapshotCause, SnapshotComplete, WatchEvent, WatchRequest,
};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::procfs::snapshot::read_chunk;
use crate::procfs::source::ProcSource;
use crate::stats::Stats;
use crate::stream::fanout::{Fanout, Item, Missed};
use crate::stream::selector::{Choice, Filter};
use crate::stream::service::Seat;
use execwatch::internal::clock;

/// Overflows tolerated within [`OVERFLOW_WINDOW`] before a subscriber is cut off.
const MAX_OVERFLOWS: usize = 3;
/// The window over which overflows are counted.
const OVERFLOW_WINDOW: Duration = Duration::from_secs(60);

/// How long a snapshot keeps retrying reads that fail for the agent's own
/// reasons (out of descriptors or memory) before it ends the stream.
pub const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(5);
/// How long a stream's last word (its status on shutdown) may wait for room.
const LAST_WORD: Duration = Duration::from_millis(200);

/// What every subscription task needs.
pub struct Shared {
    /// Where detectors publish.
    pub fanout: Arc<Fanout>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Where and how snapshots read processes.
    pub procfs: Arc<ProcSource>,
    /// Queue length, quoted in `lost` markers.
    pub queue_len: usize,
    /// Becomes `true` when the agent stops: every stream ends.
    pub stop: watch::Receiver<bool>,
    /// Snapshot reads under way at once (each on a blocking-pool thread), so
    /// that many subscribers joining at once cannot crowd out the rest.
    pub snapshot_reads: tokio::sync::Semaphore,
}

/// Why a stream ended early.
enum End {
    /// The client went away; the task ends quietly.
    Gone,
    /// The stream cannot go on; the client gets this status and may
    /// reconnect.
    Fail(Status, Ending),
}

/// How a stream ended, as the disconnect line says it.
#[derive(Clone, Copy)]
enum Ending {
    /// The client closed it or went away.
    ClientGone,
    /// It overflowed too often and was cut off.
    CutOff,
    /// The agent is stopping.
    AgentStopping,
    /// A snapshot could not be taken whole.
    SnapshotFailed,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::ClientGone => "client gone",
            Ending::CutOff => "cut off",
            Ending::AgentStopping => "agent stopping",
            Ending::SnapshotFailed => "snapshot failed",
        }
    }
}

/// Numbers and sends items on one stream.
struct Emitter {
    seq: u64,
    out: mpsc::Sender<Result<WatchEvent, Status>>,
}

impl Emitter {
    async fn emit(&mut self, kind: Kind) -> Result<(), End> {
        self.seq += 1;
        let event = WatchEvent {
            seq: self.seq,
            kind: Some(kind),
        };
        self.out.send(Ok(event)).await.map_err(|_| End::Gone)
    }
}

/// Starts the task serving `req` from a peer with `peer_uid`; its items
/// arrive on `out`.
pub fn spawn(
    shared: Arc<Shared>,
    peer_uid: Option<u32>,
    req: WatchRequest,
    choice: Choice,
    out: mpsc::Sender<Result<WatchEvent, Status>>,
    seat: Seat,
) {
    shared.stats.add_subscribers_total(1);
    let (include_exits, skip_snapshot) = (req.include_exits, req.skip_snapshot);
    let filtered = choice.filter.is_some();
    tracing::info!(
        peer_uid,
        include_exits,
        skip_snapshot,
        filtered,
        "subscriber connected"
    );
    tokio::spawn(async move {
        // Held for as long as the subscription lives.
        let _seat = seat;
        let started = Instant::now();
        let mut stop = shared.stop.clone();
        let last_word = out.clone();
        let mut em = Emitter { seq: 0, out };
        let end = tokio::select! {
            end = run(&shared, req, &choice, &mut em) => end,
            _ = stop.wait_for(|stop| *stop) => Err(End::Fail(Status::unavailable(
                "agent shutting down; reconnect to its successor",
            ), Ending::AgentStopping)),
        };
        let ending = match end {
            // The fan-out closed: the detector side is shutting down.
            Ok(()) => Ending::AgentStopping,
            Err(End::Gone) => Ending::ClientGone,
            Err(End::Fail(status, ending)) => {
                // A client that does not read may have no room left: it
                // gets the end of the connection instead.
                let _ = tokio::time::timeout(LAST_WORD, last_word.send(Err(status))).await;
                ending
            }
        };
        tracing::info!(
            peer_uid,
            include_exits,
            skip_snapshot,
            items_sent = em.seq,
            filtered,
            duration_ms = started.elapsed().as_millis() as u64,
            ended = ending.as_str(),
            "subscriber disconnected"
        );
        shared.fanout.prune();
    });
}

async fn run(
    shared: &Shared,
    req: WatchRequest,
    choice: &Choice,
    em: &mut Emitter,
) -> Result<(), End> {
    let mut sub = shared
        .fanout
        .subscribe(req.include_exits, choice.filter.clone());
    if !req.skip_snapshot {
        snapshot(shared, em, SnapshotCause::Subscribe, choice).await?;
    }
    let mut overflows = VecDeque::new();
    loop {
        let item = tokio::select! {
            item = sub.recv() => item,
            _ = em.out.closed() => return Err(End::Gone),
        };
        match item {
            // The last subscriber to take an event takes it without a copy.
            Some(Item::Exec(p)) => {
                let mut p = Arc::unwrap_or_clone(p);
                choice.omit.apply(&mut p);
                em.emit(Kind::Exec(p)).await?
            }
            Some(Item::Exit(e)) => em.emit(Kind::Exit(e)).await?,
            Some(Item::DetectorLost(loss)) => {
                em.emit(lost(loss.site, loss.reason.clone(), loss.count))
                    .await?;
                snapshot(shared, em, SnapshotCause::Resync, choice).await?;
            }
            // The fan-out let go of us: either we fell behind or it shut down.
            None if !Fanout::overflowed(&sub.overflow) => return Ok(()),
            None => {
                let now = Instant::now();
                overflows.push_back(now);
                while overflows
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > OVERFLOW_WINDOW)
                {
                    overflows.pop_front();
                }
                if overflows.len() > MAX_OVERFLOWS {
                    shared.stats.add_subscribers_cut_off(1);
                    let msg = format!(
                        "subscriber cut off: its queue of {} events overflowed {} times within {}s; read faster or reconnect",
                        shared.queue_len, overflows.len(), OVERFLOW_WINDOW.as_secs()
                    );
                    tracing::warn!("{msg}");
                    return Err(End::Fail(Status::resource_exhausted(msg), Ending::CutOff));
                }
                let (next, missed) = shared.fanout.resubscribe(
                    &sub.overflow,
                    req.include_exits,
                    choice.filter.clone(),
                );
                sub = next;
                em.emit(overflow_lost(shared.queue_len, missed)).await?;
                snapshot(shared, em, SnapshotCause::Resync, choice).await?;
            }
        }
    }
}

/// The `lost` for a subscriber that overflowed: its queue's drops, or the
/// detector's loss it missed meanwhile, which makes the count what that
/// loss's count makes it.
fn overflow_lost(queue_len: usize, missed: Option<Missed>) -> Kind {
    let queue =
        format!("this subscriber did not keep up and its queue of {queue_len} events filled");
    let Some(missed) = missed else {
        return lost(LossSite::SubscriberQueue, queue, Some(0));
    };
    match missed.upstream {
        None => lost(LossSite::SubscriberQueue, queue, Some(missed.events)),
        Some(upstream) => lost(
            upstream.site,
            format!(
                "{}; meanwhile {queue} ({} events dropped there)",
                upstream.reason, missed.events
            ),
            upstream.count.map(|n| n + missed.events),
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

/// Runs blocking `/proc` work off the runtime thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("snapshot task failed: {e}")))
}

/// Waits before another try at a snapshot read, or gives up at `deadline`.
async fn again(delay: &mut Duration, deadline: Instant, why: &str) -> Result<(), End> {
    if Instant::now() + *delay > deadline {
        let msg = format!(
            "could not take a complete snapshot within {}s: {why}; reconnect",
            SNAPSHOT_PATIENCE.as_secs()
        );
        tracing::warn!("{msg}");
        return Err(End::Fail(Status::unavailable(msg), Ending::SnapshotFailed));
    }
    tracing::warn!("snapshot waiting: {why}; retrying in {delay:?}");
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(Duration::from_secs(1));
    Ok(())
}

/// Sends every running process as `existing`, then `snapshot_complete`.
///
/// Never presented as whole when it is not: a listing or a record that
/// cannot be read for the agent's own reasons is tried again (records only
/// for the processes that failed, so none is listed twice) for up to
/// [`SNAPSHOT_PATIENCE`]; after that the stream ends with UNAVAILABLE and
/// no `snapshot_complete`, and the client reconnects.
async fn snapshot(
    shared: &Shared,
    em: &mut Emitter,
    cause: SnapshotCause,
    choice: &Choice,
) -> Result<(), End> {
    shared.stats.add_snapshots(1);
    let filter = choice.filter.clone();
    if filter
        .as_ref()
        .is_some_and(|f| f.selector().selects_nothing())
    {
        // Nothing to list: no need to read /proc.
        return snapshot_complete(em, cause, 0, filter.as_deref()).await;
    }
    let deadline = Instant::now() + SNAPSHOT_PATIENCE;
    let mut delay = Duration::from_millis(50);
    // /proc reads block, so they run on the blocking pool, but in short
    // chunks that never wait for the client: a subscriber that stops
    // reading holds this task (one per subscriber), never a pool thread,
    // and at most one chunk of records.
    let mut pending = loop {
        let procfs = shared.procfs.clone();
        let listed = blocking(move || {
            let reader = procfs.reader().map_err(|e| e.to_string())?;
            reader
                .pids()
                .map_err(|e| format!("cannot list {}: {e}", procfs.root()))
        })
        .await;
        match listed {
            Ok(pids) => break pids,
            Err(why) => again(&mut delay, deadline, &why).await?,
        }
    };
    // Read in listing order (the chunks pop from the end).
    pending.reverse();
    let mut count = 0;
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut why = None;
        while !pending.is_empty() {
            let permit = shared.snapshot_reads.acquire().await;
            let pids = std::mem::take(&mut pending);
            let (chunk, rest) = read_chunk(shared.procfs.clone(), pids)
                .await
                .map_err(|e| End::Fail(Status::internal(e), Ending::SnapshotFailed))?;
            drop(permit);
            pending = rest;
            for mut p in chunk.records {
                if !filter.as_ref().is_none_or(|f| f.offer_process(&p)) {
                    continue;
                }
                count += 1;
                choice.omit.apply(&mut p);
                em.emit(Kind::Existing(p)).await?;
            }
            failed.extend(chunk.failed);
            why = chunk.why.or(why);
        }
        if let Some(why) = why {
            again(
                &mut delay,
                deadline,
                &format!("{} processes unread: {why}", failed.len()),
            )
            .await?;
        }
        failed.reverse();
        pending = failed;
    }
    snapshot_complete(em, cause, count, filter.as_deref()).await
}

/// Sends `snapshot_complete`; from then on a filtered stream gets only the
/// exits of what it was sent.
async fn snapshot_complete(
    em: &mut Emitter,
    cause: SnapshotCause,
    processes: u64,
    filter: Option<&Filter>,
) -> Result<(), End> {
    em.emit(Kind::SnapshotComplete(SnapshotComplete {
        processes,
        cause: cause as i32,
    }))
    .await?;
    if let Some(f) = filter {
        f.snapshot_end();
    }
    Ok(())
}
