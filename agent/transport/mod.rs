//! The agent's Unix socket: who is admitted ([`admission`], [`peer`],
//! [`quota`]), the HTTP/2 shim every connection passes through on its way
//! to h2 ([`h2_shim`]), the gRPC services served on it ([`grpc`]) and the one mapping of
//! their errors to status codes ([`rpc_error`]).

mod admission;
pub mod grpc;
mod h2_shim;
pub mod peer;
pub mod quota;
pub mod rpc_error;

pub use admission::Limits;
