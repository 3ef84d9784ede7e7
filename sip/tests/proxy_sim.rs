//! `ProxyCore` in virtual time: scripted byte-level UAs exchange messages through the proxy and
//! a fake media relay; no sockets, no clock.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rsip::Transport;
use sluice_sip::auth::{compute_response, Challenge, DigestInput, Qop, Secret};
use sluice_sip::message::{header_name_value, parse, Limits, Request, Response, SipMessage};
use sluice_sip::proxy::{
    Account, CallRef, Cidr, EndCause, EndReason, Gateway, Interface, Leg, MediaError, MediaRelay,
    ProxyConfig, ProxyCore, ProxyEvent, PstnRoute,
};

// ---------------------------------------------------------------------------------------------
// The fake relay
// ---------------------------------------------------------------------------------------------

/// Rewrites every SDP to point at 203.0.113.99 with a port per direction; refuses SDP containing
/// `BAD`. Records what it was asked.
#[derive(Debug, Default)]
struct FakeRelay {
    offers: Vec<(CallRef, IpAddr, Leg)>,
    answers: Vec<(CallRef, IpAddr, Leg)>,
    deleted: Vec<String>,
}

fn relay_sdp(toward: Leg, kind: &str) -> Vec<u8> {
    let port = match toward {
        Leg::Callee => 30000,
        Leg::Caller => 30002,
    };
    format!(
        "v=0\r\no=relay 1 1 IN IP4 203.0.113.99\r\ns={kind}\r\nc=IN IP4 203.0.113.99\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    )
    .into_bytes()
}

impl MediaRelay for FakeRelay {
    fn offer(
        &mut self,
        call: &CallRef,
        sdp: &[u8],
        source: IpAddr,
        toward: Leg,
    ) -> Result<Vec<u8>, MediaError> {
        if String::from_utf8_lossy(sdp).contains("BAD") {
            return Err(MediaError::BadSdp("test".into()));
        }
        self.offers.push((call.clone(), source, toward));
        Ok(relay_sdp(toward, "offer"))
    }

    fn answer(
        &mut self,
        call: &CallRef,
        sdp: &[u8],
        source: IpAddr,
        toward: Leg,
    ) -> Result<Vec<u8>, MediaError> {
        if String::from_utf8_lossy(sdp).contains("BAD") {
            return Err(MediaError::BadSdp("test".into()));
        }
        self.answers.push((call.clone(), source, toward));
        Ok(relay_sdp(toward, "answer"))
    }

    fn delete(&mut self, call_id: &str) {
        self.deleted.push(call_id.to_owned());
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses and configuration
// ---------------------------------------------------------------------------------------------

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const PROXY: &str = "192.0.2.1:5060";
/// Alice's phone: private address in its Via/Contact, public NAT address on the wire.
const ALICE_NAT: &str = "198.51.100.10:40000";
const BOB_NAT: &str = "198.51.100.20:40001";
const BOB2_NAT: &str = "198.51.100.21:40002";
const CAROL: &str = "192.0.2.200:5060";
const PEER: &str = "203.0.113.5:5060";
const GW_A: &str = "203.0.113.50:5060";
const GW_B1: &str = "203.0.113.51:5060";
const GW_B2: &str = "203.0.113.52:5060";

fn config() -> ProxyConfig {
    let mut c = ProxyConfig::new(Interface::new(addr(PROXY)));
    c.domains = vec!["example.com".into()];
    c.accounts = vec![
        Account {
            user: "alice".into(),
            domain: "example.com".into(),
            secret: Secret::Password("alicepw".into()),
            aliases: vec!["15550001".into()],
        },
        Account {
            user: "bob".into(),
            domain: "example.com".into(),
            secret: Secret::Password("bobpw".into()),
            aliases: vec!["15550002".into()],
        },
    ];
    c.trusted = vec![Cidr::parse("203.0.113.0/28").unwrap()];
    c.pstn = vec![
        PstnRoute {
            prefix: "1".into(),
            gateways: vec![Gateway {
                addr: addr(GW_A),
                transport: Transport::Udp,
            }],
        },
        PstnRoute {
            prefix: "1212".into(),
            gateways: vec![
                Gateway {
                    addr: addr(GW_B1),
                    transport: Transport::Udp,
                },
                Gateway {
                    addr: addr(GW_B2),
                    transport: Transport::Udp,
                },
            ],
        },
    ];
    c
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

struct Sim {
    core: ProxyCore<FakeRelay>,
    now: Duration,
    /// Everything the proxy sent, in order, not yet taken.
    wire: Vec<(SocketAddr, String)>,
    /// Everything the proxy sent, as bytes, in order (never taken).
    raw: Vec<(SocketAddr, Vec<u8>)>,
    events: Vec<ProxyEvent>,
}

impl Sim {
    fn new() -> Self {
        let core = ProxyCore::new(
            config(),
            FakeRelay::default(),
            b"0123456789abcdef-test-seed",
        )
        .unwrap();
        Self {
            core,
            now: Duration::from_secs(1_700_000_000),
            wire: Vec::new(),
            raw: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            assert_eq!(t.local, addr(PROXY));
            self.raw.push((t.destination, t.contents.to_vec()));
            self.wire.push((
                t.destination,
                String::from_utf8_lossy(&t.contents).into_owned(),
            ));
        }
        while let Some(e) = self.core.poll_event() {
            self.events.push(e);
        }
    }

    /// `from` sends `text` (LF line ends are fine) to the proxy.
    fn send(&mut self, from: &str, text: &str) {
        let bytes = crlf(text);
        self.core.handle_datagram(
            self.now,
            addr(PROXY),
            addr(from),
            Transport::Udp,
            bytes.as_bytes(),
        );
        self.drain();
    }

    /// `from` sends exactly `bytes` to the proxy.
    fn send_raw(&mut self, from: &str, bytes: &[u8]) {
        self.core
            .handle_datagram(self.now, addr(PROXY), addr(from), Transport::Udp, bytes);
        self.drain();
    }

    /// The bytes of the last message sent to `to`.
    fn last_raw(&self, to: &str) -> Vec<u8> {
        let to = addr(to);
        self.raw
            .iter()
            .rev()
            .find(|(d, _)| *d == to)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("nothing sent to {to}"))
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(t) = self.core.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = until;
    }

    /// Takes everything sent to `to`.
    fn take(&mut self, to: &str) -> Vec<String> {
        let to = addr(to);
        let (mine, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|(d, _)| *d == to);
        self.wire = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }

    /// Takes exactly one message to `to`, starting with `start`.
    fn one(&mut self, to: &str, start: &str) -> String {
        let msgs = self.take(to);
        let matching: Vec<&String> = msgs.iter().filter(|m| m.starts_with(start)).collect();
        assert_eq!(matching.len(), 1, "one {start:?} to {to}, got {msgs:#?}");
        matching[0].clone()
    }

    fn take_events(&mut self) -> Vec<ProxyEvent> {
        std::mem::take(&mut self.events)
    }
}

fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

fn req(text: &str) -> Request {
    match parse(text.as_bytes(), &Limits::UDP).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("request expected"),
    }
}

fn resp(text: &str) -> Response {
    match parse(text.as_bytes(), &Limits::UDP).unwrap() {
        SipMessage::Response(r) => r,
        SipMessage::Request(_) => panic!("response expected"),
    }
}

fn hdrs(headers: &rsip::Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .map(header_name_value)
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

fn hdr(headers: &rsip::Headers, name: &str) -> String {
    hdrs(headers, name).into_iter().next().unwrap_or_default()
}

fn body(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn sdp(ip: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
}

/// A UAS's response to a request it received: Vias, Record-Route (for 1xx/2xx), From, To with
/// `tag`, Call-ID, CSeq, a Contact, and an optional body.
fn answer(
    request: &str,
    status: u16,
    reason: &str,
    tag: &str,
    contact: &str,
    sdp_body: Option<&str>,
) -> String {
    let r = req(request);
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for v in hdrs(&r.headers, "Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    if status < 300 {
        for v in hdrs(&r.headers, "Record-Route") {
            out.push_str(&format!("Record-Route: {v}\r\n"));
        }
    }
    out.push_str(&format!("From: {}\r\n", hdr(&r.headers, "From")));
    let to = hdr(&r.headers, "To");
    if to.contains("tag=") || status == 100 {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        out.push_str(&format!("To: {to};tag={tag}\r\n"));
    }
    out.push_str(&format!("Call-ID: {}\r\n", hdr(&r.headers, "Call-ID")));
    out.push_str(&format!("CSeq: {}\r\n", hdr(&r.headers, "CSeq")));
    if status < 300 {
        out.push_str(&format!("Contact: <{contact}>\r\n"));
    }
    match sdp_body {
        Some(b) => out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

/// An initial INVITE.
fn invite(
    from_user_host: &str,
    via_host: &str,
    ruri: &str,
    call_id: &str,
    extra: &str,
    sdp_body: Option<&str>,
) -> String {
    let (ct, bodytext) = match sdp_body {
        Some(b) => ("Content-Type: application/sdp\r\n".to_owned(), b.to_owned()),
        None => (String::new(), String::new()),
    };
    format!(
        "INVITE {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP {via_host};branch=z9hG4bK-{call_id}-1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:{from_user_host}>;tag=ft-{call_id}\r\n\
To: <{ruri}>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:{from_user_host}>\r\n\
{extra}{ct}Content-Length: {}\r\n\r\n{bodytext}",
        bodytext.len()
    )
}

/// An in-dialog request built from a 2xx as the caller sees it (route set = reversed RR).
fn caller_in_dialog(
    method: &str,
    ok: &str,
    via_host: &str,
    cseq: u32,
    branch: &str,
    sdp_body: Option<&str>,
) -> String {
    let r = resp(ok);
    let mut rr = hdrs(&r.headers, "Record-Route");
    rr.reverse();
    let contact = hdr(&r.headers, "Contact");
    let target = contact.trim_start_matches('<').trim_end_matches('>');
    let mut out = format!("{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch={branch};rport\r\nMax-Forwards: 70\r\n");
    for v in rr {
        out.push_str(&format!("Route: {v}\r\n"));
    }
    out.push_str(&format!(
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n",
        hdr(&r.headers, "From"),
        hdr(&r.headers, "To"),
        hdr(&r.headers, "Call-ID")
    ));
    body_tail(&mut out, sdp_body);
    out
}

/// An in-dialog request from the callee, built from the INVITE it received (route set = RR).
fn callee_in_dialog(
    method: &str,
    inv: &str,
    tag: &str,
    via_host: &str,
    cseq: u32,
    branch: &str,
) -> String {
    let r = req(inv);
    let contact = hdr(&r.headers, "Contact");
    let target = contact.trim_start_matches('<').trim_end_matches('>');
    let mut out = format!("{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch={branch};rport\r\nMax-Forwards: 70\r\n");
    for v in hdrs(&r.headers, "Record-Route") {
        out.push_str(&format!("Route: {v}\r\n"));
    }
    out.push_str(&format!(
        "From: {};tag={tag}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        hdr(&r.headers, "To"),
        hdr(&r.headers, "From"),
        hdr(&r.headers, "Call-ID")
    ));
    out
}

fn body_tail(out: &mut String, sdp_body: Option<&str>) {
    match sdp_body {
        Some(b) => out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
}

/// The digest `Authorization`/`Proxy-Authorization` value answering `challenge_resp`'s first
/// challenge in `header` for `method` `uri`.
fn credentials(
    challenge_resp: &str,
    header: &str,
    user: &str,
    pw: &str,
    method: &str,
    uri: &str,
) -> String {
    let r = resp(challenge_resp);
    let ch = Challenge::parse(&hdr(&r.headers, header)).unwrap();
    let input = DigestInput {
        algorithm: ch.algorithm,
        username: user,
        realm: &ch.realm,
        nonce: &ch.nonce,
        method,
        uri,
        qop: Some(Qop::Auth),
        nc: Some("00000001"),
        cnonce: Some("c0ffee"),
    };
    let response = compute_response(&input, pw);
    format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}, cnonce=\"c0ffee\", opaque=\"{}\", qop=auth, nc=00000001",
        ch.realm,
        ch.nonce,
        ch.algorithm,
        ch.opaque.unwrap_or_default()
    )
}

fn register_text(
    user: &str,
    via_host: &str,
    contact: &str,
    cseq: u32,
    auth: Option<&str>,
) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP {via_host};branch=z9hG4bK-reg-{user}-{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:{user}@example.com>;tag=reg-{user}\r\n\
To: <sip:{user}@example.com>\r\n\
Call-ID: reg-{user}@{via_host}\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: <{contact}>\r\n\
Expires: 3600\r\n\
{auth}Content-Length: 0\r\n\r\n"
    )
}

/// REGISTER with digest: 401, then credentials, then 200.
fn register(sim: &mut Sim, user: &str, pw: &str, nat: &str, private: &str) -> String {
    let contact = format!("sip:{user}@{private}");
    sim.send(nat, &register_text(user, private, &contact, 1, None));
    let challenge = sim.one(nat, "SIP/2.0 401");
    let auth = credentials(
        &challenge,
        "WWW-Authenticate",
        user,
        pw,
        "REGISTER",
        "sip:example.com",
    );
    sim.send(nat, &register_text(user, private, &contact, 2, Some(&auth)));
    sim.one(nat, "SIP/2.0 200")
}

/// The billing party and User-Agent of each CallStarted.
fn started(events: &[ProxyEvent]) -> Vec<(Option<String>, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            ProxyEvent::CallStarted {
                billing_party,
                user_agent,
                ..
            } => Some((billing_party.clone(), user_agent.clone())),
            _ => None,
        })
        .collect()
}

/// The callee's User-Agent of each CallAnswered.
fn answered_agents(events: &[ProxyEvent]) -> Vec<Option<String>> {
    events
        .iter()
        .filter_map(|e| match e {
            ProxyEvent::CallAnswered { user_agent, .. } => Some(user_agent.clone()),
            _ => None,
        })
        .collect()
}

fn ended(events: &[ProxyEvent]) -> Vec<(String, EndCause)> {
    events
        .iter()
        .filter_map(|e| match e {
            ProxyEvent::CallEnded { call_id, cause } => Some((call_id.clone(), *cause)),
            _ => None,
        })
        .collect()
}

/// Bob registers two devices (BOB_NAT and BOB2_NAT).
fn register_bob_twice(sim: &mut Sim) {
    register(sim, "bob", "bobpw", BOB_NAT, "10.0.0.20:5060");
    // Bob's second device.
    let contact = "sip:bob@10.0.0.21:5060";
    sim.send(
        BOB2_NAT,
        &register_text("bob", "10.0.0.21:5060", contact, 1, None),
    );
    let ch = sim.one(BOB2_NAT, "SIP/2.0 401");
    let creds = credentials(
        &ch,
        "WWW-Authenticate",
        "bob",
        "bobpw",
        "REGISTER",
        "sip:example.com",
    );
    sim.send(
        BOB2_NAT,
        &register_text("bob", "10.0.0.21:5060", contact, 2, Some(&creds)),
    );
    let ok = sim.one(BOB2_NAT, "SIP/2.0 200");
    assert_eq!(ok.matches("Contact:").count(), 2);
    sim.take_events();
}

/// Carol (foreign) calls bob (registered) up to the forwarded INVITE; returns it.
fn carol_calls_bob(sim: &mut Sim, call_id: &str, sdp_body: Option<&str>) -> String {
    register(sim, "bob", "bobpw", BOB_NAT, "10.0.0.20:5060");
    sim.take_events();
    let inv = invite(
        "carol@other.net",
        CAROL,
        "sip:bob@example.com",
        call_id,
        "",
        sdp_body,
    );
    sim.send(CAROL, &inv);
    sim.one(CAROL, "SIP/2.0 100");
    sim.one(BOB_NAT, "INVITE ")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn basic_call_with_sdp_relay_and_events() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "call1", Some(&sdp("192.0.2.200")));
    let r = req(&inv);
    // To the registered contact, at the NATed source, through us.
    assert_eq!(r.uri, "sip:bob@10.0.0.20:5060");
    assert_eq!(hdrs(&r.headers, "Via").len(), 2);
    assert!(hdr(&r.headers, "Via").starts_with("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK"));
    assert_eq!(
        hdrs(&r.headers, "Record-Route"),
        vec!["<sip:192.0.2.1:5060;lr>"]
    );
    assert_eq!(hdr(&r.headers, "Max-Forwards"), "69");
    // The relay's offer toward the callee replaced carol's SDP.
    assert!(body(&inv).contains("m=audio 30000"), "{inv}");
    assert!(!body(&inv).contains("192.0.2.200"));
    assert_eq!(
        hdr(&r.headers, "Content-Length"),
        body(&inv).len().to_string()
    );
    let events = sim.take_events();
    assert!(
        matches!(&events[0], ProxyEvent::CallStarted { call_id, callee, .. } if call_id == "call1" && callee == "sip:bob@example.com")
    );
    // A foreign caller reaching a local user is billed to nobody.
    assert_eq!(started(&events), vec![(None, None)]);

    sim.send(BOB_NAT, &answer(&inv, 100, "Trying", "", "", None));
    assert!(sim.take(CAROL).is_empty(), "100 is not forwarded");
    sim.send(
        BOB_NAT,
        &answer(&inv, 180, "Ringing", "bt", "sip:bob@10.0.0.20:5060", None),
    );
    let ringing = sim.one(CAROL, "SIP/2.0 180 Ringing");
    assert_eq!(hdrs(&resp(&ringing).headers, "Via").len(), 1);

    sim.send(
        BOB_NAT,
        &answer(
            &inv,
            200,
            "OK",
            "bt",
            "sip:bob@10.0.0.20:5060",
            Some(&sdp("10.0.0.20")),
        ),
    );
    let ok = sim.one(CAROL, "SIP/2.0 200 OK");
    assert!(body(&ok).contains("m=audio 30002"), "{ok}");
    assert!(!body(&ok).contains("10.0.0.20"));
    let relay = sim.core.relay();
    assert_eq!(relay.offers.len(), 1);
    assert_eq!(relay.offers[0].1, addr(CAROL).ip());
    assert_eq!(relay.answers.len(), 1);
    assert_eq!(relay.answers[0].1, addr(BOB_NAT).ip());
    assert_eq!(relay.answers[0].0.to_tag.as_deref(), Some("bt"));
    assert!(sim
        .take_events()
        .iter()
        .any(|e| matches!(e, ProxyEvent::CallAnswered { call_id, .. } if call_id == "call1")));

    // ACK end to end along the route set, to bob's NAT address.
    sim.send(
        CAROL,
        &caller_in_dialog("ACK", &ok, CAROL, 1, "z9hG4bK-ack1", None),
    );
    let ack = sim.one(BOB_NAT, "ACK sip:bob@10.0.0.20:5060");
    assert!(
        hdrs(&req(&ack).headers, "Route").is_empty(),
        "our Route was consumed"
    );

    // Bob hangs up.
    sim.send(
        BOB_NAT,
        &callee_in_dialog("BYE", &inv, "bt", "10.0.0.20:5060", 1, "z9hG4bK-bye1"),
    );
    let bye = sim.one(CAROL, "BYE sip:carol@other.net ");
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call1".to_owned(), EndCause::ByeCallee)]
    );
    assert_eq!(sim.core.relay().deleted, vec!["call1".to_owned()]);
    sim.send(
        CAROL,
        &answer(&bye, 200, "OK", "", "sip:carol@other.net", None),
    );
    let ok = sim.one(BOB_NAT, "SIP/2.0 200 OK");
    assert!(ok.contains("CSeq: 1 BYE"));
    assert_eq!(sim.core.active_calls(), 0);
}

/// Carol's CANCEL for the INVITE of `call_id` (as `invite` builds it, §9.1: same Request-URI,
/// Via, From, To, Call-ID and CSeq number).
fn carol_cancel(call_id: &str) -> String {
    invite(
        "carol@other.net",
        CAROL,
        "sip:bob@example.com",
        call_id,
        "",
        None,
    )
    .replacen("INVITE sip:", "CANCEL sip:", 1)
    .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
}

/// Carol's ACK for a non-2xx final `final_resp` to the INVITE of `call_id` (§17.1.1.3).
fn carol_ack_for(call_id: &str, final_resp: &str) -> String {
    invite(
        "carol@other.net",
        CAROL,
        "sip:bob@example.com",
        call_id,
        "",
        None,
    )
    .replacen("INVITE sip:", "ACK sip:", 1)
    .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
    .replace(
        "To: <sip:bob@example.com>",
        &format!("To: {}", hdr(&resp(final_resp).headers, "To")),
    )
}

/// The one final response sent to `to` (timer G may have retransmitted it: the same bytes).
fn one_final(sim: &mut Sim, to: &str) -> String {
    let mut finals: Vec<String> = sim
        .take(to)
        .into_iter()
        .filter(|m| m.starts_with("SIP/2.0 ") && !m.starts_with("SIP/2.0 1"))
        .collect();
    finals.dedup();
    assert_eq!(finals.len(), 1, "{finals:#?}");
    finals.remove(0)
}

#[test]
fn cancel_relays_the_callees_487() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "call2", Some(&sdp("192.0.2.200")));
    sim.send(
        BOB_NAT,
        &answer(&inv, 180, "Ringing", "bt", "sip:bob@10.0.0.20:5060", None),
    );
    sim.one(CAROL, "SIP/2.0 180");
    sim.send(CAROL, &carol_cancel("call2"));
    // The CANCEL is answered at once (§16.10); the INVITE's final waits for bob's.
    let to_carol = sim.take(CAROL);
    assert_eq!(to_carol.len(), 1, "{to_carol:#?}");
    assert!(to_carol[0].starts_with("SIP/2.0 200") && to_carol[0].contains("CSeq: 1 CANCEL"));
    let c = sim.one(BOB_NAT, "CANCEL ");
    let cr = req(&c);
    let ir = req(&inv);
    assert_eq!(
        hdr(&cr.headers, "Via"),
        hdr(&ir.headers, "Via"),
        "same branch as the INVITE"
    );
    assert_eq!(cr.uri, ir.uri);
    assert!(ended(&sim.take_events()).is_empty(), "not over yet");
    assert!(sim.core.relay().deleted.is_empty());

    // Bob answers the CANCEL (absorbed) and ends the INVITE with 487, which we ACK hop by hop
    // and relay to carol with bob's To tag and headers.
    sim.send(BOB_NAT, &answer(&c, 200, "OK", "bt", "", None));
    assert!(sim.take(CAROL).is_empty());
    let terminated = answer(&inv, 487, "Request Terminated", "bt", "", None).replace(
        "Content-Length: 0",
        "Reason: SIP;cause=487\r\nContent-Length: 0",
    );
    sim.send(BOB_NAT, &terminated);
    let ack = sim.one(BOB_NAT, "ACK ");
    assert_eq!(hdr(&req(&ack).headers, "Via"), hdr(&ir.headers, "Via"));
    assert!(hdr(&req(&ack).headers, "To").contains("tag=bt"));
    let relayed = sim.one(CAROL, "SIP/2.0 487 Request Terminated");
    let r = resp(&relayed);
    assert!(hdr(&r.headers, "To").ends_with(";tag=bt"), "{relayed}");
    assert_eq!(hdr(&r.headers, "Reason"), "SIP;cause=487");
    assert_eq!(hdrs(&r.headers, "Via").len(), 1);
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call2".to_owned(), EndCause::Cancel)]
    );
    assert_eq!(sim.core.relay().deleted, vec!["call2".to_owned()]);
    assert_eq!(sim.core.active_calls(), 0);

    // Carol's ACK for the 487 stops at our server transaction; bob's retransmitted 487 is
    // re-ACKed and not relayed again.
    sim.send(CAROL, &carol_ack_for("call2", &relayed));
    assert!(sim.wire.is_empty(), "{:?}", sim.wire);
    sim.send(BOB_NAT, &terminated);
    sim.one(BOB_NAT, "ACK ");
    assert!(sim.take(CAROL).is_empty());
    // Timers run out quietly: no second final, no second event.
    sim.advance(Duration::from_secs(70));
    assert!(sim.wire.is_empty(), "{:?}", sim.wire);
    assert!(ended(&sim.take_events()).is_empty());
    assert_eq!(sim.core.transactions(), 0);
}

/// The CANCELs sent to `to` (retransmissions, the same bytes, counted once).
fn cancels_to(sim: &mut Sim, to: &str) -> Vec<String> {
    let mut cancels: Vec<String> = sim
        .take(to)
        .into_iter()
        .filter(|m| m.starts_with("CANCEL "))
        .collect();
    cancels.dedup();
    cancels
}

#[test]
fn timer_c_cancels_a_branch_that_only_rings_and_the_caller_gets_408() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "tc1", Some(&sdp("192.0.2.200")));
    let ringing = answer(&inv, 180, "Ringing", "bt", "sip:bob@10.0.0.20:5060", None);
    sim.send(BOB_NAT, &ringing);
    sim.one(CAROL, "SIP/2.0 180");
    // A 100 does not restart timer C (§16.7 step 2), so it still fires 180 s after the 180.
    sim.advance(Duration::from_secs(100));
    sim.send(BOB_NAT, &answer(&inv, 100, "Trying", "", "", None));
    sim.advance(Duration::from_secs(79));
    assert!(
        cancels_to(&mut sim, BOB_NAT).is_empty(),
        "not before timer C"
    );
    assert!(sim.take(CAROL).is_empty());
    sim.advance(Duration::from_secs(2));
    let cancels = cancels_to(&mut sim, BOB_NAT);
    assert_eq!(cancels.len(), 1, "timer C CANCELs the ringing branch");
    let c = &cancels[0];
    assert_eq!(
        hdr(&req(c).headers, "Via"),
        hdr(&req(&inv).headers, "Via"),
        "the CANCEL matches the INVITE's branch"
    );
    assert!(
        sim.take(CAROL).is_empty(),
        "the context waits for bob's final"
    );
    assert!(ended(&sim.take_events()).is_empty());

    // Bob ends the INVITE with 487; carol never cancelled, so she is told 408 (§16.8), with
    // bob's To tag.
    sim.send(BOB_NAT, &answer(c, 200, "OK", "bt", "", None));
    sim.send(
        BOB_NAT,
        &answer(&inv, 487, "Request Terminated", "bt", "", None),
    );
    sim.one(BOB_NAT, "ACK ");
    let timeout = one_final(&mut sim, CAROL);
    assert!(
        timeout.starts_with("SIP/2.0 408 Request Timeout"),
        "{timeout}"
    );
    assert!(hdr(&resp(&timeout).headers, "To").ends_with(";tag=bt"));
    assert_eq!(
        ended(&sim.take_events()),
        vec![("tc1".to_owned(), EndCause::Failed(408))]
    );
    assert_eq!(sim.core.relay().deleted, vec!["tc1".to_owned()]);
    sim.send(CAROL, &carol_ack_for("tc1", &timeout));
    sim.advance(Duration::from_secs(70));
    assert!(sim.wire.is_empty(), "{:?}", sim.wire);
    assert_eq!(sim.core.transactions(), 0);
    assert_eq!(sim.core.poll_timeout(), None, "no timer C left armed");
}

#[test]
fn timer_c_on_a_branch_that_never_answers_its_cancel_gives_408_after_64_t1() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "tc2", None);
    sim.send(
        BOB_NAT,
        &answer(
            &inv,
            183,
            "Session Progress",
            "bt",
            "sip:bob@10.0.0.20:5060",
            None,
        ),
    );
    sim.one(CAROL, "SIP/2.0 183");
    sim.advance(Duration::from_secs(181));
    assert_eq!(cancels_to(&mut sim, BOB_NAT).len(), 1);
    // Bob stays silent: 64·T1 after the CANCEL the branch is given up, and the context, with
    // no final at all, answers 408 itself (§16.7 step 6).
    sim.advance(Duration::from_secs(33));
    let timeout = one_final(&mut sim, CAROL);
    assert!(timeout.starts_with("SIP/2.0 408"), "{timeout}");
    assert_eq!(
        ended(&sim.take_events()),
        vec![("tc2".to_owned(), EndCause::Failed(408))]
    );
}

#[test]
fn a_provisional_every_minute_keeps_the_branch_past_timer_c() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "tc3", Some(&sdp("192.0.2.200")));
    let ringing = answer(&inv, 180, "Ringing", "bt", "sip:bob@10.0.0.20:5060", None);
    for _ in 0..5 {
        sim.send(BOB_NAT, &ringing);
        sim.one(CAROL, "SIP/2.0 180");
        sim.advance(Duration::from_secs(60));
        assert!(cancels_to(&mut sim, BOB_NAT).is_empty());
    }
    // Five minutes on, bob answers and the call goes up.
    sim.send(
        BOB_NAT,
        &answer(
            &inv,
            200,
            "OK",
            "bt",
            "sip:bob@10.0.0.20:5060",
            Some(&sdp("10.0.0.20")),
        ),
    );
    sim.one(CAROL, "SIP/2.0 200");
    assert!(sim
        .take_events()
        .iter()
        .any(|e| matches!(e, ProxyEvent::CallAnswered { call_id, .. } if call_id == "tc3")));
    sim.advance(Duration::from_secs(400));
    assert!(
        cancels_to(&mut sim, BOB_NAT).is_empty(),
        "none after the answer"
    );
    assert_eq!(sim.core.active_calls(), 1);
}

#[test]
fn timer_c_is_configurable() {
    let mut config = config();
    config.timer_c = Duration::from_secs(240);
    let mut sim = Sim::new();
    sim.core = ProxyCore::new(config, FakeRelay::default(), b"0123456789abcdef-test-seed").unwrap();
    let inv = carol_calls_bob(&mut sim, "tc4", None);
    sim.send(
        BOB_NAT,
        &answer(&inv, 180, "Ringing", "bt", "sip:bob@10.0.0.20:5060", None),
    );
    sim.advance(Duration::from_secs(239));
    assert!(cancels_to(&mut sim, BOB_NAT).is_empty());
    sim.advance(Duration::from_secs(2));
    assert_eq!(cancels_to(&mut sim, BOB_NAT).len(), 1);
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "call23", Some(&sdp("192.0.2.200")));
    sim.send(CAROL, &carol_cancel("call23"));
    sim.one(CAROL, "SIP/2.0 200");
    // §9.1: no CANCEL before the branch has a provisional.
    assert!(sim.take(BOB_NAT).is_empty());
    sim.send(BOB_NAT, &answer(&inv, 100, "Trying", "", "", None));
    let c = sim.one(BOB_NAT, "CANCEL ");
    assert_eq!(hdr(&req(&c).headers, "Via"), hdr(&req(&inv).headers, "Via"));
    sim.send(BOB_NAT, &answer(&c, 200, "OK", "bt", "", None));
    sim.send(
        BOB_NAT,
        &answer(&inv, 487, "Request Terminated", "bt", "", None),
    );
    sim.one(BOB_NAT, "ACK ");
    let relayed = sim.one(CAROL, "SIP/2.0 487");
    assert!(hdr(&resp(&relayed).headers, "To").ends_with(";tag=bt"));
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call23".to_owned(), EndCause::Cancel)]
    );
    sim.send(CAROL, &carol_ack_for("call23", &relayed));

    // A callee that never says anything: timer B ends the branch, and carol gets our 487
    // (not a 408 for a request she withdrew herself).
    sim.send(
        CAROL,
        &invite(
            "carol@other.net",
            CAROL,
            "sip:bob@example.com",
            "call24",
            "",
            None,
        ),
    );
    sim.one(BOB_NAT, "INVITE ");
    sim.take(CAROL);
    sim.send(CAROL, &carol_cancel("call24"));
    sim.one(CAROL, "SIP/2.0 200");
    sim.advance(Duration::from_secs(31));
    assert!(sim.take(CAROL).is_empty());
    assert!(!sim.take(BOB_NAT).iter().any(|m| m.starts_with("CANCEL")));
    sim.advance(Duration::from_secs(2));
    let ours = one_final(&mut sim, CAROL);
    assert!(ours.starts_with("SIP/2.0 487 Request Terminated"));
    assert!(hdr(&resp(&ours).headers, "To").contains(";tag="));
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call24".to_owned(), EndCause::Cancel)]
    );
}

#[test]
fn forked_call_cancelled_with_a_silent_branch_gets_one_final() {
    let mut sim = Sim::new();
    register_bob_twice(&mut sim);
    sim.send(
        CAROL,
        &invite(
            "carol@other.net",
            CAROL,
            "sip:bob@example.com",
            "call25",
            "",
            Some(&sdp("192.0.2.200")),
        ),
    );
    let inv1 = sim.one(BOB_NAT, "INVITE sip:bob@10.0.0.20:5060 ");
    let inv2 = sim.one(BOB2_NAT, "INVITE sip:bob@10.0.0.21:5060 ");
    sim.send(
        BOB_NAT,
        &answer(&inv1, 180, "Ringing", "b1", "sip:bob@10.0.0.20:5060", None),
    );
    sim.send(
        BOB2_NAT,
        &answer(&inv2, 180, "Ringing", "b2", "sip:bob@10.0.0.21:5060", None),
    );
    sim.take(CAROL);
    sim.take_events();
    sim.send(CAROL, &carol_cancel("call25"));
    sim.one(CAROL, "SIP/2.0 200");
    let c1 = sim.one(BOB_NAT, "CANCEL ");
    sim.one(BOB2_NAT, "CANCEL ");
    // The first device ends its branch; the second never answers anything again.
    sim.send(BOB_NAT, &answer(&c1, 200, "OK", "b1", "", None));
    sim.send(
        BOB_NAT,
        &answer(&inv1, 487, "Request Terminated", "b1", "", None),
    );
    sim.one(BOB_NAT, "ACK ");
    assert!(sim.take(CAROL).is_empty(), "one branch still pending");
    assert!(ended(&sim.take_events()).is_empty());
    // 64·T1 after the CANCEL the silent branch is given up; carol gets the first device's
    // 487, exactly once.
    sim.advance(Duration::from_secs(31));
    assert!(sim.take(CAROL).is_empty());
    sim.advance(Duration::from_secs(2));
    let relayed = one_final(&mut sim, CAROL);
    assert!(relayed.starts_with("SIP/2.0 487"));
    assert!(hdr(&resp(&relayed).headers, "To").ends_with(";tag=b1"));
    sim.send(CAROL, &carol_ack_for("call25", &relayed));
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call25".to_owned(), EndCause::Cancel)]
    );
    assert_eq!(sim.core.relay().deleted, vec!["call25".to_owned()]);
    // The silent device wakes up late: its 487 finds no transaction and goes nowhere.
    sim.send(
        BOB2_NAT,
        &answer(&inv2, 487, "Request Terminated", "b2", "", None),
    );
    assert!(sim.take(CAROL).is_empty());
    sim.advance(Duration::from_secs(70));
    assert!(!sim.take(CAROL).iter().any(|m| m.starts_with("SIP/2.0 ")));
    assert!(ended(&sim.take_events()).is_empty());
}

#[test]
fn a_200_racing_the_cancel_answers_the_call() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "call26", Some(&sdp("192.0.2.200")));
    sim.send(
        BOB_NAT,
        &answer(&inv, 180, "Ringing", "bt", "sip:bob@10.0.0.20:5060", None),
    );
    sim.one(CAROL, "SIP/2.0 180");
    sim.send(CAROL, &carol_cancel("call26"));
    sim.one(CAROL, "SIP/2.0 200");
    let c = sim.one(BOB_NAT, "CANCEL ");
    // Bob had answered before the CANCEL reached him: 200 for the INVITE, then 200 for the
    // CANCEL (§9.2: the CANCEL has no effect on a request already answered).
    sim.send(
        BOB_NAT,
        &answer(
            &inv,
            200,
            "OK",
            "bt",
            "sip:bob@10.0.0.20:5060",
            Some(&sdp("10.0.0.20")),
        ),
    );
    sim.send(BOB_NAT, &answer(&c, 200, "OK", "bt", "", None));
    let ok = sim.one(CAROL, "SIP/2.0 200 OK");
    assert!(ok.contains("CSeq: 1 INVITE"));
    assert!(body(&ok).contains("m=audio 30002"), "{ok}");
    assert!(sim.take(CAROL).is_empty(), "no 487 after the 200");
    let events = sim.take_events();
    assert!(events
        .iter()
        .any(|e| matches!(e, ProxyEvent::CallAnswered { call_id, .. } if call_id == "call26")));
    assert!(ended(&events).is_empty());
    assert!(sim.core.relay().deleted.is_empty(), "media stays up");
    assert_eq!(sim.core.relay().answers.len(), 1);
    assert_eq!(sim.core.active_calls(), 1);
    // Carol ACKs and hangs up: an answered call ended by BYE, not a cancelled one.
    sim.send(
        CAROL,
        &caller_in_dialog("ACK", &ok, CAROL, 1, "z9hG4bK-ack26", None),
    );
    sim.one(BOB_NAT, "ACK sip:bob@10.0.0.20:5060");
    sim.send(
        CAROL,
        &caller_in_dialog("BYE", &ok, CAROL, 2, "z9hG4bK-bye26", None),
    );
    let bye = sim.one(BOB_NAT, "BYE ");
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call26".to_owned(), EndCause::ByeCaller)]
    );
    sim.send(BOB_NAT, &answer(&bye, 200, "OK", "", "", None));
    sim.one(CAROL, "SIP/2.0 200 OK");
    sim.advance(Duration::from_secs(70));
    assert!(!sim.take(CAROL).iter().any(|m| m.starts_with("SIP/2.0 4")));
    assert!(ended(&sim.take_events()).is_empty());
}

#[test]
fn busy_callee_486_forwarded_and_failed_event() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "call3", Some(&sdp("192.0.2.200")));
    sim.send(BOB_NAT, &answer(&inv, 486, "Busy Here", "bt", "", None));
    sim.one(BOB_NAT, "ACK ");
    let busy = sim.one(CAROL, "SIP/2.0 486 Busy Here");
    assert_eq!(hdrs(&resp(&busy).headers, "Via").len(), 1);
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call3".to_owned(), EndCause::Failed(486))]
    );
    assert_eq!(sim.core.relay().deleted, vec!["call3".to_owned()]);
    // Carol's ACK for the 486 is absorbed by our server transaction.
    let ack = invite(
        "carol@other.net",
        CAROL,
        "sip:bob@example.com",
        "call3",
        "",
        None,
    )
    .replacen("INVITE sip:", "ACK sip:", 1)
    .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
    .replace(
        "To: <sip:bob@example.com>",
        &format!("To: {}", hdr(&resp(&busy).headers, "To")),
    );
    sim.send(CAROL, &ack);
    assert!(sim.wire.is_empty(), "{:?}", sim.wire);
}

#[test]
fn register_with_digest_then_invite_reaches_nat_source() {
    let mut sim = Sim::new();
    let ok = register(&mut sim, "bob", "bobpw", BOB_NAT, "10.0.0.20:5060");
    assert!(
        ok.contains("Contact: <sip:bob@10.0.0.20:5060>;expires=3600"),
        "{ok}"
    );
    assert!(sim.take_events().iter().any(|e| matches!(e,
        ProxyEvent::Registered { aor, source, contacts: 1 } if aor == "sip:bob@example.com" && *source == addr(BOB_NAT))));
    // A wrong password is challenged again.
    let contact = "sip:bob@10.0.0.20:5060";
    sim.send(
        BOB_NAT,
        &register_text("bob", "10.0.0.20:5060", contact, 3, None),
    );
    let ch = sim.one(BOB_NAT, "SIP/2.0 401");
    let bad = credentials(
        &ch,
        "WWW-Authenticate",
        "bob",
        "wrong",
        "REGISTER",
        "sip:example.com",
    );
    sim.send(
        BOB_NAT,
        &register_text("bob", "10.0.0.20:5060", contact, 4, Some(&bad)),
    );
    sim.one(BOB_NAT, "SIP/2.0 401");
    // Alice may not register bob's AoR with her own credentials.
    let alice_as_bob = register_text("bob", "10.0.0.10:5060", "sip:x@10.0.0.10", 1, None);
    sim.send(ALICE_NAT, &alice_as_bob);
    let ch = sim.one(ALICE_NAT, "SIP/2.0 401");
    let creds = credentials(
        &ch,
        "WWW-Authenticate",
        "alice",
        "alicepw",
        "REGISTER",
        "sip:example.com",
    );
    sim.send(
        ALICE_NAT,
        &register_text("bob", "10.0.0.10:5060", "sip:x@10.0.0.10", 2, Some(&creds)),
    );
    sim.one(ALICE_NAT, "SIP/2.0 403");
    // An alias of bob reaches bob's binding at its NAT address.
    sim.send(
        CAROL,
        &invite(
            "carol@other.net",
            CAROL,
            "sip:15550002@example.com",
            "call4",
            "",
            None,
        ),
    );
    let inv = sim.one(BOB_NAT, "INVITE sip:bob@10.0.0.20:5060 ");
    assert!(inv.contains("To: <sip:15550002@example.com>"));
    // Alice is not registered: 480.
    sim.send(
        CAROL,
        &invite(
            "carol@other.net",
            CAROL,
            "sip:alice@example.com",
            "call5",
            "",
            None,
        ),
    );
    sim.one(CAROL, "SIP/2.0 480");
    // Unknown user: 404; a foreign caller to a foreign domain: 403.
    sim.send(
        CAROL,
        &invite(
            "carol@other.net",
            CAROL,
            "sip:nobody@example.com",
            "call6",
            "",
            None,
        ),
    );
    sim.one(CAROL, "SIP/2.0 404");
    sim.send(
        CAROL,
        &invite(
            "carol@other.net",
            CAROL,
            "sip:dave@elsewhere.org",
            "call7",
            "",
            None,
        ),
    );
    sim.one(CAROL, "SIP/2.0 403");
}

#[test]
fn local_account_invite_needs_407_then_succeeds() {
    let mut sim = Sim::new();
    register(&mut sim, "bob", "bobpw", BOB_NAT, "10.0.0.20:5060");
    let inv = invite(
        "alice@example.com",
        "10.0.0.10:5060",
        "sip:bob@example.com",
        "call8",
        "",
        Some(&sdp("10.0.0.10")),
    );
    sim.send(ALICE_NAT, &inv);
    let msgs = sim.take(ALICE_NAT);
    let challenge = msgs
        .iter()
        .find(|m| m.starts_with("SIP/2.0 407"))
        .expect("407")
        .clone();
    assert!(challenge.contains("Proxy-Authenticate: Digest realm=\"example.com\""));
    assert!(sim.take(BOB_NAT).is_empty());
    assert!(
        sim.core.relay().offers.is_empty(),
        "no media before authentication"
    );
    // The caller ACKs the 407 (absorbed), then retries with credentials.
    let creds = credentials(
        &challenge,
        "Proxy-Authenticate",
        "alice",
        "alicepw",
        "INVITE",
        "sip:bob@example.com",
    );
    let retry = inv
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("branch=z9hG4bK-call8-1", "branch=z9hG4bK-call8-2")
        .replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nProxy-Authorization: {creds}\r\n"),
        );
    sim.send(ALICE_NAT, &retry);
    let fwd = sim.one(BOB_NAT, "INVITE ");
    assert!(
        !fwd.contains("Proxy-Authorization"),
        "our credentials are not forwarded"
    );
    // The 200's Via leads back to alice's NAT address (rport/received).
    sim.send(
        BOB_NAT,
        &answer(
            &fwd,
            200,
            "OK",
            "bt",
            "sip:bob@10.0.0.20:5060",
            Some(&sdp("10.0.0.20")),
        ),
    );
    let ok = sim.one(ALICE_NAT, "SIP/2.0 200");
    assert!(ok.contains("received=198.51.100.10"), "{ok}");
    assert!(ok.contains("rport=40000"));
    // A wrong password from a local account is challenged again, never forwarded.
    let bad = credentials(
        &challenge,
        "Proxy-Authenticate",
        "alice",
        "nope",
        "INVITE",
        "sip:bob@example.com",
    );
    let wrong = invite(
        "alice@example.com",
        "10.0.0.10:5060",
        "sip:bob@example.com",
        "call9",
        &format!("Proxy-Authorization: {bad}\r\n"),
        None,
    );
    sim.send(ALICE_NAT, &wrong);
    sim.one(ALICE_NAT, "SIP/2.0 407");
    assert!(sim.take(BOB_NAT).is_empty());
}

/// Adds `header` lines right after Max-Forwards.
fn with_headers(msg: &str, headers: &[String]) -> String {
    let lines: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    msg.replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{lines}"),
        1,
    )
}

#[test]
fn credentials_for_our_realm_never_reach_the_callee_and_others_do() {
    let mut sim = Sim::new();
    register(&mut sim, "bob", "bobpw", BOB_NAT, "10.0.0.20:5060");
    let inv = invite(
        "alice@example.com",
        "10.0.0.10:5060",
        "sip:bob@example.com",
        "creds1",
        "",
        Some(&sdp("10.0.0.10")),
    );
    sim.send(ALICE_NAT, &inv);
    let challenge = sim.one(ALICE_NAT, "SIP/2.0 407");
    let ours = format!(
        "Proxy-Authorization: {}",
        credentials(
            &challenge,
            "Proxy-Authenticate",
            "alice",
            "alicepw",
            "INVITE",
            "sip:bob@example.com",
        )
    );
    // For a proxy further on (§22.3: not ours to remove), and our realm under WWW auth.
    let theirs = "Proxy-Authorization: Digest username=\"a1\", realm=\"carrier.example\", \
                  nonce=\"n1\", uri=\"sip:bob@example.com\", response=\"00\""
        .to_owned();
    let ours_www = "Authorization: Digest username=\"alice\", realm=\"EXAMPLE.com\", \
                    nonce=\"n2\", uri=\"sip:bob@example.com\", response=\"11\""
        .to_owned();
    let retry = with_headers(
        &inv.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
            .replace("branch=z9hG4bK-creds1-1", "branch=z9hG4bK-creds1-2"),
        &[
            ours.clone(),
            theirs.clone(),
            ours_www.clone(),
            "User-Agent: alicephone/1.0".to_owned(),
        ],
    );
    sim.take_events();
    sim.send(ALICE_NAT, &retry);
    let fwd = sim.one(BOB_NAT, "INVITE ");
    // Billed to the account that authenticated.
    assert_eq!(
        started(&sim.take_events()),
        vec![(
            Some("alice@example.com".to_owned()),
            Some("alicephone/1.0".to_owned())
        )]
    );
    let credentials_in = |msg: &str| -> Vec<String> {
        let r = req(msg);
        let mut v = hdrs(&r.headers, "Proxy-Authorization");
        v.extend(hdrs(&r.headers, "Authorization"));
        v
    };
    let foreign_only = vec![theirs["Proxy-Authorization: ".len()..].to_owned()];
    assert_eq!(credentials_in(&fwd), foreign_only, "{fwd}");

    sim.send(
        BOB_NAT,
        &answer(
            &fwd,
            200,
            "OK",
            "bt",
            "sip:bob@10.0.0.20:5060",
            Some(&sdp("10.0.0.20")),
        )
        .replace("Content-Type:", "Server: bobphone/2.0\r\nContent-Type:"),
    );
    let ok = sim.one(ALICE_NAT, "SIP/2.0 200");
    assert_eq!(
        answered_agents(&sim.take_events()),
        vec![Some("bobphone/2.0".to_owned())]
    );
    // baresip resends its cached credentials on the ACK and the BYE.
    let ack = caller_in_dialog("ACK", &ok, "10.0.0.10:5060", 2, "z9hG4bK-cack", None);
    sim.send(
        ALICE_NAT,
        &with_headers(&ack, &[ours.clone(), theirs.clone()]),
    );
    let ack = sim.one(BOB_NAT, "ACK ");
    assert_eq!(credentials_in(&ack), foreign_only, "{ack}");
    let bye = caller_in_dialog("BYE", &ok, "10.0.0.10:5060", 3, "z9hG4bK-cbye", None);
    sim.send(ALICE_NAT, &with_headers(&bye, &[ours, ours_www]));
    let bye = sim.one(BOB_NAT, "BYE ");
    assert!(credentials_in(&bye).is_empty(), "{bye}");
    assert_eq!(
        ended(&sim.take_events()),
        vec![("creds1".to_owned(), EndCause::ByeCaller)]
    );
}

#[test]
fn local_account_to_pstn_gets_p_asserted_identity() {
    let mut sim = Sim::new();
    let inv = invite(
        "alice@example.com",
        "10.0.0.10:5060",
        "sip:+15551234567@example.com",
        "call10",
        "",
        None,
    );
    sim.send(ALICE_NAT, &inv);
    let challenge = sim.one(ALICE_NAT, "SIP/2.0 407");
    let creds = credentials(
        &challenge,
        "Proxy-Authenticate",
        "alice",
        "alicepw",
        "INVITE",
        "sip:+15551234567@example.com",
    );
    let retry = inv
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("branch=z9hG4bK-call10-1", "branch=z9hG4bK-call10-2")
        .replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nProxy-Authorization: {creds}\r\n"),
        );
    sim.send(ALICE_NAT, &retry);
    let fwd = sim.one(GW_A, "INVITE sip:+15551234567@203.0.113.50:5060 ");
    assert!(
        fwd.contains("P-Asserted-Identity: <sip:alice@example.com>"),
        "{fwd}"
    );
}

#[test]
fn trusted_peer_number_longest_prefix_with_failover_on_503() {
    let mut sim = Sim::new();
    let inv = invite(
        "peer@203.0.113.5",
        PEER,
        "sip:12125550100@192.0.2.1",
        "call11",
        "",
        Some(&sdp("203.0.113.5")),
    );
    sim.send(PEER, &inv);
    sim.one(PEER, "SIP/2.0 100");
    // A trusted peer is billed by its address, whatever caller ID it sends.
    assert_eq!(
        started(&sim.take_events()),
        vec![(Some("203.0.113.5".to_owned()), None)]
    );
    let first = sim.one(GW_B1, "INVITE sip:12125550100@203.0.113.51:5060 ");
    assert!(
        sim.take(GW_A).is_empty(),
        "the longer prefix 1212 wins over 1"
    );
    assert!(!first.contains("P-Asserted-Identity"));
    sim.send(
        GW_B1,
        &answer(&first, 503, "Service Unavailable", "g1", "", None),
    );
    sim.one(GW_B1, "ACK ");
    assert!(
        sim.take(PEER).is_empty(),
        "the 503 is not forwarded while a gateway is left"
    );
    let second = sim.one(GW_B2, "INVITE sip:12125550100@203.0.113.52:5060 ");
    assert_ne!(
        hdr(&req(&first).headers, "Via"),
        hdr(&req(&second).headers, "Via"),
        "new branch"
    );
    sim.send(
        GW_B2,
        &answer(
            &second,
            200,
            "OK",
            "g2",
            "sip:gw@203.0.113.52",
            Some(&sdp("203.0.113.52")),
        ),
    );
    sim.one(PEER, "SIP/2.0 200");
    let events = sim.take_events();
    assert!(events
        .iter()
        .any(|e| matches!(e, ProxyEvent::CallAnswered { .. })));
    assert!(ended(&events).is_empty());
}

#[test]
fn all_gateways_failing_gives_500() {
    let mut sim = Sim::new();
    let inv = invite(
        "peer@203.0.113.5",
        PEER,
        "sip:12125550100@192.0.2.1",
        "call12",
        "",
        None,
    );
    sim.send(PEER, &inv);
    let first = sim.one(GW_B1, "INVITE ");
    sim.send(
        GW_B1,
        &answer(&first, 503, "Service Unavailable", "g1", "", None),
    );
    // The last gateway is unavailable too: the 503 goes up as 500 (RFC 3261 §16.7 step 6).
    let second = sim.one(GW_B2, "INVITE ");
    sim.send(
        GW_B2,
        &answer(&second, 503, "Service Unavailable", "g2", "", None),
    );
    let msgs = sim.take(PEER);
    assert!(
        msgs.iter().any(|m| m.starts_with("SIP/2.0 500")),
        "{msgs:#?}"
    );
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call12".to_owned(), EndCause::Failed(500))]
    );
}

#[test]
fn gateway_timeout_fails_over_then_408() {
    let mut sim = Sim::new();
    let inv = invite(
        "peer@203.0.113.5",
        PEER,
        "sip:12125550100@192.0.2.1",
        "call20",
        "",
        None,
    );
    sim.send(PEER, &inv);
    sim.one(GW_B1, "INVITE ");
    // Neither gateway answers: timer B on each, failover in between, then 408.
    sim.advance(Duration::from_secs(33));
    assert!(sim.take(GW_B2).iter().any(|m| m.starts_with("INVITE ")));
    assert!(!sim.take(PEER).iter().any(|m| !m.starts_with("SIP/2.0 100")));
    sim.advance(Duration::from_secs(33));
    let msgs = sim.take(PEER);
    assert!(
        msgs.iter().any(|m| m.starts_with("SIP/2.0 408")),
        "{msgs:#?}"
    );
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call20".to_owned(), EndCause::Failed(408))]
    );
}

#[test]
fn trusted_peer_transit_and_loop_detection() {
    let mut sim = Sim::new();
    let inv = invite(
        "peer@203.0.113.5",
        PEER,
        "sip:x@198.51.100.77:5070",
        "call13",
        "",
        None,
    );
    sim.send(PEER, &inv);
    let fwd = sim.one("198.51.100.77:5070", "INVITE sip:x@198.51.100.77:5070 ");
    // The same request comes back to us: a loop.
    sim.send(PEER, &fwd);
    sim.one(PEER, "SIP/2.0 482");
}

#[test]
fn bad_sdp_gets_488_and_no_call() {
    let mut sim = Sim::new();
    register(&mut sim, "bob", "bobpw", BOB_NAT, "10.0.0.20:5060");
    sim.take_events();
    let inv = invite(
        "carol@other.net",
        CAROL,
        "sip:bob@example.com",
        "call14",
        "",
        Some("v=0\r\nBAD\r\n"),
    );
    sim.send(CAROL, &inv);
    sim.one(CAROL, "SIP/2.0 488 Not Acceptable Here");
    assert!(sim.take(BOB_NAT).is_empty());
    assert_eq!(sim.core.active_calls(), 0);
    assert!(!sim.take_events().iter().any(|e| matches!(
        e,
        ProxyEvent::CallStarted { .. } | ProxyEvent::CallEnded { .. }
    )));
}

#[test]
fn retransmitted_invite_is_absorbed() {
    let mut sim = Sim::new();
    register(&mut sim, "bob", "bobpw", BOB_NAT, "10.0.0.20:5060");
    let inv = invite(
        "carol@other.net",
        CAROL,
        "sip:bob@example.com",
        "call15",
        "",
        Some(&sdp("192.0.2.200")),
    );
    sim.send(CAROL, &inv);
    sim.send(CAROL, &inv);
    sim.send(CAROL, &inv);
    assert_eq!(
        sim.take(BOB_NAT)
            .iter()
            .filter(|m| m.starts_with("INVITE"))
            .count(),
        1
    );
    assert_eq!(sim.core.relay().offers.len(), 1);
    // Each retransmission got the 100 again.
    assert_eq!(
        sim.take(CAROL)
            .iter()
            .filter(|m| m.starts_with("SIP/2.0 100"))
            .count(),
        3
    );
}

#[test]
fn max_forwards_zero_gets_483() {
    let mut sim = Sim::new();
    let inv = invite(
        "carol@other.net",
        CAROL,
        "sip:bob@example.com",
        "call16",
        "",
        None,
    )
    .replace("Max-Forwards: 70", "Max-Forwards: 0");
    sim.send(CAROL, &inv);
    sim.one(CAROL, "SIP/2.0 483");
}

#[test]
fn garbage_is_dropped_and_the_proxy_keeps_serving() {
    let mut sim = Sim::new();
    sim.send(CAROL, "\u{1}\u{2}binary junk");
    sim.send(CAROL, "HELLO WORLD");
    sim.send(CAROL, "\r\n\r\n");
    assert!(sim.wire.is_empty());
    assert_eq!(sim.core.stats().garbage, 2);
    // Malformed but answerable: 400.
    let bad = "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bKx\r\nFrom: <sip:c@other.net>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: x\r\nCSeq: nope\r\nContent-Length: 0\r\n\r\n";
    sim.send(CAROL, bad);
    sim.one(CAROL, "SIP/2.0 400");
    // OPTIONS to us: 200.
    let options = "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bKopt\r\nMax-Forwards: 70\r\nFrom: <sip:c@other.net>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: opt\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    sim.send(CAROL, options);
    let ok = sim.one(CAROL, "SIP/2.0 200");
    assert!(ok.contains("Allow:"));
}

#[test]
fn forking_first_200_wins_and_other_branch_is_cancelled() {
    let mut sim = Sim::new();
    register_bob_twice(&mut sim);

    sim.send(
        CAROL,
        &invite(
            "carol@other.net",
            CAROL,
            "sip:bob@example.com",
            "call17",
            "",
            Some(&sdp("192.0.2.200")),
        ),
    );
    let inv1 = sim.one(BOB_NAT, "INVITE sip:bob@10.0.0.20:5060 ");
    let inv2 = sim.one(BOB2_NAT, "INVITE sip:bob@10.0.0.21:5060 ");
    assert_ne!(
        hdr(&req(&inv1).headers, "Via"),
        hdr(&req(&inv2).headers, "Via")
    );
    assert_eq!(
        sim.core.relay().offers.len(),
        1,
        "one offer for the call, not per branch"
    );
    sim.send(
        BOB_NAT,
        &answer(&inv1, 180, "Ringing", "b1", "sip:bob@10.0.0.20:5060", None),
    );
    sim.send(
        BOB2_NAT,
        &answer(&inv2, 180, "Ringing", "b2", "sip:bob@10.0.0.21:5060", None),
    );
    assert_eq!(sim.take(CAROL).len(), 3, "100 and both 180s");
    sim.send(
        BOB2_NAT,
        &answer(
            &inv2,
            200,
            "OK",
            "b2",
            "sip:bob@10.0.0.21:5060",
            Some(&sdp("10.0.0.21")),
        ),
    );
    let ok = sim.one(CAROL, "SIP/2.0 200");
    assert!(ok.contains("tag=b2"));
    let cancel = sim.one(BOB_NAT, "CANCEL sip:bob@10.0.0.20:5060 ");
    assert_eq!(
        hdr(&req(&cancel).headers, "Via"),
        hdr(&req(&inv1).headers, "Via")
    );
    assert!(sim.take(BOB2_NAT).is_empty());
    // The cancelled branch's 487 goes nowhere upstream.
    sim.send(BOB_NAT, &answer(&cancel, 200, "OK", "b1", "", None));
    sim.send(
        BOB_NAT,
        &answer(&inv1, 487, "Request Terminated", "b1", "", None),
    );
    assert!(sim.take(CAROL).is_empty());
    let events = sim.take_events();
    assert!(ended(&events).is_empty());
    assert!(events
        .iter()
        .any(|e| matches!(e, ProxyEvent::CallAnswered { .. })));
    // In-dialog requests now go to the device that answered.
    sim.send(
        CAROL,
        &caller_in_dialog("ACK", &ok, CAROL, 1, "z9hG4bK-ack17", None),
    );
    sim.one(BOB2_NAT, "ACK ");
}

#[test]
fn end_call_sends_bye_to_both_sides_with_reason() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "call18", Some(&sdp("192.0.2.200")));
    sim.send(
        BOB_NAT,
        &answer(
            &inv,
            200,
            "OK",
            "bt",
            "sip:bob@10.0.0.20:5060",
            Some(&sdp("10.0.0.20")),
        ),
    );
    let ok = sim.one(CAROL, "SIP/2.0 200");
    sim.send(
        CAROL,
        &caller_in_dialog("ACK", &ok, CAROL, 1, "z9hG4bK-ack18", None),
    );
    sim.one(BOB_NAT, "ACK ");
    sim.take_events();

    sim.core
        .end_call(sim.now, "call18", EndReason::MediaTimeout)
        .unwrap();
    sim.drain();
    let to_bob = sim.one(BOB_NAT, "BYE sip:bob@10.0.0.20:5060 ");
    let to_carol = sim.one(CAROL, "BYE sip:carol@other.net ");
    for bye in [&to_bob, &to_carol] {
        assert!(
            bye.contains("Reason: SIP;cause=408;text=\"media timeout\""),
            "{bye}"
        );
        assert!(bye.contains("Call-ID: call18"));
        assert!(
            hdrs(&req(bye).headers, "Route").is_empty(),
            "we were the only hop"
        );
    }
    // Toward bob as carol would send it: From carol's tag, To bob's tag, CSeq 2.
    let b = req(&to_bob);
    assert!(hdr(&b.headers, "From").contains("tag=ft-call18"));
    assert!(hdr(&b.headers, "To").contains("tag=bt"));
    assert_eq!(hdr(&b.headers, "CSeq"), "2 BYE");
    // Toward carol as bob would send it.
    let c = req(&to_carol);
    assert!(hdr(&c.headers, "From").contains("tag=bt"));
    assert!(hdr(&c.headers, "To").contains("tag=ft-call18"));
    assert_eq!(
        ended(&sim.take_events()),
        vec![(
            "call18".to_owned(),
            EndCause::Ended(EndReason::MediaTimeout)
        )]
    );
    assert_eq!(
        EndCause::Ended(EndReason::MediaTimeout).to_string(),
        "media-timeout"
    );
    assert_eq!(sim.core.relay().deleted, vec!["call18".to_owned()]);
    // Both answer; nothing is forwarded.
    sim.send(BOB_NAT, &answer(&to_bob, 200, "OK", "", "", None));
    sim.send(CAROL, &answer(&to_carol, 200, "OK", "", "", None));
    assert!(sim.wire.is_empty(), "{:?}", sim.wire);
    assert!(sim
        .core
        .end_call(sim.now, "call18", EndReason::MediaTimeout)
        .is_err());
}

#[test]
fn reinvite_hold_goes_through_the_relay() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "call19", Some(&sdp("192.0.2.200")));
    sim.send(
        BOB_NAT,
        &answer(
            &inv,
            200,
            "OK",
            "bt",
            "sip:bob@10.0.0.20:5060",
            Some(&sdp("10.0.0.20")),
        ),
    );
    let ok = sim.one(CAROL, "SIP/2.0 200");
    sim.send(
        CAROL,
        &caller_in_dialog("ACK", &ok, CAROL, 1, "z9hG4bK-ack19", None),
    );
    sim.one(BOB_NAT, "ACK ");
    sim.take_events();
    let hold = sdp("192.0.2.200") + "a=sendonly\r\n";
    sim.send(
        CAROL,
        &caller_in_dialog("INVITE", &ok, CAROL, 2, "z9hG4bK-reinv19", Some(&hold)),
    );
    sim.one(CAROL, "SIP/2.0 100");
    let reinv = sim.one(BOB_NAT, "INVITE sip:bob@10.0.0.20:5060 ");
    assert!(body(&reinv).contains("m=audio 30000"));
    assert!(hdrs(&req(&reinv).headers, "Record-Route").is_empty());
    assert_eq!(sim.core.relay().offers.len(), 2);
    assert_eq!(sim.core.relay().offers[1].2, Leg::Callee);
    let held = sdp("10.0.0.20") + "a=recvonly\r\n";
    sim.send(
        BOB_NAT,
        &answer(
            &reinv,
            200,
            "OK",
            "bt",
            "sip:bob@10.0.0.20:5060",
            Some(&held),
        ),
    );
    let ok2 = sim.one(CAROL, "SIP/2.0 200");
    assert!(body(&ok2).contains("m=audio 30002"));
    assert_eq!(sim.core.relay().answers.len(), 2);
    // No call event for a re-INVITE.
    assert!(!sim.take_events().iter().any(|e| matches!(
        e,
        ProxyEvent::CallStarted { .. } | ProxyEvent::CallEnded { .. }
    )));
    // The caller hangs up.
    sim.send(
        CAROL,
        &caller_in_dialog("BYE", &ok, CAROL, 3, "z9hG4bK-bye19", None),
    );
    sim.one(BOB_NAT, "BYE ");
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call19".to_owned(), EndCause::ByeCaller)]
    );
}

#[test]
fn early_media_183_goes_through_the_relay() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "call21", Some(&sdp("192.0.2.200")));
    sim.send(
        BOB_NAT,
        &answer(
            &inv,
            183,
            "Session Progress",
            "bt",
            "sip:bob@10.0.0.20:5060",
            Some(&sdp("10.0.0.20")),
        ),
    );
    let progress = sim.one(CAROL, "SIP/2.0 183");
    assert!(body(&progress).contains("m=audio 30002"));
    let relay = sim.core.relay();
    assert_eq!(relay.answers.len(), 1);
    assert_eq!(relay.answers[0].2, Leg::Caller);
    assert_eq!(relay.answers[0].0.to_tag.as_deref(), Some("bt"));
}

#[test]
fn cancel_without_invite_gets_481() {
    let mut sim = Sim::new();
    let cancel = invite(
        "carol@other.net",
        CAROL,
        "sip:bob@example.com",
        "call22",
        "",
        None,
    )
    .replacen("INVITE sip:", "CANCEL sip:", 1)
    .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    sim.send(CAROL, &cancel);
    sim.one(CAROL, "SIP/2.0 481");
}

// ---------------------------------------------------------------------------------------------
// Forwarding is byte-exact apart from the proxy's own edits
// ---------------------------------------------------------------------------------------------

/// A multipart body with a binary part: bytes that are not UTF-8 (and a NUL and CR LF pairs
/// that are not line ends of the message).
fn binary_multipart() -> Vec<u8> {
    let mut body = b"--b0undary\r\nContent-Type: text/plain\r\n\r\nh\xc3\xa9llo\r\n--b0undary\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    body.extend((0u8..=255).rev());
    body.extend_from_slice(b"\x00\xff\xfe\r\n\r\n\x80");
    body.extend_from_slice(b"\r\n--b0undary--\r\n");
    body
}

fn with_body(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = head
        .replace("{LEN}", &body.len().to_string())
        .replace('\n', "\r\n")
        .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The first line of `bytes` that starts with `prefix`, as text.
fn line_of(bytes: &[u8], prefix: &str) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.split("\r\n")
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {text}"))
        .to_owned()
}

#[test]
fn forwarded_invite_keeps_unknown_headers_and_a_binary_multipart_body() {
    let mut sim = Sim::new();
    register(&mut sim, "bob", "bobpw", BOB_NAT, "10.0.0.20:5060");
    sim.take_events();
    let body = binary_multipart();
    let head = "INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bK-lossless-1
Max-Forwards: 70
X-oDD-CaSe: Some  Value ;with=params;\"quoted, comma\"
From: \"Carol\" <sip:carol@other.net>;tag=ft-lossless
To: <sip:bob@example.com>
Call-ID: lossless@192.0.2.200
CSeq: 7 INVITE
Contact: <sip:carol@192.0.2.200:5060>
p-lowercase-extension: 1
Content-Type: multipart/mixed;boundary=b0undary
MIME-Version: 1.0
Content-Length: {LEN}

";
    let sent = with_body(head, &body);
    sim.send_raw(CAROL, &sent);
    let forwarded = sim.last_raw(BOB_NAT);
    // Our edits: the new target, our Via on top, our Record-Route after the Vias, Max-Forwards
    // one less. Everything else, body included, byte for byte.
    let our_via = line_of(&forwarded, "Via: ");
    assert!(
        our_via.starts_with("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK"),
        "{our_via}"
    );
    let expected_head = head
        .replace(
            "INVITE sip:bob@example.com ",
            "INVITE sip:bob@10.0.0.20:5060 ",
        )
        .replace(
            "Via: SIP/2.0/UDP 192.0.2.200",
            &format!("{our_via}\nVia: SIP/2.0/UDP 192.0.2.200"),
        )
        .replace(
            "Max-Forwards: 70\n",
            "Record-Route: <sip:192.0.2.1:5060;lr>\nMax-Forwards: 69\n",
        );
    let expected = with_body(&expected_head, &body);
    assert_eq!(
        String::from_utf8_lossy(&forwarded),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(forwarded, expected);
    // Not SDP: the relay was not asked.
    assert!(sim.core.relay().offers.is_empty());
}

#[test]
fn relayed_responses_keep_reason_phrases_unknown_headers_and_binary_bodies() {
    let mut sim = Sim::new();
    let inv = carol_calls_bob(&mut sim, "call27", None);
    let ir = req(&inv);
    let vias: String = hdrs(&ir.headers, "Via")
        .iter()
        .map(|v| format!("Via: {v}\n"))
        .collect();
    let body = binary_multipart();
    let tail = format!(
        "From: {}
To: <sip:bob@example.com>;tag=bt
Call-ID: call27
CSeq: 1 INVITE
X-Vendor-Thing: KeepMe  As Is
Contact: <sip:bob@10.0.0.20:5060>
Content-Type: multipart/mixed;boundary=b0undary
Content-Length: {{LEN}}

",
        hdr(&ir.headers, "From")
    );
    let ringing = format!("SIP/2.0 180 Ringing, Softly (please hold)\n{vias}{tail}");
    sim.send_raw(BOB_NAT, &with_body(&ringing, &body));
    // Our Via (the top one) removed; nothing else changed.
    let carol_via = format!("Via: {}\n", hdrs(&ir.headers, "Via")[1]);
    let expected = with_body(
        &format!("SIP/2.0 180 Ringing, Softly (please hold)\n{carol_via}{tail}"),
        &body,
    );
    assert_eq!(sim.last_raw(CAROL), expected);

    let busy = format!("SIP/2.0 486 Busy Here, Try Tomorrow\n{vias}{tail}");
    sim.send_raw(BOB_NAT, &with_body(&busy, &body));
    sim.one(BOB_NAT, "ACK ");
    let expected = with_body(
        &format!("SIP/2.0 486 Busy Here, Try Tomorrow\n{carol_via}{tail}"),
        &body,
    );
    assert_eq!(sim.last_raw(CAROL), expected);
    assert_eq!(
        ended(&sim.take_events()),
        vec![("call27".to_owned(), EndCause::Failed(486))]
    );
}

#[test]
fn an_extension_method_is_forwarded_not_refused() {
    let mut sim = Sim::new();
    let head = "XFOO sip:x@198.51.100.77:5070 SIP/2.0
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-xfoo-1
Max-Forwards: 10
From: <sip:peer@203.0.113.5>;tag=xf
To: <sip:x@198.51.100.77:5070>
Call-ID: xfoo-1
CSeq: 1 XFOO
X-Extension-Thing: yes
Content-Type: application/x-thing
Content-Length: {LEN}

";
    let body = b"\x01\x02\xff binary\r\n".to_vec();
    sim.send_raw(PEER, &with_body(head, &body));
    let forwarded = sim.last_raw("198.51.100.77:5070");
    let our_via = line_of(&forwarded, "Via: ");
    let expected = with_body(
        &head
            .replace(
                "Via: SIP/2.0/UDP 203.0.113.5",
                &format!("{our_via}\nVia: SIP/2.0/UDP 203.0.113.5"),
            )
            .replace("Max-Forwards: 10", "Max-Forwards: 9"),
        &body,
    );
    assert_eq!(forwarded, expected);
    assert!(!sim.take(PEER).iter().any(|m| m.starts_with("SIP/2.0 501")));

    // The answer comes back as sent, less our Via.
    let answer_head = format!(
        "SIP/2.0 299 Extension Done\n{our_via}\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-xfoo-1
From: <sip:peer@203.0.113.5>;tag=xf
To: <sip:x@198.51.100.77:5070>;tag=xt
Call-ID: xfoo-1
CSeq: 1 XFOO
Content-Length: {{LEN}}

"
    );
    sim.send_raw("198.51.100.77:5070", &with_body(&answer_head, &body));
    let expected = with_body(&answer_head.replace(&format!("{our_via}\n"), ""), &body);
    assert_eq!(sim.last_raw(PEER), expected);
}

#[test]
fn ipv6_via_and_request_uri_are_forwarded_as_written() {
    let mut sim = Sim::new();
    let head = "MESSAGE sip:x@[2001:db8::77]:5070;user=phone SIP/2.0
Via: SIP/2.0/UDP [2001:DB8::5]:5060;branch=z9hG4bK-v6-1
Max-Forwards: 70
From: <sip:peer@[2001:db8::5]>;tag=v6
To: <sip:x@[2001:db8::77]:5070;user=phone>
Call-ID: v6-1@[2001:db8::5]
CSeq: 3 MESSAGE
Content-Type: text/plain
Content-Length: {LEN}

";
    let body = "caf\u{e9}".as_bytes().to_vec();
    sim.send_raw(PEER, &with_body(head, &body));
    let forwarded = sim.last_raw("[2001:db8::77]:5070");
    let our_via = line_of(&forwarded, "Via: ");
    assert!(our_via.contains("branch=z9hG4bK"), "{our_via}");
    // The sender's Via gets `received` (its address is not the sent-by host, §18.2.1).
    let expected = with_body(
        &head
            .replace(
                "Via: SIP/2.0/UDP [2001:DB8::5]:5060;branch=z9hG4bK-v6-1",
                &format!(
                    "{our_via}\nVia: SIP/2.0/UDP [2001:DB8::5]:5060;branch=z9hG4bK-v6-1;received=203.0.113.5"
                ),
            )
            .replace("Max-Forwards: 70", "Max-Forwards: 69"),
        &body,
    );
    assert_eq!(
        String::from_utf8_lossy(&forwarded),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(forwarded, expected);

    let ok_head = format!(
        "SIP/2.0 202 Accepted For Later\n{our_via}\nVia: SIP/2.0/UDP [2001:DB8::5]:5060;branch=z9hG4bK-v6-1;received=203.0.113.5
From: <sip:peer@[2001:db8::5]>;tag=v6
To: <sip:x@[2001:db8::77]:5070;user=phone>;tag=v6t
Call-ID: v6-1@[2001:db8::5]
CSeq: 3 MESSAGE
Content-Length: 0

"
    );
    sim.send_raw("[2001:db8::77]:5070", &with_body(&ok_head, b""));
    let expected = with_body(&ok_head.replace(&format!("{our_via}\n"), ""), b"");
    assert_eq!(sim.last_raw(PEER), expected);
}
