//! `agent health-check`: asks a running agent, over its socket, whether it
//! serves. Exec probes use it because the pod has no TCP port to probe.

use std::path::Path;
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// The health service name the agent registers.
pub const SERVICE: &str = "execwatch.v1.ExecEvents";

/// Why the probe could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] execwatch::client::ConnectError),
    /// The call failed.
    #[error("health check of {SERVICE} failed: {0}")]
    Call(#[from] tonic::Status),
    /// No answer in time.
    #[error("no health answer within {0:?}")]
    Timeout(Duration),
}

/// Returns the serving status the agent at `socket` reports.
pub async fn probe(socket: &Path, timeout: Duration) -> Result<ServingStatus, ProbeError> {
    let ask = async {
        let channel = execwatch::client::connect(socket).await?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: SERVICE.into(),
            })
            .await?;
        Ok(reply.into_inner().status())
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}
