//! The poll detector (rung 1): scan `/proc` every interval and report
//! processes not seen before, by pid and start time.
//!
//! It needs no netlink and no host network, but it costs a read of every
//! `/proc/<pid>/stat` per scan and misses processes that live shorter than
//! one interval. Pids that vanish between scans are reported as exits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use execwatch::proto::{Exit, Source};

use crate::fanout::{Fanout, Item};
use crate::procfs::ProcReader;
use crate::stats::Stats;
use execwatch::clock;

/// Scans forever on the calling thread.
pub fn run(
    mut reader: ProcReader,
    interval: Duration,
    fanout: Arc<Fanout>,
    stats: Arc<Stats>,
) -> std::io::Error {
    // pid -> start time of the process last seen under that pid.
    let mut known: HashMap<i32, u64> = HashMap::new();
    let mut first = true;
    loop {
        let pids = match reader.pids() {
            Ok(pids) => pids,
            Err(e) => return e,
        };
        let mut alive = HashMap::with_capacity(pids.len());
        for pid in pids {
            let Some(start) = reader.start_ticks(pid) else {
                continue;
            };
            alive.insert(pid, start);
            let previous = known.get(&pid).copied();
            if previous == Some(start) || first {
                continue;
            }
            if previous.is_some() {
                // The pid was reused: the process we knew under it is gone.
                publish_exit(&fanout, &stats, pid);
            }
            // New pid, or a reused one: either way a process we have not seen.
            if let Some(p) = reader.read(pid, pid, Source::Poll) {
                if p.start_ticks != start && p.start_ticks != 0 {
                    // Reused again between the two reads; the next scan has it.
                    alive.remove(&pid);
                    continue;
                }
                stats.add_execs(1);
                fanout.publish(Item::Exec(Arc::new(p)));
            }
        }
        if !first {
            for pid in known.keys().filter(|pid| !alive.contains_key(pid)) {
                publish_exit(&fanout, &stats, *pid);
            }
        }
        known = alive;
        first = false;
        std::thread::sleep(interval);
    }
}

/// Reports that the process last seen under `pid` is gone.
fn publish_exit(fanout: &Fanout, stats: &Stats, pid: i32) {
    stats.add_exits(1);
    fanout.publish(Item::Exit(Arc::new(Exit {
        pid,
        tgid: pid,
        observed_unix_ns: clock::unix_ns(),
        source: Source::Poll as i32,
        ..Default::default()
    })));
}
