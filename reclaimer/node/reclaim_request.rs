//! Writing the reclaim request on the reclaimer's own Node, and nothing else.
//!
//! One request is: GET the Node → check the host's identity → if
//! `reclaim-requested` is already `"true"`, stop (the first reason and time
//! stand) → merge-PATCH the three annotations with the Node's
//! `resourceVersion` as a precondition → record an Event. It runs under the
//! one retry policy of [`super::retry`]: transient failures (connection
//! errors, timeouts, 429 with its Retry-After, 5xx) and a 409 (the Node
//! changed meanwhile) start it again from the GET, until the write lands;
//! it lands once.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::error::{NodeError, Step};
use super::retry;
use crate::metrics::Metrics;

/// The annotation the 5-Spot controller acts on.
pub const REQUESTED: &str = "5spot.finos.org/reclaim-requested";
/// Why: `process-match: <pattern>`.
pub const REASON: &str = "5spot.finos.org/reclaim-reason";
/// When (RFC 3339, UTC).
pub const REQUESTED_AT: &str = "5spot.finos.org/reclaim-requested-at";
/// The field manager on every write.
pub const FIELD_MANAGER: &str = "execwatch-reclaimer";

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
    nodes: Api<Node>,
    /// Where the Events go.
    pub(super) events: Api<Event>,
    pub(super) node: String,
    host: HostId,
    metrics: Arc<Metrics>,
}

impl NodeClient {
    /// A client for Node `node`, recording Events in `events_namespace`, on
    /// a client made by [`retry::client`].
    pub fn new(
        client: kube::Client,
        node: String,
        events_namespace: String,
        host: HostId,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            events: Api::namespaced(client.clone(), &events_namespace),
            nodes: Api::all(client),
            node,
            host,
            metrics,
        }
    }

    /// Whether `reclaim-requested` is `"true"` on the Node now.
    pub async fn reclaim_requested(self) -> Result<bool, NodeError> {
        retry::until_done(|| async { Ok(is_requested(&self.get().await?)) }).await
    }

    /// Writes `req` unless a request is already on the Node.
    pub async fn request(self, req: Request) -> Result<Outcome, NodeError> {
        let Some(node) = retry::until_done(|| self.write(&req)).await? else {
            return Ok(Outcome::AlreadyRequested);
        };
        self.metrics.patches.inc();
        self.metrics
            .patch_latency
            .observe(req.observed.elapsed().as_secs_f64());
        self.spawn_event(&req, &node);
        Ok(Outcome::Written)
    }

    /// One attempt at a request: the Node as patched, or `None` if a
    /// request was there already.
    async fn write(&self, req: &Request) -> Result<Option<Node>, NodeError> {
        let node = self.get().await?;
        self.check_host(&node)?;
        if is_requested(&node) {
            return Ok(None);
        }
        let rv = node.metadata.resource_version.as_deref();
        let patch = Patch::Merge(merge_patch(&req.reason, &req.at, rv));
        // A merge patch, not server-side apply: `apply` here only names the
        // field manager.
        let pp = PatchParams::apply(FIELD_MANAGER);
        let patched = self.nodes.patch(&self.node, &pp, &patch).await;
        patched.map(Some).map_err(|e| {
            // Each failed attempt counts, 409s included.
            self.metrics.patch_errors.inc();
            self.error(Step::Patch, e)
        })
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

    /// GETs the Node, once.
    async fn get(&self) -> Result<Node, NodeError> {
        self.nodes
            .get(&self.node)
            .await
            .map_err(|e| self.error(Step::Get, e))
    }

    pub(super) fn error(&self, step: Step, source: kube::Error) -> NodeError {
        NodeError::Api {
            step,
            node: self.node.clone(),
            source,
        }
    }
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
    // %S truncates, never rounds: the time must not lie in the future.
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
