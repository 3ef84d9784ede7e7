//! `sluice relay` end to end, driven over the rtpengine ng protocol the way Kamailio drives it.
//!
//! Each test builds a two-arm testbed (caller 10.77.1.2 — relay 10.77.1.1 | 10.77.2.1 — callee
//! 10.77.2.2), starts the real `sluice relay` binary inside the relay namespace with
//! rtpengine's start line, and talks to it over its ng socket and its management API, both on
//! the relay namespace's loopback. Media is real UDP between sockets in the caller's and the
//! callee's namespaces, so every packet crosses the veths and the chosen forwarding path
//! (`--backend xdp`, `afxdp` or `sockets`).
//!
//! # How the test finds the binary
//!
//! `sluice` is a binary-only package, so it cannot be a dependency of this crate and Cargo sets
//! no `CARGO_BIN_EXE_sluice` here. The first test that needs it runs
//! `$CARGO build -p sluice --bin sluice --message-format=json-render-diagnostics` (with
//! `--release` when this test is built without debug assertions) from the workspace root, with
//! the environment `cargo test` gave this process (so the same `CARGO_TARGET_DIR`, `RUSTFLAGS`
//! and toolchain), and takes the `executable` path Cargo reports for the `sluice` artifact.
//! The build is incremental (a no-op when `cargo test` just built the workspace) and bounded in
//! time; where it built to is printed. `SLUICE_BIN=/path/to/sluice` skips the build.
//!
//! # Timeouts
//!
//! The media-timeout test starts the relay with `--timeout 2`; the other tests use
//! `--timeout 30`, so that a slow or loaded machine cannot end their calls for lack of media
//! while the test is still signalling (that would be a timing assertion in disguise).
//!
//! # Reproducing the measurements
//!
//! `CI=true cargo test -p sluice-tests --test relay_ng thousand_calls -- --nocapture
//! --test-threads=1` prints the ng offer+answer rate and the relay's memory per call for each
//! backend.

#[path = "common/harness.rs"]
mod harness;
#[path = "common/ng.rs"]
mod ng;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harness::{http_get, Proc, WorkDir};
use ng::{dict, NgClient, NgExt, Value, ValueExt};
use sluice_dataplane::netns::NetNs;
use sluice_dataplane::testbed::{Testbed, TopologyKind};

/// Where the relay's ng socket and API listen, on the relay namespace's loopback.
const NG_ADDR: &str = "127.0.0.1:2223";
const API_ADDR: &str = "127.0.0.1:8089";
const PORT_MIN: u16 = 30000;
const PORT_MAX: u16 = 39999;
const CALLER_PORT: u16 = 4000;
const CALLEE_PORT: u16 = 5000;
/// RTP packets each way in the main call.
const PACKETS: usize = 200;
/// A G.711 RTP packet: 12 bytes of header, 160 of payload.
const RTP_SIZE: usize = 172;

fn privileged() -> bool {
    sluice_dataplane::netns::privileged_test(module_path!())
}

// ---------------------------------------------------------------------------------------------
// The binary

/// The `sluice` binary, built once per test process.
fn sluice_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(harness::sluice_binary) {
        Ok(path) => path,
        Err(e) => panic!("cannot build the sluice binary: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The relay process

/// Numbers the relays of this test process, whose work directories must not collide.
static RELAYS: AtomicU32 = AtomicU32::new(0);

/// `sluice relay` running in a testbed's relay namespace. Dropping it stops it (SIGTERM, then
/// SIGKILL) by its PID and waits for it; if the test is failing, its log is printed.
struct Relay<'a> {
    bed: &'a Testbed,
    backend: &'static str,
    process: Proc,
    ng: NgClient,
    // Dropped after the process: its log stays when the test fails.
    _work: WorkDir,
}

impl<'a> Relay<'a> {
    fn start(bed: &'a Testbed, backend: &'static str, timeout_s: u64) -> Relay<'a> {
        let binary = sluice_binary();
        let work = WorkDir::new(&format!(
            "relay-ng-{backend}-{}",
            RELAYS.fetch_add(1, Ordering::Relaxed)
        ));
        let caller_if = format!("caller/{}", bed.relay_caller_addr());
        let callee_if = format!("callee/{}", bed.relay_callee_addr());
        let args = [
            "relay",
            "--interface",
            &caller_if,
            "--interface",
            &callee_if,
            "--listen-ng",
            NG_ADDR,
            "--port-min",
            &PORT_MIN.to_string(),
            "--port-max",
            &PORT_MAX.to_string(),
            "--timeout",
            &timeout_s.to_string(),
            "--api-listen",
            API_ADDR,
            "--backend",
            backend,
        ]
        .map(str::to_owned);
        let process = Proc::spawn(bed.relay(), "sluice-relay", binary, &args, &work.0);
        let server: SocketAddr = NG_ADDR.parse().expect("address");
        let socket = bed
            .relay()
            .run(|| UdpSocket::bind("127.0.0.1:0"))
            .expect("enter the relay namespace")
            .expect("bind the ng client");
        let mut relay = Relay {
            bed,
            backend,
            process,
            ng: NgClient::new(socket, server),
            _work: work,
        };
        relay.wait_until_up();
        relay
    }

    /// Waits (bounded) until `ping` answers `pong` and the API answers `/healthz`.
    fn wait_until_up(&mut self) {
        self.ng.wait = Duration::from_millis(100);
        self.ng.attempts = 1;
        let ping = dict(vec![("command", "ping".into())]);
        let started = Instant::now();
        let mut last = String::new();
        let mut up = false;
        while started.elapsed() < Duration::from_secs(20) {
            if let Some(status) = self.process.exited() {
                panic!(
                    "sluice relay --backend {} exited at start ({status}):\n{}",
                    self.backend,
                    self.log_text()
                );
            }
            match self.ng.request(&ping) {
                Ok(reply) if reply.get("result").and_then(Value::as_str) == Some("pong") => {
                    up = true;
                    break;
                }
                Ok(reply) => last = format!("{reply:?}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            up,
            "sluice relay --backend {} never answered ping ({last}):\n{}",
            self.backend,
            self.log_text()
        );
        self.ng.wait = Duration::from_millis(2000);
        self.ng.attempts = 3;
        let mut healthy = false;
        for _ in 0..100 {
            if let Ok((200, _)) = self.try_get("/healthz") {
                healthy = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(healthy, "the API never answered:\n{}", self.log_text());
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.process.pid()))
            .unwrap_or_default();
        assert_eq!(
            comm.trim(),
            "sluice",
            "the spawned PID must be the relay itself (ip netns exec execs it)"
        );
    }

    fn log_text(&self) -> String {
        self.process.log()
    }

    /// A GET of the management API, from the relay namespace.
    fn try_get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.bed.relay(), API_ADDR, path, Duration::from_secs(10))
            .map_err(|e| format!("GET {path}: {e}"))
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A GET that must answer 200 with JSON.
    fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The relay's resident memory, from /proc/<pid>/status.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .expect("the relay's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    fn assert_running(&mut self) {
        self.process.check_running();
    }
}

impl Drop for Relay<'_> {
    fn drop(&mut self) {
        self.process.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- sluice relay --backend {} log ----\n{}",
                self.backend,
                self.log_text()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signalling

fn sdp(addr: Ipv4Addr, port: u16) -> String {
    format!(
        "v=0\r\no=- 1545997027 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
}

/// The address and port an SDP advertises for its one audio stream. Every `c=` line must
/// agree.
fn advertised(sdp: &str) -> SocketAddrV4 {
    let mut addr: Option<Ipv4Addr> = None;
    let mut port: Option<u16> = None;
    for line in sdp.lines() {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            let a: Ipv4Addr = c.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
            assert!(
                addr.is_none_or(|prev| prev == a),
                "c= lines disagree:\n{sdp}"
            );
            addr = Some(a);
        } else if let Some(m) = line.strip_prefix("m=") {
            assert!(port.is_none(), "one media line expected:\n{sdp}");
            let fields: Vec<&str> = m.split_whitespace().collect();
            assert_eq!(
                fields.get(2..).map(|f| f.join(" ")),
                Some("RTP/AVP 0".to_owned()),
                "the protocol and formats are kept:\n{sdp}"
            );
            port = fields.get(1).and_then(|p| p.parse().ok());
        }
    }
    assert!(
        sdp.contains("a=rtpmap:0 PCMU/8000"),
        "the codec is kept:\n{sdp}"
    );
    match (addr, port) {
        (Some(a), Some(p)) => SocketAddrV4::new(a, p),
        _ => panic!("no c= or m= line in:\n{sdp}"),
    }
}

fn assert_relay_port(addr: SocketAddrV4, expected_ip: Ipv4Addr, what: &str) {
    assert_eq!(*addr.ip(), expected_ip, "{what}: the relay's address");
    assert!(
        (PORT_MIN..=PORT_MAX).contains(&addr.port()) && addr.port() % 2 == 0,
        "{what}: an even port in {PORT_MIN}..={PORT_MAX}, got {}",
        addr.port()
    );
}

/// The relay's two ends of a call: where the caller sends (facing it) and where the callee
/// sends.
#[derive(Clone, Copy, Debug)]
struct Anchors {
    caller_side: SocketAddrV4,
    callee_side: SocketAddrV4,
}

/// The caller's offer and the callee's answer. `offer_flags` shapes the offer (NAT handling);
/// the answer trusts the callee's SDP.
fn offer_answer(
    relay: &Relay,
    call_id: &str,
    caller_sdp: &str,
    offer_extra: Vec<(&str, Value)>,
) -> Anchors {
    let bed = relay.bed;
    let mut offer = vec![
        ("command", "offer".into()),
        ("call-id", call_id.into()),
        ("from-tag", "tag-a".into()),
        ("sdp", caller_sdp.into()),
        ("direction", vec!["caller", "callee"].into()),
        ("replace", vec!["origin"].into()),
        ("ICE", "remove".into()),
    ];
    offer.extend(offer_extra);
    let reply = relay.ng.expect_ok(&dict(offer));
    assert_eq!(reply.get("warning"), None, "every key is understood");
    let offered = reply.str_at("sdp");
    let callee_side = advertised(offered);
    assert_relay_port(callee_side, bed.relay_callee_addr(), "offer");
    assert!(
        offered.contains(&format!(
            "o=- 1545997027 1 IN IP4 {}",
            bed.relay_callee_addr()
        )),
        "replace origin rewrites o=:\n{offered}"
    );
    let reply = relay.ng.expect_ok(&dict(vec![
        ("command", "answer".into()),
        ("call-id", call_id.into()),
        ("from-tag", "tag-a".into()),
        ("to-tag", "tag-b".into()),
        ("sdp", sdp(relay.bed.callee_addr(), CALLEE_PORT).into()),
        ("flags", vec!["trust-address"].into()),
        ("replace", vec!["origin"].into()),
    ]));
    assert_eq!(reply.get("warning"), None, "every key is understood");
    let caller_side = advertised(reply.str_at("sdp"));
    assert_relay_port(caller_side, bed.relay_caller_addr(), "answer");
    Anchors {
        caller_side,
        callee_side,
    }
}

/// The active call-ids. `limit` is explicit: rtpengine answers at most 32 without it.
fn call_ids(relay: &Relay) -> Vec<String> {
    let reply = relay.ng.expect_ok(&dict(vec![
        ("command", "list".into()),
        ("limit", Value::Int(5000)),
    ]));
    assert_eq!(reply.get("warning"), None, "`limit` is understood");
    reply
        .get("calls")
        .and_then(Value::as_list)
        .unwrap_or_else(|| panic!("no calls in {reply:?}"))
        .iter()
        .map(|v| v.as_str().expect("a call-id string").to_owned())
        .collect()
}

fn query(relay: &Relay, call_id: &str) -> Result<Value, Value> {
    let reply = relay
        .ng
        .request(&dict(vec![
            ("command", "query".into()),
            ("call-id", call_id.into()),
        ]))
        .unwrap_or_else(|e| panic!("query: {e}"));
    match reply.get("result").and_then(Value::as_str) {
        Some("ok") => Ok(reply),
        _ => Err(reply),
    }
}

/// Queries until the RTP totals reach `packets` (the userspace paths count a packet just after
/// sending it), at most a second; returns the last reply.
fn query_settled(relay: &Relay, call_id: &str, packets: i64) -> Value {
    let mut reply = Value::Int(0);
    for _ in 0..50 {
        reply = query(relay, call_id).unwrap_or_else(|e| panic!("query {call_id}: {e:?}"));
        if reply.int_at(&["totals", "RTP", "packets"]) >= packets {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reply
}

fn delete(relay: &Relay, call_id: &str) -> Value {
    relay.ng.expect_ok(&dict(vec![
        ("command", "delete".into()),
        ("call-id", call_id.into()),
        ("from-tag", "tag-a".into()),
    ]))
}

/// The RTP stream a tag sent, from a `query`/`delete` reply.
fn rtp_stream<'v>(reply: &'v Value, tag: &str) -> &'v Value {
    let medias = reply
        .path(&["tags", tag, "medias"])
        .and_then(Value::as_list)
        .unwrap_or_else(|| panic!("no medias of {tag} in {reply:?}"));
    assert_eq!(medias.len(), 1, "one media of {tag}: {reply:?}");
    medias[0]
        .get("streams")
        .and_then(Value::as_list)
        .and_then(|streams| {
            streams.iter().find(|s| {
                s.get("flags")
                    .and_then(Value::as_list)
                    .is_some_and(|f| f.iter().any(|f| f.as_str() == Some("RTP")))
            })
        })
        .unwrap_or_else(|| panic!("no RTP stream of {tag} in {reply:?}"))
}

fn endpoint(stream: &Value, key: &str) -> SocketAddrV4 {
    let e = stream
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {stream:?}"));
    assert_eq!(e.str_at("family"), "IPv4");
    SocketAddrV4::new(
        e.str_at("address").parse().expect("an IPv4 address"),
        u16::try_from(e.int_at(&["port"])).expect("a port"),
    )
}

// ---------------------------------------------------------------------------------------------
// Media

fn bind(ns: &NetNs, addr: SocketAddrV4) -> UdpSocket {
    let socket = ns
        .run(move || UdpSocket::bind(addr))
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    socket
}

/// An RTP packet (version 2, PCMU) whose payload depends on its sequence number and SSRC.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(RTP_SIZE);
    p.extend_from_slice(&[0x80, 0x00]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..RTP_SIZE - 12).map(|i| (i as u8).wrapping_mul(31) ^ (seq as u8) ^ (ssrc as u8)));
    p
}

/// Sends `n` RTP packets from `from` to `to`, each awaited at `receiver` from `relay_src`.
/// Returns the bytes (UDP payload) sent.
fn exchange(
    from: &UdpSocket,
    to: SocketAddrV4,
    receiver: &UdpSocket,
    relay_src: SocketAddrV4,
    n: usize,
    ssrc: u32,
) -> Result<u64, String> {
    let mut buf = [0u8; 2048];
    let mut bytes = 0;
    for i in 0..n {
        let sent = rtp(i as u16, ssrc);
        from.send_to(&sent, to).map_err(|e| format!("send: {e}"))?;
        let (len, src) = receiver
            .recv_from(&mut buf)
            .map_err(|e| format!("packet {i} (ssrc {ssrc:#x}) to {to} never arrived: {e}"))?;
        if src != SocketAddr::V4(relay_src) {
            return Err(format!(
                "packet {i} to {to} arrived from {src}, expected from the relay's {relay_src}"
            ));
        }
        if buf[..len] != sent[..] {
            return Err(format!("packet {i} to {to} changed on the way"));
        }
        bytes += len as u64;
    }
    Ok(bytes)
}

fn nothing_arrives(socket: &UdpSocket) -> Option<SocketAddr> {
    socket.recv_from(&mut [0u8; 2048]).ok().map(|(_, src)| src)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scenarios

/// One call with media both ways: ng offer/answer, real RTP, `query`, the API, `delete`.
fn call_with_media(backend: &'static str) {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(TopologyKind::TwoArm, "ngcall").expect("testbed");
    let mut relay = Relay::start(&bed, backend, 30);
    let call_id = "call-1@caller.example";
    let caller = SocketAddrV4::new(bed.caller_addr(), CALLER_PORT);
    let callee = SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT);

    let anchors = offer_answer(
        &relay,
        call_id,
        &sdp(bed.caller_addr(), CALLER_PORT),
        vec![("flags", vec!["trust-address"].into())],
    );
    assert_eq!(call_ids(&relay), vec![call_id.to_owned()]);

    let caller_socket = bind(bed.caller(), caller);
    let callee_socket = bind(bed.callee(), callee);
    let forward = exchange(
        &caller_socket,
        anchors.caller_side,
        &callee_socket,
        anchors.callee_side,
        PACKETS,
        0xa1,
    )
    .unwrap_or_else(|e| panic!("{backend}: caller -> callee: {e}"));
    let backward = exchange(
        &callee_socket,
        anchors.callee_side,
        &caller_socket,
        anchors.caller_side,
        PACKETS,
        0xb2,
    )
    .unwrap_or_else(|e| panic!("{backend}: callee -> caller: {e}"));
    assert_eq!(forward, (PACKETS * RTP_SIZE) as u64);
    relay.assert_running();

    // ng query: the totals and each side's stream.
    let reply = query_settled(&relay, call_id, 2 * PACKETS as i64);
    assert_eq!(
        reply.int_at(&["totals", "RTP", "packets"]),
        2 * PACKETS as i64,
        "{reply:?}"
    );
    assert_eq!(
        reply.int_at(&["totals", "RTP", "bytes"]),
        (forward + backward) as i64,
        "{reply:?}"
    );
    assert_eq!(reply.int_at(&["totals", "RTCP", "packets"]), 0, "{reply:?}");
    let from_a = rtp_stream(&reply, "tag-a");
    assert_eq!(from_a.int_at(&["stats", "packets"]), PACKETS as i64);
    assert_eq!(from_a.int_at(&["stats", "bytes"]), forward as i64);
    assert_eq!(
        from_a.int_at(&["local port"]),
        i64::from(anchors.caller_side.port())
    );
    assert_eq!(endpoint(from_a, "endpoint"), caller);
    let from_b = rtp_stream(&reply, "tag-b");
    assert_eq!(from_b.int_at(&["stats", "packets"]), PACKETS as i64);
    assert_eq!(
        from_b.int_at(&["local port"]),
        i64::from(anchors.callee_side.port())
    );
    assert_eq!(endpoint(from_b, "endpoint"), callee);
    assert_eq!(
        reply
            .path(&["tags", "tag-a", "in dialogue with"])
            .and_then(Value::as_str),
        Some("tag-b"),
        "{reply:?}"
    );

    // The API while the call runs.
    let call = relay.get_json(&format!("/calls/{}", percent_encode(call_id)));
    assert_eq!(call["call_id"], call_id, "{call:#}");
    assert_eq!(call["state"], "established", "{call:#}");
    assert_eq!(call["backend"], backend, "{call:#}");
    assert_eq!(call["from_tag"], "tag-a", "{call:#}");
    assert_eq!(call["to_tag"], "tag-b", "{call:#}");
    assert_eq!(call["rtp"][0]["packets"], PACKETS, "{call:#}");
    assert_eq!(call["rtp"][1]["packets"], PACKETS, "{call:#}");
    assert_eq!(call["rtp"][0]["bytes"], forward, "{call:#}");
    let streams = call["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 4, "RTP and RTCP both ways: {call:#}");
    let stream = |from: &str, rtcp: bool| {
        streams
            .iter()
            .find(|s| s["from"] == from && s["rtcp"] == rtcp)
            .unwrap_or_else(|| panic!("no stream from {from} (rtcp {rtcp}): {call:#}"))
    };
    assert_eq!(stream("a", false)["relay"], anchors.caller_side.to_string());
    assert_eq!(stream("a", false)["sdp_peer"], caller.to_string());
    assert_eq!(stream("a", false)["packets"], PACKETS);
    assert_eq!(stream("b", false)["relay"], anchors.callee_side.to_string());
    assert_eq!(stream("b", false)["sdp_peer"], callee.to_string());
    assert_eq!(stream("b", false)["packets"], PACKETS);
    let rtcp_a = SocketAddrV4::new(*anchors.caller_side.ip(), anchors.caller_side.port() + 1);
    assert_eq!(stream("a", true)["relay"], rtcp_a.to_string());
    assert_eq!(stream("a", true)["packets"], 0);
    let calls = relay.get_json("/calls?summary=1");
    assert_eq!(calls["count"], 1, "{calls:#}");
    let (status, metrics) = relay.get("/metrics");
    assert_eq!(status, 200);
    for line in [
        "sluice_active_calls 1".to_owned(),
        format!("sluice_backend_info{{backend=\"{backend}\"}} 1"),
        format!(
            "sluice_call_packets{{call_id=\"{call_id}\",direction=\"a_to_b\",kind=\"rtp\"}} {PACKETS}"
        ),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }

    // ng delete: the final totals, and the call is gone.
    let reply = delete(&relay, call_id);
    assert_eq!(
        reply.int_at(&["totals", "RTP", "packets"]),
        2 * PACKETS as i64,
        "{reply:?}"
    );
    assert_eq!(
        reply.int_at(&["totals", "RTP", "bytes"]),
        (forward + backward) as i64,
        "{reply:?}"
    );
    assert!(call_ids(&relay).is_empty());
    let gone = query(&relay, call_id).expect_err("a deleted call is unknown");
    assert!(
        gone.str_at("error-reason").contains("unknown call"),
        "{gone:?}"
    );
    let (status, body) = relay.get(&format!("/calls/{}", percent_encode(call_id)));
    assert_eq!(status, 404, "{body}");
    let ended = relay.get_json("/ended");
    let entry = ended["ended"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["report"]["call_id"] == call_id))
        .unwrap_or_else(|| panic!("{call_id} not in /ended: {ended:#}"));
    assert_eq!(entry["cause"], "deleted");
    assert_eq!(entry["report"]["rtp"][1]["packets"], PACKETS);

    // The relay no longer forwards the call's ports.
    caller_socket
        .send_to(&rtp(9999, 0xa1), anchors.caller_side)
        .expect("send");
    assert_eq!(
        nothing_arrives(&callee_socket),
        None,
        "a deleted call is not relayed"
    );
    relay.assert_running();
}

/// A call whose media stops: the relay ends it after `--timeout 2` and says why.
fn media_timeout(backend: &'static str) {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(TopologyKind::TwoArm, "ngtimeout").expect("testbed");
    let mut relay = Relay::start(&bed, backend, 2);
    let call_id = "timeout-1@caller.example";
    let n = 20;
    let anchors = offer_answer(
        &relay,
        call_id,
        &sdp(bed.caller_addr(), CALLER_PORT),
        vec![("flags", vec!["trust-address"].into())],
    );
    let caller_socket = bind(
        bed.caller(),
        SocketAddrV4::new(bed.caller_addr(), CALLER_PORT),
    );
    let callee_socket = bind(
        bed.callee(),
        SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT),
    );
    let forward = exchange(
        &caller_socket,
        anchors.caller_side,
        &callee_socket,
        anchors.callee_side,
        n,
        0xc3,
    )
    .unwrap_or_else(|e| panic!("{backend}: {e}"));
    let backward = exchange(
        &callee_socket,
        anchors.callee_side,
        &caller_socket,
        anchors.caller_side,
        n,
        0xd4,
    )
    .unwrap_or_else(|e| panic!("{backend}: {e}"));
    let media_stopped = Instant::now();

    // The relay checks every 200 ms; the call ends 2 s after its last packet. Wait at most 8 s.
    let mut entry = None;
    while entry.is_none() && media_stopped.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(200));
        let ended = relay.get_json("/ended");
        entry = ended["ended"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["report"]["call_id"] == call_id))
            .cloned();
    }
    let waited = media_stopped.elapsed();
    let entry = entry.unwrap_or_else(|| {
        panic!(
            "{backend}: the call was not ended within {waited:?} of its last packet:\n{}",
            relay.log_text()
        )
    });
    eprintln!(
        "{backend}: the relay ended the call {:.1} s after its last packet",
        waited.as_secs_f64()
    );
    assert_eq!(entry["cause"], "media-timeout", "{entry:#}");
    let report = &entry["report"];
    assert_eq!(report["state"], "established", "{entry:#}");
    assert_eq!(report["rtp"][0]["packets"], n, "{entry:#}");
    assert_eq!(report["rtp"][0]["bytes"], forward, "{entry:#}");
    assert_eq!(report["rtp"][1]["packets"], n, "{entry:#}");
    assert_eq!(report["rtp"][1]["bytes"], backward, "{entry:#}");
    assert_eq!(report["streams"].as_array().map(Vec::len), Some(4));

    let gone = query(&relay, call_id).expect_err("a timed-out call is unknown");
    assert!(
        gone.str_at("error-reason").contains("unknown call"),
        "{gone:?}"
    );
    assert!(call_ids(&relay).is_empty());
    let (status, body) = relay.get(&format!("/calls/{}", percent_encode(call_id)));
    assert_eq!(status, 404, "{body}");
    let (_, metrics) = relay.get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "sluice_recently_ended_calls{cause=\"media-timeout\"} 1"),
        "{metrics}"
    );
    // Its ports are released: nothing is relayed any more.
    caller_socket
        .send_to(&rtp(1, 0xc3), anchors.caller_side)
        .expect("send");
    assert_eq!(nothing_arrives(&callee_socket), None);
    relay.assert_running();
}

/// How the offer tells the relay that the caller is behind NAT.
#[derive(Clone, Copy, Debug)]
enum NatHint {
    /// `flags: [symmetric]`: always learn the caller from its packets.
    Symmetric,
    /// `received-from: [IP4, 10.77.1.2]`: the SDP's address differs from where the SIP came
    /// from, so the relay latches by itself.
    ReceivedFrom,
}

/// The caller's SDP names an address it does not send from; the relay learns the real
/// one from its first packet and only then can the callee's media reach it.
fn nat_latching(backend: &'static str, hint: NatHint) {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(TopologyKind::TwoArm, "ngnat").expect("testbed");
    let mut relay = Relay::start(&bed, backend, 30);
    let call_id = "nat-1@caller.example";
    // With `symmetric` the SDP names a private address. With `received-from` it names a
    // public-looking one (TEST-NET-3), so that only the mismatch with the SIP source can make
    // the relay latch (a private address alone would).
    let sdp_ip = match hint {
        NatHint::Symmetric => Ipv4Addr::new(192, 168, 0, 10),
        NatHint::ReceivedFrom => Ipv4Addr::new(203, 0, 113, 10),
    };
    let signalled = SocketAddrV4::new(sdp_ip, CALLER_PORT);
    let really = SocketAddrV4::new(bed.caller_addr(), CALLER_PORT + 2);
    let callee = SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT);
    let extra = match hint {
        NatHint::Symmetric => vec![("flags", vec!["symmetric"].into())],
        NatHint::ReceivedFrom => vec![(
            "received-from",
            vec!["IP4".to_owned(), bed.caller_addr().to_string()].into(),
        )],
    };
    let anchors = offer_answer(
        &relay,
        call_id,
        &sdp(*signalled.ip(), signalled.port()),
        extra,
    );
    let caller_socket = bind(bed.caller(), really);
    // Where the SDP would send if the relay trusted it, on the caller's real host.
    let sdp_port = bind(
        bed.caller(),
        SocketAddrV4::new(bed.caller_addr(), CALLER_PORT),
    );
    let callee_socket = bind(bed.callee(), callee);

    // Before the caller speaks, the relay does not know where it is.
    callee_socket
        .send_to(&rtp(0, 0xe5), anchors.callee_side)
        .expect("send");
    assert_eq!(
        nothing_arrives(&caller_socket),
        None,
        "{backend}: the callee's media reached the caller before it was latched"
    );
    assert_eq!(nothing_arrives(&sdp_port), None);
    let reply = query(&relay, call_id).expect("query");
    let from_a = rtp_stream(&reply, "tag-a");
    assert_eq!(endpoint(from_a, "advertised endpoint"), signalled);
    assert_eq!(endpoint(from_a, "endpoint"), signalled, "not latched yet");

    // The caller's first packet teaches the relay where it is.
    let n = 50;
    let forward = exchange(
        &caller_socket,
        anchors.caller_side,
        &callee_socket,
        anchors.callee_side,
        n,
        0xf6,
    )
    .unwrap_or_else(|e| panic!("{backend}: caller -> callee: {e}"));
    let backward = exchange(
        &callee_socket,
        anchors.callee_side,
        &caller_socket,
        anchors.caller_side,
        n,
        0xe5,
    )
    .unwrap_or_else(|e| panic!("{backend}: callee -> caller after latching: {e}"));
    assert_eq!(nothing_arrives(&sdp_port), None);

    let reply = query_settled(&relay, call_id, 2 * n as i64);
    let from_a = rtp_stream(&reply, "tag-a");
    assert_eq!(endpoint(from_a, "endpoint"), really, "latched: {reply:?}");
    assert_eq!(endpoint(from_a, "advertised endpoint"), signalled);
    assert_eq!(from_a.int_at(&["stats", "packets"]), n as i64);
    assert_eq!(from_a.int_at(&["stats", "bytes"]), forward as i64);
    // The callee's packet sent before the latch may be counted (it reached the relay) or not.
    let from_b = rtp_stream(&reply, "tag-b");
    let b_packets = from_b.int_at(&["stats", "packets"]);
    assert!(
        b_packets == n as i64 || b_packets == n as i64 + 1,
        "{backend}: {b_packets} packets from the callee, expected {n} (+1 early): {reply:?}"
    );
    assert!(from_b.int_at(&["stats", "bytes"]) >= backward as i64);
    let call = relay.get_json(&format!("/calls/{}", percent_encode(call_id)));
    let streams = call["streams"].as_array().expect("streams");
    let a_rtp = streams
        .iter()
        .find(|s| s["from"] == "a" && s["rtcp"] == false)
        .unwrap_or_else(|| panic!("{call:#}"));
    assert_eq!(a_rtp["latched_peer"], really.to_string(), "{call:#}");
    assert_eq!(a_rtp["sdp_peer"], signalled.to_string(), "{call:#}");
    delete(&relay, call_id);
    relay.assert_running();
}

/// 1000 calls set up over ng (20 of them with media), listed, then deleted. Prints the setup
/// rate and the relay's memory per call; asserts only what the relay answers.
fn thousand_calls(backend: &'static str) {
    if !privileged() {
        return;
    }
    const CALLS: usize = 1000;
    const WITH_MEDIA: usize = 20;
    let bed = Testbed::build(TopologyKind::TwoArm, "ngscale").expect("testbed");
    let mut relay = Relay::start(&bed, backend, 30);
    let id = |i: usize| format!("scale-{i:04}@caller.example");
    let caller_sdp = sdp(bed.caller_addr(), CALLER_PORT);
    let callee_sdp = sdp(bed.callee_addr(), CALLEE_PORT);
    let rss_before = relay.rss_kib();

    let started = Instant::now();
    let mut anchors = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let offer = relay.ng.expect_ok(&dict(vec![
            ("command", "offer".into()),
            ("call-id", id(i).into()),
            ("from-tag", "tag-a".into()),
            ("sdp", caller_sdp.as_str().into()),
            ("direction", vec!["caller", "callee"].into()),
            ("flags", vec!["trust-address"].into()),
        ]));
        let answer = relay.ng.expect_ok(&dict(vec![
            ("command", "answer".into()),
            ("call-id", id(i).into()),
            ("from-tag", "tag-a".into()),
            ("to-tag", "tag-b".into()),
            ("sdp", callee_sdp.as_str().into()),
            ("flags", vec!["trust-address"].into()),
        ]));
        anchors.push(Anchors {
            caller_side: advertised(answer.str_at("sdp")),
            callee_side: advertised(offer.str_at("sdp")),
        });
    }
    let setup = started.elapsed();
    let rss_after = relay.rss_kib();

    // Every call got its own ports on each side.
    let mut ports: Vec<u16> = anchors.iter().map(|a| a.caller_side.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), CALLS, "distinct caller-side ports");
    let mut ports: Vec<u16> = anchors.iter().map(|a| a.callee_side.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), CALLS, "distinct callee-side ports");
    for a in &anchors {
        assert_relay_port(a.caller_side, bed.relay_caller_addr(), "answer");
        assert_relay_port(a.callee_side, bed.relay_callee_addr(), "offer");
    }

    let mut listed = call_ids(&relay);
    listed.sort();
    let expected: Vec<String> = (0..CALLS).map(id).collect();
    assert_eq!(listed, expected, "list has every call");
    let summary = relay.get_json("/calls?summary=1");
    assert_eq!(summary["count"], CALLS, "GET /calls counts every call");

    // Media on a few of them, spread over the port range.
    let caller_socket = bind(
        bed.caller(),
        SocketAddrV4::new(bed.caller_addr(), CALLER_PORT),
    );
    let callee_socket = bind(
        bed.callee(),
        SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT),
    );
    let media_calls: Vec<usize> = (0..WITH_MEDIA).map(|k| k * (CALLS / WITH_MEDIA)).collect();
    for &i in &media_calls {
        let a = anchors[i];
        exchange(
            &caller_socket,
            a.caller_side,
            &callee_socket,
            a.callee_side,
            10,
            i as u32,
        )
        .unwrap_or_else(|e| panic!("{backend}: call {i}: {e}"));
        exchange(
            &callee_socket,
            a.callee_side,
            &caller_socket,
            a.caller_side,
            10,
            i as u32,
        )
        .unwrap_or_else(|e| panic!("{backend}: call {i}: {e}"));
    }
    for &i in &media_calls {
        let reply = query_settled(&relay, &id(i), 20);
        assert_eq!(reply.int_at(&["totals", "RTP", "packets"]), 20, "call {i}");
        assert_eq!(
            reply.int_at(&["totals", "RTP", "bytes"]),
            (20 * RTP_SIZE) as i64,
            "call {i}"
        );
    }
    let quiet = query(&relay, &id(1)).expect("query");
    assert_eq!(quiet.int_at(&["totals", "RTP", "packets"]), 0);

    let started = Instant::now();
    for i in 0..CALLS {
        let reply = delete(&relay, &id(i));
        let expected = if media_calls.contains(&i) { 20 } else { 0 };
        assert_eq!(
            reply.int_at(&["totals", "RTP", "packets"]),
            expected,
            "call {i}"
        );
    }
    let teardown = started.elapsed();
    assert!(call_ids(&relay).is_empty(), "every call deleted");
    let rss_end = relay.rss_kib();
    relay.assert_running();

    let rate = CALLS as f64 / setup.as_secs_f64();
    let per_call = (rss_after as f64 - rss_before as f64) * 1024.0 / CALLS as f64;
    println!(
        "relay_ng {backend}: {CALLS} calls set up over ng (offer+answer, sequential, one client) \
         in {:.3} s = {rate:.0} calls/s; deleted in {:.3} s = {:.0} calls/s",
        setup.as_secs_f64(),
        teardown.as_secs_f64(),
        CALLS as f64 / teardown.as_secs_f64()
    );
    println!(
        "relay_ng {backend}: relay RSS {rss_before} KiB before, {rss_after} KiB with {CALLS} \
         calls ({per_call:.0} bytes/call), {rss_end} KiB after deleting them"
    );
}

macro_rules! backend_tests {
    ($($backend:ident),*) => {
        $(
            mod $backend {
                use super::*;

                #[test]
                fn call_with_media() {
                    super::call_with_media(stringify!($backend));
                }

                #[test]
                fn media_timeout() {
                    super::media_timeout(stringify!($backend));
                }

                #[test]
                fn nat_latching_symmetric() {
                    super::nat_latching(stringify!($backend), NatHint::Symmetric);
                }

                #[test]
                fn nat_latching_received_from() {
                    super::nat_latching(stringify!($backend), NatHint::ReceivedFrom);
                }

                #[test]
                fn thousand_calls() {
                    super::thousand_calls(stringify!($backend));
                }
            }
        )*
    };
}

backend_tests!(xdp, afxdp, sockets);
