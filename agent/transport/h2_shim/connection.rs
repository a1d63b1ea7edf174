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
//!
//! What the client sends passes through a [`Normalizer`] on its way to h2,
//! so any `:authority` is accepted; the frames the agent writes are
//! followed by one [`Frames`], which tells the [`Activity`] when streams
//! end and shows each [`Refusal`]. The first refusal on a connection is logged at `warn`
//! with the peer's uid and the reason. The normalizer also hands the
//! client's frame headers to the [`Activity`], and a connection past its
//! handshake deadline or idle timeout ends as if the client had hung up.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use nix::sys::socket::{self, MsgFlags, Shutdown};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::Sleep;
use tonic::transport::server::{Connected, UdsConnectInfo};

use super::authority::Normalizer;
use super::frame::Frames;
use super::idle::{Activity, Expired};
use super::refusal::Refusal;

/// An accepted client connection.
pub struct Connection {
    read: AsyncFd<OwnedFd>,
    /// A duplicate of the socket, registered for writability while a write
    /// is blocked.
    write: Option<AsyncFd<OwnedFd>>,
    info: UdsConnectInfo,
    /// The client's bytes on their way to h2.
    normalizer: Normalizer,
    /// What the normalizer produced that h2 has not read yet.
    pending: BytesMut,
    /// The agent's frames on their way to the client.
    written: Frames,
    /// Whether a refusal was logged on this connection.
    logged: bool,
    /// The handshake and the open streams.
    activity: Activity,
    /// Wakes the reader at the connection's deadline.
    deadline: Pin<Box<Sleep>>,
    /// The task reading (no-op until it first reads), woken when the last
    /// stream closes so that it arms the idle deadline.
    reader: Waker,
    /// What the connection holds while it lives, dropped when it closes
    /// (the admission's place in the connection count).
    _held: Box<dyn Send + Sync>,
}

impl Connection {
    /// Takes over a stream accepted just now, keeping its peer's address
    /// and credentials for the peer check, and `held` until it closes; it
    /// ends once it has had no RPC in progress for `idle_timeout`.
    pub fn new(
        stream: UnixStream,
        idle_timeout: Duration,
        held: impl Send + Sync + 'static,
    ) -> io::Result<Self> {
        let info = stream.connect_info();
        // Out of tokio's registration; the socket stays non-blocking.
        let fd = OwnedFd::from(stream.into_std()?);
        Ok(Self {
            read: register(fd, Interest::READABLE)?,
            write: None,
            info,
            normalizer: Normalizer::new(),
            pending: BytesMut::new(),
            written: Frames::default(),
            logged: false,
            activity: Activity::new(Instant::now(), idle_timeout),
            deadline: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            reader: Waker::noop().clone(),
            _held: Box::new(held),
        })
    }

    /// Logs the first refusal on this connection.
    fn log_refusal(&mut self, reason: impl std::fmt::Display) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        // A number, as in every line with a peer_uid (absent if unknown).
        let peer_uid = self.info.peer_cred.map(|cred| cred.uid());
        tracing::warn!(peer_uid, %reason, "refused an HTTP/2 request on the socket");
    }

    /// Follows what was written: the first `n` bytes of `bufs`.
    fn follow_written(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        for buf in bufs {
            let part = &buf[..buf.len().min(n)];
            n -= part.len();
            let mut refusal = None;
            self.written.follow(part, |frame| {
                if self.activity.agent_wrote(frame.head) {
                    // The reader is parked on the socket; it must arm the
                    // idle deadline now.
                    self.reader.wake_by_ref();
                }
                refusal = refusal.or(Refusal::of(frame));
            });
            if let Some(refusal) = refusal {
                let reason = match self.normalizer.request_on(refusal.stream) {
                    Some(request) if !refusal.goaway => format!("{refusal} ({request})"),
                    _ => refusal.to_string(),
                };
                self.log_refusal(reason);
            }
        }
    }

    /// Whether the connection's deadline has passed; if not, makes sure the
    /// reading task is woken at it.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<Expired> {
        // Cloned only if the task changed (`Waker::clone_from` checks).
        self.reader.clone_from(cx.waker());
        // Twice at most: a deadline that fired is checked once more.
        for _ in 0..2 {
            let at = self.activity.deadline()?;
            if let Some(expired) = self.activity.expired(Instant::now()) {
                return Some(expired);
            }
            let at = tokio::time::Instant::from_std(at);
            if self.deadline.deadline() != at {
                self.deadline.as_mut().reset(at);
            }
            if self.deadline.as_mut().poll(cx).is_pending() {
                return None;
            }
        }
        self.activity.expired(Instant::now())
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
        let this = self.get_mut();
        // A read into no room would return 0, which means end of stream.
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(expired) = this.poll_expired(cx) {
            let peer_uid = this.info.peer_cred.map(|cred| cred.uid());
            match expired {
                Expired::Handshake => tracing::debug!(
                    peer_uid,
                    "closed a connection that did not finish its HTTP/2 preface in time"
                ),
                Expired::Idle(after) => tracing::debug!(
                    peer_uid,
                    "closed a connection with no RPC in progress for {after:?}"
                ),
            }
            // As if the client had hung up: h2 ends the connection.
            return Poll::Ready(Ok(()));
        }
        loop {
            // What the normalizer produced goes first.
            if !this.pending.is_empty() {
                let n = buf.remaining().min(this.pending.len());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.normalizer.closed() {
                // h2 has a block it refuses; it needs nothing more.
                return Poll::Ready(Ok(()));
            }
            let mut guard = ready!(this.read.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let read = guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), unfilled)?));
            // Err: it would block.
            let Ok(n) = read else { continue };
            let n = n?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            // What passes on as read stays in place; the rest comes from
            // the pending bytes on the next turn.
            let read = &buf.initialize_unfilled()[..n];
            this.activity.client_sent(Instant::now());
            let activity = &mut this.activity;
            let direct =
                (this.normalizer).feed(read, &mut this.pending, |h| activity.client_frame(h));
            if let Some(reason) = this.normalizer.take_refusal() {
                this.log_refusal(reason);
            }
            if direct > 0 {
                buf.advance(direct);
                return Poll::Ready(Ok(()));
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
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // The kernel takes at most IOV_MAX slices at once.
        let bufs = &bufs[..bufs.len().min(IOV_MAX)];
        // MSG_NOSIGNAL: a client that hung up is an error here, not a
        // SIGPIPE.
        let send = |fd: &OwnedFd| {
            socket::sendmsg::<()>(fd.as_raw_fd(), bufs, &[], MsgFlags::MSG_NOSIGNAL, None)
                .map_err(io::Error::from)
        };
        // Waits for writability only if the socket is full.
        let written = loop {
            if let Some(write) = &this.write {
                let mut guard = ready!(write.poll_write_ready(cx))?;
                if let Ok(result) = guard.try_io(|fd| send(fd.get_ref())) {
                    // Room again: back to plain writes.
                    this.write = None;
                    break result?;
                }
                continue;
            }
            match send(this.read.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = this.read.get_ref().as_fd().try_clone_to_owned()?;
                    this.write = Some(register(dup, Interest::WRITABLE)?);
                }
                result => break result?,
            }
        };
        this.follow_written(bufs, written);
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = socket::shutdown(self.read.get_ref().as_raw_fd(), Shutdown::Write);
        Poll::Ready(done.map_err(io::Error::from))
    }
}

/// The most slices one `sendmsg` takes (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// Registers `fd` with the runtime for `interest`.
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd neither closes nor replaces its descriptor while
    // the AsyncFd holds it.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection that will not time out during a test.
    fn connection(ours: UnixStream) -> Connection {
        Connection::new(ours, Duration::from_secs(60), ()).unwrap()
    }

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
        let mut conn = connection(ours);
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
        let mut conn = connection(ours);
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
        let mut conn = connection(ours);
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

    /// What the client sends reaches h2 through the normalizer, here read
    /// through a 5-byte buffer so the normalized block comes out in pieces.
    #[tokio::test]
    async fn reads_pass_through_the_authority_normalizer() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut conn = connection(ours);
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend([0, 0, 7, 0x1, 0x4, 0, 0, 0, 1]); // HEADERS, END_HEADERS, stream 1
        input.extend([0x83, 0x86, 0x84, 0x41, 0x02, b'/', b's']); // POST http / :authority /s
        input.extend([0, 0, 2, 0x0, 0x1, 0, 0, 0, 1, b'o', b'k']); // DATA, END_STREAM
        peer.write_all(&input).await.unwrap();
        drop(peer);
        let mut got = Vec::new();
        let mut piece = [0u8; 5];
        loop {
            let n = conn.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert!(got.starts_with(b"PRI * HTTP/2.0"));
        assert!(got.windows(9).any(|w| w == b"localhost"), "{got:?}");
        assert!(got.ends_with(&[0, 0, 2, 0x0, 0x1, 0, 0, 0, 1, b'o', b'k']));
    }

    #[tokio::test]
    async fn reads_see_the_peer_and_its_credentials() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut conn = connection(ours);
        let cred = conn.connect_info().peer_cred.expect("peer credentials");
        assert_eq!(cred.uid(), nix::unistd::getuid().as_raw());
        peer.write_all(b"ping").await.unwrap();
        drop(peer);
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
    }
}
