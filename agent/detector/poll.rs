//! The poll detector: scan `/proc` every interval and report
//! processes not seen before, by pid and start time, and processes whose
//! command name changed since the last scan (an `execve` keeps pid and start
//! time: `bash -c '…; exec java …'`).
//!
//! It needs no netlink and no host network, but it costs a read of every
//! `/proc/<pid>/stat` per scan and misses processes that live shorter than
//! one interval (and an exec that keeps the comm, such as a program
//! re-executing itself). Pids that vanish between scans are reported as exits.
//!
//! A new process's record is read by a [`Worker`], so a
//! read that hangs is given up at `--proc-read-timeout` and the scans go
//! on. A new process is read in full only if some subscriber's selector could
//! want it ([`crate::stream::selector::Interest`]): with none, or with comm
//! selectors its comm is in none of, the `stat` every scan reads anyway is
//! all it costs.
//!
//! A scan the agent cannot finish for a reason of its own (out of
//! descriptors or memory) changes nothing it knows and is reported once as
//! `lost` (site detector); the next scan that works finds what it missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use execwatch::proto::{Exit, LossSite, Source};
use nix::errno::Errno;

use crate::procfs::mount::ProcMount;
use crate::procfs::reader::{own, Exhausted, Identity, ProcReader};
use crate::procfs::worker::Worker;
use crate::stream::fanout::{Fanout, Item};
use execwatch::internal::clock;
use execwatch::internal::cn_proc::comm_bytes;

/// A poll detector that has taken its first inventory.
pub struct Poller {
    /// Lists `/proc` and reads each process's `stat`, which takes no lock
    /// of the process and so needs no time bound.
    reader: ProcReader,
    /// Reads new processes' records, each bounded in time.
    records: Worker,
    /// pid -> identity of the process last seen under that pid.
    known: HashMap<i32, Identity>,
}

impl Poller {
    /// Scans once to learn what already runs (nothing is published for it:
    /// subscribers get running processes from their own snapshot). Done
    /// before the socket exists, so a launch after a client connects is
    /// never mistaken for part of the inventory.
    pub fn start(source: Arc<ProcMount>) -> std::io::Result<Self> {
        let mut reader = source.reader().map_err(std::io::Error::other)?;
        let known = identities(&mut reader)?;
        Ok(Self {
            records: Worker::new(source),
            reader,
            known,
        })
    }

    /// Scans every `interval`, forever, on the calling thread; returns only
    /// if `/proc` cannot be listed for a reason other than the agent's own
    /// exhaustion.
    pub fn run(mut self, interval: Duration, fanout: Arc<Fanout>) -> std::io::Error {
        // Whether the last scan failed for want of descriptors or memory (its
        // loss is reported once per episode).
        let mut failing = false;
        loop {
            std::thread::sleep(interval);
            match self.scan(&fanout) {
                Ok(Ok(())) => failing = false,
                Ok(Err(exhausted)) => {
                    if !std::mem::replace(&mut failing, true) {
                        let reason = format!("a /proc scan failed: {exhausted}; processes started or ended meanwhile may have been missed");
                        tracing::warn!("{reason}; subscribers will resync");
                        fanout.publish_loss(LossSite::Detector, reason, None);
                    }
                }
                Err(e) => return e,
            }
        }
    }

    /// One scan. The outer error stops the detector; the inner one leaves
    /// what it knows unchanged and is tried again next interval.
    fn scan(&mut self, fanout: &Fanout) -> std::io::Result<Result<(), Exhausted>> {
        let pids = match self.reader.pids() {
            Ok(pids) => pids,
            Err(e) => match e.raw_os_error().map(|raw| own(Errno::from_raw(raw))) {
                Some(Err(exhausted)) => return Ok(Err(exhausted)),
                _ => return Err(e),
            },
        };
        let mut alive = HashMap::with_capacity(pids.len());
        for pid in pids {
            let id = match self.reader.identity(pid) {
                Ok(Some(id)) => id,
                Ok(None) => continue,
                Err(e) => {
                    // What this scan published stands; the rest waits.
                    self.known.extend(alive);
                    return Ok(Err(e));
                }
            };
            alive.insert(pid, id);
            let previous = self.known.get(&pid).copied();
            if previous == Some(id) {
                continue;
            }
            if previous.is_some_and(|p| p.start_ticks != id.start_ticks) {
                // The pid was reused: the process we knew under it is gone.
                publish_exit(fanout, pid);
            }
            // New pid, reused pid, or a new program in a known process: read
            // only as far as some subscriber could want it (the stat just
            // read holds the comm). Such an exec is counted, not published,
            // as the netlink detector does (crate::detector::receiver); a
            // subscriber that joins later finds it in its snapshot.
            let interest = fanout.interest();
            if !interest.may_want(comm_bytes(&id.comm)) {
                fanout.skip_exec();
                continue;
            }
            let read = self
                .records
                .read(&mut vec![pid], Source::Poll, interest.argv());
            let p = match (read.why, read.records.into_iter().next()) {
                (None, Some(p)) => p,
                // A kernel thread.
                (None, None) => continue,
                (Some(e), _) => {
                    // Not published: the next scan that works reports it.
                    alive.remove(&pid);
                    self.known.remove(&pid);
                    self.known.extend(alive);
                    return Ok(Err(e));
                }
            };
            if p.start_ticks != id.start_ticks && p.start_ticks != 0 {
                // Reused again between the two reads; the next scan has it.
                alive.remove(&pid);
                continue;
            }
            fanout.publish(Item::Exec(Arc::new(p)));
        }
        for pid in self.known.keys().filter(|pid| !alive.contains_key(pid)) {
            publish_exit(fanout, *pid);
        }
        self.known = alive;
        Ok(Ok(()))
    }
}

/// Every process `/proc` lists, by pid (one gone meanwhile is left out).
pub fn identities(reader: &mut ProcReader) -> std::io::Result<HashMap<i32, Identity>> {
    let pids = reader.pids()?;
    let ids = pids.into_iter().map(|pid| {
        let id = reader.identity(pid).map_err(std::io::Error::other)?;
        Ok(id.map(|id| (pid, id)))
    });
    ids.filter_map(Result::transpose).collect()
}

/// Reports that the process last seen under `pid` is gone.
fn publish_exit(fanout: &Fanout, pid: i32) {
    fanout.publish(Item::Exit(Exit {
        pid,
        tgid: pid,
        observed_unix_ns: clock::unix_ns(),
        source: Source::Poll as i32,
        ..Default::default()
    }));
}
