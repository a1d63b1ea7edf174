//! The reclaimer's command line. Every flag of the running reclaimer also
//! reads an environment variable, so the DaemonSet can set it either way;
//! `health-check --max-age` and `--ready` are the probe's own and read none.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use execwatch::internal::logging::LogFormat;

/// Bounds of `--recheck-interval`: faster hammers the API server; slower
/// leaves a cleared node disarmed for too long.
pub const RECHECK_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(600));
/// Bounds of `health-check --max-age`: the status file is rewritten every
/// 5 s, so less than twice that fails a healthy reclaimer now and then.
pub const MAX_AGE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(3600));

/// execwatch reclaimer: asks 5-Spot to give the node back when a declared
/// program starts on it.
#[derive(Debug, Parser)]
#[command(name = "reclaimer", version)]
pub struct Cli {
    /// What to do (default: run the reclaimer).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The status file. The running reclaimer rewrites it every 5 s from its
    /// decision loop (when, whether it streams from the agent, its rules);
    /// `health-check` reads it. None is written when unset.
    #[arg(long, env = "EXECWATCH_STATUS_FILE", global = true)]
    pub status_file: Option<PathBuf>,

    /// The agent's Unix socket.
    #[arg(long, env = "EXECWATCH_SOCKET", default_value = execwatch::DEFAULT_SOCKET, value_parser = execwatch::client::socket_path)]
    pub socket: PathBuf,

    /// This node's name (the downward API's spec.nodeName). Required unless
    /// --dry-run.
    #[arg(long, env = "NODE_NAME", value_parser = dns_subdomain)]
    pub node_name: Option<String>,

    /// Namespace of the rules ConfigMap.
    #[arg(long, env = "EXECWATCH_NAMESPACE", default_value = "5spot-system", value_parser = dns_label)]
    pub namespace: String,

    /// Namespace of the Events recorded on the Node. The API server files
    /// events about cluster-scoped objects such as Nodes under `default`.
    #[arg(long, env = "EXECWATCH_EVENTS_NAMESPACE", default_value = "default", value_parser = dns_label)]
    pub events_namespace: String,

    /// Rules ConfigMap name (default: reclaim-agent-<node-name>).
    #[arg(long, env = "EXECWATCH_CONFIGMAP", value_parser = dns_subdomain)]
    pub configmap: Option<String>,

    /// Read the rules from this TOML file instead of the ConfigMap (re-read
    /// when it changes). With --dry-run and no file, built-in demo rules apply.
    #[arg(long, env = "EXECWATCH_RULES_FILE")]
    pub rules_file: Option<PathBuf>,

    /// Keep the rules in force when their source holds no document (the
    /// ConfigMap deleted, without reclaim.toml or with a blank one; the rules
    /// file emptied or removed) instead of disarming the node. Off by
    /// default: 5-Spot deletes the ConfigMap to disarm a node.
    #[arg(long, env = "EXECWATCH_KEEP_RULES_WHEN_MISSING")]
    pub keep_rules_when_missing: bool,

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

    /// How often the Node is re-read while a request is outstanding (100ms
    /// to 10m).
    #[arg(long, env = "EXECWATCH_RECHECK_INTERVAL", default_value = "10s", value_parser = |s: &str| execwatch::internal::duration::parse_within(s, RECHECK_INTERVAL.0, RECHECK_INTERVAL.1))]
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
        /// The oldest acceptable update (10s to 60m).
        #[arg(long, default_value = "30s", value_parser = |s: &str| execwatch::internal::duration::parse_within(s, MAX_AGE.0, MAX_AGE.1))]
        max_age: Duration,
        /// Also fail unless the reclaimer was streaming from the agent at
        /// that update (the readiness probe: it sees launches).
        #[arg(long)]
        ready: bool,
    },
}

/// A Kubernetes object name (RFC 1123 subdomain): at most 253 characters,
/// lowercase letters, digits, '-' and '.', starting and ending with a
/// letter or digit.
pub fn dns_subdomain(s: &str) -> Result<String, String> {
    let allowed = "lowercase letters, digits, '-' and '.'";
    dns_name(s, 253, "a Kubernetes name (RFC 1123 subdomain)", allowed)
}

/// A namespace name (RFC 1123 label): at most 63 characters, lowercase
/// letters, digits and '-', starting and ending with a letter or digit.
fn dns_label(s: &str) -> Result<String, String> {
    let allowed = "lowercase letters, digits and '-'";
    dns_name(s, 63, "a namespace name (RFC 1123 label)", allowed)
}

/// `s` if it is `what`: 1 to `max` of the characters `allowed` names (a
/// '.' only if it names one), starting and ending with a letter or digit.
fn dns_name(s: &str, max: usize, what: &str, allowed: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > max {
        return Err(format!(
            "{what} is 1 to {max} characters long; this one has {}",
            s.len()
        ));
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let dots = allowed.contains("'.'");
    let ok_chars = s
        .chars()
        .all(|c| alnum(c) || c == '-' || (dots && c == '.'));
    if !ok_chars || !s.starts_with(alnum) || !s.ends_with(alnum) {
        return Err(format!(
            "{s:?} is not {what}: use {allowed}, starting and ending with a letter or digit"
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// health-check's help describes the file the running reclaimer
    /// writes, not the writing.
    #[test]
    fn health_check_help() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        // Global flags reach the subcommands when the command is built.
        cmd.build();
        let help = cmd
            .find_subcommand_mut("health-check")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("The running reclaimer rewrites it"), "{help}");
        assert!(help.contains("`health-check` reads it"), "{help}");
        assert!(help.contains("--ready"), "{help}");
    }

    #[test]
    fn names() {
        assert_eq!(dns_subdomain("ws-42.lab"), Ok("ws-42.lab".into()));
        assert!(dns_subdomain(&"a".repeat(253)).is_ok());
        assert!(dns_subdomain(&"a".repeat(254))
            .unwrap_err()
            .contains("1 to 253"));
        assert!(dns_subdomain("Workstation")
            .unwrap_err()
            .contains("lowercase"));
        assert!(dns_subdomain("-ws").is_err());
        assert!(dns_subdomain("").is_err());
        assert_eq!(dns_label("5spot-system"), Ok("5spot-system".into()));
        assert!(dns_label("a.b").is_err());
        assert!(dns_label(&"a".repeat(64)).unwrap_err().contains("1 to 63"));
    }

    /// Every bounded flag: its limits are accepted, one step beyond is
    /// refused with the flag and the range named.
    #[test]
    fn bounds() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("reclaimer").chain(args.iter().copied()))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        for ok in [
            &["--recheck-interval=100ms"][..],
            &["--recheck-interval=10m"],
            &["health-check", "--max-age=10s"],
            &["health-check", "--max-age=60m"],
        ] {
            assert_eq!(parse(ok), Ok(()), "{ok:?}");
        }
        for (bad, words) in [
            (
                &["--recheck-interval=99ms"][..],
                &["--recheck-interval", "from 100ms to 10m"][..],
            ),
            (
                &["--recheck-interval=601s"],
                &["--recheck-interval", "from 100ms to 10m"],
            ),
            (
                &["--recheck-interval=525600m"],
                &["525600m is out of range"],
            ),
            (
                &["health-check", "--max-age=5s"],
                &["--max-age", "from 10s to 60m"],
            ),
            (
                &["health-check", "--max-age=61m"],
                &["--max-age", "from 10s to 60m"],
            ),
            (&["--node-name=Big_Node"], &["--node-name", "RFC 1123"]),
            (&["--namespace=a.b"], &["--namespace", "RFC 1123"]),
            (&["--events-namespace="], &["--events-namespace", "1 to 63"]),
        ] {
            let err = parse(bad).unwrap_err();
            for word in words {
                assert!(err.contains(word), "{bad:?}: no {word:?} in {err}");
            }
        }
        let long = format!("--configmap={}", "c".repeat(254));
        assert!(parse(&[&long]).unwrap_err().contains("1 to 253"));
    }
}
