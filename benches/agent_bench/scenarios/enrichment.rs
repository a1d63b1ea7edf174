//! Enrichment: how often the agent's exec record is complete (comm, argv,
//! exe, credentials and cgroup all present), by how long the process lives.
//!
//! Three classes, the 1 s one running concurrently with the other two:
//! `/bin/true` reaped at once ("0 ms"), `sleep 0.005` ("5 ms"), `sleep 1`
//! (a tenth as many, all started together). A process that never reached
//! the subscriber counts as incomplete.

use std::process::Child;
use std::time::Duration;

use crate::report::Report;
use crate::spawner::{self, Spawn};
use crate::subscriber::{field, Seen, Subscriber};
use crate::timing::round1;
use crate::{agent::Agent, Bench};

/// Runs the three classes.
pub fn run(b: &Bench) -> Report {
    let agent = Agent::start(b.dir.path(), "netlink");
    let sub = Subscriber::start(&b.rt, &agent.socket, &["/bin/true"]);
    let n = b.opts.enrich_spawns;

    let long = std::thread::spawn(move || {
        let started: Vec<(Child, Spawn)> = (0..(n / 10).max(1))
            .map(|_| spawner::spawn(&["sleep", "1"]))
            .collect();
        started
            .into_iter()
            .map(|(mut c, s)| {
                let _ = c.wait();
                s
            })
            .collect::<Vec<_>>()
    });
    let run_each = |argv: &[&str]| -> Vec<Spawn> {
        (0..n)
            .map(|_| {
                let (mut c, s) = spawner::spawn(argv);
                let _ = c.wait();
                s
            })
            .collect()
    };
    let instant = run_each(&["/bin/true"]);
    let short = run_each(&["sleep", "0.005"]);
    let long = long.join().expect("the 1 s class panicked");
    sub.settle(Duration::from_millis(500), Duration::from_secs(10));

    let seen = sub.seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = Report::new("enrichment");
    r.row(
        format!("{:<24}", "class"),
        format!(
            "{:>6} {:>9} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7}",
            "n", "complete", "missing", "comm", "argv", "exe", "uid", "cgroup"
        ),
    );
    let mut json = serde_json::Map::new();
    let mut shares = Vec::new();
    for (name, key, spawns) in [
        ("0 ms (/bin/true)", "0ms", &instant),
        ("5 ms (sleep 0.005)", "5ms", &short),
        ("1 s (sleep 1)", "1s", &long),
    ] {
        let c = Counts::of(&seen, spawns);
        let pct = |k: usize| k as f64 / spawns.len().max(1) as f64 * 100.0;
        r.row(
            format!("{name:<24}"),
            format!(
                "{:>6} {:>8.1}% {:>8} {:>5.1}% {:>5.1}% {:>5.1}% {:>5.1}% {:>6.1}%",
                spawns.len(),
                pct(c.complete),
                spawns.len() - c.delivered,
                pct(c.per_field[0]),
                pct(c.per_field[1]),
                pct(c.per_field[2]),
                pct(c.per_field[3]),
                pct(c.per_field[4])
            ),
        );
        json.insert(
            key.into(),
            serde_json::json!({
                "spawned": spawns.len(), "delivered": c.delivered,
                "complete_percent": round1(pct(c.complete)),
                "comm_percent": round1(pct(c.per_field[0])), "argv_percent": round1(pct(c.per_field[1])),
                "exe_percent": round1(pct(c.per_field[2])), "uid_percent": round1(pct(c.per_field[3])),
                "cgroup_percent": round1(pct(c.per_field[4])),
            }),
        );
        shares.push(round1(pct(c.complete)));
    }
    r.json("classes", serde_json::Value::Object(json));
    r.target(
        "complete records, processes living 5 ms",
        shares[1],
        false,
        99.0,
        "%",
    );
    r.target(
        "complete records, processes living 1 s",
        shares[2],
        false,
        99.0,
        "%",
    );
    r
}

/// Per class: delivered, complete, and how often each field was there.
struct Counts {
    delivered: usize,
    complete: usize,
    per_field: [usize; 5],
}

impl Counts {
    fn of(seen: &Seen, spawns: &[Spawn]) -> Self {
        let mut c = Counts {
            delivered: 0,
            complete: 0,
            per_field: [0; 5],
        };
        for &(pid, t0) in spawns {
            if seen.arrivals.first_after(pid, t0).is_none() {
                continue;
            }
            c.delivered += 1;
            let bits = seen.fields.get(&pid).copied().unwrap_or(0);
            if bits == field::ALL {
                c.complete += 1;
            }
            let each = [
                field::COMM,
                field::ARGV,
                field::EXE,
                field::UID,
                field::CGROUP,
            ];
            for (count, bit) in c.per_field.iter_mut().zip(each) {
                if bits & bit != 0 {
                    *count += 1;
                }
            }
        }
        c
    }
}
