//! Test fixtures shared by the integration tests: the real agent binary on a
//! real Unix socket, uniquely named processes to spawn, and stream helpers;
//! [`apiserver`] adds a real kube-apiserver for the reclaimer's tests.
//!
//! These tests need Linux and root. Most run the agent as root; those that
//! check what a deployed agent may do start it as deploy/base does
//! ([`deployed_agent`]). Whether the kernel admits a proc connector listener
//! without `CAP_NET_ADMIN` differs between kernel builds: tests whose outcome
//! depends on it ask [`kernel_policy`] and assert the branch that applies.
//! They never skip.

#![allow(dead_code)]

pub mod apiserver;
pub mod node;

use std::fs;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use execwatch::proto::exec_events_client::ExecEventsClient;
use execwatch::proto::{watch_event::Kind, WatchEvent, WatchRequest};
use tonic::transport::Channel;
use tonic::Streaming;

/// Flags for tests that open more subscribers than an agent serves by
/// default (16, 8 per uid): they test what happens with many.
pub const MANY_SUBSCRIBERS: &[&str] = &["--max-subscribers=1024", "--max-subscribers-per-uid=1024"];

/// A running agent on its own socket in its own directory.
pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    deployed: bool,
}

impl Agent {
    /// Starts the agent as root with `args` and waits until its socket
    /// answers.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_with(args, false)
    }

    /// Starts the agent as deploy/base does ([`deployed_agent`]: it ends up
    /// as [`DEPLOYED_UID`] with no capability) in a directory that uid may
    /// write, and waits until its socket answers.
    pub fn start_deployed(args: &[&str]) -> Agent {
        Agent::start_with(args, true)
    }

    fn start_with(args: &[&str], deployed: bool) -> Agent {
        let dir = world_readable_tempdir();
        if deployed {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        }
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = Agent::spawn(&socket, &log, &args, deployed);
        let mut agent = Agent {
            child,
            dir,
            socket,
            log,
            args,
            deployed,
        };
        agent.wait_ready();
        agent
    }

    fn spawn(socket: &Path, log: &Path, args: &[String], deployed: bool) -> Child {
        // Appends, so the log of an agent started again keeps the earlier run's.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = if deployed {
            deployed_agent()
        } else {
            Command::new(env!("CARGO_BIN_EXE_agent"))
        };
        cmd.arg("--socket")
            .arg(socket)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent")
    }

    /// SIGKILLs the agent and reaps it, as a crash or an OOM kill would end
    /// it: its socket file stays behind.
    pub fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.child.wait().expect("reap the agent");
    }

    /// Starts the agent again with the same arguments on the same socket
    /// (replacing a stale socket is the agent's own job) and waits until it
    /// accepts connections there.
    pub fn restart(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "the agent still runs: kill it first"
        );
        self.child = Agent::spawn(&self.socket, &self.log, &self.args, self.deployed);
        let deadline = Instant::now() + Duration::from_secs(15);
        // The dead agent's socket file refuses connections; the new agent's
        // accepts them.
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited with {status} on restart:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the restarted agent did not accept connections within 15s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "agent exited with {status} before serving:\n{}",
                    self.logs()
                );
            }
            if self.socket.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "agent did not create its socket within 15s:\n{}",
            self.logs()
        );
    }

    /// What the agent logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A typed client on the agent's socket.
    pub async fn client(&self) -> ExecEventsClient<Channel> {
        execwatch::client::exec_events(&self.socket)
            .await
            .expect("connect to agent")
    }

    /// Opens a Watch stream.
    pub async fn watch(&self, req: WatchRequest) -> Streaming<WatchEvent> {
        self.client()
            .await
            .watch(req)
            .await
            .expect("watch")
            .into_inner()
    }

    /// The agent's counters.
    pub async fn stats(&self) -> execwatch::proto::Stats {
        self.client()
            .await
            .get_stats(execwatch::proto::StatsRequest {})
            .await
            .expect("GetStats")
            .into_inner()
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The uid deploy/base has the agent switch to once subscribed.
pub const DEPLOYED_UID: u32 = 65534;
/// The gid deploy/base has the agent switch to (the socket's group).
pub const DEPLOYED_GID: u32 = 65532;
/// The capabilities deploy/base adds to the agent container, as setpriv
/// names them.
pub const DEPLOYED_CAPABILITIES: &[&str] = &["net_admin", "setuid", "setgid"];

/// The agent binary, to be started the way deploy/base starts it: as uid 0
/// with only [`DEPLOYED_CAPABILITIES`] in its bounding set (so in its
/// permitted and effective sets), no inheritable or ambient capability,
/// no_new_privs set, and `--run-as-uid`/`--run-as-gid` naming
/// [`DEPLOYED_UID`] and [`DEPLOYED_GID`]. Append the agent's other flags.
pub fn deployed_agent() -> Command {
    let bounding: Vec<String> = DEPLOYED_CAPABILITIES
        .iter()
        .map(|c| format!("+{c}"))
        .collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--no-new-privs",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_agent"))
        .arg(format!("--run-as-uid={DEPLOYED_UID}"))
        .arg(format!("--run-as-gid={DEPLOYED_GID}"));
    cmd
}

/// What the kernel does with a proc connector listener that holds no
/// capability: the build decides (patches, security modules), not its
/// version alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPolicy {
    /// Any user in the initial network namespace may join.
    AllowsUnprivileged,
    /// bind(2) fails with EPERM without CAP_NET_ADMIN.
    RefusesUnprivileged,
}

/// This kernel's [`KernelPolicy`], probed once per test binary by a
/// listener independent of the agent (tests/fixtures/unprivileged_listener.py)
/// run as uid 65534 with no capability. Panics if the probe answers neither.
pub fn kernel_policy() -> KernelPolicy {
    static POLICY: std::sync::OnceLock<KernelPolicy> = std::sync::OnceLock::new();
    *POLICY.get_or_init(|| {
        use std::os::unix::process::CommandExt;
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/unprivileged_listener.py"
        );
        // Debian's interpreter: a user's (a pyenv shim under /root) may not
        // be executable by uid 65534.
        let out = Command::new("/usr/bin/python3")
            .arg(script)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run tests/fixtures/unprivileged_listener.py");
        let said = String::from_utf8_lossy(&out.stdout);
        let policy = match (out.status.code(), said.trim()) {
            (Some(0), "allowed") => KernelPolicy::AllowsUnprivileged,
            (Some(3), "refused") => KernelPolicy::RefusesUnprivileged,
            _ => panic!("the unprivileged listener probe answered neither: {out:?}"),
        };
        eprintln!("kernel policy (unprivileged_listener.py as uid 65534): {policy:?}");
        policy
    })
}

/// The `status` of every thread of `pid`, as (tid, text).
pub fn thread_statuses(pid: i32) -> Vec<(String, String)> {
    let dir = format!("/proc/{pid}/task");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let tid = e.file_name().to_string_lossy().into_owned();
            let status = fs::read_to_string(e.path().join("status")).ok()?;
            Some((tid, status))
        })
        .collect()
}

/// The value of the `name:` line of a `status` text.
pub fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} line in\n{status}"))
        .trim()
}

/// Asserts that every thread of `pid` runs as exactly `uid` and `gid`
/// (real, effective, saved and filesystem ids) and holds no capability:
/// CapEff, CapPrm and CapAmb all zero. Returns how many threads it read.
pub fn assert_unprivileged(pid: i32, uid: u32, gid: u32) -> usize {
    let threads = thread_statuses(pid);
    assert!(!threads.is_empty(), "no thread of {pid}");
    let ids = |id: u32| [id; 4].map(|i| i.to_string()).join("\t");
    for (tid, status) in &threads {
        assert_eq!(status_field(status, "Uid"), ids(uid), "thread {tid}");
        assert_eq!(status_field(status, "Gid"), ids(gid), "thread {tid}");
        for set in ["CapEff", "CapPrm", "CapAmb"] {
            assert_eq!(
                status_field(status, set),
                "0000000000000000",
                "thread {tid} holds {set}"
            );
        }
    }
    threads.len()
}

/// A temporary directory other users can enter (for tests that run a peer
/// as another uid).
pub fn world_readable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A copy of `sleep` under a unique name (at most 15 bytes, so it is also the
/// kernel's comm): every field of its exec event is recognisable.
pub struct UniqueProgram {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub name: String,
}

impl UniqueProgram {
    pub fn new(prefix: &str) -> Self {
        let n: u32 = rand_u32() % 100_000;
        Self::named(&format!("{prefix}{n:05}"))
    }

    /// A copy of `sleep` called exactly `name`.
    pub fn named(name: &str) -> Self {
        let dir = world_readable_tempdir();
        let name = name.to_string();
        assert!(name.len() <= 15, "comm is at most 15 bytes: {name}");
        let path = dir.path().join(&name);
        fs::copy(which("sleep"), &path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        UniqueProgram { dir, path, name }
    }

    /// Rules (TOML) that match it by its comm.
    pub fn rules(&self) -> String {
        format!("match_commands = [\"{}\"]\n", self.name)
    }

    /// The reason the reclaimer gives when these rules match.
    pub fn reason(&self) -> String {
        format!("process-match: {}", self.name)
    }

    /// Starts it sleeping for `secs` with extra arguments.
    pub fn spawn(&self, secs: u32, extra: &[&str]) -> Child {
        // sleep accepts several durations and sleeps for their sum.
        let mut cmd = Command::new(&self.path);
        cmd.arg(secs.to_string()).args(extra);
        spawn_past_etxtbsy(&mut cmd)
    }
}

/// Spawns `cmd`, retrying while its program is busy: a child forked by
/// another test thread may still hold a fresh copy's write descriptor until
/// it execs, so ETXTBSY is transient.
fn spawn_past_etxtbsy(cmd: &mut Command) -> Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => {
                return other.unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
            }
        }
    }
    panic!("{cmd:?} stayed busy (ETXTBSY)")
}

/// Waits until `pid` has finished executing `comm`: spawn returns before
/// the exec is complete, and mid-exec the new comm shows before the new
/// command line.
pub fn wait_exec(pid: u32, comm: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if now.trim_end() == comm && !cmdline.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} never finished executing {comm}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `program args` back to back, each one waited for, until `period`
/// has passed, starting at most `per_sec` a second; returns the pids in the
/// order they were started. Blocks: call it from a thread of its own or
/// `spawn_blocking`.
pub fn exec_storm(program: &Path, args: &[&str], period: Duration, per_sec: u32) -> Vec<u32> {
    let start = Instant::now();
    let mut pids = Vec::new();
    while start.elapsed() < period {
        // Paced by the clock, so a slow spell is caught up afterwards.
        let due = start + Duration::from_secs(pids.len() as u64) / per_sec;
        if let Some(early) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(early);
        }
        let mut child = spawn_past_etxtbsy(Command::new(program).args(args).stdout(Stdio::null()));
        pids.push(child.id());
        child.wait().unwrap();
    }
    pids
}

/// Path of a program found on PATH.
pub fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not found on PATH"))
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

/// A request for live events only (no snapshot), with or without exits.
pub fn live(include_exits: bool) -> WatchRequest {
    WatchRequest {
        include_exits,
        skip_snapshot: true,
        ..Default::default()
    }
}

/// Receives the next event, failing the test after `timeout`.
pub async fn next(stream: &mut Streaming<WatchEvent>, timeout: Duration) -> WatchEvent {
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(ev))) => ev,
        Ok(Ok(None)) => panic!("stream ended"),
        Ok(Err(status)) => panic!("stream failed: {status}"),
        Err(_) => panic!("no event within {timeout:?}"),
    }
}

/// Reads until an event satisfies `pred`; returns it and everything before.
pub async fn until(
    stream: &mut Streaming<WatchEvent>,
    timeout: Duration,
    mut pred: impl FnMut(&WatchEvent) -> bool,
) -> (WatchEvent, Vec<WatchEvent>) {
    let deadline = Instant::now() + timeout;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "no matching event within {timeout:?}; saw {} others",
                before.len()
            );
        }
        let ev = next(stream, left).await;
        if pred(&ev) {
            return (ev, before);
        }
        before.push(ev);
    }
}

/// Reads the initial snapshot; returns its `existing` entries.
pub async fn snapshot(stream: &mut Streaming<WatchEvent>) -> Vec<WatchEvent> {
    let (_, before) = until(stream, Duration::from_secs(20), |ev| {
        matches!(ev.kind, Some(Kind::SnapshotComplete(_)))
    })
    .await;
    before
}

/// Whether `ev` is an exec (or snapshot entry, with `existing`) of `pid`.
pub fn is_process(ev: &WatchEvent, pid: u32, existing: bool) -> bool {
    match &ev.kind {
        Some(Kind::Exec(p)) if !existing => p.pid == pid as i32,
        Some(Kind::Existing(p)) if existing => p.pid == pid as i32,
        _ => false,
    }
}

/// Kills and reaps a child.
pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Asserts the stream's sequence numbers are 1, 2, 3, ... without holes.
pub fn assert_contiguous(events: &[WatchEvent], first: u64) {
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.seq, first + i as u64, "hole in sequence numbers");
    }
}

/// Runs `program` as the agent's health check against `socket` as `uid`.
pub fn health_check_as(socket: &Path, uid: u32) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["health-check", "--socket"])
        .arg(socket)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run health-check")
}

/// A Watch stream whose client grants only a 64 KiB HTTP/2 window, so a
/// subscriber that stops reading backs up into the agent quickly.
pub async fn watch_small_window(socket: &Path, req: WatchRequest) -> Streaming<WatchEvent> {
    let path = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect");
    ExecEventsClient::new(channel)
        .watch(req)
        .await
        .expect("watch")
        .into_inner()
}

/// A running reclaimer whose log (stderr) goes to a file the test reads.
pub struct Reclaimer {
    pub child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Reclaimer {
    /// Starts the reclaimer with `args` and `env`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Reclaimer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("reclaimer.log");
        let child = Command::new(env!("CARGO_BIN_EXE_reclaimer"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,reclaimer=debug")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start reclaimer");
        Reclaimer {
            child,
            log,
            _dir: dir,
        }
    }

    /// Starts a `--dry-run` reclaimer on `agent`'s socket with the rules in
    /// the file `rules` and `extra` arguments.
    pub fn dry_run(agent: &Agent, rules: &str, extra: &[&str]) -> Reclaimer {
        let socket = agent.socket.to_str().expect("a UTF-8 socket path");
        let args = ["--dry-run", "--socket", socket, "--rules-file", rules];
        Reclaimer::start(&[&args[..], extra].concat(), &[])
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `times` times; returns the log.
    pub fn wait_log(&self, needle: &str, times: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.matches(needle).count() >= times {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no {times}x {needle:?} in the reclaimer's log within {timeout:?}:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().unwrap()
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes rules matching `prog`'s comm (plus `extra` TOML lines) to `name`
/// in `dir`; returns the path.
pub fn rules_for(dir: &Path, name: &str, prog: &UniqueProgram, extra: &str) -> String {
    write_file(dir, name, &format!("{}{extra}", prog.rules()))
}

/// Writes `text` to a fresh file in `dir` and returns its path as a string.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A cgroup shaped like a Kubernetes pod's container
/// (`kubepods/pod<uid>/<container id>`), to run "pod" processes on a host
/// that has no kubelet. Uses the v1 `pids` hierarchy or the v2 root,
/// whichever the host has; removed on drop.
pub struct PodCgroup {
    pub dir: PathBuf,
    top: PathBuf,
    pub pod_uid: String,
}

pub const TEST_CONTAINER_ID: &str =
    "4f1c2a7e9d0b3c5a6e8f1d2c3b4a5968778695a4b3c2d1e0f9e8d7c6b5a49382";

impl PodCgroup {
    pub fn create() -> PodCgroup {
        let root = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists())
            .expect("no writable cgroup hierarchy (v1 pids or v2) under /sys/fs/cgroup");
        let pod_uid = format!("1b4e2f3a-0c1d-4e5f-8a9b-{:012x}", rand_u32());
        let top = root.join(format!("kubepods-test-{}", std::process::id()));
        let dir = top
            .join("kubepods")
            .join(format!("pod{pod_uid}"))
            .join(TEST_CONTAINER_ID);
        fs::create_dir_all(&dir).expect("create the test pod cgroup (needs root)");
        PodCgroup { dir, top, pod_uid }
    }

    /// Runs `program args` inside the pod cgroup: a shell moves itself in,
    /// then execs the program, so the exec event already sees the cgroup.
    pub fn spawn(&self, program: &Path, args: &str) -> Child {
        let procs = self.dir.join("cgroup.procs");
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {} && exec {} {args}",
                procs.display(),
                program.display()
            ))
            .spawn()
            .expect("spawn in pod cgroup")
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // Directories can only go once their processes are gone; innermost first.
        let mut dir = self.dir.clone();
        for _ in 0..50 {
            if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                if dir == self.top {
                    return;
                }
                dir.pop();
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Polls `check` every 50 ms until it yields a value; panics after `timeout`
/// naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kubectl kustomize <dir>` (relative to the repository) as JSON values,
/// one per object.
pub fn kustomize(dir: &str) -> Vec<serde_json::Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("kubectl is needed to render deploy/ (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}
