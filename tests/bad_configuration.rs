//! Bad configuration met by the real binaries: a socket or status file that
//! cannot be created stops them at start with the path named, and rules
//! that disappear at run time (a rules file emptied or deleted, a ConfigMap
//! deleted or emptied, against a real kube-apiserver) never disarm a node
//! that has rules when `--keep-rules-when-missing` asks for that (by
//! default they disarm: tests/reclaimer_kube.rs,
//! tests/reclaimer_dry_run.rs). Flag bounds are in the tables of tests/agent_security.rs
//! and tests/reclaimer_dry_run.rs; rule documents in reclaimer/rules/tests.rs.
#![cfg(target_os = "linux")]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::apiserver::*;
use support::*;

const WAIT: Duration = Duration::from_secs(20);
const DECISION: &str = "dry-run: would merge-PATCH";
const KEEPING: &str = "keeping the rules in force until it holds rules again";

/// Runs `binary` with `args` as `uid` (0: as is) and returns its output; it
/// must exit on its own.
fn run_as(binary: &str, args: &[&str], uid: u32) -> Output {
    let mut cmd = Command::new(binary);
    cmd.args(args).env_remove("RUST_BACKTRACE");
    if uid != 0 {
        cmd.uid(uid).gid(uid);
    }
    cmd.output().unwrap()
}

/// A root-owned directory other users can enter but not write, and a
/// regular file beside it.
fn unwritable_dir_and_a_file() -> (tempfile::TempDir, String, String) {
    let dir = world_readable_tempdir();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = write_file(dir.path(), "file", "not a directory");
    (dir, ro.to_str().unwrap().to_owned(), file)
}

#[test]
fn an_unusable_socket_directory_stops_the_agent_with_the_path_named() {
    let (_dir, ro, file) = unwritable_dir_and_a_file();
    let agent = env!("CARGO_BIN_EXE_agent");
    // (socket, uid, words the error must contain)
    let cases: [(String, u32, &[&str]); 4] = [
        (
            format!("{ro}/agent.sock"),
            65534,
            &[
                "/ro/agent.sock",
                "the directory",
                "/ro is not writable by uid 65534",
            ],
        ),
        (
            format!("{ro}/sub/agent.sock"),
            65534,
            &[
                "cannot create the socket directory",
                "/ro/sub",
                "Permission denied",
            ],
        ),
        (
            format!("{file}/agent.sock"),
            0,
            &["/file/agent.sock", "/file exists and is not a directory"],
        ),
        (
            format!("{file}/a/b/agent.sock"),
            0,
            &["/file exists and is not a directory"],
        ),
    ];
    for (socket, uid, words) in cases {
        // Uid 65534 as deployed: the agent subscribes as root, then meets
        // the directory as 65534.
        let out = match uid {
            0 => run_as(agent, &["--socket", &socket], 0),
            DEPLOYED_UID => deployed_agent()
                .args(["--socket", &socket])
                .env_remove("RUST_BACKTRACE")
                .output()
                .unwrap(),
            other => unreachable!("uid {other}"),
        };
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{socket}: {err}");
        for word in words {
            assert!(err.contains(word), "{socket}: no {word:?} in {err}");
        }
        assert_eq!(
            err.matches("Error:").count(),
            1,
            "{socket}: one error: {err}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn an_unwritable_status_file_stops_the_reclaimer_at_start() {
    let (_dir, ro, file) = unwritable_dir_and_a_file();
    let reclaimer = env!("CARGO_BIN_EXE_reclaimer");
    let cases: [(String, u32, &[&str]); 3] = [
        (
            format!("{ro}/reclaimer.status"),
            65534,
            &[
                "/ro/reclaimer.status",
                "--status-file",
                "uid 65534",
                "Permission denied",
            ],
        ),
        (
            format!("{file}/reclaimer.status"),
            0,
            &["/file/reclaimer.status", "--status-file", "Not a directory"],
        ),
        (
            "/nonexistent-execwatch/reclaimer.status".to_owned(),
            0,
            &["/nonexistent-execwatch/reclaimer.status", "must exist"],
        ),
    ];
    for (status, uid, words) in cases {
        let args = [
            "--dry-run",
            "--socket",
            "/nonexistent/agent.sock",
            "--status-file",
            &status,
        ];
        let out = run_as(reclaimer, &args, uid);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{status}: {err}");
        for word in words {
            assert!(err.contains(word), "{status}: no {word:?} in {err}");
        }
    }
}

/// A rules file too large to be a rules document stops the reclaimer at
/// start, with the file and its real size named (it is refused before a
/// byte is read).
#[test]
fn a_huge_rules_file_stops_the_reclaimer_at_start_with_the_path_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    std::fs::write(&path, "#".repeat(3 << 20)).unwrap();
    let socket = dir.path().join("agent.sock");
    let args = [
        "--dry-run",
        "--socket",
        socket.to_str().unwrap(),
        "--rules-file",
        path.to_str().unwrap(),
    ];
    let out = run_as(env!("CARGO_BIN_EXE_reclaimer"), &args, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = format!(
        "Error: cannot read the rules file {}: the file is 3145728 bytes long",
        path.display()
    );
    assert!(err.contains(&line), "no {line:?} in {err}");
}

#[test]
fn an_emptied_or_deleted_rules_file_keeps_the_rules_when_asked() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let prog = UniqueProgram::new("ewkeep");
    let rules = rules_for(dir.path(), "rules.toml", &prog, "");
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &["--keep-rules-when-missing"]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    reclaimer.wait_log("rules loaded from file", 1, WAIT);

    // Emptied (a truncating editor mid-save, a bad template), then deleted:
    // each time the program still fires.
    let steps: [(&str, &dyn Fn()); 2] = [
        ("is empty (no key set)", &|| {
            std::fs::write(&rules, "").unwrap()
        }),
        ("cannot be read (No such file", &|| {
            std::fs::remove_file(&rules).unwrap()
        }),
    ];
    for (round, (why, step)) in steps.into_iter().enumerate() {
        step();
        let logs = reclaimer.wait_log(why, 1, WAIT);
        let line = logs.lines().find(|l| l.contains(why)).unwrap();
        assert!(line.contains(KEEPING), "{line}");
        assert!(
            line.contains("rules=commands=1 "),
            "names the rules kept: {line}"
        );
        let running = prog.spawn(30, &[]);
        reclaimer.wait_log(DECISION, round + 1, WAIT);
        stop(running);
        reclaimer.wait_log("armed again", round + 1, WAIT);
    }
    assert_eq!(reclaimer.logs().matches("rules loaded from").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_emptied_configmap_keeps_the_rules_when_asked() {
    let host = HostNode::without_rules("keep").await;
    let (admin, node) = (&host.admin, &host.name);
    let agent = Agent::start(&[]);
    let prog = UniqueProgram::new("ewcmkeep");
    let reclaimer = host.start_reclaimer_with(&agent.socket, &["--keep-rules-when-missing"]);
    let wait_log = |needle: &str, times| {
        tokio::task::block_in_place(|| reclaimer.wait_log(needle, times, WAIT))
    };
    // No ConfigMap at start: not armed, and it says so.
    wait_log("is absent: no rules yet; this node is not armed", 1);
    wait_log("); armed", 1);
    put_rules(
        admin,
        node,
        &format!("match_commands = [\"{}\"]\n", prog.name),
    )
    .await;
    wait_log("rules=commands=1 ", 1);

    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), NAMESPACE);
    let without_data: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": rules_name(node)}})).unwrap();
    let reason = format!("process-match: {}", prog.name);
    // Deleted; recreated with no data; its reclaim.toml emptied; then only
    // a comment: each time the rules stay in force and the program fires.
    let whys = [
        "was deleted",
        "has no reclaim.toml key",
        "has an empty reclaim.toml (no key set)",
        "has an empty reclaim.toml (no key set)",
    ];
    for (round, why) in whys.into_iter().enumerate() {
        match round {
            0 => delete_rules(admin, node).await,
            1 => drop(
                configmaps
                    .create(&PostParams::default(), &without_data)
                    .await
                    .unwrap(),
            ),
            2 => put_rules(admin, node, "").await,
            _ => put_rules(admin, node, "# disarmed? no: explicit rules disarm\n").await,
        }
        let times = if round == 3 { 2 } else { 1 };
        let logs = wait_log(why, times);
        let line = logs.lines().rfind(|l| l.contains(why)).unwrap();
        assert!(line.contains(KEEPING), "{line}");
        assert!(
            line.contains("rules=commands=1 "),
            "names the rules kept: {line}"
        );
        let running = prog.spawn(60, &[]);
        eventually(
            &format!("round {round}: {reason:?} on the Node"),
            WAIT,
            || async {
                let n = get_node(admin, node).await;
                (annotation(&n, REQUESTED) == Some("true")
                    && annotation(&n, REASON) == Some(&reason))
                .then_some(())
            },
        )
        .await;
        stop(running);
        clear_request(admin, node).await;
        wait_log("); armed", round + 2);
    }
    // Explicitly inert rules do disarm, at once.
    put_rules(admin, node, "match_commands = []\n").await;
    // (Absent at start is no rule set loaded: one inert load, two in all.)
    wait_log("rules=inert", 1);
    let logs = reclaimer.logs();
    assert_eq!(logs.matches("rules loaded from").count(), 2, "{logs}");
}
