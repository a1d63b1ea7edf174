//! The agent's Unix socket: who is admitted ([`admission`], [`peer`],
//! [`quota`]), the HTTP/2 shim every connection passes through on its way
//! to h2 ([`h2_shim`]), and the gRPC services served on it ([`grpc`]).

mod admission;
pub mod grpc;
mod h2_shim;
pub mod peer;
pub mod quota;

pub use admission::Admission;
