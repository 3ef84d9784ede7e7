//! `sluice-bench streams --sweep`, `--backend none` and `--against rtpengine` end to end, as a
//! benchmarker runs them: the report's shape, not performance. One test, run in sequence: each
//! run's generator spins a core, and two at once on a 2-core machine measure the machine.

mod common;

use std::process::Command;

use serde_json::Value;

fn privileged() -> bool {
    sluice_dataplane::netns::privileged_test(module_path!())
}

fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(["streams", "--json"])
        .args(args)
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

fn rtpengine_installed() -> bool {
    Command::new("rtpengine")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn check_step(step: &Value, streams: u64) {
    for key in [
        "backend",
        "relay",
        "setup",
        "streams",
        "sent",
        "received",
        "lost",
        "loss_ratio",
        "latency_us",
        "relay_ns_per_packet",
        "relay_cpu_s",
        "generator_cpu_s",
        "generator_saturated",
        "relay_rss_bytes",
        "bpf_map_bytes",
        "rss_per_call_bytes",
        "bpf_map_per_call_bytes",
        "memory_of",
    ] {
        assert!(step.get(key).is_some(), "key `{key}` missing: {step}");
    }
    for key in ["p50", "p99", "p999", "max"] {
        assert!(step["latency_us"][key].is_u64(), "latency_us.{key}: {step}");
    }
    assert_eq!(step["streams"], streams, "{step}");
    assert!(step["sent"].as_u64().is_some_and(|s| s > 0), "{step}");
}

fn check_sweep_keys(report: &Value) {
    for key in [
        "max_clean_streams",
        "limit",
        "loss_threshold",
        "steps",
        "elapsed_s",
    ] {
        assert!(report.get(key).is_some(), "key `{key}` missing: {report}");
    }
    assert!(
        ["relay", "generator", "max", "time"].contains(&report["limit"].as_str().unwrap_or("")),
        "{report}"
    );
}

#[test]
fn sweep_baseline_and_against_rtpengine() {
    if !privileged() {
        return;
    }

    // A two-step sweep of the in-process XDP relay.
    let sweep = bench(&[
        "--backend",
        "xdp",
        "--sweep",
        "--start",
        "20",
        "--step-factor",
        "2",
        "--max",
        "40",
        "--duration",
        "2",
        "--loss-threshold",
        "0.01",
    ]);
    check_sweep_keys(&sweep);
    let steps = sweep["steps"].as_array().expect("steps");
    assert!(!steps.is_empty() && steps.len() <= 2, "{sweep}");
    check_step(&steps[0], 20);
    if steps.len() == 2 {
        check_step(&steps[1], 40);
    }
    assert_eq!(steps[0]["setup"], "direct");
    assert_eq!(steps[0]["memory_of"], "bench process");
    assert!(steps[0]["bpf_map_bytes"].as_u64().is_some_and(|b| b > 0));
    // The top level holds the largest clean step's keys.
    let clean = sweep["max_clean_streams"].as_u64().expect("a count");
    if clean > 0 {
        assert_eq!(sweep["streams"].as_u64(), Some(clean), "{sweep}");
        assert_eq!(sweep["lost"], 0, "{sweep}");
    } else {
        assert_eq!(
            sweep["limit"], "generator",
            "a tiny sweep loses nothing: {sweep}"
        );
    }

    // The baseline: no relay, the kernel routes.
    let none = bench(&["--backend", "none", "--streams", "20", "--duration", "2"]);
    check_step(&none, 20);
    assert_eq!(none["relay"], "none");
    assert_eq!(none["lost"], 0, "{none}");
    assert!(none["relay_ns_per_packet"].is_null(), "{none}");

    if !rtpengine_installed() {
        eprintln!("skipping --against rtpengine: rtpengine is not installed (.ci/setup installs rtpengine-daemon)");
        return;
    }
    let sluice = common::build_sluice();
    let both = bench(&[
        "--backend",
        "xdp",
        "--against",
        "rtpengine",
        "--streams",
        "20",
        "--duration",
        "2",
        "--sluice-bin",
        sluice.to_str().expect("a UTF-8 path"),
    ]);
    let object = both.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["rtpengine", "sluice"], "{both}");
    for (side, relay) in [("sluice", "sluice"), ("rtpengine", "rtpengine")] {
        let r = &both[side];
        check_step(r, 20);
        check_sweep_keys(r);
        assert_eq!(r["relay"], relay, "{r}");
        assert_eq!(r["setup"], "ng", "{r}");
        assert_eq!(r["memory_of"], "relay process", "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["received"], r["sent"], "{r}");
        assert_eq!(r["source_mismatch"], 0, "{r}");
        assert!(r["max_clean_streams"].is_u64(), "{r}");
        assert!(
            r["relay_ns_per_packet"].as_f64().is_some_and(|ns| ns > 0.0),
            "{r}"
        );
        assert!(r["relay_rss_bytes"].as_u64().is_some_and(|b| b > 0), "{r}");
    }
    assert_eq!(both["sluice"]["backend"], "xdp");
    assert_eq!(both["rtpengine"]["backend"], "rtpengine");
    // Sluice's XDP program's maps are the relay process's; rtpengine has none.
    assert!(both["sluice"]["bpf_map_bytes"]
        .as_u64()
        .is_some_and(|b| b > 0));
    assert_eq!(both["rtpengine"]["bpf_map_bytes"], 0);
}
