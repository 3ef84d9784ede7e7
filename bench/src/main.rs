//! `sluice-bench` command-line entry point.

use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use sluice_bench::cli::{Backend, Cli, Command, StreamsArgs};
use sluice_bench::relay_backend;
use sluice_bench::report::{side_by_side, StreamsReport};

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
        Command::Streams(args) if args.backend == Backend::All => compare(&args),
        Command::Streams(args) => run_streams(&args),
    }
}

/// Runs one `streams` measurement and prints its report: a table, or one JSON object on the
/// last line of stdout with `--json`.
fn run_streams(args: &StreamsArgs) -> Result<()> {
    let report = relay_backend::run(args, args.backend)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    warn_if_saturated(&report);
    Ok(())
}

/// Runs every backend in turn with the same arguments, each in namespaces of its own, and prints
/// them side by side; with `--json`, one object keyed by backend on the last line of stdout.
fn compare(args: &StreamsArgs) -> Result<()> {
    let mut reports = Vec::new();
    for (i, backend) in args.backend.expand().iter().enumerate() {
        if i > 0 {
            // Let the previous run's namespaces, workers and softirqs wind down.
            std::thread::sleep(Duration::from_secs(1));
        }
        tracing::info!(backend = backend.as_str(), "measuring");
        let report = relay_backend::run(args, *backend)?;
        warn_if_saturated(&report);
        reports.push(report);
    }
    if args.json {
        let all: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|r| Ok((r.backend.clone(), serde_json::to_value(r)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        println!("{}", serde_json::Value::Object(all));
    } else {
        print!("{}", side_by_side(&reports));
    }
    Ok(())
}

fn warn_if_saturated(report: &StreamsReport) {
    if report.generator_saturated {
        eprintln!(
            "warning ({}): the generator could not keep the requested rate; the relay was not the limit",
            report.backend
        );
    }
}
