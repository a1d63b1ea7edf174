//! Storm: two spawners fork+exec+wait `/bin/true` flat out for `--seconds`
//! (the most the machine can do), with the agent on default flags, one
//! gRPC subscriber, the dry-run reclaimer and the raw listener all watching.
//! Around it, two storms of the same length that price the agent against
//! the raw listener (the floor) running beside it:
//! - *unfiltered*: before, the subscriber alone, taking every exec as a
//!   complete record;
//! - *filtered*: after, with a fresh agent, the dry-run reclaimer alone,
//!   whose rules match nothing in the storm and which subscribes with its
//!   rules as its selector (the production case).
//!
//! Delivery is matched by pid against what was spawned (a sighting counts
//! only if it comes after the spawn). CPU is the kernel's utime + stime of
//! the whole process (all threads) across the storm and its drain, divided
//! by the exec events the agent itself counted (its GetStats `execs`, which
//! includes anything else that executed meanwhile). The raw listener's CPU
//! is its thread's exact CPU clock over its whole life, per exec it saw.

use std::time::Duration;

use crate::procstat::Measured;
use crate::raw_listener::RawListener;
use crate::report::Report;
use crate::spawner::Load;
use crate::timing::round1;

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
use crate::{agent::Agent, reclaimer::Reclaimer, subscriber::Subscriber, Bench};

/// Runs the storm.
pub fn run(b: &Bench) -> Report {
    let agent = Agent::start(b.dir.path(), "netlink");
    let sub = Subscriber::start(&b.rt, &agent.socket, &["/bin/true"]);
    let alone = priced(b, &agent, || {
        sub.settle(Duration::from_millis(500), Duration::from_secs(15))
    });
    // Rules that match nothing in the storm: the reclaimer only tracks.
    let mut reclaimer = Reclaimer::start(
        b.dir.path(),
        &agent.socket,
        "ewb-probe",
        &b.out.join("reclaimer-storm.log"),
    );
    reclaimer.wait_connected();
    let raw = RawListener::start().expect("start the raw netlink listener");
    std::thread::sleep(Duration::from_millis(200));

    let stats0 = b.rt.block_on(agent.stats());
    let (a0, r0) = (agent.sample(), reclaimer.sample());
    let r_events0 = reclaimer.metric("events_total");
    let r_lost0 = reclaimer.metric("lost_markers_total");
    let lost0 = sub
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .lost_markers;

    let load = Load::start(2, None);
    std::thread::sleep(Duration::from_secs(b.opts.seconds));
    let (spawns, seconds) = load.stop();
    sub.settle(Duration::from_millis(500), Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));

    let (a1, r1) = (agent.sample(), reclaimer.sample());
    let stats1 = b.rt.block_on(agent.stats());
    let r_events = reclaimer.metric("events_total") - r_events0;
    let r_lost = reclaimer.metric("lost_markers_total") - r_lost0;
    let raw = raw.stop();
    let (agent_rss, reclaimer_rss) = (agent.peak_rss_kib(), reclaimer.peak_rss_kib());

    let seen = sub.seen.lock().unwrap_or_else(|e| e.into_inner());
    let spawned = spawns.len();
    let delivered = seen.arrivals.latencies(&spawns).len();
    let raw_delivered = raw.arrivals.latencies(&spawns).len();
    let lost_markers = seen.lost_markers - lost0;
    let (da, dr) = (a1.since(&a0), r1.since(&r0));
    let agent_execs = stats1.execs - stats0.execs;
    let agent_us = da.stat_ns as f64 / 1e3 / agent_execs.max(1) as f64;
    let raw_us = raw.cpu_ns as f64 / 1e3 / raw.execs.max(1) as f64;
    let reclaimer_us = dr.stat_ns as f64 / 1e3 / r_events.max(1) as f64;
    let overruns = stats1.kernel_overruns - stats0.kernel_overruns;
    let overflows = stats1.subscriber_overflows - stats0.subscriber_overflows;
    let gone = stats1.exited_before_inspection - stats0.exited_before_inspection;

    let mut r = Report::new("storm");
    r.row(
        "spawned",
        format!(
            "{spawned} in {seconds:.1} s by 2 threads ({:.0}/s)",
            spawned as f64 / seconds
        ),
    );
    r.row(
        "delivered to subscriber",
        format!(
            "{delivered} ({} missing), {lost_markers} lost markers",
            spawned - delivered
        ),
    );
    r.row(
        "delivered to raw listener",
        format!(
            "{raw_delivered} ({} missing), {} ENOBUFS",
            spawned - raw_delivered,
            raw.overruns
        ),
    );
    r.row("agent counters", format!("execs {agent_execs}, kernel overruns {overruns}, subscriber overflows {overflows}, exited before inspection {gone}"));
    r.row(
        "agent CPU",
        format!(
            "{:.0} ms = {agent_us:.1} µs per exec ({:.1}× the raw listener's {raw_us:.1} µs)",
            da.stat_ns as f64 / 1e6,
            agent_us / raw_us.max(1e-9)
        ),
    );
    let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
    r.row(
        "agent CPU, one subscriber",
        format!(
            "{:.1} µs per exec ({} execs at {:.0}/s), {:.2} wake-ups per exec: the subscriber alone, in a first storm",
            alone.us_per_exec, alone.execs, alone.rate, alone.switches_per_exec
        ),
    );
    r.row(
        "wake-ups (context switches)",
        format!(
            "agent {} = {:.2} per exec; reclaimer {} = {:.2} per item",
            da.switches,
            per(da.switches, agent_execs),
            dr.switches,
            per(dr.switches, r_events)
        ),
    );
    r.row("reclaimer CPU", format!("{:.0} ms = {reclaimer_us:.1} µs per stream item ({r_events} items: execs, exits, snapshot), {r_lost} lost markers", dr.stat_ns as f64 / 1e6));
    r.row(
        "peak RSS (VmHWM)",
        format!(
            "agent {:.1} MiB, reclaimer {:.1} MiB",
            agent_rss as f64 / 1024.0,
            reclaimer_rss as f64 / 1024.0
        ),
    );
    r.json("spawned", spawned);
    r.json("seconds", round1(seconds));
    r.json("spawn_rate_per_s", round1(spawned as f64 / seconds));
    r.json("delivered", delivered);
    r.json("raw_delivered", raw_delivered);
    r.json("lost_markers", lost_markers);
    r.json("raw_enobufs", raw.overruns);
    r.json("agent_execs", agent_execs);
    r.json("agent_kernel_overruns", overruns);
    r.json("agent_subscriber_overflows", overflows);
    r.json("agent_exited_before_inspection", gone);
    r.json("agent_cpu_ms", round1(da.stat_ns as f64 / 1e6));
    r.json("agent_cpu_us_per_exec", round1(agent_us));
    r.json("raw_cpu_us_per_exec", round1(raw_us));
    r.json("agent_cpu_over_raw", round1(agent_us / raw_us.max(1e-9)));
    r.json(
        "agent_cpu_us_per_exec_one_subscriber",
        round1(alone.us_per_exec),
    );
    r.json("one_subscriber_execs", alone.execs);
    r.json(
        "one_subscriber_wakeups_per_exec",
        (alone.switches_per_exec * 100.0).round() / 100.0,
    );
    r.json(
        "agent_wakeups_per_exec",
        round2(per(da.switches, agent_execs)),
    );
    r.json(
        "reclaimer_wakeups_per_item",
        round2(per(dr.switches, r_events)),
    );
    r.json("reclaimer_cpu_ms", round1(dr.stat_ns as f64 / 1e6));
    r.json("reclaimer_items", r_events);
    r.json("reclaimer_cpu_us_per_item", round1(reclaimer_us));
    r.json("reclaimer_lost_markers", r_lost);
    r.json("agent_peak_rss_kib", agent_rss);
    r.json("reclaimer_peak_rss_kib", reclaimer_rss);
    r.target(
        "events lost (spawned − delivered)",
        (spawned - delivered) as f64,
        true,
        0.0,
        "",
    );
    r.target("lost markers", lost_markers as f64, true, 0.0, "");
    r.target(
        "agent peak RSS",
        round1(agent_rss as f64 / 1024.0),
        true,
        10.0,
        "MiB",
    );
    r.target(
        "reclaimer peak RSS",
        round1(reclaimer_rss as f64 / 1024.0),
        true,
        40.0,
        "MiB",
    );
    drop(seen);
    renames(b, &agent, &sub, &mut r);
    drop((sub, reclaimer, agent));

    // The production case: only the reclaimer, nothing in the storm matching.
    let agent = Agent::start(b.dir.path(), "netlink");
    let mut reclaimer = Reclaimer::start(
        b.dir.path(),
        &agent.socket,
        "ewb-nothing",
        &b.out.join("reclaimer-storm-filtered.log"),
    );
    reclaimer.wait_connected();
    let filtered = priced(b, &agent, || std::thread::sleep(Duration::from_millis(500)));
    drop((reclaimer, agent));
    for (name, phase, limit) in [
        ("unfiltered (one subscriber, complete records)", &alone, 3.0),
        (
            "filtered (reclaimer only, nothing matching)",
            &filtered,
            1.5,
        ),
    ] {
        r.row(
            format!("agent CPU, {name}"),
            format!(
                "{:.1} µs per exec vs the raw listener's {:.1} µs beside it: {:.2}× ({} execs at {:.0}/s, {:.2} wake-ups per exec)",
                phase.us_per_exec,
                phase.raw_us_per_exec,
                phase.over_raw(),
                phase.execs,
                phase.rate,
                phase.switches_per_exec
            ),
        );
        r.target(
            &format!("agent CPU per exec over the raw floor, {name}"),
            round2(phase.over_raw()),
            true,
            limit,
            "×",
        );
    }
    r.json(
        "filtered_agent_cpu_us_per_exec",
        round1(filtered.us_per_exec),
    );
    r.json(
        "filtered_raw_cpu_us_per_exec",
        round1(filtered.raw_us_per_exec),
    );
    r.json("filtered_agent_cpu_over_raw", round2(filtered.over_raw()));
    r.json("filtered_execs", filtered.execs);
    r.json(
        "unfiltered_raw_cpu_us_per_exec",
        round1(alone.raw_us_per_exec),
    );
    r.json("unfiltered_agent_cpu_over_raw", round2(alone.over_raw()));
    r
}

/// The agent's cost in a storm with its subscribers of the moment, and the
/// raw listener's beside it.
struct Priced {
    us_per_exec: f64,
    raw_us_per_exec: f64,
    switches_per_exec: f64,
    execs: u64,
    rate: f64,
}

impl Priced {
    /// The agent's CPU per exec as a multiple of the floor's.
    fn over_raw(&self) -> f64 {
        self.us_per_exec / self.raw_us_per_exec.max(1e-9)
    }
}

/// Runs a storm of `--seconds` against `agent` as it is subscribed now,
/// with the raw listener beside it; `settle` waits for the subscribers to
/// drain.
fn priced(b: &Bench, agent: &Agent, settle: impl FnOnce()) -> Priced {
    let raw = RawListener::start().expect("start the raw netlink listener");
    std::thread::sleep(Duration::from_millis(200));
    let (stats0, a0) = (b.rt.block_on(agent.stats()), agent.sample());
    let load = Load::start(2, None);
    std::thread::sleep(Duration::from_secs(b.opts.seconds));
    let (_, seconds) = load.stop();
    settle();
    let (stats1, a1) = (b.rt.block_on(agent.stats()), agent.sample());
    let raw = raw.stop();
    let (da, execs) = (a1.since(&a0), stats1.execs - stats0.execs);
    Priced {
        us_per_exec: da.stat_ns as f64 / 1e3 / execs.max(1) as f64,
        raw_us_per_exec: raw.cpu_ns as f64 / 1e3 / raw.execs.max(1) as f64,
        switches_per_exec: da.switches as f64 / execs.max(1) as f64,
        execs,
        rate: execs as f64 / seconds,
    }
}

/// The argument that makes this benchmark's binary [`name_threads`].
pub const NAME_THREADS: &str = "name-threads";

/// What a JVM does at start as far as the proc connector sees: `n` threads,
/// each naming itself (one comm event each), then exit.
pub fn name_threads(n: usize) {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || {
                let name = std::ffi::CString::new(format!("worker-{i}")).unwrap_or_default();
                let _ = nix::sys::prctl::set_name(&name);
            })
        })
        .collect();
    threads.into_iter().for_each(|t| drop(t.join()));
}

/// Storms of a JVM-like start (this binary naming 20 threads) against the
/// same start naming none, each `--seconds` flat out by two spawners, on
/// `agent` as it is subscribed now: the agent's CPU per launch with and
/// without the threads' comm events, which the reader drops as it parses
/// them, and what reached the subscriber.
fn renames(b: &Bench, agent: &Agent, sub: &Subscriber, r: &mut Report) {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let exe = exe.to_str().expect("a UTF-8 path");
    for threads in ["0", "20"] {
        let (stats0, a0) = (b.rt.block_on(agent.stats()), agent.sample());
        let lost0 = sub
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lost_markers;
        let load = Load::running(&[exe, NAME_THREADS, threads], 2, None);
        std::thread::sleep(Duration::from_secs(b.opts.seconds));
        let (spawns, seconds) = load.stop();
        sub.settle(Duration::from_millis(500), Duration::from_secs(15));
        let (stats1, a1) = (b.rt.block_on(agent.stats()), agent.sample());
        let seen = sub.seen.lock().unwrap_or_else(|e| e.into_inner());
        let delivered = seen.arrivals.latencies(&spawns).len();
        let lost = seen.lost_markers - lost0;
        let da = a1.since(&a0);
        let us = da.stat_ns as f64 / 1e3 / spawns.len().max(1) as f64;
        let ignored = stats1.ignored_kernel_events - stats0.ignored_kernel_events;
        r.row(
            format!("launches naming {threads} threads"),
            format!(
                "{} at {:.0}/s: agent {us:.1} µs per launch, {:.1} kernel events dropped per launch, {:.2} wake-ups per launch; delivered {delivered}, {lost} lost markers",
                spawns.len(),
                spawns.len() as f64 / seconds,
                ignored as f64 / spawns.len().max(1) as f64,
                da.switches as f64 / spawns.len().max(1) as f64,
            ),
        );
        let key = format!("named_threads_{threads}");
        r.json(
            &key,
            serde_json::json!({"launches": spawns.len(), "per_s": round1(spawns.len() as f64 / seconds),
                "agent_cpu_us_per_launch": round1(us), "ignored_events": ignored,
                "wakeups_per_launch": round2(da.switches as f64 / spawns.len().max(1) as f64),
                "delivered": delivered, "lost_markers": lost}),
        );
    }
}
