//! Audit: what the netlink agent's audit (agent/detector/audit.rs) costs,
//! and the detection time it guarantees for a launch the kernel dropped.
//!
//! At least 1,000 processes run (sleepers are added to reach it) and the
//! dry-run reclaimer subscribes (comm rules, a snapshot: the production
//! case), while the agent audits every 100 ms for `--seconds`. The audit
//! thread's exact CPU time (`/proc/<pid>/task/<tid>/schedstat` of the thread
//! named `audit`) over that window, divided by the audits the agent counted
//! (GetStats `audits`), is the cost of one audit; scaled to the default
//! interval (15 s), the share of one core. The worst-case detection time is
//! the interval, plus one audit, plus the audit's confirmation wait
//! (200 ms) and the reader's barrier.

use std::time::Duration;

use crate::children::Sleepers;
use crate::procstat::Measured;
use crate::reclaimer::Reclaimer;
use crate::report::Report;
use crate::{agent::Agent, Bench};

/// The agent's default `--audit-interval`.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// The audit's wait before it confirms a suspect (`CONFIRM` in the agent).
const CONFIRM: Duration = Duration::from_millis(200);

/// Runs the audit scenario.
pub fn run(b: &Bench) -> Report {
    let running = processes();
    let _sleepers = Sleepers::spawn(1000usize.saturating_sub(running)).expect("start sleepers");
    // The agent reads every flag from its environment too.
    std::env::set_var("EXECWATCH_AUDIT_INTERVAL", "100ms");
    let agent = Agent::start(b.dir.path(), "netlink");
    std::env::remove_var("EXECWATCH_AUDIT_INTERVAL");
    let mut reclaimer = Reclaimer::start(
        b.dir.path(),
        &agent.socket,
        "ewb-nothing",
        &b.out.join("reclaimer-audit.log"),
    );
    reclaimer.wait_connected();
    std::thread::sleep(Duration::from_secs(2));
    let processes = processes();
    let (s0, t0) = (b.rt.block_on(agent.stats()), audit_ns(agent.pid()));
    std::thread::sleep(Duration::from_secs(b.opts.seconds));
    let (s1, t1) = (b.rt.block_on(agent.stats()), audit_ns(agent.pid()));
    let audits = s1.audits - s0.audits;
    let per_audit = Duration::from_nanos((t1 - t0) / audits.max(1));
    let share = per_audit.as_secs_f64() / DEFAULT_INTERVAL.as_secs_f64() * 100.0;
    let worst = DEFAULT_INTERVAL + per_audit + CONFIRM;

    let mut r = Report::new("audit");
    r.row(
        "audits",
        format!(
            "{audits} in {} s over {processes} processes, one reclaimer subscribed; found {}",
            b.opts.seconds,
            s1.audit_found - s0.audit_found
        ),
    );
    r.row(
        "CPU per audit",
        format!(
            "{:.2} ms = {share:.4} % of one core at the default 15 s interval",
            per_audit.as_secs_f64() * 1e3
        ),
    );
    r.row(
        "worst-case detection of a dropped launch",
        format!(
            "{:.2} s at the default interval (interval + one audit + {} ms confirmation + the reader's barrier)",
            worst.as_secs_f64(),
            CONFIRM.as_millis()
        ),
    );
    r.json("processes", processes);
    r.json("audits", audits);
    r.json("cpu_us_per_audit", per_audit.as_micros() as u64);
    r.json("core_percent_at_default", (share * 1e4).round() / 1e4);
    r.json("worst_case_detection_ms", worst.as_millis() as u64);
    r.target(
        "audit CPU, share of one core at 15 s",
        share,
        true,
        0.1,
        "%",
    );
    r
}

/// Processes running now.
fn processes() -> usize {
    let dir = std::fs::read_dir("/proc").expect("list /proc");
    let pids = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    pids.count()
}

/// The exact CPU time of the agent's audit thread, ns.
fn audit_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the agent's threads");
    for task in tasks.filter_map(Result::ok) {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == "audit" {
            let sched = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
            return sched
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    panic!("the agent has no audit thread")
}
