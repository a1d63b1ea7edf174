//! The `execwatch.v1.ExecEvents` gRPC service, the peer check that guards
//! every service on the socket, and the cap on subscribers in total and per
//! peer uid.

use std::collections::HashSet;
use std::sync::Arc;

use execwatch::proto::exec_events_server::ExecEvents;
use execwatch::proto::{Stats, StatsRequest, WatchEvent, WatchRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::quota::{Over, Place, Quota};
use crate::stats;
use crate::subscription::{self, Shared};

/// Items buffered between a subscription task and the HTTP/2 stream (few:
/// the queue in the fan-out is the one bounded in bytes).
const STREAM_BUFFER: usize = 4;

/// Serves `Watch` and `GetStats`.
pub struct ExecEventsService {
    shared: Arc<Shared>,
    seats: Seats,
}

impl ExecEventsService {
    /// A service over the shared state, serving at most `seats` subscribers.
    pub fn new(shared: Arc<Shared>, seats: Seats) -> Self {
        Self { shared, seats }
    }
}

/// How many subscribers may be served at once, in total and per peer uid.
#[derive(Clone)]
pub struct Seats(Quota);

/// One subscriber's seat, given back when the subscription ends.
pub type Seat = Place;

impl Seats {
    /// At most `total` subscribers, `per_uid` of them for one peer uid.
    pub fn new(total: usize, per_uid: usize) -> Self {
        Self(Quota::new(total, per_uid))
    }

    /// A seat for a subscriber from `uid`, or the reason there is none.
    fn take(&self, uid: Option<u32>) -> Result<Seat, Status> {
        let peer = uid.map_or("unknown".into(), |u| u.to_string());
        self.0.take(uid).map_err(|over| {
            tracing::warn!(peer_uid = %peer, "refused a subscriber: {over:?}");
            Status::resource_exhausted(match over {
                Over::Total(n) => format!(
                    "the agent already serves {n} subscribers (--max-subscribers); try again later"
                ),
                Over::PerUid(n) => format!(
                    "uid {peer} already has {n} subscribers (--max-subscribers-per-uid); close one first"
                ),
            })
        })
    }
}

/// The peer's uid, from the socket's credentials.
fn peer_uid<T>(req: &Request<T>) -> Option<u32> {
    req.extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid())
}

#[tonic::async_trait]
impl ExecEvents for ExecEventsService {
    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let seat = self.seats.take(peer_uid(&req))?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        subscription::spawn(self.shared.clone(), req.into_inner(), tx, seat);
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

    /// Whether a peer with `uid` may use the socket; a refusal is logged and
    /// counted. Called when a connection is accepted (a refused peer's
    /// connection is closed at once) and again on every request.
    pub fn admits(&self, uid: Option<u32>) -> bool {
        let Some(allowed) = &self.allowed else {
            return true;
        };
        if uid.is_some_and(|uid| allowed.contains(&uid)) {
            return true;
        }
        self.stats.add_peers_denied(1);
        let peer = uid.map_or("unknown".to_string(), |u| u.to_string());
        tracing::warn!(peer_uid = %peer, "refused a peer not in --allow-uid");
        false
    }

    /// The interceptor: admits or refuses one request.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.admits(peer_uid(&req)) {
            Ok(req)
        } else {
            Err(Status::permission_denied("permission denied"))
        }
    }
}
