//! Secrets in command lines, redacted by the real agent before they reach
//! the stream: live exec events of both detectors and snapshot entries,
//! UTF-8 and not, and nothing changed without the flags.
#![cfg(target_os = "linux")]

mod support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Command};
use std::time::Duration;

use execwatch::proto::{watch_event::Kind, Process, WatchEvent, WatchRequest};
use prost::Message;
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// A shell that stays alive with secrets in its command line: `--password=`,
/// `--token <next>`, and a non-UTF-8 password.
fn spawn_with_secrets() -> Child {
    Command::new("bash")
        .args([
            "-c",
            "sleep 30; :",
            "ewsecret",
            "--password=hunter2",
            "--token",
        ])
        .arg("t0ps3cret")
        .arg(OsStr::from_bytes(b"--password=hun\xffter3"))
        .arg("--user=bob")
        .spawn()
        .unwrap()
}

/// The secrets, none of which may appear anywhere in a redacted event.
const SECRETS: [&[u8]; 3] = [b"hunter2", b"t0ps3cret", b"ter3"];

/// The record of `pid` in `ev`.
fn record(ev: &WatchEvent) -> &Process {
    match &ev.kind {
        Some(Kind::Exec(p) | Kind::Existing(p)) => p,
        other => panic!("not a process: {other:?}"),
    }
}

/// Asserts `ev` carries the shell's command line redacted, and no secret.
fn assert_redacted(ev: &WatchEvent, what: &str) {
    let p = record(ev);
    assert_eq!(
        p.argv[3..],
        [
            "ewsecret",
            "--password=<redacted>",
            "--token",
            "<redacted>",
            "--password=<redacted>",
            "--user=bob",
        ],
        "{what}"
    );
    assert!(p.argv_redacted, "{what}");
    // The only invalid bytes were in the secret: the argv is exact again.
    assert!(!p.argv_lossy && p.argv_raw.is_empty(), "{what}: {p:?}");
    let bytes = ev.encode_to_vec();
    for secret in SECRETS {
        let found = bytes.windows(secret.len()).any(|w| w == secret);
        assert!(
            !found,
            "{what}: {:?} is in the event",
            String::from_utf8_lossy(secret)
        );
    }
}

/// Watches with a snapshot and returns the snapshot's entries.
async fn watch_with_snapshot(agent: &Agent) -> (tonic::Streaming<WatchEvent>, Vec<WatchEvent>) {
    let request = WatchRequest {
        include_exits: false,
        skip_snapshot: false,
        ..Default::default()
    };
    let mut stream = agent.watch(request).await;
    let existing = snapshot(&mut stream).await;
    (stream, existing)
}

#[tokio::test]
async fn secrets_are_redacted_in_snapshots_and_live_events_of_both_detectors() {
    let redact = [
        "--redact-argv=^--password=(.+)",
        "--redact-argv-next=^--token$",
    ];
    for detector in ["--detector=netlink", "--detector=poll"] {
        let mut args = vec![detector, "--poll-interval=50ms"];
        args.extend(redact);
        let agent = Agent::start(&args);
        let before = spawn_with_secrets();
        wait_exec(before.id(), "bash");
        let (mut stream, existing) = watch_with_snapshot(&agent).await;
        let entry = existing
            .iter()
            .find(|ev| is_process(ev, before.id(), true))
            .expect("the shell in the snapshot");
        assert_redacted(entry, &format!("{detector}: snapshot"));

        let live = spawn_with_secrets();
        let (ev, _) = until(&mut stream, WAIT, |ev| is_process(ev, live.id(), false)).await;
        assert_redacted(&ev, &format!("{detector}: live exec"));
        stop(before);
        stop(live);
        let logs = agent.logs();
        assert!(logs.contains("argv redaction on"), "{logs}");
        assert!(!logs.contains("hunter2"), "{logs}");
    }
}

#[tokio::test]
async fn the_common_preset_redacts_both_forms() {
    let agent = Agent::start(&["--redact-argv-preset=common"]);
    let mut stream = agent.watch(live(false)).await;
    let child = spawn_with_secrets();
    let (ev, _) = until(&mut stream, WAIT, |ev| is_process(ev, child.id(), false)).await;
    stop(child);
    assert_redacted(&ev, "preset common");
}

#[tokio::test]
async fn without_the_flags_argv_is_exactly_the_command_line() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;
    let child = spawn_with_secrets();
    let (ev, _) = until(&mut stream, WAIT, |ev| is_process(ev, child.id(), false)).await;
    stop(child);
    let p = record(&ev);
    assert!(!p.argv_redacted);
    assert_eq!(p.argv[4], "--password=hunter2");
    assert_eq!(p.argv[6], "t0ps3cret");
    assert!(p.argv_lossy);
    assert_eq!(p.argv_raw[7], b"--password=hun\xffter3");
    assert!(!agent.logs().contains("argv redaction on"));
}

/// The reclaimer sees only what the agent streams: its rules match the
/// redacted command line, never the secret.
#[test]
fn the_reclaimer_matches_the_redacted_command_line() {
    const DECISION: &str = "dry-run: would merge-PATCH";
    let agent = Agent::start(&["--redact-argv=^--password=(.+)"]);
    let dir = world_readable_tempdir();
    let redacted = write_file(
        dir.path(),
        "redacted.toml",
        "match_argv_substrings = [\"ewsecret --password=<redacted>\"]\n",
    );
    let secret = write_file(
        dir.path(),
        "secret.toml",
        "match_argv_substrings = [\"hunter2\", \"ewmarker\"]\n",
    );
    let start = |rules: &str| Reclaimer::dry_run(&agent, rules, &[]);
    let (on_redacted, on_secret) = (start(&redacted), start(&secret));
    on_redacted.wait_log("connected to the agent", 1, WAIT);
    on_secret.wait_log("connected to the agent", 1, WAIT);
    let child = spawn_with_secrets();
    on_redacted.wait_log(DECISION, 1, WAIT);
    // A later launch both rule sets see after the secret one: once the
    // other reclaimer fires on it, it has judged the secret one too.
    let marker = Command::new("bash")
        .args(["-c", "sleep 30; :", "ewmarker"])
        .spawn()
        .unwrap();
    let logs = on_secret.wait_log(DECISION, 1, WAIT);
    stop(child);
    stop(marker);
    assert!(logs.contains("process-match: ewmarker"), "{logs}");
    assert!(!logs.contains("process-match: hunter2"), "{logs}");
}
