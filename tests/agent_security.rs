//! Who may use the agent's socket, and how it treats what is already there.
#![cfg(target_os = "linux")]

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use execwatch::proto::WatchRequest;
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

/// `CapBnd` of an agent started as deploy/base starts it: CAP_SETGID (6),
/// CAP_SETUID (7) and CAP_NET_ADMIN (12), nothing else.
const DEPLOYED_BOUNDING_SET: &str = "00000000000010c0";

/// Started as deploy/base starts it (uid 0, only CAP_NET_ADMIN, CAP_SETUID
/// and CAP_SETGID), the agent subscribes, then runs as uid 65534 gid 65532
/// with no capability on every thread before it serves; it says so in its
/// log and in GetStats, and still reads what it needs: comm, argv, uid and
/// cgroup of a root-owned program, while exe (CAP_SYS_PTRACE) is reported
/// unavailable with the reason.
#[tokio::test]
async fn the_deployed_agent_holds_no_privilege_once_subscribed() {
    let policy = kernel_policy();
    let agent = Agent::start_deployed(&["--socket-mode=0666"]);
    let threads = assert_unprivileged(agent.pid(), DEPLOYED_UID, DEPLOYED_GID);
    for (tid, status) in thread_statuses(agent.pid()) {
        assert_eq!(
            status_field(&status, "CapBnd"),
            DEPLOYED_BOUNDING_SET,
            "{tid}"
        );
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{tid}");
        assert_eq!(status_field(&status, "Groups"), "", "{tid}");
    }
    let logs = agent.logs();
    assert!(
        logs.contains(
            "subscribed holding CAP_NET_ADMIN; now runs as uid 65534 gid 65532 with no capability"
        ),
        "{policy:?}:\n{logs}"
    );
    assert!(logs.contains("kernel-filtered"), "{logs}");

    // Later threads (the reader, snapshot readers, the blocking pool) hold
    // nothing either: they are started after the switch.
    let mut stream = agent.watch(WatchRequest::default()).await;
    let snap = snapshot(&mut stream).await;
    assert!(
        snap.len() > 10,
        "a snapshot as uid 65534 lists the host's processes"
    );
    let prog = UniqueProgram::new("ewunpriv");
    let child = prog.spawn(30, &["0.1"]);
    let (ev, _) = until(&mut stream, Duration::from_secs(10), |ev| {
        is_process(ev, child.id(), false)
    })
    .await;
    stop(child);
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
    let now = assert_unprivileged(agent.pid(), DEPLOYED_UID, DEPLOYED_GID);
    assert!(now >= threads, "{now} threads, {threads} at start");

    let privilege = agent.stats().await.privilege.expect("GetStats privilege");
    assert_eq!((privilege.uid, privilege.gid), (DEPLOYED_UID, DEPLOYED_GID));
    assert_eq!(privilege.capabilities, 0);
    assert!(privilege.subscribed_with_net_admin);
    assert!(privilege.switched);
    // Generous: the subscription and its probe exec take milliseconds.
    assert!(
        privilege.privileged_micros > 0 && privilege.privileged_micros < 10_000_000,
        "{privilege:?}"
    );
    println!(
        "uid 0 for {} µs after main began ({policy:?})",
        privilege.privileged_micros
    );
}

/// The pod's probes run `/agent health-check` as the container's uid 0 with
/// the run-as flags in the environment: the probe switches too, so it
/// connects as the agent's own uid, which `--allow-uid` always admits. The
/// same probe without the switch is a root peer outside the list.
#[test]
fn the_health_probe_switches_as_the_agent_does() {
    let agent = Agent::start_deployed(&["--allow-uid=65532"]);
    let probe = |cmd: &mut Command| {
        cmd.arg("--socket")
            .arg(&agent.socket)
            .args(["health-check", "--timeout=3s"])
            .output()
            .unwrap()
    };
    let switched = probe(&mut deployed_agent());
    assert!(switched.status.success(), "{switched:?}");
    assert_eq!(String::from_utf8_lossy(&switched.stdout).trim(), "SERVING");
    let as_root = probe(&mut Command::new(env!("CARGO_BIN_EXE_agent")));
    assert!(!as_root.status.success(), "{as_root:?}");
}

/// An agent asked to switch that cannot (CAP_SETUID and CAP_SETGID not
/// granted) stops before it serves, and says what it needs.
#[test]
fn an_agent_that_cannot_switch_stops_before_serving() {
    let dir = world_readable_tempdir();
    let socket = dir.path().join("agent.sock");
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all,+net_admin", "--no-new-privs", "--"])
        .arg(env!("CARGO_BIN_EXE_agent"))
        .args(["--run-as-uid=65534", "--run-as-gid=65532", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for word in [
        "cannot switch to uid 65534 gid 65532 (setgroups)",
        "Operation not permitted",
        "CAP_SETUID and CAP_SETGID",
    ] {
        assert!(err.contains(word), "no {word:?} in {err}");
    }
    assert!(!socket.exists(), "it bound its socket");
}

/// Started as uid 65534 with no capability at all, the agent does what
/// this kernel allows: where the kernel admits unprivileged listeners it
/// serves and says it needs nothing; where it refuses them, the agent
/// stops at once with a message that names the cause and both ways out
/// (and no kernel version), and `--detector=poll`, one of them, serves.
#[test]
fn without_a_capability_the_kernel_decides_and_the_agent_says_which() {
    let dir = world_readable_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("agent.sock");
    let log = dir.path().join("agent.log");
    let unprivileged = |extra: &[&str]| {
        let _ = std::fs::remove_file(&socket);
        Command::new(env!("CARGO_BIN_EXE_agent"))
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .uid(65534)
            .gid(65534)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap()
    };
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    // Waits for the socket; `Err` with the exit status if it exits first.
    let serves = |child: &mut std::process::Child| {
        let started = std::time::Instant::now();
        while !socket.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(status);
            }
            assert!(started.elapsed() < Duration::from_secs(15), "{}", logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    let policy = kernel_policy();
    println!("kernel policy: {policy:?}");
    let mut netlink = unprivileged(&[]);
    let outcome = serves(&mut netlink);
    let _ = netlink.kill();
    let _ = netlink.wait();
    match policy {
        KernelPolicy::AllowsUnprivileged => {
            assert_eq!(outcome, Ok(()), "{}", logs());
            let logs = logs();
            assert!(
                logs.contains("subscribed holding no capability; runs as uid 65534 gid 65534 with no capability"),
                "{logs}"
            );
        }
        KernelPolicy::RefusesUnprivileged => {
            let status = outcome.expect_err("the agent served on a refusing kernel");
            assert_eq!(status.code(), Some(1));
            let err = logs();
            for word in [
                "cannot join the proc connector multicast group",
                "the kernel refuses unprivileged proc-connector listeners",
                "grant the agent CAP_NET_ADMIN",
                "--detector=poll",
            ] {
                assert!(err.contains(word), "no {word:?} in {err}");
            }
            assert!(!err.contains("6.6"), "it guesses a kernel version: {err}");
            assert_eq!(err.matches("Error:").count(), 1, "{err}");
            let mut poll = unprivileged(&["--detector=poll"]);
            let outcome = serves(&mut poll);
            let _ = poll.kill();
            let _ = poll.wait();
            assert_eq!(outcome, Ok(()), "--detector=poll as uid 65534:\n{}", logs());
        }
    }
}
