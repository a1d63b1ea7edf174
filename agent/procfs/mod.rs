//! Everything the agent reads from `/proc/<pid>`: the record reader, the
//! search of whole command lines, the
//! `stat` line parser, the bound on how long a read may take, snapshot
//! chunks, the worker that bounds the poll detector's and the snapshots'
//! reads, and the redaction applied to command lines before a record leaves
//! the agent.

pub mod bounded;
pub mod cmdline;
pub mod reader;
pub mod redaction;
pub mod snapshot;
pub mod source;
pub mod stat_line;
pub mod worker;
