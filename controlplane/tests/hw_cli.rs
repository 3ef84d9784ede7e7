//! `sluice hw plan` and `sluice hw apply --dry-run` as a user runs them, on the fake trees in
//! `hardware/testdata/`.

use std::path::PathBuf;
use std::process::Command;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../hardware/testdata")
        .join(name)
}

fn sluice(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        // Built-in profiles are compiled in: any working directory will do.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run sluice");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_reference_box_as_json() {
    let root = testdata("reference-2s-4port");
    let (ok, stdout, stderr) = sluice(&[
        "hw",
        "plan",
        "--profile",
        "reference-2s-4port",
        "--sysfs-root",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");

    let control: Vec<u64> = plan["control_cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(control, [0, 8]);

    let workers = plan["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 6);
    let nic_node = |iface: &str| if iface < "eth2" { 0 } else { 1 };
    let mut cores = Vec::new();
    for w in workers {
        let iface = w["iface"].as_str().unwrap();
        let core = w["core"].as_u64().unwrap();
        assert!(w["queue"].is_u64());
        assert_eq!(w["numa_node"].as_u64().unwrap(), nic_node(iface), "{w}");
        assert!(!control.contains(&core), "{w} on the control plane's core");
        assert!(!cores.contains(&core), "{w} shares a core");
        cores.push(core);
    }

    let m = &plan["memory"];
    let (total, budget, planned) = (
        m["total_bytes"].as_u64().unwrap(),
        m["budget_bytes"].as_u64().unwrap(),
        m["planned_bytes"].as_u64().unwrap(),
    );
    assert_eq!(total, 4_039_000 * 1024);
    assert!(planned <= budget, "{planned} > {budget}");
    assert!(total - budget >= 1 << 30, "less than 1 GiB left to the OS");
    assert_eq!(plan["warnings"].as_array().unwrap().len(), 0);
}

#[test]
fn plan_two_core_vm_warns_and_succeeds() {
    let root = testdata("two-core-vm");
    let (ok, stdout, stderr) = sluice(&["hw", "plan", "--sysfs-root", root.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 CPU(s): workers share"), "{stdout}");
}

#[test]
fn apply_dry_run_prints_the_commands() {
    let root = testdata("reference-2s-4port");
    let (ok, stdout, stderr) = sluice(&[
        "hw",
        "apply",
        "--profile",
        "reference-2s-4port",
        "--sysfs-root",
        root.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(ok, "{stderr}");
    for line in [
        "ethtool -L eth2 combined 2",
        "ethtool -G eth0 rx 1024 tx 1024",
        "sysctl -w net.ipv4.conf.all.accept_local=1",
        "echo 5 > /proc/irq/52/smp_affinity_list",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}

#[test]
fn apply_from_a_fake_tree_is_refused_without_dry_run() {
    let root = testdata("reference-2s-4port");
    let (ok, _, stderr) = sluice(&["hw", "apply", "--sysfs-root", root.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("refusing"), "{stderr}");
}

#[test]
fn errors_name_the_file_and_the_profile() {
    let root = testdata("broken-no-online");
    let (ok, _, stderr) = sluice(&["hw", "plan", "--sysfs-root", root.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("sys/devices/system/cpu/online: missing"),
        "{stderr}"
    );

    let (ok, _, stderr) = sluice(&["hw", "plan", "--profile", "nope"]);
    assert!(!ok);
    assert!(stderr.contains("reference-2s-4port"), "{stderr}");
}
