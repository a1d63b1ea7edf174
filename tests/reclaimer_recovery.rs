//! The reclaimer recovers from faults between the kernel and its Node, end
//! to end: the real agent on real kernel events, the real reclaimer, the
//! real API server. In each test a matching program starts while a link of
//! the chain is broken (the kernel drops events, the agent is dead, the
//! reclaimer is stopped) and keeps running; once the chain is whole again
//! the Node gets its request exactly once, with exactly one Event.
//!
//! One API server for the binary; every test has its own Node, rules
//! ConfigMap, agent and reclaimer.
#![cfg(target_os = "linux")]

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::apiserver::*;
use support::*;

/// Deadline for anything that should happen.
const WAIT: Duration = Duration::from_secs(30);
const MATCHED: &str = "process matched: requesting reclaim";
const WRITTEN: &str = "reclaim requested: Node annotated";
const LOST: &str = "the agent lost events; resyncing from its snapshot";

/// Waits for `needle` in the log, `times` times, without holding up the runtime.
fn wait_log(r: &Reclaimer, needle: &str, times: usize) -> String {
    tokio::task::block_in_place(|| r.wait_log(needle, times, WAIT))
}

/// Asserts that `log` says `needle` exactly `times` times.
fn logged(log: &str, needle: &str, times: usize) {
    let seen = log.matches(needle).count();
    assert_eq!(
        seen, times,
        "{needle:?} logged {seen} times, not {times}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_started_while_the_kernel_drops_events_fires_from_the_resync_once() {
    let prog = UniqueProgram::new("ewkloss");
    let node = HostNode::create("kloss", &prog.rules()).await;
    // Root may force a tiny netlink buffer (the kernel doubles the 4096
    // bytes asked for): a few dozen messages fill it.
    let agent = Agent::start(&["--receive-buffer=4096"]);
    let reclaimer = node.reclaimer(&agent.socket);
    wait_log(&reclaimer, ARMED, 1);

    // The agent stalls for a few seconds while execs pour in: its socket
    // overflows long before the program starts, so the kernel drops the
    // program's exec event.
    agent.signal(Signal::SIGSTOP);
    let stall = Instant::now();
    let half = Duration::from_millis(1500);
    let storm = || exec_storm(&which("true"), &[], half, u32::MAX).len();
    let mut execs = tokio::task::block_in_place(storm);
    let running = prog.spawn(120, &[]);
    wait_exec(running.id(), &prog.name);
    execs += tokio::task::block_in_place(storm);
    agent.signal(Signal::SIGCONT);
    eprintln!("agent stopped {:?} during {execs} execs", stall.elapsed());

    let log = wait_log(&reclaimer, LOST, 1);
    assert!(log.contains("ENOBUFS"), "a kernel loss:\n{log}");
    let stats = agent.stats().await;
    assert!(stats.kernel_overruns >= 1, "{stats:?}");
    node.requested_once(&prog.reason()).await;

    let log = reclaimer.logs();
    logged(&log, MATCHED, 1);
    logged(&log, WRITTEN, 1);
    // The match came from the resync that followed the marker: the exec
    // event itself was dropped with the rest.
    assert!(
        log.find(LOST) < log.find(MATCHED),
        "matched before the lost marker:\n{log}"
    );
    stop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_started_while_the_agent_is_dead_fires_once_it_is_back() {
    let prog = UniqueProgram::new("ewacrash");
    let node = HostNode::create("acrash", &prog.rules()).await;
    let mut agent = Agent::start(&[]);
    let reclaimer = node.reclaimer(&agent.socket);
    wait_log(&reclaimer, ARMED, 1);

    // The agent crashes; the reclaimer notices and finds nobody to talk to.
    agent.kill();
    wait_log(&reclaimer, "lost the agent stream", 1);
    wait_log(&reclaimer, "cannot reach the agent", 1);
    let running = prog.spawn(120, &[]);
    wait_exec(running.id(), &prog.name);
    // A few more attempts fail while it stays down; nothing matches.
    wait_log(&reclaimer, "still cannot reach the agent", 2);
    assert!(!reclaimer.logs().contains(MATCHED), "{}", reclaimer.logs());

    // It comes back on the same socket (the dead one's file is still there).
    tokio::task::block_in_place(|| agent.restart());
    wait_log(&reclaimer, "connected to the agent", 2);
    node.requested_once(&prog.reason()).await;

    let log = reclaimer.logs();
    logged(&log, MATCHED, 1);
    logged(&log, WRITTEN, 1);
    logged(&log, "connected to the agent", 2);
    logged(&agent.logs(), "serving", 2);
    stop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_started_while_the_reclaimer_is_stopped_fires_once_it_is_back() {
    let prog = UniqueProgram::new("ewrstop");
    let node = HostNode::create("rstop", &prog.rules()).await;
    let agent = Agent::start(&[]);
    let first = node.reclaimer(&agent.socket);
    wait_log(&first, ARMED, 1);
    let status = tokio::task::block_in_place(|| first.terminate());
    assert!(status.success(), "the reclaimer stops cleanly: {status}");
    eventually("the agent dropped the subscriber", WAIT, || async {
        (agent.stats().await.subscribers == 0).then_some(())
    })
    .await;

    let running = prog.spawn(120, &[]);
    wait_exec(running.id(), &prog.name);
    let second = node.reclaimer(&agent.socket);
    let written = node.requested_once(&prog.reason()).await;
    let log = second.logs();
    logged(&log, ARMED, 1);
    logged(&log, MATCHED, 1);
    logged(&log, WRITTEN, 1);

    // Restarted once more, with the request on the Node and the program
    // still running: it leaves the request as it is.
    let status = tokio::task::block_in_place(|| second.terminate());
    assert!(status.success(), "the reclaimer stops cleanly: {status}");
    let third = node.reclaimer(&agent.socket);
    // Its snapshot lists the program; its first read finds the request.
    wait_log(&third, "snapshot complete", 1);
    node.unchanged_since(&written).await;
    let log = third.logs();
    logged(&log, ARMED, 0);
    logged(&log, MATCHED, 0);
    stop(running);
}
