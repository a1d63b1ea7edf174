//! A rules file that is not what it should be never stops the reclaimer: a
//! FIFO (or anything but a regular file) is refused without blocking, at
//! start and when it is swapped in later, and a huge file is refused as too
//! large (not mistaken for an empty one), keeping the last good rules.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const WAIT: Duration = Duration::from_secs(15);
const DECISION: &str = "dry-run: would merge-PATCH";

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// At start, a FIFO at `--rules-file` is a configuration error said at
/// once (it used to block in open(2) forever, deaf to SIGTERM).
#[test]
fn a_fifo_rules_file_at_start_is_refused_at_once() {
    let dir = world_readable_tempdir();
    let fifo = dir.path().join("rules.toml");
    mkfifo(&fifo);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_reclaimer"))
        .args([
            "--dry-run",
            "--socket",
            "/nonexistent/agent.sock",
            "--rules-file",
        ])
        .arg(&fifo)
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(err.contains("a FIFO is not a regular file"), "{err}");
    assert!(err.contains(&fifo.display().to_string()), "{err}");
}

/// Swapped in while the reclaimer runs, a FIFO is refused with the last
/// good rules kept: decisions go on, the status file stays fresh, and a
/// good file afterwards is read again. A 50 MB file whose first MiB is
/// comments is refused as too large, not taken for an empty one.
#[test]
fn a_fifo_or_a_huge_file_swapped_in_keeps_the_last_good_rules() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let prog = UniqueProgram::new("ewfifo");
    let rules = rules_for(dir.path(), "rules.toml", &prog, "");
    let status = dir.path().join("status");
    let status_arg = status.to_str().unwrap().to_string();
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &["--status-file", &status_arg]);
    reclaimer.wait_log("rules loaded from file", 1, WAIT);

    std::fs::remove_file(&rules).unwrap();
    mkfifo(std::path::Path::new(&rules));
    reclaimer.wait_log("refused, keeping the last good rules", 1, WAIT);
    let logs = reclaimer.logs();
    assert!(logs.contains("it is a FIFO, not a regular file"), "{logs}");
    // The loop still decides: the rules in force fire.
    let running = prog.spawn(30, &[]);
    reclaimer.wait_log(DECISION, 1, WAIT);
    stop(running);
    // ... and stays alive (the status file is rewritten every few seconds).
    let before = std::fs::metadata(&status).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let after = std::fs::metadata(&status).unwrap().modified().unwrap();
    assert!(after > before, "the status file went stale");

    std::fs::remove_file(&rules).unwrap();
    let mut huge = "#".repeat(1 << 20);
    huge.push('\n');
    huge.push_str(&"x".repeat(49 << 20));
    std::fs::write(&rules, huge).unwrap();
    let logs = reclaimer.wait_log("at most 1048576 are allowed", 1, WAIT);
    assert!(
        logs.contains(&format!("is {} bytes long", (1 << 20) + 1 + (49 << 20))),
        "{logs}"
    );
    assert!(!logs.contains("is empty (no key set)"), "{logs}");
    assert!(logs.contains("keeping the last good rules"), "{logs}");

    std::fs::remove_file(&rules).unwrap();
    std::fs::write(&rules, prog.rules()).unwrap();
    reclaimer.wait_log("rules loaded from file", 2, WAIT);
}
