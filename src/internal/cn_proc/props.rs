//! Property tests of `cn_proc`, run by `cargo test` (1000 cases each):
//! arbitrary bytes never panic the parser, every event the kernel can send
//! round-trips bytes → parse → equal → emit → same bytes, and events packed
//! into one datagram (with slack and alignment padding) come back in order.
//!
//! The canonical bytes are written here field by field, independently of
//! [`ProcEvent::to_datagram`], so a round trip checks the parser and the
//! encoder against the layout, not against each other only. The fuzz target
//! in `fuzz/` explores the same parser without a time budget.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;

/// Every `what` the parser decodes to a named variant; an `Unknown` with one
/// of these would (rightly) parse as that variant instead.
const KNOWN_WHATS: [u32; 11] = [
    event_mask::NONE,
    event_mask::FORK,
    event_mask::EXEC,
    event_mask::UID,
    event_mask::GID,
    event_mask::SID,
    event_mask::PTRACE,
    event_mask::COMM,
    event_mask::NONZERO_EXIT,
    event_mask::COREDUMP,
    event_mask::EXIT,
];

/// Any value of every `EventKind` variant.
fn any_kind() -> impl Strategy<Value = EventKind> {
    use EventKind::*;
    let i = any::<i32>;
    let u = any::<u32>;
    prop_oneof![
        u().prop_map(|err| Ack { err }),
        (i(), i(), i(), i()).prop_map(|(a, b, c, d)| Fork {
            parent_pid: a,
            parent_tgid: b,
            child_pid: c,
            child_tgid: d
        }),
        (i(), i()).prop_map(|(pid, tgid)| Exec { pid, tgid }),
        (i(), i(), u(), u()).prop_map(|(pid, tgid, ruid, euid)| Uid {
            pid,
            tgid,
            ruid,
            euid
        }),
        (i(), i(), u(), u()).prop_map(|(pid, tgid, rgid, egid)| Gid {
            pid,
            tgid,
            rgid,
            egid
        }),
        (i(), i()).prop_map(|(pid, tgid)| Sid { pid, tgid }),
        (i(), i(), i(), i()).prop_map(|(pid, tgid, a, b)| Ptrace {
            pid,
            tgid,
            tracer_pid: a,
            tracer_tgid: b
        }),
        (i(), i(), any::<[u8; 16]>()).prop_map(|(pid, tgid, comm)| Comm { pid, tgid, comm }),
        (i(), i(), i(), i()).prop_map(|(pid, tgid, a, b)| Coredump {
            pid,
            tgid,
            parent_pid: a,
            parent_tgid: b
        }),
        (i(), i(), u(), u(), i(), i()).prop_map(|(pid, tgid, c, s, a, b)| Exit {
            pid,
            tgid,
            exit_code: c,
            exit_signal: s,
            parent_pid: a,
            parent_tgid: b
        }),
        (i(), i(), u(), u(), i(), i()).prop_map(|(pid, tgid, c, s, a, b)| NonzeroExit {
            pid,
            tgid,
            exit_code: c,
            exit_signal: s,
            parent_pid: a,
            parent_tgid: b
        }),
        u().prop_filter("a known what is not Unknown", |w| !KNOWN_WHATS.contains(w))
            .prop_map(|what| Unknown { what }),
    ]
}

fn any_event() -> impl Strategy<Value = ProcEvent> {
    (any::<u32>(), any::<u64>(), any_kind()).prop_map(|(cpu, timestamp_ns, kind)| ProcEvent {
        cpu,
        timestamp_ns,
        kind,
    })
}

/// The six words of the `event_data` union as the kernel fills them (the
/// comm's 16 bytes are laid over words 2..6 separately).
#[rustfmt::skip]
fn union_words(kind: &EventKind) -> [u32; 6] {
    use EventKind::*;
    let w = |p: i32| p as u32;
    match *kind {
        Ack { err } => [err, 0, 0, 0, 0, 0],
        Fork { parent_pid, parent_tgid, child_pid, child_tgid } =>
            [w(parent_pid), w(parent_tgid), w(child_pid), w(child_tgid), 0, 0],
        Exec { pid, tgid } | Sid { pid, tgid } | Comm { pid, tgid, .. } => [w(pid), w(tgid), 0, 0, 0, 0],
        Uid { pid, tgid, ruid, euid } => [w(pid), w(tgid), ruid, euid, 0, 0],
        Gid { pid, tgid, rgid, egid } => [w(pid), w(tgid), rgid, egid, 0, 0],
        Ptrace { pid, tgid, tracer_pid, tracer_tgid } => [w(pid), w(tgid), w(tracer_pid), w(tracer_tgid), 0, 0],
        Coredump { pid, tgid, parent_pid, parent_tgid } => [w(pid), w(tgid), w(parent_pid), w(parent_tgid), 0, 0],
        Exit { pid, tgid, exit_code, exit_signal, parent_pid, parent_tgid }
        | NonzeroExit { pid, tgid, exit_code, exit_signal, parent_pid, parent_tgid } =>
            [w(pid), w(tgid), exit_code, exit_signal, w(parent_pid), w(parent_tgid)],
        Unknown { .. } => [0; 6],
    }
}

/// The 76-byte datagram the kernel sends for `ev`, written field by field.
fn kernel_datagram(ev: &ProcEvent, seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(76);
    // struct nlmsghdr: len 76, NLMSG_DONE, flags 0, seq, port 0
    out.extend_from_slice(&76u32.to_ne_bytes());
    out.extend_from_slice(&3u16.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // struct cn_msg: idx 1, val 1, seq, ack 0, len 40, flags 0
    for v in [1u32, 1, seq, 0] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    out.extend_from_slice(&40u16.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    // struct proc_event: what, cpu, timestamp_ns, event_data
    out.extend_from_slice(&ev.kind.what().to_ne_bytes());
    out.extend_from_slice(&ev.cpu.to_ne_bytes());
    out.extend_from_slice(&ev.timestamp_ns.to_ne_bytes());
    for v in union_words(&ev.kind) {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    if let EventKind::Comm { comm, .. } = ev.kind {
        out[52 + 8..52 + 24].copy_from_slice(&comm);
    }
    out
}

/// Walks `buf` to the end: must terminate, never panic, and yield at most
/// one item per 16-byte header; every event it decodes must round-trip.
fn walk_and_check(buf: &[u8]) {
    let items: Vec<_> = parse_datagram(buf).collect();
    assert!(items.len() <= buf.len() / NLMSG_HDR_LEN + 1);
    for item in items {
        if let Ok(Message::Event(ev)) = item {
            let again: Vec<_> = parse_datagram(&ev.to_datagram(9)).collect();
            assert_eq!(again, vec![Ok(Message::Event(ev))]);
        }
    }
}

/// A valid datagram with one byte overwritten: reaches deeper than noise.
fn mutated_datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        any_event(),
        any::<u32>(),
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_map(|(ev, seq, at, byte)| {
            let mut bytes = ev.to_datagram(seq);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..512)) {
        walk_and_check(&buf);
        if let Ok(ev) = ProcEvent::parse(&buf) {
            prop_assert_eq!(ProcEvent::parse(&ev.to_bytes()), Ok(ev));
        }
    }

    #[test]
    fn mutated_datagrams_never_panic(buf in mutated_datagram(), cut in any::<prop::sample::Index>()) {
        walk_and_check(&buf);
        // and every prefix of it, as a short recv would give
        walk_and_check(&buf[..cut.index(buf.len() + 1)]);
        let _ = ProcEvent::parse(buf.get(36..).unwrap_or_default());
    }

    #[test]
    fn every_event_round_trips_bytes_parse_emit(ev in any_event(), seq in any::<u32>()) {
        let bytes = kernel_datagram(&ev, seq);
        // bytes → parse → equal
        let parsed: Vec<_> = parse_datagram(&bytes).collect();
        prop_assert_eq!(parsed, vec![Ok(Message::Event(ev))]);
        prop_assert_eq!(ProcEvent::parse(&bytes[36..]), Ok(ev));
        // → emit → same bytes
        prop_assert_eq!(ev.to_datagram(seq), bytes.clone());
        prop_assert_eq!(&ev.to_bytes()[..], &bytes[36..]);
    }

    #[test]
    fn concatenated_events_parse_back_in_order(
        parts in vec((any_event(), any::<u32>(), 0usize..8, any::<u8>(), any::<bool>()), 1..8),
        last_padded in any::<bool>(),
    ) {
        // Each message may declare `slack` extra bytes inside its nlmsg_len
        // (ignored by the parser), is then padded to NLMSG_ALIGN with junk,
        // and may be preceded by an NLMSG_NOOP, which the walk skips.
        let mut buf = Vec::new();
        let n = parts.len();
        for (i, (ev, seq, slack, junk, noop)) in parts.iter().enumerate() {
            if *noop {
                buf.extend_from_slice(&16u32.to_ne_bytes());
                buf.extend_from_slice(&NLMSG_NOOP.to_ne_bytes());
                buf.extend_from_slice(&[0; 10]);
            }
            let mut msg = kernel_datagram(ev, *seq);
            let len = msg.len() + slack;
            msg.resize(len, *junk);
            msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
            if i + 1 < n || last_padded {
                msg.resize(nlmsg_align(len), !*junk);
            }
            buf.extend_from_slice(&msg);
        }
        let parsed: Vec<_> = parse_datagram(&buf).collect();
        let want: Vec<_> = parts.iter().map(|p| Ok(Message::Event(p.0))).collect();
        prop_assert_eq!(parsed, want);
    }
}
