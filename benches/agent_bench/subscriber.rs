//! A gRPC subscriber over the agent's Unix socket: what a policy engine sees.
//!
//! One `Watch` stream (live execs only, no snapshot), read by a task on the
//! benchmark's tokio runtime. For every `exec` item it reads
//! `CLOCK_MONOTONIC` as soon as the item is decoded and keeps it by pid,
//! together with which enrichment fields the agent filled in.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use execwatch::proto::{watch_event::Kind, Process, WatchRequest};

use crate::timing::{monotonic_ns, Arrivals};

/// Bits of [`Seen::fields`]: which parts of the record were there.
pub mod field {
    /// `comm` non-empty.
    pub const COMM: u8 = 1;
    /// `argv` non-empty.
    pub const ARGV: u8 = 2;
    /// `exe` present.
    pub const EXE: u8 = 4;
    /// `credentials` (uid) present.
    pub const UID: u8 = 8;
    /// `cgroup` present with a path.
    pub const CGROUP: u8 = 16;
    /// All of the above.
    pub const ALL: u8 = 31;
}

/// Everything the stream delivered so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// Receive time of each exec, by pid.
    pub arrivals: Arrivals,
    /// Field bits of the latest exec record, by pid.
    pub fields: HashMap<i32, u8>,
    /// Exec items received.
    pub execs: u64,
    /// `lost` markers received.
    pub lost_markers: u64,
    /// Sum of the `count` of those markers (where known).
    pub lost_count: u64,
    /// Why the stream ended, if it did.
    pub ended: Option<String>,
}

/// A live subscription.
pub struct Subscriber {
    /// Filled by the reading task.
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects, opens the stream and returns once a process spawned here
    /// (`probe`, e.g. `["/bin/true"]`, or a longer-lived one for the poll
    /// detector) has come through it: the subscription is live.
    pub fn start(rt: &tokio::runtime::Runtime, socket: &Path, probe: &[&str]) -> Self {
        Self::selecting(rt, socket, probe, &[])
    }

    /// As [`Subscriber::start`], selecting the processes whose command line
    /// holds one of `argv_substrings` (none: every process).
    pub fn selecting(
        rt: &tokio::runtime::Runtime,
        socket: &Path,
        probe: &[&str],
        argv_substrings: &[&str],
    ) -> Self {
        let mut stream = rt.block_on(async {
            let mut client = execwatch::client::exec_events(socket)
                .await
                .expect("connect to the agent");
            let req = WatchRequest {
                include_exits: false,
                skip_snapshot: true,
                argv_substrings: argv_substrings.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            client.watch(req).await.expect("Watch").into_inner()
        });
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let sink = seen.clone();
        let task = rt.spawn(async move {
            loop {
                let ev = stream.message().await;
                let at = monotonic_ns();
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                match ev {
                    Ok(Some(ev)) => match ev.kind {
                        Some(Kind::Exec(p)) => {
                            s.execs += 1;
                            s.arrivals.record(p.pid, at);
                            s.fields.insert(p.pid, fields(&p));
                        }
                        Some(Kind::Lost(l)) => {
                            s.lost_markers += 1;
                            s.lost_count += l.count;
                        }
                        _ => {}
                    },
                    Ok(None) => {
                        s.ended = Some("the agent closed the stream".into());
                        return;
                    }
                    Err(status) => {
                        s.ended = Some(format!("stream failed: {status}"));
                        return;
                    }
                }
            }
        });
        let sub = Self { seen, task };
        sub.wait_live(probe);
        sub
    }

    /// Runs `probe` until one of its runs is delivered (15 s at most).
    fn wait_live(&self, probe: &[&str]) {
        let start = Instant::now();
        loop {
            let t0 = monotonic_ns();
            let pid = Command::new(probe[0])
                .args(&probe[1..])
                .spawn()
                .map(|mut c| {
                    let _ = c.wait();
                    c.id() as i32
                });
            let pid = pid.unwrap_or_else(|e| panic!("spawn {probe:?}: {e}"));
            for _ in 0..25 {
                std::thread::sleep(Duration::from_millis(20));
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if seen.arrivals.first_after(pid, t0).is_some() {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no {probe:?} reached the subscriber within 15 s"
            );
        }
    }

    /// Exec items received so far.
    pub fn execs(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).execs
    }

    /// Waits until no exec has arrived for `quiet` (at most `limit`).
    pub fn settle(&self, quiet: Duration, limit: Duration) {
        let start = Instant::now();
        let mut last = (self.execs(), Instant::now());
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
            let n = self.execs();
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return;
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which fields of `p` are filled.
fn fields(p: &Process) -> u8 {
    let mut bits = 0;
    let mut set = |cond: bool, bit: u8| {
        if cond {
            bits |= bit;
        }
    };
    set(!p.comm.is_empty(), field::COMM);
    set(!p.argv.is_empty(), field::ARGV);
    set(p.exe.is_some(), field::EXE);
    set(p.credentials.is_some(), field::UID);
    set(
        p.cgroup.as_ref().is_some_and(|c| !c.path.is_empty()),
        field::CGROUP,
    );
    bits
}
