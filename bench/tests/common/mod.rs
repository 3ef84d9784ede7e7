//! What the `sluice-bench` command-line tests share.

use std::path::PathBuf;
use std::process::Command;

/// Builds the `sluice` binary next to `sluice-bench` (same profile), where `--setup ng`,
/// `--against`, `calls`, `register` and `report` look for it, and returns its path.
pub fn build_sluice() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_sluice-bench"));
    let dir = bench.parent().expect("a directory").to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "-p", "sluice", "--bin", "sluice"]);
    if release {
        command.arg("--release");
    }
    let status = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build -p sluice");
    assert!(status.success(), "cargo build -p sluice failed");
    let sluice = dir.join("sluice");
    assert!(sluice.is_file(), "no {}", sluice.display());
    sluice
}
