//! `sluice-bench report --quick` end to end: every part runs as a subprocess (tiny step lists,
//! one- or two-second steps), and the markdown, plots, headline JSON and raw results are
//! written. This checks the report's contract (files, sections, keys), not performance.
//! The SIP parts are left out here (`--skip calls,register`: their own tests run SIPp and
//! Kamailio); the report must still say they did not run. About a minute.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn privileged() -> bool {
    sluice_dataplane::netns::privileged_test(module_path!())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn quick_report_writes_markdown_plots_and_json() {
    if !privileged() {
        return;
    }
    common::build_sluice();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("benchmarks.md");
    // A README with the markers, to see the block rewritten and nothing else touched.
    let readme = dir.path().join("README.md");
    std::fs::write(
        &readme,
        "# R\n\n<!-- bench:headline:start -->\nold\n<!-- bench:headline:end -->\n\ntail\n",
    )
    .expect("readme");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args([
            "report",
            "--quick",
            "--budget-minutes",
            "4",
            "--skip",
            "calls,register",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--readme")
        .arg(&readme)
        .current_dir(dir.path())
        .output()
        .expect("run sluice-bench report");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sluice-bench report failed:\n{stderr}\n{stdout}"
    );
    assert!(stdout.contains("Largest clean stream count"), "{stdout}");

    let md = read(&out);
    for section in [
        "## Reproduce",
        "## Machine",
        "## Largest clean stream count",
        "## Cost per packet",
        "## Latency at 200 streams",
        "## Memory",
        "## Calls per second",
        "## REGISTERs per second",
        "## How each figure is measured",
        "## Where Sluice is not ahead",
    ] {
        assert!(md.contains(section), "{section} missing:\n{md}");
    }
    assert!(md.contains("A `--quick` smoke run"), "{md}");
    assert!(md.contains("streams --backend xdp --sweep"), "{md}");
    assert!(
        md.contains("Calls per second: not measured (skipped (--skip))"),
        "{md}"
    );
    // The in-process sweeps and the latency run need only namespaces and XDP: they must have
    // produced their tables and plots.
    for row in [
        "| xdp | direct |",
        "| afxdp | direct |",
        "| sockets | direct |",
    ] {
        assert!(md.contains(row), "{row} missing:\n{md}");
    }
    assert!(md.contains("| none (kernel routing) |"), "{md}");
    let plots = dir.path().join("benchmarks");
    for svg in ["streams-vs-loss.svg", "latency.svg"] {
        let text = read(&plots.join(svg));
        assert!(text.starts_with("<svg") && text.contains("</svg>"), "{svg}");
        assert!(
            md.contains(&format!("](benchmarks/{svg})")),
            "{svg} not linked"
        );
    }
    assert!(!plots.join("calls.svg").exists());

    let headline: Value =
        serde_json::from_str(&read(&dir.path().join("benchmarks.json"))).expect("headline JSON");
    assert_eq!(headline["quick"], true);
    let streams = headline["streams"].as_array().expect("streams");
    assert!(streams.len() >= 3, "{headline}");
    for key in ["none", "xdp", "afxdp", "sockets"] {
        assert!(headline["latency_us"][key].is_array(), "{key}: {headline}");
    }
    let results: Value =
        serde_json::from_str(&read(&plots.join("results.json"))).expect("results JSON");
    assert!(
        results["sweeps"]["xdp"]["result"]["steps"].is_array(),
        "{results}"
    );

    let readme_after = read(&readme);
    assert!(readme_after.starts_with("# R\n\n<!-- bench:headline:start -->\nMeasured by"));
    assert!(readme_after.ends_with("<!-- bench:headline:end -->\n\ntail\n"));
    assert!(!readme_after.contains("old"));
}
