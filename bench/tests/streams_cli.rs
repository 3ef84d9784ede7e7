//! `sluice-bench streams` end to end, as a benchmarker runs it: the binary builds its own
//! namespaces, relays a small load, and prints one JSON object on its last line of stdout.
//! This checks the report's contract (keys and consistency), not performance.

use std::process::Command;

use serde_json::Value;

fn privileged() -> bool {
    sluice_dataplane::netns::privileged_test(module_path!())
}

fn streams(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(["streams", "--json", "--duration", "2"])
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

fn check_clean(report: &Value, backend: &str, streams: u64) {
    for key in [
        "backend",
        "streams",
        "duration_s",
        "sent",
        "received",
        "lost",
        "duplicated",
        "reordered",
        "loss_ratio",
        "latency_us",
        "relay_ns_per_packet",
        "relay_kernel_ns_per_packet",
        "relay_user_ns_per_packet",
        "relay_drops",
        "counters_match",
        "generator_saturated",
    ] {
        assert!(report.get(key).is_some(), "key `{key}` missing: {report}");
    }
    for key in ["p50", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][key].is_u64(),
            "latency_us.{key}: {report}"
        );
    }
    assert_eq!(report["backend"], backend);
    assert_eq!(report["streams"], streams);
    // 50 packets/s per stream for 2 s.
    assert_eq!(report["sent"].as_u64(), Some(streams * 100), "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["received"], report["sent"], "{report}");
    assert_eq!(report["counters_match"], true, "{report}");
    assert_eq!(report["relay_packets"], report["sent"], "{report}");
    assert_eq!(report["relay_drops"], 0, "{report}");
    // The cost per packet: the kernel program's (xdp, afxdp), the workers' (afxdp, sockets), and
    // their sum.
    let positive = |key: &str| report[key].as_f64().is_some_and(|ns| ns > 0.0);
    assert!(positive("relay_ns_per_packet"), "{report}");
    assert_eq!(
        positive("relay_kernel_ns_per_packet"),
        backend != "sockets",
        "{report}"
    );
    assert_eq!(
        positive("relay_user_ns_per_packet"),
        backend != "xdp",
        "{report}"
    );
    if backend == "sockets" {
        assert!(report["relay_kernel_ns_per_packet"].is_null(), "{report}");
    }
    if backend == "xdp" {
        assert!(report["relay_user_ns_per_packet"].is_null(), "{report}");
    }
}

/// One test, runs in sequence: each run's generator spins a core, and two at once on a 2-core
/// machine starve the receivers, which would measure the machine, not the relay. About 25 s.
#[test]
fn every_backend_reports_clean_runs() {
    if !privileged() {
        return;
    }
    let report = streams(&["--backend", "xdp", "--streams", "100"]);
    check_clean(&report, "xdp", 100);
    assert_eq!(report["generator"], "xdp");
    assert!(
        report["relay_ns_per_packet"]
            .as_f64()
            .is_some_and(|ns| ns > 0.0),
        "{report}"
    );

    let report = streams(&[
        "--backend",
        "xdp",
        "--streams",
        "50",
        "--topology",
        "one-arm",
        "--generator",
        "sockets",
    ]);
    check_clean(&report, "xdp", 50);
    assert_eq!(report["topology"], "one-arm");
    assert_eq!(report["generator"], "sockets");

    // The three backends side by side: one JSON object keyed by backend on the last line.
    let all = streams(&["--backend", "all", "--streams", "50"]);
    let object = all.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["afxdp", "sockets", "xdp"], "{all}");
    for backend in ["xdp", "afxdp", "sockets"] {
        check_clean(&all[backend], backend, 50);
        assert_eq!(all[backend]["generator"], "xdp");
        assert_eq!(all[backend]["topology"], "two-arm");
    }

    // The userspace relays with a socket generator, hairpinned.
    for backend in ["afxdp", "sockets"] {
        let report = streams(&[
            "--backend",
            backend,
            "--streams",
            "50",
            "--topology",
            "one-arm",
            "--generator",
            "sockets",
        ]);
        check_clean(&report, backend, 50);
        assert_eq!(report["topology"], "one-arm");
        assert_eq!(report["generator"], "sockets");
    }
}
