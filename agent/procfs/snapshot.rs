//! Reading the records of a snapshot, a chunk at a time, on the blocking
//! pool, each process bounded in time by a [`WorkerReader`], as the poll
//! detector's are: a process whose read hangs holds neither the snapshot
//! nor its permit for longer than the deadline.

use std::sync::Arc;

use execwatch::proto::{Process, Source};

use crate::procfs::cmdline::ArgvPatterns;
use crate::procfs::source::ProcSource;
use crate::procfs::worker::WorkerReader;

/// Processes read per blocking-pool task during a snapshot.
pub const CHUNK: usize = 64;
/// Encoded bytes of records read per blocking-pool task during a snapshot:
/// what a subscriber that stops reading holds at most in snapshot records.
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
    source: Arc<ProcSource>,
    mut pids: Vec<i32>,
    argv: ArgvPatterns,
) -> Result<(Chunk, Vec<i32>), String> {
    tokio::task::spawn_blocking(move || {
        let mut reader = WorkerReader::new(source.clone());
        let (mut chunk, mut weight) = (Chunk::default(), 0);
        while weight < CHUNK_BYTES && chunk.records.len() < CHUNK {
            let Some(pid) = pids.pop() else {
                break;
            };
            match reader.read(pid, Source::Snapshot, &argv) {
                Ok(Some(mut p)) if !p.exited_before_inspection => {
                    source.finish(&mut p);
                    weight += prost::Message::encoded_len(&p);
                    chunk.records.push(p);
                }
                Ok(_) => {}
                Err(e) => {
                    chunk.failed.push(pid);
                    chunk.why = Some(e.to_string());
                }
            }
        }
        (chunk, pids)
    })
    .await
    .map_err(|e| format!("snapshot task failed: {e}"))
}
