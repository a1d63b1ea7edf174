//! Tests of the fan-out: delivery, filtering, and exact loss accounting.

use super::*;
use crate::procfs::cmdline::ArgvPatterns;
use futures::FutureExt;

/// What a subscriber chose: exits or not, a selector, and a snapshot or
/// not.
fn choice(include_exits: bool, filter: Option<Arc<Filter>>, snapshot: bool) -> Choice {
    Choice {
        filter,
        omit: Default::default(),
        include_exits,
        skip_snapshot: !snapshot,
    }
}

fn exec(pid: i32) -> Item {
    Item::Exec(Arc::new(Process {
        pid,
        tgid: pid,
        ..Default::default()
    }))
}

fn exit(pid: i32) -> Item {
    Item::Exit(Exit {
        pid,
        tgid: pid,
        ..Default::default()
    })
}

fn pid_of(item: &Item) -> i32 {
    match item {
        Item::Exec(p) => p.pid,
        Item::Exit(e) => e.pid,
        Item::DetectorLost(_) => -1,
    }
}

#[test]
fn every_subscriber_gets_what_it_asked_for() {
    let fanout = Arc::new(Fanout::new(8, usize::MAX));
    let mut execs_only = fanout.subscribe(&choice(false, None, false));
    let mut with_exits = fanout.subscribe(&choice(true, None, false));
    fanout.publish(exec(1));
    fanout.publish(exit(1));
    fanout.publish(exec(2));
    let got: Vec<i32> = std::iter::from_fn(|| execs_only.recv().now_or_never().flatten())
        .map(|i| pid_of(&i))
        .collect();
    assert_eq!(got, vec![1, 2]);
    let got: Vec<_> = std::iter::from_fn(|| with_exits.recv().now_or_never().flatten()).collect();
    assert_eq!(got.len(), 3);
    assert!(matches!(got[1], Item::Exit(_)));
}

#[test]
fn a_full_subscriber_is_unhooked_and_told_exactly_what_it_missed() {
    let fanout = Arc::new(Fanout::new(2, usize::MAX));
    let mut slow = fanout.subscribe(&choice(false, None, false));
    let mut fast = fanout.subscribe(&choice(false, None, false));
    for pid in 1..=5 {
        fanout.publish(exec(pid));
        // The fast one keeps up.
        assert_eq!(pid_of(&fast.recv().now_or_never().flatten().unwrap()), pid);
    }
    // Queue of 2: pids 1 and 2 fit, 3 overflowed, 4 and 5 were never offered.
    assert!(slow.overflowed());
    assert_eq!(pid_of(&slow.recv().now_or_never().flatten().unwrap()), 1);
    assert_eq!(pid_of(&slow.recv().now_or_never().flatten().unwrap()), 2);
    assert!(matches!(slow.recv().now_or_never(), Some(None)));
    let (mut again, missed) = fanout.resubscribe(&slow, &choice(false, None, true));
    assert_eq!(
        missed,
        Some(Missed {
            events: 3,
            upstream: None
        })
    );
    assert!(!slow.overflowed());
    fanout.publish(exec(6));
    assert_eq!(pid_of(&again.recv().now_or_never().flatten().unwrap()), 6);
    assert_eq!(fanout.counts().subscriber_overflows, 1);
    assert_eq!(fanout.counts().subscribers, 2);
}

#[test]
fn exits_do_not_count_as_missed_for_an_exec_only_subscriber() {
    let fanout = Arc::new(Fanout::new(1, usize::MAX));
    let slow = fanout.subscribe(&choice(false, None, false));
    fanout.publish(exec(1));
    fanout.publish(exec(2)); // overflow
    fanout.publish(exit(1));
    fanout.publish(exit(2));
    fanout.publish(exec(3));
    let (_again, missed) = fanout.resubscribe(&slow, &choice(false, None, true));
    assert_eq!(missed.unwrap().events, 2, "exec 2 and exec 3");
}

#[test]
fn detector_loss_reaches_everyone_and_closed_streams_are_forgotten() {
    let fanout = Arc::new(Fanout::new(4, usize::MAX));
    let mut a = fanout.subscribe(&choice(false, None, false));
    let b = fanout.subscribe(&choice(true, None, false));
    drop(b);
    fanout.publish(loss(LossSite::Kernel, None));
    assert!(matches!(
        a.recv().now_or_never().flatten().unwrap(),
        Item::DetectorLost(l) if l.site == LossSite::Kernel
    ));
    assert_eq!(fanout.counts().subscribers, 1);
    assert_eq!(
        fanout.resubscribe(&a, &choice(false, None, true)).1,
        None,
        "never overflowed"
    );
}

fn loss(site: LossSite, count: Option<u64>) -> Item {
    Item::DetectorLost(Arc::new(DetectorLoss {
        site,
        reason: format!("{site:?} test loss"),
        count,
    }))
}

#[test]
fn a_loss_item_that_does_not_fit_is_reported_as_that_loss_not_as_an_event() {
    let fanout = Arc::new(Fanout::new(1, usize::MAX));
    let slow = fanout.subscribe(&choice(true, None, false));
    fanout.publish(exec(1)); // fills the queue
    fanout.publish(loss(LossSite::Kernel, None)); // does not fit
    fanout.publish(exec(2));
    let (_again, missed) = fanout.resubscribe(&slow, &choice(true, None, true));
    let missed = missed.expect("overflowed");
    assert_eq!(missed.events, 1, "only exec 2 is an event it missed");
    let upstream = missed.upstream.expect("the kernel loss it never got");
    assert_eq!(upstream.site, LossSite::Kernel);
    assert_eq!(upstream.count, None, "the kernel does not say how many");
    assert_eq!(fanout.counts().subscriber_overflows, 1);
}

#[test]
fn a_queue_overflow_alone_is_counted_exactly_even_when_the_loss_item_was_the_last() {
    let fanout = Arc::new(Fanout::new(1, usize::MAX));
    let slow = fanout.subscribe(&choice(false, None, false));
    fanout.publish(exec(1));
    fanout.publish(loss(LossSite::Detector, Some(4)));
    let (_again, missed) = fanout.resubscribe(&slow, &choice(false, None, true));
    let missed = missed.unwrap();
    assert_eq!(missed.events, 0, "nothing but the loss item was dropped");
    let upstream = missed.upstream.unwrap();
    assert_eq!(
        (upstream.site, upstream.count),
        (LossSite::Detector, Some(4))
    );
}

#[test]
fn losses_missed_while_unhooked_are_merged_with_a_count_only_if_all_had_one() {
    let fanout = Arc::new(Fanout::new(1, usize::MAX));
    let counted = fanout.subscribe(&choice(false, None, false));
    let mixed = fanout.subscribe(&choice(false, None, false));
    fanout.publish(exec(1));
    fanout.publish(exec(2)); // both overflow here
    fanout.publish(loss(LossSite::Detector, Some(2)));
    fanout.publish(loss(LossSite::Detector, Some(3)));
    fanout.publish(exec(3));
    let (_a, missed) = fanout.resubscribe(&counted, &choice(false, None, true));
    let missed = missed.unwrap();
    assert_eq!(missed.events, 2, "exec 2 and exec 3");
    assert_eq!(missed.upstream.unwrap().count, Some(5));
    fanout.publish(loss(LossSite::Kernel, None));
    let (_b, missed) = fanout.resubscribe(&mixed, &choice(false, None, true));
    let upstream = missed.unwrap().upstream.unwrap();
    assert_eq!(
        upstream.site,
        LossSite::Kernel,
        "the last loss names the site"
    );
    assert_eq!(upstream.count, None, "one of them had no count");
}

#[test]
fn a_filtered_subscriber_gets_its_processes_and_their_exits_only() {
    use crate::stream::selector::{Filter, Selector};
    let fanout = Arc::new(Fanout::new(16, usize::MAX));
    let req = execwatch::proto::WatchRequest {
        comms: vec!["java".into()],
        include_exits: true,
        ..Default::default()
    };
    let selector = Selector::from_request(&req).unwrap().unwrap();
    let filter = Arc::new(Filter::new(selector, true));
    let mut filtered = fanout.subscribe(&choice(true, Some(filter), false));
    let mut all = fanout.subscribe(&choice(true, None, false));
    let named = |pid: i32, comm: &str| {
        Item::Exec(Arc::new(Process {
            pid,
            comm: comm.into(),
            ..Default::default()
        }))
    };
    fanout.publish(named(1, "java"));
    fanout.publish(named(2, "sh"));
    fanout.publish(exit(2));
    fanout.publish(exit(1));
    let got: Vec<_> = std::iter::from_fn(|| filtered.recv().now_or_never().flatten()).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(matches!(&got[0], Item::Exec(p) if p.pid == 1));
    assert!(matches!(&got[1], Item::Exit(e) if e.pid == 1));
    assert_eq!(
        std::iter::from_fn(|| all.recv().now_or_never().flatten()).count(),
        4
    );
}

#[test]
fn the_fanout_counts_what_it_publishes_and_who_is_hooked() {
    let fanout = Arc::new(Fanout::new(8, usize::MAX));
    let execs_only = fanout.subscribe(&choice(false, None, false));
    let with_exits = fanout.subscribe(&choice(true, None, false));
    fanout.publish(exec(1));
    fanout.publish(exit(1));
    fanout.publish(exec(2));
    fanout.publish(loss(LossSite::Kernel, None));
    let counts = fanout.counts();
    assert_eq!((counts.execs, counts.exits), (2, 1));
    assert_eq!(counts.subscribers, 2);
    // A subscription dropped is unhooked at once, not at the next publish.
    drop(execs_only);
    assert_eq!(fanout.counts().subscribers, 1);
    drop(with_exits);
    assert_eq!(fanout.counts().subscribers, 0);
}

fn comms_filter(comms: &[&str]) -> Arc<crate::stream::selector::Filter> {
    use crate::stream::selector::{Filter, Selector};
    let req = execwatch::proto::WatchRequest {
        comms: comms.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    let selector = Selector::from_request(&req).unwrap().unwrap();
    Arc::new(Filter::new(selector, false))
}

#[test]
fn the_interest_follows_who_is_hooked() {
    let comms = |list: &[&str]| Interest::Comms(list.iter().map(|c| c.to_string()).collect());
    let fanout = Arc::new(Fanout::new(1, usize::MAX));
    assert_eq!(*fanout.interest(), Interest::Nothing);
    let java = fanout.subscribe(&choice(false, Some(comms_filter(&["java"])), false));
    assert_eq!(*fanout.interest(), comms(&["java"]));
    let idea = fanout.subscribe(&choice(true, Some(comms_filter(&["idea"])), false));
    assert_eq!(*fanout.interest(), comms(&["java", "idea"]));
    let all = fanout.subscribe(&choice(false, None, false));
    assert_eq!(*fanout.interest(), Interest::All(ArgvPatterns::NONE));
    // Unhooked for overflowing: out of the interest until it re-subscribes.
    fanout.publish(exec(1));
    fanout.publish(exec(2));
    assert!(all.overflowed());
    assert_eq!(*fanout.interest(), comms(&["java", "idea"]));
    let (again, _) = fanout.resubscribe(&all, &choice(false, None, true));
    assert_eq!(*fanout.interest(), Interest::All(ArgvPatterns::NONE));
    drop((all, again));
    drop(java);
    assert_eq!(*fanout.interest(), comms(&["idea"]));
    drop(idea);
    assert_eq!(*fanout.interest(), Interest::Nothing);
}

#[test]
fn a_skipped_exec_counts_as_one_published_to_nobody() {
    let fanout = Arc::new(Fanout::new(1, usize::MAX));
    let mut java = fanout.subscribe(&choice(false, Some(comms_filter(&["java"])), false));
    let slow = fanout.subscribe(&choice(true, None, false));
    fanout.publish(exec(1));
    fanout.publish(exec(2));
    assert!(slow.overflowed());
    fanout.skip_exec();
    fanout.publish(exit(2));
    assert!(
        java.recv().now_or_never().flatten().is_none(),
        "a skipped exec is sent to nobody"
    );
    assert_eq!(fanout.counts().execs, 3);
    let (_again, missed) = fanout.resubscribe(&slow, &choice(true, None, true));
    // The exec that did not fit, the skipped one and the exit: as many as
    // when the skipped exec was published to nobody.
    assert_eq!(missed.unwrap().events, 3);
}

fn named(pid: i32, comm: &str, start_ticks: u64, renamed: bool) -> Item {
    Item::Exec(Arc::new(Process {
        pid,
        tgid: pid,
        comm: comm.into(),
        start_ticks,
        renamed,
        ..Default::default()
    }))
}

#[test]
fn a_rename_reaches_only_the_subscribers_not_sent_the_process() {
    let fanout = Arc::new(Fanout::new(8, usize::MAX));
    let mut all = fanout.subscribe(&choice(false, None, false));
    let mut java = fanout.subscribe(&choice(false, Some(comms_filter(&["java"])), false));
    fanout.publish(named(7, "launcher", 100, false));
    assert_eq!(pid_of(&all.recv().now_or_never().flatten().unwrap()), 7);
    assert!(java.recv().now_or_never().flatten().is_none());
    // The same process (pid and start) renames itself java.
    fanout.publish(named(7, "java", 100, true));
    assert!(
        all.recv().now_or_never().flatten().is_none(),
        "already sent the process"
    );
    assert!(
        matches!(java.recv().now_or_never(), Some(Some(Item::Exec(p))) if p.renamed && p.comm == "java")
    );
    // Renamed again: java was sent it now.
    fanout.publish(named(7, "java", 100, true));
    assert!(java.recv().now_or_never().flatten().is_none());
    // Another process under the same pid is another process.
    fanout.publish(named(7, "java", 200, true));
    assert!(all.recv().now_or_never().flatten().is_some());
    assert!(java.recv().now_or_never().flatten().is_some());
}

#[test]
fn an_audit_resync_goes_to_its_subscriber_alone() {
    let fanout = Arc::new(Fanout::new(1, usize::MAX));
    let mut missed = fanout.subscribe(&choice(false, None, false));
    let mut other = fanout.subscribe(&choice(false, None, false));
    let id = fanout.ledgers()[0].id;
    let loss = DetectorLoss {
        site: LossSite::Audit,
        reason: "found".into(),
        count: Some(2),
    };
    fanout.resync(id, Arc::new(loss.clone()));
    assert!(
        matches!(missed.recv().now_or_never(), Some(Some(Item::DetectorLost(l))) if *l == loss)
    );
    assert_eq!(missed.ledger().snapshots, 1, "a snapshot follows");
    assert!(other.recv().now_or_never().flatten().is_none());
    assert_eq!(fanout.counts().subscriber_overflows, 0);
    // A full queue: unhooked, it resyncs as after any overflow.
    fanout.publish(exec(1));
    assert!(other.recv().now_or_never().flatten().is_some());
    let id = fanout.ledgers()[0].id;
    fanout.resync(id, Arc::new(loss));
    assert!(missed.overflowed());
    assert_eq!(fanout.counts().subscribers, 1);
}

#[test]
fn an_exit_forgets_its_process_in_every_ledger() {
    let fanout = Arc::new(Fanout::new(8, usize::MAX));
    let execs_only = fanout.subscribe(&choice(false, None, false));
    let with_exits = fanout.subscribe(&choice(true, None, false));
    let sent = |pid| Process {
        pid,
        tgid: pid,
        ..Default::default()
    };
    fanout.publish(exec(1));
    fanout.publish(exec(2));
    fanout.publish(exit(1));
    for sub in [&execs_only, &with_exits] {
        let ledger = sub.ledger();
        assert!(!ledger.sent(&sent(1)), "exited: forgotten");
        assert!(ledger.sent(&sent(2)), "still running");
    }
}
