//! The agent's `GetStats` counters, re-exported as `execwatch_agent_*`
//! metrics: the agent has no network listener, so the reclaimer, which holds
//! a connection to it anyway, reads them every [`POLL`] while connected
//! (`crate::agent_link::watch`) and a scrape shows the last answer.
//!
//! While the agent is unreachable the metrics are absent, not stale: a
//! restarted agent starts its counters at zero, and an old value would look
//! current.

use std::sync::Mutex;
use std::time::Duration;

use execwatch::internal::lock::lock;
use execwatch::proto::Stats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType::{self, Counter, Gauge};

/// How often the agent is asked for its counters while connected.
pub const POLL: Duration = Duration::from_secs(5);

/// The agent's last answer to `GetStats`, as a metrics collector.
#[derive(Debug, Default)]
pub struct AgentStats(Mutex<Option<Stats>>);

impl AgentStats {
    /// Keeps `stats` as the agent's current counters.
    pub fn set(&self, stats: Stats) {
        *lock(&self.0) = Some(stats);
    }

    /// The agent is gone: its counters are unknown.
    pub fn clear(&self) {
        *lock(&self.0) = None;
    }
}

impl Collector for AgentStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = lock(&self.0).clone() else {
            return Ok(());
        };
        // One row a metric, named after its Stats field, except the counter
        // of subscribers accepted: `subscribers` is the gauge of those
        // connected now (one name cannot be both). Who the agent runs as is
        // unknown (and not exported) for an agent that predates the field.
        let p = s.privilege.as_ref();
        // Kind, name, help and value; a value of `None` is not exported.
        #[rustfmt::skip]
        let rows = [
            (Counter, "execs", "Exec events the agent's detector produced", Some(s.execs)),
            (Counter, "exits", "Exit events the agent's detector produced", Some(s.exits)),
            (Counter, "ignored_kernel_events", "Kernel events the agent read but did not want", Some(s.ignored_kernel_events)),
            (Counter, "kernel_overruns", "Times the kernel reported ENOBUFS to the agent (events lost before it saw them)", Some(s.kernel_overruns)),
            (Counter, "exited_before_inspection", "Exec events whose process was gone before the agent could read /proc", Some(s.exited_before_inspection)),
            (Counter, "subscribers_accepted", "Subscribers the agent accepted since it started", Some(s.subscribers_total)),
            (Counter, "subscriber_overflows", "Times a subscriber's queue overflowed (each produced a lost marker)", Some(s.subscriber_overflows)),
            (Counter, "subscribers_cut_off", "Subscribers cut off for falling behind repeatedly", Some(s.subscribers_cut_off)),
            (Counter, "snapshots", "Snapshots the agent sent (stream starts and resyncs)", Some(s.snapshots)),
            (Counter, "peers_denied", "Peers the agent refused by its uid allow-list", Some(s.peers_denied)),
            (Counter, "parse_errors", "Malformed kernel messages the agent skipped", Some(s.parse_errors)),
            (Counter, "unreadable_execs", "Exec events whose /proc record the agent could not read for want of descriptors or memory (reported as lost)", Some(s.unreadable_execs)),
            (Gauge, "subscribers", "Subscribers connected to the agent now", Some(s.subscribers)),
            (Gauge, "uptime_seconds", "Seconds since the agent started", Some(s.uptime_seconds)),
            (Gauge, "receive_buffer_bytes", "The agent's kernel receive buffer as granted (0 for the poll detector)", Some(s.receive_buffer_bytes)),
            (Gauge, "uid", "The effective uid the agent runs as", p.map(|p| u64::from(p.uid))),
            (Gauge, "capabilities", "The capabilities any agent thread holds, as the bit mask of /proc/<pid>/status (0: none)", p.map(|p| p.capabilities)),
            (Gauge, "subscribed_with_net_admin", "1 if the agent held CAP_NET_ADMIN when it subscribed to the kernel", p.map(|p| u64::from(p.subscribed_with_net_admin))),
        ];
        for (kind, name, help, value) in rows {
            let Some(value) = value else { continue };
            let metric = encoder.encode_descriptor(name, help, None, kind)?;
            match kind {
                Counter => ConstCounter::new(value).encode(metric)?,
                _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?,
            }
        }
        let labels = [
            ("detector", s.detector.as_str()),
            ("subscription_mode", s.subscription_mode.as_str()),
        ];
        encoder
            .encode_descriptor(
                "detector",
                "The agent's detector and subscription mode",
                None,
                MetricType::Info,
            )?
            .encode_info(&labels)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::metrics::{Format, Metrics};

    use super::*;

    /// The agent's counters appear under `execwatch_agent_` while known, and
    /// not at all once forgotten.
    #[test]
    fn exported_while_known() {
        let stats = Arc::new(AgentStats::default());
        let mut m = Metrics::new();
        m.register_agent(Box::new(stats.clone()));
        let agent = "execwatch_agent_";
        assert!(!m.encode(Format::Text).contains(agent));
        stats.set(Stats {
            detector: "netlink".into(),
            subscription_mode: "kernel-filtered".into(),
            execs: 7,
            subscribers: 1,
            subscribers_total: 3,
            kernel_overruns: 2,
            privilege: Some(execwatch::proto::Privilege {
                uid: 65534,
                subscribed_with_net_admin: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        for format in [Format::Text, Format::OpenMetrics] {
            let text = m.encode(format);
            for sample in [
                "execwatch_agent_execs_total 7\n",
                "execwatch_agent_kernel_overruns_total 2\n",
                "execwatch_agent_subscribers 1\n",
                "execwatch_agent_subscribers_accepted_total 3\n",
                "execwatch_agent_peers_denied_total 0\n",
                "execwatch_agent_uid 65534\n",
                "execwatch_agent_capabilities 0\n",
                "execwatch_agent_subscribed_with_net_admin 1\n",
                "execwatch_agent_detector_info{detector=\"netlink\",subscription_mode=\"kernel-filtered\"} 1\n",
            ] {
                assert!(text.contains(sample), "{format:?}: no {sample:?} in\n{text}");
            }
        }
        stats.clear();
        assert!(!m.encode(Format::Text).contains(agent));
    }
}
