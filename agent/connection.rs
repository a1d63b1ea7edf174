//! A subscriber's connection, watched for writability only while a write
//! is blocked.
//!
//! tokio registers a Unix stream for both directions, edge-triggered. Each
//! time the client reads what the agent wrote, the kernel signals "writable"
//! again and the agent's one thread wakes up for nothing: one wasted wake-up
//! per event per subscriber during a storm. Here the socket is registered
//! for reading only; a write goes straight to the socket, and only when it
//! would block is a duplicate descriptor registered for writability, until
//! the next write gets through.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// An accepted client connection.
pub struct Connection {
    read: AsyncFd<OwnedFd>,
    /// A duplicate of the socket, registered for writability while a write
    /// is blocked.
    write: Option<AsyncFd<OwnedFd>>,
    info: UdsConnectInfo,
}

impl Connection {
    /// Takes over an accepted stream, keeping its peer's address and
    /// credentials for the peer check.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        let info = stream.connect_info();
        // Out of tokio's registration; the socket stays non-blocking.
        let fd = OwnedFd::from(stream.into_std()?);
        Ok(Self {
            read: register(fd, Interest::READABLE)?,
            write: None,
            info,
        })
    }

    /// Runs the non-blocking write `op`, waiting for writability only if
    /// the socket is full.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        op: impl Fn(&OwnedFd) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(write) = &self.write {
                let mut guard = ready!(write.poll_write_ready(cx))?;
                if let Ok(result) = guard.try_io(|fd| op(fd.get_ref())) {
                    // Room again: back to plain writes.
                    self.write = None;
                    return Poll::Ready(result);
                }
                continue;
            }
            match op(self.read.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = self.read.get_ref().as_fd().try_clone_to_owned()?;
                    self.write = Some(register(dup, Interest::WRITABLE)?);
                }
                result => return Poll::Ready(result),
            }
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // A read into no room would return 0, which means end of stream.
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let result = guard.try_io(|fd| {
                // SAFETY: `unfilled` is valid for writes of its length.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(n as usize)
            });
            match result {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |fd| {
            // SAFETY: `data` is valid for reads of its length. MSG_NOSIGNAL:
            // a client that hung up is an error here, not a SIGPIPE.
            let n = unsafe {
                libc::send(
                    fd.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            result(n)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |fd| {
            // SAFETY: IoSlice is ABI-compatible with iovec; the slices are
            // valid for reads. MSG_NOSIGNAL as in poll_write.
            let msg = libc::msghdr {
                msg_name: std::ptr::null_mut(),
                msg_namelen: 0,
                msg_iov: bufs.as_ptr() as *mut libc::iovec,
                msg_iovlen: bufs.len().min(libc::UIO_MAXIOV as usize) as _,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            };
            result(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: plain syscall on a descriptor this connection owns.
        let rc = unsafe { libc::shutdown(self.read.get_ref().as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(result(rc as isize).map(|_| ()))
    }
}

/// Registers `fd` with the runtime for `interest`.
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd neither closes nor replaces its descriptor while
    // the AsyncFd holds it.
    unsafe { AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| io::Error::other(e.to_string()))
}

/// A syscall's return value as a result.
fn result(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Far more than a Unix socket's buffer, so writes must wait for room.
    const LEN: usize = 8 << 20;

    fn pattern() -> Vec<u8> {
        (0..LEN).map(|i| (i % 251) as u8).collect()
    }

    /// Reads everything the writer sends, once it has had time to fill the
    /// socket. A blocked write that is never woken would hang: bounded.
    async fn read_all(mut peer: UnixStream, writer: tokio::task::JoinHandle<()>) -> Vec<u8> {
        let all = async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            got
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), all)
            .await
            .expect("the writer finished once the reader made room")
    }

    #[tokio::test]
    async fn a_full_socket_waits_for_the_reader_and_loses_nothing() {
        let (ours, peer) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(ours).unwrap();
        let writer = tokio::spawn(async move {
            conn.write_all(&pattern()).await.unwrap();
            conn.shutdown().await.unwrap();
        });
        let got = read_all(peer, writer).await;
        assert_eq!(got.len(), LEN);
        assert!(got == pattern(), "bytes arrive whole and in order");
    }

    #[tokio::test]
    async fn vectored_writes_wait_for_room_too() {
        let (ours, peer) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(ours).unwrap();
        let writer = tokio::spawn(async move {
            let data = pattern();
            let mut at = 0;
            while at < data.len() {
                let rest = &data[at..];
                let (a, b) = rest.split_at(rest.len().min(10_000) / 2);
                let b = &b[..b.len().min(5_000)];
                at += conn
                    .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                    .await
                    .unwrap();
            }
            conn.shutdown().await.unwrap();
        });
        let got = read_all(peer, writer).await;
        assert!(got == pattern(), "bytes arrive whole and in order");
    }

    /// Asked to read into no room, it answers at once (nothing to wait
    /// for), and takes nothing from the socket.
    #[tokio::test]
    async fn a_read_with_no_room_answers_at_once() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(ours).unwrap();
        let mut none = [0u8; 0];
        let mut empty = ReadBuf::new(&mut none);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let polled = Pin::new(&mut conn).poll_read(&mut cx, &mut empty);
        assert!(matches!(polled, Poll::Ready(Ok(()))), "{polled:?}");
        peer.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        conn.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"x");
    }

    #[tokio::test]
    async fn reads_see_the_peer_and_its_credentials() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(ours).unwrap();
        let cred = conn.connect_info().peer_cred.expect("peer credentials");
        assert_eq!(cred.uid(), nix::unistd::getuid().as_raw());
        peer.write_all(b"ping").await.unwrap();
        drop(peer);
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
    }
}
