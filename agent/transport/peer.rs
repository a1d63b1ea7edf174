//! The peer check that guards every service on the agent's socket
//! ([`PeerCheck`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use execwatch::internal::lock::lock;
use tokio::net::unix::UCred;
use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::counters::Counters;

/// The peer's credentials, from the socket.
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
/// Refusals are counted and logged per peer, not per connection or request
/// (a client that retries, or one grpcurl `list`, makes several). A peer is
/// a process (uid and pid); within [`REFUSAL_WINDOW`] each is counted once
/// in `peers_denied`, and each uid gets at most one log line, the next one
/// saying how many peers and refusals went unlogged meanwhile.
#[derive(Clone)]
pub struct PeerCheck {
    allowed: Option<Arc<HashSet<u32>>>,
    stats: Arc<Counters>,
    refusals: Arc<Mutex<Refusals>>,
}

/// How long a refused peer is remembered, and how often a uid's refusals
/// may be logged.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Refused uids remembered at once; past this, windows that are over are
/// forgotten with what they had not logged, and if that is not enough, all.
const MAX_REFUSED_UIDS: usize = 1024;
/// Refused peers remembered per uid and window; past this, every refusal of
/// that uid counts as a new peer (over-counted, never missed).
const MAX_REFUSED_PEERS: usize = 1024;

/// Recent refusals, by peer uid.
#[derive(Default)]
struct Refusals {
    by_uid: HashMap<Option<u32>, UidRefusals>,
}

/// One uid's refusals in its current window.
#[derive(Default)]
struct UidRefusals {
    /// When the current window began (with a logged line); `None` before
    /// the uid's first refusal.
    logged_at: Option<Instant>,
    /// Peers (pids) refused in the current window.
    peers: HashSet<Option<i32>>,
    /// Refused peers, and refusals (connections or requests), since the
    /// last line and not in it.
    unlogged_peers: u64,
    unlogged_refusals: u64,
}

/// What one refusal means for the counter and the log.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    /// A peer not refused before in this window: count it.
    new_peer: bool,
    /// Log a line, with what went unlogged since the last one.
    log: Option<(u64, u64)>,
}

impl Refusals {
    fn refuse(&mut self, uid: Option<u32>, pid: Option<i32>, now: Instant) -> Refusal {
        if self.by_uid.len() >= MAX_REFUSED_UIDS {
            self.by_uid.retain(|_, r| !r.window_over(now));
            if self.by_uid.len() >= MAX_REFUSED_UIDS {
                // That many uids refused within a minute: start over rather
                // than grow (each uid then logs once more).
                self.by_uid.clear();
            }
        }
        let r = self.by_uid.entry(uid).or_default();
        if r.window_over(now) {
            // A new window, opened with a line saying what the last one
            // did not log.
            let log = Some((r.unlogged_peers, r.unlogged_refusals));
            *r = UidRefusals {
                logged_at: Some(now),
                peers: HashSet::from([pid]),
                ..UidRefusals::default()
            };
            return Refusal {
                new_peer: true,
                log,
            };
        }
        let new_peer = r.peers.len() >= MAX_REFUSED_PEERS || r.peers.insert(pid);
        r.unlogged_refusals += 1;
        r.unlogged_peers += u64::from(new_peer);
        Refusal {
            new_peer,
            log: None,
        }
    }
}

impl UidRefusals {
    /// Whether a refusal at `now` opens a new window.
    fn window_over(&self, now: Instant) -> bool {
        self.logged_at
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_WINDOW)
    }
}

impl PeerCheck {
    /// A check admitting `uids` (everyone if empty).
    pub fn new(uids: &[u32], stats: Arc<Counters>) -> Self {
        let allowed = (!uids.is_empty()).then(|| {
            let mut set: HashSet<u32> = uids.iter().copied().collect();
            set.insert(nix::unistd::geteuid().as_raw());
            Arc::new(set)
        });
        Self {
            allowed,
            stats,
            refusals: Arc::default(),
        }
    }

    /// Whether a peer with `uid` (process `pid`) may use the socket; a
    /// refusal is counted and logged per peer (see [`PeerCheck`]). Called
    /// when a connection is accepted (a refused peer's connection is closed
    /// at once) and again on every request.
    pub fn admits(&self, uid: Option<u32>, pid: Option<i32>) -> bool {
        let Some(allowed) = &self.allowed else {
            return true;
        };
        if uid.is_some_and(|uid| allowed.contains(&uid)) {
            return true;
        }
        let refusal = lock(&self.refusals).refuse(uid, pid, Instant::now());
        if refusal.new_peer {
            self.stats.add_peers_denied(1);
        }
        if let Some((unlogged_peers, unlogged_refusals)) = refusal.log {
            tracing::warn!(
                peer_uid = uid,
                peer_pid = pid,
                unlogged_peers,
                unlogged_refusals,
                "refused a peer not in --allow-uid (logged at most once a minute per uid)"
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
        if self.admits(cred.map(|c| c.uid()), cred.and_then(|c| c.pid())) {
            Ok(req)
        } else {
            Err(Status::permission_denied("permission denied"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_per_peer_and_logged_once_a_window_per_uid() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let first = Refusal {
            new_peer: true,
            log: Some((0, 0)),
        };
        // One process refused twice (its connection, then a retry): one
        // line, one peer.
        assert_eq!(r.refuse(Some(7), Some(100), at(0)), first);
        let again = Refusal {
            new_peer: false,
            log: None,
        };
        assert_eq!(r.refuse(Some(7), Some(100), at(0)), again);
        // Another process of the same uid: a peer, no line.
        let other = Refusal {
            new_peer: true,
            log: None,
        };
        assert_eq!(r.refuse(Some(7), Some(101), at(10)), other);
        // Another uid has its own window.
        assert_eq!(r.refuse(Some(8), Some(200), at(10)), first);
        // A minute on: a line again, with what went unlogged.
        assert_eq!(
            r.refuse(Some(7), Some(100), at(61)),
            Refusal {
                new_peer: true,
                log: Some((1, 2)),
            }
        );
        assert_eq!(r.refuse(Some(7), Some(100), at(62)), again);
    }

    #[test]
    fn many_refused_uids_stay_bounded() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        for uid in 0..(MAX_REFUSED_UIDS as u32 * 3) {
            r.refuse(Some(uid), None, t0 + REFUSAL_WINDOW * uid);
        }
        assert!(r.by_uid.len() <= MAX_REFUSED_UIDS);
        // All at once, within one window.
        for uid in 0..(MAX_REFUSED_UIDS as u32 * 3) {
            r.refuse(Some(uid), None, t0);
        }
        assert!(r.by_uid.len() <= MAX_REFUSED_UIDS);
    }
}
