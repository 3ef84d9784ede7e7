//! What a process costs, from `/proc/<pid>`: CPU time (all its threads), resident memory, the
//! memory of the BPF maps it holds, and the run time of the BPF programs it holds.
//!
//! The relay under test is either a separate process (`sluice relay`, `rtpengine`) or this one
//! (the in-process backends); either way it is read the same way.

use std::fs;

/// This process, for the in-process backends.
pub fn self_pid() -> u32 {
    std::process::id()
}

/// User plus system CPU time of the whole process (every thread, dead ones included), in
/// nanoseconds: `/proc/<pid>/stat` fields 14 and 15.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text).map(|ticks| ticks * 1_000_000_000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

/// utime + stime in clock ticks, after the `(comm)` field (which may hold spaces).
fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory (`VmRSS`) in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kb_line(&text, "VmRSS:").map(|kb| kb * 1024)
}

fn parse_kb_line(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The value of `key:` in an fdinfo text.
fn fdinfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Calls `f` with the fdinfo text of every fd of `pid` that is a `kind` (`bpf-map`,
/// `bpf-prog`) anonymous inode, once per distinct object (`map_id`/`prog_id`).
fn for_each_bpf_fd(pid: u32, kind: &str, id_key: &str, mut f: impl FnMut(&str)) {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    let wanted = format!("anon_inode:{kind}");
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        if target.to_string_lossy() != wanted {
            continue;
        }
        let Ok(info) = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        // The same map or program may be open under several descriptors.
        if let Some(id) = fdinfo_field(&info, id_key) {
            if !seen.insert(id) {
                continue;
            }
        }
        f(&info);
    }
}

/// The memory charged for the BPF maps `pid` holds open (`memlock:` of each map's fdinfo), in
/// bytes, and how many maps.
pub fn bpf_map_bytes(pid: u32) -> (u64, usize) {
    let mut bytes = 0;
    let mut maps = 0;
    for_each_bpf_fd(pid, "bpf-map", "map_id", |info| {
        bytes += fdinfo_field(info, "memlock").unwrap_or(0);
        maps += 1;
    });
    (bytes, maps)
}

/// The run time (ns) and run count summed over the BPF programs `pid` holds open (kernel
/// statistics: counted only while BPF_ENABLE_STATS is in force).
pub fn bpf_prog_runtime(pid: u32) -> (u64, u64) {
    let mut time = 0;
    let mut count = 0;
    for_each_bpf_fd(pid, "bpf-prog", "prog_id", |info| {
        time += fdinfo_field(info, "run_time_ns").unwrap_or(0);
        count += fdinfo_field(info, "run_cnt").unwrap_or(0);
    });
    (time, count)
}

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// CPU time, ns.
    pub cpu_ns: u64,
    /// BPF program run time, ns, and runs.
    pub bpf_run_ns: u64,
    pub bpf_runs: u64,
}

impl Sample {
    /// Reads `pid` now.
    pub fn read(pid: u32) -> Sample {
        let (bpf_run_ns, bpf_runs) = bpf_prog_runtime(pid);
        Sample {
            cpu_ns: process_cpu_ns(pid).unwrap_or(0),
            bpf_run_ns,
            bpf_runs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let stat = "42 (rtp engine) S 1 1 1 0 -1 4194368 0 0 0 0 100 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(150));
        assert_eq!(
            parse_kb_line("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:"),
            Some(1234)
        );
        let info = "pos:\t0\nflags:\t02000002\nmap_type:\t1\nmemlock:\t4096\nmap_id:\t7\n";
        assert_eq!(fdinfo_field(info, "memlock"), Some(4096));
        assert_eq!(fdinfo_field(info, "map_id"), Some(7));
        assert_eq!(fdinfo_field(info, "run_cnt"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = self_pid();
        assert!(rss_bytes(pid).is_some_and(|b| b > 0));
        assert!(process_cpu_ns(pid).is_some());
        let _ = bpf_map_bytes(pid);
    }
}
