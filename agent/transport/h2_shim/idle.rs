//! Whether a connection is in use: its HTTP/2 handshake and its open
//! streams, followed in the bytes each side sends.
//!
//! tonic (hyper, h2) has no idle timeout: a client that finishes the
//! handshake, or only starts it, and then sends nothing holds a descriptor
//! and a place in `--max-connections` for as long as it likes. A
//! [`Activity`] follows the frame headers of both directions (the client's
//! as the `:authority` normalizer reads them, the agent's as the connection
//! reports them; the bytes are not changed) and tells the connection when
//! it has had no open stream for `--idle-timeout`, or has not finished its
//! preface within [`HANDSHAKE_DEADLINE`]; the connection then ends as if
//! the client had hung up. A `Watch` is a stream, so a subscriber waiting
//! for events on a quiet node is never idle.
//!
//! A stream opens with the end of the client's header block (HEADERS on a
//! new stream id, and its CONTINUATIONs up to END_HEADERS) and closes
//! with the agent's END_STREAM (gRPC ends every response with trailers) or
//! an RST_STREAM from either side. A client that keeps sending frames with
//! no stream open (PINGs) resets its idle time: it is alive, and it is
//! still counted in `--max-connections`.

use std::time::{Duration, Instant};

use super::frame::{Head, CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM};

/// How long a client has from its first byte to the end of its preface
/// (the 24 magic bytes and a first frame, its SETTINGS).
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// Streams followed at most; beyond this many (h2 refuses streams past
/// SETTINGS_MAX_CONCURRENT_STREAMS long before) the connection simply
/// counts as busy.
const MAX_FOLLOWED: usize = 1024;

/// One connection's handshake and open streams, and how long it has been
/// idle.
#[derive(Debug)]
pub struct Activity {
    /// Whether the client's preface is complete.
    handshaken: bool,
    /// The highest stream id the client opened.
    last_opened: u32,
    /// The stream whose header block the client has begun and not ended:
    /// h2 has not seen it yet (the `:authority` normalizer holds a block
    /// until it is whole), so it is not an RPC in progress.
    opening: Option<u32>,
    /// The streams open now.
    open: Vec<u32>,
    /// When the connection was accepted.
    accepted: Instant,
    /// When the client last sent something or the last stream closed.
    last: Instant,
    /// How long the connection may stay without a stream.
    idle_timeout: Duration,
}

/// Why a connection is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The preface did not arrive within [`HANDSHAKE_DEADLINE`].
    Handshake,
    /// No stream was open for the idle timeout.
    Idle(Duration),
}

impl Activity {
    /// A connection accepted at `accepted`, ended after `idle_timeout`
    /// without a stream.
    pub fn new(accepted: Instant, idle_timeout: Duration) -> Self {
        Self {
            handshaken: false,
            last_opened: 0,
            opening: None,
            open: Vec::new(),
            accepted,
            last: accepted,
            idle_timeout,
        }
    }

    /// The client sent something, at `now`.
    pub fn client_sent(&mut self, now: Instant) {
        self.last = now;
    }

    /// Follows the header of a frame the client sent (read by the
    /// connection's normalizer): the first one ends the preface. A stream
    /// opens when its header block ends, not when it begins: a client that
    /// sends part of a block and stops has no RPC in progress.
    pub fn client_frame(&mut self, head: Head) {
        self.handshaken = true;
        match head.kind {
            HEADERS if head.stream > self.last_opened => {
                self.last_opened = head.stream;
                self.opening = Some(head.stream);
            }
            RST_STREAM => self.open.retain(|&s| s != head.stream),
            _ => {}
        }
        let ends_block = matches!(head.kind, HEADERS | CONTINUATION)
            && head.flags & END_HEADERS != 0
            && self.opening == Some(head.stream);
        if ends_block {
            self.opening = None;
            if self.open.len() < MAX_FOLLOWED {
                self.open.push(head.stream);
            }
        }
    }

    /// Follows a frame the agent wrote (its bytes followed by the
    /// connection). Returns whether the last open stream just closed.
    pub fn agent_wrote(&mut self, head: Head) -> bool {
        let end_stream = matches!(head.kind, DATA | HEADERS) && head.flags & END_STREAM != 0;
        let was_open = !self.open.is_empty();
        if end_stream || head.kind == RST_STREAM {
            self.open.retain(|&s| s != head.stream);
        }
        let now_idle = was_open && self.open.is_empty();
        if now_idle {
            self.last = Instant::now();
        }
        now_idle
    }

    /// When the connection ends unless something happens first; `None`
    /// while a stream is open.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.handshaken {
            return Some(self.accepted + HANDSHAKE_DEADLINE);
        }
        self.open.is_empty().then(|| self.last + self.idle_timeout)
    }

    /// Why the connection ends, if its deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> Option<Expired> {
        self.deadline().filter(|at| now >= *at)?;
        Some(if self.handshaken {
            Expired::Idle(self.idle_timeout)
        } else {
            Expired::Handshake
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::h2_shim::authority::Normalizer;
    use crate::transport::h2_shim::frame::Frames;

    const MAGIC: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Follows bytes the client sent at `now`, as a connection does: its
    /// normalizer reads the frame headers.
    fn sent(a: &mut Activity, client: &mut Normalizer, bytes: &[u8], now: Instant) {
        a.client_sent(now);
        client.feed(bytes, &mut bytes::BytesMut::new(), |head| {
            a.client_frame(head)
        });
    }

    /// A valid header block (`:method POST`) for the client's HEADERS.
    const BLOCK: &[u8] = &[0x83];

    /// Follows whole frames the agent wrote, as a connection does.
    fn wrote(a: &mut Activity, bytes: &[u8]) -> bool {
        let mut now_idle = false;
        Frames::default().follow(bytes, |frame| now_idle |= a.agent_wrote(frame.head));
        now_idle
    }

    fn preface() -> Vec<u8> {
        let mut p = MAGIC.to_vec();
        p.extend(frame(0x4, 0, 0, &[0; 6]));
        p
    }

    #[test]
    fn a_half_sent_preface_has_the_handshake_deadline() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0, Duration::from_secs(60));
        let mut client = Normalizer::new();
        sent(
            &mut a,
            &mut client,
            &MAGIC[..10],
            t0 + Duration::from_secs(1),
        );
        assert_eq!(a.deadline(), Some(t0 + HANDSHAKE_DEADLINE));
        assert_eq!(a.expired(t0 + HANDSHAKE_DEADLINE), Some(Expired::Handshake));
    }

    #[test]
    fn a_stream_keeps_the_connection_busy_until_the_agent_ends_it() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut a = Activity::new(t0, idle);
        let mut client = Normalizer::new();
        let bytes = preface();
        // One byte at a time: headers split anywhere are still read.
        for (i, b) in bytes.iter().enumerate() {
            let at = t0 + Duration::from_millis(i as u64);
            sent(&mut a, &mut client, std::slice::from_ref(b), at);
        }
        let t1 = t0 + Duration::from_secs(1);
        sent(&mut a, &mut client, &frame(HEADERS, 0x4, 1, BLOCK), t1);
        assert_eq!(a.deadline(), None);
        assert_eq!(a.expired(t1 + idle * 10), None);
        // Data without END_STREAM, then the trailers.
        assert!(!wrote(&mut a, &frame(DATA, 0, 1, &[0; 100])));
        let before = Instant::now();
        assert!(wrote(&mut a, &frame(HEADERS, 0x5, 1, &[0; 20])));
        let Some(at) = a.deadline() else {
            panic!("idle once the trailers are out")
        };
        assert!(at >= before + idle && at <= Instant::now() + idle);
        assert_eq!(a.expired(at), Some(Expired::Idle(idle)));
    }

    #[test]
    fn resets_from_either_side_close_streams_and_trailers_from_the_client_open_none() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0, Duration::from_secs(1));
        let mut bytes = preface();
        bytes.extend(frame(HEADERS, 0x4, 1, BLOCK));
        bytes.extend(frame(HEADERS, 0x4, 3, BLOCK));
        // The client's trailers on stream 1 open nothing new.
        bytes.extend(frame(HEADERS, 0x5, 1, BLOCK));
        bytes.extend(frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        sent(&mut a, &mut Normalizer::new(), &bytes, t0);
        assert_eq!(a.deadline(), None);
        assert!(wrote(&mut a, &frame(RST_STREAM, 0, 3, &[0, 0, 0, 7])));
        assert!(a.deadline().is_some());
    }

    /// A connection whose client sent its preface at the returned instant,
    /// with an idle timeout of `idle`.
    fn handshaken(idle: Duration) -> (Activity, Normalizer, Instant) {
        let t0 = Instant::now();
        let mut a = Activity::new(t0, idle);
        let mut client = Normalizer::new();
        sent(&mut a, &mut client, &preface(), t0);
        (a, client, t0)
    }

    #[test]
    fn a_header_block_left_unfinished_opens_no_stream() {
        let idle = Duration::from_secs(2);
        let (mut a, mut client, t0) = handshaken(idle);
        // HEADERS without END_HEADERS: the normalizer holds the block, h2
        // has no stream, and the connection is idle from the last byte.
        let t1 = t0 + Duration::from_secs(1);
        sent(&mut a, &mut client, &frame(HEADERS, 0, 1, &[]), t1);
        assert_eq!(a.deadline(), Some(t1 + idle));
        // Its CONTINUATION with END_HEADERS opens the stream.
        let t2 = t1 + Duration::from_secs(1);
        sent(&mut a, &mut client, &frame(CONTINUATION, 0x4, 1, BLOCK), t2);
        assert_eq!(a.deadline(), None);
    }

    #[test]
    fn client_frames_without_a_stream_reset_the_idle_time() {
        let idle = Duration::from_secs(2);
        let (mut a, mut client, t0) = handshaken(idle);
        let t1 = t0 + Duration::from_secs(1);
        sent(&mut a, &mut client, &frame(0x6, 0, 0, &[0; 8]), t1);
        assert_eq!(a.deadline(), Some(t1 + idle));
    }
}
