//! The audit against the kernel's silent drops: the agent built with the
//! test-only `failpoints` feature drops the execs of one comm before
//! publication (`FAILPOINTS=drop-exec=return(<comm>)`, as the kernel drops
//! an event it cannot allocate: no trace at all), and the audit must still
//! deliver that process while it runs; with nothing dropped, the audit must
//! send nothing twice.
#![cfg(target_os = "linux")]

mod support;

use std::sync::Once;
use std::time::{Duration, Instant};

use execwatch::proto::watch_event::Kind;
use execwatch::proto::{LossSite, SnapshotCause, WatchEvent, WatchRequest};
use support::*;

/// The comm whose execs the agent drops in every test here.
const DROPPED: &str = "ewaudit-drop";
/// The audit's interval in these tests.
const INTERVAL: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(15);

/// One test at a time: every agent here drops [`DROPPED`], so a launch of
/// it in one test is a real miss for the other's agent too.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An agent that drops every exec of [`DROPPED`] and audits every
/// [`INTERVAL`].
fn agent() -> Agent {
    static ENV: Once = Once::new();
    // The agent inherits it; the same value for every test of this binary.
    ENV.call_once(|| std::env::set_var("FAILPOINTS", format!("drop-exec=return({DROPPED})")));
    Agent::start(&[&format!("--audit-interval={}ms", INTERVAL.as_millis())])
}

#[tokio::test]
async fn a_dropped_launch_still_reaches_its_subscriber_and_the_reclaimer() {
    let _serial = SERIAL.lock().await;
    let agent = agent();
    let prog = UniqueProgram::named(DROPPED);
    let dir = world_readable_tempdir();
    let rules = rules_for(dir.path(), "rules.toml", &prog, "");
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[]);
    reclaimer.wait_log("snapshot complete", 1, WAIT);
    let req = WatchRequest {
        comms: vec![DROPPED.into()],
        ..Default::default()
    };
    let mut stream = agent.watch(req).await;
    let (_, first) = until(&mut stream, WAIT, |ev| {
        matches!(ev.kind, Some(Kind::SnapshotComplete(_)))
    })
    .await;
    assert!(
        first.is_empty(),
        "nothing named {DROPPED} ran yet: {first:?}"
    );

    let launched = Instant::now();
    let child = prog.spawn(30, &[]);
    let pid = child.id();
    // No exec: it was dropped. The audit's `lost`, then a resync that
    // lists it.
    let ev = next(&mut stream, WAIT).await;
    let found = launched.elapsed();
    let Some(Kind::Lost(lost)) = &ev.kind else {
        panic!("expected the audit's lost, got {ev:?}");
    };
    assert_eq!(lost.site, LossSite::Audit as i32, "{lost:?}");
    assert_eq!((lost.count, lost.count_known), (1, true), "{lost:?}");
    let (done, resync) = until(&mut stream, WAIT, |ev| {
        matches!(ev.kind, Some(Kind::SnapshotComplete(_)))
    })
    .await;
    assert!(
        matches!(done.kind, Some(Kind::SnapshotComplete(c)) if c.cause == SnapshotCause::Audit as i32),
        "{done:?}"
    );
    assert_eq!(resync.len(), 1, "{resync:?}");
    assert!(is_process(&resync[0], pid, true), "{resync:?}");
    // Found within one interval of the launch, and a scan (generous bound:
    // the machine may be busy).
    assert!(
        found < INTERVAL + Duration::from_secs(2),
        "found after {found:?}"
    );

    let logs = reclaimer.wait_log("dry-run: would merge-PATCH", 1, WAIT);
    assert!(logs.contains(&prog.reason()), "{logs}");
    assert!(logs.contains(&format!("pid={pid}")), "{logs}");
    let stats = agent.stats().await;
    assert!(stats.audits >= 1 && stats.audit_found >= 2, "{stats:?}");
    stop(child);
}

#[tokio::test]
async fn with_nothing_dropped_the_audit_sends_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let agent = agent();
    let prog = UniqueProgram::new("ewaudit");
    let filtered = WatchRequest {
        comms: vec![prog.name.clone()],
        ..Default::default()
    };
    let mut filtered = agent.watch(filtered).await;
    let mut everything = agent.watch(WatchRequest::default()).await;
    for stream in [&mut filtered, &mut everything] {
        until(stream, WAIT, |ev| {
            matches!(ev.kind, Some(Kind::SnapshotComplete(_)))
        })
        .await;
    }
    let audits = agent.stats().await.audits;
    let child = prog.spawn(30, &[]);
    let pid = child.id();
    // Both streams read throughout (an unfiltered one gets every launch on
    // the machine), over at least four audits while the process runs.
    let end = tokio::time::Instant::now() + INTERVAL * 5 + Duration::from_secs(1);
    let (filtered, everything) =
        tokio::join!(collect(&mut filtered, end), collect(&mut everything, end));
    assert!(agent.stats().await.audits >= audits + 4);
    let mut got = Vec::new();
    for items in [filtered, everything] {
        let lost: Vec<_> = items
            .iter()
            .filter(|ev| matches!(ev.kind, Some(Kind::Lost(_))))
            .collect();
        assert!(
            lost.is_empty(),
            "nothing was dropped: {lost:?}\n{}",
            agent.logs()
        );
        let sent = items
            .iter()
            .filter(|ev| is_process(ev, pid, false) || is_process(ev, pid, true))
            .count();
        got.push(sent);
    }
    assert_eq!(got, [1, 1], "each stream got its exec once");
    let stats = agent.stats().await;
    assert_eq!(stats.audit_found, 0, "{stats:?}");
    stop(child);
}

/// Everything `stream` sends until `end`.
async fn collect(
    stream: &mut tonic::Streaming<WatchEvent>,
    end: tokio::time::Instant,
) -> Vec<WatchEvent> {
    let mut items = Vec::new();
    while let Ok(Ok(Some(ev))) = tokio::time::timeout_at(end, stream.message()).await {
        items.push(ev);
    }
    items
}
