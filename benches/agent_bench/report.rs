//! Output: a human table per scenario, targets marked PASS or FAIL, and one
//! `BENCH_JSON {…}` line per scenario for scripts (`grep '^BENCH_JSON '`).
//! A missed target is printed, never turned into a failing exit status.

use serde_json::{Map, Value};

/// One target: a measured value against a limit.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is compared, e.g. "agent CPU per exec".
    pub what: String,
    /// The measured value.
    pub value: f64,
    /// `true` if the value must be at most `limit`, `false` if at least.
    pub at_most: bool,
    /// The limit.
    pub limit: f64,
    /// Unit for printing, e.g. "µs".
    pub unit: &'static str,
}

impl Target {
    /// Whether the value meets the limit (a NaN never does).
    pub fn pass(&self) -> bool {
        if self.at_most {
            self.value <= self.limit
        } else {
            self.value >= self.limit
        }
    }

    /// `PASS  what: value unit (target <= limit)`.
    pub fn line(&self) -> String {
        format!(
            "{}  {}: {} {} (target {} {} {})",
            if self.pass() { "PASS" } else { "FAIL" },
            self.what,
            num(self.value),
            self.unit,
            if self.at_most { "≤" } else { "≥" },
            num(self.limit),
            self.unit
        )
    }

    fn json(&self) -> Value {
        serde_json::json!({
            "target": self.what, "value": self.value, "limit": self.limit,
            "at_most": self.at_most, "unit": self.unit, "pass": self.pass(),
        })
    }
}

/// Compact number: integers without decimals, others with up to 3 significant decimals.
pub fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The results of one scenario.
#[derive(Debug)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    rows: Vec<(String, String)>,
    json: Map<String, Value>,
    /// Its targets.
    pub targets: Vec<Target>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &'static str) -> Self {
        let mut json = Map::new();
        json.insert("scenario".into(), scenario.into());
        Self {
            scenario,
            rows: Vec::new(),
            json,
            targets: Vec::new(),
        }
    }

    /// A line of the human table.
    pub fn row(&mut self, label: impl Into<String>, value: impl Into<String>) {
        self.rows.push((label.into(), value.into()));
    }

    /// A key of the JSON object.
    pub fn json(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.into(), value.into());
    }

    /// A target (`at_most`: value ≤ limit, else value ≥ limit).
    pub fn target(
        &mut self,
        what: &str,
        value: f64,
        at_most: bool,
        limit: f64,
        unit: &'static str,
    ) {
        self.targets.push(Target {
            what: what.into(),
            value,
            at_most,
            limit,
            unit,
        });
    }

    /// Prints the table, the targets and the JSON line.
    pub fn print(&mut self) {
        println!("\n== {} ==", self.scenario);
        let width = self
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        for (label, value) in &self.rows {
            let pad = width - label.chars().count();
            println!("  {label}{}  {value}", " ".repeat(pad));
        }
        for t in &self.targets {
            println!("  {}", t.line());
        }
        let targets: Vec<Value> = self.targets.iter().map(Target::json).collect();
        self.json.insert("targets".into(), targets.into());
        println!("BENCH_JSON {}", Value::Object(self.json.clone()));
    }
}

/// Prints every target of the run, then how many passed.
pub fn summary(reports: &[Report]) {
    println!("\n== targets ==");
    let all: Vec<&Target> = reports.iter().flat_map(|r| &r.targets).collect();
    for (r, t) in reports
        .iter()
        .flat_map(|r| r.targets.iter().map(move |t| (r, t)))
    {
        println!("  [{:<10}] {}", r.scenario, t.line());
    }
    let passed = all.iter().filter(|t| t.pass()).count();
    println!("  {passed} of {} targets met", all.len());
}
