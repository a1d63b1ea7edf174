//! Crossover: the poll detector's CPU as the number of processes grows,
//! against the netlink detector's CPU as the exec rate grows; the data
//! behind the detector trade-off plot.
//!
//! Poll: the agent at its default 250 ms interval, with `--sleepers` more
//! `sleep 600` processes added step by step (after each step the agent's
//! first report of the newcomers is allowed to drain before measuring).
//! Netlink: the agent on default flags while rate-limited spawners run
//! `/bin/true` at each of `--rates` (two threads above 1,000/s); plotted is
//! the exec rate the agent handled (its GetStats `execs` over the window):
//! ours plus whatever else ran on this shared machine. Twice: once with a
//! subscriber that takes every exec in full ("netlink"), once with only the
//! dry-run reclaimer, whose rules match nothing in the load and which
//! subscribes with them as its selector ("netlink-filtered", the production
//! case). Each point is `--crossover-seconds` of utime + stime, as a
//! percentage of one CPU.
//!
//! Per unit: netlink CPU per exec; poll CPU per process per scan, with the
//! scan rate derived from the CPU share `c` (a scan takes about its CPU time,
//! then the detector sleeps 250 ms, so scans per second = 4 × (1 − c)). Writes `crossover.csv` and
//! `detectors.svg` (and `detectors.png` if `rsvg-convert` is installed).

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::children::Sleepers;
use crate::procstat::Measured;
use crate::report::Report;
use crate::spawner::Load;
use crate::svg::{self, Panel, Series};
use crate::timing::round1;
use crate::{agent::Agent, reclaimer::Reclaimer, subscriber::Subscriber, Bench};

/// One measured point.
struct Point {
    detector: &'static str,
    /// Sleepers added (poll) or the rate asked for (netlink).
    asked: f64,
    /// Processes in /proc (poll) or execs per second our spawners achieved (netlink).
    achieved: f64,
    /// Processes in /proc (poll) or exec events per second the agent handled,
    /// ours and everyone else's (netlink): the x of the plot.
    x: f64,
    cpu_ms: f64,
    cpu_percent: f64,
}

impl Point {
    /// Poll: CPU per process per scan; netlink: CPU per exec; in µs.
    fn per_unit_us(&self) -> f64 {
        let c = self.cpu_percent / 100.0;
        match self.detector {
            "poll" => c * 1e6 / (4.0 * (1.0 - c).max(0.01)) / self.x,
            _ => c * 1e6 / self.x,
        }
    }
}

/// Runs both sweeps, writes the CSV and the plot.
pub fn run(b: &Bench) -> Report {
    let secs = Duration::from_secs(b.opts.crossover_seconds);
    let mut points = poll_sweep(b, secs);
    points.extend(netlink_sweep(b, secs, false));
    points.extend(netlink_sweep(b, secs, true));

    let mut r = Report::new("crossover");
    r.row(
        format!("{:<8}", "detector"),
        format!(
            "{:>16} {:>28} {:>8} {:>7} {:>12}",
            "load asked", "achieved (agent saw)", "CPU ms", "CPU %", "µs per unit"
        ),
    );
    let mut csv = String::from(
        "detector,asked,achieved,x,x_unit,seconds,agent_cpu_ms,agent_cpu_percent,cpu_us_per_unit\n",
    );
    let mut json = Vec::new();
    for p in &points {
        let (load, unit, got) = match p.detector {
            "poll" => (
                format!("+{} sleepers", p.asked),
                "processes",
                format!("{:.0} processes", p.x),
            ),
            _ => (
                format!("{} execs/s", p.asked),
                "execs_per_s",
                format!("{:.0}/s ({:.0}/s)", p.achieved, p.x),
            ),
        };
        let per = p.per_unit_us();
        r.row(
            format!("{:<8}", p.detector),
            format!(
                "{load:>16} {got:>28} {:>8.0} {:>7.2} {per:>12.1}",
                p.cpu_ms, p.cpu_percent
            ),
        );
        let _ = writeln!(
            csv,
            "{},{},{:.1},{:.1},{unit},{},{:.1},{:.3},{per:.2}",
            p.detector,
            p.asked,
            p.achieved,
            p.x,
            secs.as_secs(),
            p.cpu_ms,
            p.cpu_percent
        );
        json.push(serde_json::json!({
            "detector": p.detector, "asked": p.asked, "achieved": round1(p.achieved), "x": round1(p.x),
            "x_unit": unit, "cpu_ms": round1(p.cpu_ms), "cpu_percent": round3(p.cpu_percent),
            "cpu_us_per_unit": round1(per),
        }));
    }
    r.row(
        "per unit",
        "poll: µs per process per scan; netlink: µs per exec the agent handled",
    );
    r.json("seconds_per_point", secs.as_secs());
    r.json("points", json);
    let csv_path = b.out.join("crossover.csv");
    std::fs::write(&csv_path, csv).expect("write crossover.csv");
    r.row("written", csv_path.display().to_string());
    for file in write_plot(&points, &b.out) {
        r.row("written", file.display().to_string());
    }
    r
}

/// Renders `crossover.csv` of an earlier run again (`--replot FILE`) into
/// `detectors.svg` (and `.png`) in `out`; returns the files written.
pub fn replot(csv: &Path, out: &Path) -> Vec<PathBuf> {
    let text =
        std::fs::read_to_string(csv).unwrap_or_else(|e| panic!("read {}: {e}", csv.display()));
    let points: Vec<Point> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
            Some(Point {
                detector: match *f.first()? {
                    "poll" => "poll",
                    "netlink" => "netlink",
                    "netlink-filtered" => "netlink-filtered",
                    _ => return None,
                },
                asked: num(1)?,
                achieved: num(2)?,
                x: num(3)?,
                cpu_ms: num(6)?,
                cpu_percent: num(7)?,
            })
        })
        .collect();
    write_plot(&points, out)
}

/// Writes `detectors.svg`, and `detectors.png` when `rsvg-convert` is there.
fn write_plot(points: &[Point], out: &Path) -> Vec<PathBuf> {
    let svg_path = out.join("detectors.svg");
    std::fs::write(&svg_path, plot(points)).expect("write detectors.svg");
    let png = out.join("detectors.png");
    let converted = std::process::Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(&svg_path)
        .status();
    let mut files = vec![svg_path];
    if converted.is_ok_and(|s| s.success()) {
        files.push(png);
    }
    files
}

/// The poll agent with more and more sleepers.
fn poll_sweep(b: &Bench, secs: Duration) -> Vec<Point> {
    let agent = Agent::start(b.dir.path(), "poll");
    let sub = Subscriber::start(&b.rt, &agent.socket, &["sleep", "0.6"]);
    let mut sleepers = Vec::new();
    let mut points = Vec::new();
    let mut added = 0;
    for &target in &b.opts.sleepers {
        sleepers.push(Sleepers::spawn(target.saturating_sub(added)).expect("start sleepers"));
        added = added.max(target);
        // The newcomers are reported once each; measure the steady state after.
        sub.settle(Duration::from_millis(1000), Duration::from_secs(60));
        let s0 = agent.sample();
        std::thread::sleep(secs);
        let d = agent.sample().since(&s0);
        let procs = process_count() as f64;
        points.push(Point {
            detector: "poll",
            asked: target as f64,
            achieved: procs,
            x: procs,
            cpu_ms: d.stat_ns as f64 / 1e6,
            cpu_percent: d.cpu_percent(),
        });
    }
    points
}

/// The netlink agent at each exec rate: with one subscriber that takes
/// everything, or (`filtered`) with only the reclaimer, whose rules match
/// nothing in the load.
fn netlink_sweep(b: &Bench, secs: Duration, filtered: bool) -> Vec<Point> {
    let agent = Agent::start(b.dir.path(), "netlink");
    let (mut _sub, mut _reclaimer) = (None, None);
    if filtered {
        let mut reclaimer = Reclaimer::start(
            b.dir.path(),
            &agent.socket,
            "ewb-nothing",
            &b.out.join("reclaimer-crossover.log"),
        );
        reclaimer.wait_connected();
        _reclaimer = Some(reclaimer);
    } else {
        _sub = Some(Subscriber::start(&b.rt, &agent.socket, &["/bin/true"]));
    }
    let detector = if filtered {
        "netlink-filtered"
    } else {
        "netlink"
    };
    let mut points = Vec::new();
    for &rate in &b.opts.rates {
        let threads = if rate > 1000 { 2 } else { 1 };
        let execs0 = b.rt.block_on(agent.stats()).execs;
        let s0 = agent.sample();
        let load = Load::start(threads, Some(rate as f64 / threads as f64));
        std::thread::sleep(secs);
        let (spawns, elapsed) = load.stop();
        let d = agent.sample().since(&s0);
        let execs = b.rt.block_on(agent.stats()).execs - execs0;
        points.push(Point {
            detector,
            asked: rate as f64,
            achieved: spawns.len() as f64 / elapsed,
            x: execs as f64 / (d.at_ns as f64 / 1e9),
            cpu_ms: d.stat_ns as f64 / 1e6,
            cpu_percent: d.cpu_percent(),
        });
    }
    points
}

/// The two-panel SVG.
fn plot(points: &[Point]) -> String {
    let series = |d: &str, label: &str, color| Series {
        label: label.into(),
        points: points
            .iter()
            .filter(|p| p.detector == d)
            .map(|p| (p.x, p.cpu_percent))
            .collect(),
        color,
    };
    svg::render(
        "execwatch agent CPU: poll vs netlink detector",
        &[
            Panel {
                title: "poll (250 ms interval)".into(),
                x_label: "processes running".into(),
                y_label: "agent CPU, % of one core".into(),
                series: vec![series("poll", "poll", "#d62728")],
            },
            Panel {
                title: "netlink (kernel-filtered)".into(),
                x_label: "exec events per second (all on the machine)".into(),
                y_label: "agent CPU, % of one core".into(),
                series: vec![
                    series("netlink", "full records to one subscriber", "#1f77b4"),
                    series(
                        "netlink-filtered",
                        "reclaimer only, rules matching nothing",
                        "#2ca02c",
                    ),
                ],
            },
        ],
    )
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Processes (thread-group leaders, kernel threads included) in /proc now.
fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0)
}
