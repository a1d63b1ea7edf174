//! Tests of the `:authority` normalizer: annotated frames, then property
//! tests with an independent HPACK encoder (httlib-hpack) playing the
//! client and an independent decoder playing h2.

use super::fuzz_input as fuzz_checks;
use super::*;
use httlib_hpack::{Decoder as RefDecoder, Encoder as RefEncoder};
use proptest::prelude::*;

type HeaderField = (Vec<u8>, Vec<u8>);

/// Feeds `chunks` one after the other; returns what h2 reads.
fn run(normalizer: &mut Normalizer, chunks: &[&[u8]]) -> Vec<u8> {
    let mut seen = Vec::new();
    for chunk in chunks {
        let mut out = BytesMut::new();
        let direct = normalizer.feed(chunk, &mut out, |_| {});
        seen.extend_from_slice(&chunk[..direct]);
        seen.extend_from_slice(&out);
    }
    seen
}

fn field(name: &str, value: &str) -> HeaderField {
    (name.as_bytes().to_vec(), value.as_bytes().to_vec())
}

/// A frame as h2 would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawFrame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Splits what h2 reads after the preface into frames.
fn frames(bytes: &[u8]) -> Vec<RawFrame> {
    assert_eq!(&bytes[..PREFACE.len()], PREFACE, "the preface comes first");
    let mut rest = &bytes[PREFACE.len()..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= HEAD_LEN, "a whole frame header");
        let head = Head::parse(rest[..HEAD_LEN].try_into().unwrap());
        let len = head.len;
        assert!(rest.len() >= HEAD_LEN + len, "a whole frame");
        frames.push(RawFrame {
            kind: head.kind,
            flags: head.flags,
            stream: head.stream,
            payload: rest[HEAD_LEN..HEAD_LEN + len].to_vec(),
        });
        rest = &rest[HEAD_LEN + len..];
    }
    frames
}

/// A header block h2 reads: its stream, END_STREAM, priority fields and
/// fields decoded by a decoder that has never seen another block, so it
/// proves the block needs no dynamic table; no field may ask to be indexed.
#[derive(Debug, PartialEq, Eq)]
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<Vec<u8>>,
    fields: Vec<HeaderField>,
}

/// The header blocks and the other frames, in order.
fn blocks_and_others(frames: &[RawFrame]) -> (Vec<Block>, Vec<RawFrame>) {
    let mut blocks = Vec::new();
    let mut others = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let f = &frames[i];
        if f.kind != HEADERS {
            assert_ne!(f.kind, CONTINUATION, "a CONTINUATION only after HEADERS");
            others.push(f.clone());
            i += 1;
            continue;
        }
        assert_eq!(f.flags & PADDED, 0, "no padding is written");
        assert!(f.payload.len() <= MAX_FRAME);
        let (priority, mut block) = if f.flags & PRIORITY != 0 {
            (Some(f.payload[..5].to_vec()), f.payload[5..].to_vec())
        } else {
            (None, f.payload.clone())
        };
        let mut flags = f.flags;
        while flags & END_HEADERS == 0 {
            i += 1;
            let c = &frames[i];
            assert_eq!((c.kind, c.stream), (CONTINUATION, f.stream));
            assert!(c.payload.len() <= MAX_FRAME);
            block.extend_from_slice(&c.payload);
            flags = c.flags;
        }
        let mut decoded = Vec::new();
        RefDecoder::default()
            .decode(&mut block, &mut decoded)
            .expect("h2 decodes the block with an empty table");
        let fields = decoded
            .into_iter()
            .map(|(name, value, flags)| {
                assert_eq!(flags & RefDecoder::WITH_INDEXING, 0, "nothing is indexed");
                (name, value)
            })
            .collect();
        blocks.push(Block {
            stream: f.stream,
            end_stream: f.flags & END_STREAM != 0,
            priority,
            fields,
        });
        i += 1;
    }
    (blocks, others)
}

fn head(len: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let head = Head {
        len,
        kind,
        flags,
        stream,
    };
    head.encode().to_vec()
}

/// SETTINGS with no entries, as every client sends after the preface.
const SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0x0, 0, 0, 0, 0];

#[test]
fn control_and_data_frames_pass_in_place() {
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(&SETTINGS);
    input.extend_from_slice(&[
        0, 0, 8, 0x6, 0x0, 0, 0, 0, 0, // PING, 8 bytes
        1, 2, 3, 4, 5, 6, 7, 8, //
        0, 0, 2, 0x0, 0x1, 0, 0, 0, 1, // DATA, END_STREAM, stream 1
        b'h', b'i',
    ]);
    let mut normalizer = Normalizer::new();
    let mut out = BytesMut::new();
    assert_eq!(normalizer.feed(&input, &mut out, |_| {}), input.len());
    assert!(out.is_empty(), "nothing copied");
}

/// grpcurl: the socket path, as a literal with incremental indexing.
#[test]
fn a_socket_path_becomes_localhost() {
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(&SETTINGS);
    let block: &[u8] = &[
        0x83, // :method POST (static 3)
        0x86, // :scheme http (static 6)
        0x44, 0x05, b'/', b'a', b'/', b'b', b'c', // :path (static 4), indexed
        0x41, 0x0b, b'/', b't', b'm', b'p', b'/', b'x', b'.', b's', b'o', b'c',
        b'k', // :authority
    ];
    input.extend(head(block.len(), HEADERS, END_HEADERS, 1));
    input.extend_from_slice(block);
    let mut normalizer = Normalizer::new();
    let seen = run(&mut normalizer, &[&input]);
    let (blocks, others) = blocks_and_others(&frames(&seen));
    assert_eq!(others.len(), 1, "SETTINGS");
    assert_eq!(
        blocks[0].fields,
        [
            field(":method", "POST"),
            field(":scheme", "http"),
            field(":path", "/a/bc"),
            field(":authority", "localhost"),
        ]
    );
    assert_eq!(normalizer.request_on(1), Some("POST /a/bc"));
}

/// gRPC core: the %-encoded path, indexed, then referred to by index in
/// the next request (dynamic index 62 and 63).
#[test]
fn an_indexed_authority_is_replaced_in_every_request_that_refers_to_it() {
    let mut input = PREFACE.to_vec();
    let first: &[u8] = &[
        0x83, 0x86, //
        0x44, 0x02, b'/', b'a', // :path /a, indexed: dynamic 62 after the next
        0x41, 0x07, b't', b'm', b'p', b'%', b'2', b'F', b'x', // :authority, indexed: 62
    ];
    input.extend(head(first.len(), HEADERS, END_HEADERS, 1));
    input.extend_from_slice(first);
    let second: &[u8] = &[0x83, 0x86, 0xbf, 0xbe]; // dynamic 63 (/a), 62 (authority)
    input.extend(head(second.len(), HEADERS, END_HEADERS | END_STREAM, 3));
    input.extend_from_slice(second);
    let mut normalizer = Normalizer::new();
    let seen = run(&mut normalizer, &[&input]);
    let (blocks, _) = blocks_and_others(&frames(&seen));
    let expected = vec![
        field(":method", "POST"),
        field(":scheme", "http"),
        field(":path", "/a"),
        field(":authority", "localhost"),
    ];
    assert_eq!(blocks[0].fields, expected);
    assert_eq!(blocks[1].fields, expected);
    assert!(blocks[1].end_stream);
}

#[test]
fn a_valid_authority_is_kept() {
    let mut input = PREFACE.to_vec();
    let block: &[u8] = &[
        0x83, 0x86, 0x84, // POST, http, :path /
        0x01, 0x0f, // :authority (static 1), not indexed, 15 bytes
        b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't', b':', b'5', b'0', b'0', b'5', b'1',
    ];
    input.extend(head(block.len(), HEADERS, END_HEADERS, 1));
    input.extend_from_slice(block);
    let mut normalizer = Normalizer::new();
    let (blocks, _) = blocks_and_others(&frames(&run(&mut normalizer, &[&input])));
    assert_eq!(blocks[0].fields[3], field(":authority", "localhost:50051"));
}

/// Padding is dropped, priority kept, CONTINUATION joined; the input comes
/// one byte at a time.
#[test]
fn padding_priority_and_continuation_byte_by_byte() {
    let mut input = PREFACE.to_vec();
    let payload: &[u8] = &[
        3, // pad length
        0x80, 0, 0, 0, 15, // exclusive, depends on 0, weight 15
        0x83, 0x86, // POST, http
        0, 0, 0, // padding
    ];
    input.extend(head(
        payload.len(),
        HEADERS,
        PADDED | PRIORITY | END_STREAM,
        5,
    ));
    input.extend_from_slice(payload);
    let rest: &[u8] = &[0x84, 0x41, 0x02, b'/', b'/']; // :path /, :authority //
    input.extend(head(rest.len(), CONTINUATION, END_HEADERS, 5));
    input.extend_from_slice(rest);
    input.extend_from_slice(&[0, 0, 1, 0x0, 0x0, 0, 0, 0, 5, b'!']); // DATA after it
    let chunks: Vec<&[u8]> = input.chunks(1).collect();
    let mut normalizer = Normalizer::new();
    let (blocks, others) = blocks_and_others(&frames(&run(&mut normalizer, &chunks)));
    assert_eq!(
        blocks,
        [Block {
            stream: 5,
            end_stream: true,
            priority: Some(vec![0x80, 0, 0, 0, 15]),
            fields: vec![
                field(":method", "POST"),
                field(":scheme", "http"),
                field(":path", "/"),
                field(":authority", "localhost"),
            ],
        }]
    );
    assert_eq!(others[0].payload, b"!", "the DATA frame follows");
}

/// A reference past the table: h2 gets a block it refuses (index 0) and
/// nothing after it.
#[test]
fn an_invalid_block_reaches_h2_as_one_it_refuses() {
    let mut input = PREFACE.to_vec();
    input.extend(head(2, HEADERS, END_HEADERS, 1));
    input.extend_from_slice(&[0x83, 0xc6]); // dynamic 70: no such entry
    input.extend_from_slice(&SETTINGS);
    let mut normalizer = Normalizer::new();
    let seen = run(&mut normalizer, &[&input]);
    let mut expected = PREFACE.to_vec();
    expected.extend(head(1, HEADERS, END_HEADERS, 1));
    expected.push(0x80);
    assert_eq!(seen, expected, "the poisoned block, and nothing after it");
    assert!(normalizer.closed());
    let why = normalizer.take_refusal().expect("a reason");
    assert!(why.contains("stream 1 is not valid HPACK"), "{why}");
    assert_eq!(normalizer.take_refusal(), None, "taken once");
}

/// A table size update past the agent's SETTINGS_HEADER_TABLE_SIZE is an
/// HPACK error, as in h2.
#[test]
fn a_table_larger_than_the_agent_allows_is_refused() {
    let mut input = PREFACE.to_vec();
    // Size update to 4097: 0x3f, then 4097 - 31 = 4066 as 7-bit groups.
    let block: &[u8] = &[0x3f, 0xe2, 0x1f, 0x83];
    input.extend(head(block.len(), HEADERS, END_HEADERS, 1));
    input.extend_from_slice(block);
    let mut normalizer = Normalizer::new();
    run(&mut normalizer, &[&input]);
    assert!(normalizer.closed());
}

/// Framing h2 refuses is passed on as sent: h2 refuses it as it would
/// without the normalizer.
#[test]
fn bad_framing_is_passed_on_as_sent() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "padding longer than the payload",
            [head(2, HEADERS, PADDED | END_HEADERS, 1), vec![5, 0x83]].concat(),
        ),
        (
            "priority cut short",
            [head(3, HEADERS, PRIORITY | END_HEADERS, 1), vec![0, 0, 0]].concat(),
        ),
        (
            "stream 0",
            [head(1, HEADERS, END_HEADERS, 0), vec![0x83]].concat(),
        ),
        (
            "a block interrupted by another frame",
            [
                head(1, HEADERS, 0, 1),
                vec![0x83],
                SETTINGS.to_vec(),
                head(1, CONTINUATION, END_HEADERS, 1),
                vec![0x86],
            ]
            .concat(),
        ),
        (
            "a CONTINUATION on another stream",
            [
                head(1, HEADERS, 0, 1),
                vec![0x83],
                head(1, CONTINUATION, END_HEADERS, 3),
                vec![0x86],
            ]
            .concat(),
        ),
        (
            "a CONTINUATION out of place",
            [head(1, CONTINUATION, END_HEADERS, 1), vec![0x83]].concat(),
        ),
        (
            "a PUSH_PROMISE from the client",
            [
                head(5, PUSH_PROMISE, END_HEADERS, 1),
                vec![0, 0, 0, 2, 0x83],
            ]
            .concat(),
        ),
        (
            "a frame over the size limit",
            [head(MAX_FRAME + 1, HEADERS, END_HEADERS, 1), vec![0x83; 40]].concat(),
        ),
        ("not HTTP/2", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
    ];
    for (what, frames) in cases {
        let input = if what == "not HTTP/2" {
            frames.clone()
        } else {
            [PREFACE.to_vec(), frames.clone()].concat()
        };
        for split in [input.len(), 1, 7] {
            let chunks: Vec<&[u8]> = input.chunks(split).collect();
            let mut normalizer = Normalizer::new();
            assert_eq!(run(&mut normalizer, &chunks), input, "{what}");
            assert!(!normalizer.closed(), "{what}");
            if what != "not HTTP/2" {
                assert!(normalizer.take_refusal().is_some(), "{what}");
            }
        }
    }
}

/// A block of 1-byte references to a large entry would expand without
/// bound; past MAX_LIST (h2's abuse limit) h2 gets a block it refuses,
/// and nothing more.
#[test]
fn a_header_list_past_the_limit_ends_the_connection() {
    let mut input = PREFACE.to_vec();
    let mut block = vec![0x40, 0x01, b'x', 0x7f, 0xa1, 0x1e]; // x: 4000 bytes, indexed
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend(std::iter::repeat_n(0xbe, 40)); // 40 × dynamic 62
    input.extend(head(block.len(), HEADERS, END_HEADERS | END_STREAM, 1));
    input.extend_from_slice(&block);
    input.extend_from_slice(&SETTINGS);
    let mut normalizer = Normalizer::new();
    let seen = run(&mut normalizer, &[&input]);
    let mut expected = PREFACE.to_vec();
    expected.extend(head(1, HEADERS, END_HEADERS, 1));
    expected.push(0x80);
    assert_eq!(seen, expected);
    assert!(normalizer.closed());
    assert!(normalizer
        .take_refusal()
        .expect("a reason")
        .contains("over 65536 bytes"));
}

#[test]
fn a_long_block_is_written_in_frames_that_fit() {
    let mut input = PREFACE.to_vec();
    let mut block = vec![0x83, 0x86, 0x84];
    for i in 0..3 {
        // Literal, not indexed, 10000-byte values: 30 KB after re-encoding.
        block.extend_from_slice(&[0x00, 0x02, b'x', b'0' + i, 0x7f, 0x91, 0x4d]);
        block.extend(std::iter::repeat_n(b'v', 10_000));
    }
    for piece in block.chunks(MAX_FRAME).enumerate() {
        let (i, bytes) = piece;
        let last = (i + 1) * MAX_FRAME >= block.len();
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        input.extend(head(
            bytes.len(),
            kind,
            if last { END_HEADERS } else { 0 },
            1,
        ));
        input.extend_from_slice(bytes);
    }
    let mut normalizer = Normalizer::new();
    let (blocks, _) = blocks_and_others(&frames(&run(&mut normalizer, &[&input])));
    assert_eq!(blocks[0].fields.len(), 6);
}

/// One header field of a generated request, and how the client encodes it.
#[derive(Debug, Clone)]
struct GenField {
    name: Vec<u8>,
    value: Vec<u8>,
    /// httlib-hpack flags: Huffman name/value, indexing, never indexed,
    /// best format (refers to static and dynamic entries when it can).
    flags: u8,
}

fn gen_field() -> impl Strategy<Value = GenField> {
    let name = prop_oneof![
        Just(":authority".to_string()),
        Just(":path".to_string()),
        Just("content-type".to_string()),
        Just("te".to_string()),
        Just("user-agent".to_string()),
        "x-[a-c]{1,2}".prop_map(String::from),
    ];
    let value = prop_oneof![
        Just("localhost".to_string()),
        Just("localhost:50051".to_string()),
        Just("/run/execwatch/agent.sock".to_string()),
        Just("run%2Fexecwatch%2Fagent.sock".to_string()),
        Just(String::new()),
        "[a-z/%:. ]{0,12}".prop_map(String::from),
        // Large enough that a few evict the rest of the table.
        (500usize..1500).prop_map(|n| "v".repeat(n)),
    ];
    (name, value, any::<u8>()).prop_map(|(name, value, flags)| GenField {
        name: name.into_bytes(),
        value: value.into_bytes(),
        // NEVER_INDEXED and WITH_INDEXING exclude each other.
        flags: if flags & 0x8 != 0 {
            flags & 0x1b
        } else {
            flags & 0x17
        },
    })
}

/// One header block: an optional table size update, fields, and how it is
/// framed.
#[derive(Debug, Clone)]
struct GenBlock {
    size_update: Option<u32>,
    fields: Vec<GenField>,
    /// Where the block is cut into HEADERS + CONTINUATION fragments, as
    /// fractions of its length.
    cuts: Vec<u16>,
    pad: Option<u8>,
    priority: bool,
    end_stream: bool,
    /// A DATA frame after the block.
    data: Option<Vec<u8>>,
}

fn gen_block() -> impl Strategy<Value = GenBlock> {
    (
        prop::option::weighted(0.2, 0u32..=4096),
        prop::collection::vec(gen_field(), 0..8),
        prop::collection::vec(any::<u16>(), 0..3),
        prop::option::of(any::<u8>()),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(
            |(size_update, fields, cuts, pad, priority, end_stream, data)| GenBlock {
                size_update,
                fields,
                cuts,
                pad,
                priority,
                end_stream,
                data,
            },
        )
}

/// The client's bytes for `blocks` (stream 1, 3, 5, …), and what h2 must
/// read for each: the same list with only the authority changed.
fn client_bytes(blocks: &[GenBlock]) -> (Vec<u8>, Vec<Block>, Vec<RawFrame>) {
    let mut encoder = RefEncoder::default();
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(&SETTINGS);
    let mut expected = Vec::new();
    let mut others = vec![RawFrame {
        kind: 0x4,
        flags: 0,
        stream: 0,
        payload: vec![],
    }];
    for (i, b) in blocks.iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        let mut block = Vec::new();
        if let Some(size) = b.size_update {
            encoder.update_max_dynamic_size(size, &mut block).unwrap();
        }
        let mut fields = Vec::new();
        for f in &b.fields {
            encoder
                .encode((f.name.clone(), f.value.clone(), f.flags), &mut block)
                .unwrap();
            let value = if f.name == b":authority" && !is_uri_authority(&f.value) {
                LOCALHOST.to_vec()
            } else {
                f.value.clone()
            };
            fields.push((f.name.clone(), value));
        }
        if b.size_update.is_some() && b.fields.is_empty() {
            // A block may not end with a size update (the decoder says so).
            encoder.encode(2u32, &mut block).unwrap();
            fields.push(field(":method", "GET"));
        }
        // Cut the block into fragments.
        let mut cuts: Vec<usize> = b
            .cuts
            .iter()
            .map(|c| usize::from(*c) * block.len() / usize::from(u16::MAX))
            .collect();
        cuts.sort_unstable();
        cuts.push(block.len());
        let priority = [0x00, 0, 0, 0, 7];
        let mut start = 0;
        for (n, end) in cuts.iter().enumerate() {
            let fragment = &block[start..*end];
            start = *end;
            let last = n + 1 == cuts.len();
            let mut flags = if last { END_HEADERS } else { 0 };
            if n == 0 {
                let mut payload = Vec::new();
                if let Some(pad) = b.pad {
                    flags |= PADDED;
                    payload.push(pad % 32);
                }
                if b.priority {
                    flags |= PRIORITY;
                    payload.extend_from_slice(&priority);
                }
                if b.end_stream {
                    flags |= END_STREAM;
                }
                payload.extend_from_slice(fragment);
                payload.extend(std::iter::repeat_n(0, usize::from(b.pad.unwrap_or(0) % 32)));
                bytes.extend(head(payload.len(), HEADERS, flags, stream));
                bytes.extend(payload);
            } else {
                bytes.extend(head(fragment.len(), CONTINUATION, flags, stream));
                bytes.extend_from_slice(fragment);
            }
        }
        expected.push(Block {
            stream,
            end_stream: b.end_stream,
            priority: b.priority.then(|| priority.to_vec()),
            fields,
        });
        if let Some(data) = &b.data {
            bytes.extend(head(data.len(), 0x0, 0, stream));
            bytes.extend_from_slice(data);
            others.push(RawFrame {
                kind: 0x0,
                flags: 0,
                stream,
                payload: data.clone(),
            });
        }
    }
    (bytes, expected, others)
}

/// The fuzz target's seeds, and inputs it once failed on
/// (tests/fixtures/authority/, if any), pass its checks; only the seeds
/// named `bad_*` are refused.
#[test]
fn fuzz_seeds_and_regression_fixtures_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for dir in ["fuzz/seeds/authority", "tests/fixtures/authority"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let refused = fuzz_checks::check(&std::fs::read(&path).unwrap());
            let name = path.file_name().unwrap().to_string_lossy();
            if dir.starts_with("fuzz") {
                assert_eq!(refused, name.starts_with("bad_"), "{name}");
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 6, "the seeds are there");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The fuzz target's checks on generated inputs.
    #[test]
    fn the_fuzz_checks_hold_on_generated_records(
        data in prop::collection::vec(any::<u8>(), 0..800),
    ) {
        fuzz_checks::check(&data);
    }

    /// Any header lists, encoded with any use of the dynamic table, size
    /// updates, Huffman coding, padding, priority and CONTINUATION, read in
    /// any pieces: h2 reads the same lists with only the authority
    /// changed, each decodable with an empty table, and every other frame
    /// unchanged.
    #[test]
    fn h2_reads_the_client_lists_with_only_the_authority_changed(
        blocks in prop::collection::vec(gen_block(), 1..8),
        piece in 1usize..200,
    ) {
        let (input, expected, expected_others) = client_bytes(&blocks);
        let chunks: Vec<&[u8]> = input.chunks(piece).collect();
        let mut normalizer = Normalizer::new();
        let seen = run(&mut normalizer, &chunks);
        prop_assert!(!normalizer.closed());
        prop_assert_eq!(normalizer.take_refusal(), None);
        let (blocks, others) = blocks_and_others(&frames(&seen));
        prop_assert_eq!(blocks, expected);
        prop_assert_eq!(others, expected_others);
    }

    /// Whatever the bytes after the preface, in whatever pieces: no panic,
    /// and the same output as when read in one piece.
    #[test]
    fn any_bytes_in_any_pieces_give_the_same_output(
        tail in prop::collection::vec(any::<u8>(), 0..600),
        piece in 1usize..50,
    ) {
        let input = [PREFACE.as_slice(), &tail].concat();
        let whole = run(&mut Normalizer::new(), &[&input]);
        let chunks: Vec<&[u8]> = input.chunks(piece).collect();
        prop_assert_eq!(run(&mut Normalizer::new(), &chunks), whole);
    }
}
