//! The agent's HTTP/2 refusals, noticed in what it writes.
//!
//! h2 refuses a malformed request with an RST_STREAM frame and a broken
//! connection with a GOAWAY frame, and at the default log level says
//! nothing. [`Refusals`] reads the frame headers of what the agent writes
//! (the bytes are not changed) and reports the first frame that carries an
//! error, so the connection can log why a client failed.
//!
//! ```text
//!  RST_STREAM (type 0x3) payload:  Error Code (32)
//!  GOAWAY     (type 0x7) payload:  R|Last-Stream-ID (31), Error Code (32),
//!                                  Additional Debug Data (*)
//! ```

use std::fmt;

/// A frame header's length.
const HEAD_LEN: usize = 9;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
/// The payload bytes read of each: up to the error code.
const RST_STREAM_READ: usize = 4;
const GOAWAY_READ: usize = 8;
/// Error codes that are not refusals: NO_ERROR (a response ended before
/// its request body) and CANCEL (a response dropped).
const NO_ERROR: u32 = 0x0;
const CANCEL: u32 = 0x8;

/// Follows the frames of one connection's agent-to-client bytes.
#[derive(Debug, Default)]
pub struct Refusals {
    head: [u8; HEAD_LEN],
    head_len: usize,
    /// Payload bytes of the current frame still to skip, after `want`.
    skip: usize,
    /// The start of an RST_STREAM or GOAWAY payload being read.
    payload: [u8; GOAWAY_READ],
    payload_len: usize,
    /// How many payload bytes to read (0: none, skip the frame).
    want: usize,
}

/// An RST_STREAM or GOAWAY frame with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// RST_STREAM: the stream; GOAWAY: the last stream processed.
    pub stream: u32,
    /// Whether the whole connection ends (GOAWAY).
    pub goaway: bool,
    /// The HTTP/2 error code (RFC 9113 §7).
    pub code: u32,
}

impl Refusals {
    /// Follows `written`, the next bytes the agent wrote, and returns the
    /// first refusal among them.
    pub fn follow(&mut self, mut written: &[u8]) -> Option<Refusal> {
        let mut found = None;
        while !written.is_empty() {
            if self.head_len < HEAD_LEN {
                let n = written.len().min(HEAD_LEN - self.head_len);
                self.head[self.head_len..self.head_len + n].copy_from_slice(&written[..n]);
                self.head_len += n;
                written = &written[n..];
                if self.head_len == HEAD_LEN {
                    self.on_head();
                }
            } else if self.payload_len < self.want {
                let n = written.len().min(self.want - self.payload_len);
                self.payload[self.payload_len..self.payload_len + n].copy_from_slice(&written[..n]);
                self.payload_len += n;
                written = &written[n..];
                if self.payload_len == self.want {
                    found = found.or(self.on_payload());
                    self.next_frame_if_done();
                }
            } else {
                let n = written.len().min(self.skip);
                self.skip -= n;
                written = &written[n..];
                self.next_frame_if_done();
            }
        }
        found
    }

    fn on_head(&mut self) {
        let len = u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]) as usize;
        self.want = match self.head[3] {
            RST_STREAM if len >= RST_STREAM_READ => RST_STREAM_READ,
            GOAWAY if len >= GOAWAY_READ => GOAWAY_READ,
            _ => 0,
        };
        self.payload_len = 0;
        self.skip = len - self.want;
        self.next_frame_if_done();
    }

    /// Once the frame's payload is read or skipped, reads the next header.
    fn next_frame_if_done(&mut self) {
        if self.payload_len == self.want && self.skip == 0 {
            self.head_len = 0;
        }
    }

    fn on_payload(&mut self) -> Option<Refusal> {
        let word =
            |at: usize| u32::from_be_bytes(self.payload[at..at + 4].try_into().expect("4 bytes"));
        let (goaway, stream, code) = if self.head[3] == GOAWAY {
            (true, word(0) & 0x7fff_ffff, word(4))
        } else {
            let stream = u32::from_be_bytes(self.head[5..9].try_into().expect("4 bytes"));
            (false, stream & 0x7fff_ffff, word(0))
        };
        let refused = match code {
            NO_ERROR => false,
            CANCEL => goaway,
            _ => true,
        };
        refused.then_some(Refusal {
            stream,
            goaway,
            code,
        })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = code_name(self.code);
        if self.goaway {
            write!(
                f,
                "the agent's HTTP/2 layer closed the connection with GOAWAY {code}"
            )
        } else {
            write!(
                f,
                "the agent's HTTP/2 layer reset stream {} with {code}",
                self.stream
            )
        }
    }
}

/// The name of an HTTP/2 error code.
fn code_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        other => return format!("error code {other:#x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut refusals = Refusals::default();
        let found: Vec<_> = bytes.chunks(1).filter_map(|b| refusals.follow(b)).collect();
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
        let mut refusals = Refusals::default();
        let found = refusals.follow(bytes).expect("a refusal");
        assert_eq!(
            found.to_string(),
            "the agent's HTTP/2 layer closed the connection with GOAWAY COMPRESSION_ERROR"
        );
        assert_eq!(found.stream, 7);
        assert_eq!(refusals.follow(&[]), None);
        assert_eq!((refusals.head_len, refusals.skip), (0, 0), "in step");
    }
}
