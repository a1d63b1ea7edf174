//! Reading the records of a snapshot, a chunk at a time: each chunk goes to
//! a [`Worker`] whole, and this task waits for it off the runtime thread.
//! A process whose read hangs holds neither the snapshot nor its permit for
//! longer than the deadline.

use std::sync::Arc;

use execwatch::proto::{Process, Source};

use crate::procfs::cmdline::ArgvPatterns;
use crate::procfs::mount::ProcMount;
use crate::procfs::worker::Worker;

/// Processes read per chunk.
pub const CHUNK: usize = 64;
/// Encoded bytes of records read per chunk: what a subscriber that stops
/// reading holds at most in snapshot records.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// What reading one chunk of a snapshot gave.
#[derive(Default)]
pub struct Chunk {
    /// Records of running processes.
    pub records: Vec<Process>,
    /// Pids whose reads failed for the agent's own reasons.
    pub failed: Vec<i32>,
    /// Why they failed.
    pub why: Option<String>,
}

/// Reads the records of `pids` (popped from the end) until they weigh
/// [`CHUNK_BYTES`] or number [`CHUNK`]; never waits for a client, nor
/// longer than the deadline for one process; long command lines are
/// searched for `argv`. Returns the chunk and the pids it did not get to.
pub async fn read_chunk(
    mount: Arc<ProcMount>,
    mut pids: Vec<i32>,
    argv: ArgvPatterns,
) -> Result<(Chunk, Vec<i32>), String> {
    tokio::task::spawn_blocking(move || {
        let mut worker = Worker::new(mount);
        let read = worker.read(&mut pids, Source::Snapshot, &argv, CHUNK, CHUNK_BYTES);
        let mut records = read.records;
        records.retain(|p| !p.exited_before_inspection);
        let why = read.error.map(|e| e.to_string());
        let failed = read.failed;
        (
            Chunk {
                records,
                failed,
                why,
            },
            pids,
        )
    })
    .await
    .map_err(|e| format!("snapshot task failed: {e}"))
}
