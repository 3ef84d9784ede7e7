//! The testbed of sip_proxy.rs and sip_proxy_more.rs: `sluice run` in the relay namespace of a
//! TwoArm testbed, between SIPp instances in the caller's and the callee's namespaces, its CDRs
//! read back with `sluice cdrs --csv`. Each test file adds its own ways of starting SIPp.
//!
//! It needs `harness` (common/harness.rs) as a sibling module at the crate root.

#![allow(dead_code)] // each test file that includes this uses a different part of it

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_dataplane::netns::privileged_test;
use sluice_dataplane::testbed::{Testbed, TopologyKind};

use crate::harness::{
    http_get, in_path, sluice_binary, wait_for_healthz, wait_for_udp_listener, Proc, WorkDir,
};

pub const RECORDING: &str = "/usr/share/sip-tester/g711a.pcap";
pub const API: &str = "127.0.0.1:8089";
pub const SIP_PORT: u16 = 5060;
pub const CALLER_MEDIA_PORT: u16 = 6000;
pub const CALLEE_MEDIA_PORT: u16 = 7000;
pub const MEDIA_TIMEOUT_S: u64 = 2;
pub const SIPP_TIMEOUT_S: u64 = 60;
pub const DEADLINE: Duration = Duration::from_secs(SIPP_TIMEOUT_S + 30);
/// The forwarding path: the socket relay runs anywhere namespaces do.
pub const BACKEND: &str = "sockets";
/// How long a GET on the API may take to answer.
const API_READ_TIMEOUT: Duration = Duration::from_secs(5);

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sipp")
}

pub fn s(v: &str) -> String {
    v.to_owned()
}

/// One CDR, by column name.
pub struct CdrRow(Vec<(String, String)>);

impl CdrRow {
    pub fn get(&self, column: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == column)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no column {column}"))
    }

    pub fn count(&self, column: &str) -> u64 {
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

pub fn assert_media_both_ways(cdr: &CdrRow) {
    for column in [
        "AcctInputPackets",
        "AcctOutputPackets",
        "AcctInputOctets",
        "AcctOutputOctets",
    ] {
        assert!(cdr.count(column) > 0, "{column} is 0: {cdr:?}");
    }
}

/// How `sluice run` is started.
pub struct Setup {
    /// The work directory is `$TMPDIR/sluice-<file>_<test>-<pid>`.
    pub file: &'static str,
    /// `--trust`.
    pub trust: &'static str,
    /// A configuration file (`--config`), written into the test's directory.
    pub config: Option<String>,
    /// Whether the test plays the recording (checked to be there).
    pub recording: bool,
    /// How often waiting for a process looks whether it has exited.
    pub poll: Duration,
}

/// Everything a test runs: the namespaces, `sluice run` in the middle, and SIPp.
pub struct Bed {
    // Dropped in this order: processes first, then the namespaces, then the logs.
    pub sluice: Proc,
    pub bed: Testbed,
    pub sipp: PathBuf,
    pub sluice_bin: PathBuf,
    pub work: WorkDir,
    /// `Setup::poll`, for the SIPp processes.
    pub poll: Duration,
    /// `sluice run`'s arguments, for [`Bed::restart_sluice`].
    pub sluice_args: Vec<String>,
}

/// Starts `sluice run` with `args` in the relay namespace and waits until it serves.
fn spawn_sluice(
    bed: &Testbed,
    what: &str,
    sluice_bin: &Path,
    args: &[String],
    dir: &Path,
    poll: Duration,
) -> Proc {
    let mut sluice = Proc::spawn(bed.relay(), what, sluice_bin, args, dir).polling(poll);
    wait_for_healthz(
        bed.relay(),
        API,
        API_READ_TIMEOUT,
        &mut sluice,
        "sluice run",
    );
    wait_for_udp_listener(bed.relay(), SIP_PORT, &mut sluice);
    sluice
}

impl Bed {
    pub fn start(test: &str, tag: &str, setup: Setup) -> Option<Self> {
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
        let work = WorkDir::new(&format!("{}_{test}", setup.file));
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
        let sluice = spawn_sluice(&bed, "sluice", &sluice_bin, &args, &dir, setup.poll);
        Some(Bed {
            sluice,
            bed,
            sipp,
            sluice_bin,
            work,
            poll: setup.poll,
            sluice_args: args,
        })
    }

    /// Stops `sluice run` and starts it again with the same arguments and database (its log:
    /// `sluice-restarted`).
    pub fn restart_sluice(&mut self) {
        self.sluice.stop();
        self.sluice = spawn_sluice(
            &self.bed,
            "sluice-restarted",
            &self.sluice_bin,
            &self.sluice_args,
            self.dir(),
            self.poll,
        );
    }

    pub fn dir(&self) -> &Path {
        &self.work.0
    }

    /// `GET path` on the management API, from the relay namespace: the status and the body.
    pub fn api_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.bed.relay(), API, path, API_READ_TIMEOUT).ok()
    }

    /// Starts SIPp (`what`, logging to `<what>.log`) in `ns` with `args`.
    pub fn spawn_sipp(
        &self,
        ns: &sluice_dataplane::netns::NetNs,
        what: &str,
        args: &[String],
    ) -> Proc {
        Proc::spawn(ns, what, &self.sipp, args, self.dir()).polling(self.poll)
    }

    /// The CDRs, all of them, and what `sluice cdrs` wrote to stderr.
    fn read_cdrs_and_stderr(&self) -> (Vec<CdrRow>, String) {
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
        let rows = lines
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
        (rows, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The CDRs, all of them.
    pub fn read_cdrs(&self) -> Vec<CdrRow> {
        self.read_cdrs_and_stderr().0
    }

    /// The CDRs, once there are `count` of them (within 10 s).
    pub fn cdrs(&mut self, count: usize) -> Vec<CdrRow> {
        let start = Instant::now();
        loop {
            let (rows, stderr) = self.read_cdrs_and_stderr();
            if rows.len() >= count {
                return rows;
            }
            self.sluice.check_running();
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} CDRs of {count}: {rows:?}\n{stderr}\nsluice:\n{}",
                rows.len(),
                self.sluice.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The one CDR of a one-call test, after making sure no second one follows.
    pub fn only_cdr(&mut self) -> CdrRow {
        self.cdrs(1);
        std::thread::sleep(Duration::from_millis(1500));
        let mut cdrs = self.read_cdrs();
        assert_eq!(cdrs.len(), 1, "one call, one CDR: {cdrs:?}");
        cdrs.remove(0)
    }
}
