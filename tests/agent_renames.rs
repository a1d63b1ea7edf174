//! A process that renames itself after its exec (prctl(PR_SET_NAME)), as
//! 5-Spot's own agent sees it by its comm: the agent's kernel comm events
//! against a real Python process, a watcher and the dry-run reclaimer.
#![cfg(target_os = "linux")]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use execwatch::proto::watch_event::Kind;
use execwatch::proto::WatchRequest;
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// Starts tests/fixtures/rename.py taking `name` (`thread` first, if asked).
fn rename(name: &str, thread: bool) -> (Child, BufReader<ChildStdout>) {
    let mut cmd = Command::new("python3");
    cmd.arg("tests/fixtures/rename.py").arg(name);
    if thread {
        cmd.arg("thread");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

fn unique(prefix: &str) -> String {
    UniqueProgram::new(prefix).name
}

#[tokio::test]
async fn a_leader_that_renames_itself_reaches_a_subscriber_of_the_new_name() {
    let agent = Agent::start(&[]);
    let name = unique("ewrename");
    let req = WatchRequest {
        comms: vec![name.clone()],
        ..live(false)
    };
    let mut stream = agent.watch(req).await;
    let (child, mut out) = rename(&name, false);
    assert_eq!(line(&mut out), "leader");
    let pid = child.id() as i32;
    let ev = next(&mut stream, WAIT).await;
    let Some(Kind::Exec(p)) = ev.kind else {
        panic!("expected the renamed process, got {ev:?}");
    };
    assert_eq!(
        (p.pid, p.comm.as_str(), p.renamed),
        (pid, name.as_str(), true)
    );
    assert!(p.argv.iter().any(|a| a.ends_with("rename.py")), "{p:?}");
    assert!(p.start_ticks > 0 && !p.exited_before_inspection);
    assert!(agent.stats().await.renames >= 1);

    // The reclaimer decides on it as on an exec, whether it was running
    // before it connected (its snapshot) ...
    let dir = world_readable_tempdir();
    let rules = write_file(
        dir.path(),
        "rules.toml",
        &format!("match_commands = [\"{name}\"]\n"),
    );
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[]);
    reclaimer.wait_log("dry-run: would merge-PATCH", 1, WAIT);
    stop(child);
    reclaimer.wait_log("armed again", 1, WAIT);
    // ... or renamed while it watches.
    let (child, mut out) = rename(&name, false);
    assert_eq!(line(&mut out), "leader");
    let logs = reclaimer.wait_log("dry-run: would merge-PATCH", 2, WAIT);
    assert!(logs.contains(&format!("pid={}", child.id())), "{logs}");
    stop(child);
}

#[tokio::test]
async fn a_thread_that_renames_itself_is_not_the_process() {
    let agent = Agent::start(&[]);
    let name = unique("ewthread");
    let req = WatchRequest {
        comms: vec![name.clone()],
        ..live(false)
    };
    let mut stream = agent.watch(req).await;
    let ignored = agent.stats().await.ignored_kernel_events;
    let (mut child, mut out) = rename(&name, true);
    assert_eq!(line(&mut out), "thread");
    let pid = child.id() as i32;
    // Longer than the audit's interval in this test is not needed: the
    // leader's comm is still python3, which nobody selects.
    let quiet = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
    assert!(quiet.is_err(), "a thread's rename was sent: {quiet:?}");
    assert!(
        agent.stats().await.ignored_kernel_events > ignored,
        "the thread's comm event came and was dropped"
    );
    // The same stream gets the leader's rename that follows.
    writeln!(child.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(line(&mut out), "leader");
    let ev = next(&mut stream, WAIT).await;
    assert!(
        matches!(&ev.kind, Some(Kind::Exec(p)) if p.pid == pid && p.renamed),
        "{ev:?}"
    );
    stop(child);
}
