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
//!   CDR with media both ways, billed to the trusted caller's address.
//! - Restart: alice registers, `sluice run` is stopped and started again on the same database,
//!   and the call reaches her without a new REGISTER (the bindings are in the database).
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
//! Run time: about 21 s for the five (they run in parallel, each in its own namespaces; the
//! registered call plays the 7 s recording). `SLUICE_KEEP_LOGS=1` keeps the logs, SIPp's
//! traces and the CDR database in `$TMPDIR/sluice-sip_proxy_more_<test>-<pid>/` (kept anyway
//! on failure).
//!
//! Without root or `sipp` this skips with the reason, unless `CI` is set: then it fails.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/sip_bed.rs"]
mod sip_bed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{sipp_stat, sipp_stat_text, wait_for_udp_listener, Proc};
use sip_bed::{
    assert_media_both_ways, fixtures, s, Bed, CdrRow, Setup, CALLEE_MEDIA_PORT, CALLER_MEDIA_PORT,
    DEADLINE, SIPP_TIMEOUT_S, SIP_PORT,
};
use sluice_dataplane::netns::NetNs;

/// The local domain and account of the REGISTER test.
const DOMAIN: &str = "sluice.test";
const USER: &str = "alice";
const PASSWORD: &str = "secret";

/// How the tests here start `sluice run`.
fn setup(trust: &'static str, config: Option<String>, recording: bool) -> Setup {
    Setup {
        file: "sip_proxy_more",
        trust,
        config,
        recording,
        poll: Duration::from_millis(20),
    }
}

/// Who a SIPp instance is and where it runs.
#[derive(Clone, Copy)]
enum Side {
    Caller,
    Callee,
}

impl Bed {
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
        self.spawn_sipp(self.ns(side), &format!("sipp-{role}"), &args)
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
}

#[test]
fn a_cancelled_call_gets_a_cancel_cdr() {
    let Some(mut bed) = Bed::start(
        "a_cancelled_call_gets_a_cancel_cdr",
        "smc",
        setup("10.77.0.0/16", None, false),
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

/// `sluice run`'s configuration for the REGISTER tests: the domain and its account.
fn registrar_config() -> String {
    format!(
        "[sip]\ndomains = [\"{DOMAIN}\"]\n# SIPp 3.6 answers only the first challenge, and only MD5\ndigest_algorithms = [\"MD5\"]\n\n[[account]]\nuser = \"{USER}\"\ndomain = \"{DOMAIN}\"\npassword = \"{PASSWORD}\"\n"
    )
}

impl Bed {
    /// SIPp REGISTERs `USER` with `password` from the callee's SIP address and port, where the
    /// UAS will answer: the registrar binds the contact to the REGISTER's source.
    fn register(&self, role: &str, scenario: &str, password: &str) -> Proc {
        let callee = self.bed.callee_addr().to_string();
        let registrar: SocketAddr = format!("{}:{SIP_PORT}", self.bed.relay_callee_addr())
            .parse()
            .expect("address");
        self.sipp(
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
                callee,
                s("-p"),
                SIP_PORT.to_string(),
                s("-m"),
                s("1"),
            ],
        )
    }

    /// A call from the caller to `USER@DOMAIN` reaches the registered contact (the UAS at the
    /// callee's address) and ends with a `bye:caller` CDR, its media both ways.
    fn call_the_registered_user(&mut self) -> CdrRow {
        let callee = self.bed.callee_addr().to_string();
        let mut uas = self.uas("uas", "uas.xml", Some(1));
        let mut uac = self.uac("uac", "uac.xml", &format!("{USER}@{DOMAIN}"), 1, 1, &[]);
        self.finish(&mut uac, &mut uas, 1);
        let messages =
            std::fs::read_to_string(self.trace("uas", "messages.log")).unwrap_or_default();
        assert!(
            messages.contains(&format!("INVITE sip:{USER}@{callee}:{SIP_PORT}")),
            "the INVITE did not go to the registered contact:\n{messages}"
        );
        let cdr = self.only_cdr();
        assert_eq!(cdr.get("AcctTerminateCause"), "bye:caller", "{cdr:?}");
        assert_eq!(cdr.get("SipResponseCode"), "200", "{cdr:?}");
        assert!(!cdr.get("AcctStartTime").is_empty(), "{cdr:?}");
        assert_media_both_ways(&cdr);
        cdr
    }
}

#[test]
fn a_registered_user_is_reached_through_the_registrar() {
    let Some(mut bed) = Bed::start(
        "a_registered_user_is_reached_through_the_registrar",
        "smr",
        // Only the caller: the callee's side must authenticate.
        setup("10.77.1.0/24", Some(registrar_config()), true),
    ) else {
        return;
    };
    // A wrong password: challenged, then challenged again.
    let mut wrong = bed.register(
        "register-wrong",
        "register_wrong_password.xml",
        "not-secret",
    );
    bed.expect_success(&mut wrong, "register-wrong", 1, Duration::from_secs(20));
    // The right one: challenged, then 200.
    let mut reg = bed.register("register", "register.xml", PASSWORD);
    bed.expect_success(&mut reg, "register", 1, Duration::from_secs(20));
    let log = bed.sluice.log();
    assert!(
        log.contains("registered"),
        "no registration in the log:\n{log}"
    );

    // The registered contact answers: sip:alice@sluice.test reaches 10.77.2.2:5060.
    let cdr = bed.call_the_registered_user();
    // The caller is a trusted peer: billed by its address.
    assert_eq!(
        cdr.get("BillingParty"),
        bed.bed.caller_addr().to_string(),
        "{cdr:?}"
    );
}

/// `text` without the ANSI colour sequences (`ESC [ ... m`) of tracing's output.
fn without_ansi_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_registration_survives_a_restart() {
    let Some(mut bed) = Bed::start(
        "a_registration_survives_a_restart",
        "sms",
        setup("10.77.1.0/24", Some(registrar_config()), true),
    ) else {
        return;
    };
    let mut reg = bed.register("register", "register.xml", PASSWORD);
    bed.expect_success(&mut reg, "register", 1, Duration::from_secs(20));
    // Stopped and started again on the same database, without a new REGISTER.
    bed.restart_sluice();
    let log = without_ansi_colours(&bed.sluice.log());
    assert!(
        log.contains("registrations restored") && log.contains("bindings=1"),
        "the binding was not restored:\n{log}"
    );
    bed.call_the_registered_user();
}

#[test]
fn a_call_put_on_hold_keeps_one_cdr() {
    let Some(mut bed) = Bed::start(
        "a_call_put_on_hold_keeps_one_cdr",
        "smh",
        setup("10.77.0.0/16", None, false),
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
    let (status, body) = bed.api_get("/ended?summary=1").expect("GET /ended");
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
    let Some(mut bed) = Bed::start(test, tag, setup("10.77.0.0/16", None, false)) else {
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
