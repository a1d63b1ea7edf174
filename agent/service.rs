//! The `execwatch.v1.ExecEvents` gRPC service and the peer check that guards
//! every service on the socket.

use std::collections::HashSet;
use std::sync::Arc;

use execwatch::proto::exec_events_server::ExecEvents;
use execwatch::proto::{Stats, StatsRequest, WatchEvent, WatchRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::stats;
use crate::subscription::{self, Shared};

/// Items buffered between a subscription task and the HTTP/2 stream.
const STREAM_BUFFER: usize = 16;

/// Serves `Watch` and `GetStats`.
pub struct ExecEventsService {
    shared: Arc<Shared>,
}

impl ExecEventsService {
    /// A service over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl ExecEvents for ExecEventsService {
    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        subscription::spawn(self.shared.clone(), req.into_inner(), tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_stats(&self, _req: Request<StatsRequest>) -> Result<Response<Stats>, Status> {
        Ok(Response::new(self.shared.stats.snapshot()))
    }
}

/// Which peers may use the socket, by uid.
///
/// An empty list admits every peer the socket's file mode lets connect. A
/// non-empty one admits those uids and the agent's own (so its health probe
/// works). Applied to every service, so a denied peer learns nothing but
/// `PERMISSION_DENIED`.
#[derive(Clone)]
pub struct PeerCheck {
    allowed: Option<Arc<HashSet<u32>>>,
    stats: Arc<stats::Stats>,
}

impl PeerCheck {
    /// A check admitting `uids` (everyone if empty).
    pub fn new(uids: &[u32], stats: Arc<stats::Stats>) -> Self {
        let allowed = (!uids.is_empty()).then(|| {
            let mut set: HashSet<u32> = uids.iter().copied().collect();
            set.insert(nix::unistd::geteuid().as_raw());
            Arc::new(set)
        });
        Self { allowed, stats }
    }

    /// The interceptor: admits or refuses one request.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(allowed) = &self.allowed else {
            return Ok(req);
        };
        let uid = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| cred.uid());
        match uid {
            Some(uid) if allowed.contains(&uid) => Ok(req),
            _ => {
                self.stats.add_peers_denied(1);
                let peer = uid.map_or("unknown".to_string(), |u| u.to_string());
                tracing::warn!(peer_uid = %peer, "refused a peer not in --allow-uid");
                Err(Status::permission_denied("permission denied"))
            }
        }
    }
}
