//! The reclaimer's one owner task: it holds the rules, the running processes
//! and the state of the request on the Node, and decides when to write.
//!
//! ```text
//!            match                      patched
//!   Idle ─────────────▶ Writing ─────────────────▶ Requested
//!    ▲                     │ refused (e.g. host-id)    │ controller cleared the
//!    │                     ▼                           │ annotations (seen by a
//!    └──── retry after ── Blocked                      │ periodic GET) → Idle,
//!          the interval                                │ and a still-running
//!    ◀─────────────────────────────────────────────────┘ match fires again
//! ```
//!
//! Node I/O goes through a [`NodeWriter`] and runs in background jobs (a
//! `JoinSet` whose results the loop collects), so the loop never stops
//! reading the agent's stream. In `--dry-run` there is no Node: a request counts as outstanding
//! until no matching process runs.

use std::sync::Arc;
use std::time::Duration;

use execwatch::proto::{watch_event::Kind, Process};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::agent_link::watch::LinkEvent;
use crate::metrics::Metrics;
use crate::node::error::NodeError;
use crate::node::reclaim_request::{self, Outcome};
use crate::node::writer::{NodeWriter, Sent};
use crate::process_table::ProcessTable;
use crate::rules::{Match, Rules};

/// How long a stop waits for a Node write in progress: well inside the
/// pod's termination grace period.
pub const WRITE_GRACE: Duration = Duration::from_secs(2);

/// Settings of the loop.
pub struct Settings {
    /// How often the Node is re-read while a request is outstanding (and how
    /// long a refused write waits before it is tried again).
    pub recheck: Duration,
    /// Put argv in logs (off by default: arguments may hold secrets).
    pub log_argv: bool,
    /// The liveness file to rewrite every few seconds, if any.
    pub status_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Writing,
    Requested,
    Blocked { until: Instant },
}

enum JobResult {
    Written(Result<Outcome, NodeError>),
    Checked(Result<bool, NodeError>),
}

/// The decision loop's state.
pub struct Decider {
    rules: Rules,
    table: ProcessTable,
    state: State,
    agent_connected: bool,
    writer: Box<dyn NodeWriter>,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Node I/O in flight, run in the background so that the loop goes on
    /// reading the stream meanwhile.
    jobs: JoinSet<JobResult>,
}

impl Decider {
    /// A decider that starts inert until the first rules arrive.
    pub fn new(writer: Box<dyn NodeWriter>, settings: Settings, metrics: Arc<Metrics>) -> Self {
        // With a real Node, start by finding out whether a request is already
        // there (e.g. written before a restart): treat it as outstanding
        // until the first check says otherwise.
        let state = if writer.holds_requests() {
            State::Requested
        } else {
            State::Idle
        };
        Self {
            rules: Rules::inert(),
            table: ProcessTable::default(),
            state,
            agent_connected: false,
            writer,
            settings,
            metrics,
            jobs: JoinSet::new(),
        }
    }

    /// Runs until `shutdown` completes or the inputs close.
    pub async fn run(
        mut self,
        mut link: mpsc::Receiver<LinkEvent>,
        mut rules: mpsc::Receiver<Rules>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.settings.recheck);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_tick = tokio::time::interval(crate::status::PERIOD);
        loop {
            tokio::select! {
                ev = link.recv() => match ev {
                    Some(ev) => self.on_link(ev),
                    None => return,
                },
                r = rules.recv() => match r {
                    Some(r) => self.on_rules(r),
                    None => return,
                },
                Some(Ok(job)) = self.jobs.join_next() => self.on_job(job),
                _ = tick.tick() => self.on_tick(),
                _ = status_tick.tick() => self.write_status(),
                _ = &mut shutdown => {
                    if self.state == State::Writing {
                        tracing::info!("waiting up to {WRITE_GRACE:?} for the Node write in progress");
                        match tokio::time::timeout(WRITE_GRACE, self.jobs.join_next()).await {
                            Ok(Some(Ok(job))) => self.on_job(job),
                            // Not lost: the process still runs, so the next
                            // start finds it in the agent's snapshot and
                            // writes then.
                            _ => tracing::warn!("stopping before the Node write landed; the next start writes it if the process still runs"),
                        }
                    }
                    return;
                }
            }
        }
    }

    fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => {
                self.agent_connected = true;
                self.table.snapshot_begin();
            }
            LinkEvent::Disconnected => self.agent_connected = false,
            LinkEvent::Event(ev) => {
                self.metrics.events.inc();
                match ev.kind {
                    Some(Kind::Exec(p) | Kind::Existing(p)) => {
                        self.consider(&p);
                        self.table.insert(p);
                    }
                    Some(Kind::SnapshotComplete(c)) => {
                        self.table.snapshot_complete();
                        tracing::debug!(
                            listed = c.processes,
                            running = self.table.len(),
                            "snapshot complete"
                        );
                        self.dry_run_release();
                    }
                    Some(Kind::Lost(lost)) => {
                        self.metrics.lost_markers.inc();
                        tracing::warn!(reason = %lost.reason, count = lost.count, count_known = lost.count_known, "the agent lost events; resyncing from its snapshot");
                        self.table.snapshot_begin();
                    }
                    Some(Kind::Exit(e)) => {
                        self.table.exit(e.pid);
                        self.dry_run_release();
                    }
                    None => {}
                }
            }
        }
    }

    fn on_rules(&mut self, r: Rules) {
        tracing::debug!(scope = %r.scope(), "applying new rules to {} running processes", self.table.len());
        self.rules = r;
        self.evaluate_table();
    }

    /// A process was seen: fire if it matches and nothing is outstanding.
    fn consider(&mut self, p: &Process) {
        if self.state != State::Idle {
            return;
        }
        if let Some(m) = self.rules.matches(p) {
            self.fire(p, m);
        }
    }

    /// New rules, or the way is clear again: does anything running match?
    fn evaluate_table(&mut self) {
        if self.state != State::Idle {
            return;
        }
        if let Some((p, m)) = self.table.first_match(&self.rules) {
            let p = p.clone();
            self.fire(&p, m);
        }
    }

    fn fire(&mut self, p: &Process, m: Match) {
        self.metrics.matches.inc();
        let argv = if self.settings.log_argv {
            p.argv.join(" ")
        } else {
            "<hidden: --log-argv>".into()
        };
        tracing::info!(comm = %p.comm, pid = p.pid, pattern = %m.pattern, matcher = %m.matcher, %argv, "process matched: requesting reclaim");
        // Latency is measured from when the agent observed the process.
        let age = execwatch::internal::clock::unix_ns().saturating_sub(p.observed_unix_ns);
        let observed = std::time::Instant::now()
            .checked_sub(Duration::from_nanos(age.min(3_600_000_000_000)))
            .unwrap_or_else(std::time::Instant::now);
        let req = reclaim_request::Request {
            reason: m.reason(),
            at: reclaim_request::rfc3339_now(),
            comm: p.comm.clone(),
            pid: p.pid,
            observed,
        };
        self.state = match self.writer.request(req) {
            Sent::Now => State::Requested,
            Sent::Pending(job) => {
                self.jobs.spawn(job.map(JobResult::Written));
                State::Writing
            }
        };
    }

    fn on_job(&mut self, job: JobResult) {
        match job {
            JobResult::Written(Ok(Outcome::Written)) => {
                tracing::info!("reclaim requested: Node annotated");
                self.state = State::Requested;
            }
            JobResult::Written(Ok(Outcome::AlreadyRequested)) => {
                tracing::info!("a reclaim request is already on the Node; leaving it as it is");
                self.state = State::Requested;
            }
            JobResult::Written(Err(e)) => {
                tracing::error!("{e}");
                self.state = State::Blocked {
                    until: Instant::now() + self.settings.recheck,
                };
            }
            JobResult::Checked(Ok(false)) if self.state == State::Requested => {
                tracing::info!("no reclaim request on the Node (cleared by the controller, or none yet); armed");
                self.state = State::Idle;
                self.evaluate_table();
            }
            JobResult::Checked(Ok(_)) => {}
            JobResult::Checked(Err(e)) => tracing::warn!("cannot re-read the Node: {e}"),
        }
    }

    fn on_tick(&mut self) {
        match self.state {
            State::Blocked { until } if Instant::now() >= until => {
                self.state = State::Idle;
                self.evaluate_table();
            }
            // In Requested the only job can be a re-read: one at a time.
            State::Requested if self.writer.holds_requests() && self.jobs.is_empty() => {
                self.jobs
                    .spawn(self.writer.requested().map(JobResult::Checked));
            }
            _ => {}
        }
    }

    /// Rewrites the liveness file; written from this loop so that a stuck
    /// loop shows as a stale file.
    fn write_status(&self) {
        if let Some(path) = &self.settings.status_file {
            if let Err(e) = crate::status::write(path, self.agent_connected, &self.rules.summary())
            {
                tracing::warn!("cannot write the status file {}: {e}", path.display());
            }
        }
    }

    /// In dry-run the "request" is over once no matching process runs.
    fn dry_run_release(&mut self) {
        if !self.writer.holds_requests()
            && self.state == State::Requested
            && self.table.first_match(&self.rules).is_none()
        {
            tracing::info!("dry-run: no matching process runs any more; armed again");
            self.state = State::Idle;
        }
    }
}

#[cfg(test)]
mod tests;
