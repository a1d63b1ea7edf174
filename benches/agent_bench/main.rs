//! The agent benchmark: the real `agent` (and `reclaimer --dry-run`) under
//! load from this program's own spawners, next to a raw netlink listener
//! that is the floor on the same machine.
//!
//! Run as root on Linux (about 3 minutes with the defaults):
//!
//! ```sh
//! sudo cargo bench --bench agent_bench
//! sudo cargo bench --bench agent_bench -- --scenario latency --spawns 2000
//! ```
//!
//! Prints a table per scenario with its targets (PASS/FAIL, never a failing
//! exit status), one `BENCH_JSON {…}` line per scenario, and writes
//! `target/bench/crossover.csv` and `target/bench/detectors.svg`. See
//! docs/benchmarks.md for what each scenario measures and how.

mod agent;
mod children;
mod procstat;
mod raw_listener;
mod reclaimer;
mod report;
mod scenarios;
mod spawner;
mod subscriber;
mod svg;
mod timing;

use std::path::PathBuf;

use clap::Parser;

/// Scenario names, in the order they run.
const SCENARIOS: [&str; 8] = [
    "latency",
    "storm",
    "enrichment",
    "cmdline",
    "idle",
    "crossover",
    "snapshot",
    "audit",
];

/// Options; every scale has a default that keeps the whole run under 4 minutes.
#[derive(Debug, Parser)]
#[command(
    name = "agent_bench",
    about = "execwatch agent benchmark (run as root)"
)]
pub struct Options {
    /// Scenarios to run (repeat or comma-separate): latency, storm,
    /// enrichment, cmdline, idle, crossover, snapshot, audit. Default: all.
    #[arg(long = "scenario", value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Latency: spawns 1 gap apart on a quiet machine.
    #[arg(long, default_value_t = 5000)]
    pub spawns: usize,
    /// Latency: gap between spawns, ms.
    #[arg(long, default_value_t = 1)]
    pub gap_ms: u64,
    /// Storm length, s (the storm scenario, and the storm phase of latency).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Enrichment: processes per short-lived class (0 ms and 5 ms); the 1 s
    /// class gets a tenth as many, all at once.
    #[arg(long, default_value_t = 1000)]
    pub enrich_spawns: usize,
    /// Cmdline: launches per command-line length (short, 200 KB).
    #[arg(long, default_value_t = 300)]
    pub cmdline_spawns: usize,
    /// Idle: how long to watch the idle agents, s.
    #[arg(long, default_value_t = 30)]
    pub idle_seconds: u64,
    /// Crossover: measuring time per point, s.
    #[arg(long, default_value_t = 10)]
    pub crossover_seconds: u64,
    /// Crossover: sleeping processes for each poll detector point (cumulative:
    /// each step adds what the previous one lacks).
    #[arg(long, value_delimiter = ',', default_value = "100,2000,10000")]
    pub sleepers: Vec<usize>,
    /// Crossover: exec rates (per second) for the netlink detector.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,2000")]
    pub rates: Vec<u64>,
    /// Snapshot: idle processes started for it.
    #[arg(long, default_value_t = 2000)]
    pub snapshot_processes: usize,
    /// Snapshot: rounds, each timing the floor and every agent once.
    #[arg(long, default_value_t = 7)]
    pub snapshot_rounds: usize,
    /// Snapshot: agent binaries to time (repeat or comma-separate), such as
    /// release builds of two commits. Default: the one this bench built.
    #[arg(long = "agent-binary", value_delimiter = ',')]
    pub agent_binaries: Vec<PathBuf>,
    /// The agent binary every scenario but snapshot runs. Default: the one
    /// this bench built. With a release build of another commit, runs of the
    /// two builds can be interleaved (docs/benchmarks.md).
    #[arg(long = "agent")]
    pub agent: Option<PathBuf>,
    /// The reclaimer binary the scenarios run. Default: the one this bench
    /// built.
    #[arg(long = "reclaimer")]
    pub reclaimer: Option<PathBuf>,
    /// Where the CSV and SVG go (default: <target dir>/bench).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only render `detectors.svg` again from this `crossover.csv` (into
    /// --out), running nothing.
    #[arg(long, value_name = "CSV")]
    pub replot: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// What every scenario gets.
pub struct Bench {
    /// The options.
    pub opts: Options,
    /// Runtime of the gRPC subscribers (one worker thread).
    pub rt: tokio::runtime::Runtime,
    /// Scratch directory: sockets, logs, rules.
    pub dir: tempfile::TempDir,
    /// Output directory.
    pub out: PathBuf,
}

fn main() {
    // The storm's stand-in for a JVM start: name this many threads, exit.
    if let [_, cmd, n] = &std::env::args().collect::<Vec<_>>()[..] {
        if cmd == scenarios::storm::NAME_THREADS {
            return scenarios::storm::name_threads(n.parse().unwrap_or(0));
        }
    }
    let opts = Options::parse();
    let out = opts.out.clone().unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        target.join("bench")
    });
    std::fs::create_dir_all(&out).expect("create the output directory");
    if let Some(csv) = &opts.replot {
        for file in scenarios::crossover::replot(csv, &out) {
            println!("written {}", file.display());
        }
        return;
    }
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("agent_bench must run as root (the agent reads every process's /proc, the raw listener forces its receive buffer)");
        std::process::exit(2);
    }
    let wanted: Vec<&str> = if opts.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        for s in &opts.scenarios {
            if !SCENARIOS.contains(&s.as_str()) {
                eprintln!("unknown scenario {s:?}; known: {}", SCENARIOS.join(", "));
                std::process::exit(2);
            }
        }
        SCENARIOS
            .iter()
            .copied()
            .filter(|s| opts.scenarios.iter().any(|o| o == s))
            .collect()
    };
    children::kill_all_on_panic();
    agent::BINARY
        .set(
            opts.agent
                .clone()
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_agent").into()),
        )
        .expect("set once");
    reclaimer::BINARY
        .set(
            opts.reclaimer
                .clone()
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_reclaimer").into()),
        )
        .expect("set once");
    let bench = Bench {
        opts,
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime"),
        dir: tempfile::tempdir().expect("temporary directory"),
        out,
    };

    children::kill_all_on_signal(&bench.rt);
    let load_before = loadavg();
    let started = std::time::Instant::now();
    println!(
        "agent_bench: {} on Linux {}, {} CPUs, load average before: {load_before}",
        now_utc(),
        uname_r(),
        cpus()
    );
    let mut reports = Vec::new();
    for name in wanted {
        let mut r = match name {
            "latency" => scenarios::latency::run(&bench),
            "storm" => scenarios::storm::run(&bench),
            "enrichment" => scenarios::enrichment::run(&bench),
            "cmdline" => scenarios::cmdline::run(&bench),
            "idle" => scenarios::idle::run(&bench),
            "crossover" => scenarios::crossover::run(&bench),
            "snapshot" => scenarios::snapshot::run(&bench),
            "audit" => scenarios::audit::run(&bench),
            _ => unreachable!("checked above"),
        };
        r.print();
        reports.push(r);
    }
    report::summary(&reports);
    let load_after = loadavg();
    println!(
        "\nload average before: {load_before}; after: {load_after}; took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let run = serde_json::json!({
        "scenario": "run", "date_utc": now_utc(), "kernel": uname_r(), "cpus": cpus(),
        "loadavg_before": load_before, "loadavg_after": load_after,
        "seconds": started.elapsed().as_secs(),
    });
    println!("BENCH_JSON {run}");
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// The kernel release (`uname -r`).
fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
fn now_utc() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string()
}
