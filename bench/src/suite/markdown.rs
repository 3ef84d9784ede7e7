//! `docs/benchmarks.md`: the results of one run as markdown, with the plots linked.

use std::fmt::Write as _;

use crate::report::StreamsReport;
use crate::sweep::{self, SweepReport};

use super::data::{CallsReport, CallsVersus, Part, SuiteResults, BACKENDS};
use super::machine::load_text;
use super::summary::{self, backend_name, group, latency_reports, mib, ns, rate, signed, Headline};

/// Where the plots are, relative to the markdown file; `None` when there was nothing to plot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Loss against streams.
    pub streams_vs_loss: Option<String>,
    /// Latency percentiles per backend.
    pub latency: Option<String>,
    /// Calls per second against failed ratio.
    pub calls: Option<String>,
    /// REGISTERs per second against failed ratio.
    pub register: Option<String>,
}

/// The whole document.
pub fn render(results: &SuiteResults, headline: &Headline, figures: &Figures) -> String {
    let mut md = String::new();
    let m = &results.machine;
    md.push_str("# Sluice benchmarks\n\n");
    md.push_str(
        "<!-- Written by `sluice-bench report`: edit bench/src/suite/, not this file. -->\n\n",
    );
    if results.quick {
        md.push_str(
            "> **A `--quick` smoke run**: tiny step lists and one- or two-second steps. It checks \
             that every part runs and renders; its figures mean nothing.\n\n",
        );
    }
    if m.build == "debug" {
        md.push_str("> **Debug build**: per-packet costs and rates are not representative; run the release build.\n\n");
    }
    let _ = writeln!(
        md,
        "Measured {} to {} ({:.1} minutes, budget {:.0}) on the machine below, commit `{}`{}.\n",
        m.started_at,
        results.finished_at,
        results.elapsed_s / 60.0,
        results.budget_s / 60.0,
        m.commit,
        if m.dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    );

    md.push_str("## At a glance\n\n");
    for line in summary::readme_lines(headline, "docs/benchmarks.md")
        .iter()
        .skip(2)
    {
        md.push_str(line);
        md.push('\n');
    }
    md.push('\n');

    reproduce(&mut md, results);
    machine(&mut md, results);
    streams(&mut md, results, figures);
    cost(&mut md, results);
    latency(&mut md, results, headline, figures);
    memory(&mut md, results);
    calls_section(
        &mut md,
        "Calls per second",
        "calls",
        results.calls.as_ref(),
        "Kamailio + rtpengine",
        figures.calls.as_deref(),
    );
    calls_section(
        &mut md,
        "REGISTERs per second",
        "REGISTERs",
        results.register.as_ref(),
        "Kamailio",
        figures.register.as_deref(),
    );
    method(&mut md);
    md.push_str("## Where Sluice is not ahead\n\n");
    let findings = summary::not_ahead(results);
    if findings.is_empty() {
        md.push_str(
            "Nowhere among the figures this run compared: Sluice was ahead of rtpengine and \
             Kamailio on each (parts that did not run are listed below).\n\n",
        );
    } else {
        md.push_str("Generated from the figures above:\n\n");
        for f in findings {
            let _ = writeln!(md, "- {f}");
        }
        md.push('\n');
    }
    failures(&mut md, results);
    md
}

/// Every part in order: (figure, part's command, seconds, error).
fn parts(results: &SuiteResults) -> Vec<(String, &str, f64, Option<&str>)> {
    let mut out = Vec::new();
    for b in BACKENDS {
        if let Some(p) = results.sweeps.get(b) {
            out.push((
                format!("largest clean streams, {b} (in-process rules)"),
                p.command.as_str(),
                p.elapsed_s,
                p.error.as_deref(),
            ));
        }
    }
    fn view<T>(p: &Option<Part<T>>) -> Option<(&str, f64, Option<&str>)> {
        p.as_ref()
            .map(|p| (p.command.as_str(), p.elapsed_s, p.error.as_deref()))
    }
    let others = [
        (
            "Sluice (XDP) against rtpengine over ng, streams and memory",
            view(&results.rtpengine),
        ),
        (
            "latency per backend, memory at that count",
            view(&results.latency),
        ),
        ("latency baseline (no relay)", view(&results.baseline)),
        (
            "calls per second, Sluice and Kamailio + rtpengine",
            view(&results.calls),
        ),
        (
            "REGISTERs per second, Sluice and Kamailio",
            view(&results.register),
        ),
    ];
    for (figure, command) in others {
        if let Some((c, s, e)) = command {
            out.push((figure.to_owned(), c, s, e));
        }
    }
    out
}

fn reproduce(md: &mut String, results: &SuiteResults) {
    md.push_str("## Reproduce\n\n");
    md.push_str(
        "As root, from the repository root (`bash .ci/setup` installs SIPp, Kamailio and \
         rtpengine):\n\n```sh\ncargo build --release -p sluice -p sluice-bench\n\
         target/release/sluice-bench report   # every part; rewrites this file, docs/benchmarks/, \
         docs/benchmarks.json and the README's headline block\n```\n\n",
    );
    md.push_str(
        "`--quick` is a smoke run of a minute or two, `--skip streams,rtpengine,latency,calls,register` \
         leaves parts out, `--from-results docs/benchmarks/results.json` renders again without \
         measuring. Each figure alone, exactly as this run ran it:\n\n",
    );
    md.push_str("| figure | command | took |\n|---|---|---|\n");
    for (figure, command, seconds, error) in parts(results) {
        let took = match error {
            Some(e) if e.starts_with("skipped") => "skipped".to_owned(),
            Some(_) => format!("{seconds:.0} s (failed)"),
            None => format!("{seconds:.0} s"),
        };
        let _ = writeln!(
            md,
            "| {figure} | `{}` | {took} |",
            command.replace('|', "\\|")
        );
    }
    md.push('\n');
}

fn machine(md: &mut String, results: &SuiteResults) {
    let m = &results.machine;
    md.push_str("## Machine\n\n| | |\n|---|---|\n");
    let _ = writeln!(md, "| CPU | {} |", m.cpu_model);
    let _ = writeln!(
        md,
        "| CPUs | {} logical{} |",
        m.logical_cpus,
        m.physical_cores
            .map_or_else(String::new, |p| format!(", {p} physical cores"))
    );
    let _ = writeln!(
        md,
        "| memory | {} |",
        m.memory_bytes.map_or_else(
            || "unknown".to_owned(),
            |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
        )
    );
    let _ = writeln!(md, "| kernel | {} |", m.kernel);
    let nics = if m.nics.is_empty() {
        "none found".to_owned()
    } else {
        m.nics.join("; ")
    };
    let _ = writeln!(
        md,
        "| network | every packet crosses veth pairs between network namespaces on this host \
         (XDP native on veth, AF_XDP in copy mode); no physical NIC is involved. NICs present: {nics} |"
    );
    let _ = writeln!(
        md,
        "| load average (1 / 5 / 15 min) | start {}, end {} |",
        load_text(m.load_start),
        load_text(results.load_end)
    );
    let _ = writeln!(md, "| date | {} to {} |", m.started_at, results.finished_at);
    let _ = writeln!(
        md,
        "| commit | `{}`{} |",
        m.commit,
        if m.dirty {
            " (uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(md, "| build | {} |", m.build);
    md.push('\n');
}

/// `Not measured: <why>.` for a part without a result.
fn missing<T>(md: &mut String, part: Option<&Part<T>>, what: &str) -> bool {
    match part {
        Some(p) if p.result.is_some() => false,
        Some(p) => {
            let _ = writeln!(
                md,
                "{what}: not measured ({}).\n",
                p.error.as_deref().unwrap_or("no result")
            );
            true
        }
        None => {
            let _ = writeln!(md, "{what}: not measured (not run).\n");
            true
        }
    }
}

fn cpus_busy(r: &StreamsReport) -> String {
    r.relay_cpu_s.map_or_else(
        || "n/a".to_owned(),
        |c| format!("{:.2}", c / r.duration_s.max(1e-9)),
    )
}

fn streams(md: &mut String, results: &SuiteResults, figures: &Figures) {
    md.push_str("## Largest clean stream count\n\n");
    let threshold = results
        .sweeps
        .values()
        .find_map(|p| p.ok().map(|s| s.loss_threshold))
        .or_else(|| {
            results
                .rtpengine
                .as_ref()
                .and_then(Part::ok)
                .map(|v| v.sluice.loss_threshold)
        });
    let _ = writeln!(
        md,
        "Each sweep raises the stream count step by step (every step a fresh run: new namespaces, \
         relay and streams, 50 packets/s of 172-byte RTP per stream) until a step loses more than \
         {} of its packets or the load generator falls behind; the largest clean count is the \
         last step before that. `≥` marks a sweep that stopped for another reason than the relay.\n",
        threshold.map_or_else(|| "the threshold".to_owned(), |t| format!("{}%", t * 100.0))
    );
    let lines = summary::streams_lines(results);
    if lines.is_empty() {
        md.push_str("No sweep produced a result (see the failed parts below).\n\n");
    } else {
        md.push_str(
            "| relay | setup | largest clean streams | stopped by | ns/packet there (kernel + user) | relay CPUs busy | loss % there |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for (line, sweep) in lines.iter().zip(sweeps_in_order(results)) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} ({} + {}) | {} | {:.4} |",
                line.label,
                line.setup,
                line.count_text(),
                if line.limit == summary::LATENCY_RUN {
                    format!(
                        "sweep: {}; clean at this count in the latency run below",
                        sweep.limit_text()
                    )
                } else {
                    sweep.limit_text().to_owned()
                },
                ns(line.ns_per_packet),
                ns(line.kernel_ns_per_packet),
                ns(line.user_ns_per_packet),
                cpus_busy(&sweep.best),
                sweep.best.loss_ratio * 100.0
            );
        }
        md.push('\n');
        if let Some(v) = results.rtpengine.as_ref().and_then(Part::ok) {
            let (s, r) = (v.sluice.max_clean_streams, v.rtpengine.max_clean_streams);
            let _ = writeln!(
                md,
                "Set up the same way (one ng offer and answer per stream, same testbed, generator \
                 and SDP), Sluice ({}) ran clean to {} streams and rtpengine to {}{}.\n",
                backend_name(&v.sluice.best.backend),
                group(s),
                group(r),
                if r > 0 {
                    format!(": ×{:.2}", s as f64 / r as f64)
                } else {
                    String::new()
                }
            );
        }
    }
    missing_sweeps(md, results);
    if let Some(f) = &figures.streams_vs_loss {
        let _ = writeln!(md, "![Packet loss against concurrent streams]({f})\n");
    }
    let all = sweeps_in_order(results);
    if !all.is_empty() {
        md.push_str("<details><summary>Every step of every sweep</summary>\n\n");
        for (line, sweep) in summary::streams_lines(results).iter().zip(all) {
            let _ = writeln!(
                md,
                "**{}** ({} s per step)\n",
                line.label, sweep.best.duration_s
            );
            md.push_str(
                "| streams | loss % | p50 µs | p99 µs | p99.9 µs | ns/packet | relay CPU s | generator CPU s | clean |\n\
                 |---|---|---|---|---|---|---|---|---|\n",
            );
            for r in &sweep.steps {
                let _ = writeln!(
                    md,
                    "| {} | {:.4} | {} | {} | {} | {} | {} | {:.2} | {} |",
                    group(r.streams),
                    r.loss_ratio * 100.0,
                    group(r.latency_us.p50),
                    group(r.latency_us.p99),
                    group(r.latency_us.p999),
                    ns(r.relay_ns_per_packet),
                    r.relay_cpu_s
                        .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
                    r.generator_cpu_s,
                    if r.generator_saturated {
                        "generator fell behind".to_owned()
                    } else if sweep::clean(r, sweep.loss_threshold) {
                        "yes".to_owned()
                    } else {
                        "no".to_owned()
                    }
                );
            }
            md.push('\n');
        }
        md.push_str("</details>\n\n");
    }
}

fn missing_sweeps(md: &mut String, results: &SuiteResults) {
    for b in BACKENDS {
        if let Some(p) = results.sweeps.get(b) {
            missing(md, Some(p), &format!("`{b}` sweep"));
        }
    }
    missing(md, results.rtpengine.as_ref(), "Sluice against rtpengine");
}

/// The sweeps with a result, in the order of [`summary::streams_lines`].
fn sweeps_in_order(results: &SuiteResults) -> Vec<&SweepReport> {
    let mut out: Vec<&SweepReport> = BACKENDS
        .iter()
        .filter_map(|b| results.sweeps.get(*b)?.ok())
        .collect();
    if let Some(v) = results.rtpengine.as_ref().and_then(Part::ok) {
        out.push(&v.sluice);
        out.push(&v.rtpengine);
    }
    out
}

/// What a sweep's `best` step is.
fn best_label(sweep: &SweepReport) -> &'static str {
    if sweep.max_clean_streams > 0 {
        "largest clean"
    } else {
        "first step; none clean"
    }
}

fn cost(md: &mut String, results: &SuiteResults) {
    md.push_str("## Cost per packet\n\n");
    let mut rows: Vec<(String, &StreamsReport)> = Vec::new();
    for (line, sweep) in summary::streams_lines(results)
        .iter()
        .zip(sweeps_in_order(results))
    {
        rows.push((
            format!("{} ({})", line.label, best_label(sweep)),
            &sweep.best,
        ));
    }
    for (name, r) in latency_reports(results) {
        if name != "none" {
            rows.push((format!("{name} (latency run)"), r));
        }
    }
    if rows.is_empty() {
        md.push_str("Not measured (no streams part produced a result).\n\n");
        return;
    }
    md.push_str(
        "| relay | streams | ns/packet | kernel (BPF run time) | user (threads or process) | relay CPU s | relay CPUs busy |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (name, r) in rows {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            group(r.streams),
            ns(r.relay_ns_per_packet),
            ns(r.relay_kernel_ns_per_packet),
            ns(r.relay_user_ns_per_packet),
            r.relay_cpu_s
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
            cpus_busy(r)
        );
    }
    md.push('\n');
}

fn latency(md: &mut String, results: &SuiteResults, headline: &Headline, figures: &Figures) {
    let streams = headline.latency_streams.unwrap_or(2000);
    let _ = writeln!(md, "## Latency at {} streams\n", group(streams));
    md.push_str(
        "One-way: from the generator's send stamp in each packet to the receiver's wake-up, \
         every packet. The baseline is no relay at all (the relay namespace routes the packets \
         with the kernel's IP forwarding), so a backend's added latency is its figure less the \
         baseline's.\n\n",
    );
    missing(md, results.latency.as_ref(), "Latency per backend");
    missing(md, results.baseline.as_ref(), "Baseline");
    let reports = latency_reports(results);
    if reports.is_empty() {
        return;
    }
    md.push_str(
        "| relay | p50 µs | p99 µs | p99.9 µs | max µs | added p50 / p99 / p99.9 µs | loss % | generator fell behind |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (name, r) in reports {
        let added = headline.added_latency_us.get(name).map_or_else(
            || {
                if name == "none" {
                    "baseline".to_owned()
                } else {
                    "n/a".to_owned()
                }
            },
            |v| format!("{} / {} / {}", signed(v[0]), signed(v[1]), signed(v[2])),
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {added} | {:.4} | {} |",
            backend_name(name),
            group(r.latency_us.p50),
            group(r.latency_us.p99),
            group(r.latency_us.p999),
            group(r.latency_us.max),
            r.loss_ratio * 100.0,
            if r.generator_saturated { "yes" } else { "no" }
        );
    }
    md.push('\n');
    if let Some(f) = &figures.latency {
        let _ = writeln!(md, "![One-way latency percentiles per backend]({f})\n");
    }
}

fn memory(md: &mut String, results: &SuiteResults) {
    md.push_str("## Memory\n\n");
    md.push_str(
        "Resident memory (VmRSS) of the relay with no streams and after the run; per call is the \
         growth over the stream count. BPF map memory is the `memlock` of the maps the relay \
         holds: sized by the port range when loaded, not by the calls. For the in-process backends \
         the process is `sluice-bench` itself (generator and receiver included); over ng it is the \
         relay process alone.\n\n",
    );
    let target = results
        .latency
        .as_ref()
        .and_then(Part::ok)
        .and_then(|all| all.values().next().map(|r| r.streams))
        .unwrap_or(2000);
    let mut rows: Vec<(String, &StreamsReport)> = Vec::new();
    for (line, sweep) in summary::streams_lines(results)
        .iter()
        .zip(sweeps_in_order(results))
    {
        if let Some(at) = sweep.steps.iter().find(|r| r.streams == target) {
            rows.push((line.label.clone(), at));
        }
        if sweep.best.streams != target {
            rows.push((
                format!("{} ({})", line.label, best_label(sweep)),
                &sweep.best,
            ));
        }
    }
    if rows.is_empty() {
        md.push_str("Not measured (no streams part produced a result).\n\n");
    } else {
        md.push_str(
            "| relay | memory of | streams | RSS idle MiB | RSS MiB | RSS per call (bytes) | BPF maps MiB | BPF maps per call (bytes) |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for (name, r) in rows {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                if r.memory_of.is_empty() {
                    "n/a"
                } else {
                    &r.memory_of
                },
                group(r.streams),
                mib(r.relay_rss_idle_bytes),
                mib(r.relay_rss_bytes),
                r.rss_per_call_bytes
                    .map_or_else(|| "n/a".to_owned(), |b| group(b.max(0.0).round() as u64)),
                mib(r.bpf_map_bytes),
                r.bpf_map_per_call_bytes
                    .map_or_else(|| "n/a".to_owned(), |b| group(b.max(0.0).round() as u64)),
            );
        }
        md.push('\n');
    }
    let proxies: Vec<String> = [("calls", &results.calls), ("REGISTERs", &results.register)]
        .iter()
        .filter_map(|(what, p)| {
            let v = p.as_ref()?.ok()?;
            let side = |r: &Option<CallsReport>| {
                r.as_ref()
                    .and_then(|r| r.proxy_rss_bytes)
                    .map_or_else(|| "n/a".to_owned(), |b| format!("{} MiB", mib(Some(b))))
            };
            Some(format!(
                "- after the {what} sweep: Sluice {}, Kamailio {}",
                side(&v.sluice),
                side(&v.kamailio)
            ))
        })
        .collect();
    if !proxies.is_empty() {
        md.push_str("SIP proxy resident memory:\n\n");
        for p in proxies {
            md.push_str(&p);
            md.push('\n');
        }
        md.push('\n');
    }
}

fn calls_section(
    md: &mut String,
    title: &str,
    what: &str,
    part: Option<&Part<CallsVersus>>,
    other: &str,
    figure: Option<&str>,
) {
    let _ = writeln!(md, "## {title}\n");
    let _ = writeln!(
        md,
        "SIPp offers {what} at rising rates, each step for a fixed time, through `sluice run` \
         and through {other}; a step is clean while its failed ratio stays within the threshold.\n"
    );
    if missing(md, part, title) {
        return;
    }
    let Some(v) = part.and_then(Part::ok) else {
        return;
    };
    let sides: Vec<(&str, &CallsReport)> = [("Sluice", &v.sluice), (other, &v.kamailio)]
        .into_iter()
        .filter_map(|(n, r)| Some((n, r.as_ref()?)))
        .collect();
    if sides.is_empty() {
        md.push_str("The part printed neither side.\n\n");
        return;
    }
    md.push_str("| | ");
    md.push_str(&sides.iter().map(|s| s.0).collect::<Vec<_>>().join(" | "));
    md.push_str(" |\n|---|");
    md.push_str(&"---|".repeat(sides.len()));
    md.push('\n');
    type Row = (&'static str, fn(&CallsReport) -> String);
    let rows: [Row; 10] = [
        ("scenario", |r| format!("`{}`", r.scenario)),
        ("highest clean rate /s", |r| {
            r.max_clean_rate.map_or_else(|| "none".to_owned(), rate)
        }),
        ("sweep stopped by", |r| {
            r.stopped.clone().unwrap_or_else(|| "n/a".to_owned())
        }),
        ("failed there", |r| {
            r.best_step().map_or_else(
                || "n/a".to_owned(),
                |s| format!("{} of {}", s.failed, s.attempted),
            )
        }),
        ("retransmissions there", |r| {
            r.best_step()
                .map_or_else(|| "n/a".to_owned(), |s| s.retransmissions.to_string())
        }),
        ("response p50 / p99 ms there", |r| {
            r.best_step().map_or_else(
                || "n/a".to_owned(),
                |s| {
                    format!(
                        "{} / {}",
                        ms(s.response_time_p50_ms),
                        ms(s.response_time_p99_ms)
                    )
                },
            )
        }),
        ("CPU per call µs there", |r| {
            r.best_step()
                .and_then(|s| s.cpu_per_call_us)
                .map_or_else(|| "n/a".to_owned(), |c| group(c.max(0.0).round() as u64))
        }),
        ("failed-ratio threshold", |r| {
            format!("{}%", r.max_failed_ratio * 100.0)
        }),
        ("seconds per step", |r| format!("{}", r.duration_s)),
        ("proxy RSS MiB", |r| mib(r.proxy_rss_bytes)),
    ];
    for (name, f) in rows {
        let _ = write!(md, "| {name} |");
        for (_, r) in &sides {
            let _ = write!(md, " {} |", f(r));
        }
        md.push('\n');
    }
    md.push('\n');
    if let Some(f) = figure {
        let _ = writeln!(md, "![{title} against failed ratio]({f})\n");
    }
    md.push_str("<details><summary>Every step</summary>\n\n");
    md.push_str(
        "| target | rate /s | attempted | succeeded | failed | failed % | retransmissions | p50 ms | p99 ms | CPU µs/call | CDRs |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, r) in &sides {
        for s in &r.steps {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} |",
                rate(s.rate),
                s.attempted,
                s.succeeded,
                s.failed,
                s.failed_ratio * 100.0,
                s.retransmissions,
                ms(s.response_time_p50_ms),
                ms(s.response_time_p99_ms),
                s.cpu_per_call_us
                    .map_or_else(|| "n/a".to_owned(), |c| group(c.max(0.0).round() as u64)),
                s.cdrs.map_or_else(|| "n/a".to_owned(), |c| c.to_string())
            );
        }
    }
    md.push_str("\n</details>\n\n");
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

fn method(md: &mut String) {
    md.push_str(
        "## How each figure is measured\n\n\
         - **Load**: the live-frames XDP generator (an XDP program run by `BPF_PROG_TEST_RUN` in the \
         caller's namespace, pacing itself) sends 50 packets/s of 172-byte G.711-shaped RTP per \
         stream; it keeps one CPU busy, which on a 2-CPU host leaves one for the relay and the \
         receiver. When the relay's ports are not an arithmetic progression the `sendmmsg` \
         generator runs instead (the sweep tables say which).\n\
         - **Loss, latency**: the receiver in the callee's namespace checks every packet (stream, \
         sequence, bytes, source) and records one-way latency from the send stamp in the payload \
         to its wake-up in an HDR histogram.\n\
         - **XDP cost per packet**: the kernel's BPF run-time statistics (`BPF_ENABLE_STATS`) of \
         the relay program, run time over runs.\n\
         - **AF_XDP and sockets cost per packet**: the CPU time (user + system) of the relay's \
         worker threads from `/proc/self/task/*/schedstat`, over the packets they forwarded, plus \
         the BPF hand-off for AF_XDP. Over ng, the relay process's CPU time (`/proc/<pid>/stat`) \
         over the packets received, plus the BPF run time of the programs it holds. Kernel work \
         outside those (the veth redirect, softirq receive charged to other threads) is in none \
         of them, for any relay.\n\
         - **Memory**: `VmRSS` from `/proc/<pid>/status`; BPF map memory from the `memlock` of \
         each map fd in `/proc/<pid>/fdinfo`.\n\
         - **Calls and REGISTERs per second**: SIPp's statistics files (attempted, succeeded, \
         failed, retransmissions, response times) for each rate; the proxy's CPU from \
         `/proc/<pid>/stat` over the successful calls; CDRs counted from Sluice's store.\n\n",
    );
}

fn failures(md: &mut String, results: &SuiteResults) {
    let failed: Vec<(String, &str, &str)> = parts(results)
        .into_iter()
        .filter_map(|(figure, command, _, error)| Some((figure, command, error?)))
        .collect();
    if failed.is_empty() {
        return;
    }
    md.push_str("## Parts that failed or did not run\n\n");
    for (figure, command, error) in failed {
        let _ = writeln!(md, "- {figure} (`{command}`): {error}");
    }
    md.push('\n');
}
