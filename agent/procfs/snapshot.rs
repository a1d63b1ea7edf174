//! Reading the records of a snapshot, a chunk at a time: each chunk goes to
//! a [`Worker`] whole, and this task waits for it off the runtime thread.
//! A process whose read hangs holds neither the snapshot nor its permit for
//! longer than the deadline.

use std::sync::Arc;

use execwatch::proto::Source;

use crate::procfs::mount::ProcMount;
use crate::procfs::worker::{Chunk, Worker};

/// Reads the records of running processes among `pids` (popped from the
/// end), one [`Chunk`]; never waits for a client, nor longer than the
/// deadline for one process. Returns the chunk and the pids it did not get
/// to.
pub async fn read_chunk(
    mount: Arc<ProcMount>,
    mut pids: Vec<i32>,
) -> Result<(Chunk, Vec<i32>), String> {
    tokio::task::spawn_blocking(move || {
        let mut chunk = Worker::new(mount).read(&mut pids, Source::Snapshot);
        chunk.records.retain(|p| !p.exited_before_inspection);
        (chunk, pids)
    })
    .await
    .map_err(|e| format!("snapshot task failed: {e}"))
}
