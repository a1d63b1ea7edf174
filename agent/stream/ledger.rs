//! What one subscriber was offered, process by process: what keeps a
//! rename from reaching a subscriber already sent the process, and what the
//! audit (`crate::detector::audit`) compares the running processes with.
//!
//! A process is known by pid and start time. Every record offered to the
//! subscriber, live or in a snapshot, is noted with its comm and whether
//! the subscriber's selector passed it (then it was sent). The ledger holds
//! one entry per pid and is bounded by the running processes, however many
//! execs come between two audits: an exit forgets its pid
//! ([`Ledger::forget`]), and each audit forgets the pids its scan found gone
//! or reused, whose exits the kernel dropped ([`Ledger::prune`]).

use std::collections::HashMap;

use execwatch::internal::clock;
use execwatch::proto::Process;

use crate::procfs::reader::Identity;
use crate::stream::selector::Filter;

/// One subscriber's ledger.
#[derive(Debug, Default)]
pub struct Ledger {
    offered: HashMap<i32, Offered>,
    /// Snapshots queued or under way for this subscriber: until they are
    /// complete, what it was offered is not whole and the audit leaves it
    /// alone.
    pub snapshots: u32,
    /// Processes started before this (clock ticks since boot) were never
    /// offered: the subscriber skipped its first snapshot. 0 once a
    /// snapshot completed.
    pub floor: u64,
}

/// The process offered under a pid.
#[derive(Debug, Clone, Copy, Default)]
struct Offered {
    start_ticks: u64,
    /// Its comm when it was last offered, NUL-padded.
    comm: [u8; 16],
    /// The subscriber was sent it, once at least.
    sent: bool,
    /// The audit round it was noted in.
    round: u64,
}

/// `comm`'s bytes as the kernel pads them.
fn padded(comm: &[u8]) -> [u8; 16] {
    let mut out = [0; 16];
    let n = comm.len().min(16);
    out[..n].copy_from_slice(&comm[..n]);
    out
}

impl Ledger {
    /// The ledger of a subscriber hooked now: `snapshot` if its stream
    /// starts with one; else what started before now was never offered.
    pub fn new(snapshot: bool) -> Self {
        Self {
            offered: HashMap::new(),
            snapshots: snapshot.into(),
            floor: if snapshot { 0 } else { clock::boot_ticks() },
        }
    }

    /// Notes that `p` was offered in audit round `round`, and `sent` if
    /// the subscriber was sent it (a process sent once stays sent).
    pub fn note(&mut self, p: &Process, sent: bool, round: u64) {
        // One hash lookup: this runs for every exec and every subscriber.
        let e = self.offered.entry(p.pid).or_default();
        *e = Offered {
            start_ticks: p.start_ticks,
            comm: padded(p.comm.as_bytes()),
            sent: sent || (e.sent && e.start_ticks == p.start_ticks),
            round,
        };
    }

    /// Whether to send `p` (live or in a snapshot) to this subscriber, whose
    /// selector is `filter`, noted in audit round `round`. A rename goes
    /// only to a subscriber not sent the process.
    pub fn offer(&mut self, p: &Process, filter: Option<&Filter>, round: u64) -> bool {
        let wanted = !(p.renamed && self.sent(p)) && filter.is_none_or(|f| f.offer_process(p));
        self.note(p, wanted, round);
        wanted
    }

    /// Whether the subscriber was sent the process of `p` (pid and start
    /// time).
    pub fn sent(&self, p: &Process) -> bool {
        self.offered
            .get(&p.pid)
            .is_some_and(|e| e.sent && e.start_ticks == p.start_ticks)
    }

    /// Whether the process `pid` is, as a scan found it, decided for this
    /// subscriber: sent, or offered with this comm (a process offered and
    /// passed over must be looked at again once renamed), or started
    /// before the floor.
    pub fn decided(&self, pid: i32, id: &Identity) -> bool {
        id.start_ticks < self.floor
            || self.offered.get(&pid).is_some_and(|e| {
                let comm = execwatch::internal::cn_proc::comm_bytes(&id.comm);
                e.start_ticks == id.start_ticks && (e.sent || e.comm == padded(comm))
            })
    }

    /// Whether `p` runs the program its parent was offered with: a copy
    /// the parent forked without executing anything (a shell's subshell, a
    /// server's worker), for which the kernel sends no exec. Its parent
    /// decided it.
    pub fn forked(&self, p: &Process) -> bool {
        let parent = self.offered.get(&p.ppid);
        parent
            .is_some_and(|e| e.comm == padded(p.comm.as_bytes()) && e.start_ticks <= p.start_ticks)
    }

    /// Forgets the process of `pid`, which exited.
    pub fn forget(&mut self, pid: i32) {
        self.offered.remove(&pid);
    }

    /// Forgets the processes that a scan begun in round `round` found gone
    /// or reused; what was noted since that scan began stays.
    pub fn prune(&mut self, live: &HashMap<i32, Identity>, round: u64) {
        self.offered.retain(|pid, e| {
            e.round >= round
                || live
                    .get(pid)
                    .is_some_and(|id| id.start_ticks == e.start_ticks)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: i32, comm: &str, start_ticks: u64) -> Process {
        Process {
            pid,
            comm: comm.into(),
            start_ticks,
            ..Default::default()
        }
    }

    fn id(comm: &str, start_ticks: u64) -> Identity {
        Identity {
            start_ticks,
            comm: padded(comm.as_bytes()),
        }
    }

    #[test]
    fn a_process_is_decided_once_sent_or_passed_over_under_its_comm() {
        let mut l = Ledger::new(true);
        l.note(&process(1, "java", 10), true, 1);
        l.note(&process(2, "bash", 10), false, 1);
        assert!(l.decided(1, &id("java", 10)));
        assert!(l.decided(1, &id("renamed", 10)), "sent once is sent");
        assert!(l.decided(2, &id("bash", 10)));
        assert!(!l.decided(2, &id("java", 10)), "passed over as bash");
        assert!(!l.decided(1, &id("java", 11)), "another process");
        assert!(!l.decided(3, &id("java", 10)), "never offered");
        // Passed over later does not undo sent.
        l.note(&process(1, "javac", 10), false, 1);
        assert!(l.sent(&process(1, "x", 10)));
    }

    #[test]
    fn the_floor_decides_what_started_before_a_stream_without_snapshot() {
        let l = Ledger {
            floor: 100,
            ..Ledger::new(false)
        };
        assert_eq!(l.snapshots, 0);
        assert!(l.decided(5, &id("java", 99)));
        assert!(!l.decided(5, &id("java", 100)));
    }

    #[test]
    fn pruning_keeps_what_runs_and_what_is_newer_than_the_scan() {
        let mut l = Ledger::new(true);
        l.note(&process(1, "a", 10), true, 1);
        l.note(&process(2, "b", 10), true, 1);
        l.note(&process(3, "c", 10), true, 1);
        l.note(&process(4, "d", 10), true, 2);
        let live = HashMap::from([(1, id("a", 10)), (2, id("b", 11))]);
        l.prune(&live, 2);
        assert!(l.sent(&process(1, "a", 10)), "runs");
        assert!(!l.sent(&process(2, "b", 10)), "pid reused");
        assert!(!l.sent(&process(3, "c", 10)), "gone");
        assert!(l.sent(&process(4, "d", 10)), "noted during the scan");
        assert_eq!(l.offered.len(), 2);
    }
}
