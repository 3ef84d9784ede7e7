//! The session manager in virtual time (`now` is an argument; nothing sleeps), with a fake
//! forwarder that records what the manager asks of the relay and whose per-stream counters the
//! tests set.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_dataplane::{
    BackendKind, CounterSnapshot, DataplaneError, Forwarder, StreamCounters, StreamId, StreamRule,
};
use sluice_sip::sdp::Sdp;

use super::manager::{CallState, Ended, ENDED_KEPT};
use super::model::TerminationCause;
use super::ports::PortError;
use super::{RelayInterface, SessionConfig, SessionError, SessionManager, Signal, Symmetry};
use super::{Timeouts, Totals};

// ---------------------------------------------------------------------------------------------
// The fake forwarder (shared with the ng handler's tests).

/// One request the manager made of the forwarder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Install(StreamId),
    Update(StreamId),
    Remove(StreamId),
}

/// What the fake forwarder holds: the live rules, the log of requests, the counters.
#[derive(Default)]
pub(crate) struct FakeState {
    pub(crate) log: Vec<Op>,
    pub(crate) rules: BTreeMap<StreamId, StreamRule>,
    pub(crate) counters: HashMap<StreamId, StreamCounters>,
    pub(crate) latched: HashMap<StreamId, SocketAddrV4>,
    /// Refuse installs once this many rules are live (a full flow table).
    pub(crate) capacity: Option<usize>,
    next: u32,
}

/// A forwarder that forwards nothing: it keeps the rules it is given, refuses what a real path
/// would refuse (a second rule on one local address, an unknown stream, a change of local
/// address), and reports the counters the test sets. Clones share one state.
#[derive(Clone, Default)]
pub(crate) struct FakeForwarder(Arc<Mutex<FakeState>>);

impl FakeForwarder {
    pub(crate) fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().expect("fake forwarder state")
    }

    /// The live rules, in install order.
    pub(crate) fn rules(&self) -> Vec<StreamRule> {
        self.state().rules.values().copied().collect()
    }

    /// The live stream listening on `local`.
    pub(crate) fn id_at(&self, local: &str) -> StreamId {
        let local: SocketAddrV4 = local.parse().expect("local address");
        let state = self.state();
        let found = state.rules.iter().find(|(_, r)| r.local == local);
        *found.unwrap_or_else(|| panic!("no rule on {local}")).0
    }

    /// The live rule listening on `local`.
    pub(crate) fn rule_at(&self, local: &str) -> StreamRule {
        let id = self.id_at(local);
        self.state().rules[&id]
    }

    /// Sets the counters of the stream listening on `local`.
    pub(crate) fn set(&self, local: &str, packets: u64, bytes: u64, last_seen: Option<Duration>) {
        let id = self.id_at(local);
        self.state().counters.insert(
            id,
            StreamCounters {
                packets,
                bytes,
                last_seen,
            },
        );
    }

    pub(crate) fn count(&self, what: fn(&Op) -> bool) -> usize {
        self.state().log.iter().filter(|op| what(op)).count()
    }

    pub(crate) fn installs(&self) -> usize {
        self.count(|op| matches!(op, Op::Install(_)))
    }

    pub(crate) fn updates(&self) -> usize {
        self.count(|op| matches!(op, Op::Update(_)))
    }

    pub(crate) fn removes(&self) -> usize {
        self.count(|op| matches!(op, Op::Remove(_)))
    }

    pub(crate) fn clear_log(&self) {
        self.state().log.clear();
    }
}

impl Forwarder for FakeForwarder {
    fn kind(&self) -> BackendKind {
        BackendKind::Sockets
    }

    fn install(&mut self, rule: &StreamRule) -> Result<StreamId, DataplaneError> {
        let mut s = self.state();
        if s.rules.values().any(|r| r.local == rule.local) {
            return Err(DataplaneError::AlreadyInstalled(rule.local));
        }
        if s.capacity.is_some_and(|c| s.rules.len() >= c) {
            return Err(DataplaneError::Full(s.rules.len() as u32));
        }
        let id = StreamId(s.next);
        s.next += 1;
        s.rules.insert(id, *rule);
        s.log.push(Op::Install(id));
        Ok(id)
    }

    fn update(&mut self, id: StreamId, rule: &StreamRule) -> Result<(), DataplaneError> {
        let mut s = self.state();
        let old = s
            .rules
            .get_mut(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        if old.local != rule.local {
            return Err(DataplaneError::InvalidRule(format!(
                "stream {id} is at {}, not {}",
                old.local, rule.local
            )));
        }
        *old = *rule;
        s.log.push(Op::Update(id));
        Ok(())
    }

    fn remove(&mut self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        let mut s = self.state();
        s.rules
            .remove(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        s.log.push(Op::Remove(id));
        s.latched.remove(&id);
        Ok(s.counters.remove(&id).unwrap_or_default())
    }

    fn stream_counters(&self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        let s = self.state();
        if !s.rules.contains_key(&id) {
            return Err(DataplaneError::UnknownStream(id));
        }
        Ok(s.counters.get(&id).copied().unwrap_or_default())
    }

    fn latched_peer(&self, id: StreamId) -> Result<Option<SocketAddrV4>, DataplaneError> {
        let s = self.state();
        if !s.rules.contains_key(&id) {
            return Err(DataplaneError::UnknownStream(id));
        }
        Ok(s.latched.get(&id).copied())
    }

    fn counters(&self) -> Result<CounterSnapshot, DataplaneError> {
        Ok(CounterSnapshot::default())
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The relay's public interface: rules listen on .1, the SDP advertises .100 (a 1:1 NAT).
pub(crate) const RELAY: &str = "203.0.113.1";
pub(crate) const RELAY_ADVERTISED: &str = "203.0.113.100";
/// Caller A and callee B, at public addresses.
const A_IP: &str = "198.51.100.10";
const B_IP: &str = "192.0.2.20";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().expect("test socket address")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn interface(name: &str, addr: &str, advertised: &str, ports: (u16, u16)) -> RelayInterface {
    RelayInterface {
        name: name.into(),
        addr: ip(addr),
        advertised: ip(advertised),
        ports: ports.0..=ports.1,
    }
}

pub(crate) fn config(interfaces: Vec<RelayInterface>, timeouts: Timeouts) -> SessionConfig {
    SessionConfig {
        interfaces,
        timeouts,
    }
}

/// The public interface with ports 30000..=30099 (50 pairs).
pub(crate) fn public() -> RelayInterface {
    interface("pub", RELAY, RELAY_ADVERTISED, (30000, 30099))
}

fn manager_with(config: SessionConfig) -> (SessionManager, FakeForwarder) {
    let fake = FakeForwarder::default();
    let manager = SessionManager::new(config, Box::new(fake.clone())).expect("manager");
    (manager, fake)
}

fn manager() -> (SessionManager, FakeForwarder) {
    manager_with(config(vec![public()], Timeouts::default()))
}

/// One media line of a test SDP: kind, port, attributes, optional media-level address.
#[derive(Clone)]
struct M {
    kind: &'static str,
    port: u16,
    attrs: Vec<&'static str>,
    addr: Option<&'static str>,
}

fn audio(port: u16) -> M {
    M {
        kind: "audio",
        port,
        attrs: Vec::new(),
        addr: None,
    }
}

fn video(port: u16) -> M {
    M {
        kind: "video",
        ..audio(port)
    }
}

impl M {
    fn attr(mut self, a: &'static str) -> M {
        self.attrs.push(a);
        self
    }

    fn at(mut self, addr: &'static str) -> M {
        self.addr = Some(addr);
        self
    }
}

/// An SDP with session-level `c=IN IP4 <addr>` and the given media lines.
fn sdp(addr: &str, media: &[M]) -> Vec<u8> {
    let mut s = format!("v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n");
    for m in media {
        let formats = if m.kind == "video" { "96" } else { "0 8" };
        s.push_str(&format!("m={} {} RTP/AVP {formats}\r\n", m.kind, m.port));
        if let Some(a) = m.addr {
            s.push_str(&format!("c=IN IP4 {a}\r\n"));
        }
        for a in &m.attrs {
            s.push_str(&format!("a={a}\r\n"));
        }
    }
    s.into_bytes()
}

/// A one-line audio SDP.
pub(crate) fn audio_sdp(addr: &str, port: u16) -> Vec<u8> {
    sdp(addr, &[audio(port)])
}

/// Each media line's effective address and port in an SDP, as its receiver reads them.
pub(crate) fn advertised(body: &[u8]) -> Vec<SocketAddrV4> {
    let parsed = Sdp::parse(body).expect("the rewritten SDP parses");
    parsed
        .media()
        .iter()
        .map(|m| {
            let addr = match m.effective_connection().and_then(|c| c.ip()) {
                Some(std::net::IpAddr::V4(a)) => a,
                other => panic!("no IPv4 address: {other:?}"),
            };
            SocketAddrV4::new(addr, m.port())
        })
        .collect()
}

fn offer(call: &str, from_tag: &str, body: Vec<u8>) -> Signal {
    Signal {
        call_id: call.into(),
        from_tag: from_tag.into(),
        sdp: body,
        ..Signal::default()
    }
}

fn answer(call: &str, from_tag: &str, to_tag: &str, body: Vec<u8>) -> Signal {
    Signal {
        to_tag: Some(to_tag.into()),
        ..offer(call, from_tag, body)
    }
}

/// A plain call `c1` from A (198.51.100.10:4000) to B (192.0.2.20:5000), answered at `at`.
fn established(m: &mut SessionManager, at: Duration) {
    m.offer(at, &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    m.answer(at, &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("answer");
}

/// The ports of the first call on a fresh `public()` manager: 30000 faces A, 30002 faces B.
fn relay(port: u16) -> String {
    format!("{RELAY}:{port}")
}

fn ended_causes(m: &SessionManager) -> Vec<(String, TerminationCause)> {
    m.recently_ended()
        .map(|e| (e.report.call_id.clone(), e.cause.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A plain call.

#[test]
fn the_offer_advertises_the_relay_facing_the_callee() {
    let (mut m, fake) = manager();
    let out = m
        .offer(secs(1), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    let adv = advertised(&out);
    assert_eq!(adv, vec![sa(&format!("{RELAY_ADVERTISED}:30002"))]);
    assert_eq!(adv[0].port() % 2, 0, "RTP on an even port");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        text.lines()
            .all(|l| l.starts_with("o=") || !l.contains(A_IP)),
        "A's address is hidden but in o=: {text}"
    );
    assert_eq!(fake.installs(), 0, "no rule before the answer");
    assert_eq!(
        m.report(secs(1), "c1").expect("call").state,
        CallState::Offered
    );
}

#[test]
fn replace_origin_hides_the_origin_address_too() {
    let (mut m, _) = manager();
    let out = m
        .offer(
            secs(1),
            &Signal {
                replace_origin: true,
                ..offer("c1", "ta", audio_sdp(A_IP, 4000))
            },
        )
        .expect("offer");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(!text.contains(A_IP), "{text}");
    assert!(
        text.contains(&format!("o=- 1 1 IN IP4 {RELAY_ADVERTISED}")),
        "{text}"
    );
}

#[test]
fn the_answer_advertises_the_relay_facing_the_caller() {
    let (mut m, _) = manager();
    m.offer(secs(1), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    let out = m
        .answer(secs(2), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("answer");
    assert_eq!(
        advertised(&out),
        vec![sa(&format!("{RELAY_ADVERTISED}:30000"))]
    );
    let report = m.report(secs(3), "c1").expect("call");
    assert_eq!(report.state, CallState::Established);
    assert_eq!(report.from_tag.as_deref(), Some("ta"));
    assert_eq!(report.to_tag.as_deref(), Some("tb"));
    assert_eq!(report.duration_s, Some(1.0));
}

#[test]
fn the_answer_installs_rtp_and_rtcp_both_ways() {
    let (mut m, fake) = manager();
    established(&mut m, secs(1));
    assert_eq!(fake.installs(), 4);
    assert_eq!(fake.rules().len(), 4);
    let expect = |local: u16, source: u16, destination: &str| {
        let rule = fake.rule_at(&relay(local));
        assert_eq!(rule.source, sa(&relay(source)), "source of {local}");
        assert_eq!(
            rule.destination,
            Some(sa(destination)),
            "destination of {local}"
        );
        assert!(!rule.latch, "public parties are trusted");
    };
    // A sends to 30000 (RTP) / 30001 (RTCP); B to 30002 / 30003.
    expect(30000, 30002, &format!("{B_IP}:5000"));
    expect(30001, 30003, &format!("{B_IP}:5001"));
    expect(30002, 30000, &format!("{A_IP}:4000"));
    expect(30003, 30001, &format!("{A_IP}:4001"));
    assert_eq!(
        fake.rule_at(&relay(30000)).expected_peer,
        Some(sa(&format!("{A_IP}:4000")))
    );
}

#[test]
fn report_sums_counters_per_direction_and_kind() {
    let (mut m, fake) = manager();
    established(&mut m, secs(1));
    fake.set(&relay(30000), 100, 17_200, Some(secs(5)));
    fake.set(&relay(30001), 2, 160, Some(secs(4)));
    fake.set(&relay(30002), 90, 15_480, Some(secs(6)));
    fake.set(&relay(30003), 3, 240, Some(secs(3)));
    let r = m.report(secs(10), "c1").expect("report");
    let t = |packets, bytes| Totals { packets, bytes };
    assert_eq!(r.rtp, [t(100, 17_200), t(90, 15_480)]);
    assert_eq!(r.rtcp, [t(2, 160), t(3, 240)]);
    assert_eq!(r.last_packet_age_s, Some(4.0));
    assert_eq!(r.streams.len(), 4);
    let from_b_rtp = r
        .streams
        .iter()
        .find(|s| s.relay == sa(&relay(30002)))
        .expect("B's RTP stream");
    assert_eq!(from_b_rtp.sdp_peer, sa(&format!("{B_IP}:5000")));
    assert_eq!(
        (from_b_rtp.packets, from_b_rtp.kind.as_str()),
        (90, "audio")
    );
}

#[test]
fn delete_removes_every_rule_and_returns_the_totals() {
    let (mut m, fake) = manager();
    established(&mut m, secs(1));
    fake.set(&relay(30000), 10, 1_720, Some(secs(2)));
    fake.set(&relay(30002), 20, 3_440, Some(secs(2)));
    let ended = m.delete(secs(3), "c1").expect("delete");
    assert_eq!(ended.cause, TerminationCause::Deleted);
    assert_eq!(ended.report.rtp[0].packets, 10);
    assert_eq!(ended.report.rtp[1].bytes, 3_440);
    assert!(fake.rules().is_empty());
    assert_eq!(fake.removes(), 4);
    assert_eq!(m.call_ids().count(), 0);
    assert_eq!(m.ports_in_use(), 0);
    assert_eq!(
        ended_causes(&m),
        vec![("c1".into(), TerminationCause::Deleted)]
    );
    assert!(matches!(
        m.delete(secs(4), "c1"),
        Err(SessionError::UnknownCall(_))
    ));
}

#[test]
fn deleted_calls_give_their_ports_back() {
    // Two pairs only: one call.
    let iface = interface("pub", RELAY, RELAY, (30000, 30003));
    let (mut m, _) = manager_with(config(vec![iface], Timeouts::default()));
    established(&mut m, secs(1));
    let refused = m.offer(secs(2), &offer("c2", "x", audio_sdp(A_IP, 4000)));
    assert!(
        matches!(refused, Err(SessionError::Ports(_))),
        "{refused:?}"
    );
    m.delete(secs(3), "c1").expect("delete");
    let out = m
        .offer(secs(4), &offer("c2", "x", audio_sdp(A_IP, 4000)))
        .expect("the freed ports serve a new call");
    assert_eq!(advertised(&out)[0].port(), 30002);
}

#[test]
fn port_exhaustion_is_a_clear_error() {
    let iface = interface("tiny", RELAY, RELAY, (30000, 30003));
    let (mut m, _) = manager_with(config(vec![iface], Timeouts::default()));
    m.offer(secs(1), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("two pairs: one call");
    let err = m
        .offer(secs(1), &offer("c2", "ta", audio_sdp(A_IP, 4000)))
        .expect_err("no pair left");
    assert!(matches!(
        err,
        SessionError::Ports(PortError::Exhausted(2, _))
    ));
    assert_eq!(
        err.to_string(),
        "all 2 port pairs of interface `tiny` are in use"
    );
    assert_eq!(m.call_ids().collect::<Vec<_>>(), vec!["c1"]);
}

// ---------------------------------------------------------------------------------------------
// Named interfaces.

fn two_interfaces() -> SessionConfig {
    config(
        vec![
            interface("caller", "10.77.1.1", "10.77.1.1", (30000, 30099)),
            interface("callee", "203.0.113.1", "203.0.113.100", (40000, 40099)),
        ],
        Timeouts::default(),
    )
}

#[test]
fn named_interfaces_face_each_side() {
    let (mut m, fake) = manager_with(two_interfaces());
    let out = m
        .offer(
            secs(1),
            &Signal {
                direction: Some(["caller".into(), "callee".into()]),
                ..offer("c1", "ta", audio_sdp("10.1.2.3", 4000))
            },
        )
        .expect("offer");
    assert_eq!(advertised(&out), vec![sa("203.0.113.100:40000")]);
    let out = m
        .answer(secs(2), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("answer");
    assert_eq!(advertised(&out), vec![sa("10.77.1.1:30000")]);
    let from_a = fake.rule_at("10.77.1.1:30000");
    assert_eq!(from_a.source, sa("203.0.113.1:40000"));
    let from_b = fake.rule_at("203.0.113.1:40000");
    assert_eq!(from_b.source, sa("10.77.1.1:30000"));
    assert!(fake.id_at("10.77.1.1:30001") != fake.id_at("203.0.113.1:40001"));
}

#[test]
fn an_unknown_interface_is_refused_and_leaves_nothing() {
    let (mut m, _) = manager_with(two_interfaces());
    let err = m
        .offer(
            secs(1),
            &Signal {
                direction: Some(["caller".into(), "nowhere".into()]),
                ..offer("c1", "ta", audio_sdp(A_IP, 4000))
            },
        )
        .expect_err("unknown interface");
    assert!(matches!(&err, SessionError::UnknownInterface(n) if n == "nowhere"));
    assert_eq!(m.call_ids().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// NAT.

/// The rules of a call from A at `a_sdp` (with `signal` tweaks) to a public B.
fn call_from(a_addr: &str, tweak: impl Fn(&mut Signal)) -> FakeForwarder {
    let (mut m, fake) = manager();
    let mut o = offer("c1", "ta", audio_sdp(a_addr, 4000));
    tweak(&mut o);
    m.offer(secs(1), &o).expect("offer");
    m.answer(secs(1), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("answer");
    fake
}

#[test]
fn a_private_sdp_address_latches() {
    let fake = call_from("192.168.1.10", |_| {});
    let from_a = fake.rule_at(&relay(30000));
    assert!(from_a.latch);
    assert_eq!(
        from_a.expected_peer,
        Some(sa("192.168.1.10:4000")),
        "first guess"
    );
    assert_eq!(from_a.teach, Some(sa(&relay(30002))), "teaches B's rule");
    let to_a = fake.rule_at(&relay(30002));
    assert!(!to_a.latch, "B is public");
    assert_eq!(
        to_a.destination,
        Some(sa("192.168.1.10:4000")),
        "until learned"
    );
}

#[test]
fn an_sdp_address_other_than_the_signalling_source_latches() {
    let fake = call_from(A_IP, |s| s.signalling_source = Some(ip("198.51.100.99")));
    assert!(fake.rule_at(&relay(30000)).latch);
    assert!(fake.rule_at(&relay(30001)).latch, "RTCP too");
    let fake = call_from(A_IP, |s| s.signalling_source = Some(ip(A_IP)));
    assert!(
        !fake.rule_at(&relay(30000)).latch,
        "matching source: trusted"
    );
}

#[test]
fn asymmetric_trusts_the_sdp() {
    let fake = call_from("192.168.1.10", |s| s.symmetry = Symmetry::Asymmetric);
    let from_a = fake.rule_at(&relay(30000));
    assert!(!from_a.latch);
    assert_eq!(from_a.teach, None);
}

#[test]
fn symmetric_always_latches() {
    let fake = call_from(A_IP, |s| s.symmetry = Symmetry::Symmetric);
    let from_a = fake.rule_at(&relay(30000));
    assert!(from_a.latch);
    assert_eq!(from_a.expected_peer, Some(sa(&format!("{A_IP}:4000"))));
}

#[test]
fn strict_source_reaches_the_rules() {
    let fake = call_from(A_IP, |s| s.strict_source = true);
    assert!(fake.rules().iter().all(|r| r.strict_source));
}

// ---------------------------------------------------------------------------------------------
// Re-INVITEs and hold.

#[test]
fn a_reoffer_keeps_the_ports_and_updates_the_rules() {
    let (mut m, fake) = manager();
    established(&mut m, secs(1));
    let ids: Vec<StreamId> = fake.state().rules.keys().copied().collect();
    fake.clear_log();
    let out = m
        .offer(
            secs(10),
            &answer("c1", "ta", "tb", audio_sdp("198.51.100.11", 4100)),
        )
        .expect("re-offer");
    assert_eq!(
        advertised(&out),
        vec![sa(&format!("{RELAY_ADVERTISED}:30002"))]
    );
    assert_eq!(fake.installs(), 0, "no new rule");
    assert_eq!(fake.removes(), 0);
    assert_eq!(fake.updates(), 4, "all four rules involve A's address");
    assert_eq!(fake.state().rules.keys().copied().collect::<Vec<_>>(), ids);
    assert_eq!(
        fake.rule_at(&relay(30002)).destination,
        Some(sa("198.51.100.11:4100"))
    );
    assert_eq!(
        fake.rule_at(&relay(30003)).destination,
        Some(sa("198.51.100.11:4101"))
    );
    // The answer to the re-offer changes nothing for B: nothing is rewritten.
    fake.clear_log();
    let out = m
        .answer(secs(10), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("answer");
    assert_eq!(
        advertised(&out),
        vec![sa(&format!("{RELAY_ADVERTISED}:30000"))]
    );
    assert_eq!((fake.installs(), fake.updates()), (0, 0));
}

#[test]
fn a_reoffer_from_the_callee_reverses_the_tags() {
    let (mut m, fake) = manager();
    established(&mut m, secs(1));
    fake.clear_log();
    // B's re-INVITE: from-tag is B's, to-tag A's. The offer goes to A.
    let out = m
        .offer(
            secs(10),
            &answer("c1", "tb", "ta", audio_sdp("192.0.2.21", 5100)),
        )
        .expect("re-offer from B");
    assert_eq!(
        advertised(&out),
        vec![sa(&format!("{RELAY_ADVERTISED}:30000"))]
    );
    assert_eq!(
        fake.rule_at(&relay(30000)).destination,
        Some(sa("192.0.2.21:5100"))
    );
    // A answers: the answer goes to B. ng puts the offerer's tag (B's) in from-tag.
    let out = m
        .answer(
            secs(11),
            &answer("c1", "tb", "ta", audio_sdp("198.51.100.12", 4200)),
        )
        .expect("A's answer");
    assert_eq!(
        advertised(&out),
        vec![sa(&format!("{RELAY_ADVERTISED}:30002"))]
    );
    assert_eq!(
        fake.rule_at(&relay(30002)).destination,
        Some(sa("198.51.100.12:4200"))
    );
    assert_eq!(fake.installs(), 0);
    let report = m.report(secs(12), "c1").expect("report");
    assert_eq!(report.from_tag.as_deref(), Some("ta"), "A keeps its tag");
    assert_eq!(report.to_tag.as_deref(), Some("tb"), "B keeps its tag");
    // And A can re-offer again afterwards.
    m.offer(secs(13), &answer("c1", "ta", "tb", audio_sdp(A_IP, 4000)))
        .expect("re-offer from A");
    assert_eq!(
        fake.rule_at(&relay(30002)).destination,
        Some(sa(&format!("{A_IP}:4000")))
    );
}

#[test]
fn hold_with_sendonly_and_resume() {
    let timeouts = Timeouts {
        media: secs(60),
        hold: secs(3600),
        ..Timeouts::default()
    };
    let (mut m, fake) = manager_with(config(vec![public()], timeouts));
    established(&mut m, secs(0));
    let held = sdp(A_IP, &[audio(4000).attr("sendonly")]);
    m.offer(secs(10), &answer("c1", "ta", "tb", held))
        .expect("hold");
    let held_answer = sdp(B_IP, &[audio(5000).attr("recvonly")]);
    m.answer(secs(10), &answer("c1", "ta", "tb", held_answer))
        .expect("hold answer");
    assert_eq!(fake.rules().len(), 4, "the streams stay for music on hold");
    assert!(
        m.poll(secs(10 + 600)).is_empty(),
        "the hold timeout applies"
    );
    // Resume.
    m.offer(secs(700), &answer("c1", "ta", "tb", audio_sdp(A_IP, 4000)))
        .expect("resume");
    m.answer(secs(700), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("resume answer");
    assert!(m.poll(secs(759)).is_empty());
    let ended = m.poll(secs(760));
    assert_eq!(ended.len(), 1, "the media timeout applies again");
    assert_eq!(ended[0].cause, TerminationCause::MediaTimeout);
}

#[test]
fn hold_with_the_zero_address_sends_nothing_to_the_held_party() {
    let (mut m, fake) = manager();
    established(&mut m, secs(0));
    m.offer(
        secs(10),
        &answer("c1", "ta", "tb", audio_sdp("0.0.0.0", 4000)),
    )
    .expect("RFC 2543 hold");
    let to_a = fake.rule_at(&relay(30002));
    assert_eq!(to_a.destination, None, "nothing goes to 0.0.0.0");
    assert!(
        fake.rule_at(&relay(30000)).latch,
        "A is learned from its packets"
    );
    // Even when told to trust the SDP.
    m.offer(
        secs(11),
        &Signal {
            symmetry: Symmetry::Asymmetric,
            ..answer("c1", "ta", "tb", audio_sdp("0.0.0.0", 4000))
        },
    )
    .expect("RFC 2543 hold, asymmetric");
    assert_eq!(fake.rule_at(&relay(30002)).destination, None);
    assert_eq!(fake.rule_at(&relay(30003)).destination, None, "RTCP too");
    // Resume.
    m.offer(secs(12), &answer("c1", "ta", "tb", audio_sdp(A_IP, 4000)))
        .expect("resume");
    assert_eq!(
        fake.rule_at(&relay(30002)).destination,
        Some(sa(&format!("{A_IP}:4000")))
    );
}

#[test]
fn the_hold_timeout_applies_while_on_hold() {
    let timeouts = Timeouts {
        media: secs(60),
        hold: secs(600),
        ..Timeouts::default()
    };
    let (mut m, _) = manager_with(config(vec![public()], timeouts));
    established(&mut m, secs(0));
    let held = sdp(A_IP, &[audio(4000).attr("inactive")]);
    m.offer(secs(100), &answer("c1", "ta", "tb", held))
        .expect("hold");
    assert!(m.poll(secs(100 + 599)).is_empty(), "not the media timeout");
    let ended = m.poll(secs(100 + 600));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].cause, TerminationCause::MediaTimeout);
}

#[test]
fn a_rejected_line_does_not_cancel_a_hold() {
    let timeouts = Timeouts {
        media: secs(60),
        hold: secs(600),
        ..Timeouts::default()
    };
    let (mut m, _) = manager_with(config(vec![public()], timeouts));
    m.offer(
        secs(0),
        &offer("c1", "ta", sdp(A_IP, &[audio(4000), video(4002)])),
    )
    .expect("offer");
    m.answer(
        secs(0),
        &answer("c1", "ta", "tb", sdp(B_IP, &[audio(5000), video(0)])),
    )
    .expect("video rejected");
    let held = sdp(A_IP, &[audio(4000).attr("sendonly"), video(4002)]);
    m.offer(secs(10), &answer("c1", "ta", "tb", held))
        .expect("hold");
    assert!(
        m.poll(secs(10 + 120)).is_empty(),
        "the rejected video line is not media that should flow"
    );
}

// ---------------------------------------------------------------------------------------------
// Media lines.

#[test]
fn rtcp_mux_on_both_sides_gives_rtp_rules_only() {
    let (mut m, fake) = manager();
    m.offer(
        secs(1),
        &offer("c1", "ta", sdp(A_IP, &[audio(4000).attr("rtcp-mux")])),
    )
    .expect("offer");
    m.answer(
        secs(1),
        &answer("c1", "ta", "tb", sdp(B_IP, &[audio(5000).attr("rtcp-mux")])),
    )
    .expect("answer");
    let locals: Vec<SocketAddrV4> = fake.rules().iter().map(|r| r.local).collect();
    assert_eq!(locals, vec![sa(&relay(30000)), sa(&relay(30002))]);
}

#[test]
fn rtcp_mux_on_one_side_keeps_rtcp_on_the_next_port() {
    let (mut m, fake) = manager();
    m.offer(
        secs(1),
        &offer("c1", "ta", sdp(A_IP, &[audio(4000).attr("rtcp-mux")])),
    )
    .expect("offer");
    m.answer(secs(1), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("answer without mux");
    assert_eq!(fake.rules().len(), 4);
    // A offered mux, B declined: A falls back to RTCP on 4001 (RFC 5761), not on 4000.
    assert_eq!(
        fake.rule_at(&relay(30003)).destination,
        Some(sa(&format!("{A_IP}:4001")))
    );
}

#[test]
fn a_media_level_address_wins_over_the_session_one() {
    let (mut m, fake) = manager();
    let out = m
        .offer(
            secs(1),
            &offer("c1", "ta", sdp(A_IP, &[audio(4000).at("198.51.100.77")])),
        )
        .expect("offer");
    assert_eq!(
        advertised(&out),
        vec![sa(&format!("{RELAY_ADVERTISED}:30002"))]
    );
    m.answer(secs(1), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("answer");
    assert_eq!(
        fake.rule_at(&relay(30002)).destination,
        Some(sa("198.51.100.77:4000"))
    );
}

#[test]
fn an_explicit_rtcp_attribute_is_used() {
    let (mut m, fake) = manager();
    m.offer(
        secs(1),
        &offer("c1", "ta", sdp(A_IP, &[audio(4000).attr("rtcp:4711")])),
    )
    .expect("offer");
    m.answer(secs(1), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("answer");
    assert_eq!(
        fake.rule_at(&relay(30003)).destination,
        Some(sa(&format!("{A_IP}:4711")))
    );
}

#[test]
fn a_rejected_stream_gets_no_rules() {
    let (mut m, fake) = manager();
    let out = m
        .offer(
            secs(1),
            &offer("c1", "ta", sdp(A_IP, &[audio(4000), video(4002)])),
        )
        .expect("offer");
    assert_eq!(advertised(&out).len(), 2);
    let out = m
        .answer(
            secs(1),
            &answer("c1", "ta", "tb", sdp(B_IP, &[audio(5000), video(0)])),
        )
        .expect("answer");
    let adv = advertised(&out);
    assert_eq!(adv[1].port(), 0, "the rejection reaches A");
    assert_eq!(fake.rules().len(), 4, "audio only");
    assert!(fake
        .rules()
        .iter()
        .all(|r| (30000..=30003).contains(&r.local.port())));
}

#[test]
fn audio_and_video_get_rules_for_both() {
    let (mut m, fake) = manager();
    let out = m
        .offer(
            secs(1),
            &offer("c1", "ta", sdp(A_IP, &[audio(4000), video(4002)])),
        )
        .expect("offer");
    // Line 0 got 30000 (A) / 30002 (B), line 1 30004 / 30006.
    assert_eq!(
        advertised(&out),
        vec![
            sa(&format!("{RELAY_ADVERTISED}:30002")),
            sa(&format!("{RELAY_ADVERTISED}:30006"))
        ]
    );
    m.answer(
        secs(1),
        &answer("c1", "ta", "tb", sdp(B_IP, &[audio(5000), video(5002)])),
    )
    .expect("answer");
    assert_eq!(fake.rules().len(), 8);
    assert_eq!(
        fake.rule_at(&relay(30004)).destination,
        Some(sa(&format!("{B_IP}:5002")))
    );
    let report = m.report(secs(2), "c1").expect("report");
    let kinds: Vec<&str> = report.streams.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "video").count(), 4);
}

#[test]
fn an_answer_with_more_lines_than_the_offer_is_bad_sdp() {
    let (mut m, fake) = manager();
    m.offer(secs(1), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    let err = m
        .answer(
            secs(1),
            &answer("c1", "ta", "tb", sdp(B_IP, &[audio(5000), video(5002)])),
        )
        .expect_err("two lines for one");
    assert!(matches!(err, SessionError::BadSdp(_)), "{err}");
    assert_eq!(fake.installs(), 0);
    // The call is still waiting for a proper answer.
    m.answer(secs(2), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("a proper answer");
    assert_eq!(fake.rules().len(), 4);
}

#[test]
fn malformed_sdp_is_bad_sdp() {
    let (mut m, _) = manager();
    for body in [
        b"".to_vec(),
        b"hello".to_vec(),
        b"v=0\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\n".to_vec(), // no o=
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n".to_vec(),
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\n".to_vec(), // no c=
    ] {
        let err = m
            .offer(secs(1), &offer("c1", "ta", body.clone()))
            .expect_err("malformed");
        assert!(
            matches!(err, SessionError::BadSdp(_)),
            "{:?}: {err:?}",
            String::from_utf8_lossy(&body)
        );
        assert!(err.to_string().starts_with("bad SDP: "), "{err}");
    }
    assert_eq!(m.call_ids().count(), 0);
}

#[test]
fn ipv6_media_is_unsupported() {
    let (mut m, _) = manager();
    let body = b"v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let err = m
        .offer(secs(1), &offer("c1", "ta", body.to_vec()))
        .expect_err("IPv6");
    assert!(matches!(err, SessionError::Unsupported(_)), "{err:?}");
    assert_eq!(m.call_ids().count(), 0);
}

#[test]
fn a_failed_first_offer_leaves_no_call_and_no_port() {
    // Three pairs: a two-line offer needs four.
    let iface = interface("pub", RELAY, RELAY, (30000, 30005));
    let (mut m, _) = manager_with(config(vec![iface], Timeouts::default()));
    let err = m
        .offer(
            secs(1),
            &offer("c1", "ta", sdp(A_IP, &[audio(4000), video(4002)])),
        )
        .expect_err("not enough ports");
    assert!(matches!(err, SessionError::Ports(_)));
    assert_eq!(m.call_ids().count(), 0);
    assert_eq!(m.ports_in_use(), 0, "every pair went back");
    m.offer(secs(2), &offer("c2", "ta", audio_sdp(A_IP, 4000)))
        .expect("the ports were released");
    assert_eq!(m.ports_in_use(), 2);
}

#[test]
fn a_failed_reoffer_leaves_the_call_as_it_was() {
    let iface = interface("pub", RELAY, RELAY, (30000, 30005));
    let (mut m, fake) = manager_with(config(vec![iface], Timeouts::default()));
    established(&mut m, secs(1));
    fake.clear_log();
    // Adding video needs two more pairs; one is left.
    let err = m
        .offer(
            secs(2),
            &answer(
                "c1",
                "ta",
                "tb",
                sdp("198.51.100.11", &[audio(4100), video(4102)]),
            ),
        )
        .expect_err("no ports for video");
    assert!(matches!(err, SessionError::Ports(_)));
    assert_eq!(
        m.call_ids().collect::<Vec<_>>(),
        vec!["c1"],
        "the call stays"
    );
    assert_eq!(fake.state().log, vec![], "its rules are untouched");
    // A malformed re-offer does not end the call either.
    m.offer(secs(3), &answer("c1", "ta", "tb", b"garbage".to_vec()))
        .expect_err("malformed");
    assert_eq!(m.call_ids().count(), 1);
    assert_eq!(m.ports_in_use(), 2, "the pair left is still free");
    // And a re-offer of an unanswered call that fails keeps that call too.
    let iface = interface("pub", RELAY, RELAY, (30000, 30099));
    let (mut m, _) = manager_with(config(vec![iface], Timeouts::default()));
    m.offer(secs(1), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    m.offer(secs(2), &offer("c1", "ta", b"v=1".to_vec()))
        .expect_err("malformed");
    assert_eq!(m.call_ids().count(), 1, "the outstanding offer stays");
}

// ---------------------------------------------------------------------------------------------
// Forking.

#[test]
fn the_latest_branch_answer_wins() {
    let (mut m, fake) = manager();
    m.offer(secs(1), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    m.answer(
        secs(2),
        &answer("c1", "ta", "branch1", audio_sdp(B_IP, 5000)),
    )
    .expect("first branch");
    let out = m
        .answer(
            secs(3),
            &answer("c1", "ta", "branch2", audio_sdp("192.0.2.30", 6000)),
        )
        .expect("second branch");
    assert_eq!(
        advertised(&out),
        vec![sa(&format!("{RELAY_ADVERTISED}:30000"))]
    );
    assert_eq!(fake.installs(), 4, "no duplicate rules");
    assert_eq!(fake.rules().len(), 4);
    assert_eq!(
        fake.rule_at(&relay(30000)).destination,
        Some(sa("192.0.2.30:6000"))
    );
    let report = m.report(secs(4), "c1").expect("report");
    assert_eq!(report.to_tag.as_deref(), Some("branch2"));
    assert_eq!(report.duration_s, Some(2.0), "answered by the first branch");
}

// ---------------------------------------------------------------------------------------------
// Timeouts.

fn short_timeouts() -> Timeouts {
    Timeouts {
        media: secs(30),
        hold: secs(300),
        max_duration: Some(secs(3600)),
        offer: secs(120),
    }
}

#[test]
fn the_media_timeout_counts_from_the_last_packet() {
    let (mut m, fake) = manager_with(config(vec![public()], short_timeouts()));
    established(&mut m, secs(0));
    fake.set(&relay(30000), 500, 86_000, Some(secs(100)));
    fake.set(&relay(30002), 400, 68_800, Some(secs(90)));
    assert!(m.poll(secs(129)).is_empty(), "29 s after the last packet");
    let ended = m.poll(secs(130));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].cause, TerminationCause::MediaTimeout);
    assert_eq!(ended[0].report.rtp[0].packets, 500, "final counters");
    assert_eq!(ended[0].report.rtp[1].packets, 400);
    assert!(fake.rules().is_empty(), "its rules are removed");
    assert_eq!(m.call_ids().count(), 0);
    let remembered: Vec<&Ended> = m.recently_ended().collect();
    assert_eq!(remembered.len(), 1);
    assert_eq!(remembered[0], &ended[0]);
}

#[test]
fn a_call_without_any_packet_times_out_after_its_answer() {
    let (mut m, _) = manager_with(config(vec![public()], short_timeouts()));
    established(&mut m, secs(10));
    assert!(m.poll(secs(39)).is_empty());
    assert_eq!(m.poll(secs(40)).len(), 1);
}

#[test]
fn a_call_with_packets_flowing_does_not_time_out() {
    let (mut m, fake) = manager_with(config(vec![public()], short_timeouts()));
    established(&mut m, secs(0));
    for t in (10..3000).step_by(10) {
        fake.set(&relay(30000), t, t * 172, Some(secs(t)));
        assert!(m.poll(secs(t + 5)).is_empty(), "at {t} s");
    }
    assert_eq!(m.call_ids().count(), 1);
}

#[test]
fn the_max_duration_ends_even_a_lively_call() {
    let (mut m, fake) = manager_with(config(vec![public()], short_timeouts()));
    established(&mut m, secs(5));
    fake.set(&relay(30000), 1, 172, Some(secs(3604)));
    assert!(m.poll(secs(3604)).is_empty());
    let ended = m.poll(secs(3605));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].cause, TerminationCause::MaxDuration);
    assert!(fake.rules().is_empty());
    assert_eq!(
        ended_causes(&m),
        vec![("c1".into(), TerminationCause::MaxDuration)]
    );
}

#[test]
fn an_unanswered_offer_times_out() {
    let (mut m, _) = manager_with(config(vec![public()], short_timeouts()));
    m.offer(secs(0), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    assert!(m.poll(secs(119)).is_empty());
    let ended = m.poll(secs(120));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].cause, TerminationCause::OfferTimeout);
    assert_eq!(ended[0].report.state, CallState::Offered);
    assert_eq!(
        ended_causes(&m),
        vec![("c1".into(), TerminationCause::OfferTimeout)]
    );
    // Its ports are free again: a new call gets the first pair.
    let out = m
        .offer(secs(121), &offer("c2", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    assert!(advertised(&out)[0].port() >= 30000);
}

#[test]
fn the_offer_timeout_counts_from_the_latest_offer() {
    let (mut m, _) = manager_with(config(vec![public()], short_timeouts()));
    m.offer(secs(0), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    m.offer(secs(100), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("updated offer (UPDATE while ringing)");
    assert!(m.poll(secs(200)).is_empty());
    assert_eq!(m.poll(secs(220)).len(), 1);
}

#[test]
fn only_the_expired_calls_end() {
    let (mut m, fake) = manager_with(config(vec![public()], short_timeouts()));
    established(&mut m, secs(0));
    m.offer(secs(0), &offer("c2", "t2", audio_sdp(A_IP, 4010)))
        .expect("offer");
    m.answer(secs(0), &answer("c2", "t2", "u2", audio_sdp(B_IP, 5010)))
        .expect("answer");
    // c2 is at 30004 (A) / 30006 (B): keep it alive.
    fake.set(&relay(30004), 10, 1_720, Some(secs(50)));
    let ended = m.poll(secs(60));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].report.call_id, "c1");
    assert_eq!(m.call_ids().collect::<Vec<_>>(), vec!["c2"]);
    assert_eq!(fake.rules().len(), 4, "c2's rules stay");
}

#[test]
fn recently_ended_keeps_the_latest_calls() {
    let (mut m, _) = manager();
    for i in 0..ENDED_KEPT + 5 {
        let id = format!("c{i}");
        m.offer(secs(1), &offer(&id, "ta", audio_sdp(A_IP, 4000)))
            .expect("offer");
        m.delete(secs(2), &id).expect("delete");
    }
    let ended: Vec<&Ended> = m.recently_ended().collect();
    assert_eq!(ended.len(), ENDED_KEPT);
    assert_eq!(ended[0].report.call_id, "c5", "oldest first");
    assert_eq!(
        ended[ENDED_KEPT - 1].report.call_id,
        format!("c{}", ENDED_KEPT + 4)
    );
}

// ---------------------------------------------------------------------------------------------
// Counters through changes, and a relay that lost a stream.

#[test]
fn unchanged_rules_are_not_rewritten() {
    let (mut m, fake) = manager();
    established(&mut m, secs(1));
    fake.clear_log();
    // A session-timer refresh: the same SDP again.
    m.offer(secs(60), &answer("c1", "ta", "tb", audio_sdp(A_IP, 4000)))
        .expect("refresh");
    m.answer(secs(60), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect("refresh answer");
    assert_eq!(
        fake.state().log,
        vec![],
        "a rewrite would reset learned latches"
    );
}

#[test]
fn a_stream_removed_mid_call_still_counts_in_the_totals() {
    let (mut m, fake) = manager();
    m.offer(
        secs(1),
        &offer("c1", "ta", sdp(A_IP, &[audio(4000), video(4002)])),
    )
    .expect("offer");
    m.answer(
        secs(1),
        &answer("c1", "ta", "tb", sdp(B_IP, &[audio(5000), video(5002)])),
    )
    .expect("answer");
    fake.set(&relay(30000), 10, 1_000, Some(secs(5)));
    fake.set(&relay(30004), 7, 7_000, Some(secs(6))); // A's video
                                                      // B drops the video with a re-INVITE.
    m.offer(
        secs(10),
        &answer("c1", "tb", "ta", sdp(B_IP, &[audio(5000), video(0)])),
    )
    .expect("re-offer without video");
    assert_eq!(fake.rules().len(), 4, "the video rules are gone");
    let report = m.report(secs(11), "c1").expect("report");
    assert_eq!(report.rtp[0].packets, 17, "audio and the removed video");
    assert_eq!(report.rtp[0].bytes, 8_000);
    let ended = m.delete(secs(12), "c1").expect("delete");
    assert_eq!(ended.report.rtp[0].packets, 17);
}

#[test]
fn a_stream_the_relay_lost_does_not_block_delete() {
    let (mut m, fake) = manager();
    established(&mut m, secs(1));
    fake.set(&relay(30000), 10, 1_000, Some(secs(2)));
    let lost = fake.id_at(&relay(30002));
    fake.state().rules.remove(&lost);
    let report = m.report(secs(3), "c1").expect("still reportable");
    assert_eq!(report.rtp[0].packets, 10);
    let ended = m.delete(secs(3), "c1").expect("still deletable");
    assert_eq!(
        ended.report.rtp,
        [
            Totals {
                packets: 10,
                bytes: 1_000
            },
            Totals::default()
        ]
    );
    assert!(fake.rules().is_empty());
    assert_eq!(m.call_ids().count(), 0);
}

#[test]
fn a_refused_install_is_reported_and_the_call_can_end() {
    let (mut m, fake) = manager();
    fake.state().capacity = Some(2);
    m.offer(secs(1), &offer("c1", "ta", audio_sdp(A_IP, 4000)))
        .expect("offer");
    let err = m
        .answer(secs(1), &answer("c1", "ta", "tb", audio_sdp(B_IP, 5000)))
        .expect_err("the relay is full");
    assert!(matches!(err, SessionError::Dataplane(_)), "{err}");
    m.delete(secs(2), "c1").expect("delete");
    assert!(fake.rules().is_empty(), "the two installed rules went away");
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// Resident set size in bytes, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// A forwarder that keeps nothing, so that only the manager's own memory is measured.
struct CountingForwarder(u32);

impl Forwarder for CountingForwarder {
    fn kind(&self) -> BackendKind {
        BackendKind::Sockets
    }
    fn install(&mut self, _: &StreamRule) -> Result<StreamId, DataplaneError> {
        self.0 += 1;
        Ok(StreamId(self.0))
    }
    fn update(&mut self, _: StreamId, _: &StreamRule) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn remove(&mut self, _: StreamId) -> Result<StreamCounters, DataplaneError> {
        Ok(StreamCounters::default())
    }
    fn stream_counters(&self, _: StreamId) -> Result<StreamCounters, DataplaneError> {
        Ok(StreamCounters::default())
    }
    fn latched_peer(&self, _: StreamId) -> Result<Option<SocketAddrV4>, DataplaneError> {
        Ok(None)
    }
    fn counters(&self) -> Result<CounterSnapshot, DataplaneError> {
        Ok(CounterSnapshot::default())
    }
}

/// Memory per established call (one audio line, four rules), as the RSS growth over `CALLS`
/// calls. Run alone, so that no other test allocates meanwhile:
/// `cargo test -p sluice --release -- --ignored --exact session::tests::memory_per_call --nocapture`
#[test]
#[ignore = "a measurement, not a check: run it alone"]
fn memory_per_call() {
    const CALLS: usize = 10_000;
    let iface = interface("pub", RELAY, RELAY, (2, 65535));
    let mut m = SessionManager::new(
        config(vec![iface], Timeouts::default()),
        Box::new(CountingForwarder(0)),
    )
    .expect("manager");
    let offers: Vec<Signal> = (0..CALLS)
        .map(|i| {
            offer(
                &format!("{i:08x}-7c1e-4d2a-9f3b-3c9d2e8f1a6b@198.51.100.10"),
                &format!("as{i:08x}"),
                audio_sdp(A_IP, 4000),
            )
        })
        .collect();
    let body = audio_sdp(B_IP, 5000);
    let before = rss_bytes();
    for o in &offers {
        m.offer(secs(1), o).expect("offer");
        m.answer(
            secs(1),
            &Signal {
                to_tag: Some(format!("bs{}", o.from_tag)),
                sdp: body.clone(),
                ..o.clone()
            },
        )
        .expect("answer");
    }
    let after = rss_bytes();
    assert_eq!(m.call_ids().count(), CALLS);
    let per_call = after.saturating_sub(before) / CALLS as u64;
    println!(
        "{CALLS} established calls: RSS +{} KiB, {per_call} bytes per call",
        after.saturating_sub(before) / 1024
    );
}
