//! Reading the proc connector: one task on the agent's runtime thread.
//!
//! Each wake-up costs more than everything done for an event (about 10 µs on
//! a small VM against 1–3 µs to read and parse a queued datagram), so the
//! reader is built to wake as rarely as it can without delaying a launch:
//!
//! - The sockets sit in the runtime's own epoll set. A wake-up drains every
//!   queued datagram, and publishing wakes the subscribers' tasks on this
//!   same thread: no hand-off between threads.
//! - Exec events wake the reader at once. Exit events (a socket of their own
//!   when the kernel filters) do not: they are read with the next exec, or by
//!   a sweep at most [`EXIT_BATCH`] after the first one arrives, so a storm
//!   of short-lived processes costs one wake-up per exec, not two.
//!
//! An exec whose `/proc` record cannot be read because the agent is out of
//! descriptors or memory is not published as an empty record: it is counted,
//! and once reads work again (the next exec that reads, or a probe every
//! [`RETRY`]) one `lost` (site detector) with that count goes out, so every
//! subscriber resyncs from a snapshot.
//!
//! The reader never waits on a subscriber ([`Fanout::publish`] only ever
//! `try_send`s). It shares the thread with the subscribers' tasks, so their
//! encoding can delay it by microseconds, never block it; a long delay is
//! absorbed by the kernel's receive buffer, and an overflow there is reported
//! in the stream as `lost`.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use execwatch::internal::clock;
use execwatch::internal::cn_proc::{parse_datagram, EventKind, Message, ProcEvent};
use execwatch::proto::{Exit, Source};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use execwatch::proto::LossSite;

use crate::detector::exit_socket::{register, ExitSocket};
use crate::detector::netlink::NetlinkDetector;
use crate::detector::socket::{NetlinkError, NetlinkSocket, Received, DATAGRAM_BUF};
use crate::procfs::reader::{Exhausted, ProcReader};
use crate::stats::Stats;
use crate::stream::fanout::{DetectorLoss, Fanout, Item};

/// Longest an exit event waits to be read when no exec comes along.
pub const EXIT_BATCH: Duration = Duration::from_millis(10);

/// How often reads are tried again while `/proc` cannot be read.
pub const RETRY: Duration = Duration::from_millis(100);

/// What woke the reader.
enum Wake {
    Exec,
    ExitArrived,
    Sweep,
    Retry,
}

/// Execs whose records could not be read, not yet reported.
struct Unread {
    count: u64,
    error: Exhausted,
    retry_at: Instant,
}

/// The reader's state: its sockets, where records go, reused buffers.
struct Pump {
    execs: AsyncFd<NetlinkSocket>,
    exits: Option<ExitSocket>,
    rcvbuf: usize,
    procfs: ProcReader,
    fanout: Arc<Fanout>,
    stats: Arc<Stats>,
    buf: Vec<u8>,
    events: Vec<ProcEvent>,
    unread: Option<Unread>,
}

/// Reads events until a socket fails, publishing each. Returns the failure.
pub async fn run(
    detector: NetlinkDetector,
    procfs: ProcReader,
    fanout: Arc<Fanout>,
    stats: Arc<Stats>,
) -> NetlinkError {
    let rcvbuf = detector.receive_buffer();
    let execs = match register(detector.execs) {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    let exits = match detector.exits.map(register).transpose() {
        Ok(fd) => fd.map(ExitSocket::Watched),
        Err(e) => return e,
    };
    let mut pump = Pump {
        execs,
        exits,
        rcvbuf,
        procfs,
        fanout,
        stats,
        buf: vec![0u8; DATAGRAM_BUF],
        events: Vec::with_capacity(64),
        unread: None,
    };
    loop {
        // A parked exit socket is out of the epoll set until its sweep is
        // due, so arriving exits cost no wake-ups meanwhile.
        let exits = pump.exits.as_ref();
        let (watched, sweep) = (
            exits.and_then(ExitSocket::watched),
            exits.and_then(ExitSocket::due),
        );
        let retry = pump.unread.as_ref().map(|u| u.retry_at);
        let wake = tokio::select! {
            biased;
            ready = pump.execs.readable() => ready.map(|_| Wake::Exec),
            _ = sleep_until(sweep) => Ok(Wake::Sweep),
            ready = readable(watched) => ready.map(|_| Wake::ExitArrived),
            _ = sleep_until(retry) => Ok(Wake::Retry),
        };
        let result = match wake {
            Err(e) => return NetlinkError::Recv(e),
            Ok(Wake::ExitArrived) => {
                pump.park_exits();
                continue;
            }
            Ok(Wake::Exec) => {
                // Exits that follow this exec are swept with the next exec
                // or soon after, without a wake-up of their own.
                pump.park_exits();
                pump.pass()
            }
            Ok(Wake::Sweep) => pump.pass().and_then(|()| pump.watch_exits()),
            Ok(Wake::Retry) => {
                pump.retry();
                Ok(())
            }
        };
        if let Err(e) = result {
            return e;
        }
    }
}

/// Sleeps until `deadline`; never returns without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits until `fd` is readable; never returns without a socket.
async fn readable(fd: Option<&AsyncFd<NetlinkSocket>>) -> std::io::Result<()> {
    match fd {
        Some(fd) => fd.readable().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

impl Pump {
    /// Takes the exit socket out of the epoll set until a sweep
    /// [`EXIT_BATCH`] from now, unless it is parked already.
    fn park_exits(&mut self) {
        let due = Instant::now() + EXIT_BATCH;
        self.exits = self.exits.take().map(|exits| exits.park(due));
    }

    /// Puts the exit socket back into the epoll set.
    fn watch_exits(&mut self) -> Result<(), NetlinkError> {
        self.exits = self.exits.take().map(ExitSocket::watch).transpose()?;
        Ok(())
    }

    /// Reads everything queued on both sockets and publishes it in kernel
    /// order.
    fn pass(&mut self) -> Result<(), NetlinkError> {
        loop {
            // Exits first: every exec that precedes an exit read now is
            // already queued on the exec socket (a process cannot exit before
            // its exec event is sent), so sorting the two by timestamp puts
            // each exit after its exec.
            let mut overrun = match &self.exits {
                Some(exits) => {
                    if let Some(fd) = exits.watched() {
                        clear_readiness(fd);
                    }
                    drain(exits.socket(), &mut self.buf, &mut self.events, &self.stats)?
                }
                None => false,
            };
            let exits_read = self.events.len();
            clear_readiness(&self.execs);
            overrun |= drain(
                self.execs.get_ref(),
                &mut self.buf,
                &mut self.events,
                &self.stats,
            )?;
            if exits_read > 0 && exits_read < self.events.len() {
                self.events.sort_by_key(|ev| ev.timestamp_ns);
            }
            let mut events = std::mem::take(&mut self.events);
            for ev in events.drain(..) {
                self.handle(ev);
            }
            self.events = events;
            if !overrun {
                return Ok(());
            }
            // Everything read before the overflow is out; the marker goes
            // here, then the rest of the queue is read.
            self.stats.add_kernel_overruns(1);
            let reason = format!(
                "the kernel dropped events: the agent's netlink receive buffer ({} bytes) overflowed (ENOBUFS)",
                self.rcvbuf
            );
            tracing::warn!("{reason}; subscribers will resync");
            self.fanout
                .publish(Item::DetectorLost(Arc::new(DetectorLoss {
                    site: LossSite::Kernel,
                    reason,
                    count: None,
                })));
        }
    }

    /// Counts an exec whose record could not be read.
    fn unreadable(&mut self, error: Exhausted) {
        self.stats.add_unreadable_execs(1);
        match &mut self.unread {
            Some(unread) => unread.count += 1,
            None => {
                tracing::warn!(
                    "{error}: exec events are counted and reported as lost once reads work again"
                );
                self.unread = Some(Unread {
                    count: 1,
                    error,
                    retry_at: Instant::now() + RETRY,
                });
            }
        }
    }

    /// Reports the execs that could not be read, now that reads work.
    fn recovered(&mut self) {
        let Some(unread) = self.unread.take() else {
            return;
        };
        let reason = format!(
            "{} exec events could not be read from /proc ({}); subscribers resync",
            unread.count, unread.error
        );
        tracing::warn!("{reason}");
        self.fanout
            .publish(Item::DetectorLost(Arc::new(DetectorLoss {
                site: LossSite::Detector,
                reason,
                count: Some(unread.count),
            })));
    }

    /// While reads fail: do they work again?
    fn retry(&mut self) {
        match self.procfs.probe() {
            Ok(()) => self.recovered(),
            Err(_) => {
                if let Some(unread) = &mut self.unread {
                    unread.retry_at = Instant::now() + RETRY;
                }
            }
        }
    }

    /// Turns one kernel event into a published item.
    fn handle(&mut self, ev: ProcEvent) {
        match ev.kind {
            EventKind::Exec { pid, tgid } => {
                let mut p = match self.procfs.read(pid, tgid, Source::Netlink) {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        self.stats.add_ignored_kernel_events(1);
                        return;
                    }
                    Err(e) => return self.unreadable(e),
                };
                // The loss goes out before this record: subscribers resync,
                // then get it.
                self.recovered();
                let (fanout, stats) = (&self.fanout, &self.stats);
                p.kernel_timestamp_ns = ev.timestamp_ns;
                if p.exited_before_inspection {
                    stats.add_exited_before_inspection(1);
                }
                fanout.publish(Item::Exec(Arc::new(p)));
            }
            // Thread exits are noise: only a leader's exit ends a process.
            EventKind::Exit {
                pid,
                tgid,
                exit_code,
                exit_signal,
                ..
            } if pid == tgid => {
                self.fanout.publish(Item::Exit(Exit {
                    pid,
                    tgid,
                    exit_code,
                    exit_signal,
                    kernel_timestamp_ns: ev.timestamp_ns,
                    observed_unix_ns: clock::unix_ns(),
                    source: Source::Netlink as i32,
                }));
            }
            _ => self.stats.add_ignored_kernel_events(1),
        }
    }
}

/// Appends every event queued on `sock` to `events`, up to an overflow.
/// Returns whether it stopped at one (the datagrams after it are still
/// queued).
fn drain(
    sock: &NetlinkSocket,
    buf: &mut [u8],
    events: &mut Vec<ProcEvent>,
    stats: &Stats,
) -> Result<bool, NetlinkError> {
    loop {
        let n = match sock.try_recv(buf)? {
            Received::Datagram(n) => n,
            Received::Timeout => return Ok(false),
            Received::Overrun => return Ok(true),
        };
        for message in parse_datagram(&buf[..n]) {
            match message {
                Ok(Message::Event(ev)) => events.push(ev),
                Ok(_) => stats.add_ignored_kernel_events(1),
                Err(e) => {
                    stats.add_parse_errors(1);
                    tracing::warn!("skipping malformed proc connector message: {e}");
                }
            }
        }
    }
}

/// Forgets the readiness the runtime has recorded for `fd`, before it is
/// drained: a datagram that arrives after this marks it readable again, so
/// none can be left unread without a wake-up.
fn clear_readiness(fd: &AsyncFd<NetlinkSocket>) {
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(Ok(mut guard)) = std::pin::pin!(fd.readable()).poll(&mut cx) {
        guard.clear_ready();
    }
}
