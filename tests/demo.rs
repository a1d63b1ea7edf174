//! `sudo tests/demo.sh`, the README's first command, as a newcomer runs it
//! (with the binaries this build made instead of a release build): it
//! prints the agent's privilege drop, the decision and the Node patch,
//! the re-arm, exits 0, and leaves no process and no directory behind.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_shows_a_decision_end_to_end_and_leaves_nothing_behind() {
    let bin = Path::new(env!("CARGO_BIN_EXE_agent")).parent().unwrap();
    let before = demo_dirs();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/demo.sh"))
        .env("EXECWATCH_BIN_DIR", bin)
        .output()
        .expect("run tests/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let mut at = 0;
    // In this order.
    for line in [
        "now runs as uid 65534 gid 65534 with no capability",
        "==> launching: bash -c 'exec -a execwatch-demo sleep 2'",
        // The shell's exec or sleep's, whichever comes first: both command
        // lines contain the pattern.
        "process matched: requesting reclaim comm=",
        "pattern=execwatch-demo",
        r#"dry-run: would merge-PATCH Node <this node> with field manager execwatch-reclaimer patch={"metadata":{"annotations":{"5spot.finos.org/reclaim-reason":"process-match: execwatch-demo","5spot.finos.org/reclaim-requested":"true","5spot.finos.org/reclaim-requested-at":""#,
        "no matching process runs any more; armed again",
        "done:",
    ] {
        let found = stdout[at..]
            .find(line)
            .unwrap_or_else(|| panic!("no {line:?} after byte {at} in\n{stdout}"));
        at += found + line.len();
    }
    assert_eq!(demo_dirs(), before, "the demo left its directory");
    let left: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("/tmp/execwatch.") || c.contains("execwatch-demo"))
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// The demo's directories under /tmp now.
fn demo_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("execwatch."))
        .collect();
    dirs.sort();
    dirs
}
