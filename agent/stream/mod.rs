//! The `execwatch.v1.ExecEvents` stream: the gRPC service, the fan-out from
//! the detector to every subscriber, each subscriber's selector, and its
//! stream (snapshot, live events, loss and resync).

pub mod fanout;
pub mod ledger;
pub mod selector;
pub mod service;
pub mod subscription;
