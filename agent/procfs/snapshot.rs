//! Reading the records of a snapshot, a chunk at a time, on the blocking
//! pool, each process bounded in time ([`crate::procfs::bounded`]): a
//! process whose read hangs holds neither the snapshot nor its permit for
//! longer than the deadline.

use std::sync::Arc;
use std::time::Instant;

use execwatch::proto::{Process, Source};

use crate::procfs::bounded::{Admit, Watched};
use crate::procfs::reader::{blank, Outcome};
use crate::procfs::source::ProcSource;

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

/// What outlives a reading thread left behind.
struct Progress {
    pids: Vec<i32>,
    chunk: Chunk,
    weight: usize,
}

/// Reads the records of `pids` (popped from the end) until they weigh
/// [`CHUNK_BYTES`] or number [`CHUNK`]; never waits for a client, nor
/// longer than the deadline for one process. Returns the chunk and the
/// pids it did not get to.
pub async fn read_chunk(
    source: Arc<ProcSource>,
    pids: Vec<i32>,
) -> Result<(Chunk, Vec<i32>), String> {
    let watched = Arc::new(Watched::new(Progress {
        pids,
        chunk: Chunk::default(),
        weight: 0,
    }));
    let reading = {
        let (watched, source) = (watched.clone(), source.clone());
        tokio::task::spawn_blocking(move || read_blocking(&source, &watched))
    };
    let bounds = source.bounds();
    tokio::pin!(reading);
    loop {
        let due = watched.lock().due(bounds.deadline());
        let check = due.unwrap_or_else(|| Instant::now() + bounds.deadline());
        tokio::select! {
            done = &mut reading => {
                done.map_err(|e| format!("snapshot task failed: {e}"))?;
                break;
            }
            _ = tokio::time::sleep_until(check.into()) => {
                let mut slot = watched.lock();
                if let Some(mut p) = slot.give_up(bounds, Instant::now()) {
                    // The thread is left behind; this chunk ends here with
                    // what it read, and the rest goes to the next one.
                    source.finish(&mut p);
                    slot.state.chunk.records.push(p);
                    break;
                }
            }
        }
    }
    let mut slot = watched.lock();
    let progress = &mut slot.state;
    Ok((
        std::mem::take(&mut progress.chunk),
        std::mem::take(&mut progress.pids),
    ))
}

/// The blocking part of [`read_chunk`], as generation 0 of `watched`.
fn read_blocking(source: &ProcSource, watched: &Watched<Progress>) {
    const GENERATION: u64 = 0;
    let bounds = source.bounds();
    let mut reader = match source.reader() {
        Ok(reader) => reader,
        Err(e) => {
            let mut slot = watched.lock();
            let progress = &mut slot.state;
            progress.chunk.failed = std::mem::take(&mut progress.pids);
            progress.chunk.why = Some(e.to_string());
            return;
        }
    };
    loop {
        let mut slot = watched.lock();
        if slot.generation() != GENERATION {
            return;
        }
        let progress = &mut slot.state;
        if progress.weight >= CHUNK_BYTES || progress.chunk.records.len() >= CHUNK {
            return;
        }
        let Some(pid) = progress.pids.pop() else {
            return;
        };
        match bounds.admit(pid, pid, Source::Snapshot) {
            Ok(Admit::Go) => {}
            Ok(Admit::Stuck(p)) => {
                progress.chunk.records.push(*p);
                continue;
            }
            Err(e) => {
                progress.chunk.failed.push(pid);
                progress.chunk.why = Some(e.to_string());
                continue;
            }
        }
        watched.begin(&mut slot, blank(pid, pid, Source::Snapshot));
        drop(slot);
        let read = reader.read_into(pid, &mut watched.tracker(GENERATION), |_| true);
        let mut slot = watched.lock();
        if slot.generation() != GENERATION {
            drop(slot);
            bounds.returned(pid);
            return;
        }
        let p = slot.end();
        let progress = &mut slot.state;
        match (read, p) {
            (Ok(Outcome::Read), Some(mut p)) if !p.exited_before_inspection => {
                source.finish(&mut p);
                progress.weight += prost::Message::encoded_len(&p);
                progress.chunk.records.push(p);
            }
            (Ok(_), _) => {}
            (Err(e), _) => {
                progress.chunk.failed.push(pid);
                progress.chunk.why = Some(e.to_string());
            }
        }
    }
}
