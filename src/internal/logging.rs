//! The log set-up both binaries share, and their report of a fatal error.

use std::process::ExitCode;

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
///
/// In JSON each line is one object with `timestamp`, `level`, `target`,
/// `message` and the event's own fields at the top level, numbers and
/// booleans as JSON numbers and booleans, so a log tool indexes them without
/// digging into a nested `fields` object.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a pod's log is a file, read by people
    // with grep and by collectors that keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The exit status of a binary's run; a failed run first prints its error on
/// one line, each cause once (anyhow's own report repeats the causes our
/// errors already quote).
pub fn exit_code(run: anyhow::Result<ExitCode>) -> ExitCode {
    run.unwrap_or_else(|e| {
        eprintln!("Error: {}", crate::client::error_chain(e.as_ref()));
        ExitCode::FAILURE
    })
}
