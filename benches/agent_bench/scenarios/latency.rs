//! Latency: spawn → raw listener (the floor), → gRPC subscriber, → the
//! reclaimer's match decision; first on a quiet machine, then during a storm.
//!
//! The probe is `/bin/true` run through a symlink named `ewb-probe`: the
//! kernel names the process after the path executed, so the reclaimer's
//! rules (`match_commands = ["ewb-probe"]`) match the probes and nothing
//! else, and storm processes (`true`) never. In dry-run the reclaimer is
//! armed again when the matched process exits, so every probe can be a
//! decision; one that is not (the agent could not read its comm, or the
//! previous probe's exit had not reached the reclaimer yet) is counted as
//! missing, not as slow.

use std::time::{Duration, Instant};

use crate::raw_listener::RawListener;
use crate::report::Report;
use crate::spawner::{self, Load, Spawn};
use crate::timing::{round1, Summary};
use crate::{agent::Agent, reclaimer::Reclaimer, subscriber::Subscriber, Bench};

/// Latencies of one phase, by where they were measured.
struct Phase {
    spawns: Vec<Spawn>,
    raw: Summary,
    kernel: Summary,
    subscriber: Summary,
    decision: Summary,
    seconds: f64,
}

/// Runs both phases.
pub fn run(b: &Bench) -> Report {
    let probe = b.dir.path().join("ewb-probe");
    let _ = std::fs::remove_file(&probe);
    std::os::unix::fs::symlink("/bin/true", &probe).expect("symlink the probe");
    let probe = probe.to_str().expect("UTF-8 temp path").to_string();

    let agent = Agent::start(b.dir.path(), "netlink");
    let sub = Subscriber::start(&b.rt, &agent.socket, &["/bin/true"]);
    let mut reclaimer = Reclaimer::start(
        b.dir.path(),
        &agent.socket,
        "ewb-probe",
        &b.out.join("reclaimer-latency.log"),
    );
    reclaimer.wait_connected();
    reclaimer.wait_deciding(&probe);
    let raw = RawListener::start().expect("start the raw netlink listener");
    let gap = Duration::from_millis(b.opts.gap_ms);

    let t = Instant::now();
    let quiet = spawner::paced(&probe, gap, b.opts.spawns, None);
    let quiet_secs = t.elapsed().as_secs_f64();
    sub.settle(Duration::from_millis(300), Duration::from_secs(5));

    let storm = Load::start(2, None);
    let t = Instant::now();
    let stormy = spawner::paced(
        &probe,
        gap,
        usize::MAX,
        Some(t + Duration::from_secs(b.opts.seconds)),
    );
    let stormy_secs = t.elapsed().as_secs_f64();
    let (storm_spawns, _) = storm.stop();
    sub.settle(Duration::from_millis(500), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let raw = raw.stop();

    let seen = sub.seen.lock().unwrap_or_else(|e| e.into_inner());
    let decided = reclaimer
        .decisions
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let phase = |spawns: Vec<Spawn>, seconds: f64| Phase {
        raw: Summary::of(raw.arrivals.latencies(&spawns)),
        kernel: Summary::of(raw.kernel.latencies(&spawns)),
        subscriber: Summary::of(seen.arrivals.latencies(&spawns)),
        decision: Summary::of(decided.matched.latencies(&spawns)),
        spawns,
        seconds,
    };
    let quiet = phase(quiet, quiet_secs);
    let stormy = phase(stormy, stormy_secs);

    let mut r = Report::new("latency");
    r.row("method", "CLOCK_MONOTONIC before Command::spawn → after recv (raw), after the gRPC item is decoded (subscriber), when the reclaimer's JSON log line reaches the bench over a pipe (decision)");
    for (name, p) in [("quiet", &quiet), ("storm", &stormy)] {
        let rate = p.spawns.len() as f64 / p.seconds;
        let extra = if name == "storm" {
            format!(
                ", with 2 spawners running /bin/true flat out ({} spawns)",
                storm_spawns.len()
            )
        } else {
            String::new()
        };
        r.row(
            format!("{name}: probes"),
            format!(
                "{} spawns {} ms apart ({rate:.0}/s){extra}",
                p.spawns.len(),
                b.opts.gap_ms
            ),
        );
        r.row(
            format!("{name}: coverage"),
            format!(
                "raw {} / subscriber {} / decision {} of {} probes",
                p.raw.n,
                p.subscriber.n,
                p.decision.n,
                p.spawns.len()
            ),
        );
        r.row(
            format!("{name}: {:<30}", "path"),
            format!(
                "{:>6} {:>9} {:>9} {:>9} {:>8} {:>8}",
                "n", "p50 µs", "p99 µs", "max µs", "×raw p50", "×raw p99"
            ),
        );
        for (path, s) in [
            ("spawn → kernel event timestamp", p.kernel),
            ("spawn → raw listener (floor)", p.raw),
            ("spawn → gRPC subscriber", p.subscriber),
            ("spawn → reclaimer decision", p.decision),
        ] {
            let (p50, p99, max) = s.us();
            let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
            r.row(
                format!("{name}: {path:<30}"),
                format!(
                    "{:>6} {p50:>9.1} {p99:>9.1} {max:>9.1} {:>8.2} {:>8.2}",
                    s.n,
                    ratio(s.p50, p.raw.p50),
                    ratio(s.p99, p.raw.p99)
                ),
            );
        }
        r.json(
            name,
            serde_json::json!({
                "spawns": p.spawns.len(), "rate_per_s": round1(rate),
                "kernel": p.kernel.json(), "raw": p.raw.json(),
                "subscriber": p.subscriber.json(), "decision": p.decision.json(),
                "subscriber_p50_over_raw": ratio2(p.subscriber.p50, p.raw.p50),
                "subscriber_p99_over_raw": ratio2(p.subscriber.p99, p.raw.p99),
                "decision_p99_over_raw": ratio2(p.decision.p99, p.raw.p99),
            }),
        );
    }
    if !decided.problems.is_empty() {
        r.row("reclaimer warnings", decided.problems.join(" | "));
    }
    r.json("lost_markers", seen.lost_markers);
    let ms = |ns: u64| ns as f64 / 1e6;
    r.target(
        "quiet: subscriber p50",
        ms(quiet.subscriber.p50),
        true,
        0.5,
        "ms",
    );
    let raw_limit = 1.3 * ms(quiet.raw.p99);
    r.target(
        "quiet: subscriber p99 (limit = 1.3 × raw p99)",
        ms(quiet.subscriber.p99),
        true,
        (raw_limit * 1000.0).round() / 1000.0,
        "ms",
    );
    r.target(
        "quiet: reclaimer decision p99",
        ms(quiet.decision.p99),
        true,
        3.0,
        "ms",
    );
    r
}

fn ratio2(a: u64, b: u64) -> f64 {
    (a as f64 / b.max(1) as f64 * 100.0).round() / 100.0
}
