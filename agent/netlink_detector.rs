//! The netlink detector: subscribes to exec (and exit) events, confirms the
//! subscription works, then reads the socket on its own thread forever.
//!
//! A kernel-filtered subscription (>= 6.6) gets no ack, so the only proof it
//! works is an event: the agent executes itself once as a probe and waits for
//! that exec. If it does not arrive, it retries with the legacy unfiltered
//! subscription (older kernels ignore the 8-byte form) and filters here.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use execwatch::proto::{Exit, Source};

use crate::fanout::{Fanout, Item};
use crate::netlink::{NetlinkError, NetlinkSocket, Received, PROBE_TIMEOUT};
use crate::procfs::ProcReader;
use crate::stats::Stats;
use execwatch::clock;
use execwatch::cn_proc::{event_mask, parse_datagram, EventKind, McastOp, Message, ProcEvent};

/// Environment variable that turns an agent start into the probe's no-op.
pub const PROBE_ENV: &str = "EXECWATCH_PROBE";

/// Big enough for any proc connector datagram (they are under 100 bytes).
const DATAGRAM_BUF: usize = 4096;

/// Why the netlink detector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The socket could not be set up.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The probe process could not be run.
    #[error("cannot run the subscription probe ({exe}): {source}")]
    Probe {
        /// What was executed.
        exe: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the subscription.
    #[error("the kernel refused the proc connector subscription: errno {0}{1}")]
    Refused(u32, &'static str),
    /// Subscribed, but no event ever came.
    #[error("subscribed to the proc connector but saw no event for the probe process within {0:?}: \
             is the agent in the initial pid namespace (hostPID) and does the kernel have CONFIG_PROC_EVENTS?")]
    Silent(std::time::Duration),
}

/// How the subscription filters events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The kernel sends only exec and exit events (>= 6.6).
    KernelFiltered,
    /// The kernel sends everything; the agent drops what it does not want.
    UserspaceFiltered,
}

impl Mode {
    /// The name used in logs and stats.
    pub fn name(self) -> &'static str {
        match self {
            Mode::KernelFiltered => "kernel-filtered",
            Mode::UserspaceFiltered => "userspace-filtered",
        }
    }
}

/// A subscribed, confirmed socket, ready to be read.
pub struct NetlinkDetector {
    sock: NetlinkSocket,
    mode: Mode,
    rcvbuf: usize,
}

impl NetlinkDetector {
    /// Opens, subscribes and confirms. Blocks for at most two probe timeouts.
    pub fn start(receive_buffer: usize) -> Result<Self, StartError> {
        let (sock, rcvbuf) = NetlinkSocket::open(receive_buffer)?;
        sock.subscribe(McastOp::Listen, Some(event_mask::EXEC | event_mask::EXIT))?;
        if probe(&sock)? {
            return Ok(Self {
                sock,
                mode: Mode::KernelFiltered,
                rcvbuf,
            });
        }
        tracing::info!("kernel-filtered subscription produced no event (kernel older than 6.6?); retrying unfiltered");
        sock.subscribe(McastOp::Listen, None)?;
        if probe(&sock)? {
            return Ok(Self {
                sock,
                mode: Mode::UserspaceFiltered,
                rcvbuf,
            });
        }
        Err(StartError::Silent(PROBE_TIMEOUT))
    }

    /// The subscription mode in force.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The receive buffer the kernel granted, in bytes.
    pub fn receive_buffer(&self) -> usize {
        self.rcvbuf
    }

    /// Reads events until the socket fails, publishing each. Runs on its own
    /// thread: it never waits on anything but the kernel.
    pub fn run(
        self,
        mut reader: ProcReader,
        fanout: Arc<Fanout>,
        stats: Arc<Stats>,
    ) -> NetlinkError {
        let mut buf = vec![0u8; DATAGRAM_BUF];
        loop {
            let n = match self.sock.recv(&mut buf, None) {
                Ok(Received::Datagram(n)) => n,
                Ok(Received::Timeout) => continue,
                Ok(Received::Overrun) => {
                    stats.add_kernel_overruns(1);
                    let reason = format!(
                        "the kernel dropped events: the agent's netlink receive buffer ({} bytes) overflowed (ENOBUFS)",
                        self.rcvbuf
                    );
                    tracing::warn!("{reason}; subscribers will resync");
                    fanout.publish(Item::DetectorLost {
                        kernel: true,
                        reason,
                    });
                    continue;
                }
                Err(e) => return e,
            };
            for message in parse_datagram(&buf[..n]) {
                match message {
                    Ok(Message::Event(ev)) => handle(ev, &mut reader, &fanout, &stats),
                    Ok(_) => stats.add_ignored_kernel_events(1),
                    Err(e) => {
                        stats.add_parse_errors(1);
                        tracing::warn!("skipping malformed proc connector message: {e}");
                    }
                }
            }
        }
    }
}

/// Turns one kernel event into a published item.
fn handle(ev: ProcEvent, reader: &mut ProcReader, fanout: &Fanout, stats: &Stats) {
    match ev.kind {
        EventKind::Exec { pid, tgid } => {
            let Some(mut p) = reader.read(pid, tgid, Source::Netlink) else {
                stats.add_ignored_kernel_events(1);
                return;
            };
            p.kernel_timestamp_ns = ev.timestamp_ns;
            if p.exited_before_inspection {
                stats.add_exited_before_inspection(1);
            }
            stats.add_execs(1);
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
            stats.add_exits(1);
            fanout.publish(Item::Exit(Exit {
                pid,
                tgid,
                exit_code,
                exit_signal,
                kernel_timestamp_ns: ev.timestamp_ns,
                observed_unix_ns: clock::unix_ns(),
                source: Source::Netlink as i32,
            }));
        }
        _ => stats.add_ignored_kernel_events(1),
    }
}

/// Executes the agent's own binary as a no-op and waits for its exec event.
/// `Ok(false)` if it never came.
fn probe(sock: &NetlinkSocket) -> Result<bool, StartError> {
    let exe = "/proc/self/exe";
    let mut child = Command::new(exe)
        .env(PROBE_ENV, "1")
        .spawn()
        .map_err(|source| StartError::Probe {
            exe: exe.into(),
            source,
        })?;
    let target = child.id() as i32;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut buf = vec![0u8; DATAGRAM_BUF];
    let mut seen = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let n = match sock.recv(&mut buf, Some(left))? {
            Received::Datagram(n) => n,
            Received::Overrun => continue,
            Received::Timeout => break,
        };
        for message in parse_datagram(&buf[..n]).flatten() {
            if let Message::Event(ev) = message {
                match ev.kind {
                    EventKind::Ack { err } if err != 0 => {
                        let _ = child.wait();
                        let hint = if err == libc::EPERM as u32 {
                            " (kernels before 6.6 need CAP_NET_ADMIN: see deploy/overlays/kernel-pre-6.6)"
                        } else {
                            ""
                        };
                        return Err(StartError::Refused(err, hint));
                    }
                    EventKind::Exec { tgid, .. } if tgid == target => seen = true,
                    _ => {}
                }
            }
        }
        if seen {
            break;
        }
    }
    let _ = child.wait();
    Ok(seen)
}
