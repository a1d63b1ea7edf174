//! The load: processes started by this benchmark, with the time each spawn
//! began.
//!
//! Every spawn is `std::process::Command::spawn`, which on Linux uses
//! `posix_spawn` (clone + exec, the parent waiting until the exec is done)
//! and so returns after the child has executed. `t0` is `CLOCK_MONOTONIC`
//! read just before the call: latencies include the kernel's fork and exec,
//! as a user's launch would.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::timing::monotonic_ns;

/// `(pid, t0)` of one spawn.
pub type Spawn = (i32, u64);

/// Spawns `argv` once; returns the child and its `(pid, t0)`.
pub fn spawn(argv: &[&str]) -> (Child, Spawn) {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    let t0 = monotonic_ns();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    let pid = child.id() as i32;
    (child, (pid, t0))
}

/// Spawns `program` (no arguments) every `gap`, `count` times or until
/// `deadline`. Each child is reaped one gap after its spawn, so it stays
/// a zombie until then: its `/proc/<pid>/stat` (comm) stays readable that
/// long, which lets the reclaimer's rules match it. Blocking.
pub fn paced(program: &str, gap: Duration, count: usize, deadline: Option<Instant>) -> Vec<Spawn> {
    let mut out = Vec::with_capacity(count.min(100_000));
    for _ in 0..count {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let (mut child, s) = spawn(&[program]);
        out.push(s);
        std::thread::sleep(gap);
        let _ = child.wait();
    }
    out
}

/// Threads that fork+exec+wait `/bin/true` in a loop, as fast as they can
/// or at a fixed rate, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Spawn>>>,
    started: Instant,
}

impl Load {
    /// `threads` spawners; each does `per_thread_rate` spawns per second
    /// (on a fixed schedule, catching up when late), or flat out if `None`.
    pub fn start(threads: usize, per_thread_rate: Option<f64>) -> Self {
        Self::running(&["/bin/true"], threads, per_thread_rate)
    }

    /// As [`Load::start`], spawning `argv` instead of `/bin/true`.
    pub fn running(argv: &[&str], threads: usize, per_thread_rate: Option<f64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let threads = (0..threads)
            .map(|i| {
                let stop = stop.clone();
                let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
                std::thread::Builder::new()
                    .name(format!("spawner-{i}"))
                    .spawn(move || run(&stop, per_thread_rate, started, &argv))
                    .expect("start a spawner thread")
            })
            .collect();
        Self {
            stop,
            threads,
            started,
        }
    }

    /// Stops every spawner; returns all spawns and the seconds they ran.
    pub fn stop(mut self) -> (Vec<Spawn>, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut all = Vec::new();
        for t in std::mem::take(&mut self.threads) {
            all.extend(t.join().expect("a spawner thread panicked"));
        }
        (all, elapsed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run(stop: &AtomicBool, rate: Option<f64>, started: Instant, argv: &[String]) -> Vec<Spawn> {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(out.len() as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let (mut child, s) = spawn(&argv);
        let _ = child.wait();
        out.push(s);
    }
    out
}
