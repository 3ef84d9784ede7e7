//! The machine a report was measured on: what a reader needs to compare figures across hosts.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine and the build, at the start of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub logical_cpus: usize,
    /// Physical cores (hyperthread siblings counted once), when sysfs says.
    pub physical_cores: Option<usize>,
    /// `MemTotal`, bytes.
    pub memory_bytes: Option<u64>,
    /// The kernel release.
    pub kernel: String,
    /// Physical NIC ports (none are used: the benchmarks run on veth pairs).
    pub nics: Vec<String>,
    /// Load average (1, 5, 15 min) at the start.
    pub load_start: Option<[f64; 3]>,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// `git rev-parse --short HEAD` of the working directory, or `unknown`.
    pub commit: String,
    /// The working tree had uncommitted changes.
    pub dirty: bool,
    /// `release` or `debug`: the profile of this binary.
    pub build: String,
}

/// Describes this machine now; the commit is the working directory's, else `build_dir`'s (where
/// this binary was built, inside the repository).
pub fn describe(build_dir: Option<&Path>) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let host = sluice_hardware::Host::read()
        .map_err(|e| tracing::warn!("describing the host: {e}"))
        .ok();
    let (commit, dirty) = match (git_commit(Path::new(".")), build_dir) {
        ((c, _), Some(dir)) if c == "unknown" => git_commit(dir),
        (found, _) => found,
    };
    Machine {
        cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_owned()),
        logical_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        physical_cores: host.as_ref().map(|h| h.physical_cores().len()),
        memory_bytes: host.as_ref().map(|h| h.mem_total_bytes),
        kernel: host
            .as_ref()
            .and_then(|h| h.kernel_release.clone())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/osrelease").ok())
            .map_or_else(|| "unknown".to_owned(), |k| k.trim().to_owned()),
        nics: host.as_ref().map_or_else(Vec::new, |h| {
            h.nics
                .iter()
                .map(|n| {
                    format!(
                        "{} ({}, {} rx queue(s), native XDP {})",
                        n.name,
                        n.driver.as_deref().unwrap_or("no driver"),
                        n.rx_queues,
                        if n.xdp.native_likely {
                            "likely"
                        } else {
                            "unlikely"
                        }
                    )
                })
                .collect()
        }),
        load_start: load_average(),
        started_at: now_rfc3339(),
        commit,
        dirty,
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_owned(),
    }
}

/// The time now, RFC 3339 in UTC to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The load average now.
pub fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        matches!(key.trim(), "model name" | "Model" | "cpu model")
            .then(|| value.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
}

fn git_commit(dir: &Path) -> (String, bool) {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            (commit, dirty)
        }
        None => ("unknown".to_owned(), false),
    }
}

impl Machine {
    /// One line: CPU, cores, memory, kernel.
    pub fn summary(&self) -> String {
        let cores = match self.physical_cores {
            Some(p) if p != self.logical_cpus => {
                format!("{} CPUs ({p} physical cores)", self.logical_cpus)
            }
            _ => format!("{} CPUs", self.logical_cpus),
        };
        let memory = self.memory_bytes.map_or_else(
            || "memory unknown".to_owned(),
            |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        );
        format!(
            "{}, {cores}, {memory}, kernel {}",
            self.cpu_model, self.kernel
        )
    }
}

/// A load average as `1.23 / 0.98 / 0.50`.
pub fn load_text(load: Option<[f64; 3]>) -> String {
    load.map_or_else(
        || "unknown".to_owned(),
        |[a, b, c]| format!("{a:.2} / {b:.2} / {c:.2}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_loadavg() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) \
                       CPU @ 2.20GHz\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(
            parse_loadavg("0.52 1.10 2.00 1/234 5678\n"),
            Some([0.52, 1.10, 2.00])
        );
        assert_eq!(parse_loadavg("garbage"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn describes_this_machine() {
        let m = describe(Some(Path::new(env!("CARGO_MANIFEST_DIR"))));
        assert!(m.logical_cpus > 0);
        assert!(!m.kernel.is_empty());
        assert!(m.started_at.ends_with('Z'), "{}", m.started_at);
        assert!(m.summary().contains("CPUs"));
        assert_ne!(m.commit, "unknown", "built inside the repository");
        assert_eq!(load_text(Some([1.0, 0.5, 0.25])), "1.00 / 0.50 / 0.25");
    }
}
