//! The Event that records a reclaim request, written in the background.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use super::client::{NodeClient, Request, FIELD_MANAGER};
use crate::backoff::Backoff;

/// The longest object name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// `<node>.reclaim.<time in hex>`, unique per request. A node name long
/// enough to push it past [`MAX_NAME`] is shortened (and cut back to end in
/// a letter or digit, as a name's parts must), never the unique suffix:
/// the API server would refuse the Event with 422.
pub fn event_name(node: &str, unix_ns: u64) -> String {
    let suffix = format!(".reclaim.{unix_ns:x}");
    let room = MAX_NAME - suffix.len();
    let mut head = &node[..node.len().min(room)];
    while let Some(cut) = head.strip_suffix(['.', '-']) {
        head = cut;
    }
    format!("{head}{suffix}")
}

impl NodeClient {
    /// Records the Event in the background, retrying until it exists. Its
    /// name is fixed per request, so a retry after a lost reply finds it
    /// already there (409) instead of writing a second one.
    pub(super) fn spawn_event(&self, req: &Request, node_uid: String) {
        let this = self.clone();
        let name = event_name(&self.node, execwatch::internal::clock::unix_ns());
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

#[cfg(test)]
mod tests {
    use super::event_name;

    #[test]
    fn short_node_names_are_kept_whole() {
        assert_eq!(event_name("ws-1", 0xabc), "ws-1.reclaim.abc");
    }

    #[test]
    fn the_longest_node_names_still_give_a_valid_event_name() {
        for len in [226, 227, 240, 253] {
            // Labels of 63 characters, as long as a name's parts may be.
            let label = "a".repeat(62) + "b";
            let mut node = std::iter::repeat_n(label.as_str(), 4)
                .collect::<Vec<_>>()
                .join(".");
            node.truncate(len);
            let name = event_name(&node, u64::MAX);
            assert!(name.len() <= 253, "{len}: {} characters", name.len());
            assert!(name.ends_with(".reclaim.ffffffffffffffff"));
            for part in name.split('.') {
                assert!(
                    !part.is_empty() && part.len() <= 63,
                    "{len}: bad part {part:?}"
                );
                assert!(part.starts_with(|c: char| c.is_ascii_alphanumeric()));
                assert!(
                    part.ends_with(|c: char| c.is_ascii_alphanumeric()),
                    "{len}: {part:?}"
                );
            }
        }
        // A cut that lands on a dash or a dot is moved back to a letter.
        let node = "x".repeat(226) + "-.-y";
        assert!(event_name(&node, 1).starts_with(&"x".repeat(226)));
        assert!(!event_name(&node, u64::MAX).contains("-."));
    }
}
