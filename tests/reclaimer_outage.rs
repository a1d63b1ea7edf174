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
    let admin = cluster.client().await;
    let id = format!("{:032x}", std::process::id());
    let node = create_node(&admin, "outage", Some(&id))
        .await
        .metadata
        .name
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let machine_id = write_file(dir.path(), "machine-id", &id);
    let kubeconfig = cluster.reclaimer_kubeconfig(dir.path()).await;
    let prog = UniqueProgram::new("ewoutage");
    put_rules(
        &admin,
        &node,
        &format!("match_commands = [\"{}\"]\n", prog.name),
    )
    .await;
    let agent = Agent::start(&[]);
    let reclaimer = Reclaimer::start(
        &[
            "--socket",
            agent.socket.to_str().unwrap(),
            "--node-name",
            &node,
            "--machine-id-file",
            &machine_id,
            "--recheck-interval",
            "500ms",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let wait_log = |needle: &str, times: usize| {
        tokio::task::block_in_place(|| reclaimer.wait_log(needle, times, WAIT))
    };
    wait_log("rules loaded from ConfigMap", 1);
    wait_log("); armed", 1);

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
    let written = eventually("the annotations after the outage", WAIT, || async {
        let n = get_node(&admin, &node).await;
        (annotation(&n, REQUESTED) == Some("true")).then_some(n)
    })
    .await;
    eprintln!("written {:?} after the API server was back", back.elapsed());
    assert_eq!(annotation(&written, REASON), Some(reason.as_str()));
    assert!(annotation(&written, REQUESTED_AT).is_some());
    eventually("the Event after the outage", WAIT, || async {
        (!reclaim_events(&admin, &node).await.is_empty()).then_some(())
    })
    .await;
    // A few recheck intervals more: nothing else may be written.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reclaim_events(&admin, &node).await.len(), 1);
    let after = get_node(&admin, &node).await;
    assert_eq!(
        after.metadata.resource_version,
        written.metadata.resource_version
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
