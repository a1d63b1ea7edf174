//! A bounded read for a caller that waits for it: the read runs on a worker
//! thread, and the caller, which must not hang, waits at most the deadline.
//!
//! The poll detector reads a new process's record this way, and so do
//! snapshots ([`crate::procfs::snapshot`]): its scans go on if a read hangs,
//! as the netlink detector's do ([`crate::detector::reader`] watches its own
//! thread instead, because a hand-off per exec would cost a wake-up, which a
//! poll scan or a snapshot can afford). A read still under way at the
//! deadline is given up as [`crate::procfs::bounded`] describes: the record
//! comes back with what was read and the rest named in `unavailable`, the
//! worker is left behind, and the next read starts a fresh one.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Instant;

use execwatch::proto::{Process, Source};
use nix::errno::Errno;

use crate::procfs::bounded::{Admit, Watched};
use crate::procfs::cmdline::ArgvPatterns;
use crate::procfs::reader::{blank, Exhausted, Outcome};
use crate::procfs::source::ProcSource;

/// The one generation a worker reads as; given up, its slot moves past it.
const GENERATION: u64 = 0;

/// Reads records on a worker thread, each bounded in time.
pub struct WorkerReader {
    source: Arc<ProcSource>,
    worker: Option<Worker>,
}

/// One worker thread, and the way to it and back.
struct Worker {
    watched: Arc<Watched<()>>,
    jobs: Sender<(i32, ArgvPatterns)>,
    done: Receiver<Result<Outcome, Exhausted>>,
}

impl WorkerReader {
    /// No worker yet: the first read starts one.
    pub fn new(source: Arc<ProcSource>) -> Self {
        Self {
            source,
            worker: None,
        }
    }

    /// Reads the record of `pid` (a thread-group leader) as
    /// [`crate::procfs::reader::ProcReader::read_into`] does, waiting at
    /// most the deadline (a long command line searched for `argv`);
    /// `None` for a kernel thread. Not redacted: see
    /// [`ProcSource::finish`]. A process whose
    /// earlier read is still stuck gets a record that says so, without a
    /// read ([`Admit::Stuck`]).
    pub fn read(
        &mut self,
        pid: i32,
        source: Source,
        argv: &ArgvPatterns,
    ) -> Result<Option<Process>, Exhausted> {
        let bounds = self.source.bounds();
        if let Admit::Stuck(p) = bounds.admit(pid, pid, source)? {
            return Ok(Some(*p));
        }
        let worker = match &mut self.worker {
            Some(worker) => worker,
            None => self.worker.insert(Worker::start(self.source.clone())?),
        };
        worker.watched.begin(blank(pid, pid, source));
        let sent = worker.jobs.send((pid, argv.clone())).ok();
        let read = match sent.map(|()| worker.done.recv_timeout(bounds.deadline())) {
            Some(Ok(read)) => Some(read),
            Some(Err(RecvTimeoutError::Timeout)) => {
                // A deadline after this read began: overdue, unless done.
                let given_up = worker.watched.lock().give_up(bounds, Instant::now());
                if given_up.is_some() {
                    // Left behind (it says it is back and ends): the next
                    // read starts a fresh one.
                    self.worker = None;
                    return Ok(given_up);
                }
                // It finished just now: its answer is on the way.
                worker.done.recv().ok()
            }
            Some(Err(RecvTimeoutError::Disconnected)) | None => None,
        };
        let Some(read) = read else {
            // Gone: only a bug ends a worker otherwise; the caller tries
            // again, and the next read starts a fresh one.
            self.worker = None;
            return Err(Exhausted::Resources(Errno::EAGAIN));
        };
        let p = worker.watched.lock().end();
        read.map(|outcome| p.filter(|_| outcome == Outcome::Read))
    }
}

impl Worker {
    fn start(source: Arc<ProcSource>) -> Result<Self, Exhausted> {
        let mut reader = source.reader()?;
        let watched = Arc::new(Watched::new(()));
        let (jobs, jobs_rx) = mpsc::channel::<(i32, ArgvPatterns)>();
        let (done_tx, done) = mpsc::channel();
        let shared = watched.clone();
        std::thread::Builder::new()
            .name("proc-worker".into())
            .spawn(move || {
                // Ends when the caller drops its end, or once left behind.
                for (pid, argv) in jobs_rx {
                    let tracker = &mut shared.tracker(GENERATION);
                    let read = reader.read_into(pid, tracker, |_| true, &argv);
                    if shared.lock().generation() != GENERATION {
                        source.bounds().returned(pid);
                        return;
                    }
                    if done_tx.send(read).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| {
                Exhausted::Resources(e.raw_os_error().map_or(Errno::EAGAIN, Errno::from_raw))
            })?;
        Ok(Self {
            watched,
            jobs,
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::procfs::bounded::Bounds;

    fn reader() -> WorkerReader {
        let bounds = Bounds::new(Duration::from_secs(5), 2);
        WorkerReader::new(Arc::new(
            ProcSource::open("/proc", 4096, None, bounds).unwrap(),
        ))
    }

    #[test]
    fn a_read_in_time_comes_back_whole_and_the_worker_stays() {
        let mut r = reader();
        let me = std::process::id() as i32;
        for _ in 0..2 {
            let p = r
                .read(me, Source::Poll, &ArgvPatterns::NONE)
                .unwrap()
                .expect("this process");
            assert_eq!(p.pid, me);
            assert!(!p.comm.is_empty() && !p.argv.is_empty(), "{p:?}");
            assert!(p.unavailable.is_empty(), "{p:?}");
        }
        assert!(r.worker.is_some(), "one worker serves every read");
    }

    #[test]
    fn a_kernel_thread_has_no_record_and_a_gone_pid_is_flagged() {
        let mut r = reader();
        // kthreadd.
        assert!(r
            .read(2, Source::Poll, &ArgvPatterns::NONE)
            .unwrap()
            .is_none());
        let gone = r
            .read(i32::MAX, Source::Poll, &ArgvPatterns::NONE)
            .unwrap()
            .expect("a record");
        assert!(gone.exited_before_inspection, "{gone:?}");
    }
}
