//! The poll detector (rung 1): scan `/proc` every interval and report
//! processes not seen before, by pid and start time, and processes whose
//! command name changed since the last scan (an `execve` keeps pid and start
//! time: `bash -c '…; exec java …'`).
//!
//! It needs no netlink and no host network, but it costs a read of every
//! `/proc/<pid>/stat` per scan and misses processes that live shorter than
//! one interval (and an exec that keeps the comm, such as a program
//! re-executing itself). Pids that vanish between scans are reported as exits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use execwatch::proto::{Exit, Source};

use crate::fanout::{Fanout, Item};
use crate::procfs::{Identity, ProcReader};
use crate::stats::Stats;
use execwatch::clock;

/// A poll detector that has taken its first inventory.
pub struct Poller {
    reader: ProcReader,
    interval: Duration,
    /// pid -> identity of the process last seen under that pid.
    known: HashMap<i32, Identity>,
}

impl Poller {
    /// Scans once to learn what already runs (nothing is published for it:
    /// subscribers get running processes from their own snapshot). Done
    /// before the socket exists, so a launch after a client connects is
    /// never mistaken for part of the inventory.
    pub fn start(mut reader: ProcReader, interval: Duration) -> std::io::Result<Self> {
        let mut known = HashMap::new();
        for pid in reader.pids()? {
            if let Some(id) = reader.identity(pid) {
                known.insert(pid, id);
            }
        }
        Ok(Self {
            reader,
            interval,
            known,
        })
    }

    /// Scans forever on the calling thread; returns only if `/proc` cannot
    /// be listed.
    pub fn run(mut self, fanout: Arc<Fanout>, stats: Arc<Stats>) -> std::io::Error {
        loop {
            std::thread::sleep(self.interval);
            if let Err(e) = self.scan(&fanout, &stats) {
                return e;
            }
        }
    }

    fn scan(&mut self, fanout: &Fanout, stats: &Stats) -> std::io::Result<()> {
        let reader = &mut self.reader;
        let pids = reader.pids()?;
        let mut alive = HashMap::with_capacity(pids.len());
        for pid in pids {
            let Some(id) = reader.identity(pid) else {
                continue;
            };
            alive.insert(pid, id);
            let previous = self.known.get(&pid).copied();
            if previous == Some(id) {
                continue;
            }
            if previous.is_some_and(|p| p.start_ticks != id.start_ticks) {
                // The pid was reused: the process we knew under it is gone.
                publish_exit(fanout, stats, pid);
            }
            // New pid, reused pid, or a new program in a known process.
            if let Some(p) = reader.read(pid, pid, Source::Poll) {
                if p.start_ticks != id.start_ticks && p.start_ticks != 0 {
                    // Reused again between the two reads; the next scan has it.
                    alive.remove(&pid);
                    continue;
                }
                stats.add_execs(1);
                fanout.publish(Item::Exec(Arc::new(p)));
            }
        }
        for pid in self.known.keys().filter(|pid| !alive.contains_key(pid)) {
            publish_exit(fanout, stats, *pid);
        }
        self.known = alive;
        Ok(())
    }
}

/// Reports that the process last seen under `pid` is gone.
fn publish_exit(fanout: &Fanout, stats: &Stats, pid: i32) {
    stats.add_exits(1);
    fanout.publish(Item::Exit(Exit {
        pid,
        tgid: pid,
        observed_unix_ns: clock::unix_ns(),
        source: Source::Poll as i32,
        ..Default::default()
    }));
}
