//! The pieces the end-to-end tests share for running real programs: the `sluice` binary of
//! this build, processes started inside a network namespace with their output in a log file,
//! scratch directories kept when a test fails, plain HTTP GETs on an API inside a namespace,
//! waiting for a UDP listener or `/healthz`, and SIPp's `-trace_stat` files.

#![allow(dead_code)] // each test file that includes this uses a different part of it

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sluice_dataplane::netns::NetNs;

/// `name` in `PATH`, or in `/usr/sbin`, `/usr/bin` or `/sbin`.
pub fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The `sluice` binary of this build: `SLUICE_BIN`, or what `cargo build -p sluice --bin sluice`
/// reports (a no-op when `cargo test --workspace` has just built it; `cargo test -p
/// sluice-tests` builds no other package's binaries). It runs with the environment `cargo test`
/// gave this process, so the same toolchain and target directory, `--release` if this test
/// was built so.
pub fn sluice_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("SLUICE_BIN") {
        return Ok(bin.into());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the tests crate has no parent directory")?;
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "-p", "sluice", "--bin", "sluice"])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let release = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.file_name()? == "release"))
        .unwrap_or(false);
    if release {
        build.arg("--release");
    }
    // Another cargo may hold the build directory's lock for a while, but not for ever.
    let mut child = build
        .spawn()
        .map_err(|e| format!("running cargo build: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("cargo build: {e}"))? {
            break status;
        }
        if start.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("cargo build -p sluice took over 15 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("cargo build -p sluice: {status}"));
    }
    // One JSON message a line; the compiler-artifact one of the `sluice` binary names its
    // executable.
    out.lines()
        .filter(|l| l.contains("\"compiler-artifact\"") && l.contains("\"name\":\"sluice\""))
        .find_map(|l| {
            let rest = l.split("\"executable\":\"").nth(1)?;
            let exe = rest.split('"').next()?;
            (!exe.is_empty()).then(|| PathBuf::from(exe.replace("\\\\", "\\")))
        })
        .ok_or_else(|| "cargo build reported no `sluice` executable".to_owned())
}

/// A process started in a namespace with `ip netns exec` (which execs it, so the pid is the
/// process's own), its output in a log file. Dropping it ends it by its pid.
pub struct Proc {
    pub what: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
    /// How often `wait` looks whether it has exited.
    poll: Duration,
}

impl Proc {
    pub fn spawn(ns: &NetNs, what: &str, program: &Path, args: &[String], dir: &Path) -> Self {
        let log = dir.join(format!("{what}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Proc {
            what: what.to_owned(),
            child,
            log,
            status: None,
            poll: Duration::from_millis(50),
        }
    }

    /// `wait` looks every `poll` (50 ms unless set).
    pub fn polling(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its PID (`ip netns exec` execs the program in place, so it is the program's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait");
        }
        self.status
    }

    /// Waits for it to exit by itself, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(self.poll);
        }
        None
    }

    /// Panics with its log if it has exited.
    pub fn check_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} exited early ({status}):\n{}", self.what, self.log());
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after 5 s.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if self.wait(Duration::from_secs(5)).is_none() {
            eprintln!("{} ignored SIGTERM; killing it", self.what);
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A scratch directory, `$TMPDIR/sluice-<tag>-<pid>`, removed unless the test failed (then its
/// logs are worth reading) or `SLUICE_KEEP_LOGS` is set.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("work dir");
        WorkDir(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.0.display());
        } else if std::env::var_os("SLUICE_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `GET path` on the HTTP server at `addr`, from inside `ns`: (status, body). `read_timeout`
/// bounds the wait for the response.
pub fn http_get(
    ns: &NetNs,
    addr: &'static str,
    path: &str,
    read_timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let path = path.to_owned();
    ns.run(move || -> std::io::Result<(u16, String)> {
        let socket: SocketAddr = addr.parse().expect("API address");
        let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(read_timeout))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_owned()))
    })
    .unwrap_or_else(|e| {
        Err(std::io::Error::other(format!(
            "entering {}: {e:?}",
            ns.name()
        )))
    })
}

/// Waits (at most 20 s) until `GET /healthz` on the API at `api` in `ns` answers 200, while
/// `proc` (what serves it) keeps running; `what` names it in the failure.
pub fn wait_for_healthz(
    ns: &NetNs,
    api: &'static str,
    read_timeout: Duration,
    proc: &mut Proc,
    what: &str,
) {
    let start = Instant::now();
    loop {
        proc.check_running();
        if matches!(http_get(ns, api, "/healthz", read_timeout), Ok((200, _))) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} never came up:\n{}",
            proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until something listens on UDP `port` in `ns`.
pub fn wait_for_udp_listener(ns: &NetNs, port: u16, proc: &mut Proc) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        proc.check_running();
        let filter = format!("sport = :{port}");
        if let Ok(out) = ns.exec(&["ss", "-H", "-u", "-l", "-n", &filter]) {
            if !out.trim().is_empty() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} does not listen on UDP port {port}:\n{}",
        proc.what,
        proc.log()
    );
}

/// SIPp's `-trace_stat` file: the named column of its last line.
pub fn sipp_stat_text(file: &Path, column: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let i = header.iter().position(|h| *h == column)?;
    Some(last.get(i)?.trim().to_owned())
}

/// A numeric column of SIPp's `-trace_stat` file.
pub fn sipp_stat(file: &Path, column: &str) -> Option<u64> {
    sipp_stat_text(file, column)?.parse().ok()
}
