//! execwatch's library: the wire contract ([`proto`]) and a client for the
//! agent's Unix socket ([`client`]). That is its whole API: a custom policy
//! engine depends on this crate with `default-features = false` and gets
//! those two and nothing else (no Kubernetes, clap or tracing).

pub mod client;

/// Code the two binaries share with each other, the benchmark and the fuzz
/// targets (the netlink parser, `/proc` cgroup lines, the clock, durations
/// on the command line, logging and signals). Not part of the API: hidden
/// from the docs, compiled only with the `bin` feature, free to change.
#[cfg(feature = "bin")]
#[doc(hidden)]
pub mod internal {
    pub mod argv;
    pub mod cgroup;
    pub mod clock;
    pub mod cn_proc;
    pub mod duration;
    pub mod lock;
    pub mod logging;
    pub mod shutdown;
}

/// The generated `execwatch.v1` contract (messages, client and server).
pub mod proto {
    tonic::include_proto!("execwatch.v1");

    /// Encoded `FileDescriptorSet` of the contract, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("execwatch_descriptor");
}

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/execwatch/agent.sock";
