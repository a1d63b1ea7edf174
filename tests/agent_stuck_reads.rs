//! Processes whose `/proc` files never answer, against the real
//! kernel: a FIFO bind-mounted over `/proc/<pid>/cmdline` makes every open of
//! that file block until a writer comes, as a read on a stuck FUSE or NFS
//! mount, or one waiting for a memory-map lock, would. The agent must go on
//! streaming, answer its health check, complete snapshots and stop on
//! SIGTERM, and report the stuck process with the field it could not read in
//! `unavailable`, within `--proc-read-timeout` and some slack.
//!
//! The same trick shows lazy enrichment: a file the agent does
//! not read for an exec no subscriber could want never hangs it.
//!
//! Needs root (bind mounts). The tests take a lock: a stuck process of one
//! test would be in the other tests' snapshots and count against their
//! agents' `--max-stuck-reads`.
#![cfg(target_os = "linux")]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use execwatch::proto::{watch_event::Kind, LossSite, Process, WatchEvent, WatchRequest};
use support::*;
use tonic::Streaming;

/// The agent's default `--proc-read-timeout`.
const DEADLINE: Duration = Duration::from_millis(250);
/// What a busy shared test machine may add to it.
const SLACK: Duration = Duration::from_millis(1750);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A FIFO mounted over a `/proc` file: opening that file blocks until the
/// FIFO gets a writer. Unmounted, and every blocked open let go, on drop
/// (also when the test fails).
struct StuckFile {
    _dir: tempfile::TempDir,
    fifo: PathBuf,
    target: PathBuf,
    mounted: bool,
}

impl StuckFile {
    fn over(pid: u32, file: &str) -> StuckFile {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stuck.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let target = PathBuf::from(format!("/proc/{pid}/{file}"));
        let out = Command::new("mount")
            .arg("--bind")
            .arg(&fifo)
            .arg(&target)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount over {target:?}: {out:?}");
        StuckFile {
            _dir: dir,
            fifo,
            target,
            mounted: true,
        }
    }

    /// Unmounts it (new opens reach the real file again) and lets go of
    /// every open still blocked in the FIFO: they get it, and end-of-file.
    fn release(&mut self) {
        if std::mem::take(&mut self.mounted) {
            let _ = Command::new("umount").arg("-l").arg(&self.target).output();
        }
        // Opening for writing without blocking works while a reader waits
        // (ENXIO when none does); closing it gives them end-of-file.
        use std::os::unix::fs::OpenOptionsExt;
        for _ in 0..3 {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.fifo);
        }
    }
}

impl Drop for StuckFile {
    fn drop(&mut self) {
        self.release();
    }
}

/// `sh` holding still until a line arrives on its stdin, then executing
/// `program 30`: the test gets to set up its `/proc` files in between.
fn held_exec(program: &Path) -> Child {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("read x; exec {} 30", program.display()))
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    wait_exec(child.id(), "sh");
    child
}

fn go(child: &mut Child) {
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
}

/// Reads until an event satisfies `pred`; returns it and everything
/// before. Fails with the agent's log after `wait`.
async fn until_logged(
    agent: &Agent,
    stream: &mut Streaming<WatchEvent>,
    wait: Duration,
    mut pred: impl FnMut(&WatchEvent) -> bool,
) -> (WatchEvent, Vec<WatchEvent>) {
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(ev))) if pred(&ev) => return (ev, before),
            Ok(Ok(Some(ev))) => before.push(ev),
            other => panic!(
                "no such event within {wait:?} ({other:?}) after {} others; agent log:\n{}",
                before.len(),
                agent.logs()
            ),
        }
    }
}

/// Executes `prog` with its `cmdline` stuck, and returns it once `stream`
/// got its record with that file given up. With `sees_sh` the stream gets
/// the `sh` it is executed from too: that record is awaited before the
/// file is stuck, so only `prog` meets it.
async fn stuck_exec(
    agent: &Agent,
    stream: &mut Streaming<WatchEvent>,
    prog: &UniqueProgram,
    sees_sh: bool,
) -> (Child, StuckFile) {
    let mut child = held_exec(&prog.path);
    let wait = Duration::from_secs(10);
    if sees_sh {
        exec_of(agent, stream, child.id(), "sh", wait).await;
    }
    let stuck = StuckFile::over(child.id(), "cmdline");
    go(&mut child);
    let p = exec_of(agent, stream, child.id(), &prog.name, wait).await;
    assert!(reason(&p, "argv").is_some(), "{p:?}");
    (child, stuck)
}

/// A live stream of the execs of `comm` alone.
async fn watch_comm(agent: &Agent, comm: &str) -> Streaming<WatchEvent> {
    agent
        .watch(WatchRequest {
            comms: vec![comm.to_string()],
            skip_snapshot: true,
            ..Default::default()
        })
        .await
}

/// The `exec` of `pid` on `stream` within 10 s, and what came before it.
async fn exec_and_before(
    agent: &Agent,
    stream: &mut Streaming<WatchEvent>,
    pid: u32,
) -> (Process, Vec<WatchEvent>) {
    let wait = Duration::from_secs(10);
    let (ev, before) = until_logged(agent, stream, wait, |ev| is_process(ev, pid, false)).await;
    match ev.kind {
        Some(Kind::Exec(p)) => (p, before),
        other => unreachable!("{other:?}"),
    }
}

/// SIGTERM stops `agent` within 3 s, with exit status 0.
fn stops_promptly(agent: &mut Agent) {
    let asked = Instant::now();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", agent.logs());
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

/// The `exec` of `comm` by `pid` on `stream` (the shell that becomes it
/// has an exec of its own).
async fn exec_of(
    agent: &Agent,
    stream: &mut Streaming<WatchEvent>,
    pid: u32,
    comm: &str,
    wait: Duration,
) -> Process {
    let (ev, _) = until_logged(agent, stream, wait, |ev| match &ev.kind {
        Some(Kind::Exec(p)) => p.pid == pid as i32 && p.comm == comm,
        _ => false,
    })
    .await;
    match ev.kind {
        Some(Kind::Exec(p)) => p,
        other => unreachable!("{other:?}"),
    }
}

fn reason<'a>(p: &'a Process, field: &str) -> Option<&'a str> {
    p.unavailable
        .iter()
        .find(|u| u.field == field)
        .map(|u| u.reason.as_str())
}

#[tokio::test]
async fn a_process_whose_cmdline_hangs_does_not_stall_the_agent() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut agent = Agent::start(&[]);
    let mut stream = agent.watch(live(false)).await;
    let stuck_prog = UniqueProgram::new("ewstuck");
    let mut held = held_exec(&stuck_prog.path);
    let pid = held.id();
    // The shell's own exec is read before the file hangs.
    exec_of(&agent, &mut stream, pid, "sh", Duration::from_secs(10)).await;
    let mut stuck = StuckFile::over(pid, "cmdline");
    go(&mut held);
    let sent = Instant::now();

    // Its record arrives once the read is given up, with what was read
    // before the stuck file and the rest named.
    let p = exec_of(
        &agent,
        &mut stream,
        pid,
        &stuck_prog.name,
        DEADLINE + SLACK * 4,
    )
    .await;
    let took = sent.elapsed();
    assert!(took < DEADLINE + SLACK, "took {took:?}: {p:?}");
    assert_eq!(p.comm, stuck_prog.name, "read before cmdline: {p:?}");
    assert!(p.credentials.is_some(), "read before cmdline: {p:?}");
    let why = reason(&p, "argv").unwrap_or_else(|| panic!("argv not named: {p:?}"));
    assert!(
        why.contains("timed out after 250ms") && why.contains("cmdline"),
        "{why}"
    );
    for later in ["cgroup", "exe", "cwd"] {
        assert!(reason(&p, later).is_some(), "{later} not named: {p:?}");
    }
    assert!(p.argv.is_empty() && !p.exited_before_inspection, "{p:?}");

    // Other execs are still delivered promptly, while that read hangs.
    let free = UniqueProgram::new("ewfree");
    for _ in 0..3 {
        // Alive until read: a process gone first has fields missing anyway.
        let child = free.spawn(30, &[]);
        let started = Instant::now();
        let q = exec_of(
            &agent,
            &mut stream,
            child.id(),
            &free.name,
            Duration::from_secs(10),
        )
        .await;
        assert!(started.elapsed() < SLACK, "took {:?}", started.elapsed());
        assert_eq!(q.comm, free.name);
        assert!(q.unavailable.is_empty(), "{q:?}");
        stop(child);
    }

    // The health check answers.
    let health = health_check_as(&agent.socket, 0);
    assert!(health.status.success(), "{health:?}");

    // A snapshot completes, and lists the process as one that cannot be
    // read rather than hanging on it.
    let mut fresh = agent.watch(WatchRequest::default()).await;
    let listed = tokio::time::timeout(Duration::from_secs(10), snapshot(&mut fresh))
        .await
        .expect("the snapshot completes");
    let entry = listed
        .iter()
        .find(|ev| is_process(ev, pid, true))
        .unwrap_or_else(|| panic!("pid {pid} not in the snapshot"));
    let Some(Kind::Existing(entry)) = &entry.kind else {
        unreachable!()
    };
    assert!(!entry.unavailable.is_empty(), "{entry:?}");

    // Let the stuck read return: the thread left behind publishes nothing.
    stuck.release();
    let logs = agent.logs();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent
        .logs()
        .contains("a /proc read given up earlier has returned")
    {
        assert!(Instant::now() < deadline, "never returned:\n{logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut child = free.spawn(0, &[]);
    let (_, before) = until_logged(&agent, &mut stream, Duration::from_secs(10), |ev| {
        is_process(ev, child.id(), false)
    })
    .await;
    child.wait().unwrap();
    assert!(
        !before.iter().any(|ev| is_process(ev, pid, false)),
        "a second record of {pid}: {before:?}"
    );

    // SIGTERM still stops it promptly.
    stops_promptly(&mut agent);
    stop(held);
}

/// Without an exec to report it first, a snapshot meets the stuck file
/// itself: the read is given up, the snapshot completes, and the snapshot
/// permits are not held (three more subscribers, more than there are
/// permits, complete theirs too). SIGTERM then stops the agent at once,
/// the stuck thread notwithstanding.
#[tokio::test]
async fn a_snapshot_does_not_wait_for_a_process_whose_cmdline_hangs() {
    let _one = ONE_AT_A_TIME.lock().await;
    let prog = UniqueProgram::new("ewsnap");
    let child = prog.spawn(30, &[]);
    wait_exec(child.id(), &prog.name);
    let pid = child.id();
    let agent = Agent::start(&[]);
    let stuck = StuckFile::over(pid, "cmdline");
    for round in 0..4 {
        let mut stream = agent.watch(WatchRequest::default()).await;
        let started = Instant::now();
        let listed = tokio::time::timeout(Duration::from_secs(10), snapshot(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("snapshot {round} never completed"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let entry = listed
            .iter()
            .find_map(|ev| match &ev.kind {
                Some(Kind::Existing(p)) if p.pid == pid as i32 => Some(p.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("pid {pid} not in snapshot {round}"));
        if round == 0 {
            assert_eq!(entry.comm, prog.name, "{entry:?}");
            let why = reason(&entry, "argv").unwrap_or_else(|| panic!("{entry:?}"));
            assert!(why.contains("timed out after 250ms"), "{why}");
        } else {
            // Not read again while the first read is stuck.
            let why = reason(&entry, "all").unwrap_or_else(|| panic!("{entry:?}"));
            assert!(why.contains("has not returned"), "{why}");
        }
    }

    // SIGTERM stops it promptly while a reading thread is still stuck.
    let mut agent = agent;
    stops_promptly(&mut agent);
    drop(stuck);
    stop(child);
}

/// Beyond `--max-stuck-reads`, reads are not started: execs are counted as
/// loss, never sent as empty records, and reported as `lost` (site
/// detector) with their count once a stuck read returns.
#[tokio::test]
async fn beyond_the_stuck_reads_allowed_execs_are_reported_as_lost() {
    let _one = ONE_AT_A_TIME.lock().await;
    let agent = Agent::start(&["--max-stuck-reads=1"]);
    let mut stream = agent.watch(live(false)).await;
    let prog = UniqueProgram::new("ewcap");
    let (first, mut stuck) = stuck_exec(&agent, &mut stream, &prog, true).await;

    // The one thread allowed is stuck: these are not read.
    let free = UniqueProgram::new("ewcapfree");
    let mut pids = Vec::new();
    for _ in 0..3 {
        let mut child = free.spawn(0, &[]);
        pids.push(child.id());
        child.wait().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    stuck.release();
    let (lost, before) = until_logged(&agent, &mut stream, Duration::from_secs(10), |ev| {
        matches!(ev.kind, Some(Kind::Lost(_)))
    })
    .await;
    for pid in &pids {
        assert!(
            !before.iter().any(|ev| is_process(ev, *pid, false)),
            "an exec read beyond the limit was sent: {before:?}"
        );
    }
    let Some(Kind::Lost(lost)) = lost.kind else {
        unreachable!()
    };
    assert_eq!(lost.site, LossSite::Detector as i32, "{lost:?}");
    assert!(lost.count_known && lost.count >= 3, "{lost:?}");
    assert!(lost.reason.contains("stuck"), "{}", lost.reason);
    // Then the resync, complete.
    let listed = tokio::time::timeout(Duration::from_secs(10), snapshot(&mut stream))
        .await
        .expect("the resync completes");
    assert!(listed.iter().any(|ev| is_process(ev, first.id(), true)));
    stop(first);
}

/// At the stuck-read limit, an exec that a comm selector rules out is still
/// ruled out by its comm (a read that needs no time bound) and goes to
/// nobody: it is not an exec the agent failed to read, so no `lost` and no
/// resync follows for it. The next wanted launch, once the stuck read is
/// back, arrives complete with nothing before it.
#[tokio::test]
async fn at_the_stuck_read_limit_an_exec_nobody_selects_is_not_lost() {
    let _one = ONE_AT_A_TIME.lock().await;
    let agent = Agent::start(&["--max-stuck-reads=1"]);
    let wanted = UniqueProgram::new("ewlimwant");
    let mut filtered = watch_comm(&agent, &wanted.name).await;
    let (first, mut stuck) = stuck_exec(&agent, &mut filtered, &wanted, false).await;

    // The one thread allowed is stuck; these are nobody's.
    let other = UniqueProgram::new("ewlimother");
    let others: Vec<Child> = (0..3).map(|_| other.spawn(2, &[])).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stuck.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.logs().contains("given up earlier has returned") {
        assert!(
            Instant::now() < deadline,
            "the stuck read never returned:\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let next = wanted.spawn(30, &["1"]);
    let (p, before) = exec_and_before(&agent, &mut filtered, next.id()).await;
    assert!(before.is_empty(), "nothing before it, no lost: {before:?}");
    assert_complete(&p);
    for child in others.into_iter().chain([first, next]) {
        stop(child);
    }
}

/// Executes `prog` with its `/proc/<pid>/<file>` stuck, and returns once
/// it runs (told by its comm alone).
fn run_with_stuck(prog: &UniqueProgram, file: &str) -> (Child, StuckFile) {
    let mut held = held_exec(&prog.path);
    let stuck = StuckFile::over(held.id(), file);
    go(&mut held);
    wait_comm(held.id(), &prog.name);
    (held, stuck)
}

/// Waits until `pid`'s comm is `comm`, reading `comm` only (its `cmdline`
/// or `stat` may be the stuck file).
fn wait_comm(pid: u32, comm: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        != comm
    {
        assert!(Instant::now() < deadline, "pid {pid} never became {comm}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every field read, none named in `unavailable`.
fn assert_complete(p: &Process) {
    assert!(p.unavailable.is_empty(), "{p:?}");
    assert!(!p.argv.is_empty() && p.credentials.is_some(), "{p:?}");
    assert!(
        p.cgroup.is_some() && p.exe.is_some() && p.cwd.is_some(),
        "{p:?}"
    );
}

/// What the watchdog logs when it gives a read up.
const GIVEN_UP: &str = "took longer than";

/// No `/proc` read of `agent` has hung (been given up) so far.
fn no_read_given_up(agent: &Agent) {
    let logs = agent.logs();
    assert!(!logs.contains(GIVEN_UP), "a read hung:\n{logs}");
}

/// Lazy enrichment: while every subscriber selects by comm
/// alone, an exec whose comm none of them lists is read no further than
/// its comm, so a `cmdline` that would hang is never opened, while a
/// matching exec is still delivered complete and GetStats still counts
/// both. Once an unfiltered subscriber joins, every exec is read in full
/// again: the same hanging `cmdline` is met (the control that shows the
/// trick sees a read), and other records are complete.
#[tokio::test]
async fn with_only_comm_selectors_an_unwanted_exec_is_read_no_further_than_its_comm() {
    let _one = ONE_AT_A_TIME.lock().await;
    let agent = Agent::start(&[]);
    let wanted = UniqueProgram::new("ewwant");
    let unwanted = UniqueProgram::new("ewskip");
    let mut filtered = watch_comm(&agent, &wanted.name).await;
    let before = agent.stats().await.execs;
    let (held, stuck) = run_with_stuck(&unwanted, "cmdline");
    // Execed after it: read after it, by the same thread.
    let child = wanted.spawn(30, &["1"]);
    let (p, others) = exec_and_before(&agent, &mut filtered, child.id()).await;
    assert_eq!(p.argv.len(), 3, "{p:?}");
    assert_complete(&p);
    assert!(others.is_empty(), "only what it selected: {others:?}");
    no_read_given_up(&agent);
    // The shell, the unwanted exec and the wanted one, of which only the
    // last was published.
    let execs = agent.stats().await.execs;
    assert!(execs >= before + 3, "{before} -> {execs}");
    drop(stuck);
    stop(held);

    // An unfiltered subscriber joins: the same kind of exec is read in full.
    let mut all = agent.watch(live(false)).await;
    let mut held = held_exec(&unwanted.path);
    let read = held.id();
    let _stuck = StuckFile::over(read, "cmdline");
    go(&mut held);
    let p = exec_of(&agent, &mut all, read, &unwanted.name, DEADLINE + SLACK * 4).await;
    let why = reason(&p, "argv").unwrap_or_else(|| panic!("cmdline not read: {p:?}"));
    assert!(why.contains("timed out after 250ms"), "{why}");
    let other = unwanted.spawn(30, &["1"]);
    let p = exec_of(&agent, &mut all, other.id(), &unwanted.name, SLACK * 4).await;
    assert_complete(&p);
    // The filtered subscriber still gets only its own.
    let again = wanted.spawn(30, &[]);
    let (_, others) = until_logged(&agent, &mut filtered, SLACK * 4, |ev| {
        is_process(ev, again.id(), false)
    })
    .await;
    assert!(others.is_empty(), "only what it selected: {others:?}");
    for child in [child, held, other, again] {
        stop(child);
    }
}

/// The poll detector's reads are bounded too: a program whose `cmdline`
/// hangs is published when its read is given up, with that field named,
/// the scans go on (a later launch arrives complete), and SIGTERM is
/// prompt. Before, the scanning thread hung in the read for good.
#[tokio::test]
async fn the_poll_detector_gives_up_a_read_that_hangs_and_scans_on() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut agent = Agent::start(&["--detector", "poll", "--poll-interval", "50ms"]);
    let mut stream = agent.watch(live(false)).await;
    let prog = UniqueProgram::new("ewpstuck");
    let asked = Instant::now();
    let (held, stuck) = stuck_exec(&agent, &mut stream, &prog, true).await;
    eprintln!(
        "the poll detector published the hanging program after {:?}",
        asked.elapsed()
    );
    let logs = agent.logs();
    assert!(logs.contains(GIVEN_UP), "no read was given up:\n{logs}");
    let after = UniqueProgram::new("ewpafter");
    let later = after.spawn(30, &["1"]);
    let p = exec_of(&agent, &mut stream, later.id(), &after.name, SLACK * 4).await;
    assert_complete(&p);
    stops_promptly(&mut agent);
    drop(stuck);
    stop(held);
    stop(later);
}

/// The poll detector is lazy too: while the only subscriber selects by
/// comm, a new program whose comm it does not list costs the scan the
/// `stat` it reads of every process anyway and no more. Its `cmdline`,
/// which would hang (until the read is given up), is never opened, and a
/// wanted launch after it arrives complete.
#[tokio::test]
async fn the_poll_detector_reads_an_unwanted_program_no_further_than_its_stat() {
    let _one = ONE_AT_A_TIME.lock().await;
    let agent = Agent::start(&["--detector", "poll", "--poll-interval", "50ms"]);
    let wanted = UniqueProgram::new("ewpwant");
    let unwanted = UniqueProgram::new("ewpskip");
    let mut filtered = watch_comm(&agent, &wanted.name).await;
    let (held, stuck) = run_with_stuck(&unwanted, "cmdline");
    // Scans enough to have met it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let child = wanted.spawn(30, &["1"]);
    let (p, others) = exec_and_before(&agent, &mut filtered, child.id()).await;
    assert_complete(&p);
    assert!(others.is_empty(), "only what it selected: {others:?}");
    no_read_given_up(&agent);
    drop(stuck);
    stop(held);
    stop(child);
}

/// With no subscriber that wants any process (here one that asked for
/// none), `/proc` is not read at all: a `stat` that would hang is never
/// opened, and the exec is still counted.
#[tokio::test]
async fn with_no_subscriber_wanting_processes_proc_is_not_read() {
    let _one = ONE_AT_A_TIME.lock().await;
    let agent = Agent::start(&[]);
    let _none = agent
        .watch(WatchRequest {
            no_processes: true,
            include_exits: true,
            skip_snapshot: true,
            ..Default::default()
        })
        .await;
    let before = agent.stats().await.execs;
    let prog = UniqueProgram::new("ewnone");
    let (held, stuck) = run_with_stuck(&prog, "stat");
    // A read would have begun at once and been given up by now.
    tokio::time::sleep(DEADLINE + SLACK).await;
    no_read_given_up(&agent);
    let execs = agent.stats().await.execs;
    assert!(execs >= before + 2, "{before} -> {execs}");
    drop(stuck);
    stop(held);
}
