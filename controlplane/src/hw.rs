//! `sluice hw`: describe this host, plan its cores and memory for a profile, and apply the plan's
//! tuning.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use sluice_hardware::{plan, tuning, CorePlan, Host, Profile};

/// Arguments of `sluice hw`.
#[derive(Args, Debug)]
pub struct HwArgs {
    #[command(subcommand)]
    command: HwCommand,
}

#[derive(Subcommand, Debug)]
enum HwCommand {
    /// Prints the host as sysfs describes it: CPUs, NUMA nodes, memory, NIC ports.
    Show {
        #[command(flatten)]
        source: Source,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Prints the core plan: which CPU serves which NIC queue, the control plane's CPUs, the
    /// memory budget and the tuning.
    Plan {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        profile: ProfileChoice,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Applies the plan's tuning: queue counts, ring sizes, sysctls, IRQ affinity (needs root).
    Apply {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        profile: ProfileChoice,
        /// Print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
struct Source {
    /// Read DIR/sys and DIR/proc instead of /sys and /proc (a fake tree, for tests and review).
    #[arg(long, value_name = "DIR", default_value = "/")]
    sysfs_root: PathBuf,
}

#[derive(Args, Debug)]
struct ProfileChoice {
    /// A built-in profile: `default` (any host) or `reference-2s-4port`.
    #[arg(long, value_name = "NAME", conflicts_with = "profile_file")]
    profile: Option<String>,
    /// A profile in a TOML file.
    #[arg(long, value_name = "PATH")]
    profile_file: Option<PathBuf>,
}

impl ProfileChoice {
    fn load(&self) -> anyhow::Result<Profile> {
        Ok(match (&self.profile, &self.profile_file) {
            (_, Some(path)) => Profile::from_file(path)?,
            (Some(name), None) => Profile::builtin(name)?,
            (None, None) => Profile::builtin("default")?,
        })
    }
}

fn read_host(root: &Path) -> anyhow::Result<Host> {
    Host::read_from(root).with_context(|| format!("describing the host under {}", root.display()))
}

fn make_plan(source: &Source, choice: &ProfileChoice) -> anyhow::Result<(Host, CorePlan)> {
    let host = read_host(&source.sysfs_root)?;
    let profile = choice.load()?;
    let plan = plan(&host, &profile);
    Ok((host, plan))
}

/// Runs `sluice hw ...`.
pub fn run(args: &HwArgs) -> anyhow::Result<()> {
    match &args.command {
        HwCommand::Show { source, json } => {
            let host = read_host(&source.sysfs_root)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&host)?);
            } else {
                print_host(&host);
            }
            Ok(())
        }
        HwCommand::Plan {
            source,
            profile,
            json,
        } => {
            let (_, plan) = make_plan(source, profile)?;
            if *json {
                println!("{}", plan.to_json());
            } else {
                print!("{plan}");
            }
            Ok(())
        }
        HwCommand::Apply {
            source,
            profile,
            dry_run,
        } => apply(source, profile, *dry_run),
    }
}

fn apply(source: &Source, choice: &ProfileChoice, dry_run: bool) -> anyhow::Result<()> {
    let (_, plan) = make_plan(source, choice)?;
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    let setup = tuning::setup_steps(&plan);
    if dry_run {
        println!(
            "# profile {}: {} step(s), not run",
            plan.profile,
            setup.len()
        );
        for step in &setup {
            println!("{step}  # {}", step.why());
        }
        println!("# IRQ numbers as of now; apply re-reads them after ethtool -L renumbers them");
        for step in tuning::irq_steps(&plan, None) {
            println!("{step}  # {}", step.why());
        }
        return Ok(());
    }
    if source.sysfs_root != Path::new("/") {
        bail!(
            "refusing to apply to this machine a plan made from {}; use --dry-run",
            source.sysfs_root.display()
        );
    }
    let mut failed = 0usize;
    let mut run = |step: &tuning::Step| {
        println!("{step}");
        if let Err(e) = step.run() {
            eprintln!("failed: {e}");
            failed += 1;
        }
    };
    setup.iter().for_each(&mut run);
    // Queue counts changed: the drivers requested their vectors again. Read the IRQs afresh.
    let fresh = read_host(&source.sysfs_root)?;
    tuning::irq_steps(&plan, Some(&fresh))
        .iter()
        .for_each(&mut run);
    if failed > 0 {
        bail!("{failed} step(s) failed (see above); the others were applied");
    }
    Ok(())
}

fn print_host(host: &Host) {
    println!(
        "root      {}\nkernel    {}\nmemory    {} bytes\nCPUs      {} online, {} possible",
        host.root.display(),
        host.kernel_release.as_deref().unwrap_or("unknown"),
        host.mem_total_bytes,
        host.cpus.len(),
        host.possible_cpus
    );
    for node in &host.nodes {
        println!(
            "node {:<4} cpu {}",
            node.id,
            sluice_hardware::format_cpulist(&node.cpus)
        );
    }
    println!(
        "\n{:>4} {:>7} {:>4} {:>4}  siblings",
        "cpu", "package", "core", "node"
    );
    for c in &host.cpus {
        println!(
            "{:>4} {:>7} {:>4} {:>4}  {}",
            c.id,
            c.package,
            c.core_id,
            c.node,
            sluice_hardware::format_cpulist(&c.siblings)
        );
    }
    println!(
        "\n{:<10} {:<11} {:>4} {:>5} {:>5} {:>6} {:>5}  {:<17} xdp",
        "port", "driver", "node", "rx-q", "tx-q", "Mb/s", "mtu", "address"
    );
    for n in &host.nics {
        println!(
            "{:<10} {:<11} {:>4} {:>5} {:>5} {:>6} {:>5}  {:<17} {}",
            n.name,
            n.driver.as_deref().unwrap_or("?"),
            n.numa_node.map_or("?".into(), |v| v.to_string()),
            n.rx_queues,
            n.tx_queues,
            n.speed_mbps.map_or("?".into(), |v| v.to_string()),
            n.mtu.map_or("?".into(), |v| v.to_string()),
            n.address.as_deref().unwrap_or("?"),
            n.xdp.basis
        );
    }
    if !host.skipped_ifaces.is_empty() {
        println!("skipped (virtual): {}", host.skipped_ifaces.join(", "));
    }
    for note in &host.notes {
        println!("note: {note}");
    }
}
