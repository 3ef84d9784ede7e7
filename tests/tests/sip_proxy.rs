//! `sluice run`, the whole appliance, as a transit proxy between two SIPp instances:
//!
//! ```text
//! [caller ns] SIPp UAC 10.77.1.2 ── 10.77.1.1 [relay ns: sluice run] 10.77.2.1 ── 10.77.2.2 SIPp UAS [callee ns]
//! ```
//!
//! Sluice listens for SIP on both of its addresses, trusts 10.77.0.0/16 (so no authentication),
//! anchors the media on the relay interfaces `caller/10.77.1.1` and `callee/10.77.2.1`, ends
//! calls after 2 s without media and writes CDRs to a database in the test's directory. The UAC
//! (`tests/fixtures/sipp/uac*.xml`) sends its INVITE to 10.77.1.1 with the callee,
//! `sip:service@10.77.2.2:5060`, in the Request-URI, follows the Record-Route set for ACK and
//! BYE, and plays the A-law recording sip-tester ships; the UAS (`uas*.xml`, `-rtp_echo`) echoes
//! it.
//!
//! Checked, from the CDR database (`sluice cdrs --csv`):
//! - calls hung up by the caller: each call succeeds for SIPp on both sides, its CDR has cause
//!   `bye:caller`, response 200, and packets and bytes in both directions;
//! - a busy callee (486): the CDR has cause `failed:486` and no start time;
//! - a caller that never hangs up: once the recording is over, the relay sees no media for 2 s,
//!   the proxy sends a BYE to each side (both SIPp scenarios expect it) and the CDR has cause
//!   `media-timeout` with the media of both directions.
//!
//! Run time: about 12 s (the three tests run in parallel, each in its own namespaces; the
//! recording alone is 7 s). `SLUICE_KEEP_LOGS=1` keeps the logs, SIPp's traces and the CDR
//! database in `$TMPDIR/sluice-sip_proxy_<test>-<pid>/` (kept anyway on failure).
//!
//! Without root or `sipp` this skips with the reason, unless `CI` is set: then it fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sluice_dataplane::netns::{privileged_test, NetNs};
use sluice_dataplane::testbed::{Testbed, TopologyKind};

const RECORDING: &str = "/usr/share/sip-tester/g711a.pcap";
const API: &str = "127.0.0.1:8089";
const SIP_PORT: u16 = 5060;
const CALLER_MEDIA_PORT: u16 = 6000;
const CALLEE_MEDIA_PORT: u16 = 7000;
const MEDIA_TIMEOUT_S: u64 = 2;
const SIPP_TIMEOUT_S: u64 = 60;
const DEADLINE: Duration = Duration::from_secs(SIPP_TIMEOUT_S + 30);
/// The forwarding path: the socket relay runs anywhere namespaces do.
const BACKEND: &str = "sockets";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sipp")
}

fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The `sluice` binary of this build: `SLUICE_BIN`, or what `cargo build -p sluice --bin sluice`
/// reports (as in kamailio.rs, with the same toolchain, target directory and profile).
fn sluice_binary() -> Result<PathBuf, String> {
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
    let out = build
        .output()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build -p sluice: {}", out.status));
    }
    // The compiler-artifact line of the `sluice` binary names its executable.
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
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
struct Proc {
    what: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(ns: &NetNs, what: &str, program: &Path, args: &[String], dir: &Path) -> Self {
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
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait");
        }
        self.status
    }

    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn check_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} exited early ({status}):\n{}", self.what, self.log());
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after 5 s.
    fn stop(&mut self) {
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

/// A scratch directory, removed unless the test failed.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(tag: &str) -> Self {
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

/// `GET path` on the management API, from the relay namespace: the status.
fn api_status(ns: &NetNs, path: &str) -> Option<u16> {
    let path = path.to_owned();
    ns.run(move || -> std::io::Result<u16> {
        let addr: SocketAddr = API.parse().expect("API address");
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {API}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    })
    .ok()?
    .ok()
}

fn wait_for_udp_listener(ns: &NetNs, port: u16, proc: &mut Proc) {
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
fn sipp_stat(file: &Path, column: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let i = header.iter().position(|h| *h == column)?;
    last.get(i)?.trim().parse().ok()
}

/// One CDR, by column name.
struct CdrRow(Vec<(String, String)>);

impl CdrRow {
    fn get(&self, column: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == column)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no column {column}"))
    }

    fn count(&self, column: &str) -> u64 {
        self.get(column)
            .parse()
            .unwrap_or_else(|_| panic!("{column} = {:?}", self.get(column)))
    }
}

impl std::fmt::Debug for CdrRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

/// Everything a test runs: the namespaces, `sluice run` in the middle, and SIPp.
struct Bed {
    // Dropped in this order: processes first, then the namespaces, then the logs.
    sluice: Proc,
    bed: Testbed,
    sipp: PathBuf,
    sluice_bin: PathBuf,
    work: WorkDir,
}

fn s(v: &str) -> String {
    v.to_owned()
}

impl Bed {
    fn start(test: &str, tag: &str) -> Option<Self> {
        if !privileged_test(test) {
            return None;
        }
        let missing = |why: String| -> Option<Self> {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: CI must run this test: {why}");
            }
            eprintln!("skipping {test}: {why}");
            None
        };
        let Some(sipp) = in_path("sipp") else {
            return missing("no `sipp` binary (Debian package sip-tester)".into());
        };
        if !Path::new(RECORDING).is_file() {
            return missing(format!(
                "{RECORDING} is missing (Debian package sip-tester)"
            ));
        }
        let sluice_bin =
            sluice_binary().unwrap_or_else(|e| panic!("{test}: the sluice binary: {e}"));
        let bed = Testbed::build(TopologyKind::TwoArm, tag).expect("testbed");
        let work = WorkDir::new(&format!("sip_proxy_{test}"));
        let dir = work.0.clone();
        let mut sluice = Proc::spawn(
            bed.relay(),
            "sluice",
            &sluice_bin,
            &[
                s("run"),
                s("--listen"),
                format!("{}:{SIP_PORT}", bed.relay_caller_addr()),
                s("--listen"),
                format!("{}:{SIP_PORT}", bed.relay_callee_addr()),
                s("--interface"),
                format!("caller/{}", bed.relay_caller_addr()),
                s("--interface"),
                format!("callee/{}", bed.relay_callee_addr()),
                s("--trust"),
                s("10.77.0.0/16"),
                s("--cdr-db"),
                dir.join("cdr.sqlite").display().to_string(),
                s("--media-timeout"),
                MEDIA_TIMEOUT_S.to_string(),
                s("--api"),
                s(API),
                s("--backend"),
                s(BACKEND),
            ],
            &dir,
        );
        let start = Instant::now();
        while api_status(bed.relay(), "/healthz") != Some(200) {
            sluice.check_running();
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sluice run never came up:\n{}",
                sluice.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for_udp_listener(bed.relay(), SIP_PORT, &mut sluice);
        Some(Bed {
            sluice,
            bed,
            sipp,
            sluice_bin,
            work,
        })
    }

    fn dir(&self) -> &Path {
        &self.work.0
    }

    /// Starts SIPp with `scenario` (a file in fixtures/sipp) for `calls` calls.
    fn sipp(&self, role: &str, scenario: &str, calls: usize, extra: &[String]) -> Proc {
        let dir = self.dir();
        let mut args = vec![
            s("-sf"),
            fixtures().join(scenario).display().to_string(),
            s("-m"),
            calls.to_string(),
            s("-timeout"),
            format!("{SIPP_TIMEOUT_S}s"),
            s("-timeout_error"),
            s("-nostdin"),
            s("-trace_stat"),
            s("-stf"),
            dir.join(format!("{role}-stat.csv")).display().to_string(),
            s("-trace_msg"),
            s("-message_file"),
            dir.join(format!("{role}-messages.log"))
                .display()
                .to_string(),
            s("-trace_err"),
            s("-error_file"),
            dir.join(format!("{role}-errors.log")).display().to_string(),
        ];
        args.extend_from_slice(extra);
        let ns = if role == "uas" {
            self.bed.callee()
        } else {
            self.bed.caller()
        };
        Proc::spawn(ns, &format!("sipp-{role}"), &self.sipp, &args, dir)
    }

    /// The UAS in the callee namespace, echoing media, once it listens.
    fn uas(&self, scenario: &str, calls: usize) -> Proc {
        let callee = self.bed.callee_addr().to_string();
        let mut uas = self.sipp(
            "uas",
            scenario,
            calls,
            &[
                s("-i"),
                callee.clone(),
                s("-p"),
                SIP_PORT.to_string(),
                s("-mi"),
                callee,
                s("-mp"),
                CALLEE_MEDIA_PORT.to_string(),
                s("-rtp_echo"),
            ],
        );
        wait_for_udp_listener(self.bed.callee(), SIP_PORT, &mut uas);
        uas
    }

    /// The UAC in the caller namespace: `calls` calls at once through the proxy.
    fn uac(&self, scenario: &str, calls: usize) -> Proc {
        let caller = self.bed.caller_addr().to_string();
        self.sipp(
            "uac",
            scenario,
            calls,
            &[
                format!("{}:{SIP_PORT}", self.bed.relay_caller_addr()),
                s("-key"),
                s("callee"),
                format!("{}:{SIP_PORT}", self.bed.callee_addr()),
                s("-s"),
                s("service"),
                s("-i"),
                caller.clone(),
                s("-p"),
                SIP_PORT.to_string(),
                s("-mi"),
                caller,
                s("-mp"),
                CALLER_MEDIA_PORT.to_string(),
                s("-r"),
                calls.to_string(),
                s("-l"),
                calls.to_string(),
            ],
        )
    }

    /// Waits for both SIPp instances and checks that all `calls` succeeded for the UAC.
    fn finish(&mut self, uac: &mut Proc, uas: &mut Proc, calls: usize) {
        let status = match uac.wait(DEADLINE) {
            Some(status) => status,
            None => {
                uac.stop();
                panic!(
                    "the SIPp UAC did not finish in {DEADLINE:?}:\n{}\nsluice:\n{}",
                    uac.log(),
                    self.sluice.log()
                );
            }
        };
        let uas_status = uas.wait(Duration::from_secs(15));
        let stat = self.dir().join("uac-stat.csv");
        let ok = sipp_stat(&stat, "SuccessfulCall(C)");
        let failed = sipp_stat(&stat, "FailedCall(C)");
        assert!(
            status.success() && ok == Some(calls as u64) && failed == Some(0),
            "SIPp UAC: {status}, {ok:?} successful and {failed:?} failed calls of {calls}\n{}\nerrors:\n{}\nsluice:\n{}",
            uac.log(),
            std::fs::read_to_string(self.dir().join("uac-errors.log")).unwrap_or_default(),
            self.sluice.log()
        );
        assert!(
            uas_status.is_some_and(|s| s.success()),
            "SIPp UAS: {uas_status:?}\n{}\nerrors:\n{}\nsluice:\n{}",
            uas.log(),
            std::fs::read_to_string(self.dir().join("uas-errors.log")).unwrap_or_default(),
            self.sluice.log()
        );
    }

    /// The CDRs, once there are `count` of them (within 10 s).
    fn cdrs(&mut self, count: usize) -> Vec<CdrRow> {
        let db = self.dir().join("cdr.sqlite");
        let start = Instant::now();
        loop {
            let out = Command::new(&self.sluice_bin)
                .args(["cdrs", "--csv", "--limit", "0", "--db"])
                .arg(&db)
                .output()
                .expect("sluice cdrs");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut lines = text.lines();
            let header: Vec<String> = lines
                .next()
                .unwrap_or_default()
                .split(',')
                .map(str::to_owned)
                .collect();
            // No field of these calls holds a comma or a quote.
            let rows: Vec<CdrRow> = lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    CdrRow(
                        header
                            .iter()
                            .cloned()
                            .zip(l.split(',').map(str::to_owned))
                            .collect(),
                    )
                })
                .collect();
            if rows.len() >= count {
                return rows;
            }
            self.sluice.check_running();
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} CDRs of {count}: {rows:?}\n{}\nsluice:\n{}",
                rows.len(),
                String::from_utf8_lossy(&out.stderr),
                self.sluice.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn assert_media_both_ways(cdr: &CdrRow) {
    for column in [
        "AcctInputPackets",
        "AcctOutputPackets",
        "AcctInputOctets",
        "AcctOutputOctets",
    ] {
        assert!(cdr.count(column) > 0, "{column} is 0: {cdr:?}");
    }
}

#[test]
fn calls_through_sluice_run_get_cdrs() {
    const CALLS: usize = 3;
    let Some(mut bed) = Bed::start("calls_through_sluice_run_get_cdrs", "spc") else {
        return;
    };
    let started = Instant::now();
    let mut uas = bed.uas("uas.xml", CALLS);
    let mut uac = bed.uac("uac.xml", CALLS);
    bed.finish(&mut uac, &mut uas, CALLS);
    let cdrs = bed.cdrs(CALLS);
    assert_eq!(cdrs.len(), CALLS, "{cdrs:?}");
    for cdr in &cdrs {
        assert_eq!(cdr.get("AcctTerminateCause"), "bye:caller", "{cdr:?}");
        assert_eq!(cdr.get("SipResponseCode"), "200", "{cdr:?}");
        assert!(!cdr.get("AcctStartTime").is_empty(), "{cdr:?}");
        assert_eq!(cdr.get("SourceIP"), bed.bed.caller_addr().to_string());
        assert_media_both_ways(cdr);
    }
    eprintln!("{CALLS} calls with CDRs in {:?}", started.elapsed());
}

#[test]
fn a_busy_callee_gets_a_failed_cdr() {
    let Some(mut bed) = Bed::start("a_busy_callee_gets_a_failed_cdr", "spb") else {
        return;
    };
    let mut uas = bed.uas("uas_busy.xml", 1);
    let mut uac = bed.uac("uac_busy.xml", 1);
    bed.finish(&mut uac, &mut uas, 1);
    let cdrs = bed.cdrs(1);
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(cdrs[0].get("AcctTerminateCause"), "failed:486", "{cdrs:?}");
    assert_eq!(cdrs[0].get("SipResponseCode"), "486", "{cdrs:?}");
    assert!(cdrs[0].get("AcctStartTime").is_empty(), "{cdrs:?}");
}

#[test]
fn a_silent_call_is_ended_by_the_media_timeout() {
    let Some(mut bed) = Bed::start("a_silent_call_is_ended_by_the_media_timeout", "spt") else {
        return;
    };
    let started = Instant::now();
    // Both scenarios expect a BYE from the proxy and answer it.
    let mut uas = bed.uas("uas.xml", 1);
    let mut uac = bed.uac("uac_no_bye.xml", 1);
    bed.finish(&mut uac, &mut uas, 1);
    let cdrs = bed.cdrs(1);
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    let cdr = &cdrs[0];
    assert_eq!(cdr.get("AcctTerminateCause"), "media-timeout", "{cdr:?}");
    assert_media_both_ways(cdr);
    // The recording lasts 7 s, then 2 s without media.
    let length: f64 = cdr.get("AcctSessionTime").parse().expect("session time");
    assert!(
        (7.0 + MEDIA_TIMEOUT_S as f64 - 0.5..7.0 + MEDIA_TIMEOUT_S as f64 + 3.0).contains(&length),
        "session time {length}: {cdr:?}"
    );
    let log = bed.sluice.log();
    assert!(log.contains("media-timeout"), "{log}");
    eprintln!("the silent call ended after {:?}", started.elapsed());
}
