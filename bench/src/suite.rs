//! `sluice-bench report`: the whole benchmark suite in one command.
//!
//! Each part runs as a subprocess of this same binary (`streams ... --json`, `calls ...`,
//! `register ...`), bounded by a timeout that is its share of the budget; its last stdout line is
//! its result. A part that fails, times out or does not exist yet leaves its error in the report
//! instead of stopping the run. From the results come `docs/benchmarks.md` (tables, the machine,
//! how to reproduce each figure, where Sluice is not ahead), its SVG plots in
//! `docs/benchmarks/`, the raw results (`docs/benchmarks/results.json`, from which
//! `--from-results` renders again), the headline figures (`docs/benchmarks.json`) and the
//! README's headline block.

mod data;
mod machine;
mod markdown;
mod plots;
mod runner;
mod summary;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use anyhow::{Context, Result};

pub use data::{CallsReport, CallsStep, CallsVersus, Part, StreamsVersus, SuiteResults};
pub use machine::Machine;
pub use summary::{Headline, README_END, README_START};

use crate::cli::{ReportArgs, SuitePart};

/// A part is not started with less than this left of the budget.
const MIN_PART: Duration = Duration::from_secs(15);

/// Where one job's result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Sweep(&'static str),
    Rtpengine,
    Latency,
    Baseline,
    Calls,
    Register,
}

/// One subprocess of the suite.
#[derive(Debug, Clone, PartialEq)]
struct Job {
    slot: Slot,
    part: SuitePart,
    label: String,
    args: Vec<String>,
    timeout: Duration,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The jobs of a run, in order, with their arguments and timeouts. A full run's shares of the
/// budget: the three sweeps 9% each, against rtpengine 18%, latency 7% and its baseline 3%,
/// calls 27%, REGISTERs 18%; the streams sweeps stop themselves (`--max-time`) before their
/// timeout.
fn plan(quick: bool, budget: Duration) -> Vec<Job> {
    let share = |fraction: f64| Duration::from_secs_f64(budget.as_secs_f64() * fraction);
    let secs = |d: Duration| d.as_secs().to_string();
    let mut jobs = Vec::new();
    // Sweeps: steps of 5 s from 500 streams doubling (quick: 50 and 100 streams, 1 s).
    for backend in ["xdp", "afxdp", "sockets"] {
        let (timeout, max_time) = if quick {
            (Duration::from_secs(60), Duration::from_secs(30))
        } else {
            let t = share(0.09);
            (
                t,
                t.saturating_sub(Duration::from_secs(25))
                    .max(Duration::from_secs(20)),
            )
        };
        let mut a = args(&["streams", "--backend", backend, "--sweep"]);
        a.extend(args(if quick {
            &[
                "--start",
                "50",
                "--step-factor",
                "2",
                "--max",
                "100",
                "--duration",
                "1",
            ]
        } else {
            &[
                "--start",
                "500",
                "--step-factor",
                "2",
                "--max",
                "16000",
                "--duration",
                "5",
            ]
        }));
        a.extend(["--max-time".to_owned(), secs(max_time), "--json".to_owned()]);
        jobs.push(Job {
            slot: Slot::Sweep(backend),
            part: SuitePart::Streams,
            label: format!("streams-{backend}"),
            args: a,
            timeout,
        });
    }
    // Against rtpengine: each side's sweep has half the share.
    let (timeout, max_time) = if quick {
        (Duration::from_secs(90), Duration::from_secs(30))
    } else {
        let t = share(0.18);
        (
            t,
            (t / 2)
                .saturating_sub(Duration::from_secs(20))
                .max(Duration::from_secs(20)),
        )
    };
    let mut a = args(&[
        "streams",
        "--backend",
        "xdp",
        "--setup",
        "ng",
        "--against",
        "rtpengine",
        "--sweep",
    ]);
    a.extend(args(if quick {
        &[
            "--start",
            "50",
            "--step-factor",
            "2",
            "--max",
            "100",
            "--duration",
            "1",
        ]
    } else {
        &[
            "--start",
            "250",
            "--step-factor",
            "2",
            "--max",
            "8000",
            "--duration",
            "5",
        ]
    }));
    a.extend(["--max-time".to_owned(), secs(max_time), "--json".to_owned()]);
    jobs.push(Job {
        slot: Slot::Rtpengine,
        part: SuitePart::Rtpengine,
        label: "rtpengine".to_owned(),
        args: a,
        timeout,
    });
    // Latency: every backend, then no relay, at the same count.
    let (streams, duration) = if quick { ("200", "2") } else { ("2000", "10") };
    jobs.push(Job {
        slot: Slot::Latency,
        part: SuitePart::Latency,
        label: "latency".to_owned(),
        args: args(&[
            "streams",
            "--backend",
            "all",
            "--streams",
            streams,
            "--duration",
            duration,
            "--json",
        ]),
        timeout: if quick {
            Duration::from_secs(60)
        } else {
            share(0.07)
        },
    });
    jobs.push(Job {
        slot: Slot::Baseline,
        part: SuitePart::Latency,
        label: "baseline".to_owned(),
        args: args(&[
            "streams",
            "--backend",
            "none",
            "--streams",
            streams,
            "--duration",
            duration,
            "--json",
        ]),
        timeout: if quick {
            Duration::from_secs(30)
        } else {
            share(0.03)
        },
    });
    // SIP: `sluice-bench calls|register --sweep --against kamailio --duration S --json`, up
    // their rate ladders (quick: the first two rungs).
    for (slot, part, name, fraction, quick_max_rate) in [
        (Slot::Calls, SuitePart::Calls, "calls", 0.27, "100"),
        (Slot::Register, SuitePart::Register, "register", 0.18, "200"),
    ] {
        let mut a = args(&[name, "--sweep", "--against", "kamailio"]);
        if quick {
            a.extend(args(&["--duration", "2", "--max-rate", quick_max_rate]));
        } else {
            a.extend(args(&["--duration", "5"]));
        }
        a.push("--json".to_owned());
        jobs.push(Job {
            slot,
            part,
            label: name.to_owned(),
            args: a,
            timeout: if quick {
                Duration::from_secs(90)
            } else {
                share(fraction)
            },
        });
    }
    jobs
}

/// `sluice-bench report`.
pub fn run(args: &ReportArgs) -> Result<()> {
    let results = match &args.from_results {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => measure(args)?,
    };
    let headline = write_report(&results, &args.out)?;
    let link = relative_link(&args.out, &args.readme);
    let lines = summary::readme_lines(&headline, &link);
    if !args.no_readme {
        update_readme(&args.readme, &lines);
    }
    println!("{}", lines.join("\n"));
    Ok(())
}

/// Runs every job not skipped, within the budget.
fn measure(args: &ReportArgs) -> Result<SuiteResults> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let program = display_program(&exe);
    let budget = Duration::from_secs(args.budget_minutes * 60);
    let started = Instant::now();
    // The parts run in process groups of their own, out of reach of the terminal's Ctrl-C: a
    // first SIGINT or SIGTERM stops the running part (and its relays and namespaces) and the
    // report, a second one this process at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&interrupted))
            .context("installing a signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("installing a signal handler")?;
    }
    let mut results = SuiteResults {
        quick: args.quick,
        machine: machine::describe(exe.parent()),
        budget_s: budget.as_secs_f64(),
        ..SuiteResults::default()
    };
    // A full run's part may use what the parts before it left of their shares: it runs until
    // the budget's running total of shares, its own included.
    let mut allotted = Duration::ZERO;
    for (i, job) in plan(args.quick, budget).into_iter().enumerate() {
        let command = format!("{program} {}", job.args.join(" "));
        allotted += job.timeout;
        let remaining = budget.saturating_sub(started.elapsed());
        let own = if args.quick {
            job.timeout
        } else {
            allotted.saturating_sub(started.elapsed())
        };
        let skipped = if args.skip.contains(&job.part) {
            Some("skipped (--skip)".to_owned())
        } else if remaining < MIN_PART {
            Some(format!(
                "skipped: the {}-minute budget was used up",
                args.budget_minutes
            ))
        } else {
            None
        };
        let timeout = own.min(remaining);
        let store = |results: &mut SuiteResults, finished: Option<&runner::Finished>, error| {
            store(results, job.slot, &command, finished, timeout, error)
        };
        if let Some(why) = skipped {
            tracing::info!(part = job.label, "{why}");
            store(&mut results, None, Some(why));
            continue;
        }
        if i > 0 {
            // Let the previous part's namespaces, workers and softirqs wind down.
            std::thread::sleep(Duration::from_secs(1));
        }
        tracing::info!(
            part = job.label,
            timeout_s = timeout.as_secs(),
            "running: {command}"
        );
        match runner::run_bounded(&exe, &job.args, timeout, &job.label, &interrupted) {
            Ok(finished) => {
                if let Err(e) = finished.json::<serde_json::Value>(timeout) {
                    tracing::warn!(part = job.label, "failed: {e}");
                }
                store(&mut results, Some(&finished), None)
            }
            Err(e) => store(&mut results, None, Some(format!("could not start: {e}"))),
        }
        if interrupted.load(Ordering::Relaxed) {
            anyhow::bail!("interrupted during {}: no report written", job.label);
        }
    }
    results.load_end = machine::load_average();
    results.finished_at = machine::now_rfc3339();
    results.elapsed_s = started.elapsed().as_secs_f64();
    Ok(results)
}

/// Puts one job's outcome in its slot.
fn store(
    results: &mut SuiteResults,
    slot: Slot,
    command: &str,
    finished: Option<&runner::Finished>,
    timeout: Duration,
    error: Option<String>,
) {
    fn part<T: serde::de::DeserializeOwned>(
        command: &str,
        finished: Option<&runner::Finished>,
        timeout: Duration,
        error: Option<String>,
    ) -> Part<T> {
        let (result, error) = match (finished, error) {
            (_, Some(e)) => (None, Some(e)),
            (Some(f), None) => match f.json::<T>(timeout) {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e)),
            },
            (None, None) => (None, Some("did not run".to_owned())),
        };
        Part {
            command: command.to_owned(),
            elapsed_s: finished.map_or(0.0, |f| f.elapsed.as_secs_f64()),
            result,
            error,
        }
    }
    match slot {
        Slot::Sweep(b) => {
            results
                .sweeps
                .insert(b.to_owned(), part(command, finished, timeout, error));
        }
        Slot::Rtpengine => results.rtpengine = Some(part(command, finished, timeout, error)),
        Slot::Latency => results.latency = Some(part(command, finished, timeout, error)),
        Slot::Baseline => results.baseline = Some(part(command, finished, timeout, error)),
        Slot::Calls => results.calls = Some(part(command, finished, timeout, error)),
        Slot::Register => results.register = Some(part(command, finished, timeout, error)),
    }
}

/// The binary as a reader would type it: relative to the working directory when inside it.
fn display_program(exe: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| exe.to_path_buf())
        .display()
        .to_string()
}

/// The plots' directory beside the markdown: `docs/benchmarks.md` → `docs/benchmarks/`.
fn plot_dir(out: &Path) -> PathBuf {
    out.with_extension("")
}

/// Writes the markdown, the plots, `results.json` and the headline JSON; returns the headline.
pub fn write_report(results: &SuiteResults, out: &Path) -> Result<Headline> {
    let dir = plot_dir(out);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "benchmarks".to_owned());
    let mut figures = markdown::Figures::default();
    for (file, svg) in render_plots(results)? {
        let path = dir.join(file);
        match svg {
            Some(svg) => {
                std::fs::write(&path, svg)
                    .with_context(|| format!("writing {}", path.display()))?;
                let link = format!("{dir_name}/{file}");
                match file {
                    STREAMS_SVG => figures.streams_vs_loss = Some(link),
                    LATENCY_SVG => figures.latency = Some(link),
                    CALLS_SVG => figures.calls = Some(link),
                    _ => figures.register = Some(link),
                }
            }
            // No stale plot from an earlier run next to a report without its data.
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let results_path = dir.join("results.json");
    std::fs::write(&results_path, serde_json::to_string_pretty(results)? + "\n")
        .with_context(|| format!("writing {}", results_path.display()))?;
    let headline = summary::headline(results);
    let md = markdown::render(results, &headline, &figures);
    std::fs::write(out, md).with_context(|| format!("writing {}", out.display()))?;
    let json = out.with_extension("json");
    std::fs::write(&json, serde_json::to_string_pretty(&headline)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    tracing::info!(report = %out.display(), plots = %dir.display(), "written");
    Ok(headline)
}

const STREAMS_SVG: &str = "streams-vs-loss.svg";
const LATENCY_SVG: &str = "latency.svg";
const CALLS_SVG: &str = "calls.svg";
const REGISTER_SVG: &str = "register.svg";

/// Every plot the report can have, `None` where the run has no data for it.
fn render_plots(results: &SuiteResults) -> Result<Vec<(&'static str, Option<String>)>> {
    let mut out = Vec::new();

    let mut series = Vec::new();
    let mut threshold = None;
    for b in data::BACKENDS {
        if let Some(s) = results.sweeps.get(b).and_then(Part::ok) {
            series.push((b.to_owned(), loss_points(s)));
            threshold.get_or_insert(s.loss_threshold);
        }
    }
    if let Some(v) = results.rtpengine.as_ref().and_then(Part::ok) {
        series.push((
            format!("sluice {} (ng)", v.sluice.best.backend),
            loss_points(&v.sluice),
        ));
        series.push(("rtpengine (ng)".to_owned(), loss_points(&v.rtpengine)));
        threshold.get_or_insert(v.sluice.loss_threshold);
    }
    out.push((
        STREAMS_SVG,
        match threshold {
            Some(t) => Some(plots::streams_vs_loss(&series, t * 100.0)?),
            None => None,
        },
    ));

    let reports = summary::latency_reports(results);
    let groups: Vec<(String, [u64; 3])> = reports
        .iter()
        .map(|(name, r)| {
            (
                summary::backend_name(name).to_owned(),
                [r.latency_us.p50, r.latency_us.p99, r.latency_us.p999],
            )
        })
        .collect();
    out.push((
        LATENCY_SVG,
        match reports.first() {
            Some((_, r)) => Some(plots::latency(&groups, r.streams)?),
            None => None,
        },
    ));

    for (file, part, title, x_desc) in [
        (
            CALLS_SVG,
            &results.calls,
            "Calls per second against failed calls",
            "offered calls per second",
        ),
        (
            REGISTER_SVG,
            &results.register,
            "REGISTERs per second against failed REGISTERs",
            "offered REGISTERs per second",
        ),
    ] {
        let plot = match part.as_ref().and_then(Part::ok) {
            Some(v) => {
                let sides: Vec<(String, Vec<(f64, f64)>)> = [
                    ("sluice", &v.sluice),
                    (
                        if file == CALLS_SVG {
                            "kamailio + rtpengine"
                        } else {
                            "kamailio"
                        },
                        &v.kamailio,
                    ),
                ]
                .into_iter()
                .filter_map(|(name, r)| {
                    let r = r.as_ref()?;
                    Some((
                        name.to_owned(),
                        r.steps
                            .iter()
                            .map(|s| (s.rate, s.failed_ratio * 100.0))
                            .collect(),
                    ))
                })
                .collect();
                let threshold = [&v.sluice, &v.kamailio]
                    .iter()
                    .find_map(|r| r.as_ref().map(|r| r.max_failed_ratio))
                    .unwrap_or(0.0);
                (!sides.is_empty())
                    .then(|| plots::rate_vs_failed(title, x_desc, &sides, threshold * 100.0))
                    .transpose()?
            }
            None => None,
        };
        out.push((file, plot));
    }
    Ok(out)
}

fn loss_points(sweep: &crate::sweep::SweepReport) -> Vec<plots::LossPoint> {
    sweep
        .steps
        .iter()
        .map(|r| plots::LossPoint {
            streams: r.streams,
            loss_percent: r.loss_ratio * 100.0,
            generator_saturated: r.generator_saturated,
        })
        .collect()
}

/// The report's path as a link from the README's directory.
fn relative_link(out: &Path, readme: &Path) -> String {
    let base = readme
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (std::fs::canonicalize(out), std::fs::canonicalize(base)) {
        (Ok(o), Ok(b)) => o
            .strip_prefix(&b)
            .map(Path::to_path_buf)
            .unwrap_or(o)
            .display()
            .to_string(),
        _ => out.display().to_string(),
    }
}

/// Rewrites the README's headline block; says why when it cannot, without failing the report.
fn update_readme(readme: &Path, lines: &[String]) {
    let text = match std::fs::read_to_string(readme) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("README not updated: {}: {e}", readme.display());
            return;
        }
    };
    match summary::replace_block(&text, lines) {
        Ok(new) if new == text => {}
        Ok(new) => match std::fs::write(readme, new) {
            Ok(()) => tracing::info!(readme = %readme.display(), "headline block rewritten"),
            Err(e) => tracing::warn!("README not updated: {}: {e}", readme.display()),
        },
        Err(why) => tracing::warn!("README not updated: {}: {why}", readme.display()),
    }
}

#[cfg(test)]
mod tests;
