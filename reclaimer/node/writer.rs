//! The decision loop's seam to the outside world: the Node side effects it
//! asks for, behind one small trait.
//!
//! The real writer is [`NodeClient`] (GET, host check, merge-PATCH, Event;
//! re-reading the Node); [`DryRun`] logs the patch it would send. The unit
//! tests of the decision loop put a fake Node in their place.

use std::future::Future;
use std::pin::Pin;

use crate::node::error::NodeError;
use crate::node::reclaim_request::{self, NodeClient, Outcome, Request};

/// Node I/O in flight, run by the decision loop as a background job.
pub type Job<T> = Pin<Box<dyn Future<Output = Result<T, NodeError>> + Send>>;

/// How a request went out.
pub enum Sent {
    /// Nothing to wait for: the request holds from now on.
    Now,
    /// Node I/O to run; its outcome decides.
    Pending(Job<Outcome>),
}

/// Where the decision loop's reclaim requests go.
pub trait NodeWriter: Send {
    /// Whether a request stays on a Node until the controller clears it, so
    /// that the Node is re-read to learn when it is gone (and one may be
    /// there already at start). Without a Node (dry-run), nothing is
    /// outstanding at start and a request lasts while a matching process
    /// runs.
    fn holds_requests(&self) -> bool;

    /// Asks for a reclaim.
    fn request(&self, req: Request) -> Sent;

    /// Re-reads whether a request is on the Node now.
    fn requested(&self) -> Job<bool>;
}

// Each job owns a clone of the client (a few cheap handles), so that it
// runs in the background.
impl NodeWriter for NodeClient {
    fn holds_requests(&self) -> bool {
        true
    }

    fn request(&self, req: Request) -> Sent {
        Sent::Pending(Box::pin(self.clone().request(req)))
    }

    fn requested(&self) -> Job<bool> {
        Box::pin(self.clone().reclaim_requested())
    }
}

/// `--dry-run`: log the merge-patch that would be sent; touch no API.
pub struct DryRun {
    /// The Node name used in the log line.
    pub node: String,
}

impl NodeWriter for DryRun {
    fn holds_requests(&self) -> bool {
        false
    }

    fn request(&self, req: Request) -> Sent {
        let patch = reclaim_request::merge_patch(&req.reason, &req.at, None);
        tracing::info!(%patch, "dry-run: would merge-PATCH Node {} with field manager {}", self.node, reclaim_request::FIELD_MANAGER);
        Sent::Now
    }

    /// There is no Node, so no request on it.
    fn requested(&self) -> Job<bool> {
        Box::pin(std::future::ready(Ok(false)))
    }
}
