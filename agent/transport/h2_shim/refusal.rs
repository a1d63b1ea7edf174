//! The agent's HTTP/2 refusals, noticed in what it writes.
//!
//! h2 refuses a malformed request with an RST_STREAM frame and a broken
//! connection with a GOAWAY frame, and at the default log level says
//! nothing. [`Refusal::of`] reads the frames of what the agent writes
//! (followed by a [`Frames`](super::frame::Frames); the bytes are not
//! changed) and finds those that carry an error, so the connection can log
//! why a client failed.
//!
//! ```text
//!  RST_STREAM (type 0x3) payload:  Error Code (32)
//!  GOAWAY     (type 0x7) payload:  R|Last-Stream-ID (31), Error Code (32),
//!                                  Additional Debug Data (*)
//! ```

use std::fmt;

use super::frame::{Frame, GOAWAY, RST_STREAM};

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

impl Refusal {
    /// The refusal `frame` carries, if it is one.
    pub fn of(frame: Frame<'_>) -> Option<Self> {
        let word = |at: usize| {
            let bytes = frame.start.get(at..at + 4)?;
            Some(u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
        };
        let (goaway, stream, code) = match frame.head.kind {
            GOAWAY => (true, word(0)? & 0x7fff_ffff, word(4)?),
            RST_STREAM => (false, frame.head.stream, word(0)?),
            _ => return None,
        };
        // Not refusals: NO_ERROR (a response ended before its request
        // body), and on a stream CANCEL (a response dropped).
        let reason = h2::Reason::from(code);
        let refused = reason != h2::Reason::NO_ERROR && (reason != h2::Reason::CANCEL || goaway);
        refused.then_some(Refusal {
            stream,
            goaway,
            code,
        })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // h2's names (PROTOCOL_ERROR, …), `Reason(0x…)` for an unknown code.
        let code = h2::Reason::from(self.code);
        f.write_str("the agent's HTTP/2 layer ")?;
        if self.goaway {
            write!(f, "closed the connection with GOAWAY {code:?}")
        } else {
            write!(f, "reset stream {} with {code:?}", self.stream)
        }
    }
}
