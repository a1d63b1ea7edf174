//! The real agent binary over a real Unix socket with real kernel events:
//! live execs, the snapshot, exits, the poll detector, stats and shutdown.
#![cfg(target_os = "linux")]

mod support;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use execwatch::proto::{watch_event::Kind, SnapshotCause, Source, WatchRequest};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_launch_arrives_with_its_identity() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(WatchRequest::default()).await;
    let snap = snapshot(&mut stream).await;
    assert!(!snap.is_empty(), "the snapshot lists running processes");
    assert_contiguous(&snap, 1);

    let prog = UniqueProgram::new("ewid");
    // Run it as nobody so the uid fields are not trivially 0.
    let child = std::process::Command::new(&prog.path)
        .args(["30", "0.5"])
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let pid = child.id();
    let (ev, _) = until(&mut stream, WAIT, |ev| is_process(ev, pid, false)).await;
    stop(child);
    let Some(Kind::Exec(p)) = ev.kind else {
        unreachable!()
    };
    assert_eq!(p.pid, pid as i32);
    assert_eq!(p.tgid, pid as i32);
    assert_eq!(p.ppid as u32, std::process::id());
    assert_eq!(p.comm, prog.name);
    assert_eq!(p.argv, vec![prog.path.to_str().unwrap(), "30", "0.5"]);
    assert_eq!(p.exe.as_deref(), Some(prog.path.to_str().unwrap()));
    let creds = p.credentials.unwrap();
    assert_eq!(
        (creds.uid, creds.euid, creds.gid, creds.egid),
        (65534, 65534, 65534, 65534)
    );
    assert_eq!(p.source(), Source::Netlink);
    assert!(p.kernel_timestamp_ns > 0);
    assert!(p.observed_unix_ns > 0);
    assert!(p.start_ticks > 0);
    assert!(!p.exited_before_inspection);
    assert!(!p.cgroup.unwrap().path.is_empty());
}

#[tokio::test]
async fn a_process_started_before_subscribing_is_in_the_snapshot() {
    let agent = Agent::start(&[]);
    let prog = UniqueProgram::new("ewsnap");
    let child = prog.spawn(30, &[]);
    // The snapshot must see the program, not the fork before its exec.
    wait_exec(child.id(), &prog.name);
    let mut stream = agent.watch(WatchRequest::default()).await;
    let first = next(&mut stream, WAIT).await;
    assert_eq!(first.seq, 1);
    let mut snap = vec![first];
    snap.extend(snapshot(&mut stream).await);
    let entry = snap.iter().find(|ev| is_process(ev, child.id(), true));
    stop(child);
    let Some(Kind::Existing(p)) = &entry.expect("snapshot lists the running program").kind else {
        unreachable!()
    };
    assert_eq!(p.comm, prog.name);
    assert_eq!(p.source(), Source::Snapshot);
    assert_eq!(p.kernel_timestamp_ns, 0);
}

#[tokio::test]
async fn snapshot_complete_counts_entries_and_says_why() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(WatchRequest::default()).await;
    let (done, before) = until(&mut stream, WAIT, |ev| {
        matches!(ev.kind, Some(Kind::SnapshotComplete(_)))
    })
    .await;
    let Some(Kind::SnapshotComplete(c)) = done.kind else {
        unreachable!()
    };
    assert_eq!(c.processes, before.len() as u64);
    assert_eq!(c.cause(), SnapshotCause::Subscribe);
    assert!(before
        .iter()
        .all(|ev| matches!(ev.kind, Some(Kind::Existing(_)))));
}

#[tokio::test]
async fn exits_are_streamed_only_on_request() {
    let agent = Agent::start(&[]);
    let mut with_exits = agent.watch(live(true)).await;
    let mut without = agent.watch(live(false)).await;
    let prog = UniqueProgram::new("ewexit");
    let child = prog.spawn(30, &[]);
    let pid = child.id() as i32;
    until(&mut with_exits, WAIT, |ev| {
        is_process(ev, pid as u32, false)
    })
    .await;
    stop(child);
    let (ev, _) = until(
        &mut with_exits,
        WAIT,
        |ev| matches!(&ev.kind, Some(Kind::Exit(e)) if e.pid == pid),
    )
    .await;
    let Some(Kind::Exit(e)) = ev.kind else {
        unreachable!()
    };
    assert_eq!(e.tgid, pid);
    assert_eq!(e.exit_code, 9, "killed by SIGKILL: wait status 9");
    assert_eq!(e.source(), Source::Netlink);

    // The exec-only stream saw the exec, and after it no exit at all.
    let (_, _) = until(&mut without, WAIT, |ev| is_process(ev, pid as u32, false)).await;
    let marker = prog.spawn(30, &[]);
    let (_, between) = until(&mut without, WAIT, |ev| is_process(ev, marker.id(), false)).await;
    stop(marker);
    assert!(between
        .iter()
        .all(|ev| !matches!(ev.kind, Some(Kind::Exit(_)))));
}

/// Exit events are read in batches, merged with exec events by the kernel's
/// timestamp: however they are batched, every process's exec comes before
/// its exit, and none is missing.
#[tokio::test]
async fn each_exec_comes_before_its_exit_in_a_burst() {
    burst_in_order(&[]).await;
}

/// The same with one unfiltered socket (kernels before 6.6).
#[tokio::test]
async fn each_exec_comes_before_its_exit_in_a_burst_unfiltered() {
    burst_in_order(&["--kernel-filter=off"]).await;
}

async fn burst_in_order(args: &[&str]) {
    let agent = Agent::start(args);
    let mut stream = agent.watch(live(true)).await;
    let pids: Vec<i32> = (0..300)
        .map(|_| {
            let mut child = std::process::Command::new("true")
                .spawn()
                .expect("spawn true");
            child.wait().expect("wait true");
            child.id() as i32
        })
        .collect();
    let mut execs = std::collections::HashSet::new();
    let mut exits = 0;
    while exits < pids.len() {
        let ev = next(&mut stream, WAIT).await;
        match ev.kind {
            Some(Kind::Exec(p)) if pids.contains(&p.pid) => {
                assert!(execs.insert(p.pid), "pid {} executed twice", p.pid);
            }
            Some(Kind::Exit(e)) if pids.contains(&e.pid) => {
                assert!(execs.contains(&e.pid), "exit of {} before its exec", e.pid);
                exits += 1;
            }
            Some(Kind::Lost(l)) => panic!("lost events in a 300-process burst: {l:?}"),
            _ => {}
        }
    }
    assert_eq!(execs.len(), pids.len());
}

#[tokio::test]
async fn the_poll_detector_delivers_the_same_process() {
    let agent = Agent::start(&["--detector=poll", "--poll-interval=50ms"]);
    let mut stream = agent.watch(live(true)).await;
    let prog = UniqueProgram::new("ewpoll");
    let child = prog.spawn(30, &["0.25"]);
    let pid = child.id();
    let (ev, _) = until(&mut stream, WAIT, |ev| is_process(ev, pid, false)).await;
    stop(child);
    let Some(Kind::Exec(p)) = ev.kind else {
        unreachable!()
    };
    assert_eq!(p.comm, prog.name);
    assert_eq!(p.argv[1..], ["30", "0.25"]);
    assert_eq!(p.source(), Source::Poll);
    let (ev, _) = until(
        &mut stream,
        WAIT,
        |ev| matches!(&ev.kind, Some(Kind::Exit(e)) if e.pid == pid as i32),
    )
    .await;
    let Some(Kind::Exit(e)) = ev.kind else {
        unreachable!()
    };
    assert_eq!(e.source(), Source::Poll);
}

#[tokio::test]
async fn stats_report_the_detector_and_counts() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;
    let prog = UniqueProgram::new("ewstat");
    let child = prog.spawn(30, &[]);
    until(&mut stream, WAIT, |ev| is_process(ev, child.id(), false)).await;
    stop(child);
    let stats = agent.stats().await;
    assert_eq!(stats.detector, "netlink");
    assert_eq!(
        stats.subscription_mode, "kernel-filtered",
        "this kernel is >= 6.6"
    );
    assert!(stats.execs >= 1);
    assert!(stats.subscribers >= 1);
    assert!(stats.subscribers_total >= 1);
    assert!(
        stats.receive_buffer_bytes >= 1 << 20,
        "asked for 8 MiB as root: {stats:?}"
    );
    assert_eq!(stats.kernel_overruns, 0);
    assert!(
        agent.logs().contains("kernel-filtered"),
        "the log says which mode is active"
    );
}

/// The unfiltered subscription that kernels before 6.6 need, forced here:
/// every proc connector event reaches the agent, which drops what it does
/// not want; the stream is the same, each event once.
#[tokio::test]
async fn the_unfiltered_subscription_delivers_the_same_stream() {
    let agent = Agent::start(&["--kernel-filter=off"]);
    let mut stream = agent.watch(live(true)).await;
    let prog = UniqueProgram::new("ewnofilt");
    let child = prog.spawn(30, &[]);
    let pid = child.id() as i32;
    until(&mut stream, WAIT, |ev| is_process(ev, pid as u32, false)).await;
    stop(child);
    let (_, between) = until(
        &mut stream,
        WAIT,
        |ev| matches!(&ev.kind, Some(Kind::Exit(e)) if e.pid == pid),
    )
    .await;
    assert!(
        !between.iter().any(|ev| is_process(ev, pid as u32, false)),
        "one exec event per exec"
    );
    let stats = agent.stats().await;
    assert_eq!(stats.subscription_mode, "userspace-filtered");
    assert!(
        stats.ignored_kernel_events > 0,
        "forks reach the agent and are dropped: {stats:?}"
    );
    assert!(agent.logs().contains("userspace-filtered"));
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_removes_the_socket() {
    let mut agent = Agent::start(&[]);
    assert!(agent.socket.exists());
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "exit status {status}:\n{}", agent.logs());
    assert!(!agent.socket.exists(), "socket left behind");
}

#[test]
fn health_check_reports_serving_and_fails_without_an_agent() {
    let agent = Agent::start(&[]);
    let ok = health_check_as(&agent.socket, 0);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "SERVING");
    let missing = agent.dir.path().join("nope.sock");
    let bad = health_check_as(&missing, 0);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nope.sock"),
        "{bad:?}"
    );
}

#[tokio::test]
async fn the_poll_detector_sees_an_exec_inside_a_process_it_knows() {
    let agent = Agent::start(&["--detector=poll", "--poll-interval=50ms"]);
    let mut stream = agent.watch(live(false)).await;
    let prog = UniqueProgram::new("ewpexec");
    // A wrapper that lives past a few scans, then execs the real program:
    // pid and start time stay, only the command changes.
    let script = format!("sleep 0.4; exec {} 30", prog.path.display());
    let child = std::process::Command::new("bash")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let pid = child.id();
    let (ev, _) = until(
        &mut stream,
        WAIT,
        |ev| matches!(&ev.kind, Some(Kind::Exec(p)) if p.pid == pid as i32 && p.comm == prog.name),
    )
    .await;
    stop(child);
    let Some(Kind::Exec(p)) = ev.kind else {
        unreachable!()
    };
    assert_eq!(p.source(), Source::Poll);
    assert_eq!(p.argv[1..], ["30"]);
}
