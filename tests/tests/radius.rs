//! RADIUS accounting from `sluice run` to a real FreeRADIUS:
//!
//! ```text
//! [caller ns] SIPp UAC ── [relay ns: sluice run ──UDP 127.0.0.1:1813── freeradius -X] ── SIPp UAS [callee ns]
//! ```
//!
//! FreeRADIUS runs in the relay namespace, on its loopback, with the minimal configuration of
//! `tests/fixtures/freeradius/radiusd.conf` (one accounting listener, one client with the shared
//! secret, every Accounting-Request written to a `detail` file) and Sluice's own dictionary
//! (`controlplane/src/radius/dictionary.sluice`), all copied into the test's directory: nothing
//! under /etc is read or changed. The calls are placed as in sip_proxy.rs.
//!
//! Checked:
//! - a call with media: FreeRADIUS receives exactly one Start and one Stop for it, with the
//!   Call-ID as Acct-Session-Id, octets, packets and session time equal to the SQLite CDR's,
//!   Acct-Terminate-Cause User-Request and our cause `bye:caller`; the first configured server
//!   has nothing listening, so Sluice fails over to the second;
//! - a wrong shared secret: FreeRADIUS drops the requests ("Shared secret is incorrect"), Sluice
//!   gets no answer and says so, the records stay queued in the CDR database; restarted with the
//!   right secret, Sluice sends them (once each, with their delay) from the queue.
//!
//! - the command line: `--radius` with the secret from `$SLUICE_RADIUS_SECRET`, which
//!   `--check` does not print; without a secret, the error names the field.
//!
//! Run time: about 15 s (the two tests run in parallel). `SLUICE_KEEP_LOGS=1` keeps the logs,
//! FreeRADIUS's configuration, log and detail file in `$TMPDIR/sluice-radius_<test>-<pid>/`
//! and `$TMPDIR/sluice-radius-server_<test>-<pid>/` (kept anyway on failure).
//!
//! Without root, `sipp` or `freeradius` this skips with the reason, unless `CI` is set: then it
//! fails.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/sip_bed.rs"]
mod sip_bed;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{in_path, sipp_stat, sluice_binary, wait_for_udp_listener, Proc, WorkDir};
use sip_bed::{
    fixtures, s, Bed, CdrRow, Setup, API, BACKEND, CALLEE_MEDIA_PORT, CALLER_MEDIA_PORT, DEADLINE,
    MEDIA_TIMEOUT_S, SIPP_TIMEOUT_S, SIP_PORT,
};
use sluice_dataplane::netns::NetNs;

/// Where FreeRADIUS listens, in the relay namespace.
const RADIUS_PORT: u16 = 1813;
/// Where nothing listens: the first server Sluice is given, to fail over from.
const DEAD_PORT: u16 = 1814;
const NAS_IDENTIFIER: &str = "sluice-e2e";

/// One Accounting-Request as FreeRADIUS's `detail` module wrote it: attribute names to values
/// (quotes removed).
#[derive(Debug, Clone)]
struct Received(HashMap<String, String>);

impl Received {
    fn get(&self, name: &str) -> &str {
        self.0
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn count(&self, name: &str) -> u64 {
        self.get(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} = {:?}", self.get(name)))
    }
}

/// `freeradius -X` in a namespace, with its own configuration directory.
struct FreeRadius {
    proc: Proc,
    work: WorkDir,
}

impl FreeRadius {
    fn start(ns: &NetNs, test: &str, secret: &str) -> Self {
        let work = WorkDir::new(&format!("radius-server_{test}"));
        let dir = work.0.clone();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/freeradius");
        let config = std::fs::read_to_string(fixture.join("radiusd.conf"))
            .expect("the FreeRADIUS fixture")
            .replace("@DIR@", &dir.display().to_string())
            .replace("@PORT@", &RADIUS_PORT.to_string())
            .replace("@SECRET@", secret);
        std::fs::write(dir.join("radiusd.conf"), config).expect("radiusd.conf");
        let dictionary = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../controlplane/src/radius/dictionary.sluice");
        std::fs::copy(&dictionary, dir.join("dictionary.sluice")).expect("dictionary.sluice");
        // FreeRADIUS reads `dictionary` in its configuration directory after its own.
        std::fs::write(dir.join("dictionary"), "$INCLUDE dictionary.sluice\n").expect("dictionary");
        for sub in ["log", "acct", "run"] {
            std::fs::create_dir_all(dir.join(sub)).expect("FreeRADIUS directories");
        }
        let binary = in_path("freeradius").expect("checked by the caller");
        let args = [s("-X"), s("-d"), dir.display().to_string()];
        let mut proc = Proc::spawn(ns, "freeradius", &binary, &args, &dir);
        let start = Instant::now();
        while !proc.log().contains("Ready to process requests") {
            proc.check_running();
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "FreeRADIUS did not start:\n{}",
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        FreeRadius { proc, work }
    }

    /// Every request the detail file holds, oldest first.
    fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(self.work.0.join("acct/detail")).unwrap_or_default();
        text.split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                Received(
                    block
                        .lines()
                        .filter(|l| l.starts_with('\t'))
                        .filter_map(|l| {
                            let (k, v) = l.trim().split_once(" = ")?;
                            Some((k.to_owned(), v.trim_matches('"').to_owned()))
                        })
                        .collect(),
                )
            })
            .collect()
    }

    /// The requests for `call_id`, once a Stop for it is there (within 20 s).
    fn call_records(&mut self, call_id: &str, sluice: &mut Proc) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let records: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.0.get("Acct-Session-Id").map(String::as_str) == Some(call_id))
                .collect();
            if records
                .iter()
                .any(|r| r.0.get("Acct-Status-Type").map(String::as_str) == Some("Stop"))
            {
                // Anything sent twice would have come with the Stop.
                std::thread::sleep(Duration::from_millis(500));
                return self
                    .received()
                    .into_iter()
                    .filter(|r| r.0.get("Acct-Session-Id").map(String::as_str) == Some(call_id))
                    .collect();
            }
            self.proc.check_running();
            sluice.check_running();
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no Stop for {call_id} at FreeRADIUS: {records:?}\nsluice:\n{}\nfreeradius:\n{}",
                sluice.log(),
                self.proc.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Skips (or fails under CI) without FreeRADIUS.
fn freeradius_present(test: &str) -> bool {
    if in_path("freeradius").is_some() {
        return true;
    }
    let why = "no `freeradius` binary (Debian package freeradius)";
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI must run this test: {why}");
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// The `[radius]` section: a dead server first, then FreeRADIUS; short timeouts so that the
/// failover takes well under a second.
fn radius_config(secret_file: &Path) -> String {
    format!(
        "[radius]\n\
         servers = [\"127.0.0.1:{DEAD_PORT}\", \"127.0.0.1:{RADIUS_PORT}\"]\n\
         secret_file = \"{}\"\n\
         nas_identifier = \"{NAS_IDENTIFIER}\"\n\
         timeout_ms = 300\n\
         retries = 1\n",
        secret_file.display()
    )
}

/// A secret file outside the bed's directory (which `Bed::start` makes anew).
fn secret_file(test: &str, secret: &str) -> (WorkDir, PathBuf) {
    let work = WorkDir::new(&format!("radius-secret_{test}"));
    let path = work.0.join("radius.secret");
    std::fs::write(&path, format!("{secret}\n")).expect("secret file");
    // As an operator would keep it (Sluice warns about a secret everyone can read).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (work, path)
}

fn start_bed(test: &str, tag: &str, config: String) -> Option<Bed> {
    if !freeradius_present(test) {
        return None;
    }
    Bed::start(
        test,
        tag,
        Setup {
            file: "radius",
            trust: "10.77.0.0/16",
            config: Some(config),
            recording: true,
            poll: Duration::from_millis(50),
        },
    )
}

/// SIPp as sip_proxy.rs runs it: the UAS in the callee namespace (echoing media), the UAC in the
/// caller namespace sending through the proxy.
fn sipp(bed: &Bed, role: &str, scenario: &str, extra: &[String]) -> Proc {
    let dir = bed.dir();
    let mut args = vec![
        s("-sf"),
        fixtures().join(scenario).display().to_string(),
        s("-m"),
        s("1"),
        s("-timeout"),
        format!("{SIPP_TIMEOUT_S}s"),
        s("-timeout_error"),
        s("-nostdin"),
        s("-trace_stat"),
        s("-stf"),
        dir.join(format!("{role}-stat.csv")).display().to_string(),
        s("-trace_err"),
        s("-error_file"),
        dir.join(format!("{role}-errors.log")).display().to_string(),
    ];
    args.extend_from_slice(extra);
    let ns = if role.starts_with("uas") {
        bed.bed.callee()
    } else {
        bed.bed.caller()
    };
    bed.spawn_sipp(ns, &format!("sipp-{role}"), &args)
}

/// One call from `uac` to `uas.xml`, checked to succeed for both.
fn one_call(bed: &Bed, role: &str, uac: &str) {
    let callee = bed.bed.callee_addr().to_string();
    let caller = bed.bed.caller_addr().to_string();
    let mut uas = sipp(
        bed,
        &format!("uas-{role}"),
        "uas.xml",
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
    wait_for_udp_listener(bed.bed.callee(), SIP_PORT, &mut uas);
    let mut uac = sipp(
        bed,
        &format!("uac-{role}"),
        uac,
        &[
            format!("{}:{SIP_PORT}", bed.bed.relay_caller_addr()),
            s("-key"),
            s("callee"),
            format!("{}:{SIP_PORT}", bed.bed.callee_addr()),
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
        ],
    );
    let status = uac.wait(DEADLINE);
    let uas_status = uas.wait(Duration::from_secs(15));
    let ok = sipp_stat(
        &bed.dir().join(format!("uac-{role}-stat.csv")),
        "SuccessfulCall(C)",
    );
    assert!(
        status.is_some_and(|s| s.success()) && ok == Some(1),
        "SIPp UAC: {status:?}, {ok:?} successful calls\n{}\nsluice:\n{}",
        uac.log(),
        bed.sluice.log()
    );
    assert!(
        uas_status.is_some_and(|s| s.success()),
        "SIPp UAS: {uas_status:?}\n{}",
        uas.log()
    );
}

/// Exactly one Start and one Stop; returns them.
fn start_and_stop(records: &[Received]) -> (&Received, &Received) {
    let of = |kind: &str| -> Vec<&Received> {
        records
            .iter()
            .filter(|r| r.get("Acct-Status-Type") == kind)
            .collect()
    };
    let (starts, stops) = (of("Start"), of("Stop"));
    assert_eq!(
        (starts.len(), stops.len(), records.len()),
        (1, 1, 2),
        "one Start and one Stop: {records:?}"
    );
    (starts[0], stops[0])
}

/// The Stop says what the CDR says.
fn assert_stop_matches_cdr(stop: &Received, cdr: &CdrRow) {
    for (attribute, column) in [
        ("Acct-Input-Octets", "AcctInputOctets"),
        ("Acct-Output-Octets", "AcctOutputOctets"),
        ("Acct-Input-Packets", "AcctInputPackets"),
        ("Acct-Output-Packets", "AcctOutputPackets"),
    ] {
        assert_eq!(
            stop.count(attribute),
            cdr.count(column),
            "{attribute} vs {column}: {stop:?} {cdr:?}"
        );
    }
    assert_eq!(stop.count("Acct-Input-Gigawords"), 0);
    let session: f64 = cdr.get("AcctSessionTime").parse().expect("AcctSessionTime");
    assert_eq!(
        stop.count("Acct-Session-Time"),
        session.floor() as u64,
        "{stop:?} {cdr:?}"
    );
    assert_eq!(stop.get("Acct-Terminate-Cause"), "User-Request");
    assert_eq!(
        stop.get("Sluice-Termination-Cause"),
        cdr.get("AcctTerminateCause")
    );
    assert_eq!(stop.get("Sluice-Sip-From-Tag"), cdr.get("SipFromTag"));
    assert_eq!(stop.get("Sluice-Sip-To-Tag"), cdr.get("SipToTag"));
    assert_eq!(stop.get("Calling-Station-Id"), cdr.get("SipFromURI"));
    assert_eq!(stop.get("Called-Station-Id"), cdr.get("SipToURI"));
    assert_eq!(stop.get("Sluice-Source-IP"), cdr.get("SourceIP"));
    // SIPp calls from a trusted peer, which is billed by its address.
    assert_eq!(cdr.get("BillingParty"), cdr.get("SourceIP"), "{cdr:?}");
    assert_eq!(stop.get("User-Name"), cdr.get("BillingParty"), "{stop:?}");
    assert_eq!(stop.count("Sluice-Sip-Response-Code"), 200);
    assert_eq!(stop.get("NAS-Identifier"), NAS_IDENTIFIER);
    assert_eq!(stop.get("NAS-IP-Address"), "127.0.0.1");
}

#[test]
fn a_call_is_accounted_to_freeradius_after_a_failover() {
    const TEST: &str = "a_call_is_accounted_to_freeradius_after_a_failover";
    let (_secret_dir, secret) = secret_file(TEST, "s3cret-e2e");
    let Some(mut bed) = start_bed(TEST, "rda", radius_config(&secret)) else {
        return;
    };
    let mut radius = FreeRadius::start(bed.bed.relay(), TEST, "s3cret-e2e");
    one_call(&bed, "call", "uac.xml");
    let cdr = bed.only_cdr();
    assert_eq!(cdr.get("AcctTerminateCause"), "bye:caller");
    let records = radius.call_records(cdr.get("AcctSessionId"), &mut bed.sluice);
    let (start, stop) = start_and_stop(&records);
    assert_stop_matches_cdr(stop, &cdr);
    for absent in [
        "Acct-Input-Octets",
        "Acct-Session-Time",
        "Acct-Terminate-Cause",
    ] {
        assert!(!start.has(absent), "{absent} in the Start: {start:?}");
    }
    assert_eq!(start.get("Sluice-Sip-From-Tag"), cdr.get("SipFromTag"));
    assert!(
        stop.count("Acct-Input-Octets") > 0 && stop.count("Acct-Output-Octets") > 0,
        "media both ways: {stop:?}"
    );
    let log = bed.sluice.log();
    assert!(
        log.contains("fails over"),
        "the dead first server was left for the second:\n{log}"
    );
}

/// `sluice run`'s arguments as `Bed::start` gives them (to start it again on the same database).
fn sluice_args(bed: &Bed) -> Vec<String> {
    let dir = bed.dir();
    vec![
        s("run"),
        s("--listen"),
        format!("{}:{SIP_PORT}", bed.bed.relay_caller_addr()),
        s("--listen"),
        format!("{}:{SIP_PORT}", bed.bed.relay_callee_addr()),
        s("--interface"),
        format!("caller/{}", bed.bed.relay_caller_addr()),
        s("--interface"),
        format!("callee/{}", bed.bed.relay_callee_addr()),
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
        s("--config"),
        dir.join("run.toml").display().to_string(),
    ]
}

/// Waits (at most 15 s) for `what` in `proc`'s log.
fn wait_for_log(proc: &mut Proc, what: &str) {
    let start = Instant::now();
    while !proc.log().contains(what) {
        proc.check_running();
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{} never logged {what:?}:\n{}",
            proc.what,
            proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_wrong_secret_gets_no_answer_and_the_queue_catches_up_with_the_right_one() {
    const TEST: &str = "a_wrong_secret_gets_no_answer_and_the_queue_catches_up_with_the_right_one";
    let (_secret_dir, secret) = secret_file(TEST, "not-the-secret");
    let Some(mut bed) = start_bed(TEST, "rdb", radius_config(&secret)) else {
        return;
    };
    let mut radius = FreeRadius::start(bed.bed.relay(), TEST, "the-right-secret");
    one_call(&bed, "call", "uac_short.xml");
    let cdr = bed.only_cdr();
    // FreeRADIUS checks the Request Authenticator and drops the requests; Sluice hears nothing.
    wait_for_log(&mut radius.proc, "Shared secret is incorrect");
    wait_for_log(&mut bed.sluice, "no answer from the RADIUS server");
    wait_for_log(&mut bed.sluice, "stay queued");
    assert!(
        radius.received().is_empty(),
        "nothing accepted with a wrong secret: {:?}",
        radius.received()
    );

    // Stopped, given the right secret and started again on the same database, Sluice sends
    // what was queued.
    bed.sluice.stop();
    std::fs::write(&secret, "the-right-secret\n").expect("secret file");
    let args = sluice_args(&bed);
    bed.sluice = Proc::spawn(
        bed.bed.relay(),
        "sluice-restarted",
        &bed.sluice_bin,
        &args,
        bed.dir(),
    );
    let records = radius.call_records(cdr.get("AcctSessionId"), &mut bed.sluice);
    let (start, stop) = start_and_stop(&records);
    assert_stop_matches_cdr(stop, &cdr);
    assert_eq!(start.get("Sluice-Sip-From-Tag"), cdr.get("SipFromTag"));
    // Sent late, and saying so.
    assert!(stop.count("Acct-Delay-Time") >= 1, "{stop:?}");
    assert!(
        bed.sluice.log().contains("left from before"),
        "{}",
        bed.sluice.log()
    );
    assert_eq!(bed.read_cdrs().len(), 1, "still one CDR");
}

#[test]
fn the_command_line_takes_servers_and_keeps_the_secret_out_of_sight() {
    let bin = sluice_binary().expect("the sluice binary");
    let check = |secret: Option<&str>| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args([
            "run",
            "--check",
            "--radius",
            "127.0.0.1:18130",
            "--radius",
            "::1",
        ])
        .env_remove("SLUICE_RADIUS_SECRET");
        if let Some(secret) = secret {
            cmd.env("SLUICE_RADIUS_SECRET", secret);
        }
        cmd.output().expect("sluice run --check")
    };
    let out = check(Some("hush-hush"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("127.0.0.1:18130") && stdout.contains("[::1]:1813"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hush-hush"),
        "the secret is printed: {stdout}"
    );
    let out = check(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("radius.secret: no shared secret"),
        "{stderr}"
    );
}
