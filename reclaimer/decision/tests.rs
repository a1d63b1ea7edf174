//! Unit tests of the decision loop's state machine, with a fake Node behind
//! the [`NodeWriter`] seam and tokio's paused clock: no cluster, no agent,
//! milliseconds per test. The end-to-end tests prove the wiring.

use std::sync::{Arc, Mutex};

use execwatch::proto::{Exit, Lost, SnapshotComplete, WatchEvent};

use super::*;
use crate::node::reclaim_request::Request;
use crate::node::writer::{DryRun, Job};

const RECHECK: Duration = Duration::from_secs(10);
const JAVA: &str = r#"match_commands = ["java"]"#;
const BASH: &str = r#"match_commands = ["bash"]"#;

// ---- a fake Node -----------------------------------------------------------

/// What the fake Node holds and what was asked of it.
#[derive(Default)]
struct NodeState {
    /// `reclaim-requested` is `"true"` (the controller clears it).
    requested: bool,
    /// Writes are refused (e.g. the host-id check fails).
    refuse: bool,
    /// How long a write takes.
    write_delay: Duration,
    /// The pid of every request made, in order.
    requests: Vec<i32>,
    /// Writes that landed.
    patches: usize,
    /// Re-reads started.
    reads: usize,
}

/// A Node in memory; clones share it.
#[derive(Clone, Default)]
struct FakeNode(Arc<Mutex<NodeState>>);

impl FakeNode {
    fn with<T>(&self, f: impl FnOnce(&mut NodeState) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

impl NodeWriter for FakeNode {
    fn holds_requests(&self) -> bool {
        true
    }

    fn request(&self, req: Request) -> Sent {
        let node = self.clone();
        Sent::Pending(Box::pin(async move {
            let delay = node.with(|n| n.write_delay);
            tokio::time::sleep(delay).await;
            node.with(|n| {
                n.requests.push(req.pid);
                if n.refuse {
                    return Err(NodeError::HostMismatch {
                        node: "ws-1".into(),
                        host: "a".into(),
                        path: "/etc/machine-id".into(),
                        found: "b".into(),
                    });
                }
                if n.requested {
                    return Ok(Outcome::AlreadyRequested);
                }
                n.requested = true;
                n.patches += 1;
                Ok(Outcome::Written)
            })
        }))
    }

    fn requested(&self) -> Job<bool> {
        let requested = self.with(|n| {
            n.reads += 1;
            n.requested
        });
        Box::pin(std::future::ready(Ok(requested)))
    }
}

// ---- fixtures ----------------------------------------------------------------

fn decider(writer: impl NodeWriter + 'static) -> Decider {
    let settings = Settings {
        recheck: RECHECK,
        log_argv: false,
        status_file: None,
    };
    Decider::new(Box::new(writer), settings, Arc::new(Metrics::new()))
}

fn rules(toml: &str) -> Rules {
    Rules::parse(toml).unwrap()
}

fn process(pid: i32, comm: &str) -> Process {
    Process {
        pid,
        tgid: pid,
        comm: comm.into(),
        start_ticks: pid as u64,
        ..Default::default()
    }
}

fn event(kind: Kind) -> LinkEvent {
    LinkEvent::Event(Box::new(WatchEvent {
        seq: 0,
        kind: Some(kind),
    }))
}

fn exec(pid: i32, comm: &str) -> LinkEvent {
    event(Kind::Exec(process(pid, comm)))
}

fn existing(pid: i32, comm: &str) -> LinkEvent {
    event(Kind::Existing(process(pid, comm)))
}

fn exit(pid: i32) -> LinkEvent {
    event(Kind::Exit(Exit {
        pid,
        tgid: pid,
        ..Default::default()
    }))
}

fn snapshot_complete() -> LinkEvent {
    event(Kind::SnapshotComplete(SnapshotComplete::default()))
}

fn lost() -> LinkEvent {
    event(Kind::Lost(Lost {
        reason: "test".into(),
        ..Default::default()
    }))
}

/// Applies the next result of a background job, as the loop would.
async fn settle(d: &mut Decider) {
    let job = d.jobs.join_next().await.expect("a job result").unwrap();
    d.on_job(job);
}

/// A periodic check: re-read the Node and apply what it says.
async fn recheck(d: &mut Decider) {
    d.on_tick();
    settle(d).await;
}

/// A decider on `node` that has read the Node once (no request on it) and
/// holds the java rules: armed.
async fn armed(node: &FakeNode) -> Decider {
    let mut d = decider(node.clone());
    recheck(&mut d).await;
    d.on_rules(rules(JAVA));
    assert_eq!(d.state, State::Idle);
    d
}

// ---- the tests -------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_real_node_is_read_before_anything_fires() {
    let node = FakeNode::default();
    node.with(|n| n.requested = true); // written before a restart
    let mut d = decider(node.clone());
    assert_eq!(d.state, State::Requested);
    d.on_rules(rules(JAVA));
    d.on_link(exec(10, "java"));
    recheck(&mut d).await;
    assert_eq!(d.state, State::Requested, "the request on the Node stands");
    assert_eq!(node.with(|n| (n.reads, n.requests.len())), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn arms_then_fires_once_for_a_match() {
    let node = FakeNode::default();
    let mut d = armed(&node).await;
    d.on_link(exec(9, "bash"));
    assert_eq!(d.state, State::Idle, "bash does not match");
    d.on_link(exec(10, "java"));
    assert_eq!(d.state, State::Writing);
    d.on_link(exec(11, "java"));
    settle(&mut d).await;
    assert_eq!(d.state, State::Requested);
    d.on_link(exec(12, "java"));
    assert_eq!(
        node.with(|n| (n.requests.clone(), n.patches)),
        (vec![10], 1)
    );
    assert_eq!(d.metrics.matches.get(), 1);
    assert_eq!(d.metrics.events.get(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_request_already_on_the_node_is_left_as_it_is() {
    let node = FakeNode::default();
    let mut d = armed(&node).await;
    node.with(|n| n.requested = true); // someone else wrote it meanwhile
    d.on_link(exec(10, "java"));
    settle(&mut d).await;
    assert_eq!(d.state, State::Requested);
    assert_eq!(node.with(|n| (n.requests.len(), n.patches)), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn cleared_by_the_controller_it_fires_again_for_a_match_still_running() {
    let node = FakeNode::default();
    let mut d = armed(&node).await;
    d.on_link(exec(10, "java"));
    settle(&mut d).await;
    recheck(&mut d).await;
    assert_eq!(d.state, State::Requested, "still on the Node");

    node.with(|n| n.requested = false); // the controller cleared it
    recheck(&mut d).await;
    assert_eq!(d.state, State::Writing, "java 10 still runs");
    settle(&mut d).await;
    assert_eq!(d.state, State::Requested);
    assert_eq!(
        node.with(|n| (n.requests.clone(), n.patches)),
        (vec![10, 10], 2)
    );

    // Cleared again after java ended: armed, and the next java fires.
    d.on_link(exit(10));
    assert_eq!(
        d.state,
        State::Requested,
        "a real Node's request outlives the process"
    );
    node.with(|n| n.requested = false);
    recheck(&mut d).await;
    assert_eq!(d.state, State::Idle);
    d.on_link(exec(20, "java"));
    settle(&mut d).await;
    assert_eq!(node.with(|n| n.requests.clone()), vec![10, 10, 20]);
}

#[tokio::test(start_paused = true)]
async fn one_read_of_the_node_at_a_time() {
    let node = FakeNode::default();
    let mut d = decider(node.clone());
    d.on_tick();
    d.on_tick();
    assert_eq!(node.with(|n| n.reads), 1, "a check is in flight");
    settle(&mut d).await;
    assert_eq!(d.state, State::Idle);
    d.on_tick();
    assert_eq!(node.with(|n| n.reads), 1, "armed: nothing to re-read");
}

#[tokio::test(start_paused = true)]
async fn a_resync_forgets_what_its_snapshot_does_not_list() {
    let node = FakeNode::default();
    let mut d = armed(&node).await;
    d.on_link(LinkEvent::Connected);
    d.on_link(existing(10, "java"));
    d.on_link(snapshot_complete());
    settle(&mut d).await;

    // java 10 ended while events were lost: the resync does not list it.
    d.on_link(lost());
    d.on_link(existing(11, "bash"));
    assert_eq!(
        d.table.len(),
        2,
        "nothing is swept before snapshot_complete"
    );
    d.on_link(snapshot_complete());
    assert_eq!(d.table.len(), 1);
    assert_eq!(d.metrics.lost_markers.get(), 1);

    node.with(|n| n.requested = false);
    recheck(&mut d).await;
    assert_eq!(d.state, State::Idle, "no java runs: nothing to fire");
    assert_eq!(node.with(|n| n.requests.clone()), vec![10]);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_ends_before_snapshot_complete_sweeps_nothing() {
    let node = FakeNode::default();
    let mut d = armed(&node).await;
    d.on_link(exec(10, "java"));
    settle(&mut d).await;

    d.on_link(lost());
    d.on_link(existing(11, "bash"));
    d.on_link(LinkEvent::Disconnected);
    d.on_link(LinkEvent::Connected);
    d.on_link(existing(12, "bash"));
    d.on_link(LinkEvent::Disconnected);
    assert_eq!(d.table.len(), 3, "java 10 is still known");

    node.with(|n| n.requested = false);
    recheck(&mut d).await;
    settle(&mut d).await;
    assert_eq!(node.with(|n| n.requests.clone()), vec![10, 10]);
}

#[tokio::test(start_paused = true)]
async fn dry_run_holds_a_request_while_a_match_runs() {
    let mut d = decider(DryRun {
        node: "ws-1".into(),
    });
    assert_eq!(d.state, State::Idle, "no Node to read first");
    d.on_rules(rules(JAVA));
    d.on_link(exec(10, "java"));
    assert_eq!(d.state, State::Requested, "logged at once, no job");
    d.on_link(exec(11, "java"));
    d.on_link(exit(10));
    assert_eq!(d.state, State::Requested, "java 11 still runs");
    d.on_link(exit(99));
    assert_eq!(d.state, State::Requested);
    d.on_tick();
    assert!(d.jobs.is_empty(), "no Node to re-read");
    d.on_link(exit(11));
    assert_eq!(d.state, State::Idle, "released: no java runs");
    assert_eq!(d.metrics.matches.get(), 1);

    d.on_link(exec(12, "java"));
    assert_eq!(d.state, State::Requested);
    assert_eq!(d.metrics.matches.get(), 2);
    // A resync that no longer lists java 12 releases too.
    d.on_link(lost());
    d.on_link(existing(13, "bash"));
    assert_eq!(d.state, State::Requested);
    d.on_link(snapshot_complete());
    assert_eq!(d.state, State::Idle);
}

#[tokio::test(start_paused = true)]
async fn new_rules_apply_to_what_runs() {
    let node = FakeNode::default();
    let mut d = decider(node.clone());
    recheck(&mut d).await;
    d.on_link(exec(10, "java"));
    d.on_link(exec(11, "bash"));
    assert_eq!(d.state, State::Idle, "inert until rules arrive");

    d.on_rules(rules(BASH));
    assert_eq!(d.state, State::Writing, "bash already runs");
    d.on_rules(rules(JAVA));
    settle(&mut d).await;
    assert_eq!(
        node.with(|n| n.requests.clone()),
        vec![11],
        "not while writing"
    );

    // Made inert, then cleared by the controller: nothing fires.
    d.on_rules(Rules::inert());
    node.with(|n| n.requested = false);
    recheck(&mut d).await;
    assert_eq!(d.state, State::Idle);
    d.on_link(exec(12, "java"));
    assert_eq!(d.state, State::Idle);

    // Armed again: the earliest-started match fires.
    d.on_rules(rules(JAVA));
    settle(&mut d).await;
    assert_eq!(node.with(|n| n.requests.clone()), vec![11, 10]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_write_is_retried_after_the_interval() {
    let node = FakeNode::default();
    let mut d = armed(&node).await;
    node.with(|n| n.refuse = true);
    d.on_link(exec(10, "java"));
    settle(&mut d).await;
    assert!(matches!(d.state, State::Blocked { .. }));
    d.on_link(exec(11, "java"));
    tokio::time::advance(RECHECK - Duration::from_millis(1)).await;
    d.on_tick();
    assert!(
        matches!(d.state, State::Blocked { .. }),
        "not before the interval"
    );
    assert_eq!(node.with(|n| n.reads), 1, "a blocked decider does not read");

    tokio::time::advance(Duration::from_millis(1)).await;
    d.on_tick();
    assert_eq!(d.state, State::Writing, "retried");
    settle(&mut d).await;
    assert!(matches!(d.state, State::Blocked { .. }), "refused again");

    node.with(|n| n.refuse = false);
    tokio::time::advance(RECHECK).await;
    d.on_tick();
    settle(&mut d).await;
    assert_eq!(d.state, State::Requested);
    assert_eq!(
        node.with(|n| (n.requests.clone(), n.patches)),
        (vec![10, 10, 10], 1)
    );
}

/// Runs a decider on `node` with the java rules and one java process, and
/// stops it 100 ms in; returns how long the loop took to stop.
async fn stop_while_writing(node: &FakeNode) -> Duration {
    let (link_tx, link_rx) = mpsc::channel(8);
    let (rules_tx, rules_rx) = mpsc::channel(1);
    rules_tx.send(rules(JAVA)).await.unwrap();
    link_tx.send(exec(10, "java")).await.unwrap();
    let start = Instant::now();
    let shutdown = tokio::time::sleep(Duration::from_millis(100));
    decider(node.clone()).run(link_rx, rules_rx, shutdown).await;
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_stop_waits_for_the_write_in_flight() {
    let node = FakeNode::default();
    node.with(|n| n.write_delay = Duration::from_secs(1));
    let took = stop_while_writing(&node).await;
    assert_eq!(
        took,
        Duration::from_secs(1),
        "stopped once the write landed"
    );
    assert_eq!(node.with(|n| n.patches), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stop_waits_at_most_the_write_grace() {
    let node = FakeNode::default();
    node.with(|n| n.write_delay = Duration::from_secs(60));
    let took = stop_while_writing(&node).await;
    assert_eq!(took, Duration::from_millis(100) + WRITE_GRACE);
    assert_eq!(node.with(|n| n.patches), 0);
}

#[test]
fn the_dry_run_log_and_the_real_patch_share_one_body() {
    let at = "2026-01-02T03:04:05Z";
    let body = |rv| reclaim_request::merge_patch("process-match: java", at, rv).to_string();
    let annotations = r#""annotations":{"5spot.finos.org/reclaim-reason":"process-match: java","5spot.finos.org/reclaim-requested":"true","5spot.finos.org/reclaim-requested-at":"2026-01-02T03:04:05Z"}"#;
    assert_eq!(body(None), format!(r#"{{"metadata":{{{annotations}}}}}"#));
    assert_eq!(
        body(Some("42")),
        format!(r#"{{"metadata":{{{annotations},"resourceVersion":"42"}}}}"#)
    );
}
