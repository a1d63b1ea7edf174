//! Many, vanishing and stalled subscribers against the real agent: every
//! subscriber that reads gets every exec, the agent's memory stays bounded,
//! and `GetStats.subscribers` follows the connections as they come and go.
//!
//! The tests run one at a time: every agent sees every exec on the host, so
//! one test's storm would land in another's subscribers.
#![cfg(target_os = "linux")]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use execwatch::proto::{watch_event::Kind, WatchEvent, WatchRequest};
use support::*;
use tonic::Streaming;

/// Deadline for anything that should happen.
const WAIT: Duration = Duration::from_secs(30);
/// The agent's peak resident memory must stay under this.
const MAX_HWM_KIB: u64 = 64 * 1024;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A field of /proc/<pid>/status in KiB (`VmHWM`, `VmRSS`).
fn vm_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits until the agent's counters satisfy `ok`; `what` names the wait.
async fn stats_until(agent: &Agent, what: &str, ok: impl Fn(&execwatch::proto::Stats) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = agent.stats().await;
        if ok(&now) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not {what} after {WAIT:?}: {} connected, {} accepted in all:\n{}",
            now.subscribers,
            now.subscribers_total,
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the agent counts `n` connected subscribers.
async fn subscribers(agent: &Agent, n: u64) {
    stats_until(agent, &format!("{n} connected"), |s| s.subscribers == n).await;
}

/// Waits until the agent has accepted `n` Watch calls in all. Unlike the
/// connected count, this does not drop when a stalled subscriber's queue
/// overflows (other launches on a busy machine fill it).
async fn accepted(agent: &Agent, n: u64) {
    stats_until(agent, &format!("{n} accepted"), |s| {
        s.subscribers_total >= n
    })
    .await;
}

/// The agent answers its health check (as root).
fn healthy(agent: &Agent) {
    let out = health_check_as(&agent.socket, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SERVING"),
        "health check: {}{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `prog` (a copy of `sleep`) `n` times back to back with a zero
/// duration padded to `pad` bytes (`000…0`, still zero seconds), so each
/// exec event carries a `pad`-byte argument. Returns the pids, in order.
fn storm(prog: &UniqueProgram, n: usize, pad: usize) -> Vec<u32> {
    let zero = "0".repeat(pad.max(1));
    (0..n)
        .map(|_| run(Command::new(&prog.path).arg(&zero)))
        .collect()
}

/// Runs `cmd` to completion; returns its pid.
fn run(cmd: &mut Command) -> u32 {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    for _ in 0..100 {
        match cmd.spawn() {
            // Another thread's fork may hold the fresh copy's write descriptor.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
            Ok(mut child) => {
                let pid = child.id();
                child.wait().unwrap();
                return pid;
            }
        }
    }
    panic!("{cmd:?} stayed busy (ETXTBSY)")
}

/// Reads `stream` until the exec of a program called `last`; asserts no
/// `lost` marker and contiguous sequence numbers on the way. Returns the
/// pids of every exec before it, in order. (Matching the storm's own execs
/// by pid, not comm: a process that is gone before the agent reads its
/// /proc entry is reported by pid alone.)
async fn execs_until(
    stream: &mut Streaming<WatchEvent>,
    last: &str,
    timeout: Duration,
) -> Vec<u32> {
    let (_, before) = until(
        stream,
        timeout,
        |ev| matches!(&ev.kind, Some(Kind::Exec(p)) if p.comm == last),
    )
    .await;
    for pair in before.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "hole in sequence numbers");
    }
    before
        .iter()
        .filter_map(|ev| match &ev.kind {
            Some(Kind::Exec(p)) => Some(p.pid as u32),
            Some(Kind::Lost(l)) => panic!("a reading subscriber lost events: {l:?}"),
            _ => None,
        })
        .collect()
}

/// Asserts that `seen` holds every pid of `storm`, in order.
fn saw_all(seen: &[u32], storm: &[u32]) {
    let wanted: std::collections::HashSet<u32> = storm.iter().copied().collect();
    let ours: Vec<u32> = seen
        .iter()
        .copied()
        .filter(|p| wanted.contains(p))
        .collect();
    assert_eq!(ours.len(), storm.len(), "execs of the storm seen");
    assert!(ours == storm, "every exec of the storm, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_all_see_the_launch_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let agent = Agent::start(MANY_SUBSCRIBERS);
    // Each its own connection; every other one starts with a snapshot.
    let mut streams = Vec::new();
    for i in 0..100 {
        let (req, with_snapshot) = if i % 2 == 0 {
            (live(false), false)
        } else {
            (WatchRequest::default(), true)
        };
        let mut stream = agent.watch(req).await;
        if with_snapshot {
            snapshot(&mut stream).await;
        }
        streams.push(stream);
    }
    subscribers(&agent, 100).await;

    let prog = UniqueProgram::new("ewhund");
    let started = Instant::now();
    let child = prog.spawn(60, &[]);
    let pid = child.id();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let (ev, _) = until(&mut stream, WAIT, |ev| is_process(ev, pid, false)).await;
                (stream, ev, started.elapsed())
            })
        })
        .collect();
    let mut streams = Vec::new();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (stream, ev, latency) = task.await.expect("a subscriber missed the launch");
        let Some(Kind::Exec(p)) = &ev.kind else {
            unreachable!()
        };
        assert_eq!(p.comm, prog.name);
        slowest = slowest.max(latency);
        streams.push(stream);
    }
    eprintln!("100 subscribers: the slowest saw the exec after {slowest:?}");
    assert!(slowest < Duration::from_secs(10), "{slowest:?}");
    let hwm = vm_kib(agent.pid(), "VmHWM");
    eprintln!("agent VmHWM with 100 subscribers: {hwm} KiB");
    assert!(hwm < MAX_HWM_KIB, "agent VmHWM {hwm} KiB");
    healthy(&agent);

    // 40 hang up: the count follows, and the 60 left still get the next launch.
    streams.truncate(60);
    subscribers(&agent, 60).await;
    let again = prog.spawn(60, &[]);
    let pid = again.id();
    for stream in &mut streams {
        until(stream, WAIT, |ev| is_process(ev, pid, false)).await;
    }
    drop(streams);
    subscribers(&agent, 0).await;
    healthy(&agent);
    let stats = agent.stats().await;
    assert_eq!(stats.subscribers_total, 100);
    assert_eq!(stats.subscriber_overflows, 0);
    stop(child);
    stop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_hanging_up_mid_storm_do_not_disturb_the_others() {
    let _serial = SERIAL.lock().await;
    let agent = Agent::start(MANY_SUBSCRIBERS);
    let noise = UniqueProgram::new("ewnois");
    let end = UniqueProgram::new("ewend");
    let mut survivor = agent.watch(live(false)).await;

    // 20 quitters read part of the storm, then hang up: the even ones drop
    // only their stream (their connection stays open: a stream reset), the
    // odd ones their whole client (the connection closes). They start
    // reading once all 21 are counted: every exec on the host reaches them,
    // so on a busy one the first quitters would otherwise have read their
    // share and gone before the last had connected.
    let (go, ready) = tokio::sync::watch::channel(false);
    let mut kept_clients = Vec::new();
    let mut quitters = Vec::new();
    for i in 0..20usize {
        let mut client = agent.client().await;
        let mut stream = client.watch(live(false)).await.unwrap().into_inner();
        if i % 2 == 0 {
            kept_clients.push(client);
        } else {
            drop(client);
        }
        let mut ready = ready.clone();
        quitters.push(tokio::spawn(async move {
            ready.wait_for(|go| *go).await.expect("the test goes on");
            for _ in 0..(10 + 40 * i) {
                next(&mut stream, WAIT).await;
            }
        }));
    }
    subscribers(&agent, 21).await;
    go.send(true).expect("the quitters wait");

    // The survivor reads the whole storm, up to a last program after it.
    const RUNS: usize = 1500;
    let last = end.name.clone();
    let reader = tokio::spawn(async move {
        let seen = execs_until(&mut survivor, &last, 2 * WAIT).await;
        (seen, survivor)
    });
    let started = Instant::now();
    let pids = tokio::task::spawn_blocking(move || storm(&noise, RUNS, 1))
        .await
        .unwrap();
    let storm_took = started.elapsed();
    let end_child = end.spawn(60, &[]);
    for quitter in quitters {
        quitter.await.expect("a quitter read its share");
    }
    let (seen, survivor) = reader.await.expect("the survivor saw the whole storm");
    eprintln!(
        "storm of {RUNS} execs took {storm_took:?}; the survivor had it all after {:?}",
        started.elapsed()
    );
    saw_all(&seen, &pids);

    // Every quitter is gone from the count; nobody overflowed.
    subscribers(&agent, 1).await;
    drop(kept_clients);
    healthy(&agent);
    drop(survivor);
    subscribers(&agent, 0).await;
    let stats = agent.stats().await;
    assert_eq!(stats.subscribers_total, 21);
    assert_eq!(stats.subscriber_overflows, 0);
    assert_eq!(stats.kernel_overruns, 0);
    stop(end_child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_costs_bounded_memory_and_delays_nobody() {
    let _serial = SERIAL.lock().await;
    // A short queue, so the stalled subscribers fill it within a short storm.
    let agent = Agent::start(&[MANY_SUBSCRIBERS, &["--queue-len=512"]].concat());
    let noise = std::sync::Arc::new(UniqueProgram::new("ewstal"));
    let end = UniqueProgram::new("ewend");
    let mut reader = agent.watch(live(false)).await;
    // Never polled: one live with the default HTTP/2 window, one that asked
    // for a snapshot and never reads even that.
    let stalled = agent.watch(live(false)).await;
    let stalled_snapshot = agent.watch(WatchRequest::default()).await;
    subscribers(&agent, 3).await;

    // Each exec carries 2000 bytes of argv: 2500 of them are more than a
    // stalled subscriber's HTTP/2 window, send buffer and queue hold.
    const RUNS: usize = 2500;
    const PAD: usize = 2000;
    let mut rss = Vec::new();
    let mut ends = Vec::new();
    for phase in 1..=2 {
        let last = end.name.clone();
        let read = tokio::spawn(async move {
            let seen = execs_until(&mut reader, &last, 3 * WAIT).await;
            (seen, reader)
        });
        let prog = noise.clone();
        let started = Instant::now();
        let pids = tokio::task::spawn_blocking(move || storm(&prog, RUNS, PAD))
            .await
            .unwrap();
        let storm_took = started.elapsed();
        ends.push(end.spawn(60, &[]));
        let (seen, back) = read.await.expect("the reader saw the whole storm");
        let caught_up = started.elapsed();
        reader = back;
        saw_all(&seen, &pids);
        eprintln!("phase {phase}: storm {storm_took:?}, reader caught up after {caught_up:?}");
        assert!(
            caught_up < storm_took + Duration::from_secs(5),
            "the reader lagged: storm {storm_took:?}, caught up {caught_up:?}"
        );
        // Both stalled subscribers are unhooked (they overflowed): only the
        // reader is counted.
        let stats = agent.stats().await;
        assert_eq!(stats.subscriber_overflows, 2, "{stats:?}");
        assert_eq!(stats.subscribers, 1, "{stats:?}");
        rss.push(vm_kib(agent.pid(), "VmRSS"));
    }
    let hwm = vm_kib(agent.pid(), "VmHWM");
    eprintln!("agent VmRSS after each phase {rss:?} KiB, VmHWM {hwm} KiB");
    assert!(hwm < MAX_HWM_KIB, "agent VmHWM {hwm} KiB");
    // Flat: the second storm adds nothing the first did not.
    assert!(rss[1] <= rss[0] + 4 * 1024, "agent VmRSS grew: {rss:?} KiB");
    healthy(&agent);
    drop((stalled, stalled_snapshot));
    drop(reader);
    subscribers(&agent, 0).await;
    ends.into_iter().for_each(stop);
}

/// Snapshots are read from /proc on tokio's blocking pool (512 threads).
/// 512 subscribers that ask for a snapshot larger than their flow-control
/// window and never read must not hold those threads: if they did, every
/// later snapshot (a new subscriber's, or a resync after a loss) would wait
/// forever. The agent reads in chunks that never wait for the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_snapshots_do_not_hold_up_the_snapshots_of_others() {
    let _serial = SERIAL.lock().await;
    let agent = Agent::start(MANY_SUBSCRIBERS);
    // Enough large processes that a snapshot outgrows a 64 KiB window plus
    // the agent's buffers, so its scan has to wait for the reader.
    let big = UniqueProgram::new("ewbig");
    let pad = "0".repeat(1000);
    let sleepers: Vec<_> = (0..400).map(|_| big.spawn(300, &[&pad])).collect();
    let mut stalled = Vec::new();
    for _ in 0..512 {
        stalled.push(watch_small_window(&agent.socket, WatchRequest::default()).await);
    }
    accepted(&agent, 512).await;
    let mut fresh = agent.watch(WatchRequest::default()).await;
    let outcome = tokio::time::timeout(Duration::from_secs(20), snapshot(&mut fresh)).await;
    drop(stalled);
    sleepers.into_iter().for_each(stop);
    let listed = outcome.expect("a fresh subscriber's snapshot within 20 s");
    assert!(listed.len() >= 400);
}
