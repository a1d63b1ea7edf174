//! execwatch's shared library: the generated wire contract and the few types
//! both binaries (the `agent` and the `reclaimer`) need.
//!
//! A custom policy engine can depend on this crate for [`proto`] and
//! [`client::connect`] and ignore the rest.

pub mod cgroup;
pub mod client;
pub mod clock;
pub mod cn_proc;
pub mod duration;
#[cfg(feature = "bin")]
pub mod runtime;

/// The generated `execwatch.v1` contract (messages, client and server).
pub mod proto {
    tonic::include_proto!("execwatch.v1");

    /// Encoded `FileDescriptorSet` of the contract, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("execwatch_descriptor");
}

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/execwatch/agent.sock";
