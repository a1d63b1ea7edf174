#!/usr/bin/env python3
"""Writes the seeds of the `authority` fuzz target into seeds/authority/.

Each seed is in the target's record format (fuzz_targets/authority.rs):
byte 0 is the read size, then records of tag, flags, n and n payload bytes;
tag % 4 is 0 HEADERS, 1 CONTINUATION, 2 DATA, 3 raw bytes, and
(tag >> 2) & 3 picks stream 1, 3, 5 or 7.
"""

import os

HEADERS, CONTINUATION, DATA, RAW = 0, 1, 2, 3
END_STREAM, END_HEADERS, PADDED, PRIORITY = 0x1, 0x4, 0x8, 0x20


def record(kind, stream_index, flags, payload):
    assert len(payload) < 256
    return bytes([kind | stream_index << 2, flags, len(payload)]) + payload


def lit(name, value, prefix=0x40):
    """A literal with a literal name; 0x40 adds it to the dynamic table."""
    return bytes([prefix, len(name)]) + name + bytes([len(value)]) + value


REQUEST = b"\x83\x86" + lit(b":path", b"/execwatch.v1.ExecEvents/Watch", 0x00)
SEEDS = {
    # grpcurl: the socket path, indexed.
    "grpcurl_socket_path": bytes([64]) + record(
        HEADERS, 0, END_HEADERS, REQUEST + lit(b":authority", b"/run/execwatch/agent.sock")),
    # grpcio: the %-encoded path, then a second request that refers to it
    # by dynamic index 62, then a DATA frame.
    "grpcio_indexed_authority": bytes([7]) + record(
        HEADERS, 0, END_HEADERS, REQUEST + lit(b":authority", b"run%2Fexecwatch%2Fagent.sock"))
    + record(HEADERS, 1, END_HEADERS | END_STREAM, REQUEST + b"\xbe")
    + record(DATA, 1, END_STREAM, b"\x00\x00\x00\x00\x00"),
    # Padding, priority and a CONTINUATION.
    "padded_priority_continuation": bytes([3]) + record(
        HEADERS, 2, PADDED | PRIORITY, b"\x02" + b"\x00\x00\x00\x00\x10" + REQUEST[:10] + b"\x00\x00")
    + record(CONTINUATION, 2, END_HEADERS, REQUEST[10:] + lit(b":authority", b"localhost:1")),
    # A table size update to 0 and back, with Huffman-coded "www.example.com"
    # (RFC 7541 C.4.1) as the authority.
    "size_update_huffman": bytes([1]) + record(
        HEADERS, 0, END_HEADERS,
        b"\x20\x3f\xe1\x1f" + REQUEST
        + b"\x41\x8c\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff"),
    # A reference past the table: refused.
    "bad_index": bytes([64]) + record(HEADERS, 0, END_HEADERS, b"\x83\xc6"),
    # A SETTINGS frame and a PING as raw bytes between requests.
    "raw_control_frames": bytes([5]) + record(
        RAW, 0, 0, b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x01\x00\x00\x10\x00")
    + record(RAW, 0, 0, b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + bytes(8))
    + record(HEADERS, 0, END_HEADERS, REQUEST + lit(b":authority", b"a b")),
}

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "authority")
os.makedirs(here, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
