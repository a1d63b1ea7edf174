//! Who may use the agent's socket, and how it treats what is already there.
#![cfg(target_os = "linux")]

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn socket_mode_defaults_to_0660() {
    let agent = Agent::start(&[]);
    let meta = std::fs::metadata(&agent.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

/// A peer outside `--allow-uid` is refused when it connects: its connection
/// is closed before any HTTP/2, so it can neither learn anything nor hold a
/// connection open; the refusal is logged and counted.
#[test]
fn a_peer_outside_the_allow_list_is_closed_at_once() {
    let agent = Agent::start(&["--allow-uid=4242", "--socket-mode=0666"]);
    let denied = health_check_as(&agent.socket, 65534);
    assert!(!denied.status.success());
    // A raw connection as that uid reads end of file at once.
    let out = Command::new("python3")
        .args([
            "-c",
            "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(2); t=time.time(); print(len(s.recv(64)), round(time.time()-t, 3))",
        ])
        .arg(&agent.socket)
        .uid(65534)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        said.starts_with("0 "),
        "closed at once, read nothing: {said}"
    );
    // The agent's own uid (root here) is always admitted, for its probe.
    assert!(health_check_as(&agent.socket, 0).status.success());
    assert!(agent.logs().contains("refused a peer"));
}

#[test]
fn a_listed_peer_is_admitted() {
    let agent = Agent::start(&["--allow-uid=4242,65534", "--socket-mode=0666"]);
    let ok = health_check_as(&agent.socket, 65534);
    assert!(ok.status.success(), "{ok:?}");
}

#[test]
fn the_socket_mode_keeps_other_users_out() {
    let agent = Agent::start(&[]);
    // 0660 root:root: nobody cannot even connect.
    let out = health_check_as(&agent.socket, 65534);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{out:?}"
    );
}

#[test]
fn a_stale_socket_is_replaced_but_a_regular_file_is_not() {
    let dir = world_readable_tempdir();
    let path = dir.path().join("agent.sock");
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    let agent = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--socket")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while health_check_as(&path, 0).status.code() != Some(0) {
        assert!(
            start.elapsed().as_secs() < 15,
            "agent never served on the stale path"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stop(agent);

    let file = dir.path().join("file.sock");
    std::fs::write(&file, b"not a socket").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--socket")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a socket"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
}

#[test]
fn bad_flags_are_refused_with_a_clear_message() {
    let long_socket = format!("--socket=/tmp/{}", "s".repeat(110));
    // (arguments, environment, what the error must say); every one names
    // the flag, and out-of-range values the allowed range.
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&[&str], Env, &[&str]); 13] = [
        (&["--detector=kprobe"], &[], &["kprobe"]),
        (&["--poll-interval=0s"], &[], &["greater than zero"]),
        (&["--socket-mode=999"], &[], &["octal"]),
        (&["--queue-len=0"], &[], &["queue-len"]),
        (
            &["--poll-interval=2m"],
            &[],
            &["--poll-interval", "from 10ms to 1m"],
        ),
        (
            &[],
            &[("EXECWATCH_POLL_INTERVAL", "5ms")],
            &["--poll-interval", "from 10ms to 1m"],
        ),
        (
            &["--receive-buffer=99999999999"],
            &[],
            &["--receive-buffer", "4096..=1073741824"],
        ),
        (&["--max-argv-bytes=1g"], &[], &["--max-argv-bytes", "1g"]),
        (
            &["--queue-len=1000001"],
            &[],
            &["--queue-len", "1..=1000000"],
        ),
        (&[&long_socket], &[], &["--socket", "at most 107"]),
        (
            &["health-check", "--timeout=1h"],
            &[],
            &["--timeout", "unknown unit"],
        ),
        (
            &["--redact-argv=--password=("],
            &[],
            &["--redact-argv", "pattern `--password=(`"],
        ),
        (
            &[],
            &[("EXECWATCH_REDACT_ARGV", "^--ok=(.+),x*")],
            &["--redact-argv", "pattern `x*` matches the empty string"],
        ),
    ];
    for (args, env, expect) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for word in expect {
            assert!(err.contains(word), "{args:?} {env:?}: no {word:?} in {err}");
        }
    }
}

/// The deployment runs the agent as uid 65534 with no capabilities: on this
/// kernel (>= 6.6) that is enough to subscribe and to read other users'
/// comm, cmdline, status and cgroup; exe and cwd of other users' processes
/// are reported unavailable with the reason.
#[tokio::test]
async fn the_agent_works_as_an_unprivileged_user() {
    let dir = world_readable_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("agent.sock");
    let log = dir.path().join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--socket")
        .arg(&socket)
        .arg("--socket-mode=0666")
        .uid(65534)
        .gid(65534)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !socket.exists() {
        if let Ok(Some(status)) = agent.try_wait() {
            panic!(
                "unprivileged agent exited: {status}\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(start.elapsed().as_secs() < 15, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_string()
    };
    assert!(field("Uid:").contains("65534"), "{}", field("Uid:"));
    assert_eq!(
        field("CapEff:").split_whitespace().nth(1),
        Some("0000000000000000")
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("kernel-filtered"));

    let mut client = execwatch::client::exec_events(&socket).await.unwrap();
    let mut stream = client.watch(live(false)).await.unwrap().into_inner();
    // A root-owned program: its exec arrives with comm, argv and uid; exe
    // needs CAP_SYS_PTRACE and says so.
    let prog = UniqueProgram::new("ewunpriv");
    let child = prog.spawn(30, &["0.1"]);
    let (ev, _) = until(&mut stream, Duration::from_secs(10), |ev| {
        is_process(ev, child.id(), false)
    })
    .await;
    stop(child);
    let _ = agent.kill();
    let _ = agent.wait();
    let Some(execwatch::proto::watch_event::Kind::Exec(p)) = ev.kind else {
        unreachable!()
    };
    assert_eq!(p.comm, prog.name);
    assert_eq!(p.argv[1..], ["30", "0.1"]);
    assert_eq!(p.credentials.unwrap().uid, 0);
    assert!(p.cgroup.is_some());
    assert_eq!(p.exe, None);
    let why = p
        .unavailable
        .iter()
        .find(|u| u.field == "exe")
        .expect("exe marked unavailable");
    assert!(why.reason.contains("CAP_SYS_PTRACE"), "{}", why.reason);
}
