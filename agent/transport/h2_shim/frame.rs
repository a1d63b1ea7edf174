//! HTTP/2 frame headers, read out of the bytes of a connection as they
//! pass (RFC 9113 §4.1).
//!
//! ```text
//!  +-----------------------------------------------+
//!  |                 Length (24)                   |  bytes 0..3
//!  +---------------+---------------+---------------+
//!  |   Type (8)    |   Flags (8)   |                  bytes 3, 4
//!  +-+-------------+---------------+---------------+
//!  |R|          Stream Identifier (31)             |  bytes 5..9
//!  +=+=============================================+
//!  |                 Frame Payload (Length bytes)  |
//!  +-----------------------------------------------+
//! ```
//!
//! [`Frames`] follows what the agent writes and reports each frame's
//! header with the start of its payload; the idle timeout
//! ([`Activity`](super::idle::Activity)) and the refusal log
//! ([`Refusal`](super::refusal::Refusal)) both read the agent's frames from
//! it. The client's frames are read by the `:authority` normalizer, which
//! holds bytes back and so reads its headers with a [`HeadBuf`] of its own
//! (and hands them to the idle timeout too).

/// A frame header's length.
pub const HEAD_LEN: usize = 9;
/// The client's connection preface, before its first frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame type DATA.
pub const DATA: u8 = 0x0;
/// Frame type HEADERS.
pub const HEADERS: u8 = 0x1;
/// Frame type RST_STREAM.
pub const RST_STREAM: u8 = 0x3;
/// Frame type PUSH_PROMISE.
pub const PUSH_PROMISE: u8 = 0x5;
/// Frame type GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// Frame type CONTINUATION.
pub const CONTINUATION: u8 = 0x9;

/// Flag END_STREAM (DATA, HEADERS).
pub const END_STREAM: u8 = 0x1;
/// Flag END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
pub const END_HEADERS: u8 = 0x4;
/// Flag PADDED (DATA, HEADERS, PUSH_PROMISE).
pub const PADDED: u8 = 0x8;
/// Flag PRIORITY (HEADERS).
pub const PRIORITY: u8 = 0x20;

/// The payload bytes a [`Frames`] reports with each header: enough for a
/// GOAWAY's last stream and error code.
pub const START_LEN: usize = 8;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The payload's length.
    pub len: usize,
    /// The frame type.
    pub kind: u8,
    /// The frame's flags.
    pub flags: u8,
    /// The stream identifier, without the reserved bit.
    pub stream: u32,
}

impl Head {
    /// Reads a header.
    pub fn parse(b: &[u8; HEAD_LEN]) -> Self {
        Self {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Writes the header.
    pub fn encode(self) -> [u8; HEAD_LEN] {
        let [_, l0, l1, l2] = (self.len as u32).to_be_bytes();
        let [s0, s1, s2, s3] = self.stream.to_be_bytes();
        [l0, l1, l2, self.kind, self.flags, s0, s1, s2, s3]
    }
}

/// A frame header that may arrive in pieces.
#[derive(Debug, Default)]
pub struct HeadBuf {
    /// The header's bytes as they arrived.
    pub bytes: [u8; HEAD_LEN],
    len: usize,
}

impl HeadBuf {
    /// Takes what the header still lacks from `input`: how many bytes it
    /// took, and the header once it is whole (the next one starts empty).
    pub fn take(&mut self, input: &[u8]) -> (usize, Option<Head>) {
        let n = input.len().min(HEAD_LEN - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&input[..n]);
        self.len += n;
        if self.len < HEAD_LEN {
            return (n, None);
        }
        self.len = 0;
        (n, Some(Head::parse(&self.bytes)))
    }
}

/// A frame as [`Frames`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Its header.
    pub head: Head,
    /// The first `min(len, START_LEN)` payload bytes.
    pub start: &'a [u8],
}

/// Follows the frames the agent writes on a connection.
#[derive(Debug, Default)]
pub struct Frames {
    /// The current frame's header, then the start of its payload, as far
    /// as they have passed.
    got: [u8; HEAD_LEN + START_LEN],
    got_len: usize,
    /// Payload bytes of the current frame still to pass, after its start.
    skip: usize,
}

impl Frames {
    /// Follows `bytes`, calling `on_frame` for each frame once its header
    /// and the start of its payload have passed.
    pub fn follow(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = bytes.len().min(self.skip);
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let want = HEAD_LEN + self.head().map_or(0, |h| h.len.min(START_LEN));
            let n = bytes.len().min(want - self.got_len);
            self.got[self.got_len..self.got_len + n].copy_from_slice(&bytes[..n]);
            self.got_len += n;
            bytes = &bytes[n..];
            // Reported as soon as it is whole: a frame with no payload at
            // the end of `bytes` too.
            if let Some(head) = self.head() {
                let start = head.len.min(START_LEN);
                if self.got_len == HEAD_LEN + start {
                    on_frame(Frame {
                        head,
                        start: &self.got[HEAD_LEN..self.got_len],
                    });
                    (self.got_len, self.skip) = (0, head.len - start);
                }
            }
        }
    }

    /// The current frame's header, once all of it has passed.
    fn head(&self) -> Option<Head> {
        let bytes = self.got.first_chunk::<HEAD_LEN>()?;
        (self.got_len >= HEAD_LEN).then(|| Head::parse(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::h2_shim::refusal::Refusal;

    /// The refusals among `bytes`, followed in pieces of `piece` bytes.
    fn refusals(frames: &mut Frames, bytes: &[u8], piece: usize) -> Vec<Refusal> {
        let mut found = Vec::new();
        for part in bytes.chunks(piece) {
            frames.follow(part, |frame| found.extend(Refusal::of(frame)));
        }
        found
    }

    #[test]
    fn a_header_encodes_as_it_parses() {
        let bytes = [0, 1, 2, HEADERS, END_HEADERS, 0x80, 0, 0, 5];
        let head = Head::parse(&bytes);
        assert_eq!(
            head,
            Head {
                len: 258,
                kind: HEADERS,
                flags: END_HEADERS,
                stream: 5
            }
        );
        assert_eq!(head.encode(), [0, 1, 2, HEADERS, END_HEADERS, 0, 0, 0, 5]);
    }

    /// A DATA frame, an RST_STREAM with NO_ERROR, then one with
    /// PROTOCOL_ERROR, fed one byte at a time.
    #[test]
    fn finds_the_reset_with_an_error_across_pieces() {
        let bytes: &[u8] = &[
            0, 0, 3, 0x0, 0x0, 0, 0, 0, 1, // DATA, 3 bytes, stream 1
            b'a', b'b', b'c', //
            0, 0, 4, 0x3, 0x0, 0, 0, 0, 1, // RST_STREAM, stream 1
            0, 0, 0, 0, // NO_ERROR: not a refusal
            0, 0, 4, 0x3, 0x0, 0, 0, 0, 3, // RST_STREAM, stream 3
            0, 0, 0, 1, // PROTOCOL_ERROR
        ];
        let found = refusals(&mut Frames::default(), bytes, 1);
        let expected = Refusal {
            stream: 3,
            goaway: false,
            code: 1,
        };
        assert_eq!(found, [expected]);
        assert_eq!(
            expected.to_string(),
            "the agent's HTTP/2 layer reset stream 3 with PROTOCOL_ERROR"
        );
    }

    #[test]
    fn finds_a_goaway_with_an_error_and_ignores_a_clean_one() {
        let bytes: &[u8] = &[
            0, 0, 8, 0x7, 0x0, 0, 0, 0, 0, // GOAWAY, 8 bytes, stream 0
            0, 0, 0, 5, 0, 0, 0, 0, // last stream 5, NO_ERROR
            0, 0, 10, 0x7, 0x0, 0, 0, 0, 0, // GOAWAY, 10 bytes
            0, 0, 0, 7, 0, 0, 0, 9, // last stream 7, COMPRESSION_ERROR
            b'h', b'i', // debug data
            0, 0, 0, 0x4, 0x1, 0, 0, 0, 0, // SETTINGS ACK after it
        ];
        let mut frames = Frames::default();
        let found = refusals(&mut frames, bytes, bytes.len());
        let [found] = found[..] else {
            panic!("one refusal: {found:?}")
        };
        assert_eq!(
            found.to_string(),
            "the agent's HTTP/2 layer closed the connection with GOAWAY COMPRESSION_ERROR"
        );
        assert_eq!(found.stream, 7);
        assert_eq!(refusals(&mut frames, &[], 1), []);
        assert_eq!((frames.got_len, frames.skip), (0, 0), "in step");
        assert_eq!(frames.head(), None, "in step");
    }
}
