//! The agent's counters, shared by the detector, the fan-out and the service.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use execwatch::proto;

/// Counters since start. Every field is monotonic except `subscribers`.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    detector: Mutex<(String, String, u64)>,
    execs: AtomicU64,
    exits: AtomicU64,
    ignored_kernel_events: AtomicU64,
    kernel_overruns: AtomicU64,
    exited_before_inspection: AtomicU64,
    subscribers: AtomicU64,
    subscribers_total: AtomicU64,
    subscriber_overflows: AtomicU64,
    subscribers_cut_off: AtomicU64,
    snapshots: AtomicU64,
    peers_denied: AtomicU64,
    parse_errors: AtomicU64,
    unreadable_execs: AtomicU64,
}

macro_rules! counters {
    ($($(#[$doc:meta])* $add:ident => $field:ident;)*) => {
        impl Stats {
            $($(#[$doc])* pub fn $add(&self, n: u64) { self.$field.fetch_add(n, Relaxed); })*
        }
    };
}

counters! {
    /// Exec events produced by the detector.
    add_execs => execs;
    /// Exit events produced by the detector.
    add_exits => exits;
    /// Kernel events read but not wanted.
    add_ignored_kernel_events => ignored_kernel_events;
    /// ENOBUFS reports from the kernel.
    add_kernel_overruns => kernel_overruns;
    /// Execs whose process was gone before it could be read.
    add_exited_before_inspection => exited_before_inspection;
    /// Subscribers accepted.
    add_subscribers_total => subscribers_total;
    /// Subscriber queues that overflowed.
    add_subscriber_overflows => subscriber_overflows;
    /// Subscribers cut off for falling behind repeatedly.
    add_subscribers_cut_off => subscribers_cut_off;
    /// Snapshots sent.
    add_snapshots => snapshots;
    /// Peers refused by the uid allow-list.
    add_peers_denied => peers_denied;
    /// Malformed kernel messages skipped.
    add_parse_errors => parse_errors;
    /// Exec events whose record the agent could not read (its own exhaustion).
    add_unreadable_execs => unreadable_execs;
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            detector: Mutex::default(),
            execs: AtomicU64::new(0),
            exits: AtomicU64::new(0),
            ignored_kernel_events: AtomicU64::new(0),
            kernel_overruns: AtomicU64::new(0),
            exited_before_inspection: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            subscribers_total: AtomicU64::new(0),
            subscriber_overflows: AtomicU64::new(0),
            subscribers_cut_off: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            peers_denied: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            unreadable_execs: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// Records which detector runs, its subscription mode and buffer size.
    pub fn set_detector(&self, name: &str, mode: &str, receive_buffer_bytes: u64) {
        *self.detector.lock().unwrap_or_else(|e| e.into_inner()) =
            (name.to_string(), mode.to_string(), receive_buffer_bytes);
    }

    /// Records how many subscribers are connected now.
    pub fn set_subscribers(&self, n: usize) {
        self.subscribers.store(n as u64, Relaxed);
    }

    /// The counters as the wire contract carries them.
    pub fn snapshot(&self) -> proto::Stats {
        let (detector, subscription_mode, receive_buffer_bytes) = self
            .detector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        proto::Stats {
            detector,
            subscription_mode,
            receive_buffer_bytes,
            execs: self.execs.load(Relaxed),
            exits: self.exits.load(Relaxed),
            ignored_kernel_events: self.ignored_kernel_events.load(Relaxed),
            kernel_overruns: self.kernel_overruns.load(Relaxed),
            exited_before_inspection: self.exited_before_inspection.load(Relaxed),
            subscribers: self.subscribers.load(Relaxed),
            subscribers_total: self.subscribers_total.load(Relaxed),
            subscriber_overflows: self.subscriber_overflows.load(Relaxed),
            subscribers_cut_off: self.subscribers_cut_off.load(Relaxed),
            snapshots: self.snapshots.load(Relaxed),
            peers_denied: self.peers_denied.load(Relaxed),
            uptime_seconds: self.started.elapsed().as_secs(),
            parse_errors: self.parse_errors.load(Relaxed),
            unreadable_execs: self.unreadable_execs.load(Relaxed),
        }
    }
}
