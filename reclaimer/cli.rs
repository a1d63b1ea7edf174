//! The reclaimer's command line. Every flag also reads an environment
//! variable, so the DaemonSet can set it either way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use execwatch::runtime::LogFormat;

/// execwatch reclaimer: asks 5-Spot to give the node back when a declared
/// program starts on it.
#[derive(Debug, Parser)]
#[command(name = "reclaimer", version)]
pub struct Cli {
    /// What to do (default: run the reclaimer).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// While running, rewrite this file every 5 s (the liveness probe's
    /// evidence that the decision loop runs).
    #[arg(long, env = "EXECWATCH_STATUS_FILE", global = true)]
    pub status_file: Option<PathBuf>,

    /// The agent's Unix socket.
    #[arg(long, env = "EXECWATCH_SOCKET", default_value = execwatch::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// This node's name (the downward API's spec.nodeName). Required unless
    /// --dry-run.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Namespace of the rules ConfigMap.
    #[arg(long, env = "EXECWATCH_NAMESPACE", default_value = "5spot-system")]
    pub namespace: String,

    /// Namespace of the Events recorded on the Node. The API server files
    /// events about cluster-scoped objects such as Nodes under `default`.
    #[arg(long, env = "EXECWATCH_EVENTS_NAMESPACE", default_value = "default")]
    pub events_namespace: String,

    /// Rules ConfigMap name (default: reclaim-agent-<node-name>).
    #[arg(long, env = "EXECWATCH_CONFIGMAP")]
    pub configmap: Option<String>,

    /// Read the rules from this TOML file instead of the ConfigMap (re-read
    /// when it changes). With --dry-run and no file, built-in demo rules apply.
    #[arg(long, env = "EXECWATCH_RULES_FILE")]
    pub rules_file: Option<PathBuf>,

    /// Log exactly what would be patched; never touch the Kubernetes API.
    #[arg(long, env = "EXECWATCH_DRY_RUN")]
    pub dry_run: bool,

    /// The host's machine-id, compared with the Node's
    /// status.nodeInfo.machineID before every write.
    #[arg(
        long,
        env = "EXECWATCH_MACHINE_ID_FILE",
        default_value = "/etc/machine-id"
    )]
    pub machine_id_file: PathBuf,

    /// Do not compare machine-ids (sandboxes only: the reclaimer could then
    /// annotate a Node that is not this host).
    #[arg(long, env = "EXECWATCH_SKIP_HOST_ID_CHECK")]
    pub skip_host_id_check: bool,

    /// How often the Node is re-read while a request is outstanding.
    #[arg(long, env = "EXECWATCH_RECHECK_INTERVAL", default_value = "10s", value_parser = execwatch::duration::parse)]
    pub recheck_interval: Duration,

    /// Serve Prometheus metrics here (e.g. 127.0.0.1:9477). Off by default:
    /// the pod shares the host's network.
    #[arg(long, env = "EXECWATCH_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Include command lines in logs (they may contain secrets).
    #[arg(long, env = "EXECWATCH_LOG_ARGV")]
    pub log_argv: bool,

    /// Log format.
    #[arg(long, env = "EXECWATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Exit 0 if the running reclaimer updated --status-file recently (for
    /// exec probes: the pod has no port to probe).
    HealthCheck {
        /// The oldest acceptable update.
        #[arg(long, default_value = "30s", value_parser = execwatch::duration::parse)]
        max_age: Duration,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
