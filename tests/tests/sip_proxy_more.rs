//! More of `sluice run` between SIPp instances, in the TwoArm testbed of sip_proxy.rs:
//!
//! ```text
//! [caller ns] SIPp 10.77.1.2 ── 10.77.1.1 [relay ns: sluice run] 10.77.2.1 ── 10.77.2.2 SIPp [callee ns]
//! ```
//!
//! Sluice listens for SIP on both of its addresses, anchors the media on the relay interfaces
//! `caller/10.77.1.1` and `callee/10.77.2.1` and writes CDRs to a database in the test's
//! directory; the scenarios are in `tests/fixtures/sipp/`.
//!
//! - CANCEL (`uac_cancel.xml`, `uas_ring_cancel.xml`): the callee rings and never answers; the
//!   caller cancels after the 180, gets 200 for the CANCEL and 487 for the INVITE. The CDR has
//!   cause `cancel`, response 487 and no start time.
//! - REGISTER with digest (`register.xml`, `register_wrong_password.xml`): with a local domain
//!   `sluice.test` and the account alice/secret (a configuration file), and only the caller's
//!   network trusted (`--trust 10.77.1.0/24`). A wrong password is challenged again (401);
//!   the right one registers `alice@sluice.test` from the callee's SIP address and port. The
//!   configuration offers MD5 only (`digest_algorithms`): SIPp 3.6 answers only the first
//!   challenge and only knows MD5. The caller then calls `sip:alice@sluice.test` through the proxy, the call reaches the
//!   registered contact (`uas.xml`, echoing the caller's recording) and gets a `bye:caller`
//!   CDR with media both ways.
//! - Hold (`uac_hold.xml`, `uas_hold.xml`): once the call is up, the caller sends a re-INVITE
//!   with `a=sendonly`; the callee sees it with the relay's address toward it and `a=sendonly`,
//!   the caller gets the 200 with the relay's address toward it and `a=recvonly`, ACKs, then
//!   hangs up. One call: one CDR (`bye:caller`), one ended session on the API's `/ended`.
//! - Calls per second (`uac_short.xml`, `uas.xml`): short calls (INVITE with SDP anchored on the
//!   relay, 200, ACK, BYE) at 20, 50 and 100 calls/s, 5 s each; every call must succeed at the
//!   lowest rate and get a CDR. The rates reached and the failures are printed (informational,
//!   `--nocapture`). `calls_per_second_sweep` (ignored) steps further, 10 s a step, until more
//!   than 0.1 % fail. Both SIPp instances share the machine with `sluice run`: on a small host
//!   SIPp's own CPU is part of the limit.
//!
//! Run time: about 21 s for the four (they run in parallel, each in its own namespaces; the
//! registered call plays the 7 s recording). `SLUICE_KEEP_LOGS=1` keeps the logs, SIPp's
//! traces and the CDR database in `$TMPDIR/sluice-sip_proxy_more_<test>-<pid>/` (kept anyway
//! on failure).
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
/// The local domain and account of the REGISTER test.
const DOMAIN: &str = "sluice.test";
const USER: &str = "alice";
const PASSWORD: &str = "secret";

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
/// reports (as in sip_proxy.rs, with the same toolchain, target directory and profile).
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
            std::thread::sleep(Duration::from_millis(20));
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

/// `GET path` on the management API, from the relay namespace: the status and the body.
fn api_get(ns: &NetNs, path: &str) -> Option<(u16, String)> {
    let path = path.to_owned();
    ns.run(move || -> std::io::Result<(u16, String)> {
        let addr: SocketAddr = API.parse().expect("API address");
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {API}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
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
fn sipp_stat_text(file: &Path, column: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let i = header.iter().position(|h| *h == column)?;
    Some(last.get(i)?.trim().to_owned())
}

fn sipp_stat(file: &Path, column: &str) -> Option<u64> {
    sipp_stat_text(file, column)?.parse().ok()
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

fn s(v: &str) -> String {
    v.to_owned()
}

/// How `sluice run` is started.
struct Setup {
    /// `--trust`.
    trust: &'static str,
    /// A configuration file (`--config`), written into the test's directory.
    config: Option<String>,
    /// Whether the test plays the recording (checked to be there).
    recording: bool,
}

/// Who a SIPp instance is and where it runs.
#[derive(Clone, Copy)]
enum Side {
    Caller,
    Callee,
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

impl Bed {
    fn start(test: &str, tag: &str, setup: Setup) -> Option<Self> {
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
        if setup.recording && !Path::new(RECORDING).is_file() {
            return missing(format!(
                "{RECORDING} is missing (Debian package sip-tester)"
            ));
        }
        let sluice_bin =
            sluice_binary().unwrap_or_else(|e| panic!("{test}: the sluice binary: {e}"));
        let bed = Testbed::build(TopologyKind::TwoArm, tag).expect("testbed");
        let work = WorkDir::new(&format!("sip_proxy_more_{test}"));
        let dir = work.0.clone();
        let mut args = vec![
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
            s(setup.trust),
            s("--cdr-db"),
            dir.join("cdr.sqlite").display().to_string(),
            s("--media-timeout"),
            MEDIA_TIMEOUT_S.to_string(),
            s("--api"),
            s(API),
            s("--backend"),
            s(BACKEND),
        ];
        if let Some(config) = &setup.config {
            let path = dir.join("run.toml");
            std::fs::write(&path, config).expect("writing the configuration");
            args.push(s("--config"));
            args.push(path.display().to_string());
        }
        let mut sluice = Proc::spawn(bed.relay(), "sluice", &sluice_bin, &args, &dir);
        let start = Instant::now();
        while api_get(bed.relay(), "/healthz").map(|r| r.0) != Some(200) {
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

    fn ns(&self, side: Side) -> &NetNs {
        match side {
            Side::Caller => self.bed.caller(),
            Side::Callee => self.bed.callee(),
        }
    }

    /// `role`'s file of SIPp's traces (`stat.csv`, `errors.log`, `logs.log`, ...).
    fn trace(&self, role: &str, what: &str) -> PathBuf {
        self.dir().join(format!("{role}-{what}"))
    }

    /// Starts SIPp with `scenario` (a file in fixtures/sipp); `-m` is up to `extra`.
    fn sipp(&self, side: Side, role: &str, scenario: &str, extra: &[String]) -> Proc {
        let mut args = vec![
            s("-sf"),
            fixtures().join(scenario).display().to_string(),
            s("-timeout"),
            format!("{SIPP_TIMEOUT_S}s"),
            s("-timeout_error"),
            s("-nostdin"),
            s("-trace_stat"),
            s("-stf"),
            self.trace(role, "stat.csv").display().to_string(),
            s("-trace_err"),
            s("-error_file"),
            self.trace(role, "errors.log").display().to_string(),
            s("-trace_logs"),
            s("-log_file"),
            self.trace(role, "logs.log").display().to_string(),
        ];
        // Every message of a load run would be too much to keep.
        if !role.starts_with("load") {
            args.extend([
                s("-trace_msg"),
                s("-message_file"),
                self.trace(role, "messages.log").display().to_string(),
            ]);
        }
        args.extend_from_slice(extra);
        Proc::spawn(
            self.ns(side),
            &format!("sipp-{role}"),
            &self.sipp,
            &args,
            self.dir(),
        )
    }

    /// A UAS in the callee namespace on the callee's SIP port, echoing media, once it listens.
    /// `calls`: how many before it exits; `None`: until stopped.
    fn uas(&self, role: &str, scenario: &str, calls: Option<usize>) -> Proc {
        let callee = self.bed.callee_addr().to_string();
        let mut extra = vec![
            s("-i"),
            callee.clone(),
            s("-p"),
            SIP_PORT.to_string(),
            s("-mi"),
            callee,
            s("-mp"),
            CALLEE_MEDIA_PORT.to_string(),
            s("-rtp_echo"),
        ];
        match calls {
            Some(calls) => extra.extend([s("-m"), calls.to_string()]),
            // Until stopped: no overall timeout either (a later -timeout wins).
            None => extra.extend([s("-timeout"), s("0")]),
        }
        let mut uas = self.sipp(Side::Callee, role, scenario, &extra);
        wait_for_udp_listener(self.bed.callee(), SIP_PORT, &mut uas);
        uas
    }

    /// A UAC in the caller namespace: `calls` calls at `rate` a second through the proxy to
    /// `sip:service@callee`.
    fn uac(
        &self,
        role: &str,
        scenario: &str,
        callee: &str,
        calls: usize,
        rate: usize,
        extra: &[String],
    ) -> Proc {
        let caller = self.bed.caller_addr().to_string();
        let (service, callee) = callee.split_once('@').expect("user@host");
        let mut args = vec![
            format!("{}:{SIP_PORT}", self.bed.relay_caller_addr()),
            s("-key"),
            s("callee"),
            s(callee),
            s("-s"),
            s(service),
            s("-i"),
            caller.clone(),
            s("-p"),
            SIP_PORT.to_string(),
            s("-mi"),
            caller,
            s("-mp"),
            CALLER_MEDIA_PORT.to_string(),
            s("-m"),
            calls.to_string(),
            s("-r"),
            rate.to_string(),
        ];
        args.extend_from_slice(extra);
        self.sipp(Side::Caller, role, scenario, &args)
    }

    /// The callee's address for a transit call: `service@10.77.2.2:5060`.
    fn callee_uri(&self) -> String {
        format!("service@{}:{SIP_PORT}", self.bed.callee_addr())
    }

    fn sipp_report(&self, proc: &Proc, role: &str) -> String {
        format!(
            "{}:\n{}\nerrors:\n{}\nsluice:\n{}",
            proc.what,
            proc.log(),
            std::fs::read_to_string(self.trace(role, "errors.log")).unwrap_or_default(),
            self.sluice.log()
        )
    }

    /// Waits for a SIPp instance (within `limit`) and checks that it ran `calls` calls, all
    /// successful.
    fn expect_success(&self, proc: &mut Proc, role: &str, calls: usize, limit: Duration) {
        let Some(status) = proc.wait(limit) else {
            proc.stop();
            panic!(
                "{} did not finish in {limit:?}\n{}",
                proc.what,
                self.sipp_report(proc, role)
            );
        };
        let stat = self.trace(role, "stat.csv");
        let ok = sipp_stat(&stat, "SuccessfulCall(C)");
        let failed = sipp_stat(&stat, "FailedCall(C)");
        assert!(
            status.success() && ok == Some(calls as u64) && failed == Some(0),
            "{status}, {ok:?} successful and {failed:?} failed calls of {calls}\n{}",
            self.sipp_report(proc, role)
        );
    }

    /// UAC then UAS, both all successful.
    fn finish(&self, uac: &mut Proc, uas: &mut Proc, calls: usize) {
        self.expect_success(uac, "uac", calls, DEADLINE);
        self.expect_success(uas, "uas", calls, Duration::from_secs(15));
    }

    /// The CDRs, all of them.
    fn read_cdrs(&self) -> Vec<CdrRow> {
        let db = self.dir().join("cdr.sqlite");
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
        lines
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
            .collect()
    }

    /// The CDRs, once there are `count` of them (within 10 s).
    fn cdrs(&mut self, count: usize) -> Vec<CdrRow> {
        let start = Instant::now();
        loop {
            let rows = self.read_cdrs();
            if rows.len() >= count {
                return rows;
            }
            self.sluice.check_running();
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} CDRs of {count}: {rows:?}\nsluice:\n{}",
                rows.len(),
                self.sluice.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The one CDR of a one-call test, after making sure no second one follows.
    fn only_cdr(&mut self) -> CdrRow {
        self.cdrs(1);
        std::thread::sleep(Duration::from_millis(1500));
        let mut cdrs = self.read_cdrs();
        assert_eq!(cdrs.len(), 1, "one call, one CDR: {cdrs:?}");
        cdrs.remove(0)
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
fn a_cancelled_call_gets_a_cancel_cdr() {
    let Some(mut bed) = Bed::start(
        "a_cancelled_call_gets_a_cancel_cdr",
        "smc",
        Setup {
            trust: "10.77.0.0/16",
            config: None,
            recording: false,
        },
    ) else {
        return;
    };
    let mut uas = bed.uas("uas", "uas_ring_cancel.xml", Some(1));
    let mut uac = bed.uac("uac", "uac_cancel.xml", &bed.callee_uri(), 1, 1, &[]);
    bed.finish(&mut uac, &mut uas, 1);
    let cdr = bed.only_cdr();
    assert_eq!(cdr.get("AcctTerminateCause"), "cancel", "{cdr:?}");
    assert_eq!(cdr.get("SipResponseCode"), "487", "{cdr:?}");
    assert!(cdr.get("AcctStartTime").is_empty(), "{cdr:?}");
    assert_eq!(cdr.get("SourceIP"), bed.bed.caller_addr().to_string());
}

#[test]
fn a_registered_user_is_reached_through_the_registrar() {
    let config = format!(
        "[sip]\ndomains = [\"{DOMAIN}\"]\n# SIPp 3.6 answers only the first challenge, and only MD5\ndigest_algorithms = [\"MD5\"]\n\n[[account]]\nuser = \"{USER}\"\ndomain = \"{DOMAIN}\"\npassword = \"{PASSWORD}\"\n"
    );
    let Some(mut bed) = Bed::start(
        "a_registered_user_is_reached_through_the_registrar",
        "smr",
        Setup {
            // Only the caller: the callee's side must authenticate.
            trust: "10.77.1.0/24",
            config: Some(config),
            recording: true,
        },
    ) else {
        return;
    };
    let callee = bed.bed.callee_addr().to_string();
    // SIPp registers from the callee's SIP address and port, where the UAS will answer: the
    // registrar binds the contact to the REGISTER's source.
    let registrar: SocketAddr = format!("{}:{SIP_PORT}", bed.bed.relay_callee_addr())
        .parse()
        .expect("address");
    let register = |role: &str, scenario: &str, password: &str| {
        bed.sipp(
            Side::Callee,
            role,
            scenario,
            &[
                registrar.to_string(),
                s("-s"),
                s(USER),
                s("-key"),
                s("domain"),
                s(DOMAIN),
                s("-key"),
                s("contact_port"),
                SIP_PORT.to_string(),
                s("-au"),
                s(USER),
                s("-ap"),
                s(password),
                // The digest's uri must be the Request-URI (SIPp's default: the remote address).
                s("-auth_uri"),
                s(DOMAIN),
                s("-i"),
                callee.clone(),
                s("-p"),
                SIP_PORT.to_string(),
                s("-m"),
                s("1"),
            ],
        )
    };
    // A wrong password: challenged, then challenged again.
    let mut wrong = register(
        "register-wrong",
        "register_wrong_password.xml",
        "not-secret",
    );
    bed.expect_success(&mut wrong, "register-wrong", 1, Duration::from_secs(20));
    // The right one: challenged, then 200.
    let mut reg = register("register", "register.xml", PASSWORD);
    bed.expect_success(&mut reg, "register", 1, Duration::from_secs(20));
    let log = bed.sluice.log();
    assert!(
        log.contains("registered"),
        "no registration in the log:\n{log}"
    );

    // The registered contact answers: sip:alice@sluice.test reaches 10.77.2.2:5060.
    let mut uas = bed.uas("uas", "uas.xml", Some(1));
    let mut uac = bed.uac("uac", "uac.xml", &format!("{USER}@{DOMAIN}"), 1, 1, &[]);
    bed.finish(&mut uac, &mut uas, 1);
    let messages = std::fs::read_to_string(bed.trace("uas", "messages.log")).unwrap_or_default();
    assert!(
        messages.contains(&format!("INVITE sip:{USER}@{callee}:{SIP_PORT}")),
        "the INVITE did not go to the registered contact:\n{messages}"
    );
    let cdr = bed.only_cdr();
    assert_eq!(cdr.get("AcctTerminateCause"), "bye:caller", "{cdr:?}");
    assert_eq!(cdr.get("SipResponseCode"), "200", "{cdr:?}");
    assert!(!cdr.get("AcctStartTime").is_empty(), "{cdr:?}");
    assert_media_both_ways(&cdr);
}

#[test]
fn a_call_put_on_hold_keeps_one_cdr() {
    let Some(mut bed) = Bed::start(
        "a_call_put_on_hold_keeps_one_cdr",
        "smh",
        Setup {
            trust: "10.77.0.0/16",
            config: None,
            recording: false,
        },
    ) else {
        return;
    };
    let mut uas = bed.uas("uas", "uas_hold.xml", Some(1));
    let mut uac = bed.uac("uac", "uac_hold.xml", &bed.callee_uri(), 1, 1, &[]);
    bed.finish(&mut uac, &mut uas, 1);

    let uac_log = std::fs::read_to_string(bed.trace("uac", "logs.log")).unwrap_or_default();
    let uas_log = std::fs::read_to_string(bed.trace("uas", "logs.log")).unwrap_or_default();
    let toward_caller = bed.bed.relay_caller_addr();
    let toward_callee = bed.bed.relay_callee_addr();
    let logged = |log: &str, line: String| log.lines().any(|l| l.trim() == line);
    assert!(
        logged(&uac_log, format!("answer c={toward_caller}")),
        "the first answer is not the relay's toward the caller:\n{uac_log}"
    );
    assert!(
        logged(&uas_log, format!("hold offer c={toward_callee} a=sendonly")),
        "the hold offer did not reach the callee through the relay with a=sendonly:\n{uas_log}"
    );
    assert!(
        logged(
            &uac_log,
            format!("hold answer c={toward_caller} a=recvonly")
        ),
        "the hold answer is not the relay's with a=recvonly:\n{uac_log}"
    );

    let cdr = bed.only_cdr();
    assert_eq!(cdr.get("AcctTerminateCause"), "bye:caller", "{cdr:?}");
    assert_eq!(cdr.get("SipResponseCode"), "200", "{cdr:?}");
    assert!(!cdr.get("AcctStartTime").is_empty(), "{cdr:?}");

    // The relay ended one session, the call's.
    let (status, body) = api_get(bed.bed.relay(), "/ended?summary=1").expect("GET /ended");
    assert_eq!(status, 200, "{body}");
    let ended: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ended["count"], 1, "{ended:#}");
    let call_id = cdr.get("AcctSessionId");
    assert!(body.contains(call_id), "{call_id} not in {ended:#}");
}

/// One step of a load run: `rate` calls a second for `seconds`.
struct Step {
    rate: usize,
    calls: usize,
    ok: u64,
    failed: u64,
    wall: Duration,
    response_time: String,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "-r {:>4} -m {:>5}: {:>5} ok, {:>3} failed ({:.2} %), {:6.1} calls/s sustained over {:5.2} s, mean INVITE→200 {}",
            self.rate,
            self.calls,
            self.ok,
            self.failed,
            100.0 * self.failed as f64 / self.calls.max(1) as f64,
            self.ok as f64 / self.wall.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.response_time
        )
    }
}

/// Short calls at each rate for `seconds` each, one UAS throughout; stops after a step where
/// more than `max_failed` of the calls failed. Checks that every call of the first step
/// succeeded, and that each successful call got a CDR.
fn load(test: &str, tag: &str, rates: &[usize], seconds: usize, max_failed: f64) {
    let Some(mut bed) = Bed::start(
        test,
        tag,
        Setup {
            trust: "10.77.0.0/16",
            config: None,
            recording: false,
        },
    ) else {
        return;
    };
    let mut uas = bed.uas("load-uas", "uas.xml", None);
    let callee = bed.callee_uri();
    let mut steps = Vec::new();
    for &rate in rates {
        let calls = rate * seconds;
        let role = format!("load-uac-{rate}");
        let limit = Duration::from_secs(seconds as u64 + 40);
        let started = Instant::now();
        // -l: no more calls at once than a few seconds' worth, so an overloaded proxy shows
        // up as failures rather than as an ever longer queue.
        let mut uac = bed.uac(
            &role,
            "uac_short.xml",
            &callee,
            calls,
            rate,
            &[
                s("-l"),
                (rate * 5).to_string(),
                s("-timeout"),
                format!("{}s", seconds + 30),
                s("-recv_timeout"),
                s("10000"),
            ],
        );
        let status = uac.wait(limit);
        let wall = started.elapsed();
        if status.is_none() {
            uac.stop();
        }
        uas.check_running();
        let stat = bed.trace(&role, "stat.csv");
        let step = Step {
            rate,
            calls,
            ok: sipp_stat(&stat, "SuccessfulCall(C)").unwrap_or(0),
            failed: sipp_stat(&stat, "FailedCall(C)").unwrap_or(0),
            wall,
            response_time: sipp_stat_text(&stat, "ResponseTime1(C)").unwrap_or_default(),
        };
        eprintln!("{test}: {step}");
        if steps.is_empty() {
            assert!(
                status.is_some_and(|s| s.success()) && step.ok == calls as u64,
                "not every call succeeded at {rate} calls/s: {step}\n{}",
                bed.sipp_report(&uac, &role)
            );
        }
        let failed_share = step.failed as f64 / calls as f64;
        steps.push(step);
        if failed_share > max_failed {
            break;
        }
    }
    uas.stop();
    let successful: u64 = steps.iter().map(|s| s.ok).sum();
    let attempted: usize = steps.iter().map(|s| s.calls).sum();
    // A CDR for every successful call (an overloaded step may take a while to end the rest).
    let start = Instant::now();
    let cdrs = loop {
        let cdrs = bed.read_cdrs();
        if cdrs.len() as u64 >= successful || start.elapsed() > Duration::from_secs(30) {
            break cdrs;
        }
        bed.sluice.check_running();
        std::thread::sleep(Duration::from_millis(500));
    };
    let bye = cdrs
        .iter()
        .filter(|c| c.get("AcctTerminateCause") == "bye:caller")
        .count();
    assert!(
        cdrs.len() as u64 >= successful,
        "{} CDRs for {successful} successful calls",
        cdrs.len()
    );
    // At the first rate, where every call succeeded, every CDR says so.
    assert!(
        bye >= steps[0].calls,
        "{bye} bye:caller CDRs, fewer than the {} calls of the first step",
        steps[0].calls
    );
    let best = steps
        .iter()
        .filter(|s| s.failed as f64 <= max_failed * s.calls as f64)
        .map(|s| s.ok as f64 / s.wall.as_secs_f64())
        .fold(0.0, f64::max);
    eprintln!(
        "{test}: {successful} of {attempted} calls succeeded, {} CDRs ({bye} bye:caller); \
         best sustained rate with at most {:.1} % failed: {best:.1} calls/s",
        cdrs.len(),
        max_failed * 100.0
    );
}

#[test]
fn calls_per_second() {
    // 5 s at each rate: about 20 s in all.
    load("calls_per_second", "smp", &[20, 50, 100], 5, 0.001);
}

/// The longer measurement: 10 s a step, doubling until more than 0.1 % of the calls fail.
#[test]
#[ignore = "a measurement of a few minutes; run it with --ignored"]
fn calls_per_second_sweep() {
    load(
        "calls_per_second_sweep",
        "sms",
        &[50, 100, 200, 400, 800, 1600],
        10,
        0.001,
    );
}
