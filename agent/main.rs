//! The execwatch agent: the privileged half. It watches the kernel for
//! process launches and serves them as a gRPC stream on a Unix socket. It
//! holds no rules and no Kubernetes credentials, and listens on no network.

mod cli;
mod detector;
mod privilege;
mod procfs;
mod stream;
mod totals;
mod transport;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use execwatch::proto::exec_events_server;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::cli::{Cli, Command};
use crate::stream::fanout::Fanout;
use crate::stream::service::ExecEventsService;
use crate::totals::Totals;
use crate::transport::grpc::StopReason;
use crate::transport::quota::Quota;

fn main() -> std::process::ExitCode {
    execwatch::internal::logging::exit_code(try_main())
}

fn try_main() -> anyhow::Result<std::process::ExitCode> {
    let started = Instant::now();
    // The netlink detector confirms its subscription by executing this binary
    // once; that run must do nothing at all.
    if std::env::var_os(detector::netlink::PROBE_ENV).is_some() {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    // Test builds only: FAILPOINTS (the `fail` crate's syntax) may set
    // `drop-exec=return(<comm>)`, see detector::receiver::publish_exec.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    execwatch::internal::logging::init_logging(cli.log_format);
    let run_as = cli.run_as_uid.zip(cli.run_as_gid);
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
            // Exec probes ask this way because the pod has no TCP port to
            // probe: the serving status of the agent at the socket.
            let ask = async {
                let channel = execwatch::client::connect(&cli.socket).await?;
                let service = exec_events_server::SERVICE_NAME;
                let request = HealthCheckRequest {
                    service: service.into(),
                };
                let reply = HealthClient::new(channel).check(request).await;
                let reply = reply.with_context(|| format!("health check of {service} failed"))?;
                anyhow::Ok(reply.into_inner().status())
            };
            let healthy = runtime
                .block_on(async { tokio::time::timeout(timeout, ask).await })
                .map_err(|_| anyhow::anyhow!("no health answer within {timeout:?}"))??;
            println!("{}", healthy.as_str_name());
            Ok(u8::from(healthy != ServingStatus::Serving).into())
        }
        None => {
            let stopped = runtime.block_on(run(cli, run_as, started));
            // A snapshot chunk still reading /proc on the blocking pool is
            // not waited for.
            runtime.shutdown_timeout(Duration::from_millis(100));
            match stopped? {
                StopReason::Signal => Ok(std::process::ExitCode::SUCCESS),
                StopReason::DetectorFailed(e) => {
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
async fn run(cli: Cli, run_as: Option<(u32, u32)>, started: Instant) -> anyhow::Result<StopReason> {
    let (socket, args) = (cli.socket, cli.run);
    let fanout = Arc::new(Fanout::new(
        args.queue_len as usize,
        args.queue_bytes as usize,
    ));
    let procfs = args.proc_mount();
    let procfs = Arc::new(procfs.with_context(|| format!("cannot open {}", args.proc_root))?);
    // The detector opens before the socket exists: a client that can
    // connect is a client that will see events.
    let net_admin = privilege::holds_net_admin();
    let detection = args.detection()?;
    // Nothing from here on needs a privilege: the switch comes before any
    // other thread, the socket and the first client.
    let settled = privilege::settle(run_as, net_admin && detection.is_netlink(), started)?;
    let stats = Arc::new(Totals::new(settled));
    let failed = detection.start(procfs.clone(), fanout.clone(), stats.clone())?;
    let seats = Quota::new(
        args.max_subscribers as usize,
        args.max_subscribers_per_uid as usize,
    );
    let (exec_events, streams_end) = ExecEventsService::new(fanout, stats.clone(), procfs, seats);
    let limits = args.limits(stats);
    let stopped = transport::grpc::serve(&socket, exec_events, limits, failed, streams_end).await?;
    tracing::info!("stopped; socket removed");
    Ok(stopped)
}
