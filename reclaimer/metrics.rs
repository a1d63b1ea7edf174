//! Prometheus metrics, served as text on `--metrics-addr` (off by default:
//! the pod shares the host's network, so an address is an explicit choice,
//! normally loopback).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds (seconds) of the patch latency histogram.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// A latency histogram in the Prometheus shape.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

/// Everything the reclaimer counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Stream items received (execs, snapshot entries, exits).
    pub events: Counter,
    /// Processes the rules matched (each firing decision).
    pub matches: Counter,
    /// Node patches written.
    pub patches: Counter,
    /// Failed patch attempts (each retry counts).
    pub patch_errors: Counter,
    /// Time from the process being observed to the patch being accepted.
    pub patch_latency: Histogram,
    /// Times the agent stream was lost and reconnected.
    pub reconnects: Counter,
    /// `lost` markers received.
    pub lost_markers: Counter,
    /// Rule sets loaded.
    pub rule_reloads: Counter,
    /// Rule documents rejected (the last good rules stay in force).
    pub rule_errors: Counter,
    /// 1 while the current rules document is invalid.
    pub rules_invalid: AtomicU64,
    /// 1 while the rules are inert.
    pub rules_inert: AtomicU64,
    /// 1 while the rules source has no document (ConfigMap deleted or
    /// empty, rules file emptied) and the last good rules are kept.
    pub rules_missing: AtomicU64,
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &Counter); 9] = [
            (
                "events_total",
                "Stream items received from the agent.",
                &self.events,
            ),
            (
                "matches_total",
                "Processes matched by the rules.",
                &self.matches,
            ),
            (
                "patches_total",
                "Reclaim annotations written to the Node.",
                &self.patches,
            ),
            (
                "patch_errors_total",
                "Failed Node patch attempts.",
                &self.patch_errors,
            ),
            (
                "reconnects_total",
                "Agent stream reconnects.",
                &self.reconnects,
            ),
            (
                "lost_markers_total",
                "Lost markers received from the agent.",
                &self.lost_markers,
            ),
            (
                "rule_reloads_total",
                "Rule sets loaded.",
                &self.rule_reloads,
            ),
            (
                "rule_errors_total",
                "Rule documents rejected.",
                &self.rule_errors,
            ),
            (
                "up",
                "Always 1 while the reclaimer runs.",
                &Counter(AtomicU64::new(1)),
            ),
        ];
        for (name, help, c) in counters {
            let kind = if name == "up" { "gauge" } else { "counter" };
            let _ = writeln!(out, "# HELP execwatch_reclaimer_{name} {help}\n# TYPE execwatch_reclaimer_{name} {kind}\nexecwatch_reclaimer_{name} {}", c.get());
        }
        for (name, help, g) in [
            (
                "rules_invalid",
                "1 while the current rules document is invalid.",
                &self.rules_invalid,
            ),
            (
                "rules_inert",
                "1 while the rules never fire.",
                &self.rules_inert,
            ),
            (
                "rules_missing",
                "1 while the rules source has no document and the last good rules are kept.",
                &self.rules_missing,
            ),
        ] {
            let _ = writeln!(out, "# HELP execwatch_reclaimer_{name} {help}\n# TYPE execwatch_reclaimer_{name} gauge\nexecwatch_reclaimer_{name} {}", g.load(Relaxed));
        }
        let h = &self.patch_latency;
        let name = "execwatch_reclaimer_patch_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From process observed to Node patch accepted.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = h.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            h.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics");
    loop {
        let (mut conn, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // One small request per connection; the body is never read.
            let mut buf = [0u8; 1024];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf)).await;
            let body = metrics.render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}
