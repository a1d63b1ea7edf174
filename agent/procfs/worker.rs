//! Reads for a caller that waits for them and must not hang: the poll
//! detector (each new process) and snapshots (a chunk at a time). The caller
//! hands a worker thread a list of pids and is the watchdog of its reads
//! ([`Watched::watch`]) until the list is done; the worker reads them one
//! after the other with no hand-off in between. A read given up at its
//! deadline leaves its worker behind, its record is taken as it stands, and
//! a fresh worker goes on with the rest of the list.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use execwatch::proto::{Process, Source};
use nix::errno::Errno;

use crate::procfs::cmdline::ArgvPatterns;
use crate::procfs::mount::ProcMount;
use crate::procfs::reader::{blank, Exhausted, ProcReader};
use crate::procfs::watchdog::{Read, Slot, Watched};

/// Processes read per hand-off at most.
pub const CHUNK: usize = 64;
/// Encoded bytes of records read per hand-off at most: what a snapshot
/// subscriber that stops reading holds at most in snapshot records.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// What one hand-off gave.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The finished records, in reading order (processes found exited
    /// included, flagged `exited_before_inspection`).
    pub records: Vec<Process>,
    /// Pids whose reads failed for the agent's own reasons.
    pub failed: Vec<i32>,
    /// Why, the last time.
    pub why: Option<Exhausted>,
}

/// The pids a worker reads, shared with the caller that watches.
#[derive(Default)]
struct Job {
    /// Still to read, popped from the end.
    pids: Vec<i32>,
    source: Source,
    argv: ArgvPatterns,
    /// Encoded bytes of `chunk.records`.
    bytes: usize,
    chunk: Chunk,
    done: bool,
}

impl Job {
    /// Takes one read of `pid`.
    fn put(&mut self, pid: i32, read: Result<Read, Exhausted>) {
        match read {
            Ok(Read::Record(p) | Read::Unread(p)) => {
                self.bytes += prost::Message::encoded_len(&p);
                self.chunk.records.push(p);
            }
            Ok(_) => {}
            Err(e) => {
                self.chunk.failed.push(pid);
                self.chunk.why = Some(e);
            }
        }
    }
}

/// Reads lists of processes on a worker thread, each read bounded in time.
pub struct Worker {
    watched: Arc<Watched<Job>>,
    /// The way to the worker thread; `None` until one is started, or after
    /// it is gone.
    jobs: Option<Sender<()>>,
}

impl Worker {
    /// No thread yet: the first read starts one.
    pub fn new(mount: Arc<ProcMount>) -> Self {
        Self {
            watched: Arc::new(Watched::new(mount)),
            jobs: None,
        }
    }

    /// Reads the records of `pids` (popped from the end) as `source`
    /// until they weigh [`CHUNK_BYTES`] or number [`CHUNK`], leaving the
    /// rest in `pids`; long command lines are searched whole for `argv`. A
    /// kernel thread has no record. Waits at most the deadline for any one
    /// process.
    pub fn read(&mut self, pids: &mut Vec<i32>, source: Source, argv: &ArgvPatterns) -> Chunk {
        let watched = self.watched.clone();
        let mut slot = watched.lock();
        slot.state = Job {
            pids: std::mem::take(pids),
            source,
            argv: argv.clone(),
            ..Job::default()
        };
        self.hand(&mut slot);
        let mut slot = watched.watch(
            slot,
            |job| job.done,
            |slot, p| {
                // Left behind (it says it is back and ends): a fresh one
                // goes on with the rest.
                slot.state.put(p.pid, Ok(Read::Record(p)));
                self.jobs = None;
                self.hand(slot);
            },
        );
        let job = std::mem::take(&mut slot.state);
        *pids = job.pids;
        job.chunk
    }

    /// Hands the job in `slot` to the worker thread, starting one of the
    /// slot's generation if there is none (none yet, or left behind); if
    /// none can start, every pid left fails.
    fn hand(&mut self, slot: &mut Slot<Job>) {
        if self.jobs.as_ref().is_some_and(|jobs| jobs.send(()).is_ok()) {
            return;
        }
        let (jobs, jobs_rx) = mpsc::channel();
        // The job waits in the channel until the thread takes it.
        let _ = jobs.send(());
        let (watched, generation) = (self.watched.clone(), slot.generation());
        let started = self.watched.mount.reader().and_then(|reader| {
            std::thread::Builder::new()
                .name("proc-worker".into())
                .spawn(move || work(&watched, reader, generation, jobs_rx))
                .map_err(|e| {
                    Exhausted::Resources(e.raw_os_error().map_or(Errno::EAGAIN, Errno::from_raw))
                })
        });
        match started {
            Ok(_) => self.jobs = Some(jobs),
            Err(e) => {
                let job = &mut slot.state;
                job.chunk.failed.append(&mut job.pids);
                job.chunk.why = Some(e);
                job.done = true;
            }
        }
    }
}

/// Reads the records of running processes among `pids` (popped from the
/// end), one [`Chunk`], on `worker` (a fresh one if `None`) off the runtime
/// thread (for a snapshot): never waits for a client, nor longer than the
/// deadline for one process, so a read that hangs holds neither the
/// snapshot nor its permit; long command lines are searched for `argv`.
/// Returns the worker for the next chunk, the chunk and the pids it did not
/// get to.
pub async fn read_chunk(
    worker: Option<Worker>,
    mount: Arc<ProcMount>,
    mut pids: Vec<i32>,
    argv: ArgvPatterns,
) -> Result<(Worker, Chunk, Vec<i32>), String> {
    tokio::task::spawn_blocking(move || {
        // One worker, and its thread, for a whole snapshot.
        let mut worker = worker.unwrap_or_else(|| Worker::new(mount));
        let mut chunk = worker.read(&mut pids, Source::Snapshot, &argv);
        chunk.records.retain(|p| !p.exited_before_inspection);
        (worker, chunk, pids)
    })
    .await
    .map_err(|e| format!("snapshot task failed: {e}"))
}

/// A worker thread: reads each job it is handed to the end. Ends when the
/// caller drops its end, or once left behind.
fn work(watched: &Watched<Job>, mut reader: ProcReader, generation: u64, jobs: Receiver<()>) {
    for () in jobs {
        loop {
            let mut slot = watched.lock();
            let job = &mut slot.state;
            // The next pid, unless the chunk is full.
            let full = job.chunk.records.len() >= CHUNK || job.bytes >= CHUNK_BYTES;
            let Some(pid) = (!full).then(|| job.pids.pop()).flatten() else {
                job.done = true;
                watched.wake();
                break;
            };
            let record = blank(pid, pid, job.source);
            let argv = job.argv.clone();
            drop(slot);
            let read = watched.read(Ok(&mut reader), generation, record, |_| true, &argv);
            if matches!(read, Ok(Read::LeftBehind)) {
                return;
            }
            watched.lock().state.put(pid, read);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::procfs::bounds::Bounds;

    fn worker() -> Worker {
        let bounds = Bounds::new(Duration::from_secs(5), 2);
        Worker::new(Arc::new(
            ProcMount::open("/proc", 4096, None, bounds).unwrap(),
        ))
    }

    #[test]
    fn a_list_read_in_time_comes_back_whole_and_the_worker_stays() {
        let mut w = worker();
        let me = std::process::id() as i32;
        // kthreadd has no record; a gone pid is flagged.
        let mut pids = vec![i32::MAX, 2];
        pids.extend([me; CHUNK + 1]);
        let read = w.read(&mut pids, Source::Poll, &ArgvPatterns::NONE);
        assert_eq!(pids, [i32::MAX, 2, me], "stops at a full chunk");
        assert_eq!(read.records.len(), CHUNK);
        for p in &read.records {
            assert_eq!(p.pid, me);
            assert!(!p.comm.is_empty() && !p.argv.is_empty(), "{p:?}");
            assert!(p.unavailable.is_empty(), "{p:?}");
        }
        pids.pop();
        let read = w.read(&mut pids, Source::Poll, &ArgvPatterns::NONE);
        assert!(pids.is_empty() && read.failed.is_empty());
        let [gone] = &read.records[..] else {
            panic!("{read:?}")
        };
        assert!(gone.exited_before_inspection, "{gone:?}");
        assert!(w.jobs.is_some(), "one worker serves every read");
    }
}
