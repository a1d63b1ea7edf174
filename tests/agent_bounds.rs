//! The agent's bounds hold for any input and any peer: memory is bounded in
//! bytes (not in items) whatever the command lines look like, streams per
//! connection and subscribers in total and per uid are capped, and what is
//! refused is refused with RESOURCE_EXHAUSTED.

mod support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use execwatch::proto::WatchRequest;
use support::*;
use tonic::Code;

/// The agent's peak resident memory (VmHWM), in KiB.
fn vm_hwm_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The documented bound (docs/operating.md#memory) for `subscribers`
/// stalled subscribers with the default flags: 24 MiB of base (a debug
/// build; a release agent idles near 7 MiB), and per
/// subscriber its 4 MiB queue (read by its stream itself), the record
/// being encoded for its stream (at most 64 KiB of argv plus 16 KiB of
/// other fields), 400 KiB of HTTP/2 send buffer and a 256 KiB snapshot
/// chunk.
fn documented_bound_kib(subscribers: u64) -> u64 {
    24 * 1024 + subscribers * (4 * 1024 + 80 + 400 + 256)
}

/// One subscriber that stops reading while an unprivileged-looking storm
/// runs programs with two 64 KiB arguments of non-UTF-8 bytes (each record
/// carries the raw bytes and a lossy string three times their size): the
/// agent's peak memory stays within the documented bound (it reached
/// 630 MB when the queue was bounded in items).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_and_huge_non_utf8_command_lines_stay_within_the_byte_bound() {
    let agent = Agent::start(&[]);
    let mut stalled = watch_small_window(&agent.socket, live(false)).await;
    // It reads one item, then nothing more.
    let _ = stalled.message().await;
    let blob = vec![0xffu8; 64 * 1024];
    let arg = OsStr::from_bytes(&blob);
    let truth = which("true");
    let started = Instant::now();
    let mut spawned = 0u32;
    tokio::task::block_in_place(|| {
        while started.elapsed() < Duration::from_secs(10) {
            let due = started + Duration::from_millis(u64::from(spawned) * 1000 / 127);
            if let Some(early) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(early);
            }
            let status = Command::new(&truth)
                .arg(arg)
                .arg(arg)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            spawned += 1;
        }
    });
    let stats = agent.stats().await;
    let peak = vm_hwm_kib(agent.pid());
    println!(
        "{spawned} execs with 2 x 64 KiB non-UTF-8 arguments, 1 stalled subscriber: agent VmHWM {peak} KiB, {} subscriber overflows",
        stats.subscriber_overflows
    );
    assert!(spawned > 500, "the storm ran: {spawned}");
    assert!(
        stats.subscriber_overflows >= 1,
        "the stalled subscriber's queue filled"
    );
    let bound = documented_bound_kib(1);
    assert!(peak < bound, "VmHWM {peak} KiB over the bound {bound} KiB");
}

/// One connection asking for many streams gets as many as the HTTP/2
/// SETTINGS allow (`--max-streams-per-connection`); the rest wait on the
/// client side and cost the agent nothing.
#[tokio::test]
async fn one_connection_gets_only_its_share_of_streams() {
    let agent = Agent::start(&["--max-streams-per-connection=4", "--max-subscribers=64"]);
    let client = agent.client().await;
    let mut opened = Vec::new();
    for _ in 0..40 {
        let mut c = client.clone();
        opened.push(tokio::spawn(async move { c.watch(live(false)).await }));
    }
    // Counted as accepted (they do not read, so an exec storm elsewhere on
    // the host may overflow and unhook them: the live count can drop).
    eventually("4 subscribers served", Duration::from_secs(20), || async {
        (agent.stats().await.subscribers_total >= 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stats = agent.stats().await;
    println!(
        "40 Watch calls on one connection: {} subscribers served",
        stats.subscribers_total
    );
    assert_eq!(stats.subscribers_total, 4, "the agent announced 4 streams");
    for task in opened {
        task.abort();
    }
}

/// Subscribers beyond `--max-subscribers-per-uid` for one uid, or beyond
/// `--max-subscribers` in all, are refused with RESOURCE_EXHAUSTED naming
/// the flag; a seat freed is a seat again.
#[tokio::test]
async fn subscribers_are_capped_per_uid_and_in_total() {
    for (flags, flag) in [
        (
            ["--max-subscribers=8", "--max-subscribers-per-uid=2"],
            "--max-subscribers-per-uid",
        ),
        (
            ["--max-subscribers=2", "--max-subscribers-per-uid=8"],
            "(--max-subscribers)",
        ),
    ] {
        let agent = Agent::start(&flags);
        let mut streams = Vec::new();
        for _ in 0..2 {
            streams.push(agent.watch(live(false)).await);
        }
        let mut client = execwatch::client::exec_events(&agent.socket).await.unwrap();
        let refused = client
            .watch(WatchRequest::default())
            .await
            .expect_err("a third subscriber");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
        assert!(refused.message().contains(flag), "{flag}: {refused}");
        drop(streams.pop());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = client.watch(live(false)).await;
        assert!(again.is_ok(), "a freed seat is a seat again: {again:?}");
        assert!(agent.logs().contains("refused a subscriber"));
        assert_eq!(agent.stats().await.subscribers, 2);
    }
}

/// Whether the agent closed `conn` (a read sees end of file) within `wait`.
fn closed_within(conn: &mut std::os::unix::net::UnixStream, wait: Duration) -> bool {
    use std::io::{ErrorKind, Read};
    let until = Instant::now() + wait;
    let mut byte = [0u8; 64];
    loop {
        let Some(left) = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return false;
        };
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut byte) {
            Ok(0) => return true,
            // The agent's HTTP/2 preface: it is talking, not closing.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            // A read with a timeout is never restarted after a signal
            // (signal(7)); this process gets SIGCHLD from the agents and
            // probes the other tests start.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Connections are bounded per uid and in total, and one that never speaks
/// is closed after the preface deadline: 300 silent connections neither
/// blind the agent nor keep its own health probe out (it spun at 100 % CPU
/// and stopped answering with its descriptors full of them).
#[tokio::test]
async fn silent_and_excess_connections_are_closed_and_the_agent_stays_reachable() {
    // As deployed (uid 65534 once subscribed), on a socket anyone may open,
    // so that root's connections are a peer's, not the agent's own.
    let agent = Agent::start_deployed(&[
        "--socket-mode=0666",
        "--max-connections=64",
        "--max-connections-per-uid=16",
    ]);
    let mut conns: Vec<_> = (0..300)
        .map(|_| std::os::unix::net::UnixStream::connect(&agent.socket).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The agent's own uid is not counted: its probe answers.
    let probe = health_check_as(&agent.socket, 65534);
    assert!(probe.status.success(), "{probe:?}\n{}", agent.logs());
    // Root (a peer here) got 16; the 17th on were closed at once.
    let closed_at_once = conns[16..]
        .iter_mut()
        .map(|c| closed_within(c, Duration::from_millis(50)))
        .filter(|closed| *closed)
        .count();
    assert_eq!(closed_at_once, 300 - 16, "{}", agent.logs());
    assert!(!closed_within(&mut conns[0], Duration::from_millis(50)));
    // Silent ones go once the preface deadline has passed.
    let started = Instant::now();
    for conn in &mut conns[..16] {
        assert!(
            closed_within(conn, Duration::from_secs(10)),
            "a silent connection stayed open"
        );
    }
    println!(
        "16 silent connections closed {:?} after the first check",
        started.elapsed()
    );
    drop(conns);
    let mut client = execwatch::client::exec_events(&agent.socket).await.unwrap();
    let stats = client
        .get_stats(execwatch::proto::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stats.uptime_seconds >= 5);
    let logs = agent.logs();
    assert_eq!(
        logs.matches("closing new connections").count(),
        1,
        "said once per run:\n{logs}"
    );
    assert!(logs.contains("--max-connections-per-uid"), "{logs}");
}

/// The client's HTTP/2 preface: the magic and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The descriptors the agent holds that are sockets.
fn sockets_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// A connection that sends part of its preface and stops is closed after
/// the handshake deadline (5 s); one that finishes it and then opens no
/// stream is closed after `--idle-timeout`, and so is one that begins a
/// request's header block and never ends it (the agent holds such a block
/// until it is whole, so no RPC is in progress). All three stayed open for
/// as long as the client liked, holding a descriptor and a connection
/// place (the last one also up to 16 frames of the block it began).
#[tokio::test]
async fn half_prefaces_and_idle_connections_are_closed() {
    use std::io::Write;
    let agent = Agent::start(&["--idle-timeout=1s"]);
    let mut half = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    half.write_all(&PREFACE[..10]).unwrap();
    let mut idle = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    idle.write_all(PREFACE).unwrap();
    let mut unfinished = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    unfinished.write_all(PREFACE).unwrap();
    // HEADERS on stream 1 without END_HEADERS (flags 0), one byte of block
    // (`:method POST`), and no CONTINUATION ever.
    unfinished
        .write_all(b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x83")
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)),
        "a connection with no stream stayed open past the idle timeout\n{}",
        agent.logs()
    );
    let idle_closed = started.elapsed();
    assert!(idle_closed >= Duration::from_millis(900), "{idle_closed:?}");
    assert!(
        closed_within(&mut unfinished, Duration::from_secs(3)),
        "a connection with an unfinished header block stayed open past the idle timeout\n{}",
        agent.logs()
    );
    assert!(
        !closed_within(&mut half, Duration::from_millis(1500)),
        "the handshake deadline is 5 s, not the idle timeout"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(6)),
        "a half-sent preface stayed open past the handshake deadline\n{}",
        agent.logs()
    );
    println!(
        "idle connection closed after {idle_closed:?}, half preface after {:?}",
        started.elapsed()
    );
}

/// A `Watch` on a quiet stream is an RPC in progress: its connection
/// outlives many idle timeouts and still delivers. A connection whose only
/// call finished is closed after the timeout (its descriptor goes), and the
/// same client calls again on a new one without noticing.
#[tokio::test]
async fn a_watch_is_never_idle_and_a_finished_call_frees_its_connection() {
    let agent = Agent::start(&["--idle-timeout=1s"]);
    let prog = UniqueProgram::new("idlewatch");
    // Whatever this host runs meanwhile, the stream stays one RPC in
    // progress from start to end.
    let mut stream = agent.watch(live(false)).await;
    let before = sockets_of(agent.pid());
    let mut client = execwatch::client::exec_events(&agent.socket).await.unwrap();
    client
        .get_stats(execwatch::proto::StatsRequest::default())
        .await
        .unwrap();
    assert_eq!(
        sockets_of(agent.pid()),
        before + 1,
        "the unary call's connection"
    );
    eventually(
        "the finished call's connection is closed",
        Duration::from_secs(5),
        || async { (sockets_of(agent.pid()) == before).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let child = prog.spawn(30, &[]);
    let pid = child.id();
    // Live, or in the snapshot after a `lost` if another test's storm
    // overran this reader.
    let (ev, _) = until(&mut stream, Duration::from_secs(30), |ev| {
        is_process(ev, pid, false) || is_process(ev, pid, true)
    })
    .await;
    println!("program seen: {ev:?}");
    stop(child);
    // The client reconnects by itself.
    client
        .get_stats(execwatch::proto::StatsRequest::default())
        .await
        .expect("a new connection for the next call");
}
