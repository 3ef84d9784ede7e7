//! `sluice-bench` command-line entry point.

use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use sluice_bench::cli::{Against, Backend, Cli, Command, Setup, StreamsArgs};
use sluice_bench::external::{self, RelayKind};
use sluice_bench::relay_backend;
use sluice_bench::report::{side_by_side, StreamsReport};
use sluice_bench::sweep::{self, SweepReport};

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
        Command::Streams(args) if args.against.is_some() => against(&args),
        Command::Streams(args) if args.sweep => run_sweep(&args),
        Command::Streams(args) if args.backend == Backend::All => compare(&args),
        Command::Streams(args) => run_streams(&args),
        Command::Report(args) => sluice_bench::suite::run(&args),
        Command::Calls(args) => sluice_bench::calls::run_calls(&args),
        Command::Register(args) => sluice_bench::calls::run_register(&args),
    }
}

/// One measurement of `args.backend` with `args.setup`.
fn measure(args: &StreamsArgs) -> Result<StreamsReport> {
    match (args.backend, args.setup) {
        (Backend::None, _) => external::run(args, RelayKind::None),
        (Backend::All, _) => anyhow::bail!("`all` runs one measurement per backend"),
        (backend, Setup::Ng) => external::run(args, RelayKind::Sluice(backend)),
        (backend, Setup::Direct) => relay_backend::run(args, backend),
    }
}

/// A sweep of one backend: a table of the steps, or one JSON object on the last line.
fn run_sweep(args: &StreamsArgs) -> Result<()> {
    if args.backend == Backend::All {
        anyhow::bail!("--sweep measures one backend at a time");
    }
    let cap = match (args.backend, args.setup) {
        (Backend::None, _) | (_, Setup::Ng) => external::MAX_NG_STREAMS,
        _ => relay_backend::MAX_STREAMS,
    };
    let report = sweep::run(args, cap, measure)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    warn_if_generator_bound(&report);
    Ok(())
}

/// Sluice (as `sluice relay`, over ng) and the reference relay with the same arguments, one
/// after the other on the same topology; with `--json`, `{"sluice": ..., "rtpengine": ...}` on
/// the last line of stdout.
fn against(args: &StreamsArgs) -> Result<()> {
    let Some(Against::Rtpengine) = args.against else {
        anyhow::bail!("--against: which relay?");
    };
    let backend = match args.backend {
        Backend::All | Backend::None => {
            anyhow::bail!("--against compares one Sluice backend (xdp, afxdp or sockets)")
        }
        b => b,
    };
    // Both binaries are checked before anything runs.
    external::sluice_binary(args)?;
    external::rtpengine_binary(args)?;
    let mut sides: Vec<(&str, SweepReport)> = Vec::new();
    for (name, kind) in [
        ("sluice", RelayKind::Sluice(backend)),
        ("rtpengine", RelayKind::Rtpengine),
    ] {
        if !sides.is_empty() {
            std::thread::sleep(Duration::from_secs(1));
        }
        tracing::info!(relay = name, "measuring");
        let report = if args.sweep {
            sweep::run(args, external::MAX_NG_STREAMS, |step| {
                external::run(step, kind)
            })?
        } else {
            SweepReport::single(external::run(args, kind)?, args.loss_threshold)
        };
        warn_if_generator_bound(&report);
        sides.push((name, report));
    }
    if !args.json || args.sweep {
        for (_, report) in &sides {
            if args.sweep {
                eprint!("{report}");
            }
        }
    }
    if args.json {
        let all: serde_json::Map<String, serde_json::Value> = sides
            .iter()
            .map(|(name, r)| Ok(((*name).to_owned(), serde_json::to_value(r)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        println!("{}", serde_json::Value::Object(all));
    } else {
        print!("{}", sweep::versus(&sides[0].1, &sides[1].1, "rtpengine"));
    }
    Ok(())
}

fn warn_if_generator_bound(report: &SweepReport) {
    if report.limit == sweep::limit::GENERATOR {
        eprintln!(
            "warning ({} {}): the generator could not keep the requested rate at {} streams; \
             the load generator, not the relay, was the limit",
            report.best.relay,
            report.best.backend,
            report.steps.last().map_or(0, |r| r.streams)
        );
    }
}

/// Runs one `streams` measurement and prints its report: a table, or one JSON object on the
/// last line of stdout with `--json`.
fn run_streams(args: &StreamsArgs) -> Result<()> {
    let report = measure(args)?;
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
        let report = measure(&StreamsArgs {
            backend: *backend,
            ..args.clone()
        })?;
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
