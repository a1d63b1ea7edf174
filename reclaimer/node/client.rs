//! Writing the reclaim request on the reclaimer's own Node, and nothing else.
//!
//! One request is: GET the Node → check the host's identity → if
//! `reclaim-requested` is already `"true"`, stop (the first reason and time
//! stand) → merge-PATCH the three annotations with the Node's
//! `resourceVersion` as a precondition (a concurrent change by the controller
//! is a 409, answered by reading again) → record an Event. Transient failures
//! (connection errors, timeouts, 429 with its Retry-After, 5xx) are retried
//! until the write lands; it lands once.

use std::time::{Duration, Instant};

use http::StatusCode;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::client::Body;
use serde_json::json;

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// The annotation the 5-Spot controller acts on.
pub const REQUESTED: &str = "5spot.finos.org/reclaim-requested";
/// Why: `process-match: <pattern>`.
pub const REASON: &str = "5spot.finos.org/reclaim-reason";
/// When (RFC 3339, UTC).
pub const REQUESTED_AT: &str = "5spot.finos.org/reclaim-requested-at";
/// The field manager on every write.
pub const FIELD_MANAGER: &str = "execwatch-reclaimer";

/// Why a request could not be written. Transient failures never surface
/// here: they are retried.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The Node is not this host.
    #[error("refusing to write: host machine-id {host:?} (from {path}) does not match Node {node}'s status.nodeInfo.machineID {found:?}")]
    HostMismatch {
        /// This Node's name.
        node: String,
        /// The host's machine-id.
        host: String,
        /// Where it was read.
        path: String,
        /// What the Node says (empty if unset).
        found: String,
    },
    /// The API server refused for a reason retrying will not fix.
    #[error("{step} Node {node}: HTTP {status}: {message}")]
    Refused {
        /// What was being done.
        step: &'static str,
        /// This Node's name.
        node: String,
        /// The HTTP status.
        status: u16,
        /// The API server's message.
        message: String,
    },
    /// A request could not be built (a bug).
    #[error("cannot build the {0} request: {1}")]
    Build(&'static str, String),
}

/// What a request achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The annotations were written by this request.
    Written,
    /// `reclaim-requested` was already `"true"`; nothing was written.
    AlreadyRequested,
}

/// The host's identity, checked before every write.
#[derive(Debug, Clone)]
pub enum HostId {
    /// Compare with this machine-id, read from `path`.
    MachineId {
        /// The host's machine-id, trimmed.
        id: String,
        /// Where it came from (for errors).
        path: String,
    },
    /// `--skip-host-id-check`.
    Skip,
}

/// One reclaim request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `process-match: <pattern>`.
    pub reason: String,
    /// RFC 3339 UTC timestamp for `reclaim-requested-at`.
    pub at: String,
    /// The process that matched, for the Event message.
    pub comm: String,
    /// Its pid.
    pub pid: i32,
    /// When the process was observed, for the latency metric.
    pub observed: Instant,
}

/// Reads and writes one Node.
#[derive(Clone)]
pub struct NodeClient {
    pub(super) client: kube::Client,
    pub(super) node: String,
    pub(super) events_namespace: String,
    host: HostId,
    metrics: std::sync::Arc<Metrics>,
}

/// A response, whole.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    retry_after: Option<Duration>,
    body: bytes::Bytes,
}

impl NodeClient {
    /// A client for Node `node`, recording Events in `events_namespace`.
    pub fn new(
        client: kube::Client,
        node: String,
        events_namespace: String,
        host: HostId,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            node,
            events_namespace,
            host,
            metrics,
        }
    }

    /// Whether `reclaim-requested` is `"true"` on the Node now.
    pub async fn reclaim_requested(&self) -> Result<bool, NodeError> {
        Ok(is_requested(&self.get().await?))
    }

    /// Writes `req` unless a request is already on the Node. Retries
    /// transient failures until done.
    pub async fn request(&self, req: &Request) -> Result<Outcome, NodeError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let node = self.get().await?;
            self.check_host(&node)?;
            if is_requested(&node) {
                return Ok(Outcome::AlreadyRequested);
            }
            let rv = node.metadata.resource_version.clone().unwrap_or_default();
            let patch = merge_patch(&req.reason, &req.at, Some(&rv));
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let http_req = kube::core::Request::new("/api/v1/nodes")
                .patch(&self.node, &pp, &Patch::Merge(&patch))
                .map_err(|e| NodeError::Build("patch", e.to_string()))?;
            // After a transient failure, read again: the Node may have
            // changed (or been requested) meanwhile.
            let Some(r) = self.attempt("patch", http_req, &mut backoff).await else {
                self.metrics.patch_errors.inc();
                continue;
            };
            if r.status.is_success() {
                self.metrics.patches.inc();
                self.metrics
                    .patch_latency
                    .observe(req.observed.elapsed().as_secs_f64());
                self.spawn_event(req, node.metadata.uid.unwrap_or_default());
                return Ok(Outcome::Written);
            }
            self.metrics.patch_errors.inc();
            if r.status != StatusCode::CONFLICT {
                return Err(self.refused("patching", &r));
            }
            // Changed under us (the controller?): read again and decide again.
            tracing::info!(node = %self.node, "Node changed while patching (409); reading it again");
        }
    }

    fn check_host(&self, node: &Node) -> Result<(), NodeError> {
        let HostId::MachineId { id, path } = &self.host else {
            return Ok(());
        };
        let found = node
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.machine_id.trim().to_string())
            .unwrap_or_default();
        if found.is_empty() || &found != id {
            return Err(NodeError::HostMismatch {
                node: self.node.clone(),
                host: id.clone(),
                path: path.clone(),
                found,
            });
        }
        Ok(())
    }

    /// GETs the Node, retrying transient failures.
    async fn get(&self) -> Result<Node, NodeError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let req = kube::core::Request::new("/api/v1/nodes")
                .get(&self.node, &Default::default())
                .map_err(|e| NodeError::Build("get", e.to_string()))?;
            let Some(r) = self.attempt("GET Node", req, &mut backoff).await else {
                continue;
            };
            if !r.status.is_success() {
                return Err(self.refused("reading", &r));
            }
            return serde_json::from_slice(&r.body).map_err(|e| NodeError::Refused {
                step: "reading",
                node: self.node.clone(),
                status: r.status.as_u16(),
                message: format!("unparsable Node: {e}"),
            });
        }
    }

    /// Sends `req` once. A transient failure (429, 408, 5xx, or no answer
    /// at all) is logged as `<what> refused for now` or `<what> failed`,
    /// waited out (the server's Retry-After, at most 60 s, or the next
    /// `backoff` delay) and yields `None`: the caller decides what to retry.
    /// Any other answer is returned.
    pub(super) async fn attempt(
        &self,
        what: &str,
        req: http::Request<Vec<u8>>,
        backoff: &mut Backoff,
    ) -> Option<Reply> {
        let wait = match self.send(req).await {
            Ok(r) if transient(r.status) => {
                let wait = r.retry_after.unwrap_or_else(|| backoff.next_delay());
                tracing::warn!(node = %self.node, status = r.status.as_u16(), wait_ms = wait.as_millis() as u64, "{what} refused for now; retrying");
                wait
            }
            Ok(r) => return Some(r),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(node = %self.node, wait_ms = wait.as_millis() as u64, "{what} failed ({e}); retrying");
                wait
            }
        };
        tokio::time::sleep(wait).await;
        None
    }

    async fn send(&self, req: http::Request<Vec<u8>>) -> Result<Reply, kube::Error> {
        let res = self.client.send(req.map(Body::from)).await?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            // Never wait longer than a minute on the server's say-so.
            .map(|s| Duration::from_secs(s.min(60)));
        let body = res.into_body().collect_bytes().await?;
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    pub(super) fn refused(&self, step: &'static str, r: &Reply) -> NodeError {
        let message = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
        NodeError::Refused {
            step,
            node: self.node.clone(),
            status: r.status.as_u16(),
            message,
        }
    }
}

/// Whether a status means "try again".
fn transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// Whether the Node carries an outstanding request.
pub fn is_requested(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REQUESTED))
        .is_some_and(|v| v == "true")
}

/// The merge-patch body of a request: the three annotations and, for a real
/// write, the Node's `resourceVersion` as a precondition. The dry-run log
/// shows the same body without it.
pub fn merge_patch(reason: &str, at: &str, resource_version: Option<&str>) -> serde_json::Value {
    let mut patch = json!({"metadata": {"annotations": {
        REQUESTED: "true", REASON: reason, REQUESTED_AT: at,
    }}});
    if let Some(rv) = resource_version {
        patch["metadata"]["resourceVersion"] = rv.into();
    }
    patch
}

/// Now, as `reclaim-requested-at` spells it: RFC 3339 UTC, whole seconds.
pub fn rfc3339_now() -> String {
    // Truncate, never round: the time must not lie in the future.
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
