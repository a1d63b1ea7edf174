//! The exit socket and how it joins and leaves the runtime's epoll set.
//!
//! Registered, every exit datagram that arrives wakes the agent's thread,
//! even while the reader has decided to read exits later in one sweep. So
//! the socket is in the epoll set only while no sweep is due.

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::netlink::{NetlinkError, NetlinkSocket};

/// Registers `sock` with the runtime for readability.
pub fn register(sock: NetlinkSocket) -> Result<AsyncFd<NetlinkSocket>, NetlinkError> {
    // SAFETY: a NetlinkSocket owns its descriptor and neither closes nor
    // replaces it while the AsyncFd holds the socket. The socket stays in
    // blocking mode: it is only read with MSG_DONTWAIT from here on.
    unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
        .map_err(|e| NetlinkError::Recv(std::io::Error::other(e.to_string())))
}

/// The exit socket, in the epoll set or out of it.
pub enum ExitSocket {
    /// In the epoll set: an arriving exit wakes the reader.
    Watched(AsyncFd<NetlinkSocket>),
    /// Out of it: the armed sweep (or the next exec) reads it.
    Parked(NetlinkSocket),
}

impl ExitSocket {
    /// The registered socket, if it is in the epoll set.
    pub fn watched(&self) -> Option<&AsyncFd<NetlinkSocket>> {
        match self {
            ExitSocket::Watched(fd) => Some(fd),
            ExitSocket::Parked(_) => None,
        }
    }

    /// The socket itself, registered or not.
    pub fn socket(&self) -> &NetlinkSocket {
        match self {
            ExitSocket::Watched(fd) => fd.get_ref(),
            ExitSocket::Parked(sock) => sock,
        }
    }

    /// Takes the socket out of the epoll set.
    pub fn park(self) -> Self {
        match self {
            ExitSocket::Watched(fd) => ExitSocket::Parked(fd.into_inner()),
            parked => parked,
        }
    }

    /// Puts the socket back into the epoll set. Datagrams queued meanwhile
    /// are reported at once: epoll checks readiness when a file is added.
    pub fn watch(self) -> Result<Self, NetlinkError> {
        match self {
            ExitSocket::Parked(sock) => register(sock).map(ExitSocket::Watched),
            watched => Ok(watched),
        }
    }
}
