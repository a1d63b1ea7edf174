//! The `execwatch.v1.ExecEvents` gRPC service, the peer check that guards
//! every service on the socket, and the cap on subscribers in total and per
//! peer uid.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use execwatch::proto::exec_events_server::ExecEvents;
use execwatch::proto::{Stats, StatsRequest, WatchEvent, WatchRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

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
pub struct Seats {
    taken: Arc<Mutex<HashMap<Option<u32>, usize>>>,
    total: usize,
    per_uid: usize,
}

/// One subscriber's seat, given back when the subscription ends.
pub struct Seat {
    taken: Arc<Mutex<HashMap<Option<u32>, usize>>>,
    uid: Option<u32>,
}

impl Seats {
    /// At most `total` subscribers, `per_uid` of them for one peer uid.
    pub fn new(total: usize, per_uid: usize) -> Self {
        Self {
            taken: Arc::default(),
            total,
            per_uid,
        }
    }

    /// A seat for a subscriber from `uid`, or the reason there is none.
    fn take(&self, uid: Option<u32>) -> Result<Seat, Status> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = taken.values().sum();
        let mine = taken.get(&uid).copied().unwrap_or(0);
        let peer = uid.map_or("unknown".into(), |u| u.to_string());
        if total >= self.total {
            tracing::warn!(peer_uid = %peer, limit = self.total, "refused a subscriber: the agent serves its maximum");
            return Err(Status::resource_exhausted(format!(
                "the agent already serves {total} subscribers (--max-subscribers); try again later"
            )));
        }
        if mine >= self.per_uid {
            tracing::warn!(peer_uid = %peer, limit = self.per_uid, "refused a subscriber: its uid has its maximum");
            return Err(Status::resource_exhausted(format!(
                "uid {peer} already has {mine} subscribers (--max-subscribers-per-uid); close one first"
            )));
        }
        *taken.entry(uid).or_default() += 1;
        Ok(Seat {
            taken: self.taken.clone(),
            uid,
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = taken.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                taken.remove(&self.uid);
            }
        }
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

    /// The interceptor: admits or refuses one request.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(allowed) = &self.allowed else {
            return Ok(req);
        };
        let uid = peer_uid(&req);
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
