//! The detectors: where exec and exit events come from. The netlink detector
//! reads the kernel's proc connector; the poll detector scans `/proc` when
//! the connector is unavailable.

pub mod audit;
pub mod launch;
pub mod netlink;
pub mod poll;
pub mod receiver;
pub mod socket;
