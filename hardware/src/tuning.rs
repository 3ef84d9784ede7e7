//! Turning a plan's tuning into commands, and running them.
//!
//! Two phases, because changing a port's queue count makes the driver free and request its
//! interrupt vectors again, which renumbers them: first queue counts, rings and sysctls
//! ([`setup_steps`]); then, from a fresh read of `/proc/interrupts`, the IRQ affinities
//! ([`irq_steps`]). A dry run prints the IRQ steps from the IRQ numbers as they are now.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use crate::error::HwError;
use crate::host::Host;
use crate::plan::CorePlan;

/// One step of applying a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run a program with arguments.
    Run {
        /// The program (`ethtool`, `sysctl`).
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// Why, for the reader.
        why: String,
    },
    /// Write a value to a file (`/proc/irq/N/smp_affinity_list`).
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// Why.
        why: String,
    },
}

impl Step {
    fn run_cmd(program: &str, args: &[String], why: impl Into<String>) -> Step {
        Step::Run {
            program: program.to_owned(),
            args: args.to_vec(),
            why: why.into(),
        }
    }

    /// Why the step is there.
    pub fn why(&self) -> &str {
        match self {
            Step::Run { why, .. } | Step::Write { why, .. } => why,
        }
    }

    /// Runs the step. A failure names the step and quotes the program's stderr or the OS error.
    pub fn run(&self) -> Result<(), HwError> {
        let fail = |reason: String| HwError::Apply {
            step: self.to_string(),
            reason,
        };
        match self {
            Step::Run { program, args, .. } => {
                let out = Command::new(program)
                    .args(args)
                    .output()
                    .map_err(|e| fail(e.to_string()))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(fail(format!(
                        "{}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )))
                }
            }
            Step::Write { path, value, .. } => {
                std::fs::write(path, format!("{value}\n")).map_err(|e| fail(e.to_string()))
            }
        }
    }
}

impl fmt::Display for Step {
    /// The step as a shell command.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run { program, args, .. } => {
                write!(f, "{program}")?;
                for a in args {
                    write!(f, " {a}")?;
                }
                Ok(())
            }
            Step::Write { path, value, .. } => write!(f, "echo {value} > {}", path.display()),
        }
    }
}

/// Queue counts, ring sizes and sysctls.
pub fn setup_steps(plan: &CorePlan) -> Vec<Step> {
    let mut steps = Vec::new();
    for (iface, n) in &plan.tuning.channels {
        steps.push(Step::run_cmd(
            "ethtool",
            &["-L".into(), iface.clone(), "combined".into(), n.to_string()],
            format!("{n} queue(s), one per worker"),
        ));
    }
    for r in &plan.tuning.rings {
        steps.push(Step::run_cmd(
            "ethtool",
            &[
                "-G".into(),
                r.iface.clone(),
                "rx".into(),
                r.rx.to_string(),
                "tx".into(),
                r.tx.to_string(),
            ],
            "NIC ring sizes",
        ));
    }
    for s in &plan.tuning.sysctls {
        steps.push(Step::run_cmd(
            "sysctl",
            &["-w".into(), format!("{}={}", s.key, s.value)],
            s.why.clone(),
        ));
    }
    steps
}

/// IRQ affinities. With `fresh` (the host re-read after [`setup_steps`] ran), the IRQ numbers are
/// looked up again by port and queue; otherwise the plan's are used.
pub fn irq_steps(plan: &CorePlan, fresh: Option<&Host>) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut push = |irq: u32, iface: &str, queue: u32, cpu: usize| {
        steps.push(Step::Write {
            path: PathBuf::from(format!("/proc/irq/{irq}/smp_affinity_list")),
            value: cpu.to_string(),
            why: format!("{iface} queue {queue} interrupts on its worker's CPU"),
        });
    };
    match fresh {
        None => {
            for a in &plan.tuning.irq_affinity {
                push(a.irq, &a.iface, a.queue, a.cpu);
            }
        }
        Some(host) => {
            for w in &plan.workers {
                let Some(nic) = host.nic(&w.iface) else {
                    continue;
                };
                for &irq in nic.queue_irqs.get(&w.queue).into_iter().flatten() {
                    push(irq, &w.iface, w.queue, w.core);
                }
            }
        }
    }
    steps
}
