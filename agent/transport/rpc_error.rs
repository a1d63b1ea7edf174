//! What can go wrong in an RPC on the agent's socket, and the one place
//! where each kind gets its gRPC status code ([`From<RpcError> for Status`]).

use tonic::{Code, Status};

/// Why an RPC is refused or a stream ends early. Each message is what the
/// client reads: short, and saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The peer's uid is not in `--allow-uid`.
    #[error("permission denied")]
    PeerDenied,
    /// The `Watch` request's selector is not valid (the message names the
    /// field).
    #[error("{0}")]
    BadSelector(String),
    /// Every subscriber seat is taken: this many.
    #[error("the agent already serves {0} subscribers (--max-subscribers); try again later")]
    NoSeat(usize),
    /// The peer's uid (if known) holds its share of seats: this many.
    #[error("uid {} already has {} subscribers (--max-subscribers-per-uid); close one first", .0.map_or("unknown".into(), |u| u.to_string()), .1)]
    NoSeatForUid(Option<u32>, usize),
    /// The subscriber overflowed its queue too often.
    #[error("subscriber cut off: its queue of {queue_len} events overflowed {overflows} times within {window_secs}s; read faster or reconnect")]
    CutOff {
        /// `--queue-len`.
        queue_len: usize,
        /// Overflows within the window.
        overflows: usize,
        /// The window.
        window_secs: u64,
    },
    /// A snapshot could not be completed in time.
    #[error("could not take a complete snapshot within {patience_secs}s: {why}; reconnect")]
    SnapshotIncomplete {
        /// How long it was tried.
        patience_secs: u64,
        /// The last failure.
        why: String,
    },
    /// A snapshot read failed inside the agent.
    #[error("{0}")]
    SnapshotFailed(String),
    /// The agent is stopping.
    #[error("agent shutting down; reconnect to its successor")]
    ShuttingDown,
}

impl From<RpcError> for Status {
    fn from(e: RpcError) -> Self {
        let code = match e {
            RpcError::PeerDenied => Code::PermissionDenied,
            RpcError::BadSelector(_) => Code::InvalidArgument,
            RpcError::NoSeat(_) | RpcError::NoSeatForUid(..) | RpcError::CutOff { .. } => {
                Code::ResourceExhausted
            }
            RpcError::SnapshotIncomplete { .. } | RpcError::ShuttingDown => Code::Unavailable,
            RpcError::SnapshotFailed(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
