//! Hostile processes against the real agent: a command line of
//! several MiB, bytes that are not UTF-8, empty arguments, long names,
//! processes gone before the agent can read them, a process that renames
//! itself and a pid reused between the snapshot and a live event. Each one
//! must arrive, flagged correctly, and the agent must stay up and small.
//!
//! Most programs here are a copy of `dash` under a chosen name running
//! `-c 'read x'`: it ignores any extra arguments and holds still until its
//! stdin (a pipe the test owns) is closed or written, so the test decides
//! when it changes or ends. The tests need root (a raised stack limit for
//! the huge command line, `/proc/sys/kernel/ns_last_pid` for pid reuse).
#![cfg(target_os = "linux")]

mod support;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use execwatch::proto::{watch_event::Kind, Process, WatchEvent, WatchRequest};
use support::*;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(20);

/// Held by the tests that reap processes the agent has not read yet and by
/// the one that rewinds the kernel's pid cursor: a rewind would hand a reaped
/// pid to a newcomer, which the agent would then (rightly) describe instead.
static PID_CURSOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The agent's default `--max-argv-bytes`.
const MAX_ARGV_BYTES: usize = 32 * 1024;

/// A copy of a program on PATH under exactly `name` (any length).
struct Named {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Named {
    fn copy(program: &str, name: &str) -> Named {
        let dir = world_readable_tempdir();
        let path = dir.path().join(name);
        fs::copy(which(program), &path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        Named { _dir: dir, path }
    }

    /// `dash -c 'read x' <arg0> <args>` under this name, stdin a pipe.
    fn holder(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(["-c", "read x", "hostile"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        cmd
    }

    fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// Spawns, retrying while a copy made by a parallel test is still open for
/// writing in some forked child (ETXTBSY is transient).
fn spawn(cmd: &mut Command) -> Child {
    for _ in 0..200 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other.expect("spawn"),
        }
    }
    panic!("program stayed busy (ETXTBSY)")
}

/// The next live exec of `pid`.
async fn exec_of(stream: &mut Streaming<WatchEvent>, pid: u32) -> Process {
    let (ev, _) = until(stream, WAIT, |ev| is_process(ev, pid, false)).await;
    let Some(Kind::Exec(p)) = ev.kind else {
        unreachable!()
    };
    p
}

/// A line of `/proc/<pid>/status` in kB, e.g. `VmHWM`.
fn status_kb(pid: i32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Bytes of a command line as `/proc/<pid>/cmdline` holds it, without the
/// final NUL.
fn cmdline_len(argv: &[String]) -> usize {
    argv.iter().map(|a| a.len() + 1).sum::<usize>() - 1
}

#[tokio::test]
async fn a_command_line_of_several_mib_arrives_cut_and_the_agent_stays_small() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;
    let hwm_before = status_kb(agent.pid(), "VmHWM");

    // 27 arguments of 120,000 bytes: 3.2 MB. One argument may not exceed
    // MAX_ARG_STRLEN (32 pages = 128 KiB) and all of them must fit in a
    // quarter of the stack limit (at most 6 MiB), so the child raises its
    // stack limit to 64 MiB before exec (`getconf ARG_MAX` here is 2 MiB).
    let args: Vec<String> = (0..27u8)
        .map(|i| char::from(b'a' + i).to_string().repeat(120_000))
        .collect();
    let total: usize = args.iter().map(|a| a.len() + 1).sum();
    assert!(total > 3 << 20, "{total} bytes");
    let prog = Named::copy("dash", "ewhugeargv");
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut cmd = prog.holder();
        cmd.args(&args);
        // SAFETY: setrlimit is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 64 << 20,
                    rlim_max: 64 << 20,
                };
                if libc::setrlimit(libc::RLIMIT_STACK, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn(&mut cmd);
        let p = exec_of(&mut stream, child.id()).await;
        holders.push(child);

        assert!(
            p.argv_truncated,
            "{} bytes of argv read",
            cmdline_len(&p.argv)
        );
        assert!(!p.argv_lossy);
        assert_eq!(p.comm, "ewhugeargv");
        assert_eq!(p.argv[..4], [prog.path_str(), "-c", "read x", "hostile"]);
        // Cut at exactly --max-argv-bytes, inside the first big argument.
        assert_eq!(cmdline_len(&p.argv), MAX_ARGV_BYTES);
        assert_eq!(p.argv.len(), 5);
        assert!(p.argv[4].bytes().all(|b| b == b'a'));
        assert!(p.argv[4].len() < 120_000);
    }

    // The snapshot reads the same command lines with the same cap.
    let mut with_snapshot = agent.watch(WatchRequest::default()).await;
    let snap = snapshot(&mut with_snapshot).await;
    for child in &holders {
        let entry = snap.iter().find(|ev| is_process(ev, child.id(), true));
        let Some(Kind::Existing(p)) = &entry.expect("snapshot lists the holder").kind else {
            unreachable!()
        };
        assert!(p.argv_truncated);
        assert_eq!(cmdline_len(&p.argv), MAX_ARGV_BYTES);
    }
    holders.into_iter().for_each(stop);

    // Still serving, and its peak memory never grew with the command lines.
    let marker = UniqueProgram::new("ewafter");
    let child = marker.spawn(30, &[]);
    exec_of(&mut stream, child.id()).await;
    stop(child);
    let hwm_after = status_kb(agent.pid(), "VmHWM");
    eprintln!("agent VmHWM {hwm_before} kB before, {hwm_after} kB after");
    assert!(
        hwm_after < 64 * 1024,
        "agent peak RSS {hwm_after} kB (was {hwm_before} kB)"
    );
    assert!(
        hwm_after < hwm_before + 8 * 1024,
        "agent peak RSS grew from {hwm_before} kB to {hwm_after} kB"
    );
}

#[tokio::test]
async fn bytes_that_are_not_utf8_are_flagged_and_kept_exactly() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;
    let prog = Named::copy("dash", "ewnotutf8");
    let odd: [&[u8]; 5] = [
        b"plain",
        b"\xff\xfe",     // never valid in UTF-8
        b"caf\xc3\xa9",  // valid: "café"
        b"\x80tail",     // a lone continuation byte
        b"half\xe2\x82", // a sequence cut short
    ];
    let mut cmd = prog.holder();
    cmd.args(odd.iter().map(|a| OsStr::from_bytes(a)));
    let child = spawn(&mut cmd);
    let p = exec_of(&mut stream, child.id()).await;
    stop(child);

    let mut raw: Vec<Vec<u8>> = [prog.path_str(), "-c", "read x", "hostile"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    raw.extend(odd.iter().map(|a| a.to_vec()));
    assert!(p.argv_lossy);
    assert!(!p.argv_truncated);
    assert_eq!(
        p.argv_raw, raw,
        "argv_raw holds every argument's exact bytes"
    );
    let lossy: Vec<String> = raw
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(p.argv, lossy);
    assert_eq!(p.argv[5], "\u{fffd}\u{fffd}");
    assert_eq!(p.argv[6], "café");
}

#[tokio::test]
async fn empty_arguments_keep_their_places() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;
    let prog = Named::copy("dash", "ewemptyargs");
    // An empty argv[0], empty arguments first, between and last.
    let mut cmd = Command::new(&prog.path);
    cmd.arg0("")
        .args(["-c", "read x", "", "", "mid", "", ""])
        .stdin(Stdio::piped());
    let child = spawn(&mut cmd);
    let p = exec_of(&mut stream, child.id()).await;
    stop(child);
    assert_eq!(p.argv, ["", "-c", "read x", "", "", "mid", "", ""]);
    assert!(!p.argv_lossy && !p.argv_truncated);
    // comm comes from the file name, never from argv[0].
    assert_eq!(p.comm, "ewemptyargs");

    // An argument cannot hold a NUL: execve takes C strings, so a NUL-only
    // argument is the empty string above, and std refuses to build one.
    let err = Command::new(&prog.path).arg("a\0b").spawn().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let err = Command::new(&prog.path).arg("\0").spawn().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn comm_is_the_first_15_bytes_of_the_file_name() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;
    for (name, comm) in [
        ("ewcomm15_abcdef", "ewcomm15_abcdef"),
        ("ewcomm20_abcdefghijk", "ewcomm20_abcdef"),
    ] {
        let prog = Named::copy("sleep", name);
        let child = spawn(Command::new(&prog.path).arg("30"));
        let p = exec_of(&mut stream, child.id()).await;
        stop(child);
        assert_eq!(p.comm, comm, "{name}");
        assert_eq!(p.comm.len(), 15);
        // The full name is still in argv[0] and exe.
        assert_eq!(p.argv, [prog.path_str(), "30"]);
        assert_eq!(p.exe.as_deref(), Some(prog.path_str()));
    }
}

/// Runs `/bin/true` `n` times, each reaped at once; returns the pids.
fn run_true(n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let mut child = Command::new("/bin/true").spawn().expect("spawn true");
            let pid = child.id();
            assert!(child.wait().unwrap().success());
            pid
        })
        .collect()
}

/// Reads until an exec of every pid in `pids` arrived; none may be lost.
async fn execs_of(stream: &mut Streaming<WatchEvent>, pids: &[u32]) -> Vec<Process> {
    let mut want: std::collections::HashSet<i32> = pids.iter().map(|&p| p as i32).collect();
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !want.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{} execs never arrived", want.len());
        let ev = next(stream, left).await;
        match ev.kind {
            Some(Kind::Exec(p)) if want.remove(&p.pid) => got.push(p),
            Some(Kind::Lost(l)) => panic!("the stream lost events: {l:?}"),
            _ => {}
        }
    }
    got
}

/// An event for a process that was gone: delivered with the kernel's ids
/// and the reason, not dropped.
fn assert_delivered_gone(p: &Process) {
    assert!(p.exited_before_inspection);
    assert!(p.pid > 0 && p.tgid == p.pid, "{p:?}");
    assert!(
        p.unavailable.iter().any(|u| !u.reason.is_empty()),
        "names what could not be read: {p:?}"
    );
    assert!(p.kernel_timestamp_ns > 0);
}

#[tokio::test]
async fn processes_that_exit_before_inspection_are_still_delivered() {
    let _cursor = PID_CURSOR.lock().await;
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;

    // While the agent runs: each exits at once and is reaped; some are read
    // in time (as "true" or as a zombie), some are not, all are delivered.
    let pids = run_true(200);
    let events = execs_of(&mut stream, &pids).await;
    let gone: Vec<_> = events
        .iter()
        .filter(|p| p.exited_before_inspection)
        .collect();
    gone.iter().for_each(|p| assert_delivered_gone(p));
    for p in events.iter().filter(|p| !p.exited_before_inspection) {
        assert_eq!(p.comm, "true", "{p:?}");
    }
    eprintln!(
        "{} of {} short-lived processes exited before inspection",
        gone.len(),
        events.len()
    );

    // With the agent stopped, every one is gone and reaped before it can
    // look: each exec still arrives, flagged, with pid and tgid set.
    agent.signal(nix::sys::signal::Signal::SIGSTOP);
    let pids = run_true(100);
    agent.signal(nix::sys::signal::Signal::SIGCONT);
    let events = execs_of(&mut stream, &pids).await;
    assert_eq!(events.len(), 100);
    for p in &events {
        assert_delivered_gone(p);
        assert!(
            p.unavailable.iter().any(|u| u.field == "all"),
            "nothing could be read: {p:?}"
        );
        assert!(p.comm.is_empty() && p.argv.is_empty());
    }
    let stats = agent.stats().await;
    assert!(
        stats.exited_before_inspection >= 100 + gone.len() as u64,
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_process_that_renames_itself_keeps_its_exec_name_in_the_exec_event() {
    let agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;
    let prog = Named::copy("dash", "ewbeforename");
    // Renames itself (writing /proc/self/comm is prctl(PR_SET_NAME) for a
    // shell) only when told to, so the exec is read before the rename.
    let mut child = spawn(
        Command::new(&prog.path)
            .args([
                "-c",
                "read x; printf %s ewafterrename > /proc/$$/comm; read y",
            ])
            .stdin(Stdio::piped()),
    );
    let pid = child.id();
    let exec = exec_of(&mut stream, pid).await;
    assert_eq!(exec.comm, "ewbeforename");

    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let comm_path = format!("/proc/{pid}/comm");
    eventually("the rename", WAIT, || {
        let now = fs::read_to_string(&comm_path).unwrap_or_default();
        async move { (now.trim_end() == "ewafterrename").then_some(()) }
    })
    .await;

    let mut later = agent.watch(WatchRequest::default()).await;
    let snap = snapshot(&mut later).await;
    stop(child);
    let entry = snap.iter().find(|ev| is_process(ev, pid, true));
    let Some(Kind::Existing(p)) = &entry.expect("snapshot lists the renamed process").kind else {
        unreachable!()
    };
    assert_eq!(p.comm, "ewafterrename");
    assert_eq!(p.start_ticks, exec.start_ticks, "the same process");
    assert_eq!(p.exe, exec.exe, "the rename changes only the comm");
}

/// Clock ticks since boot, the unit of `start_ticks`.
fn ticks_now() -> u64 {
    let uptime = fs::read_to_string("/proc/uptime").unwrap();
    let secs: f64 = uptime.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (secs * hz) as u64
}

#[tokio::test]
async fn a_pid_reused_after_the_snapshot_is_a_new_process() {
    // The kernel hands out the pid after /proc/sys/kernel/ns_last_pid (root
    // may write it in the initial pid namespace): set it to the old pid - 1
    // right after the old process is reaped and the next fork gets the old
    // pid, unless another process on the machine forks in between: retry.
    let _cursor = PID_CURSOR.lock().await;
    let agent = Agent::start(&[]);
    let old_prog = UniqueProgram::new("ewold");
    let old = old_prog.spawn(30, &[]);
    let pid = old.id();
    wait_exec(pid, &old_prog.name);

    let mut stream = agent
        .watch(WatchRequest {
            include_exits: true,
            skip_snapshot: false,
            ..Default::default()
        })
        .await;
    let snap = snapshot(&mut stream).await;
    let entry = snap.iter().find(|ev| is_process(ev, pid, true));
    let Some(Kind::Existing(before)) = &entry.expect("snapshot lists the old process").kind else {
        unreachable!()
    };
    assert_eq!(before.comm, old_prog.name);
    stop(old);

    // A tick must pass, or both could start in the same one.
    let t_old = before.start_ticks;
    eventually("a clock tick after the old start", WAIT, || async {
        (ticks_now() > t_old + 1).then_some(())
    })
    .await;

    let new_prog = UniqueProgram::new("ewnew");
    let mut tries = 0;
    let new = loop {
        tries += 1;
        assert!(
            tries <= 100,
            "pid {pid} was never handed out again in 100 tries"
        );
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("write ns_last_pid (needs root in the initial pid namespace)");
        let child = new_prog.spawn(30, &[]);
        if child.id() == pid {
            eprintln!("pid {pid} handed out again after {tries} tries");
            break child;
        }
        stop(child);
    };

    let (ev, between) = until(&mut stream, WAIT, |ev| {
        matches!(&ev.kind, Some(Kind::Exec(p)) if p.pid == pid as i32 && p.comm == new_prog.name)
    })
    .await;
    stop(new);
    let Some(Kind::Exec(after)) = ev.kind else {
        unreachable!()
    };
    assert!(
        between
            .iter()
            .any(|ev| matches!(&ev.kind, Some(Kind::Exit(e)) if e.pid == pid as i32)),
        "the old process's exit comes first"
    );
    assert!(
        after.start_ticks > before.start_ticks,
        "same pid, later start: {} vs {}",
        after.start_ticks,
        before.start_ticks
    );
    assert_eq!(after.exe.as_deref(), Some(new_prog.path.to_str().unwrap()));
}
