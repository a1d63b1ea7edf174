//! The reclaimer through an API server outage: a match while the API server
//! is down is written once it is back, and a reclaimer stopped while it
//! waits exits promptly and leaves the write to the next start. A test
//! binary of its own, because it stops the API server that the tests of a
//! binary share (its tests take turns).
#![cfg(target_os = "linux")]

mod support;

use std::time::{Duration, Instant};

use support::apiserver::*;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// Held by each test for its whole run: only one may stop the API server.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_during_an_outage_is_written_exactly_once_when_the_api_server_returns() {
    let _turn = TURN.lock().await;
    let cluster = tokio::task::block_in_place(cluster);
    let prog = UniqueProgram::new("ewoutage");
    let host = HostNode::create("outage", &format!("match_commands = [\"{}\"]\n", prog.name)).await;
    let agent = Agent::start(&[]);
    let reclaimer = host.reclaimer(&agent.socket);
    let wait_log = |needle: &str, times: usize| {
        tokio::task::block_in_place(|| reclaimer.wait_log(needle, times, WAIT))
    };
    wait_log(ARMED, 1);

    // The API server goes away; the owner starts a matching program.
    let down = Instant::now();
    tokio::task::block_in_place(|| cluster.stop_apiserver());
    let running = prog.spawn(120, &[]);
    wait_log("process matched: requesting reclaim", 1);
    wait_log("GET Node failed", 3);
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(down.elapsed())).await;
    assert!(!reclaimer.logs().contains("Node annotated"));

    // It comes back on the same port: the request lands, once.
    tokio::task::block_in_place(|| cluster.start_apiserver());
    let back = Instant::now();
    let reason = format!("process-match: {}", prog.name);
    // Written with its reason and time and one Event; nothing more after.
    host.requested_once(&reason).await;
    eprintln!(
        "written, then quiet for {QUIET:?}, {:?} after the API server was back",
        back.elapsed()
    );
    let logs = reclaimer.logs();
    assert_eq!(
        logs.matches("reclaim requested: Node annotated").count(),
        1,
        "{logs}"
    );
    // A restarted API server may answer 403 for a moment, until its RBAC
    // authorizer has loaded the roles; the reclaimer then waits its recheck
    // interval and matches again. Every match beyond the first must follow
    // such a refusal: none may come from nowhere.
    let refusals = logs.matches("refused: HTTP").count();
    assert_eq!(
        logs.matches("process matched").count(),
        1 + refusals,
        "{logs}"
    );
    stop(running);
}

/// SIGTERM while the reclaimer waits on an API server that is down: it
/// exits within its write grace (2 s), says the write did not land, and the
/// next start finds the still-running process in the agent's snapshot and
/// writes the request, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_on_the_api_server_exits_promptly_and_the_next_start_writes() {
    let _turn = TURN.lock().await;
    let cluster = tokio::task::block_in_place(cluster);
    let prog = UniqueProgram::new("ewstopwait");
    let host = HostNode::create(
        "stopwait",
        &format!("match_commands = [\"{}\"]\n", prog.name),
    )
    .await;
    let agent = Agent::start(&[]);
    let mut reclaimer = host.reclaimer(&agent.socket);
    tokio::task::block_in_place(|| reclaimer.wait_log(ARMED, 1, WAIT));

    tokio::task::block_in_place(|| cluster.stop_apiserver());
    let running = prog.spawn(120, &[]);
    tokio::task::block_in_place(|| {
        reclaimer.wait_log("process matched: requesting reclaim", 1, WAIT);
        reclaimer.wait_log("GET Node failed", 1, WAIT);
    });
    let pid = nix::unistd::Pid::from_raw(reclaimer.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = reclaimer.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "the reclaimer still runs 10 s after SIGTERM:\n{}",
            reclaimer.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = signalled.elapsed();
    eprintln!("the reclaimer exited {took:?} after SIGTERM while the API server was down");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let logs = reclaimer.logs();
    assert!(
        logs.contains("stopping before the Node write landed"),
        "{logs}"
    );
    drop(reclaimer);

    tokio::task::block_in_place(|| cluster.start_apiserver());
    let before = get_node(&host.admin, &host.name).await;
    assert_eq!(
        annotation(&before, "5spot.finos.org/reclaim-requested"),
        None
    );
    let again = host.reclaimer(&agent.socket);
    host.requested_once(&format!("process-match: {}", prog.name))
        .await;
    let logs = again.logs();
    // A restarted API server may answer 403 for a moment, until its RBAC
    // authorizer has loaded the roles; the reclaimer then waits its recheck
    // interval and matches again. Every match beyond the first must follow
    // such a refusal: none may come from nowhere.
    let refusals = logs.matches("refused: HTTP").count();
    assert_eq!(
        logs.matches("process matched").count(),
        1 + refusals,
        "{logs}"
    );
    stop(running);
}
