//! The real `reclaimer` binary in `--dry-run` with a rules file, and when it
//! decides.
//!
//! Decision time is read off its log: with `--log-format=json` every match
//! writes one line `{…,"message":"process matched: requesting
//! reclaim",…,"pid":…,…}` to stderr in a single write. Its stderr is a pipe
//! to a thread here that reads `CLOCK_MONOTONIC` as soon as a line arrives,
//! before parsing it. The measured time therefore includes the pipe and this
//! thread's wake-up (a few µs), never the log's own wall-clock timestamp.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::children::Guarded;
use crate::procstat;
use crate::timing::{monotonic_ns, Arrivals};

/// The reclaimer binary [`Reclaimer::start`] runs (`--reclaimer`), set once
/// in main.
pub static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// What the log has told so far.
#[derive(Debug, Default)]
pub struct Decisions {
    /// Arrival time of each "process matched" line, by pid.
    pub matched: Arrivals,
    /// Warnings and errors, for the report (first 20).
    pub problems: Vec<String>,
}

/// A running dry-run reclaimer; stopped on drop.
pub struct Reclaimer {
    child: Guarded,
    /// Filled by the log thread.
    pub decisions: Arc<Mutex<Decisions>>,
    metrics_port: u16,
    _log_thread: JoinHandle<()>,
}

impl Reclaimer {
    /// Starts it against the agent's `socket` with `match_commands =
    /// [<command>]` written to a rules file in `dir`, and metrics on a free
    /// loopback port. Its whole log is copied to `log`.
    pub fn start(dir: &Path, socket: &Path, command: &str, log: &Path) -> Self {
        let rules = dir.join("reclaim.toml");
        std::fs::write(&rules, format!("match_commands = [{command:?}]\n")).expect("write rules");
        let metrics_port = free_port();
        let mut child = Guarded::spawn(
            Command::new(BINARY.get().expect("set in main"))
                .arg("--socket")
                .arg(socket)
                .arg("--dry-run")
                .arg("--rules-file")
                .arg(&rules)
                .arg("--log-format=json")
                .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .expect("start the reclaimer");
        let stderr = child.take_stderr().expect("piped stderr");
        let decisions: Arc<Mutex<Decisions>> = Arc::default();
        let sink = decisions.clone();
        let copy = std::fs::File::create(log).expect("create the reclaimer log copy");
        let log_thread = std::thread::Builder::new()
            .name("reclaimer-log".into())
            .spawn(move || read_log(stderr, &sink, copy))
            .expect("start the log thread");
        Self {
            child,
            decisions,
            metrics_port,
            _log_thread: log_thread,
        }
    }

    /// A counter from its Prometheus endpoint, e.g. `events_total`.
    pub fn metric(&self, name: &str) -> u64 {
        self.try_metric(name)
            .unwrap_or_else(|| panic!("cannot read execwatch_reclaimer_{name} from the reclaimer"))
    }

    fn try_metric(&self, name: &str) -> Option<u64> {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        let _ = conn.read_to_string(&mut body);
        let key = format!("execwatch_reclaimer_{name} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Runs `program` every 100 ms until the reclaimer decides on one of
    /// its runs (15 s at most): connected, rules loaded, deciding.
    pub fn wait_deciding(&mut self, program: &str) {
        let start = std::time::Instant::now();
        loop {
            let (mut child, (pid, t0)) = crate::spawner::spawn(&[program]);
            std::thread::sleep(Duration::from_millis(100));
            let _ = child.wait();
            if self
                .decisions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .matched
                .first_after(pid, t0)
                .is_some()
            {
                return;
            }
            if let Some(status) = self.child.exited() {
                panic!("the reclaimer exited ({status})");
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the reclaimer made no decision within 15 s"
            );
        }
    }

    /// Waits until the reclaimer has received its first snapshot: its
    /// metrics are served and its item count has stopped growing for
    /// 200 ms (15 s at most). A process spawned during the snapshot could
    /// be listed as `existing` while still a zombie, after its exit event
    /// went by: the reclaimer would then believe it still runs.
    pub fn wait_connected(&mut self) {
        let start = std::time::Instant::now();
        let mut last = 0;
        loop {
            let n = self.try_metric("events_total").unwrap_or(0);
            if n > 0 && n == last {
                return;
            }
            last = n;
            if let Some(status) = self.child.exited() {
                panic!("the reclaimer exited ({status})");
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the reclaimer did not connect within 15 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Reads the JSON log line by line until the pipe closes, copying it to `copy`.
fn read_log(stderr: impl Read, sink: &Mutex<Decisions>, copy: std::fs::File) {
    let mut copy = std::io::BufWriter::new(copy);
    for line in BufReader::new(stderr).lines() {
        let at = monotonic_ns();
        let Ok(line) = line else { return };
        let _ = writeln!(copy, "{line}");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let mut d = sink.lock().unwrap_or_else(|e| e.into_inner());
        if v["message"].as_str() == Some("process matched: requesting reclaim") {
            if let Some(pid) = v["pid"].as_i64() {
                d.matched.record(pid as i32, at);
            }
        } else if matches!(v["level"].as_str(), Some("WARN" | "ERROR")) && d.problems.len() < 20 {
            d.problems.push(line);
        }
    }
}

/// A loopback TCP port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

impl procstat::Measured for Reclaimer {
    fn pid(&self) -> u32 {
        self.child.pid()
    }
}
