//! The agent's command line. Every flag also reads an `EXECWATCH_*`
//! environment variable, so a DaemonSet can configure it either way.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
pub use execwatch::runtime::LogFormat;

/// execwatch agent: streams the node's process launches over gRPC on a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "agent", version)]
pub struct Cli {
    /// Unix socket to serve on.
    #[arg(long, env = "EXECWATCH_SOCKET", default_value = execwatch::DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,

    /// Log format.
    #[arg(long, env = "EXECWATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// What to do (default: run the agent).
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a running agent over its socket whether it is serving; exit 0 if so
    /// (for exec probes).
    HealthCheck {
        /// Give up after this long (e.g. 500ms, 2s).
        #[arg(long, default_value = "2s", value_parser = execwatch::duration::parse)]
        timeout: Duration,
    },
}

/// How the agent runs.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// How launches are detected: the kernel's proc connector (netlink), or
    /// scanning /proc (poll).
    #[arg(long, env = "EXECWATCH_DETECTOR", value_enum, default_value_t = Detector::default())]
    pub detector: Detector,

    /// Scan interval of the poll detector (e.g. 250ms, 1s).
    #[arg(long, env = "EXECWATCH_POLL_INTERVAL", default_value = "250ms", value_parser = execwatch::duration::parse)]
    pub poll_interval: Duration,

    /// Socket file mode, in octal.
    #[arg(long, env = "EXECWATCH_SOCKET_MODE", default_value = "0660", value_parser = parse_mode)]
    pub socket_mode: u32,

    /// Peer uids allowed to connect (comma-separated). Empty: any peer the
    /// socket's mode admits. The agent's own uid is always allowed.
    #[arg(long, env = "EXECWATCH_ALLOW_UID", value_delimiter = ',')]
    pub allow_uid: Vec<u32>,

    /// Netlink receive buffer to ask for, in bytes. Above net.core.rmem_max it
    /// is granted only with CAP_NET_ADMIN.
    #[arg(long, env = "EXECWATCH_RECEIVE_BUFFER", default_value_t = 8 << 20)]
    pub receive_buffer: usize,

    /// Events each subscriber may have queued before it gets `lost` and a resync.
    #[arg(long, env = "EXECWATCH_QUEUE_LEN", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue_len: u32,

    /// Longest command line read per process, in bytes; longer ones are cut
    /// and flagged argv_truncated.
    #[arg(long, env = "EXECWATCH_MAX_ARGV_BYTES", default_value_t = 32 * 1024, value_parser = clap::value_parser!(u32).range(1..=16 << 20))]
    pub max_argv_bytes: u32,

    /// The procfs mount to read.
    #[arg(long, env = "EXECWATCH_PROC", default_value = "/proc")]
    pub proc_root: String,
}

/// Detection mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Detector {
    /// Kernel-pushed exec events (Linux).
    Netlink,
    /// Periodic scan of /proc.
    Poll,
}

impl Default for Detector {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            Detector::Netlink
        } else {
            Detector::Poll
        }
    }
}

/// Parses an octal file mode such as `0660`.
fn parse_mode(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal file mode like 0660"))?;
    if mode > 0o777 {
        return Err(format!("{s:?} has bits beyond 0777"));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("7777").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
