//! The netlink detector's start: subscribe to exec, comm and exit events
//! and prove the subscription works before anything is served.
//!
//! On kernels >= 6.6 the kernel filters per socket, so the agent opens two:
//! one for exec and comm events (a process renaming itself, see
//! [`crate::detector::receiver`]), which must reach subscribers at once, and
//! one for exit events, which may wait a few milliseconds and be read in batches (see
//! [`crate::detector::receiver`]). A kernel-filtered subscription gets no ack, so
//! the only proof it works is an event: the agent executes itself once as a
//! probe and waits for that exec on the first socket and that exit on the
//! second. If they do not arrive, it falls back to one socket with the legacy
//! unfiltered subscription (older kernels ignore the 8-byte form) and filters
//! here.

use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::detector::socket::{hint, wait_readable, Batch, NetlinkError, NetlinkSocket};
use execwatch::internal::cn_proc::{event_mask, EventKind, McastOp, Message};
use nix::errno::Errno;

/// Environment variable that turns an agent start into the probe's no-op.
pub const PROBE_ENV: &str = "EXECWATCH_PROBE";

/// How long the start-up probe waits to see its own exec.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the exec socket is watched for events it should not get.
const FILTER_CHECK: Duration = Duration::from_millis(50);

/// The exec socket's filter: execs, and renames, which decide a process as
/// an exec does.
const EXEC_MASK: u32 = event_mask::EXEC | event_mask::COMM;

/// Why the netlink detector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The socket could not be set up.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The probe process (the agent's own binary) could not be run.
    #[error("cannot run the subscription probe (/proc/self/exe): {0}")]
    Probe(#[source] std::io::Error),
    /// The kernel refused the subscription.
    #[error("the kernel refused the proc connector subscription: errno {0}{1}")]
    Refused(u32, &'static str),
    /// Subscribed, but no event ever came.
    #[error("subscribed to the proc connector but saw no event for the probe process within {0:?}: \
             is the agent in the initial pid namespace (hostPID) and does the kernel have CONFIG_PROC_EVENTS?")]
    Silent(std::time::Duration),
}

/// Subscribed, confirmed sockets, ready to be read.
pub struct NetlinkDetector {
    /// Exec and comm events; without the kernel's filter, every event.
    pub(crate) execs: NetlinkSocket,
    /// Exit events, when the kernel filters (>= 6.6).
    pub(crate) exits: Option<NetlinkSocket>,
    /// The receive buffer the kernel granted each socket, in bytes.
    pub(crate) receive_buffer: usize,
}

impl NetlinkDetector {
    /// Opens, subscribes and confirms: with the kernel's filter if
    /// `kernel_filter` and the kernel has one (two sockets, exec and exit,
    /// each filtered by the kernel), else one socket that gets every event.
    /// Blocks for at most four probe timeouts.
    pub fn start(receive_buffer: usize, kernel_filter: bool) -> Result<Self, StartError> {
        if kernel_filter {
            let (execs, granted) = NetlinkSocket::open(receive_buffer, Some(EXEC_MASK))?;
            let (exits, _) = NetlinkSocket::open(receive_buffer, Some(event_mask::EXIT))?;
            let ((exec, foreign), target) = probe(&execs)?;
            if exec && !foreign {
                let (exit, foreign) = wait_for(&exits, target, event_mask::EXIT, PROBE_TIMEOUT)?;
                // A kernel without the filter sends a socket everything once
                // anyone listens: the probe's exit would reach the exec socket.
                let (_, leak) = wait_for(&execs, -1, event_mask::EXEC, FILTER_CHECK)?;
                if exit && !foreign && !leak {
                    return Ok(Self {
                        execs,
                        exits: Some(exits),
                        receive_buffer: granted,
                    });
                }
            }
            // Leave the group's listener count as it was; closing alone would
            // not.
            for sock in [&execs, &exits] {
                let _ = sock.subscribe(McastOp::Ignore, None);
            }
            tracing::info!("kernel-filtered subscription produced no event (kernel older than 6.6?); retrying unfiltered");
        }
        let (execs, granted) = NetlinkSocket::open(receive_buffer, None)?;
        let ((exec, _), _) = probe(&execs)?;
        if !exec {
            return Err(StartError::Silent(PROBE_TIMEOUT));
        }
        Ok(Self {
            execs,
            exits: None,
            receive_buffer: granted,
        })
    }

    /// How the subscription in force filters events, as logs and stats
    /// name it: `kernel-filtered` (the kernel sends only exec, comm and exit
    /// events, >= 6.6) or `userspace-filtered` (it sends everything; the
    /// agent drops what it does not want).
    pub fn mode(&self) -> &'static str {
        match self.exits {
            Some(_) => "kernel-filtered",
            None => "userspace-filtered",
        }
    }
}

/// Executes the agent's own binary as a no-op, waits for its exec on
/// `execs` and reaps it. What the socket showed ([`wait_for`]), and the
/// probe's pid.
fn probe(execs: &NetlinkSocket) -> Result<((bool, bool), i32), StartError> {
    let mut child = Command::new("/proc/self/exe")
        .env(PROBE_ENV, "1")
        .spawn()
        .map_err(StartError::Probe)?;
    let target = child.id() as i32;
    let seen = wait_for(execs, target, event_mask::EXEC, PROBE_TIMEOUT);
    let _ = child.wait();
    Ok((seen?, target))
}

/// Waits up to `timeout` for the probe's exec or exit event (`wanted`:
/// [`event_mask::EXEC`] or [`event_mask::EXIT`]) on `sock`, noting any event
/// the socket's filter keeps out (a rename is let in with execs). Returns
/// whether the probe's event arrived, and whether an event of another kind
/// did (the kernel did not filter). An error ack from the kernel is a
/// refusal.
fn wait_for(
    sock: &NetlinkSocket,
    target: i32,
    wanted: u32,
    timeout: Duration,
) -> Result<(bool, bool), StartError> {
    let deadline = Instant::now() + timeout;
    let mut batch = Batch::default();
    let (mut probe, mut foreign) = (false, false);
    let mut refused = 0;
    while !probe
        && Instant::now() < deadline
        && wait_readable(sock.as_fd(), deadline).map_err(NetlinkError::Recv)?
    {
        // An overflow only means more to read.
        sock.drain(&mut batch, |message| {
            let Ok(Message::Event(ev)) = message else {
                return;
            };
            match ev.kind {
                EventKind::Ack { err } if err != 0 => refused = err,
                EventKind::Ack { .. } => {}
                EventKind::Exec { tgid, .. } if wanted == event_mask::EXEC => {
                    probe |= tgid == target;
                }
                EventKind::Exit { pid, .. } if wanted == event_mask::EXIT => {
                    probe |= pid == target;
                }
                EventKind::Comm { .. } if wanted == event_mask::EXEC => {}
                _ => foreign = true,
            }
        })?;
        if refused != 0 {
            let hint = hint(Errno::from_raw(refused as i32));
            return Err(StartError::Refused(refused, hint));
        }
    }
    Ok((probe, foreign))
}
