//! The exit socket and how it joins and leaves the runtime's epoll set.
//!
//! Registered, every exit datagram that arrives wakes the agent's thread,
//! even while the reader has decided to read exits later in one sweep. So
//! the socket is in the epoll set only while no sweep is due.

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

use crate::detector::socket::{NetlinkError, NetlinkSocket};

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
    /// Out of it until the sweep `due` then (or the next exec) reads it.
    Parked {
        /// The socket.
        sock: NetlinkSocket,
        /// When the sweep is due.
        due: Instant,
    },
}

impl ExitSocket {
    /// The registered socket, if it is in the epoll set.
    pub fn watched(&self) -> Option<&AsyncFd<NetlinkSocket>> {
        match self {
            ExitSocket::Watched(fd) => Some(fd),
            ExitSocket::Parked { .. } => None,
        }
    }

    /// When the sweep is due, if the socket is parked.
    pub fn due(&self) -> Option<Instant> {
        match self {
            ExitSocket::Watched(_) => None,
            ExitSocket::Parked { due, .. } => Some(*due),
        }
    }

    /// The socket itself, registered or not.
    pub fn socket(&self) -> &NetlinkSocket {
        match self {
            ExitSocket::Watched(fd) => fd.get_ref(),
            ExitSocket::Parked { sock, .. } => sock,
        }
    }

    /// Takes the socket out of the epoll set until a sweep `due`; a parked
    /// socket keeps the sweep it has.
    pub fn park(self, due: Instant) -> Self {
        match self {
            ExitSocket::Watched(fd) => ExitSocket::Parked {
                sock: fd.into_inner(),
                due,
            },
            parked => parked,
        }
    }

    /// Puts the socket back into the epoll set. Datagrams queued meanwhile
    /// are reported at once: epoll checks readiness when a file is added.
    pub fn watch(self) -> Result<Self, NetlinkError> {
        match self {
            ExitSocket::Parked { sock, .. } => register(sock).map(ExitSocket::Watched),
            watched => Ok(watched),
        }
    }
}
