//! The detectors: where exec and exit events come from. The netlink detector
//! (rung 2) reads the kernel's proc connector; the poll detector (rung 1)
//! scans `/proc` when the connector is unavailable.

pub mod audit;
pub mod launch;
pub mod netlink;
pub mod poll;
pub mod reader;
pub mod socket;
