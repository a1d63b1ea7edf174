//! Tests of one subscriber's stream in-process, over the real `/proc`: loss
//! and resync after an overflow, the cut-off, and the end on shutdown.

use super::*;
use crate::procfs::bounds::Bounds;
use crate::transport::quota::Quota;
use execwatch::proto::{Process, WatchRequest};
use futures::StreamExt;
use tonic::Code;

/// The shared state of an agent with queues of `queue_len` items, and the
/// switch that stops it.
fn agent(queue_len: usize) -> (watch::Sender<bool>, Arc<Shared>) {
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        fanout: Arc::new(Fanout::new(queue_len, usize::MAX)),
        stats: Arc::new(Totals::new(Default::default())),
        procfs: Arc::new(
            ProcMount::open("/proc", 4096, None, Bounds::new(Duration::from_secs(5), 8)).unwrap(),
        ),
        stop,
        snapshot_reads: tokio::sync::Semaphore::new(2),
    });
    (stop_tx, shared)
}

fn live_only(shared: &Arc<Shared>) -> WatchStream {
    let seat = Quota::new(8, 8).take(None).unwrap();
    let req = WatchRequest {
        skip_snapshot: true,
        ..Default::default()
    };
    let choice = Choice::from_request(&req).unwrap();
    watch(shared.clone(), None, choice, seat)
}

fn exec(pid: i32) -> Item {
    Item::Exec(Arc::new(Process {
        pid,
        tgid: pid,
        ..Default::default()
    }))
}

/// The next item, which must be there; its `seq` must be `seq`.
async fn next_kind(s: &mut WatchStream, seq: &mut u64) -> Kind {
    let event = s.next().await.expect("not ended").expect("no status");
    *seq += 1;
    assert_eq!(event.seq, *seq, "numbered without gaps");
    event.kind.unwrap()
}

#[tokio::test]
async fn a_stream_that_falls_behind_gets_exact_losses_and_resyncs_then_is_cut_off() {
    let (_stop, shared) = agent(2);
    let mut s = live_only(&shared);
    let mut seq = 0;
    for round in 0..4 {
        // A queue of 2: two fit, the third overflows, two more are missed.
        for pid in 1..=5 {
            shared.fanout.publish(exec(round * 10 + pid));
        }
        for pid in 1..=2 {
            match next_kind(&mut s, &mut seq).await {
                Kind::Exec(p) => assert_eq!(p.pid, round * 10 + pid),
                other => panic!("{other:?}"),
            }
        }
        if round == 3 {
            break;
        }
        match next_kind(&mut s, &mut seq).await {
            Kind::Lost(lost) => {
                assert_eq!(lost.site, LossSite::SubscriberQueue as i32);
                assert_eq!((lost.count, lost.count_known), (3, true), "{lost:?}");
            }
            other => panic!("{other:?}"),
        }
        let mut existing = 0;
        loop {
            match next_kind(&mut s, &mut seq).await {
                Kind::Existing(_) => existing += 1,
                Kind::SnapshotComplete(done) => {
                    assert_eq!(done.cause, SnapshotCause::Resync as i32);
                    assert_eq!(done.processes, existing);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(existing > 0, "this test's own process at least");
    }
    // The fourth overflow within the window: cut off with a clear status.
    let end = s.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), Code::ResourceExhausted, "{end}");
    assert!(end.message().contains("cut off"), "{end}");
    assert!(s.next().await.is_none(), "nothing after the status");
    assert_eq!(
        shared
            .stats
            .snapshot(shared.fanout.counts())
            .subscribers_cut_off,
        1
    );
    let counts = shared.fanout.counts();
    assert_eq!((counts.execs, counts.subscriber_overflows), (20, 4));
    drop(s);
    assert_eq!(
        shared.fanout.counts().subscribers,
        0,
        "unhooked when dropped"
    );
}

#[tokio::test]
async fn stopping_ends_a_busy_stream_and_a_waiting_one_with_unavailable() {
    let (stop, shared) = agent(64);
    let mut busy = live_only(&shared);
    for pid in 1..=10 {
        shared.fanout.publish(exec(pid));
    }
    let mut seq = 0;
    assert!(matches!(
        next_kind(&mut busy, &mut seq).await,
        Kind::Exec(_)
    ));
    // Another stream, its queue empty, waits for an item.
    let mut waiting = live_only(&shared);
    let waiter = tokio::spawn(async move {
        let first = waiting.next().await;
        (first, waiting)
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    stop.send(true).unwrap();
    // With 9 items still queued, the busy one ends at once.
    let end = busy.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end}");
    assert!(end.message().contains("agent shutting down"), "{end}");
    assert!(busy.next().await.is_none());
    let (first, mut waiting) = waiter.await.unwrap();
    let end = first.unwrap().unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end}");
    assert!(waiting.next().await.is_none());
}
