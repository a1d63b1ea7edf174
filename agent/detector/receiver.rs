//! Receiving the proc connector's events: one thread of its own, and a
//! watchdog.
//!
//! The receiving thread waits on the netlink sockets, reads each exec's
//! `/proc/<pid>` record and publishes it. It runs apart from the agent's
//! runtime thread because a `/proc` read may block: the streams, the health
//! check and shutdown never wait on it. Each record is read through
//! [`Watched::read`], on this thread: the watchdog publishes a read given up
//! at `--proc-read-timeout` and starts a fresh thread on the events still to
//! do.
//!
//! Each wake-up costs more than everything done for an event (about 10 µs on
//! a small VM against 1–3 µs to read and parse a queued datagram), so the
//! reader is built to wake as rarely as it can without delaying a launch:
//!
//! - A wake-up drains every queued datagram, up to [`BATCH`] per system
//!   call (recvmmsg); the read, the record and the publish happen on this
//!   thread, with no hand-off in between.
//! - Exec events wake the reader at once. Exit events (a socket of their own
//!   when the kernel filters) do not: they are read just before the next
//!   exec that is published (so that each exit still goes out after its
//!   exec and before a later one, [`ReaderThread::exec`]), or by a sweep at
//!   most [`EXIT_BATCH`] after the first one arrives. A storm of
//!   short-lived processes costs one wake-up per exec, not two, and while
//!   nobody selects the execs, their exits are read sixteen to a system
//!   call at each sweep.
//!
//! Under an exec storm (a build launching thousands of programs a second)
//! a wake-up per exec would be most of the agent's cost. The reader counts
//! the execs it reads over windows of [`RATE_WINDOW`]; from a window whose
//! rate reaches [`Pace::above`] to one that falls below two thirds of it,
//! it rests [`Pace::rest`] after each pass and takes whatever queued
//! meanwhile in the next one: one wake-up per rest, and a launch reaches
//! its subscribers at most that much later. Otherwise it waits on the
//! sockets as before, and a launch is read the moment it is queued. The
//! rest ends early for the exit sweep and the retries.
//!
//! Each exec is read only as far as some subscriber could want it (lazy
//! enrichment): before the read the thread takes the fan-out's [`Interest`],
//! the union of the hooked subscribers' selectors. With no subscriber
//! wanting any process, `/proc` is not read at all; with subscribers that
//! select by comm alone, `stat` is read and, if the comm is in none of their
//! lists, nothing more. Such an exec is never published, only counted
//! ([`Fanout::skip_exec`]): no subscriber's selector could have passed it,
//! so nobody misses it, its exit goes to nobody who was not sent it, and
//! loss accounting and sequence numbers see what they saw when it was
//! published to nobody. (When a new subscriber's share takes effect: see
//! [`Fanout::interest`].)
//!
//! A thread-group leader that renames itself (`prctl(PR_SET_NAME)`, a
//! write to `/proc/<pid>/comm`) is decided again as if it had executed: the
//! kernel's comm event carries the new name, so a rename no selector wants
//! costs no `/proc` read, and one that some selector may want is read and
//! published flagged `renamed` (the fan-out sends it to a subscriber only if
//! that subscriber was not sent the process). Other threads' renames (a JVM
//! names about twenty at start) are not the process's comm, which is the
//! leader's, and are dropped as soon as they are parsed.
//!
//! An exec whose `/proc` record cannot be read because the agent is out of
//! descriptors or memory, or has as many reads stuck as it allows, is not
//! published as an empty record: it is counted, and once reads work again
//! (the next exec that reads, or a check every [`RETRY`]) one `lost` (site
//! detector) with that count goes out, so every subscriber resyncs from a
//! snapshot.
//!
//! The reader never waits on a subscriber ([`Fanout::publish`] only ever
//! `try_send`s); a long delay of its own is absorbed by the kernel's receive
//! buffer, and an overflow there is reported in the stream as `lost`.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use execwatch::internal::clock;
use execwatch::internal::cn_proc::{EventKind, Message, ProcEvent};
use execwatch::internal::lock::lock;
use execwatch::proto::{Exit, LossSite, Process, Source};
use nix::poll::{PollFd, PollFlags};
use tokio::sync::oneshot;

use crate::detector::audit::Barrier;
use crate::detector::netlink::NetlinkDetector;
use crate::detector::socket::{poll_timeout, Batch, NetlinkError, NetlinkSocket};
use crate::procfs::mount::ProcMount;
use crate::procfs::reader::{blank, CommCheck, Exhausted, ProcReader};
use crate::procfs::watchdog::{Read, Slot, Watched};
use crate::stream::fanout::{Fanout, Item};
use crate::stream::selector::Interest;
use crate::totals::Totals;

/// Longest an exit event waits to be read when no exec comes along.
pub const EXIT_BATCH: Duration = Duration::from_millis(10);

/// How often reads are tried again while `/proc` cannot be read.
pub const RETRY: Duration = Duration::from_millis(100);

/// How long the exec rate is measured over before the reader decides
/// whether the node is under an exec storm.
pub const RATE_WINDOW: Duration = Duration::from_millis(100);

/// How the reader paces its wake-ups under an exec storm
/// (`--coalesce-above`, `--coalesce`).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Execs a second from which the reader rests between passes; `None`:
    /// never.
    pub above: Option<u32>,
    /// How long it rests.
    pub rest: Duration,
}

/// The exec rate, measured over windows of [`RATE_WINDOW`].
struct Rate {
    since: Instant,
    execs: u64,
    /// The last window's rate was at or above the storm threshold.
    storm: bool,
}

impl Rate {
    /// Counts `execs` read `now`; at the end of a window, decides whether
    /// the node is under a storm: one starts with a window at or above
    /// `above` execs a second and ends with one below two thirds of that,
    /// so a build whose rate hovers about the threshold is paced
    /// throughout, not every other window.
    fn count(&mut self, execs: usize, now: Instant, above: Option<u32>) {
        let Some(above) = above else { return };
        self.execs += execs as u64;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= RATE_WINDOW {
            let rate = self.execs as f64 / elapsed.as_secs_f64();
            let storm = rate * 3.0 >= f64::from(above) * if self.storm { 2.0 } else { 3.0 };
            if storm != self.storm {
                tracing::debug!(execs_per_s = rate as u64, storm, "exec storm pacing");
            }
            self.storm = storm;
            self.since = now;
            self.execs = 0;
        }
    }
}

/// Execs whose records could not be read, not yet reported.
struct Unread {
    count: u64,
    error: Exhausted,
    retry_at: Instant,
}

/// What outlives a reading thread left behind: events drained from the
/// sockets but not handled yet, and the losses not reported yet.
#[derive(Default)]
struct Backlog {
    events: VecDeque<ProcEvent>,
    /// The kernel overflowed after the events in `events`.
    overrun: bool,
    unread: Option<Unread>,
}

/// What every generation of reading thread works with.
struct Context {
    net: NetlinkDetector,
    pace: Pace,
    fanout: Arc<Fanout>,
    stats: Arc<Totals>,
    audit: Arc<Barrier>,
    /// The reads, and the backlog that outlives a thread left behind.
    watched: Watched<Backlog>,
    /// Told once why the detector stopped.
    failed: Mutex<Option<oneshot::Sender<String>>>,
}

/// Why a reading thread stopped: `None` if it was left behind (another
/// thread reads now), else the socket failure that stops the detector.
type Stop = Option<NetlinkError>;

/// Starts reading events on a thread of its own, with its watchdog. If a
/// socket fails, `failed` is told why.
pub fn start(
    detector: NetlinkDetector,
    pace: Pace,
    procfs: Arc<ProcMount>,
    fanout: Arc<Fanout>,
    stats: Arc<Totals>,
    audit: Arc<Barrier>,
    failed: oneshot::Sender<String>,
) -> std::io::Result<()> {
    let ctx = Arc::new(Context {
        net: detector,
        pace,
        fanout,
        stats,
        audit,
        watched: Watched::new(procfs),
        failed: Mutex::new(Some(failed)),
    });
    spawn_reader(ctx.clone(), 0)?;
    std::thread::Builder::new()
        .name("proc-watchdog".into())
        .spawn(move || watchdog(&ctx))?;
    Ok(())
}

/// Starts the reading thread of `generation`.
fn spawn_reader(ctx: Arc<Context>, generation: u64) -> std::io::Result<()> {
    let reader = ctx.watched.mount.reader();
    std::thread::Builder::new()
        .name(format!("netlink-{generation}"))
        .spawn(move || {
            let mut thread = ReaderThread {
                generation,
                reader,
                batch: Batch::default(),
                exits_due: None,
                synced: false,
                checked: None,
                rate: Rate {
                    since: Instant::now(),
                    execs: 0,
                    storm: false,
                },
                ctx,
            };
            if let Err(Some(e)) = thread.run() {
                thread.ctx.fail(e);
            }
        })
        .map(drop)
}

/// Gives up overdue reads, forever: each one's record is published as it
/// stands and a fresh thread takes over the rest.
fn watchdog(ctx: &Arc<Context>) {
    let never = |_: &Backlog| false;
    drop(ctx.watched.watch(ctx.watched.lock(), never, |slot, p| {
        publish_exec(ctx, p);
        if let Err(e) = spawn_reader(ctx.clone(), slot.generation()) {
            ctx.fail(NetlinkError::Thread(e));
        }
    }));
}

impl Context {
    fn fail(&self, e: NetlinkError) {
        if let Some(failed) = lock(&self.failed).take() {
            let _ = failed.send(format!("netlink detector stopped: {e}"));
        }
    }
}

/// Publishes an exec's (or a rename's) record.
fn publish_exec(ctx: &Context, p: Process) {
    // The kernel's silent drop, on demand (tests/agent_audit.rs).
    #[cfg(feature = "failpoints")]
    if fail::eval("drop-exec", |comm| comm.as_deref() == Some(&p.comm)) == Some(true) {
        return;
    }
    // Only when set: an atomic add of 0 is still a locked read-modify-write
    // on every exec.
    if p.exited_before_inspection {
        ctx.stats.add_exited_before_inspection(1);
    }
    if p.renamed {
        ctx.stats.add_renames(1);
    }
    ctx.fanout.publish(Item::Exec(Arc::new(p)));
}

/// One generation of reading thread.
struct ReaderThread {
    ctx: Arc<Context>,
    generation: u64,
    /// Its own `/proc` handle (a copy may fail for want of descriptors: then
    /// reads count as loss and the copy is tried again).
    reader: Result<ProcReader, Exhausted>,
    batch: Batch,
    /// The exit socket is left out of the wait until this sweep.
    exits_due: Option<Instant>,
    /// The exits queued when this pass began have been read: an exec may
    /// be published (see [`ReaderThread::exec`]).
    synced: bool,
    /// The exec put back by the last [`ReaderThread::exec`] after its comm
    /// passed: not checked again.
    checked: Option<(i32, u64)>,
    rate: Rate,
}

impl ReaderThread {
    /// Reads and publishes until the thread is left behind or a socket fails.
    fn run(&mut self) -> Result<(), Stop> {
        // A thread left behind may have left events and losses to report.
        self.flush()?;
        // Under a storm: the next wait begins with a rest until then.
        let mut rest = None;
        loop {
            let retry_at = self.backlog().state.unread.as_ref().map(|u| u.retry_at);
            let wake = [self.exits_due, retry_at].into_iter().flatten().min();
            let (exec_ready, exit_ready) = match rest.take() {
                Some(until) => {
                    let until = wake.map_or(until, |w| w.min(until));
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    // Only a look: if nothing queued during the rest, the
                    // next turn waits on the sockets again.
                    self.wait(Some(Instant::now()))?
                }
                None => self.wait(wake)?,
            };
            let now = Instant::now();
            let sweep = self.exits_due.take_if(|due| *due <= now).is_some();
            if exec_ready || sweep {
                // Exits that follow an exec are read with the next exec
                // that is published, or by the sweep soon after, without a
                // wake-up of their own; execs never keep the sweep waiting.
                if exec_ready {
                    self.park_exits(now);
                }
                self.pass(sweep)?;
                if self.rate.storm {
                    rest = Some(now + self.ctx.pace.rest);
                }
            } else if exit_ready {
                self.park_exits(now);
            } else if retry_at.is_some_and(|at| at <= now) {
                self.retry();
            }
        }
    }

    /// The shared slot, and in it the backlog. A thread is left behind
    /// only while it reads a record, and learns so as soon as the read
    /// returns ([`ReaderThread::exec`]): anywhere else, it still reads.
    fn backlog(&self) -> MutexGuard<'_, Slot<Backlog>> {
        self.ctx.watched.lock()
    }

    /// Waits until the exec socket (or the exit socket, unless parked) is
    /// readable, or until `wake`. Returns which are readable.
    fn wait(&self, wake: Option<Instant>) -> Result<(bool, bool), NetlinkError> {
        let (execs, exits) = (&self.ctx.net.execs, self.ctx.net.exits.as_ref());
        let exits = exits.filter(|_| self.exits_due.is_none());
        let mut fds = [execs, exits.unwrap_or(execs)]
            .map(|sock| PollFd::new(sock.as_fd(), PollFlags::POLLIN));
        let watched = 1 + usize::from(exits.is_some());
        match nix::poll::poll(&mut fds[..watched], poll_timeout(wake)) {
            Err(nix::errno::Errno::EINTR) => return Ok((false, false)),
            polled => polled.map_err(|e| NetlinkError::Recv(e.into()))?,
        };
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        Ok((ready(&fds[0]), watched == 2 && ready(&fds[1])))
    }

    /// Leaves the exit socket out of the wait until a sweep [`EXIT_BATCH`]
    /// from `now`, unless it is out already.
    fn park_exits(&mut self, now: Instant) {
        if self.ctx.net.exits.is_some() && self.exits_due.is_none() {
            self.exits_due = Some(now + EXIT_BATCH);
        }
    }

    /// Reads everything queued on the exec socket (and with `exits`, on
    /// the exit socket first) and handles it in kernel order.
    fn pass(&mut self, exits: bool) -> Result<(), Stop> {
        self.synced = exits || self.ctx.net.exits.is_none();
        loop {
            self.drain(self.synced, None)?;
            if !self.flush()? {
                return Ok(());
            }
            // The marker went out after everything read before the
            // overflow; now the rest of the queue.
        }
    }

    /// Reads what is queued into the backlog, in kernel order: with
    /// `exits`, the exit socket first. Every exec that precedes an exit read
    /// then is already queued on the exec socket (a process cannot exit
    /// before its exec event is sent), so sorting the two by timestamp puts
    /// each exit after its exec. An overflow is noted in the backlog.
    /// `put_back`, an event taken from the backlog, goes back to its front
    /// first, and the whole backlog is sorted.
    fn drain(&mut self, exits: bool, put_back: Option<ProcEvent>) -> Result<(), Stop> {
        let ctx = &self.ctx;
        let net = &ctx.net;
        let mut slot = ctx.watched.lock();
        let backlog = &mut slot.state;
        let sort_all = put_back.is_some();
        if let Some(ev) = put_back {
            backlog.events.push_front(ev);
        }
        let start = backlog.events.len();
        if let (Some(sock), true) = (&net.exits, exits) {
            backlog.overrun |= drain(sock, &mut self.batch, &mut backlog.events, &ctx.stats)?;
        }
        let exits_end = backlog.events.len();
        backlog.overrun |= drain(&net.execs, &mut self.batch, &mut backlog.events, &ctx.stats)?;
        // Without the kernel's filter the exec socket carries every event
        // (forks, exits, ...): only execs count towards a storm.
        let execs_read = backlog
            .events
            .range(exits_end..)
            .filter(|ev| matches!(ev.kind, EventKind::Exec { .. }))
            .count();
        self.rate.count(execs_read, Instant::now(), ctx.pace.above);
        let events = &mut backlog.events;
        if sort_all || (exits_end > start && exits_end < events.len()) {
            events.make_contiguous().sort_by_key(|ev| ev.timestamp_ns);
        }
        Ok(())
    }

    /// Handles the backlog, then reports a kernel overflow that followed
    /// it. Returns whether there was one.
    fn flush(&mut self) -> Result<bool, Stop> {
        loop {
            let mut slot = self.backlog();
            let Some(ev) = slot.state.events.pop_front() else {
                if !std::mem::take(&mut slot.state.overrun) {
                    return Ok(false);
                }
                let ctx = &self.ctx;
                ctx.stats.add_kernel_overruns(1);
                let reason = format!(
                    "the kernel dropped events: the agent's netlink receive buffer ({} bytes) overflowed (ENOBUFS)",
                    ctx.net.receive_buffer
                );
                tracing::warn!("{reason}; subscribers will resync");
                ctx.fanout.publish_loss(LossSite::Kernel, reason, None);
                return Ok(true);
            };
            match ev.kind {
                // A leader's rename decides the process as an exec does (a
                // selector may want its new comm); a thread's name is not the
                // process's and costs nothing more (below). An exec's task is
                // always its leader: the kernel sends the event after
                // de_thread() made it so.
                EventKind::Exec { pid, tgid } | EventKind::Comm { pid, tgid, .. }
                    if pid == tgid =>
                {
                    drop(slot);
                    self.exec(ev, pid, tgid)?;
                }
                EventKind::Comm { pid, tgid, .. } if tgid == std::process::id() as i32 => {
                    self.ctx.audit.pass(pid);
                    self.ctx.stats.add_ignored_kernel_events(1);
                }
                // Thread exits are noise: only a leader's exit ends a process.
                EventKind::Exit {
                    pid,
                    tgid,
                    exit_code,
                    exit_signal,
                    ..
                } if pid == tgid => {
                    self.ctx.fanout.publish(Item::Exit(Exit {
                        pid,
                        tgid,
                        exit_code,
                        exit_signal,
                        kernel_timestamp_ns: ev.timestamp_ns,
                        observed_unix_ns: clock::unix_ns(),
                        source: Source::Netlink as i32,
                    }));
                }
                _ => self.ctx.stats.add_ignored_kernel_events(1),
            }
        }
    }

    /// Reads and publishes the record of `ev`, an exec of `pid` (thread)
    /// and `tgid` or a leader's rename, under the watchdog.
    fn exec(&mut self, ev: ProcEvent, pid: i32, tgid: i32) -> Result<(), Stop> {
        let timestamp_ns = ev.timestamp_ns;
        let ctx = self.ctx.clone();
        // After the exec was received: see `Fanout::interest`.
        let interest = ctx.fanout.interest();
        // A rename carries its comm: nobody's is dropped without a read, and
        // not counted as an exec.
        let renamed = ev.kind.comm();
        if renamed.is_some_and(|comm| !interest.may_want(comm)) {
            return Ok(());
        }
        let renamed = renamed.is_some();
        if *interest == Interest::Nothing {
            ctx.fanout.skip_exec();
            return Ok(());
        }
        if self.reader.is_err() {
            self.reader = ctx.watched.mount.reader();
        }
        let checked = self.checked.take() == Some((pid, timestamp_ns)) || renamed;
        if let (Interest::Comms(_), Ok(reader), false) = (&*interest, &mut self.reader, checked) {
            // Most execs are nobody's: their comm alone says so, without
            // `stat`, before anything else (reading a comm needs no time
            // bound, so not even a full set of stuck reads makes an exec
            // nobody wants count as loss). When it cannot tell, the read
            // below decides after `stat` as usual.
            let check = reader.comm_wanted(pid, |comm| interest.may_want(comm));
            if matches!(check, CommCheck::Unwanted | CommCheck::Gone) {
                let mut slot = self.backlog();
                // A file was looked up: descriptors are back, if they had
                // run out (whether stuck reads have returned, `retry`
                // finds out).
                let unread = slot.state.unread.as_ref().map(|u| u.error);
                if matches!(unread, Some(Exhausted::Resources(_))) {
                    recovered(&ctx, &mut slot.state);
                }
                if check == CommCheck::Gone {
                    // Counted as when its record was read and found empty;
                    // it goes to nobody, as no comm selector takes a
                    // record without a comm.
                    ctx.stats.add_exited_before_inspection(1);
                }
                ctx.fanout.skip_exec();
                return Ok(());
            }
        }
        if !self.synced {
            // Before the first exec of a pass that is published: read the
            // exits queued meanwhile (and the execs after them) into the
            // backlog, in kernel order, with `ev` put back in its place. An
            // exit whose process ran before `ev` (perhaps under `ev`'s pid)
            // so goes out before it. Passes that publish nothing never read
            // the exit socket: their exits wait for the sweep.
            if !matches!(*interest, Interest::All(_)) {
                self.checked = Some((pid, timestamp_ns));
            }
            self.synced = true;
            return self.drain(true, Some(ev));
        }
        let mut record = blank(pid, tgid, Source::Netlink);
        record.kernel_timestamp_ns = timestamp_ns;
        record.renamed = renamed;
        let reader = self.reader.as_mut().map_err(|e| *e);
        let wanted = |comm: &[u8]| interest.may_want(comm);
        let read = ctx
            .watched
            .read(reader, self.generation, record, wanted, interest.argv());
        if matches!(read, Ok(Read::Record(_) | Read::Unwanted)) {
            // `stat` at least was read: reads work. The loss goes out before
            // the record: subscribers resync, then get it.
            recovered(&ctx, &mut self.backlog().state);
        }
        match read {
            Ok(Read::Record(p) | Read::Unread(p)) => publish_exec(&ctx, p),
            // A rename nobody wants is no exec.
            Ok(Read::Unwanted) if renamed => {}
            Ok(Read::Unwanted) => ctx.fanout.skip_exec(),
            Ok(Read::KernelThread) => ctx.stats.add_ignored_kernel_events(1),
            // The watchdog published the record.
            Ok(Read::LeftBehind) => return Err(None),
            Err(e) => self.unreadable(e),
        }
        Ok(())
    }

    /// Counts an exec whose record could not be read.
    fn unreadable(&mut self, error: Exhausted) {
        self.ctx.stats.add_unreadable_execs(1);
        let mut slot = self.backlog();
        let unread = slot.state.unread.get_or_insert_with(|| {
            tracing::warn!(
                "{error}: exec events are counted and reported as lost once reads work again"
            );
            let retry_at = Instant::now() + RETRY;
            Unread {
                count: 0,
                error,
                retry_at,
            }
        });
        unread.count += 1;
    }

    /// While reads fail: do they work again?
    fn retry(&mut self) {
        let Some(error) = self.backlog().state.unread.as_ref().map(|u| u.error) else {
            return;
        };
        let works = match error {
            Exhausted::Stuck(_) => !self.ctx.watched.mount.bounds.full(),
            Exhausted::Resources(_) => {
                if self.reader.is_err() {
                    self.reader = self.ctx.watched.mount.reader();
                }
                self.reader.as_mut().is_ok_and(|r| r.probe().is_ok())
            }
        };
        let mut slot = self.backlog();
        if works {
            recovered(&self.ctx, &mut slot.state);
        } else if let Some(unread) = &mut slot.state.unread {
            unread.retry_at = Instant::now() + RETRY;
        }
    }
}

/// Reports the execs that could not be read, now that reads work.
fn recovered(ctx: &Context, backlog: &mut Backlog) {
    let Some(unread) = backlog.unread.take() else {
        return;
    };
    let reason = format!(
        "{} exec events could not be read from /proc ({}); subscribers resync",
        unread.count, unread.error
    );
    tracing::warn!("{reason}");
    ctx.fanout
        .publish_loss(LossSite::Detector, reason, Some(unread.count));
}

/// Appends every event queued on `sock` to `events`, up to an overflow
/// (see [`NetlinkSocket::drain`]).
fn drain(
    sock: &NetlinkSocket,
    batch: &mut Batch,
    events: &mut VecDeque<ProcEvent>,
    stats: &Totals,
) -> Result<bool, NetlinkError> {
    sock.drain(batch, |message| match message {
        Ok(Message::Event(ev)) => events.push_back(ev),
        Ok(_) => stats.add_ignored_kernel_events(1),
        Err(e) => {
            stats.add_parse_errors(1);
            tracing::warn!("skipping malformed proc connector message: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(since: Instant) -> Rate {
        Rate {
            since,
            execs: 0,
            storm: false,
        }
    }

    #[test]
    fn a_storm_is_a_window_whose_rate_reaches_the_threshold() {
        let t0 = Instant::now();
        let mut r = rate(t0);
        let above = Some(1000);
        // 99 execs in the first 100 ms: 990 a second, no storm.
        r.count(60, t0 + Duration::from_millis(10), above);
        assert!(!r.storm, "undecided before the window ends");
        r.count(39, t0 + RATE_WINDOW, above);
        assert!(!r.storm);
        // 100 in the next: 1000 a second, a storm from now on.
        r.count(100, t0 + 2 * RATE_WINDOW, above);
        assert!(r.storm);
        // It lasts while windows keep two thirds of the rate...
        r.count(67, t0 + 3 * RATE_WINDOW, above);
        assert!(r.storm);
        // ...and ends with one that falls below, however long it was:
        // here a quiet second ended by one exec.
        r.count(1, t0 + 3 * RATE_WINDOW + Duration::from_secs(1), above);
        assert!(!r.storm);
        // A new storm needs the full rate again.
        let t1 = t0 + 3 * RATE_WINDOW + Duration::from_secs(1);
        r.count(99, t1 + RATE_WINDOW, above);
        assert!(!r.storm);
    }

    #[test]
    fn with_no_threshold_there_is_never_a_storm() {
        let t0 = Instant::now();
        let mut r = rate(t0);
        r.count(1_000_000, t0 + RATE_WINDOW, None);
        assert!(!r.storm);
    }
}
