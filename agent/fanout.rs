//! Fan-out from the one detector to every subscriber, without ever
//! waiting on a subscriber.
//!
//! The detector calls [`Fanout::publish`]; each subscriber has its own bounded
//! queue and gets the event with `try_send`. A subscriber whose queue is full
//! is unhooked on the spot: its queue is left to drain, then its stream task
//! finds the [`Overflow`] record, re-subscribes, tells its client `lost` (with
//! the exact number of events it missed) and sends a fresh snapshot. The
//! detector and the other subscribers never notice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use execwatch::proto::{Exit, Process};
use tokio::sync::mpsc;

use crate::stats::Stats;

/// One item a detector publishes.
#[derive(Debug, Clone)]
pub enum Item {
    /// A process was executed.
    Exec(Arc<Process>),
    /// A thread-group leader exited (small and `Copy`: no sharing needed).
    Exit(Exit),
    /// The detector lost events it cannot name; every subscriber must resync.
    DetectorLost {
        /// Whether the kernel or the detector itself lost them.
        kernel: bool,
        /// What happened, for the `lost` marker.
        reason: String,
    },
}

/// Why a subscriber was unhooked, read by its stream task once its queue is
/// drained.
#[derive(Debug, Default)]
pub struct Overflow {
    /// Events of the subscriber's kinds published up to and including the one
    /// that did not fit (so at least 1); 0 while the subscriber is hooked.
    at: AtomicU64,
}

/// A subscriber's end: its queue and its overflow record.
pub struct Subscription {
    /// Items in publish order.
    pub rx: mpsc::Receiver<Item>,
    /// Set when the fan-out unhooked this subscriber.
    pub overflow: Arc<Overflow>,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Item>,
    include_exits: bool,
    overflow: Arc<Overflow>,
}

#[derive(Default)]
struct Inner {
    subscribers: Vec<Subscriber>,
    next_id: u64,
    execs: u64,
    exits: u64,
}

impl Inner {
    fn published(&self, include_exits: bool) -> u64 {
        self.execs + if include_exits { self.exits } else { 0 }
    }
}

/// The subscriber registry shared by the detector and the gRPC service.
pub struct Fanout {
    inner: Mutex<Inner>,
    queue_len: usize,
    stats: Arc<Stats>,
}

impl Fanout {
    /// A fan-out whose subscribers each queue at most `queue_len` items.
    pub fn new(queue_len: usize, stats: Arc<Stats>) -> Self {
        Self {
            inner: Mutex::default(),
            queue_len: queue_len.max(1),
            stats,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters and senders
        // behind: still consistent enough to keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hooks up a new subscriber; items published from now on reach it.
    pub fn subscribe(&self, include_exits: bool) -> Subscription {
        self.hook(&mut self.lock(), include_exits)
    }

    fn hook(&self, inner: &mut Inner, include_exits: bool) -> Subscription {
        let (tx, rx) = mpsc::channel(self.queue_len);
        let overflow = Arc::new(Overflow::default());
        inner.next_id += 1;
        let id = inner.next_id;
        inner.subscribers.push(Subscriber {
            id,
            tx,
            include_exits,
            overflow: overflow.clone(),
        });
        self.stats.set_subscribers(inner.subscribers.len());
        Subscription { rx, overflow }
    }

    /// Re-hooks a subscriber that overflowed. Returns the new subscription and
    /// how many of its events were dropped in between (0 if it never
    /// overflowed).
    pub fn resubscribe(&self, old: &Overflow, include_exits: bool) -> (Subscription, u64) {
        // One critical section: no event can slip between counting and hooking.
        let mut inner = self.lock();
        let sub = self.hook(&mut inner, include_exits);
        let now = inner.published(include_exits);
        let missed = match old.at.swap(0, Ordering::SeqCst) {
            0 => 0,
            // `at` already counts the event that did not fit.
            at => now + 1 - at.min(now + 1),
        };
        (sub, missed)
    }

    /// Whether this subscription was unhooked for falling behind.
    pub fn overflowed(overflow: &Overflow) -> bool {
        overflow.at.load(Ordering::SeqCst) != 0
    }

    /// Delivers `item` to every subscriber that wants it. Never blocks on a
    /// subscriber: a full queue unhooks that subscriber.
    pub fn publish(&self, item: Item) {
        let mut inner = self.lock();
        match &item {
            Item::Exec(_) => inner.execs += 1,
            Item::Exit(_) => inner.exits += 1,
            Item::DetectorLost { .. } => {}
        }
        let (execs, exits) = (inner.execs, inner.exits);
        let mut unhooked = 0;
        inner.subscribers.retain(|s| {
            if matches!(item, Item::Exit(_)) && !s.include_exits {
                return true;
            }
            match s.tx.try_send(item.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let published = execs + if s.include_exits { exits } else { 0 };
                    s.overflow.at.store(published.max(1), Ordering::SeqCst);
                    tracing::warn!(
                        subscriber = s.id,
                        "subscriber queue full; it will get a lost marker and a resync"
                    );
                    unhooked += 1;
                    false
                }
                // The stream ended; its task is gone.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.stats.add_subscriber_overflows(unhooked);
        self.stats.set_subscribers(inner.subscribers.len());
    }

    /// Forgets subscribers whose streams ended (publish also does this).
    pub fn prune(&self) {
        let mut inner = self.lock();
        inner.subscribers.retain(|s| !s.tx.is_closed());
        self.stats.set_subscribers(inner.subscribers.len());
    }
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
