//! The one retry policy of the reclaimer's Node and Event requests: an
//! attempt (the GET, check and PATCH of a write; a GET; an Event) runs again
//! until it succeeds or fails for a reason retrying will not fix.
//!
//! - No answer, 408, 429 or 5xx: wait the server's `Retry-After` (at most
//!   [`MAX_RETRY_AFTER`]) or else the next step of kube-runtime's backoff
//!   ([`crate::backoff`]), then run the whole attempt again (a write reads
//!   the Node afresh first).
//! - 409 on the PATCH (the Node changed since it was read): again at once.
//! - Anything else is the attempt's answer.
//!
//! kube's `Error::Api` keeps the Status but drops the headers, where the
//! API server's own throttling puts its `Retry-After`; so the Node client
//! ([`client`]) has one layer that turns such a refusal into [`RetryAfter`].

use std::future::Future;
use std::time::Duration;

use http::{header::RETRY_AFTER, Response};
use tower::{util::MapResultLayer, BoxError};

use super::error::{NodeError, Step};
use crate::backoff;

/// The longest wait a server's `Retry-After` is followed for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A transient refusal whose `Retry-After` said how long to wait.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}, Retry-After {}s", wait.as_secs())]
pub struct RetryAfter {
    /// The HTTP status.
    pub status: u16,
    /// The server's wait, not yet capped.
    pub wait: Duration,
}

/// A client for the Node and Event requests: kube's own stack for `config`
/// plus the layer that surfaces `Retry-After` as a [`RetryAfter`] error.
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    let layer = MapResultLayer::new(retry_after);
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

fn retry_after<B>(result: Result<Response<B>, BoxError>) -> Result<Response<B>, BoxError> {
    let res = result?;
    let status = res.status().as_u16();
    let secs = res
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    match secs {
        Some(secs) if transient(status) => Err(Box::new(RetryAfter {
            status,
            wait: Duration::from_secs(secs),
        })),
        _ => Ok(res),
    }
}

/// Whether a status means "try again": 408, 429, 5xx.
fn transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Runs `attempt` under the policy (module docs) until it is done.
pub async fn until_done<T, F, Fut>(mut attempt: F) -> Result<T, NodeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, NodeError>>,
{
    // Waits from 100-200 ms up to 5-10 s.
    let mut backoff = backoff::exponential(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let result = attempt().await;
        let Err(NodeError::Api { step, node, source }) = &result else {
            return result;
        };
        let mut next_delay = || backoff.next().unwrap_or(Duration::from_secs(10));
        let (wait, status) = match source {
            kube::Error::Api(s) if s.code == 409 && *step == Step::Patch => {
                tracing::info!(%node, "Node changed while patching (409); reading it again");
                continue;
            }
            kube::Error::Api(s) if transient(s.code) => (next_delay(), Some(s.code)),
            kube::Error::Service(e) => match e.downcast_ref::<RetryAfter>() {
                Some(r) => (r.wait.min(MAX_RETRY_AFTER), Some(r.status)),
                // No answer at all (connection refused, timed out): the
                // request may never have reached the server.
                None => (next_delay(), None),
            },
            kube::Error::HyperError(_) => (next_delay(), None),
            _ => return result,
        };
        let wait_ms = wait.as_millis() as u64;
        match status {
            Some(status) => {
                tracing::warn!(%node, status, wait_ms, "{step} refused for now; retrying")
            }
            None => tracing::warn!(%node, wait_ms, "{step} failed ({source}); retrying"),
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_worth_retrying() {
        for status in [408, 429, 500, 503, 504] {
            assert!(transient(status), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 422] {
            assert!(!transient(status), "{status}");
        }
    }
}
