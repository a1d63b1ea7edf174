//! The agent's lifecycle: it stops at once on SIGTERM or SIGINT whatever
//! its subscribers do, refuses to take over a live agent's socket, and stops
//! the same way (with an error) when its detector fails.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use execwatch::proto::watch_event::Kind;
use nix::sys::signal::Signal;
use support::*;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// Waits for `child` to exit; returns its status and how long that took.
async fn wait_exit(child: &mut Child, timeout: Duration) -> (ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < timeout,
            "still running {timeout:?} after the signal"
        );
        // Yields, so this test's own clients keep reading meanwhile: the
        // agent's last word must not wait on a client this test froze.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Ends the stream `s` and returns the status it ended with (`Ok` if it
/// ended without one).
async fn end_of(
    s: &mut tonic::Streaming<execwatch::proto::WatchEvent>,
) -> Result<(), tonic::Status> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(status)) => return Err(status),
            Err(_) => panic!("the stream did not end within 5s"),
        }
    }
}

async fn stops_at_once(sig: Signal, never_reading: usize) {
    let mut agent = Agent::start(MANY_SUBSCRIBERS);
    // A reader that is live, one watching health, and clients that never
    // read a byte after asking (their windows fill, their queues back up).
    let mut reader = agent.watch(live(true)).await;
    let mut health = HealthClient::new(execwatch::client::connect(&agent.socket).await.unwrap())
        .watch(HealthCheckRequest {
            service: "execwatch.v1.ExecEvents".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = health.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let mut stalled = Vec::new();
    for _ in 0..never_reading {
        stalled.push(watch_small_window(&agent.socket, Default::default()).await);
    }
    // Let the stalled snapshots and a storm of live events back up.
    // At least 50 launches, however busy the machine (half a second is
    // enough for 200 on a quiet one).
    let mut storm = 0;
    while storm <= 50 {
        storm += exec_storm(&which("true"), &[], Duration::from_millis(500), 400).len();
    }
    let _ = next(&mut reader, Duration::from_secs(5)).await;

    // The live reader goes on reading while the agent stops, as a real one
    // does: the agent's last word comes after whatever it had queued.
    let reading = tokio::spawn(async move { end_of(&mut reader).await });
    agent.signal(sig);
    let (status, took) = wait_exit(&mut agent.child, Duration::from_secs(10)).await;
    println!(
        "{sig:?} with 1 reader, 1 health watcher and {never_reading} clients that never read: the agent exited in {took:?}"
    );
    assert!(status.success(), "exit status {status}:\n{}", agent.logs());
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} to stop:\n{}",
        agent.logs()
    );
    assert!(!agent.socket.exists(), "the socket was removed");
    let ended = reading.await.unwrap().expect_err("ended with a status");
    assert_eq!(ended.code(), Code::Unavailable, "{ended}");
    assert!(ended.message().contains("shutting down"), "{ended}");
    // Health said NOT_SERVING before the connection went.
    let mut statuses = Vec::new();
    while let Ok(Some(reply)) = health.message().await {
        statuses.push(reply.status());
    }
    assert_eq!(
        statuses,
        [ServingStatus::NotServing],
        "health after the signal"
    );
    let logs = agent.logs();
    assert!(logs.contains("stopping: ending every stream"), "{logs}");
    assert!(logs.contains("stopped; socket removed"), "{logs}");
}

/// Today's pods: the kubelet stops the agent container alone (a failed
/// probe, a restart) while the reclaimer stays subscribed.
#[tokio::test]
async fn sigterm_stops_the_agent_at_once_with_subscribers_that_never_read() {
    stops_at_once(Signal::SIGTERM, 20).await;
}

/// Ctrl-C in a terminal, with an operator's grpcurl-like reader open.
#[tokio::test]
async fn sigint_stops_the_agent_at_once() {
    stops_at_once(Signal::SIGINT, 1).await;
}

/// A second agent on the same socket path refuses to start and leaves the
/// first one, and its subscribers, alone.
#[tokio::test]
async fn a_second_agent_refuses_a_live_socket() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--socket")
        .arg(&agent.socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second agent started:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "another agent is serving {}",
            agent.socket.display()
        )),
        "{stderr}"
    );
    // The first agent still serves its subscriber on the same socket file.
    assert!(agent.socket.exists());
    let prog = UniqueProgram::new("ew-second");
    let child = prog.spawn(2, &[]);
    let pid = child.id();
    until(&mut stream, Duration::from_secs(10), |ev| {
        is_process(ev, pid, false)
    })
    .await;
    stop(child);
    assert_eq!(agent.stats().await.subscribers, 1);
}

/// A detector that fails stops the agent through the same path as SIGTERM,
/// with an error exit and a line that says why: the subscribers learn it at
/// once (UNAVAILABLE) instead of waiting on a blind agent.
#[tokio::test]
async fn a_failed_detector_stops_the_agent_cleanly_with_an_error() {
    // The poll detector scans a /proc stand-in that becomes unreadable to
    // the agent's user; an unprivileged agent cannot get around that.
    let dir = world_readable_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let fake_proc = dir.path().join("proc");
    std::fs::create_dir(&fake_proc).unwrap();
    let socket = dir.path().join("agent.sock");
    let log = dir.path().join("agent.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--socket")
        .arg(&socket)
        .args([
            "--socket-mode=0666",
            "--detector=poll",
            "--poll-interval=50ms",
        ])
        .arg("--proc-root")
        .arg(&fake_proc)
        .uid(65534)
        .gid(65534)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = Instant::now();
    while !socket.exists() {
        assert!(child.try_wait().unwrap().is_none(), "{}", logs());
        assert!(started.elapsed() < Duration::from_secs(15), "no socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut client = execwatch::client::exec_events(&socket).await.unwrap();
    let mut stream = client
        .watch(execwatch::proto::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream, Duration::from_secs(5)).await;
    assert!(matches!(first.kind, Some(Kind::SnapshotComplete(_))));

    std::fs::set_permissions(&fake_proc, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (status, took) = wait_exit(&mut child, Duration::from_secs(10)).await;
    println!("the agent stopped {took:?} after its /proc became unreadable");
    assert_eq!(status.code(), Some(1), "{}", logs());
    let ended = end_of(&mut stream).await.expect_err("ended with a status");
    assert_eq!(ended.code(), Code::Unavailable, "{ended}");
    assert!(!socket.exists(), "the socket was removed");
    let logs = logs();
    assert!(
        logs.contains("stopping: the detector failed (poll detector stopped"),
        "{logs}"
    );
    assert!(logs.contains("Error: the detector failed"), "{logs}");
}
