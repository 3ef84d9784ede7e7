//! The headline figures of a run (`benchmarks.json`, the README block) and the findings where
//! Sluice is not ahead, all derived from the results alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::StreamsReport;
use crate::sweep::{self, SweepReport};

use super::data::{CallsReport, CallsVersus, Part, SuiteResults, BACKENDS};

/// The README's headline block opens with this line...
pub const README_START: &str = "<!-- bench:headline:start -->";
/// ...and closes with this one.
pub const README_END: &str = "<!-- bench:headline:end -->";

/// One relay's sweep, for the tables and the headline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamsLine {
    /// For people: `xdp`, `sluice xdp (ng)`, `rtpengine (ng)`.
    pub label: String,
    /// `sluice` or `rtpengine`.
    pub relay: String,
    /// The backend.
    pub backend: String,
    /// `direct` or `ng`.
    pub setup: String,
    /// The largest clean stream count.
    pub max_clean_streams: u64,
    /// The sweep stopped for another reason than the relay's loss, so the relay's limit is
    /// higher.
    pub lower_bound: bool,
    /// Why the sweep stopped.
    pub limit: String,
    /// The stream count the costs below were measured at.
    pub at_streams: u64,
    /// Relay cost per packet, ns.
    pub ns_per_packet: Option<f64>,
    /// Its kernel part (BPF run time), ns.
    pub kernel_ns_per_packet: Option<f64>,
    /// Its userspace part (threads or process CPU time), ns.
    pub user_ns_per_packet: Option<f64>,
}

impl StreamsLine {
    fn from_sweep(label: &str, sweep: &SweepReport) -> Self {
        Self {
            label: label.to_owned(),
            relay: sweep.best.relay.clone(),
            backend: sweep.best.backend.clone(),
            setup: sweep.best.setup.clone(),
            max_clean_streams: sweep.max_clean_streams,
            lower_bound: sweep.limit != sweep::limit::RELAY && sweep.max_clean_streams > 0,
            limit: sweep.limit.clone(),
            at_streams: sweep.best.streams,
            ns_per_packet: sweep.best.relay_ns_per_packet,
            kernel_ns_per_packet: sweep.best.relay_kernel_ns_per_packet,
            user_ns_per_packet: sweep.best.relay_user_ns_per_packet,
        }
    }

    /// `8 000` or `≥ 8 000`.
    pub fn count_text(&self) -> String {
        let n = group(self.max_clean_streams);
        if self.lower_bound {
            format!("≥ {n}")
        } else {
            n
        }
    }
}

/// Two targets' highest clean rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RatePair {
    /// Through Sluice.
    pub sluice: Option<f64>,
    /// Through Kamailio.
    pub kamailio: Option<f64>,
}

/// The figures a reader looks for first (`benchmarks.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Headline {
    /// When the run ended.
    pub generated_at: String,
    /// The commit measured.
    pub commit: String,
    /// A `--quick` smoke run.
    pub quick: bool,
    /// `release` or `debug`.
    pub build: String,
    /// CPU, cores, memory, kernel.
    pub machine: String,
    /// The loss ratio a clean step stays within.
    pub loss_threshold: Option<f64>,
    /// One line per swept relay.
    pub streams: Vec<StreamsLine>,
    /// Sluice's (XDP, over ng) largest clean stream count over rtpengine's.
    pub streams_ratio_vs_rtpengine: Option<f64>,
    /// The stream count latency was measured at.
    pub latency_streams: Option<u64>,
    /// p50, p99, p99.9 one-way latency per backend (`none` is the baseline), microseconds.
    pub latency_us: BTreeMap<String, [u64; 3]>,
    /// The same less the baseline's.
    pub added_latency_us: BTreeMap<String, [i64; 3]>,
    /// Highest clean calls per second.
    pub calls_per_s: RatePair,
    /// Highest clean REGISTERs per second.
    pub register_per_s: RatePair,
}

/// `StreamsLine::limit` when the largest clean count comes from the latency run, not the sweep.
pub const LATENCY_RUN: &str = "latency-run";

/// Every swept relay, in the report's order.
pub fn streams_lines(results: &SuiteResults) -> Vec<StreamsLine> {
    let latency = results.latency.as_ref().and_then(Part::ok);
    let mut lines: Vec<StreamsLine> = BACKENDS
        .iter()
        .filter_map(|b| {
            let sweep = results.sweeps.get(*b)?.ok()?;
            let mut line = StreamsLine::from_sweep(b, sweep);
            // On a small host a sweep step can be cut short by a generator that fell behind
            // for a moment; the latency run of the same report, at its fixed count, is a step
            // like any other, so a clean one there is a lower bound too.
            if let Some(r) = latency.and_then(|all| all.get(*b)) {
                if sweep.limit != sweep::limit::RELAY
                    && r.streams > line.max_clean_streams
                    && !r.generator_saturated
                    && r.counters_match
                    && r.loss_ratio <= sweep.loss_threshold
                {
                    line.max_clean_streams = r.streams;
                    line.lower_bound = true;
                    line.limit = LATENCY_RUN.to_owned();
                    line.at_streams = r.streams;
                    line.ns_per_packet = r.relay_ns_per_packet;
                    line.kernel_ns_per_packet = r.relay_kernel_ns_per_packet;
                    line.user_ns_per_packet = r.relay_user_ns_per_packet;
                }
            }
            Some(line)
        })
        .collect();
    if let Some(v) = results.rtpengine.as_ref().and_then(Part::ok) {
        lines.push(StreamsLine::from_sweep(
            &format!("sluice {} (ng)", v.sluice.best.backend),
            &v.sluice,
        ));
        lines.push(StreamsLine::from_sweep("rtpengine (ng)", &v.rtpengine));
    }
    lines
}

/// The latency run's reports with the baseline first, in the report's order.
pub fn latency_reports(results: &SuiteResults) -> Vec<(&str, &StreamsReport)> {
    let mut out = Vec::new();
    if let Some(b) = results.baseline.as_ref().and_then(Part::ok) {
        out.push(("none", b));
    }
    if let Some(all) = results.latency.as_ref().and_then(Part::ok) {
        for b in BACKENDS {
            if let Some(r) = all.get(b) {
                out.push((b, r));
            }
        }
    }
    out
}

fn percentiles(r: &StreamsReport) -> [u64; 3] {
    [r.latency_us.p50, r.latency_us.p99, r.latency_us.p999]
}

/// Builds the headline figures.
pub fn headline(results: &SuiteResults) -> Headline {
    let streams = streams_lines(results);
    let ratio = results.rtpengine.as_ref().and_then(Part::ok).and_then(|v| {
        ratio(
            v.sluice.max_clean_streams as f64,
            v.rtpengine.max_clean_streams as f64,
        )
    });
    let reports = latency_reports(results);
    let latency_us: BTreeMap<String, [u64; 3]> = reports
        .iter()
        .map(|(name, r)| ((*name).to_owned(), percentiles(r)))
        .collect();
    let added_latency_us = match latency_us.get("none") {
        Some(base) => latency_us
            .iter()
            .filter(|(name, _)| name.as_str() != "none")
            .map(|(name, v)| {
                (
                    name.clone(),
                    [0, 1, 2].map(|i| v[i] as i64 - base[i] as i64),
                )
            })
            .collect(),
        None => BTreeMap::new(),
    };
    let rates = |part: &Option<Part<CallsVersus>>| {
        let v = part.as_ref().and_then(Part::ok);
        RatePair {
            sluice: v.and_then(|v| v.sluice.as_ref()?.max_clean_rate),
            kamailio: v.and_then(|v| v.kamailio.as_ref()?.max_clean_rate),
        }
    };
    Headline {
        generated_at: results.finished_at.clone(),
        commit: results.machine.commit.clone(),
        quick: results.quick,
        build: results.machine.build.clone(),
        machine: results.machine.summary(),
        loss_threshold: results
            .sweeps
            .values()
            .find_map(|p| p.ok().map(|s| s.loss_threshold))
            .or_else(|| {
                results
                    .rtpengine
                    .as_ref()
                    .and_then(Part::ok)
                    .map(|v| v.sluice.loss_threshold)
            }),
        streams,
        streams_ratio_vs_rtpengine: ratio,
        latency_streams: reports.first().map(|(_, r)| r.streams),
        latency_us,
        added_latency_us,
        calls_per_s: rates(&results.calls),
        register_per_s: rates(&results.register),
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

/// The README's headline block (between the markers): markdown lines. `report_link` is the
/// report's path relative to the README.
pub fn readme_lines(h: &Headline, report_link: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let quick = if h.quick {
        " **(a `--quick` smoke run: not meaningful figures)**"
    } else {
        ""
    };
    lines.push(format!(
        "Measured by `sluice-bench report` on {} ({} build, commit `{}`, {}){quick}; the whole \
         report, with plots and how each figure is measured: [{report_link}]({report_link}).",
        h.machine, h.build, h.commit, h.generated_at
    ));
    lines.push(String::new());
    let threshold = h
        .loss_threshold
        .map_or_else(String::new, |t| format!(" (loss ≤ {}%)", t * 100.0));
    let direct: Vec<&StreamsLine> = h.streams.iter().filter(|l| l.setup == "direct").collect();
    let sluice_ng = h
        .streams
        .iter()
        .find(|l| l.relay == "sluice" && l.setup == "ng");
    let rtpengine = h.streams.iter().find(|l| l.relay == "rtpengine");
    let mut streams = format!("- **Largest clean stream count**{threshold}: ");
    if direct.is_empty() {
        streams.push_str("Sluice's backends not measured");
    } else {
        streams.push_str(
            &direct
                .iter()
                .map(|l| format!("{} {}", backend_name(&l.backend), l.count_text()))
                .collect::<Vec<_>>()
                .join(", "),
        );
        streams.push_str(" (rules installed in-process)");
    }
    match (sluice_ng, rtpengine) {
        (Some(s), Some(r)) => streams.push_str(&format!(
            "; set up over ng, Sluice ({}) {} vs rtpengine {}{}",
            backend_name(&s.backend),
            s.count_text(),
            r.count_text(),
            h.streams_ratio_vs_rtpengine
                .map_or_else(String::new, |x| format!(" (×{x:.2})"))
        )),
        _ => streams.push_str("; rtpengine not measured"),
    }
    streams.push('.');
    if h.streams.iter().any(|l| l.lower_bound) {
        streams.push_str(" ≥: the sweep stopped before the relay lost packets (the load generator fell behind, or the step list or time ran out).");
    }
    lines.push(streams);
    if !h.streams.is_empty() {
        let costs: Vec<String> = h
            .streams
            .iter()
            .map(|l| {
                let parts = match (l.kernel_ns_per_packet, l.user_ns_per_packet) {
                    (Some(k), Some(u)) => {
                        format!(" ({} kernel + {} user)", ns(Some(k)), ns(Some(u)))
                    }
                    _ => String::new(),
                };
                format!("{} {} ns{parts}", l.label, ns(l.ns_per_packet))
            })
            .collect();
        lines.push(format!(
            "- **Relay cost per packet** (at each one's largest clean count): {}.",
            costs.join(", ")
        ));
    }
    if let Some(streams) = h.latency_streams {
        if !h.added_latency_us.is_empty() {
            let added: Vec<String> = BACKENDS
                .iter()
                .filter_map(|b| {
                    let v = h.added_latency_us.get(*b)?;
                    Some(format!(
                        "{} {} / {} / {}",
                        backend_name(b),
                        signed(v[0]),
                        signed(v[1]),
                        signed(v[2])
                    ))
                })
                .collect();
            lines.push(format!(
                "- **Added one-way latency at {} streams** (p50 / p99 / p99.9 over kernel routing, µs): {}.",
                group(streams),
                added.join("; ")
            ));
        }
    }
    lines.push(format!(
        "- **Calls per second** (SIPp, highest clean rate): {}; **REGISTERs per second**: {}.",
        pair_text(&h.calls_per_s, "Kamailio + rtpengine"),
        pair_text(&h.register_per_s, "Kamailio")
    ));
    lines
}

fn pair_text(p: &RatePair, other: &str) -> String {
    match (p.sluice, p.kamailio) {
        (Some(s), Some(k)) => format!(
            "Sluice {} vs {other} {}{}",
            rate(s),
            rate(k),
            ratio(s, k).map_or_else(String::new, |x| format!(" (×{x:.2})"))
        ),
        (Some(s), None) => format!("Sluice {}, {other} not measured", rate(s)),
        (None, Some(k)) => format!("Sluice not measured, {other} {}", rate(k)),
        (None, None) => "not measured".to_owned(),
    }
}

/// Rewrites the block between the markers; an error when they are missing or out of order.
pub fn replace_block(readme: &str, lines: &[String]) -> Result<String, String> {
    let start = readme
        .find(README_START)
        .ok_or_else(|| format!("no `{README_START}` line"))?;
    let after_start = start + README_START.len();
    let end = readme[after_start..]
        .find(README_END)
        .map(|i| i + after_start)
        .ok_or_else(|| format!("no `{README_END}` after `{README_START}`"))?;
    let mut out = String::with_capacity(readme.len());
    out.push_str(&readme[..after_start]);
    out.push('\n');
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&readme[end..]);
    Ok(out)
}

/// Sentences, from the data, where a reference beats Sluice or ties it, and where a Sluice
/// figure is only a bound.
pub fn not_ahead(results: &SuiteResults) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(v) = results.rtpengine.as_ref().and_then(Part::ok) {
        streams_findings(&v.sluice, &v.rtpengine, &mut out);
    }
    let lines = streams_lines(results);
    for b in BACKENDS {
        let (Some(sweep), Some(r), Some(line)) = (
            results.sweeps.get(b).and_then(Part::ok),
            results.rtpengine.as_ref().and_then(Part::ok),
            lines.iter().find(|l| l.label == b),
        ) else {
            continue;
        };
        if line.max_clean_streams < r.rtpengine.max_clean_streams {
            out.push(format!(
                "Sluice's `{b}` backend ran clean only to {} streams with in-process rules, fewer \
                 than rtpengine's {} over ng; its sweep was stopped by {}.",
                group(line.max_clean_streams),
                group(r.rtpengine.max_clean_streams),
                sweep.limit_text()
            ));
        }
    }
    for (what, part, other) in [
        ("calls", &results.calls, "Kamailio + rtpengine"),
        ("REGISTERs", &results.register, "Kamailio"),
    ] {
        if let Some(v) = part.as_ref().and_then(Part::ok) {
            if let (Some(s), Some(k)) = (&v.sluice, &v.kamailio) {
                calls_findings(what, s, k, other, &mut out);
            }
        }
    }
    out
}

fn streams_findings(sluice: &SweepReport, rtp: &SweepReport, out: &mut Vec<String>) {
    let (s, r) = (sluice.max_clean_streams, rtp.max_clean_streams);
    if r > s {
        out.push(format!(
            "rtpengine ran clean to {} streams, Sluice ({}, over ng) only to {} (stopped by {}).",
            group(r),
            sluice.best.backend,
            group(s),
            sluice.limit_text()
        ));
    } else if r == s {
        out.push(format!(
            "Sluice ({}, over ng) and rtpengine both ran clean to {} streams: the sweep does not \
             separate them here.",
            sluice.best.backend,
            group(s)
        ));
    }
    if sluice.limit == sweep::limit::GENERATOR {
        out.push(format!(
            "Sluice's sweep over ng was stopped by the load generator, not by Sluice: {} is a lower \
             bound on this host, and so is the ratio to rtpengine.",
            group(s)
        ));
    }
    // The same stream count on both sides, the largest both ran clean.
    let common = sluice
        .steps
        .iter()
        .rev()
        .filter(|a| sweep::clean(a, sluice.loss_threshold))
        .find_map(|a| {
            let b = rtp
                .steps
                .iter()
                .find(|b| b.streams == a.streams && sweep::clean(b, rtp.loss_threshold))?;
            Some((a, b))
        });
    let Some((a, b)) = common else {
        return;
    };
    let at = group(a.streams);
    if let (Some(x), Some(y)) = (a.relay_ns_per_packet, b.relay_ns_per_packet) {
        if y <= x {
            out.push(format!(
                "At {at} streams rtpengine cost {} ns per packet, Sluice {} ns.",
                ns(Some(y)),
                ns(Some(x))
            ));
        }
    }
    let pa = percentiles(a);
    let pb = percentiles(b);
    let worse: Vec<String> = ["p50", "p99", "p99.9"]
        .iter()
        .enumerate()
        .filter(|(i, _)| pb[*i] < pa[*i])
        .map(|(i, name)| format!("{name} {} µs vs {} µs", group(pb[i]), group(pa[i])))
        .collect();
    if !worse.is_empty() {
        out.push(format!(
            "At {at} streams rtpengine's one-way latency was lower than Sluice's (over ng): {}.",
            worse.join(", ")
        ));
    }
    if let (Some(x), Some(y)) = (a.rss_per_call_bytes, b.rss_per_call_bytes) {
        if y < x {
            out.push(format!(
                "At {at} streams rtpengine's resident memory grew less per call than Sluice's: {} vs {} bytes.",
                group(y.max(0.0) as u64),
                group(x.max(0.0) as u64)
            ));
        }
    }
    let total = |r: &StreamsReport| {
        r.relay_rss_bytes
            .map(|rss| rss + r.bpf_map_bytes.unwrap_or(0))
    };
    if let (Some(x), Some(y)) = (total(a), total(b)) {
        if y < x {
            out.push(format!(
                "At {at} streams rtpengine held less memory in all ({} MiB resident) than Sluice \
                 ({} MiB resident + BPF maps, which are sized by the port range, not by the calls).",
                mib(Some(y)),
                mib(Some(x))
            ));
        }
    }
}

fn calls_findings(
    what: &str,
    sluice: &CallsReport,
    kamailio: &CallsReport,
    other: &str,
    out: &mut Vec<String>,
) {
    match (sluice.max_clean_rate, kamailio.max_clean_rate) {
        (Some(s), Some(k)) if k > s => out.push(format!(
            "{other} handled more {what} per second clean: {} vs Sluice's {}.",
            rate(k),
            rate(s)
        )),
        (Some(s), Some(k)) if k == s => out.push(format!(
            "Sluice and {other} both handled {} {what} per second clean: the sweep does not separate them.",
            rate(s)
        )),
        (None, Some(k)) => out.push(format!(
            "{other} handled {} {what} per second clean; Sluice ran clean at no rate tried.",
            rate(k)
        )),
        _ => {}
    }
    // The highest rate both ran clean at.
    let clean = |r: &CallsReport, s: &super::data::CallsStep| s.clean(r.max_failed_ratio);
    let common = sluice
        .steps
        .iter()
        .rev()
        .filter(|a| clean(sluice, a))
        .find_map(|a| {
            let b = kamailio
                .steps
                .iter()
                .find(|b| (b.rate - a.rate).abs() < 1e-9 && clean(kamailio, b))?;
            Some((a, b))
        });
    let Some((a, b)) = common else {
        return;
    };
    if let (Some(x), Some(y)) = (a.cpu_per_call_us, b.cpu_per_call_us) {
        if y < x {
            out.push(format!(
                "At {} {what}/s {other} used less CPU per {}: {} µs vs Sluice's {} µs.",
                rate(a.rate),
                singular(what),
                group(y.round() as u64),
                group(x.round() as u64)
            ));
        }
    }
    if let (Some(x), Some(y)) = (a.response_time_p99_ms, b.response_time_p99_ms) {
        if y < x {
            out.push(format!(
                "At {} {what}/s {other} answered faster at p99: {y:.1} ms vs Sluice's {x:.1} ms.",
                rate(a.rate)
            ));
        }
    }
    if b.failed < a.failed {
        out.push(format!(
            "At {} {what}/s {other} failed fewer: {} vs Sluice's {}.",
            rate(a.rate),
            b.failed,
            a.failed
        ));
    }
}

fn singular(what: &str) -> &str {
    match what {
        "calls" => "call",
        "REGISTERs" => "REGISTER",
        other => other,
    }
}

/// `xdp` → `XDP`.
pub fn backend_name(backend: &str) -> &str {
    match backend {
        "xdp" => "XDP",
        "afxdp" => "AF_XDP",
        "sockets" => "sockets",
        "none" => "none (kernel routing)",
        other => other,
    }
}

/// `1234567` → `1 234 567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `+17`, `-3`.
pub fn signed(v: i64) -> String {
    if v >= 0 {
        format!("+{}", group(v as u64))
    } else {
        format!("-{}", group(v.unsigned_abs()))
    }
}

/// Nanoseconds, rounded, grouped; `n/a` when absent.
pub fn ns(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite() && *v >= 0.0)
        .map_or_else(|| "n/a".to_owned(), |v| group(v.round() as u64))
}

/// Bytes as MiB with one decimal; `n/a` when absent.
pub fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "n/a".to_owned(),
        |b| format!("{:.1}", b as f64 / 1048576.0),
    )
}

/// A rate: whole numbers without decimals.
pub fn rate(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 && v >= 0.0 {
        group(v.round() as u64)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_signs() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1 000");
        assert_eq!(group(1_234_567), "1 234 567");
        assert_eq!(signed(-1234), "-1 234");
        assert_eq!(signed(17), "+17");
        assert_eq!(ns(Some(522.6)), "523");
        assert_eq!(ns(None), "n/a");
        assert_eq!(rate(150.0), "150");
        assert_eq!(rate(12.5), "12.5");
    }

    #[test]
    fn replaces_only_the_block() {
        let readme = format!("# T\n\nbefore\n{README_START}\nold line\n{README_END}\nafter\n");
        let out = replace_block(&readme, &["new 1".into(), "new 2".into()]).expect("block");
        assert_eq!(
            out,
            format!("# T\n\nbefore\n{README_START}\nnew 1\nnew 2\n{README_END}\nafter\n")
        );
        // Idempotent.
        let again = replace_block(&out, &["new 1".into(), "new 2".into()]).expect("block");
        assert_eq!(again, out);
        assert!(replace_block("no markers", &[]).is_err());
        assert!(replace_block(&format!("{README_END}\n{README_START}\n"), &[]).is_err());
    }
}
