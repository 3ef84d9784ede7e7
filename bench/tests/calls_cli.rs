//! `sluice-bench calls` and `sluice-bench register` end to end, as a benchmarker runs them: the
//! binary builds its own namespaces, starts `sluice run` (and, with `--against kamailio`,
//! Kamailio with rtpengine), drives SIPp through it and prints one JSON object on its last line
//! of stdout. This checks the report's contract (keys, and that at a low rate every call and
//! registration succeeds and each call gets a CDR), not performance. About 35 s.
//!
//! Without root, `sipp`, `kamailio` or `rtpengine` this skips with the reason, unless `CI` is
//! set: then it fails (`.ci/setup` installs sip-tester, kamailio and rtpengine-daemon).

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn privileged() -> bool {
    sluice_dataplane::netns::privileged_test(module_path!())
}

/// Whether `program` runs; a missing one skips the test, or fails it under CI.
fn installed(program: &str, args: &[&str]) -> bool {
    // Spawning it is enough: `sipp -v` and friends differ in their exit codes.
    let ok = Command::new(program).args(args).output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: no `{program}`"
        );
        eprintln!("skipping: no `{program}`");
    }
    ok
}

fn bench(sluice: &PathBuf, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(args)
        .args(["--json", "--sluice"])
        .arg(sluice)
        .output()
        .expect("run sluice-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sluice-bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("a last line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn sides(report: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = report
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// One step, every call or registration successful; `calls`: the CDRs equal them.
fn check_clean(report: &Value, target: &str, rate: u64, duration: u64, calls: bool) {
    for key in [
        "target",
        "scenario",
        "duration_s",
        "max_failed_ratio",
        "steps",
        "max_clean_rate",
        "proxy_rss_bytes",
    ] {
        assert!(report.get(key).is_some(), "key `{key}` missing: {report}");
    }
    assert_eq!(report["target"], target, "{report}");
    assert_eq!(report["duration_s"], duration, "{report}");
    assert_eq!(report["max_clean_rate"], rate, "{report}");
    assert!(
        report["proxy_rss_bytes"].as_u64().is_some_and(|b| b > 0),
        "{report}"
    );
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{report}");
    let step = &steps[0];
    for key in [
        "rate",
        "attempted",
        "succeeded",
        "failed",
        "failed_ratio",
        "retransmissions",
        "response_time_p50_ms",
        "response_time_p99_ms",
        "cpu_seconds",
        "cpu_per_call_us",
        "cdrs",
    ] {
        assert!(step.get(key).is_some(), "step key `{key}` missing: {step}");
    }
    assert_eq!(step["rate"], rate, "{step}");
    assert_eq!(step["attempted"], rate * duration, "{step}");
    assert_eq!(step["succeeded"], step["attempted"], "{step}");
    assert_eq!(step["failed"], 0, "{step}");
    assert_eq!(step["failed_ratio"], 0.0, "{step}");
    assert!(step["response_time_p99_ms"].is_number(), "{step}");
    assert!(
        step["cpu_seconds"].as_f64().is_some_and(|c| c > 0.0),
        "{step}"
    );
    match (target, calls) {
        ("sluice", true) => assert_eq!(step["cdrs"], step["succeeded"], "{step}"),
        _ => assert!(step["cdrs"].is_null(), "{step}"),
    }
}

#[test]
fn calls_and_registrations_report_clean_low_rate_runs() {
    if !privileged()
        || !installed("sipp", &["-v"])
        || !installed("kamailio", &["-v"])
        || !installed("rtpengine", &["--version"])
    {
        return;
    }
    let sluice = common::build_sluice();

    let alone = bench(&sluice, &["calls", "--rate", "10", "--duration", "3"]);
    assert_eq!(sides(&alone), ["sluice"], "{alone}");
    check_clean(&alone["sluice"], "sluice", 10, 3, true);

    let both = bench(
        &sluice,
        &[
            "calls",
            "--rate",
            "10",
            "--duration",
            "3",
            "--against",
            "kamailio",
        ],
    );
    assert_eq!(sides(&both), ["kamailio", "sluice"], "{both}");
    check_clean(&both["sluice"], "sluice", 10, 3, true);
    check_clean(&both["kamailio"], "kamailio", 10, 3, true);

    let register = bench(
        &sluice,
        &[
            "register",
            "--rate",
            "20",
            "--duration",
            "3",
            "--against",
            "kamailio",
        ],
    );
    assert_eq!(sides(&register), ["kamailio", "sluice"], "{register}");
    check_clean(&register["sluice"], "sluice", 20, 3, false);
    check_clean(&register["kamailio"], "kamailio", 20, 3, false);
}
