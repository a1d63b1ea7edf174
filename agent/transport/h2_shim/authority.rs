//! The `:authority` of requests on the agent's Unix socket: the reason for
//! [the shim](super). [`Normalizer`] follows the bytes a client sends and,
//! in each header block, replaces an `:authority` that is not a valid URI
//! authority with `localhost` before h2 reads it.
//!
//! ```text
//!   client ──▶ Normalizer ──▶ h2 (tonic)
//!     preface, DATA, SETTINGS, PING, …  passed on unchanged, in place
//!     HEADERS + CONTINUATION*           decoded with the client's dynamic
//!                                       table, re-encoded as literals
//!                                       without indexing
//!   client ◀────────────────── h2       not touched
//! ```
//!
//! Why both HPACK tables stay right: the normalizer's decoder reads every
//! header block the client's encoder wrote, in order, so it holds the
//! client's dynamic table exactly. What it passes on neither adds to h2's
//! table nor refers to it, so h2's table stays empty and nothing h2 decodes
//! depends on a block it did not see.
//!
//! A frame h2 would refuse for its framing (bad padding, a frame over the
//! size limit, a CONTINUATION out of place, a block past h2's CONTINUATION
//! limit, a PUSH_PROMISE, which no client may send) is passed on as the client sent it, with everything after it: h2
//! ends the connection with the error it gives any client. A header block
//! that is not valid HPACK, or decodes past h2's abuse limit, becomes one
//! that is not valid for h2 either, and nothing follows it: h2 ends the
//! connection with GOAWAY, as it would have.
//!
//! The HEADERS payload (RFC 9113 §6.2), after the frame header
//! ([`frame`](super::frame)):
//!
//! ```text
//!  +-----------------------------------------------+
//!  | [Pad Length (8)]          if PADDED (0x8)     |
//!  | [E|Stream Dependency (31), Weight (8)]        |
//!  |                           if PRIORITY (0x20)  |
//!  | Header Block Fragment (*)                     |
//!  | [Padding (Pad Length bytes)]                  |
//!  +-----------------------------------------------+
//! ```

use std::ops::Range;

use bytes::BytesMut;
use loona_hpack::Decoder;

use super::frame::{
    Head, HeadBuf, CONTINUATION, END_HEADERS, END_STREAM, HEADERS, HEAD_LEN, PADDED, PREFACE,
    PRIORITY, PUSH_PROMISE,
};

/// Stream dependency and weight, after PRIORITY.
const PRIORITY_LEN: usize = 5;

/// The agent's SETTINGS_MAX_FRAME_SIZE: hyper's default, which tonic keeps.
/// It is also the least any peer may advertise, so the frames written here
/// always fit.
pub const MAX_FRAME: usize = 16_384;
/// The agent's SETTINGS_HEADER_TABLE_SIZE: neither tonic nor hyper sets
/// it, so it is HTTP/2's initial 4096. The client's encoder may size its
/// table up to this (the client's own setting is for the other direction).
pub const HEADER_TABLE_SIZE: usize = 4_096;
/// The most header-block frame bytes held back for one block. h2 allows
/// a HEADERS frame and at most 6 CONTINUATION frames of [`MAX_FRAME`] with
/// hyper's 16 KiB header list limit, so a longer block is one h2 refuses
/// anyway.
const MAX_HELD: usize = 16 * (MAX_FRAME + HEAD_LEN);

/// The largest header list re-encoded for one block, counted as HPACK
/// does (name + value + 32 per field). h2 ends the connection past four
/// times hyper's 16 KiB limit (its "abuse" limit), and so does the
/// normalizer: it bounds what a block of 1-byte references to large table
/// entries could expand to.
pub const MAX_LIST: usize = 64 * 1024;

/// What replaces an authority that is not a URI authority.
pub const LOCALHOST: &[u8] = b"localhost";

/// Follows one connection's client-to-agent bytes and normalizes the
/// `:authority` of each header block.
pub struct Normalizer {
    decoder: Decoder<'static>,
    step: Step,
    /// The frame header being read, when it arrives in pieces.
    head: HeadBuf,
    /// The frames of the header block being read, as the client sent them.
    held: Vec<u8>,
    /// Where the current frame starts in `held`.
    frame_at: usize,
    /// The block's header fragments, joined.
    block: Vec<u8>,
    /// The HEADERS frame that opened the block.
    opened: Option<Opened>,
    /// Why the connection will be refused, for the log: the first reason
    /// found, taken once.
    refusal: Option<String>,
    /// The last request decoded: stream, method and path, for the log.
    last_request: Option<(u32, String)>,
}

/// Where in the byte stream the normalizer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Inside the client preface, this many bytes matched.
    Preface(usize),
    /// Reading a frame header.
    Head,
    /// Passing on this many more payload bytes.
    Pass(usize),
    /// Holding this many more bytes of a HEADERS or CONTINUATION frame.
    Hold(usize),
    /// Sent h2 a block it refuses; nothing more is passed on.
    Closed,
}

/// Passing everything on (a payload no connection reaches the end of): h2
/// refuses the connection on what it got.
const VERBATIM: Step = Step::Pass(usize::MAX);

/// The HEADERS frame that opened a block.
#[derive(Debug, Clone, Copy)]
struct Opened {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
}

impl Normalizer {
    /// A normalizer for a new connection, before the client preface.
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            decoder,
            step: Step::Preface(0),
            head: HeadBuf::default(),
            held: Vec::new(),
            frame_at: 0,
            block: Vec::new(),
            opened: None,
            refusal: None,
            last_request: None,
        }
    }

    /// Takes `input`, the next bytes from the client. The first `n` bytes
    /// (the returned count) go on to h2 as they are; the rest is taken in,
    /// and what h2 must read after those `n` bytes is appended to `out`.
    /// `out` must be empty: all of it was handed on before. Each frame
    /// header the client sent is handed to `on_frame` as it is read (none
    /// after a frame h2 refuses the connection for), so that the idle
    /// timeout follows the client's frames without a second reader.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        mut on_frame: impl FnMut(Head),
    ) -> usize {
        debug_assert!(out.is_empty());
        let mut emit = Emit {
            input,
            direct: 0,
            in_place: true,
            out,
        };
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            match self.step {
                Step::Preface(matched) => {
                    let n = rest.len().min(PREFACE.len() - matched);
                    // Not HTTP/2 (h2 says so), all of the preface, or more of it.
                    self.step = match matched + n {
                        _ if rest[..n] != PREFACE[matched..matched + n] => VERBATIM,
                        all if all == PREFACE.len() => Step::Head,
                        part => Step::Preface(part),
                    };
                    emit.pass(at..at + n);
                    at += n;
                }
                Step::Head => {
                    let (n, head) = self.head.take(rest);
                    at += n;
                    match head {
                        // Comes out with the rest of the header.
                        None => emit.hold(),
                        // With where the header sits in `input`, when all
                        // of it does.
                        Some(head) => {
                            on_frame(head);
                            self.on_head(head, (n == HEAD_LEN).then_some(at - n..at), &mut emit)
                        }
                    }
                }
                Step::Pass(left) => {
                    let n = rest.len().min(left);
                    emit.pass(at..at + n);
                    at += n;
                    self.step = if n == left {
                        Step::Head
                    } else {
                        Step::Pass(left - n)
                    };
                }
                Step::Hold(left) => {
                    let n = rest.len().min(left);
                    self.held.extend_from_slice(&rest[..n]);
                    emit.hold();
                    at += n;
                    if n == left {
                        self.on_frame(&mut emit);
                    } else {
                        self.step = Step::Hold(left - n);
                    }
                }
                Step::Closed => at = input.len(),
            }
        }
        emit.direct
    }

    /// Whether nothing more goes on to h2: the connection is refused.
    pub fn closed(&self) -> bool {
        self.step == Step::Closed
    }

    /// Why the connection is being refused, if it is; taken once.
    pub fn take_refusal(&mut self) -> Option<String> {
        self.refusal.take()
    }

    /// The last request decoded on `stream`, as `METHOD path`.
    pub fn request_on(&self, stream: u32) -> Option<&str> {
        let (s, line) = self.last_request.as_ref()?;
        (*s == stream).then_some(line)
    }

    /// A whole frame header has arrived (`whole`: where it sits in the
    /// input, if it came in one piece).
    fn on_head(&mut self, head: Head, whole: Option<Range<usize>>, emit: &mut Emit<'_>) {
        let Head { len, kind, .. } = head;
        let raw = self.head.bytes;
        let in_block = self.opened.is_some();
        let next_in_block = |o: Opened| kind == CONTINUATION && head.stream == o.stream;
        let header_frame = self.opened.map_or(kind == HEADERS, next_in_block);
        if !header_frame || len > MAX_FRAME {
            if in_block {
                // h2 refuses a block broken off by another frame, or by an
                // oversized one.
                self.give_up(
                    emit,
                    "a header block was interrupted or had an oversized frame",
                );
            } else if kind == CONTINUATION || kind == PUSH_PROMISE || len > MAX_FRAME {
                // h2 refuses a CONTINUATION out of place, a PUSH_PROMISE
                // from a client (whose header block the normalizer would
                // have to follow), or a frame over its limit, and the
                // connection with it.
                self.refusal.get_or_insert(format!(
                    "frame type {kind:#x} of {len} bytes out of place or over the {MAX_FRAME}-byte limit"
                ));
                self.step = VERBATIM;
            } else {
                // An empty payload passes as nothing on the next turn.
                self.step = Step::Pass(len);
            }
            // After the held frames if it gave up (then nothing is in place).
            match whole {
                Some(range) => emit.pass(range),
                None => emit.extend(&raw),
            }
            return;
        }
        self.frame_at = self.held.len();
        self.held.extend_from_slice(&raw);
        emit.hold();
        if self.held.len() + len > MAX_HELD {
            self.give_up(emit, "a header block was longer than h2 accepts");
            return;
        }
        self.step = Step::Hold(len);
        if len == 0 {
            self.on_frame(emit);
        }
    }

    /// A whole HEADERS or CONTINUATION frame is held.
    fn on_frame(&mut self, emit: &mut Emit<'_>) {
        self.step = Step::Head;
        let (head, payload) = self.held[self.frame_at..].split_at(HEAD_LEN);
        let Head { flags, stream, .. } = Head::parse(head.try_into().expect("a whole header"));
        if self.opened.is_none() {
            let Some((priority, fragment)) = headers_payload(stream, flags, payload) else {
                // h2 refuses the connection for this frame itself.
                self.give_up(emit, "a HEADERS frame had bad padding, priority or stream");
                return;
            };
            self.block.extend_from_slice(&payload[fragment]);
            self.opened = Some(Opened {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
            });
        } else {
            self.block.extend_from_slice(payload);
        }
        if flags & END_HEADERS != 0 {
            self.on_block(emit);
        }
    }

    /// A whole header block is held: decode, normalize, re-encode.
    fn on_block(&mut self, emit: &mut Emit<'_>) {
        let opened = self.opened.take().expect("on_frame opened the block");
        let mut encoded = Vec::with_capacity(self.block.len() + 64);
        let (mut method, mut path) = (String::new(), String::new());
        let mut list = 0;
        let decoded = self.decoder.decode_with_cb(&self.block, |name, value| {
            // The decoder goes on to the end to keep its table in step.
            list += name.len() + value.len() + 32;
            if list > MAX_LIST {
                return;
            }
            let value: &[u8] = if &*name == b":authority" && !is_uri_authority(&value) {
                LOCALHOST
            } else {
                &value
            };
            match &*name {
                b":method" => method = String::from_utf8_lossy(value).into_owned(),
                b":path" => path = String::from_utf8_lossy(value).into_owned(),
                _ => {}
            }
            encode_literal(&name, value, &mut encoded);
        });
        self.block.clear();
        self.held.clear();
        let stream = opened.stream;
        let refusal = match decoded {
            Ok(()) if list > MAX_LIST => {
                format!("the header list of stream {stream} is over {MAX_LIST} bytes")
            }
            Err(e) => format!("the header block of stream {stream} is not valid HPACK: {e}"),
            Ok(()) => {
                self.last_request = Some((stream, format!("{method} {path}")));
                return write_block(opened, &encoded, emit);
            }
        };
        self.refusal.get_or_insert(refusal);
        // Sends h2 a block it refuses, ending the connection, and nothing
        // more: the client's table may be unknown now. Index 0 is never
        // valid (RFC 7541 §6.1); h2 answers any invalid block with GOAWAY
        // PROTOCOL_ERROR.
        let poison = Opened {
            priority: None,
            end_stream: false,
            ..opened
        };
        write_block(poison, &[0x80], emit);
        self.step = Step::Closed;
    }

    /// Passes on the held frames as the client sent them, and everything
    /// after them: h2 refuses the connection on them.
    fn give_up(&mut self, emit: &mut Emit<'_>, why: &str) {
        self.refusal.get_or_insert(why.to_string());
        emit.extend(&self.held);
        self.held.clear();
        self.block.clear();
        self.opened = None;
        self.step = VERBATIM;
    }
}

/// Where the output of one [`Normalizer::feed`] goes: input passed on in
/// place while nothing was held, else copied after what was.
struct Emit<'a> {
    input: &'a [u8],
    /// The input bytes passed on in place.
    direct: usize,
    in_place: bool,
    out: &'a mut BytesMut,
}

impl Emit<'_> {
    /// Passes on `range` of the input.
    fn pass(&mut self, range: Range<usize>) {
        if self.in_place && range.start == self.direct {
            self.direct = range.end;
        } else {
            self.extend(&self.input[range]);
        }
    }

    /// Input is being held back: whatever follows must come after it.
    fn hold(&mut self) {
        self.in_place = false;
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.in_place = false;
        self.out.extend_from_slice(bytes);
    }
}

/// A HEADERS payload's priority fields and header fragment, or `None` when
/// h2 refuses the connection for it (stream 0, a pad length past the
/// payload, priority fields cut short).
fn headers_payload(
    stream: u32,
    flags: u8,
    payload: &[u8],
) -> Option<(Option<[u8; PRIORITY_LEN]>, Range<usize>)> {
    let padded = flags & PADDED != 0;
    let pad = usize::from(if padded { *payload.first()? } else { 0 });
    let mut start = usize::from(padded);
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(payload.get(start..start + PRIORITY_LEN)?.try_into().ok()?);
        start += PRIORITY_LEN;
    }
    let end = payload.len().checked_sub(pad)?;
    (stream != 0 && end >= start).then_some((priority, start..end))
}

/// Whether h2 accepts `value` as an authority: the same parser it uses.
fn is_uri_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// Appends a "literal header field without indexing, new name" (RFC 7541
/// §6.2.2), no Huffman coding: it touches no table.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for s in [name, value] {
        // H = 0, then the length as a 7-bit-prefix integer (§5.1).
        let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

/// Writes `block` as a HEADERS frame and as many CONTINUATION frames as
/// [`MAX_FRAME`] needs.
fn write_block(opened: Opened, block: &[u8], emit: &mut Emit<'_>) {
    let mut prefix = opened.priority.as_ref().map_or(&[][..], |p| p);
    let mut head = Head {
        len: 0,
        kind: HEADERS,
        flags: if opened.end_stream { END_STREAM } else { 0 }
            | if prefix.is_empty() { 0 } else { PRIORITY },
        stream: opened.stream,
    };
    let mut rest = block;
    loop {
        let n = rest.len().min(MAX_FRAME - prefix.len());
        if n == rest.len() {
            head.flags |= END_HEADERS;
        }
        head.len = prefix.len() + n;
        emit.extend(&head.encode());
        emit.extend(prefix);
        emit.extend(&rest[..n]);
        rest = &rest[n..];
        if rest.is_empty() {
            return;
        }
        (head.kind, head.flags, prefix) = (CONTINUATION, 0, &[]);
    }
}

#[cfg(test)]
mod fuzz_input;
#[cfg(test)]
mod tests;
