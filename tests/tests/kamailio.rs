//! A real Kamailio (Debian's `kamailio` package, its `rtpengine` module) drives `sluice relay`
//! over the ng protocol while SIPp (Debian's `sip-tester`) places calls through it:
//!
//! ```text
//! [caller ns] SIPp UAC 10.77.1.2 ── 10.77.1.1 [relay ns: Kamailio + sluice relay] 10.77.2.1 ── 10.77.2.2 SIPp UAS [callee ns]
//! ```
//!
//! Kamailio (`tests/fixtures/kamailio/kamailio.cfg`) record-routes every INVITE to the UAS,
//! calls `rtpengine_offer` on it, `rtpengine_answer` on the 200 OK and `rtpengine_delete` on the
//! BYE. The UAC (`uac.xml`) plays the A-law recording that sip-tester ships to the relay
//! address in the answer, the UAS (`uas.xml`, `-rtp_echo`) sends every packet back.
//!
//! Checked: every call succeeds for SIPp on both sides; Kamailio's log shows each offer,
//! answer and delete accepted by Sluice; each side saw only Sluice's address in the other's SDP
//! (`c=` and, with `replace-origin`, `o=`); Sluice had the calls up at the same time while they
//! ran, and its `/ended` shows each one deleted with the recording relayed both ways; its
//! forwarding counters in `/metrics` account for every one of those packets (for XDP, all
//! redirected in the kernel).
//!
//! Run time: about 12 s for both backends (they run in parallel, each in its own namespaces);
//! the calls take 8.6 s of it. `SLUICE_KEEP_LOGS=1` keeps the logs, SIPp's message traces and
//! statistics in `$TMPDIR/sluice-kamailio_<backend>-<pid>/` (they are kept anyway on failure).
//!
//! Without `kamailio`, `sipp` or root this skips with the reason, unless `CI` is set: then it
//! fails. `.ci/setup` installs both packages.

#[path = "common/harness.rs"]
mod harness;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{
    http_get, in_path, sipp_stat, sluice_binary, wait_for_healthz, wait_for_udp_listener, Proc,
    WorkDir,
};

use sluice_dataplane::netns::{NetNs, TwoArm};
use sluice_dataplane::testbed::{Testbed, TopologyKind};

/// Calls placed, all at once.
const CALLS: usize = 10;
/// RTP packets in `/usr/share/sip-tester/g711a.pcap` (7 s of A-law, 30 ms each).
const RECORDING: &str = "/usr/share/sip-tester/g711a.pcap";
const RECORDING_PACKETS: u64 = 236;
/// Where Sluice's ng socket and API listen, in the relay namespace (kamailio.cfg has the former).
const NG: &str = "127.0.0.1:22222";
const API: &str = "127.0.0.1:8089";
const SIP_PORT: u16 = 5060;
const CALLER_MEDIA_PORT: u16 = 6000;
const CALLEE_MEDIA_PORT: u16 = 7000;
/// SIPp's own global timeout for the calls, and ours for SIPp.
const SIPP_TIMEOUT_S: u64 = 60;
const DEADLINE: Duration = Duration::from_secs(SIPP_TIMEOUT_S + 30);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kamailio")
}

/// What the test runs.
struct Tools {
    kamailio: PathBuf,
    sipp: PathBuf,
    sluice: PathBuf,
}

/// The tools, or `None` (skip) with the reason printed; under `CI` a missing tool fails.
fn prerequisites(test: &str) -> Option<Tools> {
    let missing = |why: String| -> Option<Tools> {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: CI must run this test: {why}");
        }
        eprintln!("skipping {test}: {why}");
        None
    };
    if let Err(why) = sluice_dataplane::netns::can_create_netns() {
        return missing(why);
    }
    let Some(kamailio) = in_path("kamailio") else {
        return missing("no `kamailio` binary (Debian package kamailio)".into());
    };
    let Some(sipp) = in_path("sipp") else {
        return missing("no `sipp` binary (Debian package sip-tester)".into());
    };
    if !Path::new(RECORDING).is_file() {
        return missing(format!(
            "{RECORDING} is missing (Debian package sip-tester)"
        ));
    }
    let sluice = match sluice_binary() {
        Ok(bin) => bin,
        Err(why) => panic!("{test}: the sluice binary: {why}"),
    };
    Some(Tools {
        kamailio,
        sipp,
        sluice,
    })
}

/// `GET path` on the management API, from the relay namespace: (status, body).
fn api_get(ns: &NetNs, path: &str) -> std::io::Result<(u16, String)> {
    http_get(ns, API, path, Duration::from_secs(10))
}

fn api_json(ns: &NetNs, path: &str) -> Json {
    let (status, body) = api_get(ns, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    Json::parse(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Waits until Kamailio answers a request on its caller-side address (the script answers
/// OPTIONS with 405).
fn wait_for_kamailio(bed: &Testbed, kamailio: &mut Proc) {
    let caller = bed.caller_addr();
    let proxy = SocketAddrV4::new(bed.relay_caller_addr(), SIP_PORT);
    let socket = bed
        .caller()
        .run(move || UdpSocket::bind(SocketAddrV4::new(caller, 0)))
        .expect("namespace")
        .expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let local = socket.local_addr().expect("local address");
    let options = format!(
        "OPTIONS sip:{proxy} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-probe-{n}\r\n\
         From: <sip:probe@{caller}>;tag=probe\r\n\
         To: <sip:{proxy}>\r\n\
         Call-ID: probe-{n}@{caller}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        n = std::process::id()
    );
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(15) {
        kamailio.check_running();
        socket.send_to(options.as_bytes(), proxy).expect("send");
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if buf[..n].starts_with(b"SIP/2.0 ") {
                return;
            }
        }
    }
    panic!("Kamailio does not answer on {proxy}:\n{}", kamailio.log());
}

fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name_and_labels))
        .filter_map(|rest| rest.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn kamailio_through_sluice(backend: &str) {
    let test = format!("kamailio_{backend}");
    let Some(tools) = prerequisites(&test) else {
        return;
    };
    let started = Instant::now();
    let bed =
        Testbed::build(TopologyKind::TwoArm, &format!("kam{}", &backend[..1])).expect("testbed");
    // kamailio.cfg names these addresses.
    assert_eq!(
        (bed.caller_addr(), bed.relay_caller_addr()),
        (TwoArm::CALLER_ADDR, Ipv4Addr::new(10, 77, 1, 1))
    );
    assert_eq!(
        (bed.relay_callee_addr(), bed.callee_addr()),
        (Ipv4Addr::new(10, 77, 2, 1), Ipv4Addr::new(10, 77, 2, 2))
    );
    let work = WorkDir::new(&test);
    let dir = work.0.as_path();
    let s = |v: &str| v.to_owned();

    // 1. Sluice, as rtpengine would be started.
    let mut sluice = Proc::spawn(
        bed.relay(),
        "sluice",
        &tools.sluice,
        &[
            s("relay"),
            s("--interface"),
            format!("caller/{}", bed.relay_caller_addr()),
            s("--interface"),
            format!("callee/{}", bed.relay_callee_addr()),
            s("--listen-ng"),
            s(NG),
            s("--port-min"),
            s("30000"),
            s("--port-max"),
            s("30999"),
            s("--timeout"),
            s("60"),
            s("--backend"),
            s(backend),
            s("--api-listen"),
            s(API),
        ],
        dir,
    );
    wait_for_healthz(
        bed.relay(),
        API,
        Duration::from_secs(10),
        &mut sluice,
        "sluice relay",
    );

    // 2. Kamailio, pointed at Sluice's ng socket.
    let cfg = fixtures().join("kamailio.cfg");
    let mut kamailio = Proc::spawn(
        bed.relay(),
        "kamailio",
        &tools.kamailio,
        &[
            s("-f"),
            cfg.display().to_string(),
            s("-P"),
            dir.join("kamailio.pid").display().to_string(),
            s("-w"),
            dir.display().to_string(),
            s("-m"),
            s("64"),
            s("-DD"),
            s("-E"),
        ],
        dir,
    );
    wait_for_kamailio(&bed, &mut kamailio);

    // 3. The callee: answers every call and echoes its media.
    let sipp = |role: &str, extra: &[String]| -> Vec<String> {
        let mut args = vec![
            s("-sf"),
            fixtures().join(format!("{role}.xml")).display().to_string(),
            s("-m"),
            CALLS.to_string(),
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
        args
    };
    let mut uas = Proc::spawn(
        bed.callee(),
        "sipp-uas",
        &tools.sipp,
        &sipp(
            "uas",
            &[
                s("-i"),
                bed.callee_addr().to_string(),
                s("-p"),
                SIP_PORT.to_string(),
                s("-mi"),
                bed.callee_addr().to_string(),
                s("-mp"),
                CALLEE_MEDIA_PORT.to_string(),
                s("-rtp_echo"),
            ],
        ),
        dir,
    );
    wait_for_udp_listener(bed.callee(), SIP_PORT, &mut uas);
    wait_for_udp_listener(bed.callee(), CALLEE_MEDIA_PORT, &mut uas);

    // 4. The caller: all calls at once, through Kamailio.
    let mut uac = Proc::spawn(
        bed.caller(),
        "sipp-uac",
        &tools.sipp,
        &sipp(
            "uac",
            &[
                format!("{}:{SIP_PORT}", bed.relay_caller_addr()),
                s("-i"),
                bed.caller_addr().to_string(),
                s("-p"),
                SIP_PORT.to_string(),
                s("-mi"),
                bed.caller_addr().to_string(),
                s("-mp"),
                CALLER_MEDIA_PORT.to_string(),
                s("-s"),
                s("callee"),
                s("-r"),
                CALLS.to_string(),
                s("-l"),
                CALLS.to_string(),
            ],
        ),
        dir,
    );

    // While the calls run, Sluice has them up.
    let mut most_active = 0u64;
    let calls_started = Instant::now();
    let uac_status = loop {
        if let Some(status) = uac.exited() {
            break status;
        }
        if calls_started.elapsed() > DEADLINE {
            uac.stop();
            panic!(
                "the SIPp UAC did not finish in {DEADLINE:?}:\n{}\nKamailio:\n{}",
                uac.log(),
                kamailio.log()
            );
        }
        if let Ok((200, body)) = api_get(bed.relay(), "/calls?summary=1") {
            if let Ok(json) = Json::parse(&body) {
                most_active = most_active.max(json.get("count").as_u64().unwrap_or(0));
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let calls_took = calls_started.elapsed();
    let uas_status = uas.wait(Duration::from_secs(15));
    let diagnostics = || {
        format!(
            "UAC:\n{}\nUAC errors:\n{}\nUAS:\n{}\nKamailio:\n{}\nSluice:\n{}",
            uac.log(),
            std::fs::read_to_string(dir.join("uac-errors.log")).unwrap_or_default(),
            uas.log(),
            kamailio.log(),
            sluice.log()
        )
    };
    let successful = sipp_stat(&dir.join("uac-stat.csv"), "SuccessfulCall(C)");
    let failed = sipp_stat(&dir.join("uac-stat.csv"), "FailedCall(C)");
    assert!(
        uac_status.success() && successful == Some(CALLS as u64) && failed == Some(0),
        "SIPp UAC: {uac_status}, {successful:?} successful and {failed:?} failed calls of {CALLS}\n{}",
        diagnostics()
    );
    assert!(
        uas_status.is_some_and(|s| s.success()),
        "SIPp UAS: {uas_status:?}\n{}",
        diagnostics()
    );
    let uas_successful = sipp_stat(&dir.join("uas-stat.csv"), "SuccessfulCall(C)");
    assert_eq!(uas_successful, Some(CALLS as u64), "{}", diagnostics());

    // Kamailio: every offer, answer and delete went through Sluice.
    let klog = kamailio.log();
    let count = |what: &str| klog.matches(what).count();
    assert_eq!(
        (
            count("SLUICE-TEST offer ok"),
            count("SLUICE-TEST answer ok (200)"),
            count("SLUICE-TEST delete ok")
        ),
        (CALLS, CALLS, CALLS),
        "Kamailio's rtpengine calls:\n{}",
        diagnostics()
    );
    let complaints: Vec<&str> = klog
        .lines()
        .filter(|l| {
            (l.contains("SLUICE-TEST") && l.contains("failed"))
                || (l.contains("rtpengine") && (l.contains("ERROR") || l.contains("WARNING")))
        })
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}\n{}", diagnostics());

    // Kamailio put Sluice's addresses in the SDP each side got, the other side's nowhere.
    let sdp_addresses = |role: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(format!("{role}-messages.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("c=") || l.starts_with("o="))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
            .collect()
    };
    for (role, own, relay, hidden) in [
        (
            "uas",
            bed.callee_addr(),
            bed.relay_callee_addr(),
            bed.caller_addr(),
        ),
        (
            "uac",
            bed.caller_addr(),
            bed.relay_caller_addr(),
            bed.callee_addr(),
        ),
    ] {
        let seen = sdp_addresses(role);
        let from_relay = seen.iter().filter(|a| **a == relay.to_string()).count();
        assert!(
            from_relay >= 2 * CALLS,
            "the {role} got {from_relay} c=/o= lines naming {relay}: {seen:?}"
        );
        assert!(
            seen.iter()
                .all(|a| *a == relay.to_string() || *a == own.to_string()),
            "the {role} saw an address other than its own and {relay} (not {hidden}): {seen:?}"
        );
    }

    // Sluice: the calls overlapped, ended by the deletes, with the recording relayed both ways.
    assert!(
        most_active >= 2,
        "at most {most_active} calls were active in Sluice at once\n{}",
        diagnostics()
    );
    let active = api_json(bed.relay(), "/calls?summary=1");
    assert_eq!(active.get("count").as_u64(), Some(0), "{active:?}");
    let ended = api_json(bed.relay(), "/ended?summary=1");
    let ended = ended.get("ended").as_array();
    assert_eq!(ended.len(), CALLS, "{ended:?}\n{}", diagnostics());
    // Allow for a packet or two lost on the way or sent after the delete.
    let enough = RECORDING_PACKETS * 95 / 100;
    let mut relayed = 0;
    let mut call_ids = std::collections::BTreeSet::new();
    for call in ended {
        let report = call.get("report");
        let id = report
            .get("call_id")
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(call.get("cause").as_str(), Some("deleted"), "{call:?}");
        let packets = |side: usize| {
            report.get("rtp").as_array()[side]
                .get("packets")
                .as_u64()
                .unwrap_or(0)
        };
        let (caller_sent, callee_sent) = (packets(0), packets(1));
        assert!(
            caller_sent >= enough && caller_sent <= RECORDING_PACKETS,
            "call {id}: {caller_sent} RTP packets caller -> callee of {RECORDING_PACKETS}: {call:?}"
        );
        assert!(
            callee_sent >= enough && callee_sent <= caller_sent,
            "call {id}: {callee_sent} RTP packets echoed callee -> caller of {caller_sent}: {call:?}"
        );
        relayed += caller_sent + callee_sent;
        call_ids.insert(id);
    }
    assert_eq!(call_ids.len(), CALLS, "distinct call-ids: {call_ids:?}");

    // The relay's own counters agree: every packet of the calls was forwarded.
    let (_, metrics) = api_get(bed.relay(), "/metrics").expect("GET /metrics");
    let forwarded = ["tx", "redirect", "pass_no_neigh"]
        .iter()
        .map(|c| {
            metric(
                &metrics,
                &format!("sluice_relay_packets_total{{counter=\"{c}\"}}"),
            )
        })
        .sum::<u64>();
    assert_eq!(
        forwarded, relayed,
        "the relay forwarded {forwarded} packets, the calls counted {relayed}:\n{metrics}"
    );
    if backend == "xdp" {
        // A first packet may go through the stack while a neighbour is resolved.
        let redirected = metric(&metrics, "sluice_relay_packets_total{counter=\"redirect\"}");
        assert!(
            redirected + 4 >= relayed,
            "{redirected} of {relayed} in XDP:\n{metrics}"
        );
    }
    assert_eq!(
        metric(&metrics, "sluice_recently_ended_calls{cause=\"deleted\"}"),
        CALLS as u64,
        "{metrics}"
    );

    for line in metrics
        .lines()
        .filter(|l| l.starts_with("sluice_relay_packets_total") && !l.ends_with(" 0"))
    {
        eprintln!("{test}: {line}");
    }
    kamailio.stop();
    sluice.stop();
    eprintln!(
        "{test}: {CALLS} calls through Kamailio and sluice relay ({backend}) in {calls_took:?}, \
         {relayed} RTP packets relayed, up to {most_active} calls at once; {:?} in all",
        started.elapsed()
    );
}

#[test]
fn kamailio_calls_through_sluice_xdp() {
    kamailio_through_sluice("xdp");
}

#[test]
fn kamailio_calls_through_sluice_sockets() {
    kamailio_through_sluice("sockets");
}

/// Just enough JSON for the management API's answers.
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

const NULL: Json = Json::Null;

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(v)
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    fn as_array(&self) -> &[Json] {
        match self {
            Json::Array(items) => items,
            _ => &[],
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at {}", b as char, self.i))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 64 {
            return Err("nested too deep".into());
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Object(fields));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    fields.push((key, self.value(depth + 1)?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Object(fields));
                        }
                        _ => return Err(format!("expected `,` or `}}` at {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(format!("expected `,` or `]` at {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            Some(_) => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|b| b"+-.eE0123456789".contains(b))
                {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .map(Json::Number)
                    .ok_or_else(|| format!("bad value at {start}"))
            }
            None => Err("unexpected end".into()),
        }
    }

    fn word(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(value)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at {}", self.i));
        }
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            match *self.s.get(self.i).ok_or("unterminated string")? {
                b'"' => {
                    self.i += 1;
                    return String::from_utf8(out).map_err(|e| e.to_string());
                }
                b'\\' => {
                    let escaped = *self.s.get(self.i + 1).ok_or("unterminated escape")?;
                    self.i += 2;
                    let c = match escaped {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hex = self
                                .s
                                .get(self.i..self.i + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or("bad \\u escape")?;
                            self.i += 4;
                            char::from_u32(hex).unwrap_or('\u{fffd}')
                        }
                        other => other as char,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }
}

#[test]
fn the_json_reader_reads_the_api_shapes() {
    let v = Json::parse(
        r#"{"ended": [{"cause": "deleted", "report": {"call_id": "a\"b\u0041", "rtp": [{"packets": 236, "bytes": 1}, {"packets": 0}], "x": null, "y": [true, false, -1.5e2]}}], "count": 1}"#,
    )
    .expect("valid");
    let call = &v.get("ended").as_array()[0];
    assert_eq!(call.get("cause").as_str(), Some("deleted"));
    assert_eq!(call.get("report").get("call_id").as_str(), Some("a\"bA"));
    assert_eq!(
        call.get("report").get("rtp").as_array()[0]
            .get("packets")
            .as_u64(),
        Some(236)
    );
    assert_eq!(v.get("count").as_u64(), Some(1));
    assert_eq!(v.get("missing"), &Json::Null);
    assert!(Json::parse("{\"a\": 1").is_err());
    assert!(Json::parse("[1] 2").is_err());
}
