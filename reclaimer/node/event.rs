//! The Event that records a reclaim request, written in the background
//! under the retry policy.
//!
//! A core/v1 Event created through `kube::Api`, not kube-runtime's
//! `Recorder`, because the Recorder cannot do the job here: it writes
//! events.k8s.io/v1 Events, and the 1.20.2 API server the tests run refuses
//! those about a cluster-scoped object anywhere but in `kube-system`
//! ("involvedObject.namespace: Invalid value: \"\": does not match
//! event.namespace"; `default` is allowed from kubernetes/kubernetes#100125,
//! in 1.23 and the 1.20-1.22 patch releases of September 2021). It also
//! names every attempt anew, where a name fixed per request makes a retry
//! after a lost reply find the Event already there.

use k8s_openapi::api::core::v1::{Event, EventSource, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ObjectMeta, PostParams};
use kube::Resource;

use super::error::Step;
use super::reclaim_request::{NodeClient, Request, FIELD_MANAGER};
use super::retry;

/// The longest object name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// `<node>.reclaim.<time in hex>`, unique per request. A node name long
/// enough to push it past [`MAX_NAME`] is shortened (and cut back to end in
/// a letter or digit, as a name's parts must), never the unique suffix:
/// the API server would refuse the Event with 422.
pub fn event_name(node: &str, unix_ns: u64) -> String {
    let suffix = format!(".reclaim.{unix_ns:x}");
    let room = MAX_NAME - suffix.len();
    let head = node[..node.len().min(room)].trim_end_matches(['.', '-']);
    format!("{head}{suffix}")
}

impl NodeClient {
    /// Records the Event about `node` in the background, retrying until it
    /// exists. Its name is fixed per request, so a retry after a lost reply
    /// finds it already there (409) instead of writing a second one.
    pub(super) fn spawn_event(&self, req: &Request, node: &Node) {
        let at = req.at.parse().ok().map(Time);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(
                    &self.node,
                    execwatch::internal::clock::unix_ns(),
                )),
                namespace: self.events.namespace().map(Into::into),
                ..Default::default()
            },
            involved_object: node.object_ref(&()),
            reason: Some("ReclaimRequested".into()),
            message: Some(format!(
                "{} (pid {}) matched: {}",
                req.comm, req.pid, req.reason
            )),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some(FIELD_MANAGER.into()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: at.clone(),
            last_timestamp: at,
            count: Some(1),
            ..Default::default()
        };
        let this = self.clone();
        tokio::spawn(async move {
            let created = retry::until_done(|| async {
                match this.events.create(&PostParams::default(), &event).await {
                    // Created by an attempt whose reply was lost.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    r => r.map(drop).map_err(|e| this.error(Step::Event, e)),
                }
            })
            .await;
            if let Err(e) = created {
                tracing::error!("{e}");
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
