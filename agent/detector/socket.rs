//! The kernel side of the netlink detector: a `NETLINK_CONNECTOR` socket
//! joined to the proc connector's multicast group.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Instant;

use execwatch::internal::cn_proc::{self, parse_datagram, McastOp, Message, ParseError};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, MsgFlags, MultiHeaders, NetlinkAddr};

/// Why the proc connector could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// socket(2) failed.
    #[error("cannot create a NETLINK_CONNECTOR socket: {0}")]
    Socket(#[source] io::Error),
    /// bind(2) to the proc connector's multicast group failed: what it said,
    /// and the [`hint`] for that.
    #[error("cannot join the proc connector multicast group: {0}{1}")]
    Bind(#[source] io::Error, &'static str),
    /// The subscribe request could not be sent: what send(2) said, and the
    /// [`hint`] for that.
    #[error("cannot send the proc connector subscription: {0}{1}")]
    Subscribe(#[source] io::Error, &'static str),
    /// recv(2) failed for a reason other than overflow.
    #[error("reading the proc connector failed: {0}")]
    Recv(#[source] io::Error),
    /// No thread could be started to go on reading after a `/proc` read
    /// was given up.
    #[error("cannot start a thread to read the proc connector: {0}")]
    Thread(#[source] io::Error),
}

/// What `errno` from the proc connector usually means, as a suffix of the
/// error that reports it. Whether a kernel admits listeners without
/// `CAP_NET_ADMIN` is the build's choice (patches, security modules), not a
/// matter of version alone, so the message for EPERM names no version.
pub fn hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM if crate::privilege::holds_net_admin() => {
            " (refused although the agent holds CAP_NET_ADMIN: a security module or \
             seccomp policy of the node denies it)"
        }
        Errno::EPERM => {
            ": the kernel refuses unprivileged proc-connector listeners; \
             grant the agent CAP_NET_ADMIN (deploy/base starts it as uid 0 with CAP_NET_ADMIN \
             and switches to --run-as-uid once subscribed) or run it with --detector=poll"
        }
        Errno::ECONNREFUSED => {
            " (the proc connector only exists in the initial network namespace: run with hostNetwork)"
        }
        _ => "",
    }
}

/// Waits until `fd` is readable or has an error pending (`true`), or until
/// `deadline` (`false`). A signal that interrupts the wait only shortens it.
pub fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> io::Result<bool> {
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, poll_timeout(Some(deadline))) {
            // POLLIN, POLLERR, POLLHUP or POLLNVAL: a read answers now.
            Ok(ready) => return Ok(ready > 0),
            Err(Errno::EINTR) if Instant::now() < deadline => continue,
            Err(Errno::EINTR) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A poll(2) timeout that ends at `deadline` (never, if `None`), rounded
/// up: a wait below a millisecond still waits.
pub fn poll_timeout(deadline: Option<Instant>) -> PollTimeout {
    deadline.map_or(PollTimeout::NONE, |deadline| {
        let left = deadline.saturating_duration_since(Instant::now());
        PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
    })
}

/// A bound proc connector socket.
#[derive(Debug)]
pub struct NetlinkSocket(OwnedFd);

impl AsFd for NetlinkSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl NetlinkSocket {
    /// Opens the socket, joins the proc group, asks for a receive buffer of
    /// `rcvbuf` bytes and listens with `filter` (see
    /// [`NetlinkSocket::subscribe`]). Returns the socket and the size granted.
    pub fn open(rcvbuf: usize, filter: Option<u32>) -> Result<(Self, usize), NetlinkError> {
        use libc::{AF_NETLINK, NETLINK_CONNECTOR, SOCK_CLOEXEC, SOCK_DGRAM};
        // nix names no NETLINK_CONNECTOR protocol (its SockProtocol is a
        // closed enum), so this one call is libc's.
        // SAFETY: socket(2) reads and writes no memory of ours.
        let raw = unsafe { libc::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR) };
        let raw = Errno::result(raw).map_err(|e| NetlinkError::Socket(e.into()))?;
        // SAFETY: a descriptor socket(2) returns is new and owned by nobody
        // else, so the OwnedFd may own (and close) it.
        let sock = Self(unsafe { OwnedFd::from_raw_fd(raw) });
        let group = NetlinkAddr::new(0, cn_proc::CN_IDX_PROC);
        socket::bind(raw, &group).map_err(|e| NetlinkError::Bind(e.into(), hint(e)))?;
        // SO_RCVBUFFORCE passes the system limit but needs CAP_NET_ADMIN;
        // SO_RCVBUF is capped at net.core.rmem_max.
        let val = rcvbuf.min(i32::MAX as usize / 2);
        if socket::setsockopt(&sock, sockopt::RcvBufForce, &val).is_err() {
            let _ = socket::setsockopt(&sock, sockopt::RcvBuf, &val);
        }
        let granted = socket::getsockopt(&sock, sockopt::RcvBuf).unwrap_or(0);
        sock.subscribe(McastOp::Listen, filter)?;
        Ok((sock, granted))
    }

    /// Sends LISTEN (or IGNORE). `filter` is the kernel-side event mask
    /// (kernels >= 6.6); `None` sends the legacy form that gets all events.
    pub fn subscribe(&self, op: McastOp, filter: Option<u32>) -> Result<(), NetlinkError> {
        let msg = cn_proc::subscribe_message(op, filter, 0, std::process::id());
        socket::send(self.0.as_raw_fd(), &msg, MsgFlags::empty())
            .map(drop)
            .map_err(|e| NetlinkError::Subscribe(e.into(), hint(e)))
    }

    /// Receives and parses everything queued, without waiting, and hands
    /// `each` every message. Up to [`BATCH`] datagrams come in one
    /// recvmmsg(2): one system call for a burst instead of one per datagram
    /// and one more to learn the queue is empty. Returns whether it stopped
    /// at an overflow (ENOBUFS: events were dropped; the datagrams after it
    /// are still queued).
    pub fn drain(
        &self,
        batch: &mut Batch,
        mut each: impl FnMut(Result<Message, ParseError>),
    ) -> Result<bool, NetlinkError> {
        let Batch(headers, buf) = batch;
        loop {
            let mut slots = buf.chunks_mut(DATAGRAM_BUF);
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
            let (fd, flags, mut lens) = (self.0.as_raw_fd(), MsgFlags::MSG_DONTWAIT, [0; BATCH]);
            let n = match socket::recvmmsg(fd, headers, &mut iovs, flags, None) {
                Ok(got) => lens
                    .iter_mut()
                    .zip(got)
                    .map(|(n, msg)| *n = msg.bytes)
                    .count(),
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => return Ok(true),
                Err(Errno::EAGAIN) => return Ok(false),
                Err(errno) => return Err(NetlinkError::Recv(errno.into())),
            };
            for (slot, len) in buf.chunks(DATAGRAM_BUF).zip(lens).take(n) {
                parse_datagram(&slot[..len.min(slot.len())]).for_each(&mut each);
            }
            // A short batch emptied the queue: no call to hear so. Anything
            // that arrived since makes the socket readable again.
            if n < BATCH {
                return Ok(false);
            }
        }
    }
}

/// Big enough for any proc connector datagram (they are under 100 bytes).
pub const DATAGRAM_BUF: usize = 4096;

/// The most datagrams one recvmmsg(2) of [`NetlinkSocket::drain`] takes.
pub const BATCH: usize = 16;

/// Room for [`BATCH`] datagrams: recvmmsg(2)'s headers, and a buffer cut
/// into slots of [`DATAGRAM_BUF`].
pub struct Batch(MultiHeaders<()>, Vec<u8>);

impl Default for Batch {
    fn default() -> Self {
        Self(
            MultiHeaders::preallocate(BATCH, None),
            vec![0; BATCH * DATAGRAM_BUF],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;

    extern "C" fn nothing(_: nix::libc::c_int) {}

    /// A wait that signals keep interrupting still ends at its deadline (the
    /// start-up probe used to fall through to a blocking read on EINTR).
    #[test]
    fn interrupted_waits_end_at_the_deadline() {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        // No SA_RESTART: every signal interrupts poll(2) with EINTR.
        let action = SigAction::new(
            SigHandler::Handler(nothing),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe { sigaction(Signal::SIGUSR1, &action) }.unwrap();
        let (quiet, _writer) = std::os::unix::net::UnixStream::pair().unwrap();
        let waiter = nix::sys::pthread::pthread_self();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pester = {
            let done = done.clone();
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = nix::sys::pthread::pthread_kill(waiter, Signal::SIGUSR1);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let started = Instant::now();
        let readable = wait_readable(quiet.as_fd(), started + Duration::from_millis(300)).unwrap();
        let took = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        pester.join().unwrap();
        assert!(!readable, "nothing was written");
        assert!(took >= Duration::from_millis(300), "ended early: {took:?}");
        assert!(
            took < Duration::from_secs(3),
            "ran past its deadline: {took:?}"
        );
    }

    #[test]
    fn a_pending_byte_or_hang_up_is_readable_at_once() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(wait_readable(a.as_fd(), deadline).unwrap());
        assert!(Instant::now() < deadline - Duration::from_secs(4));
    }
}
