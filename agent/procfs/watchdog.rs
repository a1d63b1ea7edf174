//! The one way to a process's record from `/proc`: [`Watched::read`]
//! admits the read, runs it under a watchdog's deadline, gives it up when
//! overdue, and hands out the record finished ([`ProcMount::finish`]:
//! redacted), whether it was read in full or given up.
//!
//! A `/proc/<pid>` file may take as long as it likes: `cmdline` waits for the
//! target's memory-map lock, a file on a stuck FUSE or NFS mount (or anything
//! mounted over a `/proc` file) may never answer, and only a fatal signal
//! ends some of those waits. So no read is waited for without a bound:
//!
//! - The thread that reads is watched ([`Watched::watch`]). A read still
//!   under way [`Bounds::deadline`] after it started is given up: the
//!   watchdog gets the record at once, with every field read so far and the
//!   others named in `unavailable` (`timed out after …`), and the reading
//!   thread is left behind. Its generation is stale from then on: whatever
//!   its read returns, it hands out nothing and touches nothing, it only
//!   says it is back and ends ([`Read::LeftBehind`]). The work it had not
//!   done yet goes on in a fresh thread.
//! - A process with a read left behind is not read again until that read
//!   returns: its records say so at once ([`Read::Unread`]; a second read
//!   would only get stuck behind the first).
//! - At most `max_stuck` threads are left behind at once. Beyond that no
//!   read is started ([`Exhausted::Stuck`]): the callers report the process
//!   as loss, never as an empty record, until one returns.
//!
//! The normal path hands nothing between threads: the reading thread puts
//! each field into the record under a mutex that nobody else takes unless a
//! read is overdue, and the watchdog sleeps until the read under way is due
//! (or, after a deadline's time without reads, until a read starts).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use execwatch::internal::lock::lock;
use execwatch::proto::Process;

use crate::procfs::bounds::Bounds;
use crate::procfs::cmdline::ArgvPatterns;
use crate::procfs::mount::ProcMount;
use crate::procfs::reader::{unavailable, Exhausted, Field, Outcome, ProcReader, Sink, Stop};

/// What [`Watched::read`] gave.
#[derive(Debug)]
pub enum Read {
    /// The finished record (fields that could not be read are named in
    /// `unavailable`).
    Record(Process),
    /// An earlier read of the process is stuck: not read, and the finished
    /// record says so. Proves nothing about whether reads work.
    Unread(Process),
    /// `wanted` ruled the process out by its comm after `stat`: no record.
    Unwanted,
    /// A kernel thread: no record.
    KernelThread,
    /// The read was given up at its deadline and the watchdog has the
    /// record: the calling thread is left behind and must stop.
    LeftBehind,
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
#[derive(Default)]
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

/// Reads of one mount by one thread at a time, with their watchdog: a
/// [`Slot`] behind its mutex, and the watchdog's wake-up.
pub struct Watched<T> {
    /// The mount read.
    pub mount: Arc<ProcMount>,
    slot: Mutex<Slot<T>>,
    wake: Condvar,
}

impl<T: Default> Watched<T> {
    /// Nothing read yet; generation 0.
    pub fn new(mount: Arc<ProcMount>) -> Self {
        Self {
            mount,
            slot: Mutex::default(),
            wake: Condvar::new(),
        }
    }

    /// Locks the slot.
    pub fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        lock(&self.slot)
    }

    /// Wakes the watchdog, to look at the state again.
    pub fn wake(&self) {
        self.wake.notify_all();
    }

    /// Reads the record of `record.pid`, which holds what the caller knows
    /// already ([`crate::procfs::reader::blank`]), on the calling thread of
    /// `generation`, under the watchdog. `wanted` is asked once, with the
    /// comm as `stat` gives it (bytes, as the kernel keeps them); a long
    /// command line is searched whole for `argv`. `reader` is the thread's
    /// own; its error is the result unless the process is not to be read
    /// anyway.
    pub fn read(
        &self,
        reader: Result<&mut ProcReader, Exhausted>,
        generation: u64,
        mut record: Process,
        wanted: impl FnOnce(&[u8]) -> bool,
        argv: &ArgvPatterns,
    ) -> Result<Read, Exhausted> {
        let bounds = &self.mount.bounds;
        if !bounds.admit(&mut record)? {
            return Ok(Read::Unread(self.mount.finish(record)));
        }
        let reader = reader?;
        let pid = record.pid;
        self.begin(record);
        let read = reader.read_into(pid, &mut Tracker(self, generation), wanted, argv);
        let mut slot = self.lock();
        if slot.generation != generation {
            drop(slot);
            bounds.returned(pid);
            return Ok(Read::LeftBehind);
        }
        let record = slot.current.take().map(|c| c.record);
        drop(slot);
        Ok(match (read, record) {
            (Ok(Outcome::Read), Some(p)) => Read::Record(self.mount.finish(p)),
            (Ok(Outcome::Unwanted), _) => Read::Unwanted,
            (Err(Stop::Exhausted(e)), _) => return Err(e),
            // Abandoned only happens to a thread left behind.
            _ => Read::KernelThread,
        })
    }

    /// Starts watching a read that fills `record`.
    fn begin(&self, record: Process) {
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

    /// Watches reads on the calling thread, holding `slot` while it does not
    /// sleep, until `done` says the state is done: each read still under way
    /// a deadline after it started is given up, and `given_up` gets the slot
    /// (its generation already moved on) and the finished record. Wake it
    /// with [`Watched::wake`] when the state changes.
    pub fn watch<'a>(
        &'a self,
        mut slot: MutexGuard<'a, Slot<T>>,
        done: impl Fn(&T) -> bool,
        mut given_up: impl FnMut(&mut Slot<T>, Process),
    ) -> MutexGuard<'a, Slot<T>> {
        let deadline = self.mount.bounds.deadline;
        let mut seen = slot.reads;
        while !done(&slot.state) {
            let now = Instant::now();
            if let Some(p) = slot.give_up(&self.mount.bounds, now) {
                given_up(&mut slot, self.mount.finish(p));
                continue;
            }
            let timeout = match slot.due(deadline) {
                Some(due) => due.saturating_duration_since(now),
                None if slot.reads != seen => {
                    // Reads keep coming: look again in a period (one
                    // deadline), so that starting a read wakes nobody.
                    seen = slot.reads;
                    deadline
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
        slot
    }
}

impl<T> Slot<T> {
    /// The generation whose thread may read now; any other is stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the read under way is due, if one is.
    fn due(&self, deadline: Duration) -> Option<Instant> {
        let current = self.current.as_ref()?;
        current.reading.map(|_| current.since + deadline)
    }

    /// Gives up the read under way if it is overdue at `now`: the
    /// generation moves on, so its thread is stale from now on, and the
    /// record comes back (not finished yet) with the field under way and
    /// every later one named in `unavailable`.
    fn give_up(&mut self, bounds: &Bounds, now: Instant) -> Option<Process> {
        if self.due(bounds.deadline)? > now {
            return None;
        }
        let current = self.current.take()?;
        let reading = current.reading?;
        self.generation += 1;
        let mut p = current.record;
        let stuck = bounds.left_behind(p.pid);
        let path = format!("/proc/{}{}", p.pid, reading.file());
        let deadline = bounds.deadline;
        let why = format!("timed out after {deadline:?} reading {path}");
        unavailable(&mut p, reading.name(), why);
        for field in reading.later() {
            let why = format!("not read: {path} timed out after {deadline:?}");
            unavailable(&mut p, field.name(), why);
        }
        tracing::warn!(
            pid = p.pid,
            field = reading.name(),
            stuck,
            max_stuck = bounds.max_stuck,
            "reading {path} took longer than {deadline:?}: its record goes out without it, the reading thread is left behind"
        );
        Some(p)
    }
}

/// The sink a watched thread reads into: every field goes into the slot's
/// record at once, unless the thread is stale.
/// Its fields: the slot, and the thread's generation.
struct Tracker<'a, T>(&'a Watched<T>, u64);

impl<T: Default> Sink for Tracker<'_, T> {
    fn put(&mut self, f: impl FnOnce(&mut Process), next: Option<Field>) -> Result<(), Stop> {
        let mut slot = self.0.lock();
        if slot.generation != self.1 {
            return Err(Stop::Abandoned);
        }
        let current = slot.current.as_mut().ok_or(Stop::Abandoned)?;
        f(&mut current.record);
        current.reading = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use execwatch::proto::Source;

    use super::*;
    use crate::procfs::reader::blank;

    const NONE: ArgvPatterns = ArgvPatterns::NONE;

    fn watched(deadline: Duration, max_stuck: usize) -> Watched<()> {
        let bounds = Bounds::new(deadline, max_stuck);
        let mount = ProcMount::open("/proc", 4096, None, bounds).unwrap();
        Watched::new(Arc::new(mount))
    }

    #[test]
    fn an_overdue_read_is_given_up_with_the_rest_named() {
        let watched = watched(Duration::from_millis(10), 2);
        let bounds = &watched.mount.bounds;
        watched.begin(blank(42, 42, Source::Netlink));
        let mut tracker = Tracker(&watched, 0);
        assert!(tracker
            .put(|p| p.comm = "x".into(), Some(Field::Credentials))
            .is_ok());
        assert!(tracker.put(|_| {}, Some(Field::Argv)).is_ok());
        let mut slot = watched.lock();
        assert!(slot.give_up(bounds, Instant::now()).is_none(), "not due");
        let p = slot
            .give_up(bounds, Instant::now() + Duration::from_millis(11))
            .expect("overdue");
        drop(slot);
        assert_eq!(p.comm, "x", "what was read is kept");
        let fields: Vec<_> = p.unavailable.iter().map(|u| u.field.as_str()).collect();
        assert_eq!(fields, ["argv", "cgroup", "exe", "cwd"]);
        assert!(p.unavailable[0].reason.contains("/proc/42/cmdline"));
        assert_eq!(
            tracker.put(|p| p.comm = "late".into(), None),
            Err(Stop::Abandoned),
            "stale"
        );
        let admit = |pid| {
            let mut p = blank(pid, pid, Source::Netlink);
            bounds.admit(&mut p).map(|go| (go, p))
        };
        assert!(
            matches!(admit(42), Ok((false, p)) if p.unavailable[0].reason.contains("/proc/42 timed out"))
        );
        assert!(matches!(admit(7), Ok((true, _))));
        bounds.left_behind(8);
        assert!(matches!(admit(7), Err(Exhausted::Stuck(2))));
        bounds.returned(42);
        assert!(matches!(admit(42), Ok((true, _))));
    }

    #[test]
    fn a_finished_read_is_never_given_up() {
        let watched = watched(Duration::from_millis(1), 1);
        watched.begin(blank(1, 1, Source::Netlink));
        let mut tracker = Tracker(&watched, 0);
        assert!(tracker.put(|_| {}, None).is_ok());
        let later = Instant::now() + Duration::from_secs(1);
        assert!(watched
            .lock()
            .give_up(&watched.mount.bounds, later)
            .is_none());
        assert!(watched.lock().current.take().is_some());
    }

    #[test]
    fn a_read_in_time_comes_back_finished() {
        let watched = watched(Duration::from_secs(5), 1);
        let mut reader = watched.mount.reader().unwrap();
        let me = std::process::id() as i32;
        let read = watched.read(
            Ok(&mut reader),
            0,
            blank(me, me, Source::Poll),
            |_| true,
            &NONE,
        );
        let Ok(Read::Record(p)) = read else {
            panic!("{read:?}")
        };
        assert!(!p.comm.is_empty() && !p.argv.is_empty() && p.unavailable.is_empty());
        let read = watched.read(
            Ok(&mut reader),
            0,
            blank(me, me, Source::Poll),
            |_| false,
            &NONE,
        );
        assert!(matches!(read, Ok(Read::Unwanted)), "{read:?}");
        // kthreadd.
        let read = watched.read(
            Ok(&mut reader),
            0,
            blank(2, 2, Source::Poll),
            |_| true,
            &NONE,
        );
        assert!(matches!(read, Ok(Read::KernelThread)), "{read:?}");
    }
}
