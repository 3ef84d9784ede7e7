//! Runs one part of the suite as a subprocess, bounded in time, and keeps its last stdout line.
//!
//! The child runs in a process group of its own, so that on a timeout the relays and SIP
//! processes it started go with it; the network namespaces it created (named `<hint>-<pid>-<n>`
//! by `NetNs::create`) are then deleted, since it had no chance to.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines of the child's stderr kept for the report when it fails.
const STDERR_TAIL: usize = 12;
/// Lines of stderr, and characters of each, that a failure's reason quotes.
const REASON_LINES: usize = 3;
const REASON_LINE_CHARS: usize = 200;
/// How long a child has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// What a bounded subprocess left.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status (`None` when it had to be killed).
    pub status: Option<ExitStatus>,
    /// It ran past its timeout and was stopped.
    pub timed_out: bool,
    /// It was stopped because the report was interrupted (SIGINT, SIGTERM).
    pub interrupted: bool,
    /// The last non-empty line of its stdout.
    pub last_line: Option<String>,
    /// The last lines of its stderr.
    pub stderr_tail: Vec<String>,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl Finished {
    /// The parsed last line, or why there is none: a sentence for the report.
    pub fn json<T: serde::de::DeserializeOwned>(&self, timeout: Duration) -> Result<T, String> {
        let tail = || {
            let lines: Vec<String> = self
                .stderr_tail
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .map(|l| match l.char_indices().nth(REASON_LINE_CHARS) {
                    Some((cut, _)) => format!("{}…", &l[..cut]),
                    None => l.to_owned(),
                })
                .collect();
            let last = &lines[lines.len().saturating_sub(REASON_LINES)..];
            if last.is_empty() {
                String::new()
            } else {
                format!("; its last words: {}", last.join(" / "))
            }
        };
        if self.interrupted {
            return Err("interrupted".to_owned());
        }
        if self.timed_out {
            return Err(format!(
                "stopped after its {} s timeout{}",
                timeout.as_secs(),
                tail()
            ));
        }
        match self.status {
            Some(s) if s.success() => {}
            Some(s) => return Err(format!("exited with {s}{}", tail())),
            None => return Err(format!("did not finish{}", tail())),
        }
        let line = self
            .last_line
            .as_deref()
            .ok_or_else(|| format!("printed nothing on stdout{}", tail()))?;
        serde_json::from_str(line)
            .map_err(|e| format!("its last line is not the JSON expected ({e})"))
    }
}

/// Runs `program args`, forwarding its stderr prefixed with `label`, and stops it (and its
/// process group) after `timeout` or as soon as `stop` is set. Being in a group of its own, the
/// child does not see the terminal's Ctrl-C: the caller sets `stop` from its signal handler.
pub fn run_bounded(
    program: &Path,
    args: &[String],
    timeout: Duration,
    label: &str,
    stop: &AtomicBool,
) -> std::io::Result<Finished> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    tracing::info!(pid, part = label, "started");

    let mut stdout = child.stdout.take().expect("stdout is piped");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stderr = child.stderr.take().expect("stderr is piped");
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
    let err_reader = {
        let tail = Arc::clone(&tail);
        let label = label.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{label}] {line}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(strip_ansi(&line));
            }
        })
    };

    let mut timed_out = false;
    let mut interrupted = false;
    let status = loop {
        match child.try_wait()? {
            Some(status) => break Some(status),
            None if stop.load(Ordering::Relaxed) => {
                interrupted = true;
                tracing::warn!(pid, part = label, "interrupted; stopping its process group");
                break stop_group(&mut child);
            }
            None if started.elapsed() >= timeout => {
                timed_out = true;
                tracing::warn!(pid, part = label, "timed out; stopping its process group");
                break stop_group(&mut child);
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    if timed_out || interrupted {
        delete_namespaces_of(pid);
    }
    let text = out_reader.join().unwrap_or_default();
    let _ = err_reader.join();
    let stderr_tail = tail
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    Ok(Finished {
        status,
        timed_out,
        interrupted,
        last_line: last_line(&text).map(str::to_owned),
        stderr_tail,
        elapsed: started.elapsed(),
    })
}

/// SIGTERM to the child's group, then SIGKILL after the grace period.
fn stop_group(child: &mut std::process::Child) -> Option<ExitStatus> {
    let group = child.id() as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions; the group is our child's, created with
    // process_group(0) so its id is the child's pid.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            // The child is gone; its group may not be.
            // SAFETY: as above.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    child.wait().ok()
}

/// Deletes the network namespaces a killed child created (`<hint>-<pid>-<n>`).
fn delete_namespaces_of(pid: u32) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if namespace_of(&name, pid) {
            tracing::warn!(ns = %name, "deleting a namespace the stopped part left");
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// Whether `name` is `<hint>-<pid>-<n>`.
fn namespace_of(name: &str, pid: u32) -> bool {
    let Some((rest, n)) = name.rsplit_once('-') else {
        return false;
    };
    let Some((_, p)) = rest.rsplit_once('-') else {
        return false;
    };
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && p == pid.to_string()
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// Drops terminal colour codes (tracing colours its output on a terminal).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_namespaces_by_pid() {
        assert!(namespace_of("bench-caller-4242-0", 4242));
        assert!(namespace_of("bench-relay-4242-17", 4242));
        assert!(!namespace_of("bench-relay-14242-1", 4242));
        assert!(!namespace_of("bench-relay-4242-x", 4242));
        assert!(!namespace_of("4242-1", 4242));
        assert!(!namespace_of("other", 4242));
    }

    #[test]
    fn keeps_the_last_line_and_strips_colours() {
        assert_eq!(last_line("a\n{\"x\": 1}\n\n"), Some("{\"x\": 1}"));
        assert_eq!(last_line("\n \n"), None);
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m boom"),
            "2026 ERROR boom"
        );
    }

    #[test]
    fn runs_bounded_and_reports_failures() {
        let sh = Path::new("/bin/sh");
        let go = AtomicBool::new(false);
        let args = |s: &str| vec!["-c".to_owned(), s.to_owned()];
        let ok = run_bounded(
            sh,
            &args("echo noise; echo '{\"a\": 1}'"),
            Duration::from_secs(10),
            "t",
            &go,
        )
        .expect("runs");
        let v: serde_json::Value = ok.json(Duration::from_secs(10)).expect("json");
        assert_eq!(v["a"], 1);

        let failed = run_bounded(
            sh,
            &args("echo \"error: unrecognized subcommand 'calls'\" >&2; exit 2"),
            Duration::from_secs(10),
            "t",
            &go,
        )
        .expect("runs");
        let e = failed
            .json::<serde_json::Value>(Duration::from_secs(10))
            .expect_err("fails");
        assert!(e.contains("unrecognized subcommand"), "{e}");

        let slow =
            run_bounded(sh, &args("sleep 30"), Duration::from_millis(300), "t", &go).expect("runs");
        assert!(slow.timed_out);
        assert!(slow.elapsed < Duration::from_secs(10));
        let e = slow
            .json::<serde_json::Value>(Duration::from_millis(300))
            .expect_err("timed out");
        assert!(e.contains("timeout"), "{e}");

        let stop = AtomicBool::new(true);
        let stopped =
            run_bounded(sh, &args("sleep 30"), Duration::from_secs(30), "t", &stop).expect("runs");
        assert!(stopped.interrupted && !stopped.timed_out);
        assert!(stopped.elapsed < Duration::from_secs(10));
        assert_eq!(
            stopped.json::<serde_json::Value>(Duration::from_secs(30)),
            Err("interrupted".to_owned())
        );
    }
}
