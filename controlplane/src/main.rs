//! `sluice`: the appliance's command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod api;
#[allow(dead_code)] // schema_version, active and CallInfo::key serve tests and later readers
mod cdr;
mod cli_calls;
mod cli_cdrs;
mod demo;
mod hw;
mod location_db;
mod media_bridge;
#[allow(dead_code)] // parts of the protocol not every command uses yet
mod ng;
mod ng_handler;
mod radius;
mod relay;
mod run;
mod session;
#[allow(dead_code)] // the transport counters and the waker are not read by `sluice run` yet
mod transport;

/// Sluice: a kernel-bypass media and signalling appliance for VoIP carriers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Two phones behind two NATs register and call each other through `sluice run` in network
    /// namespaces; prints the per-call streams and the CDRs (needs root and SIPp).
    /// `--relay-only`: RTP alone through the relay, with the per-stream counters.
    Demo(demo::DemoArgs),
    /// Describes this host (CPUs, NUMA nodes, NIC ports), plans which cores serve which NIC
    /// queues and how much memory the maps get, and applies the tuning.
    Hw(hw::HwArgs),
    /// Runs the whole appliance: the SIP proxy with its media on the relay, the management API
    /// and the CDRs.
    Run(run::RunArgs),
    /// Runs the media relay alone, driven over rtpengine's ng protocol, with the management API.
    Relay(relay::RelayArgs),
    /// Lists the active calls of a running instance (from its management API).
    Calls(cli_calls::CallsArgs),
    /// Shows one call of a running instance with its streams.
    Call(cli_calls::CallArgs),
    /// Prints the call detail records of ended calls from the CDR database (a table, or CSV).
    Cdrs(cli_cdrs::CdrsArgs),
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
        Command::Run(args) => run::run(&args),
        Command::Relay(args) => relay::run(&args),
        Command::Calls(args) => cli_calls::run_calls(&args),
        Command::Call(args) => cli_calls::run_call(&args),
        Command::Cdrs(args) => cli_cdrs::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
