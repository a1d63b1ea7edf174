//! Reads of `/proc` bounded in time.
//!
//! A `/proc/<pid>` file may take as long as it likes: `cmdline` waits for the
//! target's memory-map lock, a file on a stuck FUSE or NFS mount (or anything
//! mounted over a `/proc` file) may never answer, and only a fatal signal
//! ends some of those waits. So no read is waited for without a bound:
//!
//! - The thread that reads is watched. A read still under way
//!   [`Bounds::deadline`] after it started is given up: the record is
//!   published at once with every field read so far and the others named in
//!   `unavailable` (`timed out after …`), and the reading thread is left
//!   behind. Its generation is stale from then on: whatever its read returns,
//!   it publishes nothing and touches nothing, it only says it is back
//!   ([`Bounds::returned`]) and ends. The work it had not done yet goes on
//!   in a fresh thread.
//! - A process with a read left behind is not read again until that read
//!   returns: its records say so at once (a second read would only get stuck
//!   behind the first).
//! - At most [`Bounds::max_stuck`] threads are left behind at once. Beyond
//!   that no read is started ([`Exhausted::Stuck`]): the callers report the
//!   process as loss, never as an empty record, until one returns.
//!
//! The normal path hands nothing between threads: the reading thread puts
//! each field into the record under a mutex that nobody else takes unless a
//! read is overdue, and the watchdog sleeps until the read under way is due
//! (or, after a deadline's time without reads, until a read starts).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use execwatch::internal::runtime::lock;
use execwatch::proto::{Process, Source};

use crate::procfs::reader::{blank, unavailable, Exhausted, Field, Sink};

/// How long a read may take and how many may be left behind.
#[derive(Debug)]
pub struct Bounds {
    deadline: Duration,
    max_stuck: usize,
    /// pid -> reads of it left behind and not back yet.
    stuck: Mutex<HashMap<i32, usize>>,
}

/// Whether a read of one process may start.
#[derive(Debug)]
pub enum Admit {
    /// Read it.
    Go,
    /// An earlier read of this process is stuck: do not read, publish this
    /// record, which says so.
    Stuck(Box<Process>),
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

    /// How long one process's read may take.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Whether a read of `pid` (in thread group `tgid`, for a record from
    /// `source`) may start now. An error when as many reads are stuck as
    /// allowed: do not read, report loss.
    pub fn admit(&self, pid: i32, tgid: i32, source: Source) -> Result<Admit, Exhausted> {
        let stuck = lock(&self.stuck);
        if stuck.contains_key(&pid) {
            drop(stuck);
            let mut p = blank(pid, tgid, source);
            unavailable(
                &mut p,
                Field::All.name(),
                format!(
                    "an earlier read of /proc/{pid} timed out after {:?} and has not returned; not read again until it does",
                    self.deadline
                ),
            );
            return Ok(Admit::Stuck(Box::new(p)));
        }
        let n: usize = stuck.values().sum();
        if n >= self.max_stuck {
            return Err(Exhausted::Stuck(n));
        }
        Ok(Admit::Go)
    }

    /// Whether no more reads may be left behind.
    pub fn full(&self) -> bool {
        lock(&self.stuck).values().sum::<usize>() >= self.max_stuck
    }

    /// A read of `pid` was given up; its thread is left behind. Returns how
    /// many are now.
    fn left_behind(&self, pid: i32) -> usize {
        let mut stuck = lock(&self.stuck);
        *stuck.entry(pid).or_default() += 1;
        stuck.values().sum()
    }

    /// A read of `pid` that was left behind has returned.
    pub fn returned(&self, pid: i32) {
        let mut stuck = lock(&self.stuck);
        if let Some(n) = stuck.get_mut(&pid) {
            *n -= 1;
            if *n == 0 {
                stuck.remove(&pid);
            }
        }
        tracing::info!(
            pid,
            still_stuck = stuck.values().sum::<usize>(),
            "a /proc read given up earlier has returned"
        );
    }
}

/// The read under way.
struct Current {
    record: Process,
    /// The field being read; `None` once every field is in.
    reading: Option<Field>,
    since: Instant,
}

/// What the reading thread and its watchdog share: the read under way, and
/// whatever state `T` must outlive a thread left behind.
pub struct Slot<T> {
    generation: u64,
    current: Option<Current>,
    /// Reads started, so the watchdog can tell a quiet spell.
    reads: u64,
    /// The watchdog sleeps without a timeout: a read that starts wakes it.
    watchdog_idle: bool,
    /// The caller's state.
    pub state: T,
}

/// A [`Slot`] behind its mutex, with the watchdog's wake-up.
pub struct Watched<T> {
    slot: Mutex<Slot<T>>,
    wake: Condvar,
}

impl<T> Watched<T> {
    /// Nothing read yet; generation 0.
    pub fn new(state: T) -> Self {
        Self {
            slot: Mutex::new(Slot {
                generation: 0,
                current: None,
                reads: 0,
                watchdog_idle: false,
                state,
            }),
            wake: Condvar::new(),
        }
    }

    /// Locks the slot.
    pub fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        lock(&self.slot)
    }

    /// Starts watching a read that fills `record`.
    pub fn begin(&self, record: Process) {
        let mut slot = self.lock();
        slot.current = Some(Current {
            record,
            reading: Some(Field::All),
            since: Instant::now(),
        });
        slot.reads += 1;
        if std::mem::take(&mut slot.watchdog_idle) {
            self.wake.notify_one();
        }
    }

    /// The sink a thread of `generation` reads into.
    pub fn tracker(&self, generation: u64) -> Tracker<'_, T> {
        Tracker {
            watched: self,
            generation,
        }
    }

    /// Watches reads forever on the calling thread: each read still under
    /// way `bounds.deadline()` after it started is given up, and
    /// `given_up` gets the slot (its generation already moved on) and the
    /// record.
    pub fn watch(&self, bounds: &Bounds, mut given_up: impl FnMut(&mut Slot<T>, Process)) {
        let mut slot = self.lock();
        let mut seen = slot.reads;
        loop {
            let now = Instant::now();
            if let Some(p) = slot.give_up(bounds, now) {
                given_up(&mut slot, p);
                continue;
            }
            let timeout = match slot.due(bounds.deadline) {
                Some(due) => due.saturating_duration_since(now),
                None if slot.reads != seen => {
                    // Reads keep coming: look again in a period (one
                    // deadline), so that starting a read wakes nobody.
                    seen = slot.reads;
                    bounds.deadline
                }
                None => {
                    // A period without any read: sleep until one starts,
                    // instead of waking every period for nothing.
                    slot.watchdog_idle = true;
                    slot = self.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
                    seen = slot.reads;
                    continue;
                }
            };
            slot = self
                .wake
                .wait_timeout(slot, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl<T> Slot<T> {
    /// The generation whose thread may read now; any other is stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Ends the read under way, returning its record.
    pub fn end(&mut self) -> Option<Process> {
        self.current.take().map(|c| c.record)
    }

    /// When the read under way is due, if one is.
    fn due(&self, deadline: Duration) -> Option<Instant> {
        let current = self.current.as_ref()?;
        current.reading.map(|_| current.since + deadline)
    }

    /// Gives up the read under way if it is overdue at `now`: the
    /// generation moves on, so its thread is stale from now on, and the
    /// record comes back with the field under way and every later one named
    /// in `unavailable`.
    pub fn give_up(&mut self, bounds: &Bounds, now: Instant) -> Option<Process> {
        if self.due(bounds.deadline)? > now {
            return None;
        }
        let current = self.current.take()?;
        let reading = current.reading?;
        self.generation += 1;
        let mut p = current.record;
        let stuck = bounds.left_behind(p.pid);
        let path = match reading {
            Field::All => format!("/proc/{}", p.pid),
            field => format!("/proc/{}/{}", p.pid, field.file()),
        };
        unavailable(
            &mut p,
            reading.name(),
            format!("timed out after {:?} reading {path}", bounds.deadline),
        );
        for field in reading.later() {
            unavailable(
                &mut p,
                field.name(),
                format!("not read: {path} timed out after {:?}", bounds.deadline),
            );
        }
        tracing::warn!(
            pid = p.pid,
            field = reading.name(),
            stuck,
            max_stuck = bounds.max_stuck,
            "reading {path} took longer than {:?}: its record goes out without it, the reading thread is left behind",
            bounds.deadline
        );
        Some(p)
    }
}

/// The sink a watched thread reads into: every field goes into the slot's
/// record at once, unless the thread is stale.
pub struct Tracker<'a, T> {
    watched: &'a Watched<T>,
    generation: u64,
}

impl<T> Sink for Tracker<'_, T> {
    fn put(&mut self, f: impl FnOnce(&mut Process), next: Option<Field>) -> bool {
        let mut slot = self.watched.lock();
        if slot.generation != self.generation {
            return false;
        }
        let Some(current) = slot.current.as_mut() else {
            return false;
        };
        f(&mut current.record);
        current.reading = next;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overdue_read_is_given_up_with_the_rest_named() {
        let bounds = Bounds::new(Duration::from_millis(10), 2);
        let watched = Watched::new(());
        watched.begin(blank(42, 42, Source::Netlink));
        let mut tracker = watched.tracker(0);
        assert!(tracker.put(|p| p.comm = "x".into(), Some(Field::Credentials)));
        assert!(tracker.put(|_| {}, Some(Field::Argv)));
        let mut slot = watched.lock();
        assert!(slot.give_up(&bounds, Instant::now()).is_none(), "not due");
        let p = slot
            .give_up(&bounds, Instant::now() + Duration::from_millis(11))
            .expect("overdue");
        drop(slot);
        assert_eq!(p.comm, "x", "what was read is kept");
        let fields: Vec<_> = p.unavailable.iter().map(|u| u.field.as_str()).collect();
        assert_eq!(fields, ["argv", "cgroup", "exe", "cwd"]);
        assert!(p.unavailable[0].reason.contains("/proc/42/cmdline"));
        assert!(!tracker.put(|p| p.comm = "late".into(), None), "stale");
        let admit = |pid| bounds.admit(pid, pid, Source::Netlink);
        assert!(
            matches!(admit(42), Ok(Admit::Stuck(p)) if p.unavailable[0].reason.contains("/proc/42 timed out"))
        );
        assert!(matches!(admit(7), Ok(Admit::Go)));
        bounds.left_behind(8);
        assert!(matches!(admit(7), Err(Exhausted::Stuck(2))));
        bounds.returned(42);
        assert!(matches!(admit(42), Ok(Admit::Go)));
    }

    #[test]
    fn a_finished_read_is_never_given_up() {
        let bounds = Bounds::new(Duration::from_millis(1), 1);
        let watched = Watched::new(());
        watched.begin(blank(1, 1, Source::Netlink));
        assert!(watched.tracker(0).put(|_| {}, None));
        let later = Instant::now() + Duration::from_secs(1);
        assert!(watched.lock().give_up(&bounds, later).is_none());
        assert!(watched.lock().end().is_some());
    }
}
