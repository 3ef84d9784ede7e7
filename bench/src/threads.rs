//! CPU time of this process's threads, by name, from `/proc/self/task/*/`.
//!
//! The userspace relays (AF_XDP workers `afxdp-q*`, the socket worker `sluice-sockets`) run as
//! threads of the benchmark process, so their cost per packet is their CPU time over the run
//! divided by the packets they forwarded. The CPU time is user plus system time, so it includes
//! the system calls and whatever softirq work the kernel ran in the thread's context.

use std::collections::HashMap;
use std::fs;

/// CPU time in nanoseconds per thread id, for the threads whose name starts with a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadTimes {
    by_tid: HashMap<u32, u64>,
}

impl ThreadTimes {
    /// Reads every thread of this process whose name (`comm`, at most 15 bytes) starts with `prefix`.
    pub fn read(prefix: &str) -> Self {
        let mut by_tid = HashMap::new();
        let Ok(tasks) = fs::read_dir("/proc/self/task") else {
            return Self { by_tid };
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let path = task.path();
            let Ok(comm) = fs::read_to_string(path.join("comm")) else {
                continue;
            };
            if !comm.trim_end().starts_with(prefix) {
                continue;
            }
            let ns = fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| parse_schedstat(&s))
                .or_else(|| {
                    fs::read_to_string(path.join("stat"))
                        .ok()
                        .and_then(|s| parse_stat(&s))
                });
            if let Some(ns) = ns {
                by_tid.insert(tid, ns);
            }
        }
        Self { by_tid }
    }

    /// Number of threads read.
    pub fn threads(&self) -> usize {
        self.by_tid.len()
    }

    /// CPU time of these threads since `earlier` (a thread that was not there yet counts from
    /// zero), in nanoseconds.
    pub fn since(&self, earlier: &ThreadTimes) -> u64 {
        self.by_tid
            .iter()
            .map(|(tid, now)| now.saturating_sub(earlier.by_tid.get(tid).copied().unwrap_or(0)))
            .sum()
    }
}

/// `schedstat`: time on CPU (ns), time waiting (ns), timeslices.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `stat`: utime and stime (fields 14 and 15) in clock ticks, after the `(comm)` field, which
/// may contain spaces.
fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some((utime + stime) * 1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123_456));
        let stat = "42 (afxdp q0) S 1 1 1 0 -1 4194368 0 0 0 0 100 50 0 0 20 0 1 0";
        // SAFETY: as above.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(parse_stat(stat), Some(150 * 1_000_000_000 / hz));
    }

    #[test]
    fn finds_a_named_thread_and_its_cpu_time() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("bench-thrtest".into())
            .spawn(move || {
                let mut x = 0u64;
                for i in 0..5_000_000u64 {
                    x = x.wrapping_add(std::hint::black_box(i));
                }
                std::hint::black_box(x);
                ready_tx.send(()).ok();
                rx.recv().ok();
            })
            .expect("spawn");
        ready_rx.recv().expect("ready");
        let times = ThreadTimes::read("bench-thrtest");
        assert_eq!(times.threads(), 1);
        assert!(times.since(&ThreadTimes::default()) > 0);
        assert_eq!(ThreadTimes::read("no-such-thread").threads(), 0);
        tx.send(()).ok();
        handle.join().expect("join");
    }
}
