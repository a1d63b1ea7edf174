//! The agent's running totals (`GetStats` counters), shared by the
//! detector, the subscriptions and the service. What the fan-out publishes (execs, exits), who is hooked to it
//! and their overflows are the fan-out's own counts
//! ([`crate::stream::fanout::Fanout::counts`]), read from there when
//! `GetStats` asks, never copied here.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use execwatch::proto;

use execwatch::internal::lock::lock;

/// Counters since start, each monotonic.
#[derive(Debug)]
pub struct Totals {
    started: Instant,
    detector: Mutex<(String, String, u64)>,
    privilege: proto::Privilege,
    counts: Counts,
}

/// Declares the counters (each a `GetStats` field of the same name), an
/// `add_` method for each, and their copy into a `GetStats` answer.
macro_rules! counters {
    ($($(#[$doc:meta])* $add:ident => $field:ident;)*) => {
        /// The counters, zero at start.
        #[derive(Debug, Default)]
        struct Counts {
            $($field: AtomicU64,)*
        }

        impl Totals {
            $($(#[$doc])* pub fn $add(&self, n: u64) { self.counts.$field.fetch_add(n, Relaxed); })*

            /// Copies every counter into `into`.
            fn load_counts(&self, into: &mut proto::Stats) {
                $(into.$field = self.counts.$field.load(Relaxed);)*
            }
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
    /// Leader renames published as `renamed` records.
    add_renames => renames;
    /// Audits run.
    add_audits => audits;
    /// Running processes the audit found a subscriber was never sent.
    add_audit_found => audit_found;
}

impl Totals {
    /// Zero counters, for an agent that runs as `privilege`, settled once
    /// at start ([`crate::privilege::settle`]).
    pub fn new(privilege: proto::Privilege) -> Self {
        Self {
            started: Instant::now(),
            detector: Mutex::default(),
            privilege,
            counts: Counts::default(),
        }
    }

    /// Records which detector runs, its subscription mode and buffer size.
    pub fn set_detector(&self, name: &str, mode: &str, receive_buffer_bytes: u64) {
        *lock(&self.detector) = (name.to_string(), mode.to_string(), receive_buffer_bytes);
    }

    /// The counters as the wire contract carries them, added to the
    /// fan-out's `published` counts (its fields of the same answer).
    pub fn snapshot(&self, published: proto::Stats) -> proto::Stats {
        let (detector, subscription_mode, receive_buffer_bytes) = lock(&self.detector).clone();
        let mut stats = proto::Stats {
            detector,
            subscription_mode,
            receive_buffer_bytes,
            privilege: Some(self.privilege),
            uptime_seconds: self.started.elapsed().as_secs(),
            ..published
        };
        self.load_counts(&mut stats);
        stats
    }
}
