//! Why a Node or Event request failed, and at which step.

/// What an attempt was doing when it failed, as the logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading the Node.
    Get,
    /// The merge-PATCH of the annotations.
    Patch,
    /// Creating the Event.
    Event,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Get => "GET Node",
            Step::Patch => "patch",
            Step::Event => "recording the Event",
        })
    }
}

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
    /// The API server refused for a reason retrying will not fix, or the
    /// answer could not be read.
    #[error("Node {node}: {step} refused: {}", describe(source))]
    Api {
        /// What was being done.
        step: Step,
        /// This Node's name.
        node: String,
        /// kube's error.
        source: kube::Error,
    },
}

/// kube's error, without the Debug dump its own message appends to a Status.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
        e => e.to_string(),
    }
}
