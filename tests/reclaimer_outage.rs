//! The reclaimer through an API server outage: a match while the API server
//! is down is written once it is back. A test binary of its own, because it
//! stops the API server that the tests of a binary share.
#![cfg(target_os = "linux")]

mod support;

use std::time::{Duration, Instant};

use support::apiserver::*;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_during_an_outage_is_written_exactly_once_when_the_api_server_returns() {
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
    assert_eq!(logs.matches("process matched").count(), 1, "{logs}");
    stop(running);
}
