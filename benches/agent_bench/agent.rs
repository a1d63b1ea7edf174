//! The real `agent` binary: the one this `cargo bench` built (release
//! profile), or the one `--agent` names.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use execwatch::proto::{Stats, StatsRequest};

use crate::children::{self, Guarded};
use crate::procstat;

/// The agent binary [`Agent::start`] runs (`--agent`), set once in main.
pub static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// A running agent with its socket and log file; stopped on drop.
pub struct Agent {
    child: Guarded,
    /// Its Unix socket.
    pub socket: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent with default flags (plus `--detector=poll` when
    /// `detector` is "poll"), its log (default level and format) in a file in
    /// `dir`, and waits until its socket exists: the detector is subscribed
    /// by then.
    pub fn start(dir: &Path, detector: &str) -> Self {
        let args: &[String] = match detector {
            "netlink" => &[],
            _ => &[format!("--detector={detector}")],
        };
        let binary = BINARY.get().expect("set in main");
        Self::start_binary(dir, detector, binary, args)
    }

    /// Starts the agent binary at `binary` with `args`, its socket and log
    /// named after `name`, as [`Agent::start`] does.
    pub fn start_binary(dir: &Path, name: &str, binary: &Path, args: &[String]) -> Self {
        let socket = dir.join(format!("agent-{name}.sock"));
        let log = dir.join(format!("agent-{name}.log"));
        let _ = std::fs::remove_file(&socket);
        let file = std::fs::File::create(&log).expect("create the agent log");
        let mut cmd = Command::new(binary);
        cmd.arg("--socket").arg(&socket).args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
        let child = Guarded::spawn(&mut cmd).expect("start the agent");
        let mut agent = Self { child, socket, log };
        let start = std::time::Instant::now();
        while !agent.socket.exists() {
            if let Some(status) = agent.child.exited() {
                panic!(
                    "the agent exited ({status}) before serving:\n{}",
                    agent.log_tail()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the agent did not create its socket within 20 s:\n{}",
                agent.log_tail()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        agent
    }

    /// The agent's own counters (GetStats).
    pub async fn stats(&self) -> Stats {
        let mut client = execwatch::client::exec_events(&self.socket)
            .await
            .expect("connect for GetStats");
        client
            .get_stats(StatsRequest {})
            .await
            .expect("GetStats")
            .into_inner()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        children::tail(&self.log, 20)
    }
}

impl procstat::Measured for Agent {
    fn pid(&self) -> u32 {
        self.child.pid()
    }
}
