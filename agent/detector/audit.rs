//! The audit: what the kernel dropped without telling, found while it
//! still runs.
//!
//! The proc connector sends each event without waiting for memory; an event
//! the kernel cannot allocate is dropped with no `ENOBUFS` and no other
//! trace (its per-CPU sequence number moves on, but with the exec filter
//! gaps are normal, so a gap proves nothing). Under memory pressure, as when
//! an owner starts a large JVM on a loaded workstation, an exec can so
//! vanish. Every `--audit-interval` a thread of its own lists `/proc` and
//! reads each process's `stat` (comm and start time, as the poll detector
//! does), and compares that with each subscriber's [`Ledger`]: a running
//! process that the subscriber's selector passes and that it was never sent
//! (pid and start time) is a miss. That subscriber alone gets `lost` (site
//! audit, the count of such processes) and a resync snapshot (cause audit),
//! which lists them as `existing`: a consumer that handles loss today acts
//! on it unchanged. A miss is caught within one interval of the launch.
//!
//! Cheap fields first: a subscriber that selects by comm alone is decided
//! on the comm of the `stat` read anyway; only a process that is in no
//! ledger and that a subscriber matching argv or the executable might want
//! is read in full (after a silent drop, or a rename the kernel dropped).
//!
//! The audit never holds up the reader on I/O: it reads `/proc` on its own
//! thread, holds a subscriber's ledger only to compare it with the scan,
//! and takes the fan-out's lock only to queue a loss. Before it calls a
//! process missed it makes sure the reader has handled everything the
//! kernel queued until its scan ended, and [`CONFIRM`] later, so that an
//! exec still on its way is not taken for a miss ([`Barrier`]). A process
//! forked without an exec runs its parent's program and is decided by its
//! parent ([`Ledger::forked`]).

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use execwatch::internal::cn_proc::comm_bytes;
use execwatch::internal::lock::lock;
use execwatch::proto::{LossSite, Source};

use crate::detector::poll::identities;
use crate::procfs::mount::ProcMount;
use crate::procfs::worker::Worker;
use crate::stream::fanout::{DetectorLoss, Fanout};
#[cfg(doc)]
use crate::stream::ledger::Ledger;
use crate::stream::selector::Interest;
use crate::totals::Totals;

/// Longest the audit waits for the reader to reach its marker; past it
/// (the marker was dropped too, or a read is stuck) it decides anyway, so
/// at worst it sends a process twice, never misses one.
const BARRIER_PATIENCE: Duration = Duration::from_secs(2);

/// How long a suspect is given before the barrier: the kernel shows a new
/// comm in `/proc` early in an exec and sends the exec event at its end, and
/// a busy CPU may hold the process in between.
const CONFIRM: Duration = Duration::from_millis(200);

/// The audit thread's name, which it sets again to make its marker (the
/// kernel reports every `PR_SET_NAME`, the same name included).
const MARKER: &std::ffi::CStr = c"audit";

/// How the audit knows that the reader has caught up with the kernel.
///
/// The audit thread renames itself: the kernel queues that comm event on the
/// exec socket after every event queued before it, and the reader, which
/// handles events in order, reports it here ([`Barrier::pass`]) after it has
/// published every exec before it.
#[derive(Debug, Default)]
pub struct Barrier {
    /// The audit thread's id (0 before it starts).
    tid: AtomicI32,
    /// Markers the reader has reached.
    passed: Mutex<u64>,
    reached: Condvar,
}

impl Barrier {
    /// The reader saw thread `pid` of the agent rename itself: if it is the
    /// audit's marker, the reader has handled everything before it.
    pub fn pass(&self, pid: i32) {
        if pid == self.tid.load(Ordering::Relaxed) {
            *lock(&self.passed) += 1;
            self.reached.notify_all();
        }
    }

    /// Sends a marker and waits until the reader has reached it, for at
    /// most [`BARRIER_PATIENCE`]. Whether it did.
    fn cross(&self) -> bool {
        let before = *lock(&self.passed);
        if nix::sys::prctl::set_name(MARKER).is_err() {
            return false;
        }
        let passed = lock(&self.passed);
        let reached = &self.reached;
        let waited = reached.wait_timeout_while(passed, BARRIER_PATIENCE, |n| *n == before);
        waited.is_ok_and(|(_, timeout)| !timeout.timed_out())
    }
}

/// The audit's thread and what it works with.
struct Audit {
    procfs: Arc<ProcMount>,
    fanout: Arc<Fanout>,
    stats: Arc<Totals>,
    barrier: Arc<Barrier>,
    /// Reads a suspect's full record, bounded in time.
    records: Worker,
}

/// Starts the audit on a thread of its own, every `interval`. Returns the
/// [`Barrier`] the reader reports the audit's markers to.
pub fn start(
    interval: Duration,
    procfs: Arc<ProcMount>,
    fanout: Arc<Fanout>,
    stats: Arc<Totals>,
) -> std::io::Result<Arc<Barrier>> {
    let barrier = Arc::new(Barrier::default());
    let mut audit = Audit {
        records: Worker::new(procfs.clone()),
        procfs,
        fanout,
        stats,
        barrier: barrier.clone(),
    };
    std::thread::Builder::new()
        .name(MARKER.to_string_lossy().into())
        .spawn(move || audit.run(interval))
        .map(|_| barrier)
}

impl Audit {
    fn run(&mut self, interval: Duration) {
        let tid = nix::unistd::gettid().as_raw();
        self.barrier.tid.store(tid, Ordering::Relaxed);
        loop {
            std::thread::sleep(interval);
            let started = Instant::now();
            match self.once() {
                Ok(found) => {
                    self.stats.add_audits(1);
                    let took_us = started.elapsed().as_micros() as u64;
                    tracing::debug!(found, took_us, "audit done");
                }
                // The reader reports the agent's own exhaustion as loss; the
                // next audit tries again.
                Err(e) => tracing::debug!("audit skipped: {e}"),
            }
        }
    }

    /// One audit; returns how many misses it found.
    fn once(&mut self) -> io::Result<u64> {
        let round = self.fanout.begin_round();
        // Lists `/proc` and reads `stat` (no lock of the process: no bound).
        let live = identities(&mut self.procfs.reader().map_err(io::Error::other)?)?;
        let mut suspects = Vec::new();
        for audited in self.fanout.ledgers() {
            let (sub, filter, ledger) = (audited.id, audited.filter, audited.ledger);
            let interest = Interest::of([filter.as_deref().map(|f| &f.selector)]);
            let mut l = lock(&ledger);
            l.prune(&live, round);
            if l.snapshots > 0 || interest == Interest::Nothing {
                continue;
            }
            let mut pids: Vec<i32> = live
                .iter()
                .filter(|(pid, id)| {
                    !l.decided(**pid, id) && interest.may_want(comm_bytes(&id.comm))
                })
                .map(|(pid, _)| *pid)
                .collect();
            drop(l);
            // Parents before their children: a fork copy of a fork copy is
            // decided once its parent is.
            pids.sort_unstable_by_key(|pid| live[pid].start_ticks);
            if !pids.is_empty() {
                suspects.push((sub, filter, ledger, pids));
            }
        }
        if suspects.is_empty() {
            return Ok(0);
        }
        std::thread::sleep(CONFIRM);
        if !self.barrier.cross() {
            tracing::debug!("the reader did not reach the audit's marker in time; deciding anyway");
        }
        let mut total = 0;
        for (sub, filter, ledger, pids) in suspects {
            let mut found = 0;
            // The subscriber's own substrings, as its snapshots search them.
            let argv = filter.as_ref().map(|f| f.selector.argv.clone());
            let argv = argv.unwrap_or_default();
            for pid in pids {
                let id = live[&pid];
                let l = lock(&ledger);
                if l.snapshots > 0 {
                    // A resync is on its way: it covers the rest.
                    break;
                }
                if l.decided(pid, &id) {
                    continue;
                }
                drop(l);
                // Read in full only now: a rare suspect, not every process.
                let read = self.records.read(&mut vec![pid], Source::Snapshot, &argv);
                if let Some(e) = read.why {
                    return Err(io::Error::other(e));
                }
                let Some(p) = read.records.into_iter().next() else {
                    continue;
                };
                if p.start_ticks != id.start_ticks || p.exited_before_inspection {
                    continue;
                }
                let mut l = lock(&ledger);
                let wanted = !l.forked(&p) && filter.as_ref().is_none_or(|f| f.selector.wants(&p));
                if wanted {
                    tracing::info!(subscriber = sub, pid, ppid = p.ppid, comm = %p.comm, start_ticks = p.start_ticks, "the audit found a process never sent");
                } else {
                    l.note(&p, false, round);
                }
                found += u64::from(wanted);
            }
            if found > 0 {
                let reason = format!(
                    "the audit found {found} running processes this subscriber selects and was never sent \
                     (the kernel dropped their events without telling); resyncing"
                );
                tracing::warn!(subscriber = sub, "{reason}");
                let loss = DetectorLoss {
                    site: LossSite::Audit,
                    reason,
                    count: Some(found),
                };
                self.fanout.resync(sub, Arc::new(loss));
                total += found;
            }
        }
        self.stats.add_audit_found(total);
        Ok(total)
    }
}
