//! `sluice-bench` command-line entry point.

use anyhow::{bail, Result};
use clap::Parser;
use sluice_bench::cli::{Cli, Command, StreamsArgs};

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Streams(args) => run_streams(&args),
    }
}

/// Placeholder until the XDP backend sets up namespaces, loads the relay and
/// calls `sluice_bench::session::run_session`.
fn run_streams(args: &StreamsArgs) -> Result<()> {
    tracing::debug!(?args, "streams requested");
    bail!(
        "backend wiring pending: `{}` backend is not connected yet",
        args.backend.as_str()
    )
}
