//! The processes running now, as the agent's stream describes them.
//!
//! It holds what the stream sends: the running processes the rules'
//! selector lets through, a superset of what the rules match (not only the
//! matching ones, so a process that stops matching is still known). New
//! rules — a ConfigMap armed while a JVM already runs — re-subscribe, and
//! the new stream's snapshot fills the table with what they could match.
//! A snapshot (at connect or after `lost`) is a mark-and-sweep: entries it
//! does not list are gone.

use std::collections::{HashMap, HashSet};

use execwatch::proto::Process;

use crate::rules::{Match, Rules};

/// pid → latest record.
#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<i32, Process>,
    /// Pids listed by the snapshot in progress, if one is.
    resync: Option<HashSet<i32>>,
}

impl ProcessTable {
    /// A process runs, executed or listed by a snapshot: it replaces
    /// whatever ran under that pid, and a snapshot in progress counts it as
    /// listed.
    pub fn insert(&mut self, p: Process) {
        if let Some(seen) = &mut self.resync {
            seen.insert(p.pid);
        }
        self.procs.insert(p.pid, p);
    }

    /// A process exited.
    pub fn exit(&mut self, pid: i32) -> Option<Process> {
        self.procs.remove(&pid)
    }

    /// A snapshot starts: from now until [`ProcessTable::snapshot_complete`],
    /// entries are collected.
    pub fn snapshot_begin(&mut self) {
        self.resync = Some(HashSet::new());
    }

    /// The snapshot is over: forget every process it did not list.
    pub fn snapshot_complete(&mut self) {
        if let Some(seen) = self.resync.take() {
            self.procs.retain(|pid, _| seen.contains(pid));
        }
    }

    /// How many processes are known.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// The earliest-started running process the rules match, if any.
    pub fn first_match(&self, rules: &Rules) -> Option<(&Process, Match)> {
        self.procs
            .values()
            .filter_map(|p| rules.matches(p).map(|m| (p, m)))
            .min_by_key(|(p, _)| (p.start_ticks, p.pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: i32, comm: &str, start: u64) -> Process {
        Process {
            pid,
            tgid: pid,
            comm: comm.into(),
            start_ticks: start,
            ..Default::default()
        }
    }

    #[test]
    fn exec_exit_and_sweep() {
        let rules = Rules::parse(r#"match_commands = ["java"]"#).unwrap();
        let mut t = ProcessTable::default();
        t.insert(proc(10, "java", 5));
        t.insert(proc(11, "bash", 6));
        assert_eq!(t.first_match(&rules).unwrap().0.pid, 10);
        t.exit(10);
        assert!(t.first_match(&rules).is_none());

        // A resync that no longer lists 11 but lists a new java.
        t.snapshot_begin();
        t.insert(proc(12, "java", 9));
        t.insert(proc(13, "java", 7));
        t.snapshot_complete();
        assert_eq!(t.len(), 2);
        let (p, m) = t.first_match(&rules).unwrap();
        assert_eq!(
            (p.pid, m.pattern.as_str()),
            (13, "java"),
            "earliest start wins"
        );
        assert!(t.first_match(&Rules::inert()).is_none());
    }
}
