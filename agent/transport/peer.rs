//! The peer check that guards every service on the agent's socket
//! ([`PeerCheck`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use execwatch::internal::lock::lock;
use tokio::net::unix::UCred;
use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::totals::Totals;
use crate::transport::rpc_error::RpcError;

/// The peer's credentials, from the socket (`SO_PEERCRED`).
pub fn peer_cred<T>(req: &Request<T>) -> Option<UCred> {
    req.extensions().get::<UdsConnectInfo>()?.peer_cred
}

/// Which peers may use the socket, by uid.
///
/// An empty list admits every peer the socket's file mode lets connect. A
/// non-empty one admits those uids and the agent's own (so its health probe
/// works). Applied to every service, so a denied peer learns nothing but
/// `PERMISSION_DENIED`.
///
/// A refusal counts in `peers_denied` unless the last refusal was of the
/// same process (a client retrying, or the several connections of one
/// grpcurl `list`). One line is logged at most every [`LOG_EVERY`], saying
/// how many refusals went unlogged since the last.
#[derive(Clone)]
pub struct PeerCheck {
    /// `--allow-uid` as given: the uids admitted besides the agent's own;
    /// empty: every peer is admitted.
    pub listed: Arc<[u32]>,
    own_uid: u32,
    stats: Arc<Totals>,
    refused: Arc<Mutex<Refused>>,
}

/// How often a refusal may be logged.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// The last refusal and the log's pace.
#[derive(Default)]
struct Refused {
    /// The process (uid, pid) refused last.
    last: Option<(Option<u32>, Option<i32>)>,
    /// When a refusal was last logged.
    logged_at: Option<Instant>,
    /// Refusals since then, not logged.
    unlogged: u64,
}

impl Refused {
    /// Takes one refusal of process `peer` at `now`: whether it counts as a
    /// new peer, and whether to log it with the count of refusals unlogged
    /// before it.
    fn refuse(&mut self, peer: (Option<u32>, Option<i32>), now: Instant) -> (bool, Option<u64>) {
        let new_peer = self.last.replace(peer) != Some(peer);
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
        {
            self.unlogged += 1;
            return (new_peer, None);
        }
        self.logged_at = Some(now);
        (new_peer, Some(std::mem::take(&mut self.unlogged)))
    }
}

impl PeerCheck {
    /// A check admitting `uids` (everyone if empty).
    pub fn new(uids: &[u32], stats: Arc<Totals>) -> Self {
        Self {
            listed: uids.into(),
            own_uid: nix::unistd::geteuid().as_raw(),
            stats,
            refused: Arc::default(),
        }
    }

    /// Whether a peer with `uid` (process `pid`) may use the socket; a
    /// refusal is counted and logged (see [`PeerCheck`]). Called when a
    /// connection is accepted (a refused peer's connection is closed at
    /// once) and again on every request.
    pub fn admits(&self, uid: Option<u32>, pid: Option<i32>) -> bool {
        let admitted = |uid| uid == self.own_uid || self.listed.contains(&uid);
        if self.listed.is_empty() || uid.is_some_and(admitted) {
            return true;
        }
        let (new_peer, log) = lock(&self.refused).refuse((uid, pid), Instant::now());
        self.stats.add_peers_denied(new_peer.into());
        if let Some(unlogged_refusals) = log {
            tracing::warn!(
                peer_uid = uid,
                peer_pid = pid,
                unlogged_refusals,
                "refused a peer not in --allow-uid (logged at most once a minute)"
            );
        }
        false
    }
}

/// The interceptor every service on the socket is wrapped in: admits or
/// refuses one request.
impl Interceptor for PeerCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let cred = peer_cred(&req);
        let admitted = self.admits(cred.map(|c| c.uid()), cred.and_then(|c| c.pid()));
        admitted
            .then_some(req)
            .ok_or_else(|| RpcError::PeerDenied.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_retrying_counts_once_and_lines_come_once_a_minute() {
        let mut r = Refused::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(r.refuse((Some(7), Some(100)), at(0)), (true, Some(0)));
        // Its retry: the same peer, no line.
        assert_eq!(r.refuse((Some(7), Some(100)), at(0)), (false, None));
        // Another process: a peer, still no line within the minute.
        assert_eq!(r.refuse((Some(7), Some(101)), at(10)), (true, None));
        assert_eq!(r.refuse((Some(8), None), at(59)), (true, None));
        // A minute on: a line, with the three refusals not logged.
        assert_eq!(r.refuse((Some(8), None), at(60)), (false, Some(3)));
    }
}
