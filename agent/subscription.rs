//! One subscriber's stream: a snapshot of running processes, then live
//! events, and after any loss a `lost` marker followed by a fresh snapshot.
//!
//! Each subscriber gets its own task. It hooks into the [`Fanout`] *before*
//! scanning `/proc`, so live events that happen during the scan wait in its
//! queue: a process started mid-snapshot is seen at least once. The task may
//! wait on its own client (HTTP/2 flow control); the detector never does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use execwatch::proto::{
    watch_event::Kind, LossSite, Lost, SnapshotCause, SnapshotComplete, Source, WatchEvent,
    WatchRequest,
};
use tokio::sync::mpsc;
use tonic::Status;

use crate::fanout::{Fanout, Item};
use crate::procfs::ProcReader;
use crate::stats::Stats;
use execwatch::clock;

/// Overflows tolerated within [`OVERFLOW_WINDOW`] before a subscriber is cut off.
const MAX_OVERFLOWS: usize = 3;
/// Processes read per blocking-pool task during a snapshot.
const SNAPSHOT_CHUNK: usize = 64;
/// The window over which overflows are counted.
const OVERFLOW_WINDOW: Duration = Duration::from_secs(60);

/// What every subscription task needs.
pub struct Shared {
    /// Where detectors publish.
    pub fanout: Arc<Fanout>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The `/proc` mount snapshots read.
    pub proc_root: String,
    /// Command-line read limit for snapshot entries.
    pub max_argv_bytes: usize,
    /// Queue length, quoted in `lost` markers.
    pub queue_len: usize,
}

/// The client went away; the task ends quietly.
struct Gone;

/// Numbers and sends items on one stream.
struct Emitter {
    seq: u64,
    out: mpsc::Sender<Result<WatchEvent, Status>>,
}

impl Emitter {
    async fn emit(&mut self, kind: Kind) -> Result<(), Gone> {
        self.seq += 1;
        let event = WatchEvent {
            seq: self.seq,
            kind: Some(kind),
        };
        self.out.send(Ok(event)).await.map_err(|_| Gone)
    }
}

/// Starts the task serving `req`; its items arrive on `out`.
pub fn spawn(
    shared: Arc<Shared>,
    req: WatchRequest,
    out: mpsc::Sender<Result<WatchEvent, Status>>,
) {
    shared.stats.add_subscribers_total(1);
    tokio::spawn(async move {
        let _ = run(&shared, req, Emitter { seq: 0, out }).await;
        shared.fanout.prune();
    });
}

async fn run(shared: &Shared, req: WatchRequest, mut em: Emitter) -> Result<(), Gone> {
    let mut sub = shared.fanout.subscribe(req.include_exits);
    if !req.skip_snapshot {
        snapshot(shared, &mut em, SnapshotCause::Subscribe).await?;
    }
    let mut overflows = VecDeque::new();
    loop {
        let item = tokio::select! {
            item = sub.rx.recv() => item,
            _ = em.out.closed() => return Err(Gone),
        };
        match item {
            // The last subscriber to take an event takes it without a copy.
            Some(Item::Exec(p)) => em.emit(Kind::Exec(Arc::unwrap_or_clone(p))).await?,
            Some(Item::Exit(e)) => em.emit(Kind::Exit(e)).await?,
            Some(Item::DetectorLost { kernel, reason }) => {
                let site = if kernel {
                    LossSite::Kernel
                } else {
                    LossSite::Detector
                };
                em.emit(lost(site, reason, None)).await?;
                snapshot(shared, &mut em, SnapshotCause::Resync).await?;
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
                    let _ = em.out.send(Err(Status::resource_exhausted(msg))).await;
                    return Ok(());
                }
                let (next, missed) = shared.fanout.resubscribe(&sub.overflow, req.include_exits);
                sub = next;
                let reason = format!(
                    "this subscriber did not keep up and its queue of {} events filled",
                    shared.queue_len
                );
                em.emit(lost(LossSite::SubscriberQueue, reason, Some(missed)))
                    .await?;
                snapshot(shared, &mut em, SnapshotCause::Resync).await?;
            }
        }
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

/// Sends every running process as `existing`, then `snapshot_complete`.
async fn snapshot(shared: &Shared, em: &mut Emitter, cause: SnapshotCause) -> Result<(), Gone> {
    shared.stats.add_snapshots(1);
    // /proc reads block, so they run on the blocking pool, but in short
    // chunks that never wait for the client: a subscriber that stops
    // reading holds this task (one per subscriber), never a pool thread,
    // and at most one chunk of records.
    let (root, max_argv) = (shared.proc_root.clone(), shared.max_argv_bytes);
    let listed = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || {
            let reader = ProcReader::open(&root, max_argv).map_err(|e| e.to_string())?;
            reader
                .pids()
                .map_err(|e| format!("cannot list {root}: {e}"))
        })
        .await
    };
    let pids = match listed {
        Ok(Ok(pids)) => pids,
        Ok(Err(e)) => {
            tracing::error!("snapshot incomplete: {e}");
            Vec::new()
        }
        Err(e) => {
            tracing::error!("snapshot task failed: {e}");
            Vec::new()
        }
    };
    let mut count = 0;
    for chunk in pids.chunks(SNAPSHOT_CHUNK) {
        let (chunk, root) = (chunk.to_vec(), root.clone());
        let records = tokio::task::spawn_blocking(move || {
            let Ok(mut reader) = ProcReader::open(&root, max_argv) else {
                return Vec::new();
            };
            chunk
                .into_iter()
                .filter_map(|pid| reader.read(pid, pid, Source::Snapshot))
                .filter(|p| !p.exited_before_inspection)
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for p in records {
            count += 1;
            em.emit(Kind::Existing(p)).await?;
        }
    }
    em.emit(Kind::SnapshotComplete(SnapshotComplete {
        processes: count,
        cause: cause as i32,
    }))
    .await
}
