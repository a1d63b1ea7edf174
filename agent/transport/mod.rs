//! The agent's Unix socket: admitting connections, normalizing what h2 reads,
//! watching writes, refusing what it must, and serving the gRPC services.

pub mod authority;
pub mod connection;
pub mod frame;
pub mod idle;
pub mod listener;
pub mod peer;
pub mod quota;
pub mod refusal;
pub mod server;
