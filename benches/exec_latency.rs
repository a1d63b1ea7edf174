//! Spawn → subscriber latency and agent CPU per exec, measured against the
//! real agent binary over its real Unix socket.
//!
//! Run as root on Linux: `cargo bench --bench exec_latency` (options after
//! `--`: `--spawns N`, `--gap-ms MS`). Prints a table and one JSON object.
//!
//! The clock is CLOCK_MONOTONIC throughout, so the kernel's event timestamp
//! splits the latency into spawn→kernel event and kernel event→subscriber.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use execwatch::proto::{watch_event::Kind, WatchRequest};

/// Per pid: received at (monotonic), kernel timestamp, and the time from the
/// agent starting its /proc read to reception (wall clock).
type Seen = (u64, u64, u64);

fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// User + system CPU of `pid` in nanoseconds, from /proc/<pid>/stat.
fn cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    // Fields 14 and 15 (utime, stime) are indexes 11 and 12 after comm.
    let ticks = f[11] + f[12];
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    ticks * 1_000_000_000 / hz
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let spawns = arg("--spawns", 2000) as usize;
    let gap = Duration::from_millis(arg("--gap-ms", 1));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--socket")
        .arg(&socket)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start agent");
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "agent did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut client = execwatch::client::exec_events(&socket).await.unwrap();
    let mut stream = client
        .watch(WatchRequest {
            include_exits: false,
            skip_snapshot: true,
        })
        .await
        .unwrap()
        .into_inner();

    let seen: Arc<Mutex<HashMap<i32, Seen>>> = Arc::default();
    let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let (seen, events) = (seen.clone(), events.clone());
        tokio::spawn(async move {
            while let Ok(Some(ev)) = stream.message().await {
                let now = monotonic_ns();
                let wall = execwatch::clock::unix_ns();
                if let Some(Kind::Exec(p)) = ev.kind {
                    events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let from_read = wall.saturating_sub(p.observed_unix_ns);
                    let mut seen = seen.lock().unwrap();
                    seen.insert(p.pid, (now, p.kernel_timestamp_ns, from_read));
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let cpu_before = cpu_ns(agent.id());
    let events_before = events.load(std::sync::atomic::Ordering::Relaxed);
    let spawned = tokio::task::spawn_blocking(move || {
        let mut spawned = Vec::with_capacity(spawns);
        for _ in 0..spawns {
            let t0 = monotonic_ns();
            let mut child = Command::new("/bin/true")
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            spawned.push((child.id() as i32, t0));
            child.wait().unwrap();
            std::thread::sleep(gap);
        }
        spawned
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_ns(agent.id()) - cpu_before;
    let agent_events = events.load(std::sync::atomic::Ordering::Relaxed) - events_before;

    let seen = seen.lock().unwrap();
    let (mut total, mut to_kernel, mut from_kernel, mut from_read) =
        (vec![], vec![], vec![], vec![]);
    for (pid, t0) in &spawned {
        if let Some((at, kts, read)) = seen.get(pid) {
            total.push(at.saturating_sub(*t0));
            to_kernel.push(kts.saturating_sub(*t0));
            from_kernel.push(at.saturating_sub(*kts));
            from_read.push(*read);
        }
    }
    for v in [&mut total, &mut to_kernel, &mut from_kernel, &mut from_read] {
        v.sort_unstable();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "spawns {spawns}, {gap:?} apart; received {} of them",
        total.len()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "latency (µs)", "p50", "p99", "max"
    );
    for (name, v) in [
        ("spawn -> subscriber", &total),
        ("spawn -> kernel event", &to_kernel),
        ("kernel event -> subscriber", &from_kernel),
        ("agent /proc read -> subscr.", &from_read),
    ] {
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>10.1}",
            name,
            us(percentile(v, 0.5)),
            us(percentile(v, 0.99)),
            us(*v.last().unwrap_or(&0))
        );
    }
    let per_1000 = cpu as f64 / agent_events.max(1) as f64 * 1000.0 / 1e6;
    println!(
        "agent CPU: {:.1} ms for {agent_events} exec events = {per_1000:.2} ms per 1,000 execs",
        cpu as f64 / 1e6
    );
    println!(
        "{{\"scenario\":\"exec_latency\",\"spawns\":{spawns},\"received\":{},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"kernel_to_subscriber_p50_us\":{:.1},\"kernel_to_subscriber_p99_us\":{:.1},\"agent_cpu_ms_per_1000_execs\":{per_1000:.3}}}",
        total.len(), us(percentile(&total, 0.5)), us(percentile(&total, 0.99)), us(*total.last().unwrap_or(&0)),
        us(percentile(&from_kernel, 0.5)), us(percentile(&from_kernel, 0.99))
    );
    reader.abort();
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(total.len(), spawns, "every spawn must arrive");
}
