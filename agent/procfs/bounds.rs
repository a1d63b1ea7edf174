//! The bounds on a mount's `/proc` reads: how long one may take, and how
//! many may be left behind at once ([`crate::procfs::watchdog`] enforces
//! them). One per mount, shared by every thread that reads it.

use std::sync::Mutex;
use std::time::Duration;

use execwatch::internal::lock::lock;
use execwatch::proto::Process;

use crate::procfs::reader::{unavailable, Exhausted, Field};

/// How long a read may take and how many may be left behind.
#[derive(Debug)]
pub struct Bounds {
    pub(super) deadline: Duration,
    pub(super) max_stuck: usize,
    /// The pid of each read left behind and not back yet.
    stuck: Mutex<Vec<i32>>,
}

impl Bounds {
    /// Reads take at most `deadline`; at most `max_stuck` are left behind.
    pub fn new(deadline: Duration, max_stuck: usize) -> Self {
        Self {
            deadline,
            max_stuck: max_stuck.max(1),
            stuck: Mutex::default(),
        }
    }

    /// Whether a read of `record`'s process may start now: `false` if an
    /// earlier read of it is stuck, and `record` now says so. An error when
    /// as many reads are stuck as allowed: do not read, report loss.
    pub(super) fn admit(&self, record: &mut Process) -> Result<bool, Exhausted> {
        let stuck = lock(&self.stuck);
        let pid = record.pid;
        if stuck.contains(&pid) {
            let why = format!(
                "an earlier read of /proc/{pid} timed out after {:?} and has not returned; not read again until it does",
                self.deadline
            );
            unavailable(record, Field::All.name(), why);
            return Ok(false);
        }
        if stuck.len() >= self.max_stuck {
            return Err(Exhausted::Stuck(stuck.len()));
        }
        Ok(true)
    }

    /// Whether no more reads may be left behind.
    pub fn full(&self) -> bool {
        lock(&self.stuck).len() >= self.max_stuck
    }

    /// A read of `pid` was given up; its thread is left behind. Returns how
    /// many are now.
    pub(super) fn left_behind(&self, pid: i32) -> usize {
        let mut stuck = lock(&self.stuck);
        stuck.push(pid);
        stuck.len()
    }

    /// A read of `pid` that was left behind has returned.
    pub(super) fn returned(&self, pid: i32) {
        let mut stuck = lock(&self.stuck);
        if let Some(i) = stuck.iter().position(|&p| p == pid) {
            stuck.swap_remove(i);
        }
        tracing::info!(
            pid,
            still_stuck = stuck.len(),
            "a /proc read given up earlier has returned"
        );
    }
}
