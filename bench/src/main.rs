//! `sluice-bench` command-line entry point.

use anyhow::Result;
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

/// Runs one `streams` measurement and prints its report: a table, or one JSON object on the
/// last line of stdout with `--json`.
fn run_streams(args: &StreamsArgs) -> Result<()> {
    let report = match args.backend {
        sluice_bench::cli::Backend::Xdp => sluice_bench::xdp_backend::run(args)?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    if report.generator_saturated {
        eprintln!(
            "warning: the generator could not keep the requested rate; the relay was not the limit"
        );
    }
    Ok(())
}
