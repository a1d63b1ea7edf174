//! Byte-level tests of `cn_proc`: fixtures are written field by field in host
//! byte order (so they hold on any target), with one comment per line of
//! bytes; a few tests also pin the exact little-endian bytes.

use super::*;

/// One field of a fixture, written in host byte order.
#[derive(Clone, Copy)]
enum F<'a> {
    W16(u16),
    W32(u32),
    Pid(i32),
    W64(u64),
    Raw(&'a [u8]),
}
use F::*;

fn wire(fields: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match *f {
            W16(v) => out.extend_from_slice(&v.to_ne_bytes()),
            W32(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Pid(v) => out.extend_from_slice(&v.to_ne_bytes()),
            W64(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Raw(b) => out.extend_from_slice(b),
        }
    }
    out
}

const SEQ: u32 = 7;
const CPU: u32 = 3;
const TS: u64 = 0x0011_2233_4455_6677;

/// A 76-byte datagram as the kernel sends it, with `data` as the 24-byte union.
#[rustfmt::skip]
fn kernel_event(what: u32, data: &[F]) -> Vec<u8> {
    let mut fields = vec![
        W32(76), W16(3), W16(0), W32(SEQ), W32(0),          // nlmsghdr: len 76, NLMSG_DONE, flags, seq, port 0
        W32(1), W32(1), W32(SEQ), W32(0), W16(40), W16(0),  // cn_msg: idx 1, val 1 (proc), seq, ack 0, len 40, flags
        W32(what), W32(CPU), W64(TS),                       // proc_event: what, cpu, timestamp_ns
    ];
    fields.extend_from_slice(data);
    let out = wire(&fields);
    assert_eq!(out.len(), 76, "fixture union must be 24 bytes");
    out
}

/// Every kind of event: name, kernel bytes, expected decoding.
#[rustfmt::skip]
fn cases() -> Vec<(&'static str, Vec<u8>, EventKind)> {
    let comm = *b"sleep\0\0\0\0\0\0\0\0\0\0\0";
    vec![
        ("ack", kernel_event(0x0, &[
            W32(22), Raw(&[0; 20]),                                   // ack: err EINVAL, zeroed rest
        ]), EventKind::Ack { err: 22 }),
        ("fork", kernel_event(0x1, &[
            Pid(100), Pid(100), Pid(201), Pid(200), Raw(&[0; 8]),     // fork: parent pid, tgid, child pid, tgid, rest
        ]), EventKind::Fork { parent_pid: 100, parent_tgid: 100, child_pid: 201, child_tgid: 200 }),
        ("exec", kernel_event(0x2, &[
            Pid(4242), Pid(4240), Raw(&[0; 16]),                      // exec: pid, tgid, rest
        ]), EventKind::Exec { pid: 4242, tgid: 4240 }),
        ("uid", kernel_event(0x4, &[
            Pid(5), Pid(5), W32(1000), W32(0), Raw(&[0; 8]),          // id: pid, tgid, ruid, euid, rest
        ]), EventKind::Uid { pid: 5, tgid: 5, ruid: 1000, euid: 0 }),
        ("gid", kernel_event(0x40, &[
            Pid(5), Pid(5), W32(100), W32(4294967294), Raw(&[0; 8]),  // id: pid, tgid, rgid, egid (nobody), rest
        ]), EventKind::Gid { pid: 5, tgid: 5, rgid: 100, egid: 4_294_967_294 }),
        ("sid", kernel_event(0x80, &[
            Pid(77), Pid(77), Raw(&[0; 16]),                          // sid: pid, tgid, rest
        ]), EventKind::Sid { pid: 77, tgid: 77 }),
        ("ptrace", kernel_event(0x100, &[
            Pid(9), Pid(9), Pid(12), Pid(11), Raw(&[0; 8]),           // ptrace: pid, tgid, tracer pid, tracer tgid, rest
        ]), EventKind::Ptrace { pid: 9, tgid: 9, tracer_pid: 12, tracer_tgid: 11 }),
        ("comm", kernel_event(0x200, &[
            Pid(31), Pid(30), Raw(&comm),                             // comm: pid, tgid, "sleep" NUL-padded to 16
        ]), EventKind::Comm { pid: 31, tgid: 30, comm }),
        ("coredump", kernel_event(0x4000_0000, &[
            Pid(8), Pid(8), Pid(1), Pid(1), Raw(&[0; 8]),             // coredump: pid, tgid, parent pid, parent tgid, rest
        ]), EventKind::Coredump { pid: 8, tgid: 8, parent_pid: 1, parent_tgid: 1 }),
        ("exit", kernel_event(0x8000_0000, &[
            Pid(4242), Pid(4240), W32(0x100), W32(17), Pid(1), Pid(1), // exit: pid, tgid, code (status 1), SIGCHLD, parent
        ]), EventKind::Exit { pid: 4242, tgid: 4240, exit_code: 0x100, exit_signal: 17, parent_pid: 1, parent_tgid: 1 }),
        ("nonzero_exit", kernel_event(0x2000_0000, &[
            Pid(6), Pid(6), W32(9), W32(17), Pid(2), Pid(2),          // exit layout: pid, tgid, code (SIGKILL), SIGCHLD, parent
        ]), EventKind::NonzeroExit { pid: 6, tgid: 6, exit_code: 9, exit_signal: 17, parent_pid: 2, parent_tgid: 2 }),
        ("unknown", kernel_event(0x400, &[
            Raw(&[0; 24]),                                            // a future member, all zeros
        ]), EventKind::Unknown { what: 0x400 }),
    ]
}

fn event(kind: EventKind) -> ProcEvent {
    ProcEvent {
        cpu: CPU,
        timestamp_ns: TS,
        kind,
    }
}

fn parse(buf: &[u8]) -> Vec<Result<Message, ParseError>> {
    parse_datagram(buf).collect()
}

/// Rewrites a u16/u32 field of a fixture in place.
fn set_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}
fn set_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

#[test]
fn every_event_type_parses_then_reemits_the_same_bytes() {
    for (name, bytes, kind) in cases() {
        // parse → compare
        assert_eq!(
            parse(&bytes),
            vec![Ok(Message::Event(event(kind)))],
            "{name}"
        );
        // emit → compare
        assert_eq!(event(kind).to_datagram(SEQ), bytes, "{name}");
        assert_eq!(kind.what().to_ne_bytes(), bytes[36..40], "{name}");
    }
}

#[cfg(target_endian = "little")]
#[test]
#[rustfmt::skip]
fn exec_event_exact_little_endian_bytes() {
    let bytes: [u8; 76] = [
        0x4c, 0, 0, 0,  0x03, 0,  0, 0,  0x07, 0, 0, 0,  0, 0, 0, 0,    // nlmsghdr: len 76, DONE, flags, seq 7, port 0
        1, 0, 0, 0,  1, 0, 0, 0,  0x07, 0, 0, 0,  0, 0, 0, 0,           // cn_msg: idx 1, val 1, seq 7, ack 0
        0x28, 0,  0, 0,                                                 // cn_msg: len 40, flags 0
        0x02, 0, 0, 0,  0x03, 0, 0, 0,                                  // proc_event: what EXEC, cpu 3
        0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00,                 // proc_event: timestamp_ns
        0x92, 0x10, 0, 0,  0x90, 0x10, 0, 0,                            // exec: pid 4242, tgid 4240
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,                 // zeroed rest of the union
    ];
    let exec = event(EventKind::Exec { pid: 4242, tgid: 4240 });
    assert_eq!(parse(&bytes), vec![Ok(Message::Event(exec))]);
    assert_eq!(exec.to_datagram(7), bytes);
}

#[test]
#[rustfmt::skip]
fn subscribe_with_filter_is_nlmsghdr_cn_msg_proc_input() {
    let expected = wire(&[
        W32(44), W16(3), W16(0), W32(1), W32(0x1234),      // nlmsghdr: len 44, NLMSG_DONE, flags 0, seq, port
        W32(1), W32(1), W32(1), W32(0), W16(8), W16(0),    // cn_msg: idx 1, val 1, seq, ack 0, len 8, flags
        W32(1), W32(0x8000_0002),                          // proc_input: LISTEN, EXEC | EXIT
    ]);
    let mask = event_mask::EXEC | event_mask::EXIT;
    assert_eq!(subscribe_message(McastOp::Listen, Some(mask), 1, 0x1234), expected);
}

#[test]
#[rustfmt::skip]
fn subscribe_legacy_is_the_bare_op() {
    let expected = wire(&[
        W32(40), W16(3), W16(0), W32(9), W32(77),          // nlmsghdr: len 40, NLMSG_DONE, flags 0, seq, port
        W32(1), W32(1), W32(9), W32(0), W16(4), W16(0),    // cn_msg: idx 1, val 1, seq, ack 0, len 4, flags
        W32(2),                                            // mcast_op: IGNORE
    ]);
    assert_eq!(subscribe_message(McastOp::Ignore, None, 9, 77), expected);
}

#[cfg(target_endian = "little")]
#[test]
#[rustfmt::skip]
fn subscribe_exact_little_endian_bytes() {
    let with_filter: [u8; 44] = [
        0x2c, 0, 0, 0,  0x03, 0,  0, 0,  0x01, 0, 0, 0,  0x34, 0x12, 0, 0, // nlmsghdr: 44, DONE, 0, seq 1, port
        1, 0, 0, 0,  1, 0, 0, 0,  0x01, 0, 0, 0,  0, 0, 0, 0,              // cn_msg: idx, val, seq 1, ack 0
        0x08, 0,  0, 0,                                                    // cn_msg: len 8, flags 0
        0x01, 0, 0, 0,  0x02, 0, 0, 0x80,                                  // proc_input: LISTEN, EXEC | EXIT
    ];
    let mask = event_mask::EXEC | event_mask::EXIT;
    assert_eq!(subscribe_message(McastOp::Listen, Some(mask), 1, 0x1234), with_filter);
    let legacy: [u8; 40] = [
        0x28, 0, 0, 0,  0x03, 0,  0, 0,  0x01, 0, 0, 0,  0x34, 0x12, 0, 0, // nlmsghdr: 40, DONE, 0, seq 1, port
        1, 0, 0, 0,  1, 0, 0, 0,  0x01, 0, 0, 0,  0, 0, 0, 0,              // cn_msg: idx, val, seq 1, ack 0
        0x04, 0,  0, 0,                                                    // cn_msg: len 4, flags 0
        0x01, 0, 0, 0,                                                     // mcast_op: LISTEN
    ];
    assert_eq!(subscribe_message(McastOp::Listen, None, 1, 0x1234), legacy);
}

#[test]
fn subscribe_message_reads_back_within_its_declared_lengths() {
    // The parser walks our own request, honours cn_msg.len (8 or 4) and
    // reports it as too short for a proc_event instead of reading past it.
    for (filter, len) in [(Some(event_mask::ALL), 8), (None, 4)] {
        let msg = subscribe_message(McastOp::Listen, filter, 5, 6);
        assert_eq!(msg.len(), NLMSG_HDR_LEN + CN_MSG_HDR_LEN + len);
        let truncated = ParseError::Truncated {
            at: "proc_event",
            needed: PROC_EVENT_HDR_LEN,
            got: len,
        };
        assert_eq!(parse(&msg), vec![Err(truncated)]);
    }
}

#[test]
fn comm_stops_at_the_first_nul() {
    let kind = EventKind::Comm {
        pid: 1,
        tgid: 1,
        comm: *b"sleep\0xx\0\0\0\0\0\0\0\0",
    };
    assert_eq!(kind.comm(), Some(&b"sleep"[..]));
    assert_eq!(comm_bytes(b"exactly16bytes!!"), b"exactly16bytes!!");
    assert_eq!(comm_bytes(&[0; 16]), b"");
    assert_eq!(EventKind::Exec { pid: 1, tgid: 1 }.comm(), None);
}

#[test]
#[rustfmt::skip]
fn unknown_what_is_a_value_even_with_only_the_header() {
    let bytes = wire(&[
        W32(52), W16(3), W16(0), W32(1), W32(0),           // nlmsghdr: len 52
        W32(1), W32(1), W32(1), W32(0), W16(16), W16(0),   // cn_msg: len 16, the proc_event header only
        W32(0x0000_0800), W32(CPU), W64(TS),               // proc_event: what = a future bit, cpu, ts
    ]);
    let kind = EventKind::Unknown { what: 0x800 };
    assert_eq!(parse(&bytes), vec![Ok(Message::Event(event(kind)))]);
}

#[test]
fn every_prefix_of_a_datagram_is_truncated_never_a_panic() {
    for (name, bytes, _) in cases() {
        assert!(parse(&bytes[..0]).is_empty());
        for len in 1..bytes.len() {
            let at = if len < NLMSG_HDR_LEN {
                "nlmsghdr"
            } else {
                "netlink message"
            };
            let needed = if len < NLMSG_HDR_LEN { 16 } else { 76 };
            let got = len;
            let want = ParseError::Truncated { at, needed, got };
            assert_eq!(parse(&bytes[..len]), vec![Err(want)], "{name} at {len}");
        }
    }
}

#[test]
fn every_short_cn_msg_len_is_truncated_at_the_named_member() {
    // Shrink the declared lengths themselves: the message is well formed but
    // the proc_event inside is cut at every byte boundary.
    for (name, bytes, kind) in cases() {
        let member = match kind {
            EventKind::Ack { .. } => ("proc_event.ack", 20),
            EventKind::Fork { .. } => ("proc_event.fork", 32),
            EventKind::Exec { .. } => ("proc_event.exec", 24),
            EventKind::Uid { .. } | EventKind::Gid { .. } => ("proc_event.id", 32),
            EventKind::Sid { .. } => ("proc_event.sid", 24),
            EventKind::Ptrace { .. } => ("proc_event.ptrace", 32),
            EventKind::Comm { .. } => ("proc_event.comm", 40),
            EventKind::Coredump { .. } => ("proc_event.coredump", 32),
            EventKind::Exit { .. } | EventKind::NonzeroExit { .. } => ("proc_event.exit", 40),
            EventKind::Unknown { .. } => ("", 16),
        };
        for cn_len in 0..member.1 {
            let mut short = bytes[..36 + cn_len].to_vec();
            set_u32(&mut short, 0, (36 + cn_len) as u32);
            set_u16(&mut short, 32, cn_len as u16);
            let (at, needed) = if cn_len < 16 {
                ("proc_event", 16)
            } else {
                member
            };
            let want = ParseError::Truncated {
                at,
                needed,
                got: cn_len,
            };
            assert_eq!(parse(&short), vec![Err(want)], "{name} cn_msg.len {cn_len}");
        }
    }
}

#[test]
fn padding_inside_declared_lengths_is_skipped() {
    let (_, exec, kind) = cases().remove(2);
    let want = vec![Ok(Message::Event(event(kind)))];

    // cn_msg.len larger than proc_event: a grown struct from a newer kernel.
    let mut grown = exec.clone();
    grown.extend_from_slice(&[0xaa; 8]);
    set_u32(&mut grown, 0, 84);
    set_u16(&mut grown, 32, 48);
    assert_eq!(parse(&grown), want);

    // nlmsg_len larger than cn_msg + len: trailing bytes inside the message.
    let mut padded = exec.clone();
    padded.extend_from_slice(&[0xbb; 8]);
    set_u32(&mut padded, 0, 84);
    assert_eq!(parse(&padded), want);
}

#[test]
fn two_messages_with_alignment_padding_and_a_noop_between() {
    let (_, exec, exec_kind) = cases().remove(2);
    let (_, exit, exit_kind) = cases().remove(9);
    let mut dgram = exec.clone();
    // Declare 78 bytes: two bytes of slack, then 2 more to reach NLMSG_ALIGN(78) = 80.
    set_u32(&mut dgram, 0, 78);
    dgram.extend_from_slice(&[0xcc; 4]);
    // NLMSG_NOOP, header only
    dgram.extend_from_slice(&wire(&[W32(16), W16(NLMSG_NOOP), W16(0), W32(0), W32(0)]));
    dgram.extend_from_slice(&exit);
    let want = vec![
        Ok(Message::Event(event(exec_kind))),
        Ok(Message::Event(event(exit_kind))),
    ];
    assert_eq!(parse(&dgram), want);
}

#[test]
fn the_last_message_may_lack_its_alignment_padding() {
    let (_, exec, kind) = cases().remove(2);
    let mut dgram = exec;
    dgram.push(0xdd);
    set_u32(&mut dgram, 0, 77);
    assert_eq!(parse(&dgram), vec![Ok(Message::Event(event(kind)))]);
}

#[test]
#[rustfmt::skip]
fn foreign_connector_ids_are_values_and_the_walk_goes_on() {
    let (_, exec, kind) = cases().remove(2);
    let mut dgram = wire(&[
        W32(40), W16(3), W16(0), W32(0), W32(0),           // nlmsghdr: len 40, NLMSG_DONE
        W32(0xa), W32(0x2), W32(0), W32(0), W16(4), W16(0), // cn_msg: another connector's id, len 4
        W32(0xdead_beef),                                  // its data, not read
    ]);
    dgram.extend_from_slice(&exec);
    let want = vec![
        Ok(Message::Foreign { idx: 0xa, val: 0x2 }),
        Ok(Message::Event(event(kind))),
    ];
    assert_eq!(parse(&dgram), want);
}

#[test]
#[rustfmt::skip]
fn netlink_control_messages() {
    let dgram = wire(&[
        W32(36), W16(NLMSG_ERROR), W16(0), W32(1), W32(0), // nlmsghdr: NLMSG_ERROR
        Pid(-1), W32(40), W16(3), W16(0), W32(1), W32(9),  // nlmsgerr: -EPERM, the offending nlmsghdr
        W32(36), W16(NLMSG_ERROR), W16(0), W32(2), W32(0), // nlmsghdr: NLMSG_ERROR
        Pid(0), W32(40), W16(3), W16(0), W32(2), W32(9),   // nlmsgerr: 0 = ack
        W32(16), W16(NLMSG_NOOP), W16(0), W32(0), W32(0),  // nlmsghdr: NLMSG_NOOP, skipped
        W32(16), W16(NLMSG_OVERRUN), W16(0), W32(0), W32(0), // nlmsghdr: NLMSG_OVERRUN
        W32(20), W16(NLMSG_ERROR), W16(0), W32(0), W32(0), // nlmsghdr: NLMSG_ERROR, no offending header
        Pid(-22),                                          // nlmsgerr: -EINVAL only
        W32(16), W16(0x10), W16(0), W32(0), W32(0),        // nlmsghdr: a family-specific type
    ]);
    let want = |fourth: Result<Message, ParseError>| vec![
        Ok(Message::Error { errno: 1 }),
        Ok(Message::Error { errno: 0 }),
        Ok(Message::Overrun),
        fourth,
        Ok(Message::Other { msg_type: 0x10 }),
    ];
    assert_eq!(parse(&dgram), want(Ok(Message::Error { errno: 22 })));
    // Declare only 2 bytes of nlmsgerr: still aligned to the same next message.
    let mut cut = dgram.clone();
    set_u32(&mut cut, 36 + 36 + 16 + 16, 18);
    let short = ParseError::Truncated { at: "nlmsgerr", needed: 4, got: 2 };
    assert_eq!(parse(&cut), want(Err(short)));
}

#[test]
fn a_bad_nlmsg_len_ends_the_walk() {
    let (_, exec, _) = cases().remove(2);
    for bad in [0u32, 1, 15] {
        let mut dgram = exec.clone();
        set_u32(&mut dgram, 0, bad);
        dgram.extend_from_slice(&exec);
        let want = ParseError::BadLength {
            at: "nlmsghdr.nlmsg_len",
            declared: bad as usize,
            min: 16,
            max: 152,
        };
        assert_eq!(parse(&dgram), vec![Err(want)]);
    }
}

#[test]
fn a_bad_payload_is_reported_and_the_walk_goes_on() {
    let (_, exec, kind) = cases().remove(2);
    let mut dgram = exec.clone();
    set_u16(&mut dgram, 32, 41); // cn_msg.len one past its netlink message
    dgram.extend_from_slice(&exec);
    let bad = ParseError::BadLength {
        at: "cn_msg.len",
        declared: 41,
        min: 0,
        max: 40,
    };
    assert_eq!(
        parse(&dgram),
        vec![Err(bad), Ok(Message::Event(event(kind)))]
    );

    // A netlink message too short for its cn_msg.
    let mut short = wire(&[W32(30), W16(3), W16(0), W32(0), W32(0)]);
    short.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let want = ParseError::Truncated {
        at: "cn_msg",
        needed: 20,
        got: 14,
    };
    assert_eq!(parse(&short), vec![Err(want)]);
}

/// xorshift64: deterministic noise without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn noise_and_mutations_never_panic_and_stay_bounded() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = (rng.next() % 200) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Make some headers plausible so the walk gets past the first one.
        if len >= 16 && rng.next() & 1 == 0 {
            set_u32(&mut buf, 0, (rng.next() % (len as u64 + 1)) as u32);
            set_u16(&mut buf, 4, NLMSG_DONE);
        }
        assert!(parse_datagram(&buf).count() <= len / 16 + 1);
    }
    for (_, bytes, _) in cases() {
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x0f, 0x7f, 0x80, 0xff] {
                let mut m = bytes.clone();
                m[i] = v;
                for item in parse_datagram(&m) {
                    if let Ok(Message::Event(ev)) = item {
                        // whatever decodes must re-encode and decode the same
                        assert_eq!(parse(&ev.to_datagram(1)), vec![Ok(Message::Event(ev))]);
                    }
                }
            }
        }
    }
}

#[test]
fn random_events_round_trip() {
    let mut rng = Rng(42);
    let mut pid = || rng.next() as i32;
    for (_, _, template) in cases() {
        let kind = match template {
            EventKind::Fork { .. } => EventKind::Fork {
                parent_pid: pid(),
                parent_tgid: pid(),
                child_pid: pid(),
                child_tgid: pid(),
            },
            EventKind::Exit { .. } => EventKind::Exit {
                pid: pid(),
                tgid: pid(),
                exit_code: pid() as u32,
                exit_signal: u32::MAX,
                parent_pid: pid(),
                parent_tgid: i32::MIN,
            },
            EventKind::Comm { .. } => EventKind::Comm {
                pid: pid(),
                tgid: -1,
                comm: [0xff; 16],
            },
            other => other,
        };
        let ev = ProcEvent {
            cpu: u32::MAX,
            timestamp_ns: u64::MAX,
            kind,
        };
        let bytes = ev.to_datagram(u32::MAX);
        assert_eq!(bytes.len(), 76);
        assert_eq!(parse(&bytes), vec![Ok(Message::Event(ev))]);
    }
}

#[test]
fn constants_match_the_kernel_headers() {
    assert_eq!(event_mask::ALL, 0xe000_03c7);
    assert_eq!(PROC_EVENT_LEN, 40);
    assert_eq!(McastOp::Listen as u32, 1);
    assert_eq!(McastOp::Ignore as u32, 2);
    assert_eq!(
        [
            nlmsg_align(0),
            nlmsg_align(1),
            nlmsg_align(76),
            nlmsg_align(77)
        ],
        [0, 4, 76, 80]
    );
    assert_eq!(nlmsg_align(usize::MAX), usize::MAX & !3);
}

#[test]
fn errors_read_well() {
    let e = ParseError::Truncated {
        at: "proc_event.exec",
        needed: 24,
        got: 20,
    };
    assert_eq!(
        e.to_string(),
        "truncated proc_event.exec: need 24 bytes, got 20"
    );
    let e = ParseError::BadLength {
        at: "cn_msg.len",
        declared: 41,
        min: 0,
        max: 40,
    };
    assert_eq!(
        e.to_string(),
        "bad length in cn_msg.len: declared 41, allowed 0..=40"
    );
}

/// What the fuzz target (`fuzz/fuzz_targets/cn_proc.rs`) asserts for one
/// input: the walk ends, yields at most one item per header, and whatever
/// decodes as an event round-trips, as a datagram or as a bare proc_event.
fn check_like_the_fuzzer(name: &str, data: &[u8]) {
    let items = parse(data);
    assert!(items.len() <= data.len() / NLMSG_HDR_LEN + 1, "{name}");
    let events = items.iter().filter_map(|item| match item {
        Ok(Message::Event(ev)) => Some(*ev),
        _ => None,
    });
    for ev in events.chain(ProcEvent::parse(data).ok()) {
        assert_eq!(
            parse(&ev.to_datagram(1)),
            vec![Ok(Message::Event(ev))],
            "{name}"
        );
    }
}

/// Every file of `dir` but its notes (`*.md`), by name.
fn inputs_in(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|ext| ext != "md"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn fuzz_seeds_and_regression_fixtures_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Inputs that once crashed the parser (none so far) and the fuzz seeds.
    let fixtures = inputs_in(&root.join("tests/fixtures/cn_proc"));
    let seeds = inputs_in(&root.join("fuzz/seeds/cn_proc"));
    assert!(seeds.len() >= 14, "seeds missing: {}", seeds.len());
    for (name, data) in fixtures.iter().chain(&seeds) {
        check_like_the_fuzzer(name, data);
    }
}

/// The seeds are what their names say (they are written little-endian).
#[cfg(target_endian = "little")]
#[test]
fn fuzz_seeds_decode_as_named() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = inputs_in(&root.join("fuzz/seeds/cn_proc"));
    let seed = |name: &str| -> Vec<Result<Message, ParseError>> {
        let (_, data) = seeds.iter().find(|(n, _)| n == name).expect(name);
        parse(data)
    };
    let ev = |kind| ProcEvent {
        cpu: 1,
        timestamp_ns: 123_456_789,
        kind,
    };
    let exec = ev(EventKind::Exec {
        pid: 4242,
        tgid: 4242,
    });
    let exit = ev(EventKind::Exit {
        pid: 4242,
        tgid: 4242,
        exit_code: 0x100,
        exit_signal: 17,
        parent_pid: 1,
        parent_tgid: 1,
    });
    let ok = |e| Ok(Message::Event(e));
    assert_eq!(seed("exec"), [ok(exec)]);
    assert_eq!(seed("exit"), [ok(exit)]);
    let fork = EventKind::Fork {
        parent_pid: 1,
        parent_tgid: 1,
        child_pid: 4242,
        child_tgid: 4242,
    };
    assert_eq!(seed("fork"), [ok(ev(fork))]);
    let comm = *b"renamed\0\0\0\0\0\0\0\0\0";
    let comm = EventKind::Comm {
        pid: 4242,
        tgid: 4242,
        comm,
    };
    assert_eq!(seed("comm"), [ok(ev(comm))]);
    assert_eq!(seed("ack"), [ok(ev(EventKind::Ack { err: 0 }))]);
    assert_eq!(
        seed("unknown_what"),
        [ok(ev(EventKind::Unknown { what: 0x800 }))]
    );
    assert_eq!(seed("exec_noop_exit_packed"), [ok(exec), ok(exit)]);
    assert_eq!(seed("netlink_error"), [Ok(Message::Error { errno: 1 })]);
    assert_eq!(seed("overrun"), [Ok(Message::Overrun)]);
    let cut = |at, needed, got| [Err(ParseError::Truncated { at, needed, got })];
    assert_eq!(seed("exec_truncated_in_header"), cut("nlmsghdr", 16, 10));
    assert_eq!(
        seed("exec_truncated_in_cn_msg"),
        cut("netlink message", 76, 30)
    );
    assert_eq!(
        seed("exec_truncated_in_event"),
        cut("netlink message", 76, 60)
    );
    let bad = ParseError::BadLength {
        at: "cn_msg.len",
        declared: 41,
        min: 0,
        max: 40,
    };
    assert_eq!(seed("bad_cn_msg_len_then_exec"), [Err(bad), ok(exec)]);
    let (_, bare) = seeds
        .iter()
        .find(|(n, _)| n == "bare_proc_event_exec")
        .unwrap();
    assert_eq!(ProcEvent::parse(bare), Ok(exec));
}
