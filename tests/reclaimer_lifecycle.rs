//! The reclaimer stops promptly on SIGTERM wherever it is: connecting to an
//! agent that is not there (backing off), or streaming from one. (Waiting on
//! the API server is in `reclaimer_outage`.)

mod support;

use std::time::{Duration, Instant};

use support::*;

/// Sends SIGTERM and returns the exit status and how long the exit took.
fn terminate_timed(reclaimer: &mut Reclaimer) -> (std::process::ExitStatus, Duration) {
    let pid = nix::unistd::Pid::from_raw(reclaimer.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = reclaimer.child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM:\n{}",
            reclaimer.logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigterm_while_backing_off_from_a_missing_agent_exits_at_once() {
    let dir = world_readable_tempdir();
    let socket = dir.path().join("nobody.sock");
    let mut reclaimer = Reclaimer::start(&["--dry-run", "--socket", socket.to_str().unwrap()], &[]);
    reclaimer.wait_log("cannot reach the agent", 1, Duration::from_secs(15));
    // Let it get into a longer backoff.
    std::thread::sleep(Duration::from_secs(3));
    let (status, took) = terminate_timed(&mut reclaimer);
    println!("backing off: exited {took:?} after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(reclaimer.logs().contains("stopped"));
}

#[test]
fn sigterm_while_streaming_exits_at_once() {
    let agent = Agent::start(&[]);
    let socket = agent.socket.to_str().unwrap().to_string();
    let mut reclaimer = Reclaimer::start(&["--dry-run", "--socket", &socket], &[]);
    reclaimer.wait_log("connected to the agent", 1, Duration::from_secs(15));
    let (status, took) = terminate_timed(&mut reclaimer);
    println!("streaming: exited {took:?} after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The agent lost one subscriber and goes on.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(eventually(
            "the agent forgets the subscriber",
            Duration::from_secs(5),
            || async { (agent.stats().await.subscribers == 0).then_some(()) },
        ));
}
