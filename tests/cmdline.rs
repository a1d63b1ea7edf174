//! Command lines longer than the agent's read limit, against the real agent
//! and reclaimer: a substring past the cut still selects the process and
//! still fires a rule, as it would on the whole line.
#![cfg(target_os = "linux")]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use execwatch::proto::{watch_event::Kind, Process, WatchRequest};
use support::*;

const WAIT: Duration = Duration::from_secs(20);
/// The agent's default `--max-argv-bytes`.
const MAX_ARGV_BYTES: usize = 32 * 1024;
/// What the agent reads of a line at first (the limit and one byte to tell
/// a cut), then each chunk it reads on to search the rest.
const HEAD: usize = MAX_ARGV_BYTES + 1;
const CHUNK: usize = 64 * 1024;

/// `sh -c 'read x' sh <args>`: a shell that holds still until its stdin (a
/// pipe the test owns) closes, whatever its arguments. Its command line is
/// `sh\0-c\0read x\0sh\0` and then `args`, each NUL-terminated.
fn holder(args: &[String]) -> Child {
    Command::new("sh")
        .args(["-c", "read x", "sh"])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

/// Bytes of the holder's command line before `args`.
const HOLDER_PREFIX: usize = "sh\0-c\0read x\0sh\0".len();

/// 100,000 one-byte arguments (200 KB with their NULs), then `tail`.
fn java_like(tail: &str) -> Vec<String> {
    let mut args = vec!["x".to_string(); 100_000];
    args.push(tail.to_string());
    args
}

/// Filler arguments so that `pattern`, the argument after them, starts
/// `before` bytes ahead of offset `at` of the holder's command line.
fn straddling(at: usize, before: usize, pattern: &str) -> Vec<String> {
    // One filler argument of the right length, with its NUL.
    let filler = at - before - HOLDER_PREFIX - 1;
    vec!["f".repeat(filler), pattern.to_string()]
}

fn unique(what: &str) -> String {
    format!(
        "{what}-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    )
    .replace([' ', '{', '}', ':', ','], "")
}

async fn exec_of(stream: &mut tonic::Streaming<execwatch::proto::WatchEvent>, pid: u32) -> Process {
    let (ev, _) = until(stream, WAIT, |ev| is_process(ev, pid, false)).await;
    match ev.kind {
        Some(Kind::Exec(p)) => p,
        other => panic!("not an exec: {other:?}"),
    }
}

#[tokio::test]
async fn a_substring_past_the_cut_selects_the_process_and_is_carried() {
    let agent = Agent::start(&[]);
    let main = unique("com.vendor.Main");
    // The pattern straddles the cut itself, and the first chunk boundary
    // past it, a third of it on either side.
    let (cut, boundary) = (unique("cut"), unique("boundary"));
    let mut stream = agent
        .watch(WatchRequest {
            argv_substrings: vec![main.clone(), cut.clone(), boundary.clone()],
            ..live(false)
        })
        .await;

    // A long line without any of them is not sent: the first event is the
    // one that follows it.
    let mut other = holder(&java_like("com.vendor.Other"));
    let mut java = holder(&java_like(&main));
    let p = exec_of(&mut stream, java.id()).await;
    assert!(p.argv_truncated, "cut at the limit");
    assert_eq!(p.argv_matches, [main.as_str()]);
    let carried: usize = p.argv.iter().map(|a| a.len() + 1).sum();
    assert!(carried <= MAX_ARGV_BYTES + 1, "{carried} bytes carried");
    assert!(
        !p.argv.iter().any(|a| a.contains(&main)),
        "only the start is carried"
    );

    for (at, pattern) in [(HEAD, &cut), (HEAD + CHUNK, &boundary)] {
        let mut child = holder(&straddling(at, pattern.len() / 3, pattern));
        let p = exec_of(&mut stream, child.id()).await;
        assert!(p.argv_truncated);
        assert_eq!(p.argv_matches, [pattern.as_str()], "straddling offset {at}");
        drop(child.stdin.take());
        child.wait().unwrap();
    }
    for child in [&mut other, &mut java] {
        drop(child.stdin.take());
        child.wait().unwrap();
    }
}

#[test]
fn the_reclaimer_fires_on_a_substring_past_the_cut() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let main = unique("com.vendor.Main");
    let toml = format!("match_argv_substrings = [\"{main}\"]\n");
    let rules = write_file(dir.path(), "rules.toml", &toml);
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    let mut java = holder(&java_like(&main));
    let logs = reclaimer.wait_log("dry-run: would merge-PATCH", 1, WAIT);
    assert!(logs.contains(&format!("process-match: {main}")), "{logs}");
    drop(java.stdin.take());
    java.wait().unwrap();
}
