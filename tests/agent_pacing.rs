//! Under an exec storm the netlink reader coalesces its wake-ups
//! (`--coalesce-above`, `--coalesce`): it wakes far less often than once per
//! exec, and still delivers every launch, in order. (A program that ends
//! before the rest does is published as exited before inspection; the
//! storm's programs live about a millisecond, so the subscribers here take
//! every record rather than select by comm, which such a record lacks.)
#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use execwatch::proto::watch_event::Kind;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// How many times the agent's netlink reading thread has gone to sleep so
/// far (the kernel's count of its voluntary context switches): each one is
/// a wait on the sockets, or a rest, that ended in a wake-up.
fn reader_sleeps(agent: &Agent) -> u64 {
    let task = format!("/proc/{}/task", agent.pid());
    for entry in std::fs::read_dir(&task).unwrap() {
        let dir = entry.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == "netlink-0" {
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let count = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .expect("a voluntary_ctxt_switches line");
            return count.trim().parse().unwrap();
        }
    }
    panic!("no netlink-0 thread under {task}");
}

#[tokio::test]
async fn under_a_storm_the_reader_wakes_once_per_rest_and_every_launch_still_arrives_in_order() {
    // One agent that counts any rate from 50 execs a second as a storm and
    // rests 20 ms, one that never rests: the same storm reaches both.
    let paced = Agent::start(&["--coalesce-above=50", "--coalesce=20ms"]);
    let eager = Agent::start(&["--coalesce-above=0"]);
    let prog = UniqueProgram::new("ewpace");
    let mut streams = [
        paced.watch(live(false)).await,
        eager.watch(live(false)).await,
    ];

    let before = [reader_sleeps(&paced), reader_sleeps(&eager)];
    let path = prog.path.clone();
    let pids = tokio::task::spawn_blocking(move || {
        exec_storm(&path, &["0"], Duration::from_secs(2), u32::MAX)
    })
    .await
    .unwrap();
    // The paced reader's last rest ends within 20 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = [reader_sleeps(&paced), reader_sleeps(&eager)];

    // Every launch of the storm, in the order it was started (other
    // programs the node ran meanwhile come in between).
    let storm: std::collections::HashSet<i32> = pids.iter().map(|&p| p as i32).collect();
    for (stream, name) in streams.iter_mut().zip(["paced", "eager"]) {
        for &pid in &pids {
            let (ev, _) = until(
                stream,
                WAIT,
                |ev| matches!(&ev.kind, Some(Kind::Exec(p)) if storm.contains(&p.pid)),
            )
            .await;
            assert!(
                is_process(&ev, pid, false),
                "{name}: expected the exec of {pid} next of the storm, got {ev:?}"
            );
        }
    }

    let execs = pids.len() as u64;
    let [paced_sleeps, eager_sleeps] = [after[0] - before[0], after[1] - before[1]];
    assert!(
        execs >= 200,
        "the storm was too small to tell: {execs} execs"
    );
    // Without pacing, a wake-up for nearly every exec (and some for the
    // exit sweeps); with it, one per rest (the 10 ms exit sweep cuts a
    // 20 ms rest short): about a hundred a second, whatever the rate.
    assert!(
        eager_sleeps >= execs / 2,
        "the eager reader slept {eager_sleeps} times for {execs} execs"
    );
    assert!(
        paced_sleeps <= execs / 4,
        "the paced reader slept {paced_sleeps} times for {execs} execs (eager: {eager_sleeps})"
    );
}
