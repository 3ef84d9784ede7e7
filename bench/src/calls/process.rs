//! Programs run inside a namespace for the signalling benchmarks: `ip netns exec` execs the
//! program in place, so the child's PID is the program's own, and dropping the handle ends it by
//! that PID (SIGTERM, then SIGKILL).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_dataplane::netns::NetNs;

/// A program running in a namespace, its output in `<dir>/<what>.log`.
pub struct NsProcess {
    pub what: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl NsProcess {
    /// Starts `program args` in `ns` with `dir` as its working directory.
    pub fn spawn(
        ns: &NetNs,
        what: &str,
        program: &Path,
        args: &[String],
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let log = dir.join(format!("{what}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name()])
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {what} ({})", program.display()))?;
        tracing::debug!(pid = child.id(), log = %log.display(), "{what} started");
        Ok(Self {
            what: what.to_owned(),
            child,
            log,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Fails with the end of its log when it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.exited() {
            bail!(
                "{} exited ({status}); the end of its log ({}):\n{}",
                self.what,
                self.log.display(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// Waits at most `limit` for it to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after 5 s.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the PID is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if self.wait(Duration::from_secs(5)).is_none() {
            tracing::warn!(pid, "{} ignored SIGTERM for 5 s; killing it", self.what);
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits (at most `limit`) until something in `ns` listens on UDP `addr:port`, while `process`
/// keeps running.
pub fn wait_for_udp_listener(
    ns: &NetNs,
    addr: &str,
    port: u16,
    process: &mut NsProcess,
    limit: Duration,
) -> Result<()> {
    let start = Instant::now();
    let filter = format!("sport = :{port}");
    let wanted = format!("{addr}:{port}");
    loop {
        process.check_alive()?;
        if let Ok(out) = ns.exec(&["ss", "-H", "-u", "-l", "-n", &filter]) {
            if out.lines().any(|l| l.contains(&wanted)) {
                return Ok(());
            }
        }
        if start.elapsed() > limit {
            bail!(
                "{} does not listen on UDP {wanted} after {limit:?}; its log:\n{}",
                process.what,
                process.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scratch directory, `$TMPDIR/sluice-bench-<tag>-<pid>`, removed on drop unless kept.
pub struct WorkDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl WorkDir {
    pub fn new(tag: &str, keep: bool) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("sluice-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("work directory kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
