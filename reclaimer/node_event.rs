//! The Event that records a reclaim request, written in the background.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use super::{NodeClient, Request, FIELD_MANAGER};
use crate::backoff::Backoff;

impl NodeClient {
    /// Records the Event in the background, retrying until it exists. Its
    /// name is fixed per request, so a retry after a lost reply finds it
    /// already there (409) instead of writing a second one.
    pub(super) fn spawn_event(&self, req: &Request, node_uid: String) {
        let this = self.clone();
        let name = format!("{}.reclaim.{:x}", self.node, execwatch::clock::unix_ns());
        let message = format!("{} (pid {}) matched: {}", req.comm, req.pid, req.reason);
        let at = req.at.clone();
        tokio::spawn(async move {
            let body = json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": this.events_namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": this.node, "uid": node_uid},
                "reason": "ReclaimRequested", "message": message, "type": "Normal",
                "source": {"component": FIELD_MANAGER, "host": this.node},
                "reportingComponent": FIELD_MANAGER, "reportingInstance": this.node,
                "firstTimestamp": at, "lastTimestamp": at, "count": 1,
            });
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            let url = format!("/api/v1/namespaces/{}/events", this.events_namespace);
            loop {
                let req = match kube::core::Request::new(&url)
                    .create(&Default::default(), body.to_string().into_bytes())
                {
                    Ok(r) => r,
                    Err(e) => return tracing::error!("cannot build the Event request: {e}"),
                };
                let Some(r) = this.attempt("recording the Event", req, &mut backoff).await else {
                    continue;
                };
                if !(r.status.is_success() || r.status == StatusCode::CONFLICT) {
                    tracing::error!("{}", this.refused("recording an Event for", &r));
                }
                return;
            }
        });
    }
}
