//! Everything the agent reads from `/proc`. A record comes only through
//! [`watchdog::Watched::read`] (directly, or a list at a time through a
//! [`worker::Worker`]), which bounds it in time and redacts it.

pub mod bounds;
pub mod cmdline;
pub mod mount;
pub mod reader;
pub mod redaction;
pub mod stat_line;
pub mod watchdog;
pub mod worker;
