//! Cmdline: what searching whole command lines costs per exec.
//!
//! A subscriber selects by `argv_substrings`, so the agent searches every
//! command line longer than its read limit (32 KiB) to its end. Two classes
//! of launch, alternating: `sh -c 'sleep 0.05; :' sh <marker>` (a short
//! line) and the same with 100,000 one-byte arguments before the marker
//! (200 KB, the marker past the cut). Each latency is the agent's own share:
//! the raw netlink listener's arrival (the kernel's floor, which includes
//! the kernel copying the arguments) to the gRPC subscriber's. The
//! difference of the two classes is the cost of reading and searching the
//! 200 KB line, and of sending a record cut at 32 KiB instead of a short
//! one.

use std::process::{Child, Command};
use std::time::Duration;

use crate::raw_listener::RawListener;
use crate::report::Report;
use crate::spawner::Spawn;
use crate::subscriber::Subscriber;
use crate::timing::{monotonic_ns, Arrivals, Summary};
use crate::{agent::Agent, Bench};

const SHORT: &str = "ewb-cmdline-short";
const LONG: &str = "ewb-cmdline-long";

/// Runs the scenario.
pub fn run(b: &Bench) -> Report {
    let agent = Agent::start(b.dir.path(), "netlink");
    let probe = ["sh", "-c", "sleep 0.05; :", "sh", SHORT];
    let sub = Subscriber::selecting(&b.rt, &agent.socket, &probe, &[SHORT, LONG]);
    let raw = RawListener::start().expect("start the raw netlink listener");
    let filler = vec!["x"; 100_000];
    let (mut short, mut long) = (Vec::new(), Vec::new());
    let mut running: Vec<Child> = Vec::new();
    for _ in 0..b.opts.cmdline_spawns {
        for (marker, spawns) in [(SHORT, &mut short), (LONG, &mut long)] {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "sleep 0.05; :", "sh"]);
            if marker == LONG {
                cmd.args(&filler);
            }
            let t0 = monotonic_ns();
            let child = cmd.arg(marker).spawn().expect("spawn sh");
            spawns.push((child.id() as i32, t0));
            running.push(child);
            std::thread::sleep(Duration::from_millis(10));
        }
        if running.len() > 20 {
            for mut c in running.drain(..) {
                let _ = c.wait();
            }
        }
    }
    for mut c in running {
        let _ = c.wait();
    }
    sub.settle(Duration::from_millis(300), Duration::from_secs(10));
    let raw = raw.stop();
    let seen = sub.seen.lock().unwrap_or_else(|e| e.into_inner());
    // The agent's share of each launch: raw arrival → subscriber arrival.
    let share = |spawns: &[Spawn]| {
        let at = |a: &Arrivals, &(pid, t0): &Spawn| a.first_after(pid, t0);
        let d = spawns
            .iter()
            .filter_map(|s| at(&seen.arrivals, s)?.checked_sub(at(&raw.arrivals, s)?));
        Summary::of(d.collect())
    };
    let (s, l) = (share(&short), share(&long));

    let mut r = Report::new("cmdline");
    r.row("method", "a subscriber selecting by argv_substrings; raw listener arrival → gRPC subscriber arrival, per launch (CLOCK_MONOTONIC)");
    r.row(
        "launches",
        format!("{} of each class, alternating 10 ms apart", short.len()),
    );
    r.row(
        format!("{:<32}", "class"),
        format!("{:>6} {:>9} {:>9} {:>9}", "n", "p50 µs", "p99 µs", "max µs"),
    );
    for (class, x) in [
        ("short line (~40 B)", &s),
        ("200 KB line, marker at the end", &l),
    ] {
        let (p50, p99, max) = x.us();
        r.row(
            format!("{class:<32}"),
            format!("{:>6} {p50:>9.1} {p99:>9.1} {max:>9.1}", x.n),
        );
    }
    let extra = (l.p50 as f64 - s.p50 as f64) / 1e3;
    r.row(
        "whole-line search, per exec (p50 difference)",
        format!("{extra:.1} µs"),
    );
    r.json("short", s.json());
    r.json("long", l.json());
    r.json("long_minus_short_p50_us", (extra * 10.0).round() / 10.0);
    r.json("lost_markers", seen.lost_markers);
    r.target(
        "200 KB lines delivered",
        l.n as f64,
        false,
        long.len() as f64,
        "launches",
    );
    r
}
