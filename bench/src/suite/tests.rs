//! Rendering from canned results: no privileges, no subprocesses of the suite.

use std::collections::BTreeMap;

use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};
use crate::receiver::LatencySummary;
use crate::report::StreamsReport;
use crate::sweep::{limit, SweepReport};

fn step(relay: &str, backend: &str, setup: &str, streams: u64, loss: f64) -> StreamsReport {
    let sent = streams * 250;
    let lost = (sent as f64 * loss) as u64;
    StreamsReport {
        backend: backend.into(),
        topology: "two-arm".into(),
        generator: "xdp".into(),
        streams,
        duration_s: 5.0,
        relay_drops: Some(0),
        sent,
        received: sent - lost,
        lost,
        duplicated: 0,
        reordered: 0,
        corrupted: 0,
        source_mismatch: 0,
        unknown: 0,
        loss_ratio: loss,
        latency_us: LatencySummary {
            p50: 30 + streams / 100,
            p99: 900 + streams,
            p999: 3000 + streams,
            max: 9000,
            samples: sent - lost,
        },
        bytes_received: (sent - lost) * 172,
        relay_ns_per_packet: Some(if relay == "rtpengine" {
            14_000.0
        } else {
            520.0
        }),
        relay_kernel_ns_per_packet: (backend != "sockets" && relay == "sluice").then_some(500.0),
        relay_user_ns_per_packet: (backend != "xdp").then_some(4000.0),
        relay_packets: None,
        relay_bytes: None,
        counters_match: false,
        requested_pps: streams as f64 * 50.0,
        achieved_pps: streams as f64 * 50.0,
        generator_saturated: false,
        generator_cpu_s: 4.0,
        generator_late: 0,
        generator_max_lateness_ms: 0.1,
        receiver_cpu_s: 1.0,
        relay: relay.into(),
        setup: setup.into(),
        setup_s: 0.5,
        relay_cpu_s: Some(0.6),
        memory_of: if setup == "ng" {
            "relay process"
        } else {
            "bench process"
        }
        .into(),
        relay_rss_bytes: Some(15 << 20),
        relay_rss_idle_bytes: Some(8 << 20),
        rss_per_call_bytes: Some(3584.0),
        bpf_map_bytes: (relay == "sluice").then_some(11 << 20),
        bpf_map_per_call_bytes: (relay == "sluice").then_some(5800.0),
    }
}

fn sweep(
    relay: &str,
    backend: &str,
    setup: &str,
    counts: &[(u64, f64)],
    stop: &str,
) -> SweepReport {
    let steps = counts
        .iter()
        .map(|&(n, loss)| step(relay, backend, setup, n, loss))
        .collect();
    SweepReport::from_steps(steps, stop, 0.001, 60.0)
}

fn part<T>(command: &str, result: T) -> Part<T> {
    Part {
        command: command.into(),
        elapsed_s: 42.0,
        result: Some(result),
        error: None,
    }
}

/// A run where the calls part does not exist yet and Kamailio wins on REGISTERs.
fn canned() -> SuiteResults {
    let mut sweeps = BTreeMap::new();
    let mut saturated = sweep(
        "sluice",
        "xdp",
        "direct",
        &[(500, 0.0), (1000, 0.0), (2000, 0.0), (4000, 0.0)],
        limit::GENERATOR,
    );
    saturated
        .steps
        .last_mut()
        .expect("a step")
        .generator_saturated = true;
    let saturated = SweepReport::from_steps(saturated.steps, limit::GENERATOR, 0.001, 60.0);
    sweeps.insert(
        "xdp".into(),
        part("sluice-bench streams --backend xdp --sweep", saturated),
    );
    sweeps.insert(
        "afxdp".into(),
        part(
            "sluice-bench streams --backend afxdp --sweep",
            sweep(
                "sluice",
                "afxdp",
                "direct",
                &[(500, 0.0), (1000, 0.02)],
                limit::RELAY,
            ),
        ),
    );
    sweeps.insert(
        "sockets".into(),
        Part {
            command: "sluice-bench streams --backend sockets --sweep".into(),
            elapsed_s: 90.0,
            result: None,
            error: Some("stopped after its 90 s timeout".into()),
        },
    );
    let mut latency = BTreeMap::new();
    for b in ["xdp", "afxdp", "sockets"] {
        latency.insert(b.to_owned(), step("sluice", b, "direct", 2000, 0.0));
    }
    let mut baseline = step("none", "none", "none", 2000, 0.0);
    baseline.latency_us = LatencySummary {
        p50: 17,
        p99: 93,
        p999: 2663,
        max: 5000,
        samples: 1,
    };
    let register: CallsVersus = serde_json::from_str(
        r#"{"sluice": {"target": "sluice", "scenario": "register", "duration_s": 5,
              "max_failed_ratio": 0.01, "max_clean_rate": 400, "proxy_rss_bytes": 20000000,
              "steps": [{"rate": 200, "attempted": 1000, "succeeded": 1000, "failed": 0,
                         "failed_ratio": 0, "retransmissions": 0, "response_time_p50_ms": 1.0,
                         "response_time_p99_ms": 9.0, "cpu_per_call_us": 300},
                        {"rate": 400, "attempted": 2000, "succeeded": 2000, "failed": 0,
                         "failed_ratio": 0, "retransmissions": 1, "cpu_per_call_us": 310},
                        {"rate": 800, "attempted": 4000, "succeeded": 3000, "failed": 1000,
                         "failed_ratio": 0.25}]},
            "kamailio": {"target": "kamailio", "scenario": "register", "duration_s": 5,
              "max_failed_ratio": 0.01, "max_clean_rate": 800, "proxy_rss_bytes": 30000000,
              "steps": [{"rate": 200, "attempted": 1000, "succeeded": 1000, "failed": 0,
                         "failed_ratio": 0, "retransmissions": 0, "response_time_p50_ms": 0.5,
                         "response_time_p99_ms": 2.0, "cpu_per_call_us": 150},
                        {"rate": 400, "attempted": 2000, "succeeded": 2000, "failed": 0,
                         "failed_ratio": 0, "cpu_per_call_us": 140},
                        {"rate": 800, "attempted": 4000, "succeeded": 4000, "failed": 0,
                         "failed_ratio": 0}]}}"#,
    )
    .expect("canned register");
    SuiteResults {
        quick: false,
        machine: Machine {
            cpu_model: "Test CPU @ 2.0GHz".into(),
            logical_cpus: 2,
            physical_cores: Some(2),
            memory_bytes: Some(4 << 30),
            kernel: "6.18.0-test".into(),
            nics: vec!["eth0 (virtio_net, 1 rx queue(s), native XDP likely)".into()],
            load_start: Some([0.5, 0.4, 0.3]),
            started_at: "2026-11-27T22:00:00Z".into(),
            commit: "abc123def456".into(),
            dirty: false,
            build: "release".into(),
        },
        load_end: Some([1.9, 1.2, 0.8]),
        finished_at: "2026-11-27T22:14:00Z".into(),
        elapsed_s: 840.0,
        budget_s: 900.0,
        sweeps,
        rtpengine: Some(part(
            "sluice-bench streams --backend xdp --setup ng --against rtpengine --sweep",
            StreamsVersus {
                sluice: sweep(
                    "sluice",
                    "xdp",
                    "ng",
                    &[
                        (250, 0.0),
                        (500, 0.0),
                        (1000, 0.0),
                        (2000, 0.0),
                        (4000, 0.01),
                    ],
                    limit::RELAY,
                ),
                rtpengine: sweep(
                    "rtpengine",
                    "rtpengine",
                    "ng",
                    &[(250, 0.0), (500, 0.0), (1000, 0.0), (2000, 0.03)],
                    limit::RELAY,
                ),
            },
        )),
        latency: Some(part(
            "sluice-bench streams --backend all --streams 2000",
            latency,
        )),
        baseline: Some(part(
            "sluice-bench streams --backend none --streams 2000",
            baseline,
        )),
        calls: Some(Part {
            command: "sluice-bench calls --sweep --against kamailio --duration 5 --json".into(),
            elapsed_s: 0.1,
            result: None,
            error: Some(
                "exited with exit status: 2: error: unrecognized subcommand 'calls'".into(),
            ),
        }),
        register: Some(part(
            "sluice-bench register --sweep --against kamailio --duration 5 --json",
            register,
        )),
    }
}

#[test]
fn a_clean_latency_run_is_a_lower_bound_where_the_generator_cut_the_sweep_short() {
    let mut results = canned();
    let mut first = step("sluice", "sockets", "direct", 500, 0.0);
    first.generator_saturated = true;
    let cut_short = SweepReport::from_steps(vec![first], limit::GENERATOR, 0.001, 60.0);
    results.sweeps.insert(
        "sockets".into(),
        part("sluice-bench streams --backend sockets --sweep", cut_short),
    );
    for report in results
        .latency
        .as_mut()
        .and_then(|p| p.result.as_mut())
        .expect("a latency run")
        .values_mut()
    {
        report.counters_match = true;
    }
    let lines = summary::streams_lines(&results);
    let sockets = lines
        .iter()
        .find(|l| l.label == "sockets")
        .expect("sockets");
    assert_eq!(sockets.count_text(), "≥ 2 000");
    assert_eq!(sockets.limit, summary::LATENCY_RUN);
    // A sweep the relay itself stopped keeps its own figure.
    let afxdp = lines.iter().find(|l| l.label == "afxdp").expect("afxdp");
    assert_eq!(afxdp.count_text(), "500");
}

#[test]
fn headline_figures_come_from_the_data() {
    let h = summary::headline(&canned());
    let labels: Vec<&str> = h.streams.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(
        labels,
        ["xdp", "afxdp", "sluice xdp (ng)", "rtpengine (ng)"]
    );
    let xdp = &h.streams[0];
    assert_eq!((xdp.max_clean_streams, xdp.lower_bound), (2000, true));
    assert_eq!(xdp.count_text(), "≥ 2 000");
    assert_eq!(h.streams[1].count_text(), "500");
    assert_eq!(h.streams_ratio_vs_rtpengine, Some(2.0));
    assert_eq!(h.latency_streams, Some(2000));
    assert_eq!(h.latency_us["none"], [17, 93, 2663]);
    assert_eq!(h.added_latency_us["xdp"], [50 - 17, 2900 - 93, 5000 - 2663]);
    assert_eq!(h.calls_per_s, summary::RatePair::default());
    assert_eq!(h.register_per_s.kamailio, Some(800.0));

    let lines = summary::readme_lines(&h, "docs/benchmarks.md");
    let text = lines.join("\n");
    assert!(
        text.contains("[docs/benchmarks.md](docs/benchmarks.md)"),
        "{text}"
    );
    assert!(text.contains("XDP ≥ 2 000, AF_XDP 500"), "{text}");
    assert!(
        text.contains("Sluice (XDP) 2 000 vs rtpengine 1 000 (×2.00)"),
        "{text}"
    );
    assert!(
        text.contains("Calls per second** (SIPp, highest clean rate): not measured"),
        "{text}"
    );
    assert!(
        text.contains("Sluice 400 vs Kamailio 800 (×0.50)"),
        "{text}"
    );
    assert!(text.contains("XDP +33 / +2 807 / +2 337"), "{text}");
}

#[test]
fn findings_say_where_kamailio_or_rtpengine_win() {
    let findings = summary::not_ahead(&canned()).join("\n");
    assert!(
        findings.contains("Kamailio handled more REGISTERs per second clean: 800 vs Sluice's 400"),
        "{findings}"
    );
    assert!(
        findings.contains("Kamailio used less CPU per REGISTER: 140 µs vs Sluice's 310 µs"),
        "{findings}"
    );
    assert!(
        findings.contains("Sluice's `afxdp` backend ran clean only to 500"),
        "{findings}"
    );
    assert!(!findings.contains("rtpengine ran clean to"), "{findings}");
    // At 1000 streams (the largest both ran clean) rtpengine costs more: no cost finding.
    assert!(!findings.contains("rtpengine cost"), "{findings}");
    // The BPF maps are counted with Sluice's memory.
    assert!(
        findings.contains("rtpengine held less memory in all"),
        "{findings}"
    );
}

#[test]
fn markdown_has_every_section_and_the_failures() {
    let results = canned();
    let h = summary::headline(&results);
    let figures = markdown::Figures {
        streams_vs_loss: Some("benchmarks/streams-vs-loss.svg".into()),
        latency: Some("benchmarks/latency.svg".into()),
        calls: None,
        register: Some("benchmarks/register.svg".into()),
    };
    let md = markdown::render(&results, &h, &figures);
    for section in [
        "# Sluice benchmarks",
        "## At a glance",
        "## Reproduce",
        "## Machine",
        "## Largest clean stream count",
        "## Cost per packet",
        "## Latency at 2 000 streams",
        "## Memory",
        "## Calls per second",
        "## REGISTERs per second",
        "## How each figure is measured",
        "## Where Sluice is not ahead",
        "## Parts that failed or did not run",
    ] {
        assert!(md.contains(section), "{section} missing:\n{md}");
    }
    for text in [
        "| CPU | Test CPU @ 2.0GHz |",
        "start 0.50 / 0.40 / 0.30, end 1.90 / 1.20 / 0.80",
        "`abc123def456`",
        "`sluice-bench streams --backend xdp --setup ng --against rtpengine --sweep`",
        "| xdp | direct | ≥ 2 000 | the load generator",
        "| rtpengine (ng) | ng | 1 000 | the relay",
        "×2.00",
        "![Packet loss against concurrent streams](benchmarks/streams-vs-loss.svg)",
        "![One-way latency percentiles per backend](benchmarks/latency.svg)",
        "![REGISTERs per second against failed ratio](benchmarks/register.svg)",
        "| none (kernel routing) | 17 | 93 | 2 663 |",
        "| XDP | 50 | 2 900 | 5 000 | 9 000 | +33 / +2 807 / +2 337 |",
        "| highest clean rate /s | 400 | 800 |",
        "Calls per second: not measured (exited with exit status: 2: error: unrecognized subcommand 'calls')",
        "`sockets` sweep: not measured (stopped after its 90 s timeout)",
        "| sluice xdp (ng) | relay process | 2 000 |",
        "BPF run-time statistics",
        "schedstat",
        "SIPp's statistics files",
    ] {
        assert!(md.contains(text), "{text} missing:\n{md}");
    }
    assert!(!md.contains("A `--quick` smoke run"));
}

#[test]
fn writes_report_plots_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("benchmarks.md");
    let results = canned();
    // A stale plot of a part without data this time goes away.
    std::fs::create_dir_all(dir.path().join("benchmarks")).expect("dir");
    std::fs::write(dir.path().join("benchmarks").join(CALLS_SVG), "<svg/>").expect("stale");
    let h = write_report(&results, &out).expect("written");
    let md = std::fs::read_to_string(&out).expect("md");
    assert!(md.contains("benchmarks/latency.svg"));
    for file in [STREAMS_SVG, LATENCY_SVG, REGISTER_SVG] {
        let svg = std::fs::read_to_string(dir.path().join("benchmarks").join(file)).expect(file);
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{file}");
    }
    assert!(!dir.path().join("benchmarks").join(CALLS_SVG).exists());
    let json: Headline = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("benchmarks.json")).expect("json"),
    )
    .expect("headline");
    assert_eq!(json, h);
    // The raw results render the same report again.
    let raw: SuiteResults = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("benchmarks").join("results.json")).expect("raw"),
    )
    .expect("results");
    assert_eq!(raw, results);
}

#[test]
fn readme_block_is_rewritten_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let readme = dir.path().join("README.md");
    let before = format!("# X\n\n## Benchmark\n\n{README_START}\nold\n{README_END}\n\nrest\n");
    std::fs::write(&readme, &before).expect("readme");
    update_readme(&readme, &["new".into()]);
    let after = std::fs::read_to_string(&readme).expect("readme");
    assert_eq!(
        after,
        format!("# X\n\n## Benchmark\n\n{README_START}\nnew\n{README_END}\n\nrest\n")
    );
    // Without markers it is left alone.
    std::fs::write(&readme, "no markers\n").expect("readme");
    update_readme(&readme, &["new".into()]);
    assert_eq!(
        std::fs::read_to_string(&readme).expect("readme"),
        "no markers\n"
    );
}

#[test]
fn plans_fit_the_budget() {
    let budget = Duration::from_secs(15 * 60);
    let full = plan(false, budget);
    let total: Duration = full.iter().map(|j| j.timeout).sum();
    assert!(total <= budget, "{total:?}");
    let labels: Vec<&str> = full.iter().map(|j| j.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "streams-xdp",
            "streams-afxdp",
            "streams-sockets",
            "rtpengine",
            "latency",
            "baseline",
            "calls",
            "register"
        ]
    );
    for job in &full {
        assert_eq!(
            job.args.last().map(String::as_str),
            Some("--json"),
            "{job:?}"
        );
        // Every command parses as this binary's, except the SIP parts another module adds.
        if matches!(
            job.part,
            SuitePart::Streams | SuitePart::Rtpengine | SuitePart::Latency
        ) {
            let argv = std::iter::once("sluice-bench".to_owned()).chain(job.args.clone());
            Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{job:?}: {e}"));
        }
    }
    let max_time = |job: &Job| {
        let i = job.args.iter().position(|a| a == "--max-time")?;
        job.args.get(i + 1)?.parse::<u64>().ok()
    };
    for job in full.iter().filter(|j| j.part == SuitePart::Streams) {
        assert!(
            max_time(job).is_some_and(|t| t < job.timeout.as_secs()),
            "{job:?}"
        );
    }
    let quick: Duration = plan(true, budget).iter().map(|j| j.timeout).sum();
    assert!(quick <= Duration::from_secs(9 * 60), "{quick:?}");
}

#[test]
fn parses_report_arguments() {
    let cli = Cli::try_parse_from([
        "sluice-bench",
        "report",
        "--quick",
        "--out",
        "/tmp/x/benchmarks.md",
        "--skip",
        "calls,register",
        "--budget-minutes",
        "3",
        "--no-readme",
    ])
    .expect("parse");
    let Command::Report(a) = cli.command else {
        panic!("not report")
    };
    assert!(a.quick && a.no_readme);
    assert_eq!(a.skip, [SuitePart::Calls, SuitePart::Register]);
    assert_eq!(a.budget_minutes, 3);
    assert_eq!(plot_dir(&a.out), Path::new("/tmp/x/benchmarks"));
    let defaults = Cli::try_parse_from(["sluice-bench", "report"]).expect("parse");
    let Command::Report(d) = defaults.command else {
        panic!("not report")
    };
    assert_eq!(d.out, Path::new("docs/benchmarks.md"));
    assert_eq!(d.budget_minutes, 15);
    assert!(Cli::try_parse_from(["sluice-bench", "report", "--skip", "nonsense"]).is_err());
}
