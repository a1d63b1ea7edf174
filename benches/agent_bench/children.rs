//! The processes the benchmark starts, and their reliable end.
//!
//! Four layers make sure nothing outlives a run: each child is owned by a
//! guard whose `Drop` kills and reaps it; every pid (and the sleepers'
//! process group) is also in a registry that a panic hook kills, in case a
//! panic aborts instead of unwinding, and that Ctrl-C or SIGTERM kill before
//! the benchmark exits; and the agent and reclaimer get
//! `PR_SET_PDEATHSIG(SIGKILL)`, so even a `kill -9` of the benchmark ends
//! them. Sleepers are `sleep 600`: after a `kill -9` they end on their own.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pids (positive) and process groups (negative) to kill if the benchmark panics.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Installs the panic hook that kills everything in the registry.
pub fn kill_all_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        kill_registered();
    }));
}

/// On SIGINT or SIGTERM, kills everything in the registry and exits 130.
pub fn kill_all_on_signal(rt: &tokio::runtime::Runtime) {
    use tokio::signal::unix::{signal, SignalKind};
    rt.spawn(async {
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            eprintln!("agent_bench: cannot handle SIGINT/SIGTERM; an interrupted run may leave sleepers behind");
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        kill_registered();
        eprintln!("agent_bench: interrupted; every child killed");
        std::process::exit(130);
    });
}

fn kill_registered() {
    if let Ok(live) = LIVE.lock() {
        for &id in live.iter() {
            // SAFETY: kill has no memory effects; a stale id fails harmlessly.
            unsafe { libc::kill(id, libc::SIGKILL) };
        }
    }
}

fn register(id: i32) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(id);
}

fn unregister(id: i32) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&x| x != id);
}

/// A child that is stopped (SIGTERM, then SIGKILL after 3 s) and reaped on drop.
pub struct Guarded {
    child: Child,
}

impl Guarded {
    /// Spawns `cmd` with the parent-death signal set and registers it.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        register(child.id() as i32);
        Ok(Self { child })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes the child's piped stderr.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// `Some(status)` if the child has already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill has no memory effects; the child is not reaped yet, so
        // the pid is still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        unregister(pid);
    }
}

/// `count` processes that sleep, for the poll detector to scan. They share
/// one process group, killed as a whole on drop.
pub struct Sleepers {
    children: Vec<Child>,
    pgid: i32,
}

impl Sleepers {
    /// Starts `count` `sleep 600` processes.
    pub fn spawn(count: usize) -> std::io::Result<Self> {
        let mut s = Sleepers {
            children: Vec::with_capacity(count),
            pgid: 0,
        };
        for _ in 0..count {
            // The first one leads a new group; the rest join it. Setting a
            // group keeps std on its fast posix_spawn path.
            let child = Command::new("sleep")
                .arg("600")
                .process_group(s.pgid)
                .stdin(Stdio::null())
                .spawn()?;
            if s.pgid == 0 {
                s.pgid = child.id() as i32;
                register(-s.pgid);
            }
            s.children.push(child);
        }
        Ok(s)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        if self.pgid != 0 {
            // SAFETY: kill has no memory effects; the group is ours.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        unregister(-self.pgid);
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &PathBuf, lines: usize) -> String {
    let Ok(f) = std::fs::File::open(path) else {
        return String::new();
    };
    let all: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
