//! The Python example consumer (docs/examples/python/consumer.py, stubs
//! generated from proto/ with grpcio-tools) works against the real agent:
//! the contract is usable without Rust. tests/run.sh installs grpcio.
#![cfg(target_os = "linux")]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn the_python_consumer_sees_the_snapshot_and_a_live_launch() {
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

    let mut consumer = Command::new("python3")
        .arg("docs/examples/python/consumer.py")
        .arg("--socket")
        .arg(&agent.socket)
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
