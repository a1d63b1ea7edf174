//! The `authority` fuzz target's input format and checks, shared by the
//! target (fuzz/fuzz_targets/authority.rs) and `cargo test`, which replays
//! the seeds and runs the checks on generated inputs
//! (agent/transport/authority/tests.rs).
//!
//! The input is a list of records, each framed here so mutations land in
//! the payloads rather than in frame lengths:
//!
//! ```text
//! byte 0             how many bytes each read hands the normalizer (1..=64)
//! then per record:   tag, flags, n, n payload bytes
//!   tag % 4          0 HEADERS, 1 CONTINUATION, 2 DATA, 3 raw bytes
//!                    (the payload as is, no frame header)
//!   tag >> 2 & 3     the stream: 1, 3, 5 or 7
//! ```
//!
//! Checks: no panic; the same output whether the bytes arrive in pieces or
//! whole; and, unless the normalizer refused the connection, output that
//! splits into frames no larger than the agent's limit whose header blocks
//! decode with an empty HPACK table, so h2's table never depends on what h2
//! did not see.

use super::{Normalizer, MAX_FRAME};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The client's bytes the records describe.
fn client_bytes(mut data: &[u8]) -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    while let [tag, flags, n, rest @ ..] = data {
        let n = usize::from(*n).min(rest.len());
        let (payload, after) = rest.split_at(n);
        data = after;
        let kind = match tag % 4 {
            0 => 0x1,
            1 => 0x9,
            2 => 0x0,
            _ => {
                bytes.extend_from_slice(payload);
                continue;
            }
        };
        let stream = 1 + 2 * u32::from(tag >> 2 & 3);
        bytes.extend_from_slice(&[0, 0, n as u8, kind, *flags]);
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
    }
    bytes
}

/// What h2 reads when the bytes arrive `piece` at a time.
fn normalize(input: &[u8], piece: usize) -> (Vec<u8>, Option<String>) {
    let mut normalizer = Normalizer::new();
    let mut seen = Vec::new();
    for chunk in input.chunks(piece) {
        let mut out = bytes::BytesMut::new();
        let direct = normalizer.feed(chunk, &mut out, |_| {});
        assert!(direct <= chunk.len());
        seen.extend_from_slice(&chunk[..direct]);
        seen.extend_from_slice(&out);
    }
    (seen, normalizer.take_refusal())
}

/// Checks what h2 reads from a connection the normalizer did not refuse.
fn check_frames(seen: &[u8]) {
    assert!(seen.starts_with(PREFACE));
    let mut rest = &seen[PREFACE.len()..];
    let mut block: Option<Vec<u8>> = None;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let (kind, flags) = (rest[3], rest[4]);
        if rest.len() < 9 + len {
            return; // the client's last frame is cut short
        }
        let payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        match kind {
            0x1 => {
                assert!(len <= MAX_FRAME);
                assert_eq!(flags & 0x8, 0, "no padding is written");
                let fragment = if flags & 0x20 != 0 {
                    &payload[5..]
                } else {
                    payload
                };
                block = Some(fragment.to_vec());
            }
            0x9 => {
                assert!(len <= MAX_FRAME);
                block
                    .as_mut()
                    .expect("CONTINUATION after HEADERS")
                    .extend_from_slice(payload);
            }
            _ => continue,
        }
        if flags & 0x4 != 0 {
            let block = block.take().unwrap();
            loona_hpack::Decoder::new()
                .decode(&block)
                .expect("a block h2 gets decodes with an empty table");
        }
    }
}

/// Runs the checks on one input in the record format; returns whether the
/// normalizer refused the connection.
pub fn check(data: &[u8]) -> bool {
    let Some((piece, records)) = data.split_first() else {
        return false;
    };
    let input = client_bytes(records);
    let (whole, refusal) = normalize(&input, input.len());
    let (pieces, _) = normalize(&input, usize::from(*piece % 64) + 1);
    assert!(
        whole == pieces,
        "the output does not depend on how reads split the input"
    );
    if refusal.is_none() {
        check_frames(&whole);
    }
    refusal.is_some()
}
