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

#[path = "common/harness.rs"]
mod harness;
#[path = "common/sip_bed.rs"]
mod sip_bed;

use std::time::{Duration, Instant};

use harness::{sipp_stat, wait_for_udp_listener, Proc};
use sip_bed::{
    assert_media_both_ways, fixtures, s, Bed, Setup, CALLEE_MEDIA_PORT, CALLER_MEDIA_PORT,
    DEADLINE, MEDIA_TIMEOUT_S, SIPP_TIMEOUT_S, SIP_PORT,
};

/// How every test here starts `sluice run`: all of 10.77.0.0/16 trusted, no configuration.
fn start(test: &str, tag: &str) -> Option<Bed> {
    Bed::start(
        test,
        tag,
        Setup {
            file: "sip_proxy",
            trust: "10.77.0.0/16",
            config: None,
            recording: true,
            poll: Duration::from_millis(50),
        },
    )
}

impl Bed {
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
        self.spawn_sipp(ns, &format!("sipp-{role}"), &args)
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
}

#[test]
fn calls_through_sluice_run_get_cdrs() {
    const CALLS: usize = 3;
    let Some(mut bed) = start("calls_through_sluice_run_get_cdrs", "spc") else {
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
    let Some(mut bed) = start("a_busy_callee_gets_a_failed_cdr", "spb") else {
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
    let Some(mut bed) = start("a_silent_call_is_ended_by_the_media_timeout", "spt") else {
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
