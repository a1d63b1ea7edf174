//! The execwatch agent: the privileged half. It watches the kernel for
//! process launches and serves them as a gRPC stream on a Unix socket. It
//! holds no rules and no Kubernetes credentials, and listens on no network.

mod cli;
mod detector;
mod health_check;
mod privilege;
mod procfs;
mod stats;
mod stream;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::cli::{Cli, Command, Detector, RunArgs};
use crate::procfs::bounded::Bounds;
use crate::procfs::source::ProcSource;
use crate::stats::Stats;
use crate::stream::fanout::Fanout;
use crate::stream::subscription::Shared;
use crate::transport::server::Stopped;

fn main() -> std::process::ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            // One line, each cause once (anyhow's own report repeats the
            // causes our errors already quote).
            eprintln!(
                "Error: {}",
                execwatch::internal::runtime::error_chain(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<std::process::ExitCode> {
    let started = std::time::Instant::now();
    // The netlink detector confirms its subscription by executing this binary
    // once; that run must do nothing at all.
    if std::env::var_os(detector::netlink::PROBE_ENV).is_some() {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    // Test builds only: FAILPOINTS (the `fail` crate's syntax) may set
    // `drop-exec=return(<comm>)`, see detector::reader::publish_exec.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    execwatch::internal::runtime::init_logging(cli.log_format);
    let run_as = cli.run_as();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Some(Command::HealthCheck { timeout }) => {
            // The probe connects as the agent runs: the agent's own uid is
            // always admitted, and the probe holds nothing either.
            if let Some((uid, gid)) = run_as {
                privilege::switch(uid, gid)?;
            }
            let healthy = runtime.block_on(health_check::probe(&cli.socket, timeout))?;
            let serving = healthy == ServingStatus::Serving;
            println!("{}", healthy.as_str_name());
            Ok(if serving {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        None => {
            let stopped = runtime.block_on(run(cli.socket, cli.run, run_as, started));
            // A snapshot chunk still reading /proc on the blocking pool is
            // not waited for.
            runtime.shutdown_timeout(Duration::from_millis(100));
            match stopped? {
                Stopped::Signal => Ok(std::process::ExitCode::SUCCESS),
                Stopped::DetectorFailed(e) => {
                    anyhow::bail!(
                        "the detector failed: {e}; stopped so that the kubelet restarts the agent"
                    )
                }
            }
        }
    }
}

/// Runs the agent until a signal or a detector failure. `run_as` is the
/// uid and gid to switch to once subscribed; `started`, when `main` began.
async fn run(
    socket: std::path::PathBuf,
    args: RunArgs,
    run_as: Option<(u32, u32)>,
    started: std::time::Instant,
) -> anyhow::Result<Stopped> {
    let stats = Arc::new(Stats::default());
    let fanout = Arc::new(Fanout::new(
        args.queue_len as usize,
        args.queue_bytes as usize,
    ));
    let redactor = redactor(&args);
    if let Some(redactor) = &redactor {
        let (in_argument, next_argument) = redactor.counts();
        tracing::info!(
            in_argument,
            next_argument,
            "argv redaction on: matching text is replaced with {}",
            procfs::redaction::REDACTED
        );
    }
    // One description of how processes are read, for the detector and the
    // snapshots alike.
    let procfs = Arc::new(ProcSource::open(
        &args.proc_root,
        args.max_argv_bytes as usize,
        redactor,
        Bounds::new(args.proc_read_timeout, args.max_stuck_reads as usize),
    )?);

    // A detector that stops says why here; the agent then stops as on
    // SIGTERM, with an error.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
    // The detector starts before the socket exists: a client that can
    // connect is a client that will see events.
    let net_admin = privilege::holds_net_admin();
    let netlink = match args.detector {
        Detector::Netlink => {
            let filter = args.kernel_filter == cli::KernelFilter::Auto;
            let detector =
                detector::netlink::NetlinkDetector::start(args.receive_buffer as usize, filter)
                    .context("the netlink detector could not start (try --detector=poll)")?;
            Some(detector)
        }
        Detector::Poll => None,
    };
    // Nothing from here on needs a privilege: the switch comes before any
    // other thread, the socket and the first client.
    let settled = privilege::settle(run_as, net_admin && netlink.is_some(), started)?;
    settled.log();
    stats.set_privilege(settled.to_proto());
    match netlink {
        Some(detector) => {
            let mode = detector.mode();
            stats.set_detector("netlink", mode, detector.receive_buffer() as u64);
            tracing::info!(
                mode,
                receive_buffer_bytes = detector.receive_buffer(),
                "netlink detector subscribed and confirmed by a probe exec"
            );
            let (fanout, stats) = (fanout.clone(), stats.clone());
            let failed = move |err| {
                let _ = failed_tx.send(format!("netlink detector stopped: {err}"));
            };
            let pace = detector::reader::Pace {
                above: (args.coalesce_above > 0).then_some(args.coalesce_above),
                rest: args.coalesce,
            };
            let barrier = Arc::new(detector::audit::Barrier::default());
            let (procfs, audit) = (procfs.clone(), barrier.clone());
            detector::reader::start(
                detector,
                pace,
                procfs.clone(),
                fanout.clone(),
                stats.clone(),
                audit,
                failed,
            )
            .context("cannot start the detector thread")?;
            detector::audit::start(args.audit_interval, procfs, fanout, stats, barrier)
                .context("cannot start the audit thread")?;
        }
        None => {
            stats.set_detector("poll", "", 0);
            let poller = detector::poll::Poller::start(procfs.clone(), args.poll_interval)
                .with_context(|| format!("cannot scan {}", args.proc_root))?;
            tracing::info!(
                interval_ms = args.poll_interval.as_millis() as u64,
                "poll detector scanning /proc"
            );
            let fanout = fanout.clone();
            std::thread::Builder::new()
                .name("poll".into())
                .spawn(move || {
                    let err = poller.run(fanout);
                    let _ = failed_tx.send(format!("poll detector stopped: {err}"));
                })
                .context("cannot start the detector thread")?;
        }
    }

    let signal = execwatch::internal::runtime::shutdown_signal();
    let stop = async move {
        tokio::select! {
            _ = signal => Stopped::Signal,
            Ok(why) = failed_rx => Stopped::DetectorFailed(why),
        }
    };
    let listener = transport::server::bind(&socket, args.socket_mode)?;
    // The mode in octal, as chmod and ls write it: JSON has no octal
    // numbers, and 432 would be read as a mode by nobody. The uids as the
    // flag takes them: tracing records scalars only, not lists.
    let allow_uid: Vec<String> = args.allow_uid.iter().map(u32::to_string).collect();
    tracing::info!(
        socket = %socket.display(),
        mode = format!("{:04o}", args.socket_mode),
        allow_uid = allow_uid.join(","),
        peer_check = !args.allow_uid.is_empty(),
        "serving"
    );
    let peers = transport::peer::PeerCheck::new(&args.allow_uid, stats.clone());
    let (streams_end, stop_rx) = tokio::sync::watch::channel(false);
    let exec_events = stream::service::ExecEventsService {
        shared: Arc::new(Shared {
            fanout,
            stats,
            procfs,
            stop: stop_rx,
            snapshot_reads: tokio::sync::Semaphore::new(SNAPSHOT_READS),
        }),
        seats: transport::quota::Quota::new(
            args.max_subscribers as usize,
            args.max_subscribers_per_uid as usize,
        ),
    };
    let limits = transport::server::Limits {
        admission: transport::listener::Admission {
            peers,
            max_connections: args.max_connections as usize,
            max_per_uid: args.max_connections_per_uid as usize,
            idle_timeout: args.idle_timeout,
        },
        streams_per_connection: args.max_streams_per_connection,
    };
    let stopped =
        transport::server::serve(listener, &socket, exec_events, limits, stop, streams_end).await?;
    tracing::info!("stopped; socket removed");
    Ok(stopped)
}

/// Snapshot chunks read at once, across all subscribers.
const SNAPSHOT_READS: usize = 2;

/// The redaction the flags ask for: the preset's patterns, then the
/// `--redact-argv` and `--redact-argv-next` ones. `None` if there are none.
fn redactor(args: &RunArgs) -> Option<procfs::redaction::Redactor> {
    let (mut inside, mut next) = args
        .redact_argv_preset
        .map(|preset| preset.patterns())
        .unwrap_or_default();
    inside.extend(args.redact_argv.iter().flat_map(|p| p.0.iter().cloned()));
    next.extend(
        args.redact_argv_next
            .iter()
            .flat_map(|p| p.0.iter().cloned()),
    );
    procfs::redaction::Redactor::new(inside, next)
}
