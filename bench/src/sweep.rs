//! `sluice-bench streams --sweep`: the stream count grows step by step until the loss crosses a
//! threshold or the generator cannot keep up, and the result is the largest clean count.
//!
//! Every step is a whole run of its own (fresh namespaces, relay and streams), so a step's
//! numbers do not depend on the ones before it. A step is clean when its loss ratio is at most
//! the threshold and the generator kept its schedule. The sweep stops at the first step that is
//! not clean, at `--max`, or before a step that would end past `--max-time`; `limit` says which,
//! and `generator` means the load generator, not the relay, was the bottleneck.

use std::fmt;
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::cli::StreamsArgs;
use crate::report::{mib, ns, opt_f, StreamsReport};

/// Why a sweep ended.
pub mod limit {
    /// A step lost more than the threshold: the relay's limit.
    pub const RELAY: &str = "relay";
    /// The generator fell behind its schedule: the load generator's limit, not the relay's.
    pub const GENERATOR: &str = "generator";
    /// `--max` was reached clean.
    pub const MAX: &str = "max";
    /// The next step would have ended past `--max-time`.
    pub const TIME: &str = "time";
}

/// A sweep's result (or a single run's, as a one-step sweep): the keys of the streams report
/// of the largest clean step (the first step when none was clean), plus the sweep's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// The largest clean step's report (the first step's when none was clean).
    #[serde(flatten)]
    pub best: StreamsReport,
    /// The largest stream count that ran clean (0 when none did).
    pub max_clean_streams: u64,
    /// Why the sweep ended: `relay`, `generator`, `max` or `time` (see [`limit`]).
    pub limit: String,
    /// The loss ratio a clean step stays within.
    pub loss_threshold: f64,
    /// Every step, in order.
    pub steps: Vec<StreamsReport>,
    /// Wall-clock seconds the sweep took.
    pub elapsed_s: f64,
}

/// Whether a step is clean.
pub fn clean(report: &StreamsReport, threshold: f64) -> bool {
    report.loss_ratio <= threshold && !report.generator_saturated && report.sent > 0
}

/// The stream counts a sweep tries, at most: `start`, then times `factor` (at least one more
/// each time), up to `max` (the last step is `max` itself).
pub fn plan(start: u32, factor: f64, max: u32) -> Vec<u32> {
    let mut counts = vec![start.min(max)];
    while let Some(&last) = counts.last() {
        if last >= max {
            break;
        }
        let next = ((f64::from(last) * factor).ceil() as u64).max(u64::from(last) + 1);
        counts.push(next.min(u64::from(max)) as u32);
    }
    counts
}

impl SweepReport {
    /// Builds the result from the steps run, and why it stopped.
    pub fn from_steps(
        steps: Vec<StreamsReport>,
        limit: &str,
        threshold: f64,
        elapsed_s: f64,
    ) -> Self {
        let best = steps
            .iter()
            .filter(|r| clean(r, threshold))
            .max_by_key(|r| r.streams)
            .or_else(|| steps.first())
            .cloned()
            .expect("a sweep runs at least one step");
        let max_clean_streams = steps
            .iter()
            .filter(|r| clean(r, threshold))
            .map(|r| r.streams)
            .max()
            .unwrap_or(0);
        Self {
            best,
            max_clean_streams,
            limit: limit.to_owned(),
            loss_threshold: threshold,
            steps,
            elapsed_s,
        }
    }

    /// A single run as a one-step sweep.
    pub fn single(report: StreamsReport, threshold: f64) -> Self {
        let limit = if report.generator_saturated {
            limit::GENERATOR
        } else if clean(&report, threshold) {
            limit::MAX
        } else {
            limit::RELAY
        };
        Self::from_steps(vec![report], limit, threshold, 0.0)
    }

    /// When the generator fell behind, how much of the host's CPU the relay took meanwhile: a
    /// relay that takes what the generator needs starves it on a small host.
    pub fn cpu_note(&self) -> Option<String> {
        if self.limit != limit::GENERATOR {
            return None;
        }
        let last = self.steps.last()?;
        let relay = last.relay_cpu_s? / last.duration_s.max(1e-9);
        let generator = last.generator_cpu_s / last.duration_s.max(1e-9);
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        Some(format!(
            "at {} streams the relay used {relay:.2} CPUs and the generator {generator:.2} of {cpus}",
            last.streams
        ))
    }

    /// What `limit` means, in words.
    pub fn limit_text(&self) -> &'static str {
        match self.limit.as_str() {
            limit::RELAY => "the relay (loss over the threshold)",
            limit::GENERATOR => "the load generator (it fell behind; not the relay's limit)",
            limit::MAX => "--max reached clean",
            limit::TIME => "--max-time (the next step would not have finished in time)",
            _ => "unknown",
        }
    }
}

/// Runs a sweep with `measure` for each step (called with the args and the step's count), up to
/// `--max` or `cap` (the most streams the mode's port plan holds), whichever is lower.
pub fn run(
    args: &StreamsArgs,
    cap: u32,
    mut measure: impl FnMut(&StreamsArgs) -> Result<StreamsReport>,
) -> Result<SweepReport> {
    if args.step_factor.is_nan() || args.step_factor < 1.0 {
        anyhow::bail!("--step-factor {}: at least 1", args.step_factor);
    }
    let max = args.max.min(cap);
    if max < args.max {
        tracing::warn!(
            max,
            "--max {} lowered to what the port plan holds",
            args.max
        );
    }
    let started = Instant::now();
    let mut steps: Vec<StreamsReport> = Vec::new();
    let mut stop = limit::MAX;
    for count in plan(args.start, args.step_factor, max) {
        // Setting up and tearing down costs a few seconds beyond the send duration; scale the
        // previous step's overhead by the growth in streams.
        let overhead = steps.last().map_or(3.0, |r| {
            3.0 + r.setup_s * f64::from(count) / r.streams.max(1) as f64
        });
        let projected = started.elapsed().as_secs_f64() + args.duration as f64 + overhead;
        if !steps.is_empty() && projected > args.max_time as f64 {
            stop = limit::TIME;
            break;
        }
        let step = StreamsArgs {
            streams: count,
            ..args.clone()
        };
        tracing::info!(streams = count, "sweep step");
        let report = measure(&step)?;
        tracing::info!(
            streams = count,
            loss = report.loss_ratio,
            saturated = report.generator_saturated,
            "sweep step done"
        );
        let saturated = report.generator_saturated;
        let ok = clean(&report, args.loss_threshold);
        steps.push(report);
        if saturated {
            stop = limit::GENERATOR;
            break;
        }
        if !ok {
            stop = limit::RELAY;
            break;
        }
        // Let the step's namespaces, workers and softirqs wind down.
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Ok(SweepReport::from_steps(
        steps,
        stop,
        args.loss_threshold,
        started.elapsed().as_secs_f64(),
    ))
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sweep: relay {} ({} setup), backend {}, generator {}, loss threshold {}%",
            self.best.relay,
            self.best.setup,
            self.best.backend,
            self.best.generator,
            self.loss_threshold * 100.0
        )?;
        writeln!(
            f,
            "{:>8} {:>9} {:>7} {:>7} {:>7} {:>9} {:>8} {:>8} {:>9} {:>8} {:>7}",
            "streams",
            "loss %",
            "p50 us",
            "p99 us",
            "p99.9",
            "relay ns",
            "gen cpu",
            "rly cpu",
            "rss MiB",
            "maps MiB",
            "clean"
        )?;
        for r in &self.steps {
            writeln!(
                f,
                "{:>8} {:>9.4} {:>7} {:>7} {:>7} {:>9} {:>8.3} {:>8} {:>9} {:>8} {:>7}",
                r.streams,
                r.loss_ratio * 100.0,
                r.latency_us.p50,
                r.latency_us.p99,
                r.latency_us.p999,
                ns(r.relay_ns_per_packet),
                r.generator_cpu_s,
                opt_f(r.relay_cpu_s, 3),
                mib(r.relay_rss_bytes),
                mib(r.bpf_map_bytes),
                if r.generator_saturated {
                    "gen-sat".to_owned()
                } else {
                    clean(r, self.loss_threshold).to_string()
                }
            )?;
        }
        writeln!(f, "max clean streams: {}", self.max_clean_streams)?;
        writeln!(f, "stopped by: {}", self.limit_text())?;
        if let Some(note) = self.cpu_note() {
            writeln!(f, "{note}")?;
        }
        Ok(())
    }
}

/// Sluice and the reference relay side by side, with the ratio sluice / reference.
pub fn versus(sluice: &SweepReport, other: &SweepReport, other_name: &str) -> String {
    type Row = (&'static str, fn(&SweepReport) -> Option<f64>, usize);
    let rows: [Row; 16] = [
        ("max clean streams", |r| Some(r.max_clean_streams as f64), 0),
        ("at streams", |r| Some(r.best.streams as f64), 0),
        ("sent", |r| Some(r.best.sent as f64), 0),
        ("rate pps achieved", |r| Some(r.best.achieved_pps), 0),
        ("loss %", |r| Some(r.best.loss_ratio * 100.0), 4),
        ("relay ns/packet", |r| r.best.relay_ns_per_packet, 1),
        ("relay cpu s", |r| r.best.relay_cpu_s, 3),
        (
            "relay CPUs busy",
            |r| r.best.relay_cpu_s.map(|c| c / r.best.duration_s),
            2,
        ),
        ("generator cpu s", |r| Some(r.best.generator_cpu_s), 3),
        ("latency us p50", |r| Some(r.best.latency_us.p50 as f64), 0),
        ("latency us p99", |r| Some(r.best.latency_us.p99 as f64), 0),
        (
            "latency us p99.9",
            |r| Some(r.best.latency_us.p999 as f64),
            0,
        ),
        (
            "relay rss MiB",
            |r| r.best.relay_rss_bytes.map(|b| b as f64 / 1048576.0),
            1,
        ),
        (
            "rss KiB/call",
            |r| r.best.rss_per_call_bytes.map(|b| b / 1024.0),
            1,
        ),
        (
            "bpf maps MiB",
            |r| r.best.bpf_map_bytes.map(|b| b as f64 / 1048576.0),
            1,
        ),
        (
            "bpf maps KiB/call",
            |r| r.best.bpf_map_per_call_bytes.map(|b| b / 1024.0),
            1,
        ),
    ];
    let mut out = format!(
        "{:<22}{:>14}{:>14}{:>10}\n",
        "", "sluice", other_name, "ratio"
    );
    out.push_str(&format!(
        "{:<22}{:>14}{:>14}{:>10}\n",
        "backend", sluice.best.backend, other.best.backend, ""
    ));
    out.push_str(&format!(
        "{:<22}{:>14}{:>14}{:>10}\n",
        "generator", sluice.best.generator, other.best.generator, ""
    ));
    for (name, value, digits) in rows {
        let (a, b) = (value(sluice), value(other));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
            _ => "n/a".to_owned(),
        };
        out.push_str(&format!(
            "{name:<22}{:>14}{:>14}{ratio:>10}\n",
            opt_f(a, digits),
            opt_f(b, digits)
        ));
    }
    out.push_str(&format!(
        "{:<22}{:>14}{:>14}\n",
        "stopped by", sluice.limit, other.limit
    ));
    for (name, r) in [("sluice", sluice), (other_name, other)] {
        if let Some(note) = r.cpu_note() {
            out.push_str(&format!("{name}: the generator fell behind; {note}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_steps() {
        assert_eq!(plan(500, 2.0, 16_000), [500, 1000, 2000, 4000, 8000, 16000]);
        assert_eq!(plan(20, 2.0, 40), [20, 40]);
        assert_eq!(plan(20, 1.0, 23), [20, 21, 22, 23]);
        assert_eq!(plan(100, 2.0, 50), [50]);
        assert_eq!(plan(500, 3.0, 2000), [500, 1500, 2000]);
    }
}
