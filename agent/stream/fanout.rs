//! Fan-out from the one detector to every subscriber, without ever
//! waiting on a subscriber.
//!
//! The detector calls [`Fanout::publish`]; each subscriber has its own queue,
//! bounded both in items and in bytes (the encoded size of what it holds),
//! and gets the event with `try_send`. That queue is read by the
//! subscriber's gRPC response stream itself, with nothing in between. A
//! subscriber whose queue is full is unhooked on the spot: its queue is left
//! to drain, then its stream finds where it overflowed, re-subscribes,
//! tells its client `lost` and sends a fresh snapshot. The detector and the
//! other subscribers never notice.
//!
//! The fan-out owns the counts of what it publishes (execs, exits), of the
//! subscribers hooked to it and of their overflows; `GetStats` reads them
//! here ([`Fanout::counts`], those fields of its answer), and nothing else
//! keeps a copy. An exec the
//! detector did not read in full because no subscriber could want it
//! ([`Fanout::skip_exec`]) counts as one published to nobody.
//!
//! It also keeps the union of its hooked subscribers' selectors, the
//! [`Interest`] the detector reads before each exec ([`Fanout::interest`]).
//!
//! What the `lost` says is exact: the events published while the subscriber
//! was unhooked are counted, and a detector loss it missed in that time
//! (including the loss item that did not fit) is reported as that loss, with
//! its site, and with a count only if every missed loss had one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use execwatch::proto::{self, Exit, LossSite, Process};
use prost::Message;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::stream::ledger::Ledger;
use crate::stream::selector::{Choice, Filter, Interest};
use execwatch::internal::lock::lock;

/// One item a detector publishes.
#[derive(Debug, Clone)]
pub enum Item {
    /// A process was executed.
    Exec(Arc<Process>),
    /// A thread-group leader exited (small and `Copy`: no sharing needed).
    Exit(Exit),
    /// The detector lost events; every subscriber must resync.
    DetectorLost(Arc<DetectorLoss>),
}

/// Events lost before they reached the fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorLoss {
    /// [`LossSite::Kernel`] (the socket overflowed) or
    /// [`LossSite::Detector`] (the agent could not read the processes).
    pub site: LossSite,
    /// What happened, for the `lost` marker.
    pub reason: String,
    /// How many exec events were lost, when known.
    pub count: Option<u64>,
}

/// What a subscriber missed while it was unhooked, as
/// [`Fanout::resubscribe`] works it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// Events of the subscriber's kinds published while it was unhooked,
    /// the one that did not fit included.
    pub events: u64,
    /// The detector's losses it missed in that time, merged: the last one's
    /// site and reason, a count only if every one had a count (then their
    /// sum).
    pub upstream: Option<DetectorLoss>,
}

/// A hooked subscriber as the audit sees it ([`Fanout::ledgers`]).
#[derive(Clone)]
pub struct Audited {
    /// Its id, for [`Fanout::resync`].
    pub id: u64,
    /// Its selector, if it chose processes.
    pub filter: Option<Arc<Filter>>,
    /// What it was offered.
    pub ledger: Arc<Mutex<Ledger>>,
}

/// One subscriber's queue as the fan-out and the subscriber's end both
/// see it.
#[derive(Debug, Default)]
struct Queue {
    /// Bytes queued now.
    bytes: AtomicUsize,
    /// Where the fan-out stood just before the item that did not fit, when
    /// it unhooked the subscriber; `None` while it is hooked. Read by its
    /// stream once the queue is drained.
    overflow: Mutex<Option<Mark>>,
    /// What the subscriber was offered.
    ledger: Arc<Mutex<Ledger>>,
}

/// The fan-out's running totals of what it published; a copy taken at one
/// point is subtracted from later ones.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Mark {
    execs: u64,
    exits: u64,
    /// Detector losses.
    losses: u64,
    /// How many of those had no count.
    uncounted: u64,
    /// The sum of the counts of the others.
    counted: u64,
}

/// A subscriber's end of its queue. Dropping it unhooks the subscriber.
pub struct Subscription {
    /// Items in publish order.
    /// Each item with the bytes it was counted as, so that taking it out
    /// subtracts exactly that without weighing it again.
    rx: mpsc::Receiver<(Item, usize)>,
    queue: Arc<Queue>,
    /// Its entry in the registry, and the registry.
    id: u64,
    fanout: Arc<Fanout>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // At once, not at the next publish: the subscriber count is read
        // from the registry.
        let (fanout, id) = (&self.fanout, self.id);
        fanout.retain(&mut lock(&fanout.inner), |s| s.id != id);
    }
}

impl Subscription {
    /// The next item; `None` once the fan-out let go of this subscriber and
    /// its queue is empty.
    pub async fn recv(&mut self) -> Option<Item> {
        let (item, bytes) = self.rx.recv().await?;
        self.queue.bytes.fetch_sub(bytes, Ordering::Relaxed);
        Some(item)
    }

    /// Whether the fan-out unhooked this subscriber for falling behind.
    pub fn overflowed(&self) -> bool {
        lock(&self.queue.overflow).is_some()
    }

    /// What this subscriber was offered; its snapshots note their records
    /// here.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.queue.ledger)
    }

    /// The audit round now, to note a record offered now in.
    pub fn round(&self) -> u64 {
        self.fanout.round.load(Ordering::Relaxed)
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<(Item, usize)>,
    include_exits: bool,
    /// The subscriber's selector, if it chose processes.
    filter: Option<Arc<Filter>>,
    queue: Arc<Queue>,
}

#[derive(Default)]
struct Inner {
    subscribers: Vec<Subscriber>,
    next_id: u64,
    published: Mark,
    overflows: u64,
    last_loss: Option<Arc<DetectorLoss>>,
}

/// The subscriber registry shared by the detector and the gRPC service.
pub struct Fanout {
    inner: Mutex<Inner>,
    /// What the subscribers in `inner` could want, written only under
    /// `inner`'s lock; the detector reads it without that lock.
    interest: Mutex<Arc<Interest>>,
    /// How many items each subscriber's queue holds at most.
    pub queue_len: usize,
    queue_bytes: usize,
    /// Audit rounds begun ([`Ledger::prune`]).
    round: AtomicU64,
}

impl Fanout {
    /// A fan-out whose subscribers each queue at most `queue_len` items
    /// and `queue_bytes` bytes of encoded items. An item larger than
    /// `queue_bytes` still fits an empty queue (the caller keeps records
    /// below it).
    pub fn new(queue_len: usize, queue_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            interest: Mutex::default(),
            queue_len: queue_len.max(1),
            queue_bytes,
            round: AtomicU64::new(0),
        }
    }

    /// What the hooked subscribers could want of a new process, now. Cheap
    /// (a lock held for a reference count), read once per exec, after the
    /// exec was received.
    ///
    /// It is worked out again only when a subscriber is hooked or unhooked,
    /// and a subscriber's share is in it before the subscriber is hooked
    /// (in the same critical section). So an exec the detector decides on
    /// with an older interest was received, and happened, before the
    /// subscriber was hooked: the snapshot that follows the hook covers that
    /// process (if it still runs), exactly as when it was published just
    /// before the hook.
    pub fn interest(&self) -> Arc<Interest> {
        lock(&self.interest).clone()
    }

    /// Sets the interest to the union of `inner`'s subscribers' selectors
    /// (the caller holds `inner`'s lock, so two updates cannot cross).
    fn set_interest(&self, inner: &Inner) {
        let filters = inner.subscribers.iter().map(|s| s.filter.as_deref());
        let interest = Interest::of(filters.map(|f| f.map(|f| &f.selector)));
        let mut current = lock(&self.interest);
        if **current != interest {
            *current = Arc::new(interest);
        }
    }

    /// An exec the detector did not read in full because the interest
    /// ruled it out: counted as if published to nobody, which is what it
    /// would have been. A subscriber unhooked meanwhile is told of it in
    /// its `lost` count like of any other exec.
    pub fn skip_exec(&self) {
        lock(&self.inner).published.execs += 1;
    }

    /// What was published and who is hooked, now: the fan-out's fields of
    /// a `GetStats` answer, the others left at zero. `execs` counts the
    /// execs skipped because no subscriber could want them too;
    /// `subscribers` leaves out one unhooked for falling behind until it
    /// re-subscribes.
    pub fn counts(&self) -> proto::Stats {
        let inner = lock(&self.inner);
        proto::Stats {
            execs: inner.published.execs,
            exits: inner.published.exits,
            subscribers: inner.subscribers.len() as u64,
            subscriber_overflows: inner.overflows,
            ..proto::Stats::default()
        }
    }

    /// Hooks up a new subscriber; items published from now on reach it (of
    /// those with a process, the ones its filter passes). Its stream starts
    /// with a snapshot unless it skips it, which begins here for its filter
    /// and ledger.
    pub fn subscribe(self: &Arc<Self>, choice: &Choice) -> Subscription {
        self.hook(&mut lock(&self.inner), choice, !choice.skip_snapshot)
    }

    fn hook(self: &Arc<Self>, inner: &mut Inner, choice: &Choice, snapshot: bool) -> Subscription {
        let (tx, rx) = mpsc::channel(self.queue_len);
        let queue = Arc::new(Queue::default());
        *lock(&queue.ledger) = Ledger::new(snapshot);
        if let Some(f) = choice.filter.as_ref().filter(|_| snapshot) {
            f.snapshot_begin();
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.subscribers.push(Subscriber {
            id,
            tx,
            include_exits: choice.include_exits,
            filter: choice.filter.clone(),
            queue: queue.clone(),
        });
        // Before anything is published to it: see `Fanout::interest`.
        self.set_interest(inner);
        Subscription {
            rx,
            queue,
            id,
            fanout: self.clone(),
        }
    }

    /// Re-hooks a subscriber that overflowed. Returns the new subscription and
    /// what was missed in between (`None` if it never overflowed).
    pub fn resubscribe(
        self: &Arc<Self>,
        old: &Subscription,
        choice: &Choice,
    ) -> (Subscription, Option<Missed>) {
        // One critical section: no event can slip between counting and hooking.
        let mut inner = lock(&self.inner);
        // The resync snapshot that follows begins here, in order with the
        // items the new subscription is offered.
        let sub = self.hook(&mut inner, choice, true);
        let now = inner.published;
        let missed = lock(&old.queue.overflow).take().map(|at| {
            let upstream = (now.losses > at.losses).then(|| {
                let last = inner.last_loss.as_deref().cloned();
                let last = last.expect("a loss was published");
                DetectorLoss {
                    count: (now.uncounted == at.uncounted).then(|| now.counted - at.counted),
                    ..last
                }
            });
            let exits = choice.include_exits.then_some(now.exits - at.exits);
            Missed {
                events: now.execs - at.execs + exits.unwrap_or(0),
                upstream,
            }
        });
        (sub, missed)
    }

    /// Publishes a loss of the detector's own, which every subscriber
    /// resyncs after.
    pub fn publish_loss(&self, site: LossSite, reason: String, count: Option<u64>) {
        let loss = DetectorLoss {
            site,
            reason,
            count,
        };
        self.publish(Item::DetectorLost(Arc::new(loss)));
    }

    /// Delivers `item` to every subscriber that wants it. Never blocks on a
    /// subscriber: a full queue unhooks that subscriber.
    pub fn publish(&self, item: Item) {
        let mut inner = lock(&self.inner);
        // Counted after it is offered: what an unhooked subscriber missed
        // starts with it.
        self.deliver(&mut inner, &item, None);
        match &item {
            Item::Exec(_) => inner.published.execs += 1,
            Item::Exit(_) => inner.published.exits += 1,
            Item::DetectorLost(loss) => {
                inner.published.losses += 1;
                match loss.count {
                    Some(n) => inner.published.counted += n,
                    None => inner.published.uncounted += 1,
                }
                inner.last_loss = Some(loss.clone());
            }
        }
    }

    /// Offers `item` to every hooked subscriber (to subscriber `only`, if
    /// given) that wants it, before it is counted. A full queue unhooks its
    /// subscriber, marked as overflowed where the totals stood before the
    /// item.
    fn deliver(&self, inner: &mut Inner, item: &Item, only: Option<u64>) {
        let before = inner.published;
        let round = self.round.load(Ordering::Relaxed);
        // What the item weighs in a queue: its encoded size (a record
        // shared by several queues counts in each).
        let bytes = match item {
            Item::Exec(p) => p.encoded_len(),
            Item::Exit(e) => e.encoded_len(),
            Item::DetectorLost(l) => l.reason.len() + 32,
        };
        let mut unhooked = 0;
        self.retain(inner, |s| {
            if only.is_some_and(|id| s.id != id) {
                return true;
            }
            let filter = s.filter.as_deref();
            let wanted = match item {
                Item::Exec(p) => lock(&s.queue.ledger).offer(p, filter, round),
                Item::Exit(e) => {
                    lock(&s.queue.ledger).forget(e.pid);
                    s.include_exits && filter.is_none_or(|f| f.offer_exit(e.pid))
                }
                // The resync snapshot after this loss begins here.
                Item::DetectorLost(_) => {
                    if let Some(f) = filter {
                        f.snapshot_begin();
                    }
                    lock(&s.queue.ledger).snapshots += 1;
                    true
                }
            };
            if !wanted {
                return true;
            }
            // Counted before the send: the subscriber may take the item (and
            // subtract it) before this line would run after it.
            let queued = s.queue.bytes.fetch_add(bytes, Ordering::Relaxed);
            let sent = if queued > 0 && queued + bytes > self.queue_bytes {
                Err(TrySendError::Full(()))
            } else {
                // Reserved before the item is cloned: a full queue costs no
                // clone.
                s.tx.try_reserve()
                    .map(|permit| permit.send((item.clone(), bytes)))
            };
            // A closed queue's stream ended (its subscription unhooks it
            // too), and its queue and filter with it: nothing to give back.
            if let Err(TrySendError::Full(())) = sent {
                s.queue.bytes.fetch_sub(bytes, Ordering::Relaxed);
                if let Item::DetectorLost(_) = item {
                    // Not queued: no snapshot follows it.
                    snapshot_end(filter, &mut lock(&s.queue.ledger));
                }
                *lock(&s.queue.overflow) = Some(before);
                tracing::warn!(
                    subscriber = s.id,
                    "subscriber queue full; it will get a lost marker and a resync"
                );
                unhooked += 1;
            }
            sent.is_ok()
        });
        inner.overflows += unhooked;
    }

    /// Keeps the subscribers `keep` passes; narrows the interest if any
    /// went (reading more than the rest want until then only sends nobody
    /// more).
    fn retain(&self, inner: &mut Inner, keep: impl FnMut(&Subscriber) -> bool) {
        let hooked = inner.subscribers.len();
        inner.subscribers.retain(keep);
        if inner.subscribers.len() < hooked {
            self.set_interest(inner);
        }
    }

    /// Begins an audit round: returns it, for [`Ledger::prune`].
    pub fn begin_round(&self) -> u64 {
        self.round.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Every hooked subscriber, as the audit sees it.
    pub fn ledgers(&self) -> Vec<Audited> {
        let inner = lock(&self.inner);
        let subs = inner.subscribers.iter();
        subs.map(|s| Audited {
            id: s.id,
            filter: s.filter.clone(),
            ledger: s.queue.ledger.clone(),
        })
        .collect()
    }

    /// Queues `loss` to subscriber `id` alone (if it is still hooked), with
    /// a resync snapshot after it: what the audit does for a subscriber it
    /// found was never sent some running process it selects. A full queue
    /// unhooks it as [`Fanout::publish`] does, and it resyncs all the same.
    pub fn resync(&self, id: u64, loss: Arc<DetectorLoss>) {
        self.deliver(&mut lock(&self.inner), &Item::DetectorLost(loss), Some(id));
    }
}

/// A snapshot of a subscriber with `filter` and `ledger` is complete, or
/// one announced (when a loss is queued) will not come after all.
pub fn snapshot_end(filter: Option<&Filter>, ledger: &mut Ledger) {
    if let Some(filter) = filter {
        filter.snapshot_end();
    }
    ledger.snapshots = ledger.snapshots.saturating_sub(1);
}

#[cfg(test)]
mod tests;
