//! The agent's command line. Every flag of the running agent also reads an
//! `EXECWATCH_*` environment variable, so a DaemonSet can configure it either
//! way; `health-check --timeout` is the probe's own and reads none.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
pub use execwatch::internal::logging::LogFormat;

use crate::detector::launch::{Detection, LaunchError};
use crate::detector::netlink::NetlinkDetector;
use crate::detector::receiver::Pace;
use crate::procfs::bounds::Bounds;
use crate::procfs::mount::ProcMount;
use crate::procfs::redaction::patterns::{Patterns, Preset};
use crate::procfs::redaction::Redactor;
use crate::totals::Totals;
use crate::transport::peer::PeerCheck;
use crate::transport::Limits;

/// execwatch agent: streams the node's process launches over gRPC on a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "agent", version)]
pub struct Cli {
    /// The agent's Unix socket: where the agent serves, and what
    /// `health-check` connects to (at most 107 bytes).
    #[arg(long, env = "EXECWATCH_SOCKET", default_value = execwatch::DEFAULT_SOCKET, global = true, value_parser = execwatch::client::socket_path)]
    pub socket: PathBuf,

    /// Log format.
    #[arg(long, env = "EXECWATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Once subscribed, switch every thread to this uid (with
    /// `--run-as-gid`), which clears every capability: for an agent started
    /// as uid 0 holding CAP_NET_ADMIN, CAP_SETUID and CAP_SETGID, as
    /// deploy/base starts it. `health-check` switches too before it
    /// connects. Not 0.
    #[arg(long, env = "EXECWATCH_RUN_AS_UID", global = true, requires = "run_as_gid", value_parser = clap::value_parser!(u32).range(1..))]
    pub run_as_uid: Option<u32>,

    /// The gid to switch to with `--run-as-uid`; supplementary groups are
    /// dropped.
    #[arg(
        long,
        env = "EXECWATCH_RUN_AS_GID",
        global = true,
        requires = "run_as_uid"
    )]
    pub run_as_gid: Option<u32>,

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
        /// Give up after this long (e.g. 500ms, 2s; 100ms to 5m).
        #[arg(long, default_value = "2s", value_parser = |s: &str| within(s, 100, 300_000))]
        timeout: Duration,
    },
}

/// How the agent runs.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// How launches are detected: the kernel's proc connector (netlink), or
    /// scanning /proc (poll).
    #[arg(long, env = "EXECWATCH_DETECTOR", value_enum, default_value_t = Detector::Netlink)]
    pub detector: Detector,

    /// Scan interval of the poll detector (e.g. 250ms, 1s; 10ms to 1m).
    // Faster scans burn a core on a busy host; slower ones make the poll
    // detector useless for reclaiming.
    #[arg(long, env = "EXECWATCH_POLL_INTERVAL", default_value = "250ms", value_parser = |s: &str| within(s, 10, 60_000))]
    pub poll_interval: Duration,

    /// How often the netlink detector's audit compares the running
    /// processes with what each subscriber was sent, to find what the kernel
    /// dropped without telling (100ms to 1m). A launch it dropped is found
    /// within one interval.
    // Below, the audit's scans add up; above, a launch the kernel dropped
    // waits too long to be found.
    #[arg(long, env = "EXECWATCH_AUDIT_INTERVAL", default_value = "15s", value_parser = |s: &str| within(s, 100, 60_000))]
    pub audit_interval: Duration,

    /// Socket file mode, in octal.
    #[arg(long, env = "EXECWATCH_SOCKET_MODE", default_value = "0660", value_parser = parse_mode)]
    pub socket_mode: u32,

    /// Peer uids allowed to connect (comma-separated). Empty: any peer the
    /// socket's mode admits. The agent's own uid is always allowed.
    #[arg(long, env = "EXECWATCH_ALLOW_UID", value_delimiter = ',')]
    pub allow_uid: Vec<u32>,

    /// Netlink receive buffer to ask for, in bytes (4096 to 1073741824).
    /// Above net.core.rmem_max it is granted only with CAP_NET_ADMIN.
    // The floor is a page (the kernel's own is about 2 KiB); the kernel caps a
    // socket buffer request at `INT_MAX / 2`, about 1 GiB.
    #[arg(long, env = "EXECWATCH_RECEIVE_BUFFER", default_value_t = 8 << 20, value_parser = clap::value_parser!(u32).range(4096..=1 << 30))]
    pub receive_buffer: u32,

    /// The kernel-side event filter of the netlink subscription: `auto` uses
    /// it where the kernel has it (>= 6.6) and falls back without; `off`
    /// subscribes the way older kernels need (every event, filtered here).
    #[arg(long, env = "EXECWATCH_KERNEL_FILTER", value_enum, default_value_t = KernelFilter::Auto)]
    pub kernel_filter: KernelFilter,

    /// Exec storm threshold, in execs a second (0 to 1000000; 0: never):
    /// from a 100 ms window in which the node launches at least this many
    /// programs a second (a build, not a person) to one with less than two
    /// thirds of that, the netlink reader wakes at most once per
    /// `--coalesce` and takes what queued meanwhile in one pass.
    #[arg(long, env = "EXECWATCH_COALESCE_ABOVE", default_value_t = 1500, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub coalesce_above: u32,

    /// During an exec storm (`--coalesce-above`), the netlink reader's rest
    /// between wake-ups (1ms to 50ms): a launch then reaches subscribers at
    /// most this much later, and the agent spends a wake-up per rest
    /// instead of one per exec.
    // Below a millisecond there is little to gain; above, a launch during a
    // storm would wait noticeably.
    #[arg(long, env = "EXECWATCH_COALESCE", default_value = "2ms", value_parser = |s: &str| within(s, 1, 50))]
    pub coalesce: Duration,

    /// Events each subscriber may have queued before it gets `lost` and a
    /// resync (1 to 1000000).
    #[arg(long, env = "EXECWATCH_QUEUE_LEN", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue_len: u32,

    /// Bytes of encoded events each subscriber may have queued before it
    /// gets `lost` and a resync (65536 to 1073741824; a record larger than
    /// this still fits an empty queue).
    #[arg(long, env = "EXECWATCH_QUEUE_BYTES", default_value_t = 4 << 20, value_parser = clap::value_parser!(u32).range(65_536..=1 << 30))]
    pub queue_bytes: u32,

    /// Subscribers (open `Watch` streams) served at once; one more is refused
    /// with RESOURCE_EXHAUSTED (1 to 1024).
    #[arg(long, env = "EXECWATCH_MAX_SUBSCRIBERS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_subscribers: u32,

    /// Subscribers one peer uid may have at once (1 to 1024).
    #[arg(long, env = "EXECWATCH_MAX_SUBSCRIBERS_PER_UID", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_subscribers_per_uid: u32,

    /// Connections open at once (1 to 65536); more are closed at once. The
    /// agent's own uid (its health probe) is not counted.
    #[arg(long, env = "EXECWATCH_MAX_CONNECTIONS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,

    /// Connections one peer uid may have open at once (1 to 65536).
    #[arg(long, env = "EXECWATCH_MAX_CONNECTIONS_PER_UID", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections_per_uid: u32,

    /// Concurrent HTTP/2 streams (RPCs) one connection may open: the
    /// SETTINGS_MAX_CONCURRENT_STREAMS the agent announces (1 to 1024).
    #[arg(long, env = "EXECWATCH_MAX_STREAMS_PER_CONNECTION", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_streams_per_connection: u32,

    /// How long a connection may stay open with no RPC in progress (1s to
    /// 60m); then the agent closes it, as gRPC clients expect of an idle
    /// channel (they reconnect when they next call). A `Watch` is an RPC in
    /// progress for as long as it runs.
    #[arg(long, env = "EXECWATCH_IDLE_TIMEOUT", default_value = "2m", value_parser = |s: &str| within(s, 1000, 3_600_000))]
    pub idle_timeout: Duration,

    /// Longest command line carried per process, in bytes (1 to 16777216);
    /// longer ones are cut and flagged argv_truncated (and still searched
    /// whole for subscribers' argv_substrings, found ones in argv_matches).
    /// A record carries at most twice this in argv and argv_raw together.
    #[arg(long, env = "EXECWATCH_MAX_ARGV_BYTES", default_value_t = 32 * 1024, value_parser = clap::value_parser!(u32).range(1..=16 << 20))]
    pub max_argv_bytes: u32,

    /// Longest one process's /proc read may take (e.g. 250ms; 10ms to 1m).
    /// A read still under way then is given up: the record goes out with
    /// the fields not read named in `unavailable`, and the thread stuck in
    /// the read is left behind.
    // Below, a busy node's slow but honest reads would be cut; above, one
    // stuck process delays events by a minute.
    #[arg(long, env = "EXECWATCH_PROC_READ_TIMEOUT", default_value = "250ms", value_parser = |s: &str| within(s, 10, 60_000))]
    pub proc_read_timeout: Duration,

    /// Threads stuck in /proc reads left behind at once (1 to 1024); while
    /// this many are stuck, no read starts and execs are reported as lost.
    #[arg(long, env = "EXECWATCH_MAX_STUCK_READS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_stuck_reads: u32,

    /// The procfs mount to read.
    #[arg(long, env = "EXECWATCH_PROC", default_value = "/proc")]
    pub proc_root: String,

    /// Redact argument text matching this regex in every record (repeatable;
    /// comma-separated). With capture groups only the captured text becomes
    /// <redacted>, e.g. `^--password=(.+)`; without, the whole argument.
    #[arg(long, env = "EXECWATCH_REDACT_ARGV", value_name = "REGEX", value_parser = crate::procfs::redaction::patterns::parse)]
    pub redact_argv: Vec<Patterns>,

    /// Redact the argument after one matching this regex (repeatable;
    /// comma-separated), e.g. `^--password$` for `--password hunter2`.
    #[arg(long, env = "EXECWATCH_REDACT_ARGV_NEXT", value_name = "REGEX", value_parser = crate::procfs::redaction::patterns::parse)]
    pub redact_argv_next: Vec<Patterns>,

    /// Add a ready-made set of redaction patterns (docs/security.md).
    #[arg(long, env = "EXECWATCH_REDACT_ARGV_PRESET", value_enum)]
    pub redact_argv_preset: Option<Preset>,
}

impl RunArgs {
    /// The one description of how processes are read, for the detector and
    /// the snapshots alike.
    pub fn proc_mount(&self) -> Result<ProcMount, nix::errno::Errno> {
        // The preset's patterns, then the `--redact-argv` and
        // `--redact-argv-next` ones.
        let preset = self.redact_argv_preset.map(Preset::patterns);
        let (mut inside, mut next) = preset.unwrap_or_default();
        inside.extend(self.redact_argv.iter().flat_map(|p| p.0.clone()));
        next.extend(self.redact_argv_next.iter().flat_map(|p| p.0.clone()));
        let bounds = Bounds::new(self.proc_read_timeout, self.max_stuck_reads as usize);
        let (max_argv, redactor) = (self.max_argv_bytes as usize, Redactor::new(inside, next));
        ProcMount::open(&self.proc_root, max_argv, redactor, bounds)
    }

    /// The detector the flags choose, opened (the netlink one subscribed).
    pub fn detection(&self) -> Result<Detection, LaunchError> {
        match self.detector {
            Detector::Netlink => Ok(Detection::Netlink(
                NetlinkDetector::start(
                    self.receive_buffer as usize,
                    self.kernel_filter == KernelFilter::Auto,
                )?,
                Pace {
                    above: (self.coalesce_above > 0).then_some(self.coalesce_above),
                    rest: self.coalesce,
                },
                self.audit_interval,
            )),
            Detector::Poll => Ok(Detection::Poll(self.poll_interval)),
        }
    }

    /// Whom the socket admits and how much it serves at once.
    pub fn limits(&self, stats: Arc<Totals>) -> Limits {
        Limits {
            peers: PeerCheck::new(&self.allow_uid, stats),
            max_connections: self.max_connections as usize,
            max_per_uid: self.max_connections_per_uid as usize,
            idle_timeout: self.idle_timeout,
            streams_per_connection: self.max_streams_per_connection,
            mode: self.socket_mode,
        }
    }
}

/// Whether the netlink subscription asks the kernel to filter events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelFilter {
    /// Filter in the kernel where it can (>= 6.6), else fall back to `off`.
    Auto,
    /// One unfiltered subscription: every proc connector event reaches the
    /// agent, which drops what it does not want. What kernels before 6.6 get.
    Off,
}

/// Detection mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Detector {
    /// Kernel-pushed exec events (Linux).
    // The default: the agent builds for Linux alone.
    Netlink,
    /// Periodic scan of /proc.
    Poll,
}

/// Parses a duration flag allowed from `min_ms` to `max_ms` milliseconds.
fn within(s: &str, min_ms: u64, max_ms: u64) -> Result<Duration, String> {
    let ms = Duration::from_millis;
    execwatch::internal::duration::parse_within(s, ms(min_ms), ms(max_ms))
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

    /// The help says what each flag does where it is read: health-check
    /// connects to the socket, and the bounded flags name their range.
    #[test]
    fn help_texts() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        // Global flags reach the subcommands when the command is built.
        cmd.build();
        let health = cmd
            .find_subcommand_mut("health-check")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!health.contains("serve on"), "{health}");
        assert!(health.contains("connects to"), "{health}");
        let help = Cli::command().render_long_help().to_string();
        // Words as clap wraps them, joined again.
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for range in ["(1 to 1000000)", "(1 to 16777216)", "(4096 to 1073741824)"] {
            assert!(help.contains(range), "no {range} in\n{help}");
        }
    }

    /// Every numeric and duration flag: its limits are accepted, one step
    /// beyond is refused with the flag and the allowed range named.
    #[test]
    fn bounds() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        for ok in [
            &["--poll-interval=10ms"][..],
            &["--poll-interval=1m"],
            &["--receive-buffer=4096"],
            &["--receive-buffer=1073741824"],
            &["--queue-len=1"],
            &["--queue-len=1000000"],
            &["--max-argv-bytes=1"],
            &["--max-argv-bytes=16777216"],
            &["--queue-bytes=65536"],
            &["--queue-bytes=1073741824"],
            &["--max-subscribers=1", "--max-subscribers-per-uid=1024"],
            &["--max-subscribers=1024", "--max-subscribers-per-uid=1"],
            &["--max-streams-per-connection=1"],
            &["--max-connections=1", "--max-connections-per-uid=65536"],
            &["--max-connections=65536", "--max-connections-per-uid=1"],
            &["--max-streams-per-connection=1024"],
            &["--proc-read-timeout=10ms", "--max-stuck-reads=1"],
            &["--proc-read-timeout=1m", "--max-stuck-reads=1024"],
            &["--coalesce=1ms", "--coalesce-above=0"],
            &["--coalesce=50ms", "--coalesce-above=1000000"],
            &["health-check", "--timeout=100ms"],
            &["health-check", "--timeout=5m"],
            &["--run-as-uid=65534", "--run-as-gid=0"],
            &["health-check", "--run-as-uid=65534", "--run-as-gid=65532"],
        ] {
            assert_eq!(parse(ok), Ok(()), "{ok:?}");
        }
        let long_socket = format!("--socket=/{}", "s".repeat(107));
        for (bad, words) in [
            (
                &["--poll-interval=9ms"][..],
                &["--poll-interval", "from 10ms to 1m"][..],
            ),
            (
                &["--poll-interval=61s"],
                &["--poll-interval", "from 10ms to 1m"],
            ),
            (&["--poll-interval=525600m"], &["525600m is out of range"]),
            (
                &["--receive-buffer=4095"],
                &["--receive-buffer", "4096..=1073741824"],
            ),
            (
                &["--receive-buffer=1073741825"],
                &["--receive-buffer", "4096..=1073741824"],
            ),
            (
                &["--receive-buffer=18446744073709551616"],
                &["--receive-buffer"],
            ),
            (&["--queue-len=1000001"], &["--queue-len", "1..=1000000"]),
            (
                &["--max-argv-bytes=0"],
                &["--max-argv-bytes", "1..=16777216"],
            ),
            (
                &["--max-argv-bytes=16777217"],
                &["--max-argv-bytes", "1..=16777216"],
            ),
            (&["--allow-uid=4294967296"], &["--allow-uid"]),
            (
                &["--queue-bytes=65535"],
                &["--queue-bytes", "65536..=1073741824"],
            ),
            (&["--max-subscribers=0"], &["--max-subscribers", "1..=1024"]),
            (
                &["--max-subscribers-per-uid=1025"],
                &["--max-subscribers-per-uid", "1..=1024"],
            ),
            (
                &["--max-connections=0"],
                &["--max-connections", "1..=65536"],
            ),
            (
                &["--max-connections-per-uid=65537"],
                &["--max-connections-per-uid", "1..=65536"],
            ),
            (
                &["--max-streams-per-connection=0"],
                &["--max-streams-per-connection", "1..=1024"],
            ),
            (
                &["--proc-read-timeout=9ms"],
                &["--proc-read-timeout", "from 10ms to 1m"],
            ),
            (&["--max-stuck-reads=0"], &["--max-stuck-reads", "1..=1024"]),
            (&["--coalesce=51ms"], &["--coalesce", "from 1ms to 50ms"]),
            (&["--coalesce=0ms"], &["--coalesce", "greater than zero"]),
            (
                &["--coalesce-above=1000001"],
                &["--coalesce-above", "0..=1000000"],
            ),
            (
                &["health-check", "--timeout=99ms"],
                &["--timeout", "from 100ms to 5m"],
            ),
            (
                &["health-check", "--timeout=301s"],
                &["--timeout", "from 100ms to 5m"],
            ),
            (&[long_socket.as_str()], &["--socket", "at most 107"]),
            (
                &["--run-as-uid=0", "--run-as-gid=0"],
                &["--run-as-uid", "1.."],
            ),
            (&["--run-as-uid=65534"], &["--run-as-gid"]),
            (&["--run-as-gid=65534"], &["--run-as-uid"]),
        ] {
            let err = parse(bad).unwrap_err();
            for word in words {
                assert!(err.contains(word), "{bad:?}: no {word:?} in {err}");
            }
        }
    }
}
