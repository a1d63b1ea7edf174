//! The reclaimer's own Node: the client that writes the reclaim request, the
//! Event that records it, the retry policy both run under, the error they
//! fail with, and the seam the decision loop writes through.

pub mod error;
mod event;
pub mod reclaim_request;
pub mod retry;
pub mod writer;
