//! Snapshot: how long a subscriber waits for the running processes. With
//! `--snapshot-processes` idle processes (`sleep 600`) started, each round
//! times, one after the other:
//!
//! - the floor: this program reading, on one thread and with the agent's
//!   system calls, the files the agent reads for every process listed in
//!   `/proc` (`stat`, `status`, `cmdline`, `cgroup`, the `exe` and `cwd`
//!   links);
//! - each agent binary (`--agent-binary`, default the one built with this
//!   bench): a `Watch` opened on a connection made beforehand, from the
//!   request to its `snapshot_complete`.
//!
//! The agents run side by side, idle between their turns, so every round
//! measures each of them against the same processes and the same machine.
//! The target compares the first agent's median with the floor's.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use execwatch::proto::{watch_event::Kind, WatchRequest};

use crate::agent::Agent;
use crate::children::Sleepers;
use crate::report::Report;
use crate::Bench;

/// Runs the rounds.
pub fn run(b: &Bench) -> Report {
    let _sleepers = Sleepers::spawn(b.opts.snapshot_processes).expect("start the idle processes");
    let binaries = match &b.opts.agent_binaries[..] {
        [] => vec![PathBuf::from(env!("CARGO_BIN_EXE_agent"))],
        given => given.to_vec(),
    };
    let agents: Vec<Agent> = binaries
        .iter()
        .enumerate()
        .map(|(i, bin)| Agent::start_binary(b.dir.path(), &format!("snapshot-{i}"), bin, &[]))
        .collect();
    // One snapshot each before timing: page cache, thread pools, allocator.
    floor();
    for agent in &agents {
        b.rt.block_on(snapshot(&agent.socket));
    }
    let mut floor_ms = Vec::new();
    let mut agent_ms = vec![Vec::new(); agents.len()];
    let mut listed = vec![0; agents.len()];
    for _ in 0..b.opts.snapshot_rounds {
        floor_ms.push(floor());
        for (i, agent) in agents.iter().enumerate() {
            let (ms, n) = b.rt.block_on(snapshot(&agent.socket));
            agent_ms[i].push(ms);
            listed[i] = n;
        }
    }

    let mut r = Report::new("snapshot");
    r.row(
        format!("{:<44}", "reader"),
        format!(
            "{:>9} {:>9} {:>9} {:>10}",
            "min ms", "median ms", "max ms", "processes"
        ),
    );
    let line = |r: &mut Report, name: String, ms: &[f64], n: u64| {
        let (min, med, max) = spread(ms);
        r.row(
            format!("{name:<44}"),
            format!("{min:>9.1} {med:>9.1} {max:>9.1} {n:>10}"),
        );
        med
    };
    let floor_med = line(
        &mut r,
        "floor (one thread, same files)".into(),
        &floor_ms,
        0,
    );
    r.json("floor_ms", floor_ms.clone());
    let mut ratio = f64::NAN;
    for (i, bin) in binaries.iter().enumerate() {
        let med = line(
            &mut r,
            format!("agent {}", bin.display()),
            &agent_ms[i],
            listed[i],
        );
        if i == 0 {
            ratio = med / floor_med;
        }
        r.json(
            &format!("agent_{i}"),
            serde_json::json!({"binary": bin, "ms": agent_ms[i], "processes": listed[i]}),
        );
    }
    r.row(
        "rounds",
        format!(
            "{}, with {} idle processes started",
            b.opts.snapshot_rounds, b.opts.snapshot_processes
        ),
    );
    r.target(
        "agent snapshot median / floor median",
        (ratio * 100.0).round() / 100.0,
        true,
        1.5,
        "×",
    );
    r
}

/// Min, median and max.
fn spread(ms: &[f64]) -> (f64, f64, f64) {
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Reads what the agent reads of every process now listed, on this thread,
/// the way the agent reads it (`openat` relative to the process's directory,
/// one `read` into a reused buffer, `readlinkat`); returns the time taken
/// in ms.
fn floor() -> f64 {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0;
    for entry in std::fs::read_dir("/proc").expect("list /proc").flatten() {
        let name = entry.file_name();
        if name.to_str().is_none_or(|n| n.parse::<u32>().is_err()) {
            continue;
        }
        let Ok(dir) = std::fs::File::open(Path::new("/proc").join(name)) else {
            continue;
        };
        let dir = dir.as_raw_fd();
        for file in [c"stat", c"status", c"cmdline", c"cgroup"] {
            // SAFETY: a valid directory fd and NUL-terminated name; the
            // buffer is ours and as long as given; the fd is closed once.
            unsafe {
                let fd = libc::openat(dir, file.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    bytes += libc::read(fd, buf.as_mut_ptr().cast(), buf.len()).max(0) as usize;
                    libc::close(fd);
                }
            }
        }
        for link in [c"exe", c"cwd"] {
            // SAFETY: as above; readlinkat writes at most buf.len() bytes.
            let n =
                unsafe { libc::readlinkat(dir, link.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            bytes += n.max(0) as usize;
        }
    }
    std::hint::black_box(bytes);
    start.elapsed().as_secs_f64() * 1e3
}

/// Times one `Watch` on `socket` from the request to `snapshot_complete`;
/// returns the ms and the processes it listed.
async fn snapshot(socket: &Path) -> (f64, u64) {
    let mut client = execwatch::client::exec_events(socket)
        .await
        .expect("connect to the agent");
    let start = Instant::now();
    let mut stream = client
        .watch(WatchRequest::default())
        .await
        .expect("Watch")
        .into_inner();
    loop {
        match stream.message().await.expect("the stream").map(|e| e.kind) {
            Some(Some(Kind::SnapshotComplete(done))) => {
                return (start.elapsed().as_secs_f64() * 1e3, done.processes);
            }
            Some(_) => {}
            None => panic!("the agent closed the stream before its snapshot completed"),
        }
    }
}
