//! Fuzzes the proc connector parser with arbitrary datagrams.
//!
//! Asserts that neither `parse_datagram` (walked to its end) nor
//! `ProcEvent::parse` panics, that the walk yields at most one item per
//! 16-byte header, and that every event either decodes round-trips:
//! `to_datagram` → parse → the same event.
#![no_main]

use execwatch::internal::cn_proc::{parse_datagram, Message, ProcEvent, NLMSG_HDR_LEN};
use libfuzzer_sys::fuzz_target;

fn round_trips(ev: ProcEvent) {
    let bytes = ev.to_datagram(1);
    let again: Vec<_> = parse_datagram(&bytes).collect();
    assert_eq!(
        again,
        vec![Ok(Message::Event(ev))],
        "{ev:?} did not round-trip"
    );
    assert_eq!(ProcEvent::parse(&ev.to_bytes()), Ok(ev));
}

fuzz_target!(|data: &[u8]| {
    let mut items = 0;
    for item in parse_datagram(data) {
        items += 1;
        if let Ok(Message::Event(ev)) = item {
            round_trips(ev);
        }
    }
    assert!(
        items <= data.len() / NLMSG_HDR_LEN + 1,
        "{items} items from {} bytes",
        data.len()
    );
    // The same bytes as a bare proc_event (cn_msg.data), as the connector
    // layer hands it over.
    if let Ok(ev) = ProcEvent::parse(data) {
        round_trips(ev);
    }
});
