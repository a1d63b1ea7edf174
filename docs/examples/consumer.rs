//! A small policy engine: keeps a table of the processes running on the
//! node and reports each launch of the programs named on its command line,
//! e.g. `sudo EXECWATCH_SOCKET=/tmp/execwatch/agent.sock cargo run --example
//! consumer -- java idea`.

use std::collections::{HashMap, HashSet};

use execwatch::proto::{watch_event::Kind, Process, WatchEvent, WatchRequest};
use tokio::sync::mpsc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let watched: Vec<String> = std::env::args().skip(1).collect();
    let socket =
        std::env::var("EXECWATCH_SOCKET").unwrap_or_else(|_| execwatch::DEFAULT_SOCKET.to_string());
    consume(&socket, watched, |p| {
        println!(
            "{} (pid {}, start {}) runs: {:?}",
            p.comm, p.pid, p.start_ticks, p.argv
        )
    })
    .await
}

/// Follows the agent's stream on `socket` until it ends, and calls
/// `on_launch` for every process (running at the start, or launched later)
/// whose command name is in `watched`.
pub async fn consume(
    socket: &str,
    watched: Vec<String>,
    mut on_launch: impl FnMut(&Process),
) -> anyhow::Result<()> {
    let mut client = execwatch::client::exec_events(socket).await?;
    let request = WatchRequest {
        include_exits: true,
        // A pre-filter: the agent may send more, so `decide` checks again.
        comms: watched.clone(),
        ..Default::default()
    };
    let mut stream = client.watch(request).await?.into_inner();
    let watched: HashSet<String> = watched.into_iter().collect();
    let mut decide = |p: &Process| {
        if watched.contains(&p.comm) {
            on_launch(p)
        }
    };

    // Read promptly: this task only moves items into our own queue.
    let (tx, mut rx) = mpsc::channel::<WatchEvent>(16_384);
    let reader = tokio::spawn(async move {
        while let Some(ev) = stream.message().await? {
            if tx.send(ev).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    });

    let mut table: HashMap<i32, Process> = HashMap::new();
    // Pids listed by the snapshot in progress; a stream starts with one.
    let mut listed: Option<HashSet<i32>> = Some(HashSet::new());
    let mut expected = 1;
    while let Some(ev) = rx.recv().await {
        anyhow::ensure!(
            ev.seq == expected,
            "seq jumped from {} to {}",
            expected - 1,
            ev.seq
        );
        expected += 1;
        match ev.kind {
            Some(Kind::Existing(p)) => {
                if let Some(seen) = &mut listed {
                    seen.insert(p.pid);
                }
                decide(&p);
                table.insert(p.pid, p);
            }
            Some(Kind::SnapshotComplete(_)) => {
                // Sweep: whatever the snapshot did not list is gone.
                if let Some(seen) = listed.take() {
                    table.retain(|pid, _| seen.contains(pid));
                }
            }
            Some(Kind::Exec(p)) => {
                decide(&p);
                table.insert(p.pid, p); // replaces what ran under that pid
            }
            Some(Kind::Exit(e)) => {
                table.remove(&e.pid);
            }
            Some(Kind::Lost(l)) => {
                eprintln!("lost events ({}); a resync follows", l.reason);
                listed = Some(HashSet::new());
            }
            None => {} // a kind added to the contract after this build
        }
    }
    reader.await??;
    Ok(())
}
