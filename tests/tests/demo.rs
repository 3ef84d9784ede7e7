//! `sluice demo`, the README's main command, run as a user would: the built `sluice` binary,
//! its output checked. Two phones behind two NATs register and call each other through
//! `sluice run`: two calls, one hung up by the caller (`bye:caller`), one ended by the media
//! timeout (`media-timeout`), each with RTP both ways, latched on the NATs' public addresses.
//!
//! Run time: about 25 s. Without root or `sipp` this skips with the reason, unless `CI` is set:
//! then it fails.

#[path = "common/harness.rs"]
mod harness;

use std::process::{Command, Stdio};

use harness::{in_path, sluice_binary};

use sluice_dataplane::netns::privileged_test;

/// The NATs' public addresses (`sluice_dataplane::netns::NatPair`).
const NAT_A_PUBLIC: &str = "10.80.1.2";
const NAT_B_PUBLIC: &str = "10.80.2.2";

/// A CDR line's counters: the four columns before the Call-ID (IN PKTS, IN BYTES, OUT PKTS,
/// OUT BYTES), as `sluice cdrs` prints them.
fn cdr_counters(line: &str) -> Vec<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words[words.len().saturating_sub(5)..words.len().saturating_sub(1)]
        .iter()
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[test]
fn the_demo_shows_two_calls_through_two_nats() {
    const TEST: &str = "the_demo_shows_two_calls_through_two_nats";
    if !privileged_test(TEST) {
        return;
    }
    if in_path("sipp").is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{TEST}: CI must run this test: no `sipp` (Debian package sip-tester)");
        }
        eprintln!("skipping {TEST}: no `sipp` (Debian package sip-tester)");
        return;
    }
    let bin = sluice_binary().unwrap_or_else(|e| panic!("the sluice binary: {e}"));
    let out = Command::new(&bin)
        .arg("demo")
        .stdin(Stdio::null())
        .output()
        .expect("running sluice demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        out.status.success(),
        "sluice demo failed ({}):\n{all}",
        out.status
    );

    // Registrations, seen from the NATs' public addresses.
    for (user, public) in [("alice", NAT_A_PUBLIC), ("bob", NAT_B_PUBLIC)] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&format!("sip:{user}@demo.sluice"))
                    && l.contains(&format!("seen by Sluice from {public}:"))),
            "{user}'s registration:\n{all}"
        );
    }

    // Two calls, each with its streams.
    let calls: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("call ") && l.contains("Call-ID"))
        .collect();
    assert_eq!(calls.len(), 2, "two calls in /ended:\n{all}");
    assert!(calls[0].starts_with("call 1: alice -> bob"), "{all}");
    assert!(calls[0].ends_with("relay ended it: deleted"), "{all}");
    assert!(calls[1].starts_with("call 2: bob -> alice"), "{all}");
    assert!(calls[1].ends_with("relay ended it: media-timeout"), "{all}");

    // Every RTP stream: nonzero packets and bytes, latched on the sender's NAT public address.
    let rtp: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().contains(" -> ") && l.contains(" rtp "))
        .collect();
    assert_eq!(rtp.len(), 4, "two RTP streams per call:\n{all}");
    for line in &rtp {
        let sender = line.split_whitespace().next().unwrap_or_default();
        let public = if sender == "alice" {
            NAT_A_PUBLIC
        } else {
            NAT_B_PUBLIC
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        // direction (3 words), kind, relay, sdp, latched, packets, bytes
        assert_eq!(fields.len(), 9, "{line}\n{all}");
        assert!(
            fields[6].starts_with(&format!("{public}:")),
            "latched {} for {sender}, not {public}: {line}\n{all}",
            fields[6]
        );
        let (packets, bytes): (u64, u64) = (
            fields[7].parse().expect("packets"),
            fields[8].parse().expect("bytes"),
        );
        assert!(packets > 0 && bytes > 0, "{line}\n{all}");
    }

    // The CDRs: one per call, with the causes and media both ways.
    // STOP (date, time), DURATION, CAUSE, CODE, FROM, TO, SOURCE, BILLING, 4 counters, CALL-ID.
    let cdr_of = |caller: &str| {
        let from = format!("sip:{caller}@demo.sluice");
        stdout
            .lines()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() == 14 && w[5] == from && w[4] == "200"
            })
            .unwrap_or_else(|| panic!("no CDR from {caller}:\n{all}"))
    };
    let bye = cdr_of("alice");
    assert!(bye.contains("bye:caller"), "{bye}\n{all}");
    let timeout = cdr_of("bob");
    assert!(timeout.contains("media-timeout"), "{timeout}\n{all}");
    for cdr in [bye, timeout] {
        let counters = cdr_counters(cdr);
        assert!(
            counters.len() == 4 && counters.iter().all(|&c| c > 0),
            "{cdr}: {counters:?}\n{all}"
        );
    }
    assert!(stdout.contains("ok: each stream latched"), "{all}");
}
