//! The Python example consumer (docs/examples/python/consumer.py, stubs
//! generated from proto/ with grpcio-tools) works against the real agent:
//! the contract is usable without Rust. It uses grpcio's defaults, so its
//! HTTP/2 `:authority` is the socket path (%-encoded for `unix:/abs`,
//! plain for `unix:///abs`). tests/run.sh installs grpcio.
#![cfg(target_os = "linux")]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn the_python_consumer_sees_the_snapshot_and_a_live_launch() {
    consumer_sees_the_snapshot_and_a_live_launch(None);
}

#[test]
fn the_python_consumer_works_with_a_unix_triple_slash_target() {
    consumer_sees_the_snapshot_and_a_live_launch(Some("unix://"));
}

/// Runs the consumer with `--socket`, or with `--target PREFIX<socket>`.
fn consumer_sees_the_snapshot_and_a_live_launch(target_prefix: Option<&str>) {
    let have = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .unwrap();
    assert!(
        have.status.success(),
        "python3 lacks grpcio: run tests/run.sh or `pip install grpcio grpcio-tools`"
    );
    let agent = Agent::start(&[]);
    let before = UniqueProgram::new("ewpyold");
    let running = before.spawn(30, &[]);
    wait_exec(running.id(), &before.name);
    let later = UniqueProgram::new("ewpynew");

    let mut consumer = Command::new("python3");
    consumer.arg("docs/examples/python/consumer.py");
    match target_prefix {
        None => consumer.arg("--socket").arg(&agent.socket),
        Some(prefix) => consumer
            .arg("--target")
            .arg(format!("{prefix}{}", agent.socket.display())),
    };
    let mut consumer = consumer
        .args(["--until-comm", &later.name, "--max-seconds", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(consumer.stdout.take().unwrap()).lines();
    // The snapshot (which lists the running program) comes first.
    let first = lines.next().expect("consumer output").unwrap();
    assert!(first.starts_with("snapshot_complete processes="), "{first}");
    let launched = later.spawn(0, &["0.3"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = vec![first];
    for line in lines.by_ref() {
        seen.push(line.unwrap());
        if seen.last().unwrap().starts_with("found ") || Instant::now() > deadline {
            break;
        }
    }
    let status = consumer.wait().unwrap();
    stop(launched);
    stop(running);
    assert!(status.success(), "{seen:#?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("exec pid=") && l.contains(&format!("comm={}", later.name))),
        "{seen:#?}"
    );
    assert_eq!(seen.last().unwrap(), &format!("found {}", later.name));
}
