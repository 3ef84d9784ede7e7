//! `sluice`: the appliance's command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod hw;

/// Sluice: a kernel-bypass media and signalling appliance for VoIP carriers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Relays a few calls' RTP through the XDP relay in network namespaces and prints the
    /// per-stream counters (needs root).
    Demo(demo::DemoArgs),
    /// Describes this host (CPUs, NUMA nodes, NIC ports), plans which cores serve which NIC
    /// queues and how much memory the maps get, and applies the tuning.
    Hw(hw::HwArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Hw(args) => hw::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
