//! What the suite's parts print (their last stdout line), and the results of one whole run.
//!
//! The streams parts are this binary's own `SweepReport` / `StreamsReport`. The calls and
//! REGISTER parts follow the contract of `sluice-bench calls|register --sweep --against kamailio
//! --json`: `{"sluice": CallsReport, "kamailio": CallsReport}`. Those structs are read
//! tolerantly (missing keys take defaults, unknown keys are ignored, a count given as null or as
//! a float still reads) so that the report survives the other side's additions.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::report::StreamsReport;
use crate::sweep::SweepReport;

use super::machine::Machine;

/// A count that may arrive as an integer, a float or null (null reads as 0).
fn lenient_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = Option::<serde_json::Number>::deserialize(d)?;
    Ok(n.and_then(|n| {
        n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        })
    })
    .unwrap_or(0))
}

/// One offered rate of a calls or REGISTER sweep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallsStep {
    /// Offered calls (or REGISTERs) per second.
    pub rate: f64,
    /// Calls attempted.
    #[serde(deserialize_with = "lenient_count")]
    pub attempted: u64,
    /// Calls that succeeded.
    #[serde(deserialize_with = "lenient_count")]
    pub succeeded: u64,
    /// Calls that failed.
    #[serde(deserialize_with = "lenient_count")]
    pub failed: u64,
    /// `failed / attempted`.
    pub failed_ratio: f64,
    /// SIP retransmissions SIPp counted.
    #[serde(deserialize_with = "lenient_count")]
    pub retransmissions: u64,
    /// Median response time, milliseconds.
    pub response_time_p50_ms: Option<f64>,
    /// 99th percentile response time, milliseconds.
    pub response_time_p99_ms: Option<f64>,
    /// CPU seconds of the proxy (and its relay) during the step.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds` per successful call, microseconds.
    pub cpu_per_call_us: Option<f64>,
    /// CDRs written for the step (Sluice only).
    pub cdrs: Option<u64>,
    /// SIPp could not keep the rate: the step measures the load generator.
    pub generator_behind: bool,
}

impl CallsStep {
    /// Whether the step ran clean, as the calls sweep judges it.
    pub fn clean(&self, max_failed_ratio: f64) -> bool {
        self.attempted > 0 && self.failed_ratio < max_failed_ratio && !self.generator_behind
    }
}

/// One target's calls or REGISTER sweep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallsReport {
    /// `sluice` or `kamailio`.
    pub target: String,
    /// The SIPp scenario.
    pub scenario: String,
    /// Seconds per step.
    pub duration_s: f64,
    /// The failed ratio a clean step stays within.
    pub max_failed_ratio: f64,
    /// Every step, in order.
    pub steps: Vec<CallsStep>,
    /// The highest rate that ran clean.
    pub max_clean_rate: Option<f64>,
    /// The proxy's resident memory at the end, bytes.
    pub proxy_rss_bytes: Option<u64>,
    /// Why the sweep ended, when the part says.
    pub stopped: Option<String>,
}

impl CallsReport {
    /// The step at the highest clean rate (the first step when none was clean).
    pub fn best_step(&self) -> Option<&CallsStep> {
        let clean = self.max_clean_rate.and_then(|rate| {
            self.steps
                .iter()
                .rev()
                .find(|s| (s.rate - rate).abs() < 1e-9)
        });
        clean.or_else(|| self.steps.first())
    }
}

/// Sluice and Kamailio (with rtpengine) at the same offered rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallsVersus {
    /// Through `sluice run`.
    pub sluice: Option<CallsReport>,
    /// Through Kamailio (with rtpengine for calls).
    pub kamailio: Option<CallsReport>,
}

/// Sluice (`sluice relay`, XDP, over ng) against rtpengine, both swept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamsVersus {
    /// Sluice's sweep.
    pub sluice: SweepReport,
    /// rtpengine's sweep.
    pub rtpengine: SweepReport,
}

/// One part of the suite: the command as run, how long it took, and its result or why there is
/// none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part<T> {
    /// The command line, as run.
    pub command: String,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// What it printed, when it succeeded (a missing key reads as `None`).
    pub result: Option<T>,
    /// Why there is no result: failed, timed out, not available, skipped.
    pub error: Option<String>,
}

impl<T> Part<T> {
    /// The result, if the part succeeded.
    pub fn ok(&self) -> Option<&T> {
        self.result.as_ref()
    }
}

/// Everything one `sluice-bench report` run measured (saved as `results.json`, from which the
/// report can be rendered again).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SuiteResults {
    /// A `--quick` smoke run: figures not meaningful.
    pub quick: bool,
    /// The machine, at the start.
    pub machine: Machine,
    /// Load average (1, 5, 15 min) at the end.
    pub load_end: Option<[f64; 3]>,
    /// When the run ended (RFC 3339, UTC).
    pub finished_at: String,
    /// Wall-clock seconds of the whole run.
    pub elapsed_s: f64,
    /// The budget the run was given, seconds.
    pub budget_s: f64,
    /// The streams sweep of each Sluice backend with in-process rules, keyed by backend.
    pub sweeps: BTreeMap<String, Part<SweepReport>>,
    /// Sluice (XDP, over ng) against rtpengine.
    pub rtpengine: Option<Part<StreamsVersus>>,
    /// Every backend at the latency stream count, keyed by backend.
    pub latency: Option<Part<BTreeMap<String, StreamsReport>>>,
    /// No relay at the same stream count: the kernel routes (the latency baseline).
    pub baseline: Option<Part<StreamsReport>>,
    /// Calls per second, Sluice against Kamailio with rtpengine.
    pub calls: Option<Part<CallsVersus>>,
    /// REGISTERs per second, Sluice against Kamailio.
    pub register: Option<Part<CallsVersus>>,
}

/// The Sluice backends in the order the report shows them.
pub const BACKENDS: [&str; 3] = ["xdp", "afxdp", "sockets"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_contract_reads_tolerantly() {
        let line = r#"{"sluice": {"target": "sluice", "scenario": "uac", "duration_s": 10,
            "max_failed_ratio": 0.01, "steps": [
              {"rate": 50, "attempted": 500, "succeeded": 500, "failed": 0, "failed_ratio": 0.0,
               "retransmissions": 3, "response_time_p50_ms": 1.5, "response_time_p99_ms": null,
               "cpu_seconds": 0.8, "cpu_per_call_us": 1600.0, "cdrs": 500, "new_key": true},
              {"rate": 100, "attempted": 1000.0, "succeeded": 990, "failed": null,
               "failed_ratio": 0.01}],
            "max_clean_rate": 100, "proxy_rss_bytes": 1048576, "extra": [1, 2]},
          "kamailio": {"target": "kamailio", "steps": []}}"#;
        let v: CallsVersus = serde_json::from_str(line).expect("reads");
        let s = v.sluice.expect("sluice");
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[1].attempted, 1000);
        assert_eq!(s.steps[1].failed, 0);
        assert_eq!(s.steps[0].response_time_p99_ms, None);
        assert_eq!(s.max_clean_rate, Some(100.0));
        assert_eq!(s.best_step().map(|b| b.rate), Some(100.0));
        let k = v.kamailio.expect("kamailio");
        assert_eq!(k.max_clean_rate, None);
        assert!(k.best_step().is_none());
    }

    #[test]
    fn results_round_trip() {
        let r = SuiteResults {
            quick: true,
            calls: Some(Part {
                command: "sluice-bench calls".into(),
                elapsed_s: 1.0,
                result: None,
                error: Some("unrecognized subcommand".into()),
            }),
            ..SuiteResults::default()
        };
        let text = serde_json::to_string(&r).expect("json");
        let back: SuiteResults = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, r);
    }
}
