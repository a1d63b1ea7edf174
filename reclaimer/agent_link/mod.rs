//! The reclaimer's side of the agent's socket: the `Watch` stream kept
//! connected, and the agent's counters re-exported as metrics.

pub mod agent_metrics;
pub mod watch;
