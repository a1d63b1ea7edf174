//! The execwatch reclaimer: the unprivileged half. It reads the agent's
//! stream, holds the rules and the Kubernetes credentials, and asks the
//! 5-Spot controller to reclaim this node by annotating its Node.

mod agent_link;
mod backoff;
mod cli;
mod decision;
mod metrics;
mod node;
mod process_table;
mod rules;
mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::sync::{mpsc, watch};

use crate::agent_link::agent_metrics::AgentStats;
use crate::cli::{Cli, Command};
use crate::decision::{Decider, Settings};
use crate::node::reclaim_request::{HostId, NodeClient};
use crate::node::writer::{DryRun, NodeWriter};
use crate::rules::source::RulesSource;

fn main() -> std::process::ExitCode {
    let run = try_main().map(|()| std::process::ExitCode::SUCCESS);
    execwatch::internal::logging::exit_code(run)
}

fn try_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::HealthCheck { max_age, ready }) = cli.command {
        let Some(path) = &cli.status_file else {
            bail!("health-check needs --status-file (or EXECWATCH_STATUS_FILE)");
        };
        println!("{}", status::check(path, max_age, ready)?);
        return Ok(());
    }
    execwatch::internal::logging::init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run(cli));
    // A file read still blocked on the blocking pool is not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(path) = &cli.status_file {
        // A status file that cannot be written would fail the liveness probe
        // over and over with no word why; say so once, at start.
        status::write(path, false, "starting").with_context(|| {
            format!(
                "cannot write the status file {} (--status-file: its directory must exist and be writable by uid {})",
                path.display(),
                nix::unistd::getuid()
            )
        })?;
    }
    let shutdown = execwatch::internal::shutdown::shutdown_signal();
    let agent_stats = Arc::new(AgentStats::default());
    // Inert until the first rules arrive.
    let mut metrics = metrics::Metrics::new();
    metrics.register_agent(Box::new(agent_stats.clone()));
    let metrics = Arc::new(metrics);
    // The rules ConfigMap's name, refused here if invalid, not by the API
    // server over and over: `--configmap`, or `reclaim-agent-<node>`, which
    // a long node name can push past the 253 characters of a name.
    let configmap = match (&cli.rules_file, &cli.node_name, &cli.configmap) {
        (None, Some(_), Some(name)) if !cli.dry_run => Some(name.clone()),
        (None, Some(node), None) if !cli.dry_run => {
            let name = cli::dns_subdomain(&format!("reclaim-agent-{node}"));
            Some(name.map_err(|e| anyhow::anyhow!("the rules ConfigMap name for --node-name {node} is invalid: {e}; set --configmap"))?)
        }
        _ => None,
    };
    let writer: Box<dyn NodeWriter> = if cli.dry_run {
        tracing::info!("dry-run: decisions are logged, the Kubernetes API is never contacted");
        let node = cli.node_name.as_deref().unwrap_or("<this node>").into();
        Box::new(DryRun { node })
    } else {
        let Some(node) = cli.node_name.clone() else {
            bail!("--node-name (or NODE_NAME) is required unless --dry-run");
        };
        let host = if cli.skip_host_id_check {
            tracing::warn!("--skip-host-id-check is ON: the Node's machine-id is NOT compared with this host's; only for sandboxes");
            HostId::Skip
        } else {
            let path = cli.machine_id_file.display().to_string();
            let id = std::fs::read_to_string(&cli.machine_id_file)
                .with_context(|| format!("cannot read the host machine-id from {path} (set --machine-id-file, or --skip-host-id-check in a sandbox)"))?
                .trim()
                .to_string();
            if id.is_empty() {
                bail!("the host machine-id file {path} is empty");
            }
            HostId::MachineId { id, path }
        };
        let client = node::retry::client(kube_config(NODE_READ_TIMEOUT).await?)
            .context("cannot build the Kubernetes client")?;
        Box::new(NodeClient::new(
            client,
            node,
            cli.events_namespace.clone(),
            host,
            metrics.clone(),
        ))
    };
    // The rules' source, and what the link first subscribes with: the rules
    // a file or the demo holds now (the source hands the same to the
    // decision loop in a moment, so no re-subscription follows); a
    // ConfigMap's are not known yet, so no process until they arrive.
    let (source, first_rules) = match (&cli.rules_file, configmap) {
        // A bad file at start is a configuration error; later edits are
        // ridden out with the last good rules.
        (Some(path), _) => {
            let text = rules::source::read_capped(path)
                .with_context(|| format!("cannot read the rules file {}", path.display()))?;
            let rules = rules::Rules::parse(&text)
                .with_context(|| format!("the rules file {} is invalid", path.display()))?;
            (RulesSource::File(path.clone()), rules)
        }
        (None, Some(name)) => {
            let source = RulesSource::ConfigMap {
                client: kube::Client::try_from(kube_config(WATCH_READ_TIMEOUT).await?)
                    .context("cannot build the Kubernetes client")?,
                namespace: cli.namespace.clone(),
                name,
            };
            (source, rules::Rules::inert())
        }
        // A dry-run without a rules file: the demo rules.
        (None, None) => {
            let rules = rules::Rules::parse(rules::DEFAULT_RULES).context("the embedded rules")?;
            (RulesSource::Embedded(rules.clone()), rules)
        }
    };
    if let Some(addr) = cli.metrics_addr {
        // Bound here, so a bad address stops the reclaimer at start.
        let server = metrics::endpoint::MetricsServer::bind(addr, metrics.clone()).await?;
        tokio::spawn(server.run());
    }

    let (link_tx, link_rx) = mpsc::channel(1024);
    let (rules_tx, rules_rx) = mpsc::channel(4);
    // The link subscribes with the rules' selector.
    let (selector_tx, selector_rx) = watch::channel(first_rules.selector());
    tokio::spawn(agent_link::watch::run(
        cli.socket.clone(),
        link_tx,
        metrics.clone(),
        agent_stats,
        selector_rx,
    ));
    tokio::spawn(rules::source::run(
        source,
        cli.keep_rules_when_missing,
        rules_tx,
        selector_tx,
        metrics.clone(),
    ));
    let settings = Settings {
        status_file: cli.status_file.clone(),
        recheck: cli.recheck_interval,
        log_argv: cli.log_argv,
    };
    Decider::new(writer, settings, metrics)
        .run(link_rx, rules_rx, shutdown)
        .await;
    tracing::info!("stopped");
    Ok(())
}

/// Read timeout of the Node requests: short, so that a hung API server is
/// retried, not waited on.
const NODE_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Read timeout of the ConfigMap watch. A quiet watch sends nothing until
/// the server ends it (the watcher asks for 290 s), so a short timeout would
/// break it over and over, each time with a re-list and a growing backoff
/// that delays edits by up to 30 s. kube's own default; the watcher has its
/// own idle timeout for a hung stream.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(295);

/// A Kubernetes client configuration from the in-cluster service account
/// or KUBECONFIG.
async fn kube_config(read_timeout: Duration) -> anyhow::Result<kube::Config> {
    let mut config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(read_timeout);
    config.write_timeout = Some(Duration::from_secs(15));
    // node/retry.rs retries 429/5xx itself: logged, counted in
    // patch_errors, Retry-After capped at a minute, and a PATCH retried only
    // after reading the Node again. kube's own retry layer would answer them
    // first, silently, without the cap, and resend the stale PATCH. The
    // watcher has its own backoff.
    config.default_retry = false;
    Ok(config)
}
