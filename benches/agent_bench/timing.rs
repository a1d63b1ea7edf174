//! Clocks and latency statistics.
//!
//! Every latency in the benchmark is a difference of two `CLOCK_MONOTONIC`
//! readings taken in this process (spawn, raw netlink receive, gRPC receive,
//! reclaimer log line arrival), or against the kernel's own event timestamp,
//! which is on the same clock. Wall-clock time is never subtracted from
//! monotonic time.

use std::collections::HashMap;

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time this thread has used, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`,
/// exact, not tick-rounded).
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; both clocks exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// When something was seen, per pid. A pid may appear more than once over a
/// long run (pids wrap at `kernel.pid_max`), so every sighting is kept.
#[derive(Debug, Default, Clone)]
pub struct Arrivals(HashMap<i32, Vec<u64>>);

impl Arrivals {
    /// Records that `pid` was seen at `at_ns` (monotonic).
    pub fn record(&mut self, pid: i32, at_ns: u64) {
        self.0.entry(pid).or_default().push(at_ns);
    }

    /// The first sighting of `pid` at or after `since_ns`.
    pub fn first_after(&self, pid: i32, since_ns: u64) -> Option<u64> {
        self.0
            .get(&pid)?
            .iter()
            .copied()
            .filter(|&t| t >= since_ns)
            .min()
    }

    /// Latency of every spawn `(pid, t0)` that has a sighting; spawns that
    /// were never seen are left out (count them with `len` of the result).
    pub fn latencies(&self, spawns: &[(i32, u64)]) -> Vec<u64> {
        spawns
            .iter()
            .filter_map(|&(pid, t0)| self.first_after(pid, t0).map(|t| t - t0))
            .collect()
    }
}

/// p50 / p99 / max of a set of durations, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
}

impl Summary {
    /// Summarises `samples` (any order).
    pub fn of(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        let Some(&max) = samples.last() else {
            return Self::default();
        };
        Self {
            n: samples.len(),
            p50: percentile(&samples, 0.50),
            p99: percentile(&samples, 0.99),
            max,
        }
    }

    /// The three figures in microseconds, for tables and JSON.
    pub fn us(&self) -> (f64, f64, f64) {
        (us(self.p50), us(self.p99), us(self.max))
    }

    /// JSON object `{"n":…,"p50_us":…,"p99_us":…,"max_us":…}`.
    pub fn json(&self) -> serde_json::Value {
        let (p50, p99, max) = self.us();
        serde_json::json!({"n": self.n, "p50_us": round1(p50), "p99_us": round1(p99), "max_us": round1(max)})
    }
}

/// Nearest-rank percentile of sorted `v` (`p` in 0..=1).
fn percentile(v: &[u64], p: f64) -> u64 {
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Nanoseconds as microseconds.
pub fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Rounds to one decimal, so JSON lines stay short.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
