//! The floor: the least a program must do to learn of an exec.
//!
//! One thread, one `NETLINK_CONNECTOR` socket joined to the proc connector
//! group and subscribed with the 8-byte kernel filter for `EXEC` only (the
//! agent also takes exits), an 8 MiB forced receive buffer like the agent's,
//! and a blocking `recv` loop that reads `CLOCK_MONOTONIC` right after each
//! datagram and keeps `(pid, time)`. No `/proc` reads, no encoding, no
//! sockets to clients: whatever the agent adds on top is its own cost.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use execwatch::internal::cn_proc::{
    event_mask, parse_datagram, subscribe_message, EventKind, McastOp, Message, CN_IDX_PROC,
};

use crate::timing::{monotonic_ns, thread_cpu_ns, Arrivals};

/// What the listener saw between start and stop.
#[derive(Debug, Default)]
pub struct RawResult {
    /// Receive time of each exec, by pid.
    pub arrivals: Arrivals,
    /// Kernel timestamp of each exec, by pid (same clock).
    pub kernel: Arrivals,
    /// Exec events received.
    pub execs: u64,
    /// Receive time of every event of any kind (with [`RawListener::start_with`]
    /// a wider mask than exec), to tell when the kernel was quiet.
    pub all: Vec<u64>,
    /// Times `recv` said ENOBUFS (events lost before the listener saw them).
    pub overruns: u64,
    /// CPU time of the listener thread, ns (exact).
    pub cpu_ns: u64,
}

/// A running raw listener; `stop` ends it and returns what it saw.
pub struct RawListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<RawResult>>,
}

impl RawListener {
    /// Subscribes to execs (before returning: every exec after this call is
    /// delivered) and starts the reading thread.
    pub fn start() -> io::Result<Self> {
        Self::start_with(event_mask::EXEC)
    }

    /// The same with the kernel filter `mask` (bits of [`event_mask`]).
    pub fn start_with(mask: u32) -> io::Result<Self> {
        let sock = open(mask)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("raw-listener".into())
            .spawn(move || run(sock, &flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread (within its 50 ms receive timeout) and returns the result.
    pub fn stop(mut self) -> RawResult {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        thread.join().expect("the raw listener thread panicked")
    }
}

impl Drop for RawListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Socket, bind, receive buffer, receive timeout, subscription.
fn open(mask: u32) -> io::Result<OwnedFd> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    // SAFETY: plain syscalls on a descriptor owned right after creation;
    // every pointer passed points to a live value of the size given.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        ))?;
        let sock = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = CN_IDX_PROC;
        check(libc::bind(
            fd,
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ))?;
        let rcvbuf: libc::c_int = 8 << 20;
        let set = |opt, val: *const libc::c_void, len| {
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, val, len as libc::socklen_t)
        };
        let int_len = std::mem::size_of::<libc::c_int>();
        check(set(
            libc::SO_RCVBUFFORCE,
            &rcvbuf as *const _ as *const _,
            int_len,
        ))?;
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        let tv_len = std::mem::size_of::<libc::timeval>();
        check(set(
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const _,
            tv_len,
        ))?;
        let msg = subscribe_message(McastOp::Listen, Some(mask), 1, 0);
        if libc::send(fd, msg.as_ptr() as *const libc::c_void, msg.len(), 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }
}

/// The receive loop.
fn run(sock: OwnedFd, stop: &AtomicBool) -> RawResult {
    let cpu0 = thread_cpu_ns();
    let mut out = RawResult::default();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        let at = monotonic_ns();
        if n < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOBUFS) => out.overruns += 1,
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                _ => panic!("raw listener recv: {}", io::Error::last_os_error()),
            }
            continue;
        }
        for message in parse_datagram(&buf[..n as usize]).flatten() {
            if let Message::Event(ev) = message {
                out.all.push(at);
                if let EventKind::Exec { tgid, .. } = ev.kind {
                    out.execs += 1;
                    out.arrivals.record(tgid, at);
                    out.kernel.record(tgid, ev.timestamp_ns);
                }
            }
        }
    }
    let msg = subscribe_message(McastOp::Ignore, Some(event_mask::EXEC), 2, 0);
    // SAFETY: msg is a live buffer of its length. Best effort: the socket closes next.
    unsafe {
        libc::send(
            sock.as_raw_fd(),
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
        )
    };
    out.cpu_ns = thread_cpu_ns() - cpu0;
    out
}
