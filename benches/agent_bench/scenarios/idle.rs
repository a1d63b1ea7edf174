//! Idle: what an agent costs when nothing is launched. Both detectors run
//! side by side (the poll agent's scans start no process, so neither
//! disturbs the other), each with one subscriber, for `--idle-seconds`.
//!
//! CPU is the scheduler's exact run time summed over the agent's threads
//! (`/proc/<pid>/task/*/schedstat`), because the target (1 ms per 30 s) is
//! below the 10 ms tick of utime/stime. Wake-ups are context switches
//! summed over the threads.
//!
//! The machine is shared, and other people's launches are real work for the
//! netlink agent. So the window is cut into 1 s slices, and a raw listener
//! with the agent's own kernel filter (exec + exit) marks each slice that
//! had any kernel event. The target is judged on the quiet slices (no event
//! at all), scaled to 30 s; the whole window is reported beside it.

use std::time::Duration;

use execwatch::internal::cn_proc::event_mask;

use crate::procstat::{Measured, Sample};
use crate::raw_listener::RawListener;
use crate::report::Report;
use crate::timing::round1;
use crate::{agent::Agent, subscriber::Subscriber, Bench};

/// Runs both agents for the idle window.
pub fn run(b: &Bench) -> Report {
    let netlink = Agent::start(b.dir.path(), "netlink");
    let poll = Agent::start(b.dir.path(), "poll");
    let _sub_n = Subscriber::start(&b.rt, &netlink.socket, &["/bin/true"]);
    let _sub_p = Subscriber::start(&b.rt, &poll.socket, &["sleep", "0.6"]);
    let raw = RawListener::start_with(event_mask::EXEC | event_mask::EXIT)
        .expect("start the raw listener");
    // Let start-up work (snapshot, first scans, thread pools) finish.
    std::thread::sleep(Duration::from_secs(2));

    let secs = b.opts.idle_seconds;
    let (p0, mut slices) = (poll.sample(), vec![netlink.sample()]);
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        slices.push(netlink.sample());
    }
    let dp = poll.sample().since(&p0);
    let raw = raw.stop();
    let dn = slices[slices.len() - 1].since(&slices[0]);

    // Sum the slices in which the kernel sent the agent nothing.
    let mut quiet = Sample::default();
    for w in slices.windows(2) {
        let busy = raw.all.iter().any(|&t| t >= w[0].at_ns && t < w[1].at_ns);
        if !busy {
            let d = w[1].since(&w[0]);
            quiet.at_ns += d.at_ns;
            quiet.sched_ns += d.sched_ns;
            quiet.switches += d.switches;
        }
    }
    let quiet_s = quiet.at_ns as f64 / 1e9;
    let events = raw.all.len();

    let mut r = Report::new("idle");
    r.row(
        format!("{:<30}", "detector, window"),
        format!(
            "{:>8} {:>10} {:>14} {:>9} {:>10}",
            "seconds", "CPU ms", "CPU ms per 30s", "wake-ups", "wake-ups/s"
        ),
    );
    let mut json = serde_json::Map::new();
    let mut row = |name: &str, key: &str, d: &Sample| {
        let s = d.at_ns as f64 / 1e9;
        let ms = d.sched_ns as f64 / 1e6;
        let ms30 = if s > 0.0 { ms * 30.0 / s } else { f64::NAN };
        let wps = d.switches as f64 / s.max(1e-9);
        r.row(
            format!("{name:<30}"),
            format!(
                "{s:>8.1} {ms:>10.3} {ms30:>14.3} {:>9} {wps:>10.1}",
                d.switches
            ),
        );
        json.insert(
            key.into(),
            serde_json::json!({"seconds": round1(s), "cpu_ms": round3(ms), "cpu_ms_per_30s": round3(ms30),
                "wakeups": d.switches, "wakeups_per_s": round1(wps)}),
        );
        ms30
    };
    row("netlink, whole window", "netlink", &dn);
    let quiet30 = row("netlink, quiet seconds only", "netlink_quiet", &quiet);
    row("poll, whole window", "poll", &dp);
    r.row(
        "kernel events (exec + exit)",
        format!("{events} by other users of the machine in {secs} s; {quiet_s:.0} of {secs} one-second slices had none"),
    );
    r.json("kernel_events", events);
    for (k, v) in json {
        r.json(&k, v);
    }
    r.target(
        "netlink agent CPU per 30 s, quiet seconds",
        round3(quiet30),
        true,
        1.0,
        "ms",
    );
    r
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
