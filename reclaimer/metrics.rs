//! What the reclaimer counts, as `prometheus-client` metrics in one
//! registry: its own under `execwatch_reclaimer_`, and the agent's `GetStats`
//! counters under `execwatch_agent_` (a collector the agent link fills,
//! [`Metrics::register_agent`]), so that one scrape shows the whole pod.
//! Served by [`crate::metrics::endpoint`].

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub mod endpoint;

/// Upper bounds (seconds) of the patch latency histogram.
pub const PATCH_LATENCY_BUCKETS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// Declares [`Metrics`] with one field per metric of the reclaimer's own,
/// named after the field, its help text also its doc, registered in order.
macro_rules! metrics {
    ($($field:ident: $kind:ident, $help:literal;)*) => {
        /// Everything the reclaimer counts. The fields are handles into
        /// [`Metrics::registry`]: updating one is what a scrape shows.
        #[derive(Debug)]
        pub struct Metrics {
            /// Seconds from the process being observed to the patch being
            /// accepted.
            pub patch_latency: Histogram,
            $(#[doc = $help] pub $field: $kind,)*
            registry: Registry,
        }

        impl Metrics {
            /// Every counter at zero and `rules_inert` at 1 (the reclaimer
            /// starts without rules), registered.
            pub fn new() -> Self {
                let mut registry = Registry::default();
                let own = registry.sub_registry_with_prefix("execwatch_reclaimer");
                // prometheus-client appends `_total` to counters and a final
                // period to help texts.
                let up = Gauge::<i64>::default();
                own.register("up", "Always 1 while the reclaimer runs", up.clone());
                up.set(1);
                let patch_latency = Histogram::new(PATCH_LATENCY_BUCKETS);
                own.register_with_unit(
                    "patch_latency",
                    "From the agent observing the process to the Node patch being accepted",
                    Unit::Seconds,
                    patch_latency.clone(),
                );
                $(let $field = $kind::default();
                own.register(stringify!($field), $help, $field.clone());)*
                let m = Metrics { patch_latency, $($field,)* registry };
                m.rules_inert.set(1);
                m
            }
        }
    };
}

metrics! {
    events: Counter, "Stream items received from the agent (execs, snapshot entries, exits, markers)";
    matches: Counter, "Processes matched by the rules (each firing decision)";
    patches: Counter, "Reclaim annotations written to the Node";
    patch_errors: Counter, "Failed Node patch attempts (each retry counts, 409s included)";
    reconnects: Counter, "Agent stream reconnects";
    lost_markers: Counter, "Lost markers received from the agent";
    rule_reloads: Counter, "Rule sets loaded (inert ones included)";
    rule_errors: Counter, "Rule documents rejected";
    exe_path_warnings: Counter, "match_exe_paths entries that are most likely links and never match (each warned once)";
    rules_invalid: Gauge, "1 while the current rules document is invalid (the last good rules are in force)";
    rules_inert: Gauge, "1 while the loaded rules never fire";
    rules_missing: Gauge, "1 while the rules source has no document (the node is disarmed unless --keep-rules-when-missing)";
}

impl Metrics {
    /// Registers `agent`, the collector of the agent's counters as last
    /// read from its socket, under `execwatch_agent_`.
    pub fn register_agent(&mut self, agent: Box<dyn Collector>) {
        self.registry
            .sub_registry_with_prefix("execwatch_agent")
            .register_collector(agent);
    }

    /// The registry in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and every name is valid.
        let _ = match format {
            Format::OpenMetrics => text::encode(&mut out, &self.registry),
            Format::Text => prometheus_text::encode(&mut out, &self.registry),
        };
        out
    }
}

/// The two exposition formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Text,
}

impl Format {
    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format an `Accept` header prefers: the supported media range with
    /// the highest quality, the earlier on a tie; text when nothing supported
    /// is named (what scrapers and curl get by default).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best = (0.0f32, Format::Text);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let (mut q, mut version) = (1.0f32, None);
            for (k, v) in parts.filter_map(|param| param.split_once('=')) {
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.parse().unwrap_or(0.0),
                    "version" => version = Some(v.to_owned()),
                    _ => {}
                }
            }
            let format = match (media.as_str(), version.as_deref()) {
                ("application/openmetrics-text", None | Some("1.0.0" | "0.0.1")) => {
                    Format::OpenMetrics
                }
                ("text/plain", None | Some("0.0.4")) | ("text/*" | "*/*", _) => Format::Text,
                _ => continue,
            };
            if q > best.0 {
                best = (q, format);
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        let cases = [
            (None, Format::Text),
            (Some("*/*"), Format::Text),
            (Some(prometheus), Format::OpenMetrics),
            (
                Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"),
                Format::Text,
            ),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; Version=\"1.0.0\""),
                Format::OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;version=2.0.0"),
                Format::Text,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Text),
            (Some("application/json"), Format::Text),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    /// Every name and type docs/operating.md lists, in both formats.
    #[test]
    fn names_and_types() {
        let m = Metrics::new();
        m.events.inc();
        m.patch_latency.observe(0.02);
        let text = m.encode(Format::Text);
        for (name, kind) in [
            ("events_total", "counter"),
            ("matches_total", "counter"),
            ("patches_total", "counter"),
            ("patch_errors_total", "counter"),
            ("reconnects_total", "counter"),
            ("lost_markers_total", "counter"),
            ("rule_reloads_total", "counter"),
            ("rule_errors_total", "counter"),
            ("rules_invalid", "gauge"),
            ("rules_inert", "gauge"),
            ("rules_missing", "gauge"),
            ("up", "gauge"),
            ("patch_latency_seconds", "histogram"),
        ] {
            let line = format!("# TYPE execwatch_reclaimer_{name} {kind}\n");
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
        for sample in [
            "execwatch_reclaimer_events_total 1\n",
            "execwatch_reclaimer_up 1\n",
            "execwatch_reclaimer_rules_inert 1\n",
            "execwatch_reclaimer_patch_latency_seconds_bucket{le=\"0.01\"} 0\n",
            "execwatch_reclaimer_patch_latency_seconds_bucket{le=\"0.025\"} 1\n",
            "execwatch_reclaimer_patch_latency_seconds_bucket{le=\"+Inf\"} 1\n",
            "execwatch_reclaimer_patch_latency_seconds_count 1\n",
        ] {
            assert!(text.contains(sample), "no {sample:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        let open = m.encode(Format::OpenMetrics);
        assert!(
            open.contains("# TYPE execwatch_reclaimer_events counter\n"),
            "{open}"
        );
        assert!(
            open.contains("execwatch_reclaimer_events_total 1\n"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
    }
}
