//! The agent out of descriptors: nothing it cannot read is presented as
//! read. A snapshot taken then is never sent as complete, an exec it could
//! not read is reported as `lost` (site detector) with its count, and once
//! descriptors come back every consumer resyncs and sees what it missed.
//!
//! The agent's descriptor limit is lowered from outside with prlimit(2),
//! the way an exhausted table looks to it.

mod support;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use execwatch::proto::{watch_event::Kind, LossSite, WatchRequest};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// The agent's open descriptor numbers.
fn open_fds(pid: i32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The `n`-th lowest descriptor number `pid` does not use (0-based).
fn free_fd(pid: i32, n: usize) -> u64 {
    let used = open_fds(pid);
    (0..).filter(|fd| !used.contains(fd)).nth(n).unwrap()
}

/// Sets `pid`'s soft RLIMIT_NOFILE; returns the old one.
fn set_nofile(pid: i32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads the old limits into `old`, then sets new ones.
    unsafe {
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old),
            0
        );
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()),
            0
        );
    }
    old.rlim_cur
}

/// Leaves the agent `spare` descriptors (0: none at all). Descriptors the
/// agent holds only for a moment (one /proc read) are waited out.
fn exhaust(agent: &Agent, spare: usize) -> u64 {
    let pid = agent.pid();
    let original = set_nofile(pid, free_fd(pid, spare));
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(20));
        set_nofile(pid, free_fd(pid, spare));
    }
    original
}

/// A client whose connection the agent has accepted and answered on.
async fn served_client(
    agent: &Agent,
) -> execwatch::proto::exec_events_client::ExecEventsClient<tonic::transport::Channel> {
    let mut client = agent.client().await;
    client
        .get_stats(execwatch::proto::StatsRequest::default())
        .await
        .unwrap();
    client
}

/// A JVM that keeps running: a one-file Java program launched from source,
/// through a link named `name` (its comm, so that no other `java` on the
/// host is mistaken for it).
fn running_jvm(dir: &std::path::Path, name: &str) -> Child {
    let src = dir.join("Wait.java");
    std::fs::write(
        &src,
        "public class Wait { public static void main(String[] a) throws Exception { Thread.sleep(60_000); } }\n",
    )
    .unwrap();
    let link = dir.join(name);
    std::os::unix::fs::symlink(std::fs::canonicalize(which("java")).unwrap(), &link).unwrap();
    Command::new(&link)
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A snapshot taken while the agent has no descriptor to spare waits for
/// them instead of being sent as a complete, empty list; it lists the
/// running process once they come back.
#[tokio::test]
async fn a_snapshot_without_descriptors_waits_instead_of_claiming_to_be_complete() {
    let agent = Agent::start(&[]);
    let prog = UniqueProgram::new("ewfd");
    let running = prog.spawn(60, &[]);
    wait_exec(running.id(), &prog.name);
    // The connection is accepted and served before the limit drops: only
    // the snapshot's own reads are refused.
    let mut client = served_client(&agent).await;
    let original = exhaust(&agent, 0);
    let mut stream = client
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    std::thread::sleep(Duration::from_millis(1500));
    set_nofile(agent.pid(), original);
    let existing = snapshot(&mut stream).await;
    assert!(
        existing.iter().any(|ev| is_process(ev, running.id(), true)),
        "the running process is in the snapshot ({} entries)",
        existing.len()
    );
    let logs = agent.logs();
    assert!(logs.contains("snapshot waiting"), "{logs}");
    stop(running);
}

/// Past its patience the snapshot ends the stream with UNAVAILABLE, never
/// with `snapshot_complete`; the client reconnects.
#[tokio::test]
async fn a_snapshot_that_cannot_finish_ends_the_stream_unavailable() {
    let agent = Agent::start(&[]);
    let mut client = served_client(&agent).await;
    let original = exhaust(&agent, 0);
    let mut stream = client
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let end = loop {
        match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(ev))) => assert!(
                !matches!(ev.kind, Some(Kind::SnapshotComplete(_))),
                "a snapshot that could not be read was sent as complete"
            ),
            Ok(Ok(None)) => panic!("ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("no end within {WAIT:?}"),
        }
    };
    set_nofile(agent.pid(), original);
    println!("the stream ended after {:?}: {end}", started.elapsed());
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end}");
    assert!(end.message().contains("complete snapshot"), "{end}");
}

/// An exec the agent could not read is never sent as an empty record: the
/// stream gets `lost` (site detector) with the count, then a resync that
/// lists the process, and a reclaimer fires for it.
#[tokio::test]
async fn an_exec_read_without_descriptors_is_lost_and_resynced_not_sent_empty() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let prog = UniqueProgram::new("ewfdx");
    let rules = rules_for(dir.path(), "rules.toml", &prog, "");
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    let mut stream = agent.watch(live(false)).await;
    let original = exhaust(&agent, 0);
    let running = prog.spawn(60, &[]);
    std::thread::sleep(Duration::from_millis(800));
    set_nofile(agent.pid(), original);
    // Other execs on the host may be lost (and resynced) first: read until
    // a resync lists the program.
    let mut seen = Vec::new();
    let (_, rest) = until(&mut stream, WAIT, |ev| {
        let listed = matches!(ev.kind, Some(Kind::SnapshotComplete(_)))
            && seen
                .iter()
                .rev()
                .take_while(|e: &&execwatch::proto::WatchEvent| {
                    !matches!(e.kind, Some(Kind::Lost(_)))
                })
                .any(|e| is_process(e, running.id(), true));
        seen.push(ev.clone());
        listed
    })
    .await;
    assert_eq!(rest.len() + 1, seen.len());
    assert!(
        !seen.iter().any(|ev| is_process(ev, running.id(), false)),
        "the unread exec was sent as a record"
    );
    let lost: Vec<_> = seen
        .iter()
        .filter_map(|ev| match &ev.kind {
            Some(Kind::Lost(lost)) => Some(lost),
            _ => None,
        })
        .collect();
    assert!(!lost.is_empty(), "a lost marker came first");
    for lost in &lost {
        assert_eq!(lost.site(), LossSite::Detector, "{lost:?}");
        assert!(lost.count_known && lost.count >= 1, "{lost:?}");
    }
    let logs = reclaimer.wait_log(&prog.reason(), 1, WAIT);
    assert!(logs.contains("the agent lost events"), "{logs}");
    assert!(agent.stats().await.unreadable_execs >= 1);
    stop(running);
}

/// The case that matters: the reclaimer subscribes while the agent can accept
/// its connection but read nothing else; a JVM was already running. The
/// snapshot waits, and the reclaimer fires once descriptors come back.
#[tokio::test]
async fn the_reclaimer_still_fires_for_a_running_jvm_when_its_snapshot_met_exhaustion() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let name = format!("ewjvm{}", std::process::id() % 100_000);
    let mut jvm = running_jvm(dir.path(), &name);
    wait_exec(jvm.id(), &name);
    let rules = write_file(
        dir.path(),
        "rules.toml",
        &format!("match_commands = [\"{name}\"]\n"),
    );
    // One descriptor to spare: the reclaimer's connection.
    let original = exhaust(&agent, 1);
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[]);
    let logs = reclaimer.wait_log("connected to the agent", 1, WAIT);
    assert!(!logs.contains("process matched"), "{logs}");
    std::thread::sleep(Duration::from_millis(1500));
    set_nofile(agent.pid(), original);
    let logs = reclaimer.wait_log("process matched", 1, WAIT);
    assert!(logs.contains(&format!("pid={}", jvm.id())), "{logs}");
    assert!(
        agent.logs().contains("snapshot waiting"),
        "{}",
        agent.logs()
    );
    let _ = jvm.kill();
    let _ = jvm.wait();
}

/// CPU time (user + system) the process has used, from /proc/<pid>/stat.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after comm.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / 100)
}

/// Connections that arrive while the agent has no descriptor to accept
/// them with wait in the backlog: the agent says so once and pauses
/// between attempts instead of spinning, and serves them when it can.
#[tokio::test]
async fn accepting_without_descriptors_pauses_instead_of_spinning() {
    let agent = Agent::start(&[]);
    let original = exhaust(&agent, 0);
    let waiting: Vec<_> = (0..20)
        .map(|_| std::os::unix::net::UnixStream::connect(&agent.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(agent.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(agent.pid()) - before;
    println!("agent CPU over 2 s with 20 connections it cannot accept: {used:?}");
    assert!(
        used < Duration::from_millis(400),
        "spinning: {used:?} of CPU in 2 s"
    );
    set_nofile(agent.pid(), original);
    // A new client is served once descriptors are back.
    let stats = tokio::time::timeout(WAIT, agent.stats())
        .await
        .expect("served");
    assert!(stats.uptime_seconds >= 2);
    drop(waiting);
    let logs = agent.logs();
    assert_eq!(
        logs.matches("cannot accept a connection").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("accepting connections again"), "{logs}");
}
