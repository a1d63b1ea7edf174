//! Everything the agent reads from `/proc/<pid>`: the record reader, the
//! `stat` line parser, and the redaction applied to command lines before a
//! record leaves the agent.

pub mod reader;
pub mod redaction;
pub mod stat_line;
