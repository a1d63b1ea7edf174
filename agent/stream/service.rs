//! The `execwatch.v1.ExecEvents` gRPC service, and the cap on subscribers
//! in total and per peer uid.

use std::sync::Arc;

use execwatch::proto::exec_events_server::ExecEvents;
use execwatch::proto::{Stats, StatsRequest, WatchRequest};
use tokio::sync::{watch, Semaphore};
use tonic::{Request, Response, Status};

use crate::procfs::mount::ProcMount;
use crate::stream::fanout::Fanout;
use crate::stream::selector::Choice;
use crate::stream::subscription::{self, Shared, WatchStream};
use crate::totals::Totals;
use crate::transport::peer::peer_cred;
use crate::transport::quota::{Over, Quota};
use crate::transport::rpc_error::RpcError;

/// Serves `Watch` and `GetStats`.
pub struct ExecEventsService {
    /// What every subscriber's stream needs.
    pub shared: Arc<Shared>,
    /// How many subscribers may be served at once, in total and per peer
    /// uid; each holds its place for as long as its stream lives.
    pub seats: Quota,
}

/// Snapshot chunks read at once, across all subscribers.
const SNAPSHOT_READS: usize = 2;

impl ExecEventsService {
    /// Serves what the detector publishes into `fanout`, subscribers' snapshots
    /// read from `procfs`. Sending `true` on the returned sender ends every
    /// stream (the agent stops).
    pub fn new(
        fanout: Arc<Fanout>,
        stats: Arc<Totals>,
        procfs: Arc<ProcMount>,
        seats: Quota,
    ) -> (Self, watch::Sender<bool>) {
        let (streams_end, stop) = watch::channel(false);
        let shared = Arc::new(Shared {
            fanout,
            stats,
            procfs,
            stop,
            snapshot_reads: Semaphore::new(SNAPSHOT_READS),
        });
        (Self { shared, seats }, streams_end)
    }
}

#[tonic::async_trait]
impl ExecEvents for ExecEventsService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let uid = peer_cred(&req).map(|cred| cred.uid());
        // A bad selector is refused before it takes a seat.
        let choice = Choice::from_request(req.get_ref())
            .map_err(|e| RpcError::BadSelector(e.to_string()))?;
        let seat = self.seats.take(uid).map_err(|over| {
            tracing::warn!(peer_uid = uid, "refused a subscriber: {over:?}");
            match over {
                Over::Total(n) => RpcError::NoSeat(n),
                Over::PerUid(n) => RpcError::NoSeatForUid(uid, n),
            }
        })?;
        let stream = subscription::watch(self.shared.clone(), uid, choice, seat);
        Ok(Response::new(stream))
    }

    async fn get_stats(&self, _req: Request<StatsRequest>) -> Result<Response<Stats>, Status> {
        let shared = &self.shared;
        Ok(Response::new(shared.stats.snapshot(shared.fanout.counts())))
    }
}
