//! One module per scenario; each `run` returns its report.

pub mod audit;
pub mod cmdline;
pub mod crossover;
pub mod enrichment;
pub mod idle;
pub mod latency;
pub mod snapshot;
pub mod storm;
