//! Idle: what an agent costs when nothing is launched. Both detectors run
//! side by side (the poll agent's scans start no process, so neither
//! disturbs the other), each with one subscriber, for `--idle-seconds`.
//!
//! CPU is the scheduler's exact run time summed over the agent's threads
//! (`/proc/<pid>/task/*/schedstat`), because the target (1 ms per 30 s) is
//! below the 10 ms tick of utime/stime. Wake-ups are context switches
//! summed over the threads. The machine is shared: other users' launches
//! during the window are counted and reported, since each is real work.

use std::time::Duration;

use crate::report::Report;
use crate::timing::round1;
use crate::{agent::Agent, subscriber::Subscriber, Bench};

/// Runs both agents for the idle window.
pub fn run(b: &Bench) -> Report {
    let netlink = Agent::start(b.dir.path(), "netlink");
    let poll = Agent::start(b.dir.path(), "poll");
    let sub_n = Subscriber::start(&b.rt, &netlink.socket, &["/bin/true"]);
    let sub_p = Subscriber::start(&b.rt, &poll.socket, &["sleep", "0.6"]);
    // Let start-up work (snapshot, first scans, thread pools) finish.
    std::thread::sleep(Duration::from_secs(2));

    let secs = b.opts.idle_seconds;
    let (n0, p0) = (netlink.sample(), poll.sample());
    let (e_n0, e_p0) = (sub_n.execs(), sub_p.execs());
    std::thread::sleep(Duration::from_secs(secs));
    let (dn, dp) = (netlink.sample().since(&n0), poll.sample().since(&p0));
    let (e_n, e_p) = (sub_n.execs() - e_n0, sub_p.execs() - e_p0);

    let mut r = Report::new("idle");
    r.row(
        format!("{:<9}", "detector"),
        format!(
            "{:>12} {:>14} {:>10} {:>12} {:>24}",
            "CPU ms", "CPU ms per 30s", "wake-ups", "wake-ups/s", "background execs seen"
        ),
    );
    let mut per30 = Vec::new();
    for (name, d, execs) in [("netlink", dn, e_n), ("poll", dp, e_p)] {
        let ms = d.sched_ns as f64 / 1e6;
        let ms30 = ms * 30.0 / secs as f64;
        let wps = d.switches as f64 / secs as f64;
        r.row(
            format!("{name:<9}"),
            format!(
                "{ms:>12.3} {ms30:>14.3} {:>10} {wps:>12.1} {execs:>24}",
                d.switches
            ),
        );
        r.json(
            name,
            serde_json::json!({
                "cpu_ms": (ms * 1000.0).round() / 1000.0, "cpu_ms_per_30s": (ms30 * 1000.0).round() / 1000.0,
                "tick_cpu_ms": d.stat_ns / 1_000_000, "wakeups": d.switches, "wakeups_per_s": round1(wps),
                "background_execs": execs,
            }),
        );
        per30.push(ms30);
    }
    r.json("seconds", secs);
    if e_n > 0 {
        r.row(
            "note",
            format!(
                "not idle: others launched {e_n} processes in the window ({:.1}/s); the netlink agent spent {:.1} µs per launch",
                e_n as f64 / secs as f64,
                dn.sched_ns as f64 / 1e3 / e_n as f64
            ),
        );
    }
    r.target(
        &format!("netlink agent idle CPU per 30 s ({e_n} foreign launches in the window)"),
        (per30[0] * 1000.0).round() / 1000.0,
        true,
        1.0,
        "ms",
    );
    r
}
