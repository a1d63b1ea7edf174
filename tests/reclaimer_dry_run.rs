//! The reclaimer against the real agent, without a cluster: rules from a
//! file (and the built-in demo rules), decisions in `--dry-run` logs.
#![cfg(target_os = "linux")]

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(15);
const DECISION: &str = "dry-run: would merge-PATCH";

#[test]
fn the_demo_rules_fire_on_the_readme_demo() {
    let agent = Agent::start(&[]);
    let socket = agent.socket.to_str().unwrap();
    let reclaimer = Reclaimer::start(&["--dry-run", "--socket", socket], &[]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    reclaimer.wait_log("rules loaded from embedded demo rules", 1, WAIT);
    let status = Command::new("bash")
        .args(["-c", "exec -a execwatch-demo sleep 1"])
        .status()
        .unwrap();
    assert!(status.success());
    let logs = reclaimer.wait_log(DECISION, 1, WAIT);
    assert!(
        logs.contains(r#""5spot.finos.org/reclaim-reason":"process-match: execwatch-demo""#),
        "{logs}"
    );
    assert!(
        logs.contains(r#""5spot.finos.org/reclaim-requested":"true""#),
        "{logs}"
    );
    assert!(
        logs.contains("<hidden: --log-argv>"),
        "argv stays out of logs by default"
    );
    // Once the demo is gone the reclaimer is armed again.
    reclaimer.wait_log("armed again", 1, WAIT);
    assert!(reclaimer.terminate().success());
}

#[test]
fn a_real_jvm_launch_fires_and_a_running_one_fires_after_a_restart() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let rules = write_file(dir.path(), "rules.toml", "match_commands = [\"java\"]\n");
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &["--log-argv"]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    let java = Command::new("java")
        .args([
            "-Xshare:auto",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            "/nonexistent",
            "ExecwatchNoSuchMain",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let logs = reclaimer.wait_log(DECISION, 1, WAIT);
    assert!(logs.contains("process-match: java"), "{logs}");
    assert!(
        logs.contains("ExecwatchNoSuchMain"),
        "--log-argv puts argv in the log"
    );
    stop(java);
    drop(reclaimer);

    // A JVM that is already running when the reclaimer starts still counts.
    let prog = UniqueProgram::new("java");
    // comm is the file name: a copy of sleep named java12345 is not "java",
    // so name the rule after the copy.
    let rules = rules_for(dir.path(), "rules2.toml", &prog, "");
    let running = prog.spawn(30, &[]);
    wait_exec(running.id(), &prog.name);
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[]);
    let logs = reclaimer.wait_log(DECISION, 1, WAIT);
    assert!(
        logs.contains(&format!("process-match: {}", prog.name)),
        "{logs}"
    );
    stop(running);
}

#[test]
fn editing_the_rules_file_arms_and_disarms_and_bad_edits_keep_the_last_good_rules() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let rules = write_file(dir.path(), "rules.toml", "# inert: nothing configured\n");
    let prog = UniqueProgram::new("ewarm");
    let running = prog.spawn(30, &[]);
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    // A blank file is no rules document: not armed (no rule set loaded).
    reclaimer.wait_log("no rules yet; this node is not armed", 1, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !reclaimer.logs().contains(DECISION),
        "inert rules never fire"
    );

    // Arm: the already-running program matches at once.
    std::fs::write(&rules, format!("match_commands = [\"{}\"]\n", prog.name)).unwrap();
    reclaimer.wait_log(DECISION, 1, WAIT);

    // A malformed edit is rejected with its line; the last good rules stay.
    std::fs::write(
        &rules,
        "match_commands = [\"x\"]\nmatch_comands = [\"typo\"]\n",
    )
    .unwrap();
    let logs = reclaimer.wait_log("rejected, keeping the last good rules", 1, WAIT);
    assert!(logs.contains("line=2") || logs.contains("line 2"), "{logs}");
    assert!(logs.contains("match_comands"), "{logs}");
    stop(running);
    reclaimer.wait_log("armed again", 1, WAIT);
    let again = prog.spawn(30, &[]);
    reclaimer.wait_log(DECISION, 2, WAIT);
    stop(again);
}

#[test]
fn bad_configuration_is_refused_at_start_with_the_input_named() {
    let dir = world_readable_tempdir();
    let bad = write_file(dir.path(), "bad.toml", "match_commands = \"java\"\n");
    let huge = write_file(dir.path(), "huge.toml", &"#".repeat((1 << 20) + 1));
    let deep = write_file(
        dir.path(),
        "deep.toml",
        &format!(
            "match_commands = {}{}",
            "[".repeat(50_000),
            "]".repeat(50_000)
        ),
    );
    let big_number = write_file(dir.path(), "n.toml", "poll_interval_ms = 1e300\n");
    let long_node = "n".repeat(240);
    let long_socket = "/tmp/".to_owned() + &"s".repeat(110);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    // (arguments, words the error must contain, exit code if it matters)
    let cases: [(&[&str], &[&str], Option<i32>); 14] = [
        (
            &["--dry-run", "--rules-file", &huge],
            &["huge.toml", "1048577 bytes long, at most 1048576"],
            Some(1),
        ),
        (
            &["--dry-run", "--rules-file", &deep],
            &["deep.toml", "line 1", "recursion"],
            Some(1),
        ),
        (
            &["--dry-run", "--rules-file", &big_number],
            &["n.toml", "`poll_interval_ms`", "expected i64"],
            Some(1),
        ),
        (
            &["--recheck-interval", "1ms"],
            &["--recheck-interval", "from 100ms to 10m"],
            Some(2),
        ),
        (
            &["health-check", "--status-file", "/x", "--max-age", "2s"],
            &["--max-age", "from 10s to 60m"],
            Some(2),
        ),
        (
            &["--node-name", "My_Node"],
            &["--node-name", "RFC 1123"],
            Some(2),
        ),
        (
            &["--node-name", &long_node, "--skip-host-id-check"],
            &["rules ConfigMap name", "1 to 253", "set --configmap"],
            Some(1),
        ),
        (
            &["--dry-run", "--socket", &long_socket],
            &["--socket", "at most 107"],
            Some(2),
        ),
        (
            &["--dry-run", "--metrics-addr", "localhost:99999"],
            &["--metrics-addr", "localhost:99999"],
            Some(2),
        ),
        (
            &["--dry-run", "--rules-file", &bad],
            &["bad.toml", "line 1"],
            None,
        ),
        (&[], &["--node-name"], None),
        (
            &[
                "--node-name",
                "n1",
                "--machine-id-file",
                "/nonexistent/machine-id",
            ],
            &["/nonexistent/machine-id"],
            None,
        ),
        (&["--recheck-interval", "soon"], &["soon"], Some(2)),
        (
            &["--dry-run", "--metrics-addr", &taken],
            &["cannot serve metrics on", &taken, "in use"],
            Some(1),
        ),
    ];
    for (args, words, code) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_reclaimer"))
            .args(args)
            .env_remove("NODE_NAME")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        for word in words {
            assert!(err.contains(word), "{args:?}: no {word:?} in {err}");
        }
        if let Some(code) = code {
            assert_eq!(out.status.code(), Some(code), "{args:?}");
        }
    }
}

#[test]
fn the_reclaimer_waits_for_the_agent_and_survives_its_restart() {
    let dir = world_readable_tempdir();
    let socket = dir.path().join("agent.sock");
    let rules = write_file(
        dir.path(),
        "rules.toml",
        "match_commands = [\"ewrestart\"]\n",
    );
    let reclaimer = Reclaimer::start(
        &[
            "--dry-run",
            "--socket",
            socket.to_str().unwrap(),
            "--rules-file",
            &rules,
        ],
        &[],
    );
    reclaimer.wait_log("cannot reach the agent", 1, WAIT);

    // An agent appears on that socket: the reclaimer connects by itself.
    let agent = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--socket")
        .arg(&socket)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    stop(agent);
    reclaimer.wait_log("lost the agent stream", 1, WAIT);

    // The program starts while no agent runs; the next agent's snapshot has it.
    let running = UniqueProgram::named("ewrestart").spawn(30, &[]);
    let agent = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--socket")
        .arg(&socket)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let logs = reclaimer.wait_log(DECISION, 1, WAIT);
    assert!(logs.contains("process-match: ewrestart"), "{logs}");
    stop(running);
    stop(agent);
}

#[test]
fn pod_processes_do_not_count_unless_the_scope_is_all() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let prog = UniqueProgram::new("ewpod");
    let host_only = rules_for(dir.path(), "host.toml", &prog, "");
    let all = rules_for(dir.path(), "all.toml", &prog, "scope = \"all\"\n");
    let cgroup = PodCgroup::create();

    // The agent sees the process as a pod's.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut stream = rt.block_on(async { agent.watch(live(false)).await });
    let scoped = Reclaimer::dry_run(&agent, &host_only, &[]);
    let everything = Reclaimer::dry_run(&agent, &all, &[]);
    scoped.wait_log("connected to the agent", 1, WAIT);
    everything.wait_log("connected to the agent", 1, WAIT);
    let in_pod = cgroup.spawn(&prog.path, "30");
    let ev = rt.block_on(async {
        until(&mut stream, WAIT, |ev| matches!(&ev.kind, Some(execwatch::proto::watch_event::Kind::Exec(p)) if p.comm == prog.name)).await.0
    });
    let Some(execwatch::proto::watch_event::Kind::Exec(p)) = ev.kind else {
        unreachable!()
    };
    let cg = p.cgroup.unwrap();
    assert!(cg.in_kubernetes_pod, "{cg:?}");
    assert_eq!(cg.pod_uid, cgroup.pod_uid);
    assert_eq!(cg.container_id, TEST_CONTAINER_ID);

    everything.wait_log(DECISION, 1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !scoped.logs().contains(DECISION),
        "scope host ignores pod processes:\n{}",
        scoped.logs()
    );
    stop(in_pod);

    // The same program outside the pod fires the host-scoped reclaimer.
    let outside = prog.spawn(30, &[]);
    scoped.wait_log(DECISION, 1, WAIT);
    stop(outside);
}

#[test]
fn health_check_follows_the_status_file() {
    let dir = world_readable_tempdir();
    let status = dir.path().join("reclaimer.status");
    let status_arg = status.to_str().unwrap();
    let health = |max_age: &str| {
        Command::new(env!("CARGO_BIN_EXE_reclaimer"))
            .args([
                "health-check",
                "--status-file",
                status_arg,
                "--max-age",
                max_age,
            ])
            .output()
            .unwrap()
    };
    let missing = health("30s");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("reclaimer.status"),
        "{missing:?}"
    );

    let reclaimer = Reclaimer::start(
        &[
            "--dry-run",
            "--socket",
            "/nonexistent/agent.sock",
            "--status-file",
            status_arg,
        ],
        &[],
    );
    let start = std::time::Instant::now();
    while !status.exists() {
        assert!(start.elapsed() < WAIT, "no status file written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = health("30s");
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("agent_connected=false"),
        "{ok:?}"
    );
    // Alive, but not ready: it has no stream from the agent.
    let not_ready = Command::new(env!("CARGO_BIN_EXE_reclaimer"))
        .args(["health-check", "--status-file", status_arg, "--ready"])
        .output()
        .unwrap();
    assert!(!not_ready.status.success());
    assert!(
        String::from_utf8_lossy(&not_ready.stderr).contains("not connected to the agent"),
        "{not_ready:?}"
    );
    drop(reclaimer);
    // Once the loop is gone the file ages past any limit (the smallest
    // --max-age is 10s: twice the 5 s rewrite period).
    std::thread::sleep(Duration::from_millis(11_100));
    let stale = health("10s");
    assert!(!stale.status.success());
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("not running"),
        "{stale:?}"
    );
}

#[test]
fn metrics_count_events_matches_and_rule_errors() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let prog = UniqueProgram::new("ewmet");
    let rules = rules_for(dir.path(), "rules.toml", &prog, "");
    // A free loopback port, released just before the reclaimer takes it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &["--metrics-addr", &addr]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    let child = prog.spawn(30, &[]);
    reclaimer.wait_log(DECISION, 1, WAIT);
    std::fs::write(dir.path().join("rules.toml"), "bogus = 1\n").unwrap();
    reclaimer.wait_log("rejected, keeping the last good rules", 1, WAIT);
    stop(child);

    let scrape = || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        text
    };
    let text = scrape();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(value("execwatch_reclaimer_events_total") >= 1.0);
    assert_eq!(value("execwatch_reclaimer_matches_total"), 1.0);
    assert_eq!(value("execwatch_reclaimer_rule_reloads_total"), 1.0);
    assert_eq!(value("execwatch_reclaimer_rule_errors_total"), 1.0);
    assert_eq!(value("execwatch_reclaimer_rules_invalid"), 1.0);
    assert_eq!(value("execwatch_reclaimer_rules_inert"), 0.0);
    assert_eq!(
        value("execwatch_reclaimer_patches_total"),
        0.0,
        "dry-run writes nothing"
    );
    assert!(text.contains("# TYPE execwatch_reclaimer_patch_latency_seconds histogram"));
}

/// No rules document disarms by default: an emptied rules file drops the
/// rules (a launch then decides nothing), rules written again arm at once
/// (the program that runs fires), and a removed file drops them again.
#[test]
fn an_emptied_or_removed_rules_file_disarms() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let prog = UniqueProgram::new("ewdrop");
    let rules = rules_for(dir.path(), "rules.toml", &prog, "");
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    reclaimer.wait_log("rules loaded from file", 1, WAIT);

    std::fs::write(&rules, "").unwrap();
    let logs = reclaimer.wait_log("is empty (no key set): rules dropped", 1, WAIT);
    let line = logs.lines().find(|l| l.contains("rules dropped")).unwrap();
    assert!(line.contains("dropped=commands=1 "), "{line}");
    let running = prog.spawn(30, &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!reclaimer.logs().contains(DECISION), "{}", reclaimer.logs());

    std::fs::write(&rules, prog.rules()).unwrap();
    reclaimer.wait_log("rules loaded from file", 2, WAIT);
    reclaimer.wait_log(DECISION, 1, WAIT);

    std::fs::remove_file(&rules).unwrap();
    reclaimer.wait_log("cannot be read (No such file", 1, WAIT);
    reclaimer.wait_log("rules dropped", 2, WAIT);
    stop(running);
}

/// A free loopback address, released just before the reclaimer takes it.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Sends `request` (a whole HTTP/1.1 request) to `addr`; returns the
/// status line and the body.
fn http(addr: &str, request: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to --metrics-addr");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

const SCRAPE: &str = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

/// One scrape of the real reclaimer shows the agent's counters too, and
/// passes `promtool check metrics` (the Prometheus project's own linter);
/// the server answers only `/metrics`.
#[test]
fn a_scrape_shows_the_whole_pod_and_passes_promtool() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let prog = UniqueProgram::new("ewprom");
    let rules = rules_for(dir.path(), "rules.toml", &prog, "");
    let addr = free_addr();
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &["--metrics-addr", &addr]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    let running = prog.spawn(30, &[]);
    reclaimer.wait_log(DECISION, 1, WAIT);
    stop(running);

    // The agent's counters arrive with the first GetStats after connecting.
    let deadline = std::time::Instant::now() + WAIT;
    let body = loop {
        let (status, body) = http(&addr, SCRAPE);
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        if body.contains("execwatch_agent_execs_total ") {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agent metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
            .parse()
            .unwrap()
    };
    assert!(value("execwatch_agent_execs_total") >= 1.0);
    assert_eq!(value("execwatch_agent_subscribers"), 1.0, "the reclaimer");
    assert_eq!(value("execwatch_reclaimer_matches_total"), 1.0);
    assert!(
        body.contains("execwatch_agent_detector_info{detector=\"netlink\""),
        "{body}"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/run.sh installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promtool check metrics: {said}\n{body}"
    );
    assert!(said.trim().is_empty(), "promtool found problems: {said}");

    let (status, _) = http(&addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(&addr, "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, body) = http(&addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
}

/// Out of descriptors, the metrics server cannot accept: it says so, and
/// serves again once connections close (it used to stop for good, silently,
/// while the reclaimer looked healthy).
#[test]
fn the_metrics_server_survives_running_out_of_descriptors() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let prog = UniqueProgram::new("ewfds");
    let rules = rules_for(dir.path(), "rules.toml", &prog, "");
    let addr = free_addr();
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &["--metrics-addr", &addr]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    reclaimer.wait_log("serving metrics", 1, WAIT);
    let pid = reclaimer.child.id().to_string();
    let limited = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=40:40"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(limited.success());

    // 60 idle connections: the kernel completes them all, the reclaimer
    // runs out of descriptors accepting them.
    let idle: Vec<std::net::TcpStream> = (0..60)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let logs = reclaimer.wait_log("metrics server: cannot accept a connection", 1, WAIT);
    assert!(logs.contains("Too many open files"), "{logs}");
    drop(idle);

    let (status, body) = http(&addr, SCRAPE);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("execwatch_reclaimer_up 1\n"), "{body}");
    reclaimer.wait_log("metrics server: accepting connections again", 1, WAIT);
}
