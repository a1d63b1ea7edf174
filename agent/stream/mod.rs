//! The `execwatch.v1.ExecEvents` stream: the gRPC service, the fan-out from
//! the detector to every subscriber, and each subscriber's stream (snapshot,
//! live events, loss and resync).

pub mod fanout;
pub mod service;
pub mod subscription;
