//! Tests of the `/proc` reader against real processes on this machine.

use std::process::Command;

use super::*;

fn reader() -> ProcReader {
    ProcReader::open("/proc", 64 * 1024).expect("open /proc")
}

#[test]
fn reads_a_live_child_with_odd_arguments() {
    use std::os::unix::ffi::OsStrExt;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("exec sleep 30")
        .arg(OsStr::from_bytes(b"\xffnot-utf8"))
        .arg("")
        .spawn()
        .expect("spawn sh");
    let pid = child.id() as i32;
    // sh execs sleep with its own argv; read the record while sh still is sh
    // or already sleep: either way the fields must be consistent.
    let p = reader()
        .read(pid, pid, Source::Poll)
        .expect("not a kernel thread");
    child.kill().ok();
    child.wait().ok();
    assert_eq!(p.pid, pid);
    assert_eq!(p.ppid as u32, std::process::id());
    assert!(!p.exited_before_inspection, "{p:?}");
    assert!(p.start_ticks > 0);
    let me = nix::unistd::Uid::current().as_raw();
    assert_eq!(p.credentials.unwrap().uid, me);
    assert!(p.exe.is_some(), "{:?}", p.unavailable);
    assert!(p.cgroup.is_some());
    if p.comm == "sh" || p.comm == "dash" || p.comm == "bash" {
        assert_eq!(p.argv.len(), 5);
        assert!(p.argv_lossy);
        assert_eq!(p.argv_raw[3], b"\xffnot-utf8");
        assert_eq!(p.argv[3], "\u{fffd}not-utf8");
        assert_eq!(p.argv[4], "");
    } else {
        assert_eq!(p.comm, "sleep");
        assert_eq!(p.argv, vec!["sleep", "30"]);
    }
}

#[test]
fn long_command_lines_are_cut_and_flagged() {
    let long = "x".repeat(10_000);
    let mut child = Command::new("sleep")
        .arg("30")
        .arg(&long)
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut small = ProcReader::open("/proc", 100).unwrap();
    let p = small.read(pid, pid, Source::Poll).unwrap();
    child.kill().ok();
    child.wait().ok();
    assert!(p.argv_truncated);
    assert_eq!(p.argv.iter().map(|a| a.len() + 1).sum::<usize>(), 100);
}

#[test]
fn a_vanished_pid_is_flagged_not_dropped() {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id() as i32;
    child.wait().unwrap();
    let p = reader().read(pid, pid, Source::Netlink).unwrap();
    assert!(p.exited_before_inspection);
    assert_eq!(p.pid, pid);
    assert!(!p.unavailable.is_empty());
}

#[test]
fn kernel_threads_are_skipped_and_self_is_listed() {
    let r = reader();
    let pids = r.pids().unwrap();
    assert!(pids.contains(&(std::process::id() as i32)));
    // kthreadd is pid 2 in the initial pid namespace.
    if pids.contains(&2) {
        assert!(reader().read(2, 2, Source::Snapshot).is_none());
    }
}

#[test]
fn credentials_parse_real_and_effective() {
    let status = b"Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t5\t5\t5\n";
    assert_eq!(
        parse_credentials(status),
        Some(Credentials {
            uid: 1000,
            euid: 0,
            gid: 100,
            egid: 5
        })
    );
    assert_eq!(parse_credentials(b"Uid:\t1\n"), None);
}
