//! The agent's counters, shared by the detector, the subscriptions and the
//! service. What the fan-out publishes (execs, exits), who is hooked to it
//! and their overflows are the fan-out's own counts
//! ([`crate::stream::fanout::Counts`]), read from there when `GetStats`
//! asks, never copied here.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use execwatch::proto;

use crate::stream::fanout::Counts;

/// Counters since start, each monotonic.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    detector: Mutex<(String, String, u64)>,
    ignored_kernel_events: AtomicU64,
    kernel_overruns: AtomicU64,
    exited_before_inspection: AtomicU64,
    subscribers_total: AtomicU64,
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
    /// Kernel events read but not wanted.
    add_ignored_kernel_events => ignored_kernel_events;
    /// ENOBUFS reports from the kernel.
    add_kernel_overruns => kernel_overruns;
    /// Execs whose process was gone before it could be read.
    add_exited_before_inspection => exited_before_inspection;
    /// Subscribers accepted.
    add_subscribers_total => subscribers_total;
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
            ignored_kernel_events: AtomicU64::new(0),
            kernel_overruns: AtomicU64::new(0),
            exited_before_inspection: AtomicU64::new(0),
            subscribers_total: AtomicU64::new(0),
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

    /// The counters as the wire contract carries them, with the fan-out's
    /// `published` counts.
    pub fn snapshot(&self, published: Counts) -> proto::Stats {
        let (detector, subscription_mode, receive_buffer_bytes) = self
            .detector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        proto::Stats {
            detector,
            subscription_mode,
            receive_buffer_bytes,
            execs: published.execs,
            exits: published.exits,
            ignored_kernel_events: self.ignored_kernel_events.load(Relaxed),
            kernel_overruns: self.kernel_overruns.load(Relaxed),
            exited_before_inspection: self.exited_before_inspection.load(Relaxed),
            subscribers: published.subscribers,
            subscribers_total: self.subscribers_total.load(Relaxed),
            subscriber_overflows: published.subscriber_overflows,
            subscribers_cut_off: self.subscribers_cut_off.load(Relaxed),
            snapshots: self.snapshots.load(Relaxed),
            peers_denied: self.peers_denied.load(Relaxed),
            uptime_seconds: self.started.elapsed().as_secs(),
            parse_errors: self.parse_errors.load(Relaxed),
            unreadable_execs: self.unreadable_execs.load(Relaxed),
        }
    }
}
