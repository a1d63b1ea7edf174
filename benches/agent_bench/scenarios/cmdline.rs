//! Cmdline: what searching whole command lines costs per exec.
//!
//! A subscriber selects by `argv_substrings`, so the agent searches every
//! command line longer than its read limit (32 KiB) to its end. Two phases
//! of `--cmdline-spawns` launches each, 10 ms apart: `sh -c 'sleep 0.5; :'
//! sh <marker>` (a short line), then the same with 100,000 one-byte
//! arguments before the marker (200 KB, the marker past the cut). Per phase:
//! the agent's on-CPU time (scheduler, exact) per launch, and its share of
//! each launch's latency (raw netlink listener arrival to gRPC subscriber
//! arrival; the kernel copying the arguments is before the raw arrival).
//! The differences are what reading and searching the 200 KB line, and
//! sending a record cut at 32 KiB instead of a short one, cost per exec.

use std::process::{Child, Command};
use std::time::Duration;

use crate::procstat::{Measured, Sample};
use crate::raw_listener::RawListener;
use crate::report::Report;
use crate::subscriber::Subscriber;
use crate::timing::{monotonic_ns, Summary};
use crate::{agent::Agent, Bench};

const SHORT: &str = "ewb-cmdline-short";
const LONG: &str = "ewb-cmdline-long";

/// What one phase measured.
struct Phase {
    launches: usize,
    share: Summary,
    cpu: Sample,
}

/// Runs the scenario.
pub fn run(b: &Bench) -> Report {
    let agent = Agent::start(b.dir.path(), "netlink");
    let probe = ["sh", "-c", "sleep 0.05; :", "sh", SHORT];
    let sub = Subscriber::selecting(&b.rt, &agent.socket, &probe, &[SHORT, LONG]);
    let filler = vec!["x"; 100_000];
    let phase = |marker: &str, filler: &[&str]| {
        sub.settle(Duration::from_millis(300), Duration::from_secs(10));
        let raw = RawListener::start().expect("start the raw netlink listener");
        let before = agent.sample();
        let mut spawns = Vec::new();
        let mut running: Vec<Child> = Vec::new();
        for _ in 0..b.opts.cmdline_spawns {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "sleep 0.5; :", "sh"]).args(filler);
            let t0 = monotonic_ns();
            let child = cmd.arg(marker).spawn().expect("spawn sh");
            spawns.push((child.id() as i32, t0));
            running.push(child);
            std::thread::sleep(Duration::from_millis(10));
        }
        for mut c in running {
            let _ = c.wait();
        }
        sub.settle(Duration::from_millis(300), Duration::from_secs(10));
        let cpu = agent.sample().since(&before);
        let raw = raw.stop();
        let seen = sub.seen.lock().unwrap_or_else(|e| e.into_inner());
        let share = spawns.iter().filter_map(|&(pid, t0)| {
            let at_raw = raw.arrivals.first_after(pid, t0)?;
            seen.arrivals.first_after(pid, t0)?.checked_sub(at_raw)
        });
        Phase {
            launches: spawns.len(),
            share: Summary::of(share.collect()),
            cpu,
        }
    };
    let short = phase(SHORT, &[]);
    let long = phase(LONG, &filler);

    let mut r = Report::new("cmdline");
    r.row("method", "a subscriber selecting by argv_substrings; agent on-CPU time (schedstat) per launch, and raw listener arrival → gRPC subscriber arrival (CLOCK_MONOTONIC)");
    r.row(
        format!("{:<32}", "class"),
        format!(
            "{:>9} {:>12} {:>9} {:>9}",
            "delivered", "CPU µs/exec", "p50 µs", "p99 µs"
        ),
    );
    let per_exec = |p: &Phase| p.cpu.sched_ns as f64 / 1e3 / p.launches.max(1) as f64;
    for (class, p) in [("short line", &short), ("200 KB line, marker last", &long)] {
        let (p50, p99, _) = p.share.us();
        r.row(
            format!("{class:<32}"),
            format!(
                "{:>9} {:>12.1} {p50:>9.1} {p99:>9.1}",
                format!("{}/{}", p.share.n, p.launches),
                per_exec(p)
            ),
        );
    }
    let cpu = per_exec(&long) - per_exec(&short);
    let latency = (long.share.p50 as f64 - short.share.p50 as f64) / 1e3;
    r.row(
        "whole-line search, per exec",
        format!("{cpu:.1} µs of agent CPU, {latency:.1} µs of p50 latency"),
    );
    for (key, p) in [("short", &short), ("long", &long)] {
        let cpu = (per_exec(p) * 10.0).round() / 10.0;
        r.json(key, serde_json::json!({ "launches": p.launches, "share": p.share.json(), "cpu_us_per_exec": cpu }));
    }
    r.json("long_minus_short_cpu_us", (cpu * 10.0).round() / 10.0);
    r.target(
        "200 KB lines delivered",
        long.share.n as f64,
        false,
        long.launches as f64,
        "launches",
    );
    r
}
