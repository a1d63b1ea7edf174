//! Loss is never silent: a kernel overflow and a slow subscriber both show up
//! in the stream as `lost`, followed by a resync that still lists what runs.
#![cfg(target_os = "linux")]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use execwatch::proto::{watch_event::Kind, LossSite, SnapshotCause, WatchRequest};
use nix::sys::signal::Signal;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// Runs `n` short processes back to back. Each carries a 300-byte argument:
/// h2 clients (hyper's included) hang up on a peer that buffers many DATA
/// frames under 256 bytes ("too_many_data_frames"), which a stalled test
/// client with a small window would otherwise trip over.
fn storm(n: usize) {
    let pad = "x".repeat(300);
    for _ in 0..n {
        Command::new("true")
            .arg(&pad)
            .stdout(Stdio::null())
            .status()
            .unwrap();
    }
}

#[tokio::test]
async fn kernel_overflow_yields_lost_then_a_resync_with_the_survivor() {
    // A tiny buffer (root may force it below the default) overflows fast.
    let agent = Agent::start(&["--receive-buffer=4096"]);
    let mut stream = agent.watch(WatchRequest::default()).await;
    snapshot(&mut stream).await;

    agent.signal(Signal::SIGSTOP);
    storm(300);
    let prog = UniqueProgram::new("ewsurv");
    let survivor = prog.spawn(30, &[]);
    storm(300);
    agent.signal(Signal::SIGCONT);

    // Other tests' storms may overflow this agent's tiny buffer before the
    // stall too (the kernel sends every agent every event): each marker is
    // followed by a resync, and one after the stall lists the survivor.
    let deadline = std::time::Instant::now() + WAIT;
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (lost, _) = until(&mut stream, left, |ev| {
            matches!(ev.kind, Some(Kind::Lost(_)))
        })
        .await;
        let Some(Kind::Lost(l)) = &lost.kind else {
            unreachable!()
        };
        assert_eq!(l.site(), LossSite::Kernel);
        assert!(!l.count_known, "the kernel does not say how many");
        assert!(l.reason.contains("ENOBUFS"), "{}", l.reason);

        // Right after the marker: a resync snapshot.
        let resync = snapshot(&mut stream).await;
        assert!(resync
            .iter()
            .all(|ev| matches!(ev.kind, Some(Kind::Existing(_)))));
        if resync.iter().any(|ev| is_process(ev, survivor.id(), true)) {
            break true;
        }
        if std::time::Instant::now() >= deadline {
            break false;
        }
    };
    stop(survivor);
    assert!(
        found,
        "a resync after the stall lists the process started during it"
    );

    let stats = agent.stats().await;
    assert!(stats.kernel_overruns >= 1);
    assert!(stats.snapshots >= 2);
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_delay_another_and_learns_what_it_missed() {
    let agent = Agent::start(&["--queue-len=256"]);
    // The stalled one subscribes and then does not read at all for a while.
    let mut stalled = watch_small_window(&agent.socket, live(false)).await;
    let mut reader = agent.watch(live(false)).await;

    // Enough execs to fill the stalled one's queue and HTTP/2 windows.
    let reader_task = tokio::spawn(async move {
        let mut execs = 0;
        loop {
            let ev = next(&mut reader, WAIT).await;
            match ev.kind {
                Some(Kind::Exec(p)) if p.comm.starts_with("ewlast") => return (execs, ev.seq),
                Some(Kind::Exec(_)) => execs += 1,
                other => panic!("the reading subscriber saw {other:?}"),
            }
        }
    });
    tokio::task::spawn_blocking(|| storm(1500)).await.unwrap();
    let prog = UniqueProgram::new("ewlast");
    let last = prog.spawn(30, &[]);
    let (execs, seq) = tokio::time::timeout(WAIT, reader_task)
        .await
        .expect("reader kept up")
        .unwrap();
    assert!(execs >= 1500, "the reader saw every storm exec: {execs}");
    assert_eq!(seq, execs + 1, "and no lost marker");

    // Now the stalled one reads: it finds a `lost` with an exact count, then
    // a resync that includes the still-running last program.
    let (lost, before) = until(&mut stalled, WAIT, |ev| {
        matches!(ev.kind, Some(Kind::Lost(_)))
    })
    .await;
    let Some(Kind::Lost(l)) = &lost.kind else {
        unreachable!()
    };
    assert_eq!(l.site(), LossSite::SubscriberQueue);
    assert!(l.count_known);
    assert!(l.count > 0);
    assert!(
        before.len() as u64 + l.count <= execs + 1 + 64,
        "counts add up"
    );
    let (done, resync) = until(&mut stalled, WAIT, |ev| {
        matches!(ev.kind, Some(Kind::SnapshotComplete(_)))
    })
    .await;
    let Some(Kind::SnapshotComplete(c)) = done.kind else {
        unreachable!()
    };
    assert_eq!(c.cause(), SnapshotCause::Resync);
    assert!(resync.iter().any(|ev| is_process(ev, last.id(), true)));
    stop(last);
    let stats = agent.stats().await;
    assert!(stats.subscriber_overflows >= 1);
}

#[tokio::test]
async fn a_subscriber_that_keeps_falling_behind_is_cut_off_with_a_clear_status() {
    let agent = Agent::start(&["--queue-len=8"]);
    let mut stalled = watch_small_window(&agent.socket, live(false)).await;
    for round in 1..=4 {
        // Stall through a storm, then catch up: each round is one overflow.
        tokio::task::spawn_blocking(|| storm(400)).await.unwrap();
        let outcome = loop {
            match tokio::time::timeout(WAIT, stalled.message())
                .await
                .expect("stream went quiet")
            {
                Ok(Some(ev)) => {
                    if let Some(Kind::SnapshotComplete(c)) = ev.kind {
                        assert_eq!(c.cause(), SnapshotCause::Resync);
                        break Ok(());
                    }
                }
                Ok(None) => panic!("stream ended without a status"),
                Err(status) => break Err(status),
            }
        };
        match (round, outcome) {
            (1..=3, Ok(())) => {}
            (4, Err(status)) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                assert!(status.message().contains("cut off"), "{}", status.message());
            }
            (round, outcome) => panic!("round {round}: {outcome:?}"),
        }
    }
    let stats = agent.stats().await;
    assert_eq!(stats.subscribers_cut_off, 1);
    assert!(stats.subscriber_overflows >= 4);
}
