//! Under an exec storm the netlink reader coalesces its wake-ups
//! (`--coalesce-above`, `--coalesce`): it wakes far less often than once per
//! exec, and still delivers every launch, in order. (A program that ends
//! before the rest does is published as exited before inspection; the
//! storm's programs live about a millisecond, so the subscribers here take
//! every record rather than select by comm, which such a record lacks.)
#![cfg(target_os = "linux")]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use execwatch::proto::{watch_event::Kind, WatchEvent};
use support::*;
use tonic::Streaming;

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

/// The tests storm one at a time: each agent sees every exec on the node,
/// and one test's storm would pace the other's agent.
static ONE_STORM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Spawner threads of the storm: one alone reaches a few hundred execs a
/// second on a loaded CI machine, too few to tell the readers apart.
const SPAWNERS: usize = 3;

/// Reads `stream` until every launch in `spawned` (one list per spawner,
/// in the order it started them) has arrived, and asserts each arrived
/// once and in its spawner's order (spawners' launches interleave, and
/// other programs the node ran meanwhile come in between). Returns how
/// many there were.
async fn assert_arrive_in_order(
    stream: &mut Streaming<WatchEvent>,
    name: &str,
    spawned: &[Vec<u32>],
) -> u64 {
    let storm: HashMap<i32, (usize, usize)> = spawned
        .iter()
        .enumerate()
        .flat_map(|(s, pids)| {
            pids.iter()
                .enumerate()
                .map(move |(i, &p)| (p as i32, (s, i)))
        })
        .collect();
    let mut next = vec![0; spawned.len()];
    for _ in 0..storm.len() {
        let (ev, _) = until(
            stream,
            WAIT,
            |ev| matches!(&ev.kind, Some(Kind::Exec(p)) if storm.contains_key(&p.pid)),
        )
        .await;
        let Some(Kind::Exec(p)) = &ev.kind else {
            unreachable!()
        };
        let (s, i) = storm[&p.pid];
        assert_eq!(
            i, next[s],
            "{name}: pid {} is launch {i} of spawner {s}, expected launch {}",
            p.pid, next[s]
        );
        next[s] += 1;
    }
    storm.len() as u64
}

#[tokio::test]
async fn under_a_storm_the_reader_wakes_once_per_rest_and_every_launch_still_arrives_in_order() {
    let _alone = ONE_STORM.lock().await;
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
    let started = Instant::now();
    let path = prog.path.clone();
    let spawned: Vec<Vec<u32>> = tokio::task::spawn_blocking(move || {
        let spawners: Vec<_> = (0..SPAWNERS)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    exec_storm(&path, &["0"], Duration::from_secs(2), u32::MAX)
                })
            })
            .collect();
        spawners.into_iter().map(|s| s.join().unwrap()).collect()
    })
    .await
    .unwrap();
    // The paced reader's last rest ends within 20 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = [reader_sleeps(&paced), reader_sleeps(&eager)];
    let seconds = started.elapsed().as_secs_f64();

    let [paced_stream, eager_stream] = &mut streams;
    let execs = assert_arrive_in_order(paced_stream, "paced", &spawned).await;
    assert_arrive_in_order(eager_stream, "eager", &spawned).await;

    let [paced_sleeps, eager_sleeps] = [after[0] - before[0], after[1] - before[1]];
    // Without pacing, a wake-up for nearly every exec (and some for the
    // exit sweeps); with it, one per rest (the 10 ms exit sweep cuts a
    // 20 ms rest short): about a hundred a second, whatever the rate
    // (220 in 2.2 s, whether the storm ran 1,228 execs or 2,462).
    let paced_limit = (150.0 * seconds) as u64;
    assert!(
        execs >= 2 * paced_limit,
        "the storm was too slow to tell the readers apart: {execs} execs in {seconds:.1} s"
    );
    assert!(
        eager_sleeps >= execs / 2,
        "the eager reader slept {eager_sleeps} times for {execs} execs"
    );
    assert!(
        paced_sleeps <= paced_limit,
        "the paced reader slept {paced_sleeps} times in {seconds:.1} s for {execs} execs (eager: {eager_sleeps})"
    );
}

#[tokio::test]
async fn without_the_kernel_filter_only_execs_count_towards_a_storm() {
    let _alone = ONE_STORM.lock().await;
    // Unfiltered, the socket carries a fork, an exec and an exit per
    // launch: 200 launches a second are some 600 events, but only 200
    // execs, under the threshold of 400.
    let agent = Agent::start(&[
        "--kernel-filter=off",
        "--coalesce-above=400",
        "--coalesce=20ms",
    ]);
    let prog = UniqueProgram::new("ewnofl");
    let mut stream = agent.watch(live(false)).await;

    let before = reader_sleeps(&agent);
    let path = prog.path.clone();
    let pids =
        tokio::task::spawn_blocking(move || exec_storm(&path, &["0"], Duration::from_secs(2), 200))
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sleeps = reader_sleeps(&agent) - before;

    let execs = assert_arrive_in_order(&mut stream, "unfiltered", &[pids]).await;
    // Not paced: the reader woke for about every event (paced, it would
    // have slept about 50 times a second).
    assert!(
        sleeps >= execs,
        "the reader slept {sleeps} times for {execs} execs: it paced itself"
    );
}
