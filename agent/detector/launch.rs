//! Which detector runs, in two steps around the privilege switch: the
//! netlink subscription is opened while the agent may still hold
//! `CAP_NET_ADMIN`, and every detector thread starts after the switch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::detector::audit;
use crate::detector::netlink::{self, NetlinkDetector};
use crate::detector::poll::Poller;
use crate::detector::receiver::{self, Pace};
use crate::procfs::mount::ProcMount;
use crate::stream::fanout::Fanout;
use crate::totals::Totals;

/// A detector opened and not yet started.
pub enum Detection {
    /// Subscribed to the proc connector and confirmed; audited every
    /// interval.
    Netlink(NetlinkDetector, Pace, Duration),
    /// Scanning `/proc` every interval; nothing to open.
    Poll(Duration),
}

/// Why no detector runs.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The proc connector subscription failed.
    #[error("the netlink detector could not start (try --detector=poll): {0}")]
    Netlink(#[from] netlink::StartError),
    /// The poll detector's first inventory of the `/proc` mount failed.
    #[error("cannot scan {0}: {1}")]
    Scan(String, #[source] std::io::Error),
    /// The detector's thread could not be spawned.
    #[error("cannot start the detector thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl Detection {
    /// Whether this detector is the netlink one (which may need a privilege).
    pub fn is_netlink(&self) -> bool {
        matches!(self, Self::Netlink(..))
    }

    /// Starts publishing into `fanout` on a thread of its own. The returned
    /// receiver says why, once, if the detector stops.
    pub fn start(
        self,
        procfs: Arc<ProcMount>,
        fanout: Arc<Fanout>,
        stats: Arc<Totals>,
    ) -> Result<oneshot::Receiver<String>, LaunchError> {
        let (failed_tx, failed) = oneshot::channel();
        match self {
            Self::Netlink(detector, pace, interval) => {
                let (mode, receive_buffer) = (detector.mode(), detector.receive_buffer);
                stats.set_detector("netlink", mode, receive_buffer as u64);
                tracing::info!(
                    mode,
                    receive_buffer_bytes = receive_buffer,
                    "netlink detector subscribed and confirmed by a probe exec"
                );
                let barrier = audit::start(interval, procfs.clone(), fanout.clone(), stats.clone())
                    .map_err(LaunchError::Thread)?;
                receiver::start(detector, pace, procfs, fanout, stats, barrier, failed_tx)
                    .map_err(LaunchError::Thread)?;
            }
            Self::Poll(interval) => {
                stats.set_detector("poll", "", 0);
                let root = procfs.root.clone();
                let poller = Poller::start(procfs).map_err(|e| LaunchError::Scan(root, e))?;
                tracing::info!(
                    interval_ms = interval.as_millis() as u64,
                    "poll detector scanning /proc"
                );
                std::thread::Builder::new()
                    .name("poll".into())
                    .spawn(move || {
                        let err = poller.run(interval, fanout);
                        let _ = failed_tx.send(format!("poll detector stopped: {err}"));
                    })
                    .map_err(LaunchError::Thread)?;
            }
        }
        Ok(failed)
    }
}
