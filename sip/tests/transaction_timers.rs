//! RFC 3261 §17 transactions in virtual time: a fake clock jumps to `poll_timeout()`, nothing
//! sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use rsip::{Method, Transport};
use sluice_sip::message::proxy::top_via;
use sluice_sip::message::{
    header_name_value, parse_cseq, Limits, NameAddr, Request, Response, SipMessage,
};
use sluice_sip::transaction::{
    Config, Error, Event, Role, State, TimeoutTimer, TransactionKey, Transactions, Transmit,
    TryingPolicy, T4, TIMER_B, TIMER_D, TIMER_F, TIMER_H, TIMER_L,
};

const UDP: Transport = Transport::Udp;
const TCP: Transport = Transport::Tcp;

fn peer() -> SocketAddr {
    "192.0.2.10:5060".parse().unwrap()
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn request_text(method: &str, branch: &str, cseq_method: &str, transport: &str) -> String {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 192.0.2.1:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:edge.example.com;lr>\r\n\
         From: <sip:alice@example.com>;tag=from1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: call1@example.com\r\n\
         CSeq: 1 {cseq_method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn request(method: &str, branch: &str) -> Request {
    request_on(method, branch, "UDP")
}

fn request_on(method: &str, branch: &str, transport: &str) -> Request {
    request_from(&request_text(method, branch, method, transport))
}

fn request_from(text: &str) -> Request {
    match sluice_sip::message::parse(text.as_bytes(), &Limits::UDP).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("a request"),
    }
}

/// The value of the first header called `name`.
fn header(headers: &rsip::Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .map(header_name_value)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn top_branch(headers: &rsip::Headers) -> String {
    top_via(headers).unwrap().branch().unwrap().to_owned()
}

/// An ACK for a non-2xx: same branch as the INVITE, To tag of the response.
fn ack(branch: &str) -> Request {
    let text = request_text("ACK", branch, "ACK", "UDP").replace(
        "To: <sip:bob@example.com>",
        "To: <sip:bob@example.com>;tag=to1",
    );
    request_from(&text)
}

fn response(code: u16, branch: &str, cseq_method: &str) -> Response {
    let reason = match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        _ => "Whatever",
    };
    let text = format!(
        "SIP/2.0 {code} {reason}\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
         From: <sip:alice@example.com>;tag=from1\r\n\
         To: <sip:bob@example.com>;tag=to1\r\n\
         Call-ID: call1@example.com\r\n\
         CSeq: 1 {cseq_method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    match sluice_sip::message::parse(text.as_bytes(), &Limits::UDP).unwrap() {
        SipMessage::Response(r) => r,
        SipMessage::Request(_) => panic!("a response"),
    }
}

fn parse(t: &Transmit) -> SipMessage {
    sluice_sip::message::parse(&t.contents, &Limits::UDP).unwrap()
}

fn status(t: &Transmit) -> Option<u16> {
    match parse(t) {
        SipMessage::Response(r) => Some(r.status),
        SipMessage::Request(_) => None,
    }
}

fn method(t: &Transmit) -> Option<Method> {
    match parse(t) {
        SipMessage::Request(r) => r.method.rsip(),
        SipMessage::Response(_) => None,
    }
}

/// A transaction layer on a fake clock, recording every output with the time it came out.
struct Sim {
    txs: Transactions,
    now: Duration,
    transmits: Vec<(Duration, Transmit)>,
    events: Vec<(Duration, Event)>,
}

impl Sim {
    fn new() -> Self {
        Self::with(Config::default())
    }

    fn with(config: Config) -> Self {
        Self {
            txs: Transactions::new(config),
            now: Duration::ZERO,
            transmits: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.txs.poll_transmit() {
            self.transmits.push((self.now, t));
        }
        while let Some(e) = self.txs.poll_event() {
            self.events.push((self.now, e));
        }
    }

    /// Jumps to the next deadline, if it is not after `limit`, and fires it.
    fn step(&mut self, limit: Duration) -> bool {
        match self.txs.poll_timeout() {
            Some(t) if t <= limit => {
                assert!(
                    t >= self.now,
                    "deadline {t:?} in the past of {:?}",
                    self.now
                );
                self.now = t;
                self.txs.handle_timeout(t);
                self.drain();
                true
            }
            _ => false,
        }
    }

    /// Advances to `t`, firing every timer due on the way.
    fn run_until(&mut self, t: Duration) {
        while self.step(t) {}
        self.now = self.now.max(t);
    }

    /// Runs until no timer is armed (bounded, so a leak fails rather than hangs).
    fn run_to_end(&mut self) {
        for _ in 0..10_000 {
            if !self.step(Duration::MAX) {
                return;
            }
        }
        panic!("timers never settled");
    }

    fn send_request(&mut self, req: Request, transport: Transport) -> TransactionKey {
        let key = self
            .txs
            .send_request(self.now, peer(), transport, req)
            .unwrap();
        self.drain();
        key
    }

    fn receive(&mut self, msg: impl Into<SipMessage>, transport: Transport) {
        self.txs
            .handle_incoming(self.now, peer(), transport, msg.into())
            .unwrap();
        self.drain();
    }

    fn respond(&mut self, key: &TransactionKey, resp: Response) {
        self.txs.send_response(self.now, key, resp).unwrap();
        self.drain();
    }

    fn take_transmits(&mut self) -> Vec<(Duration, Transmit)> {
        std::mem::take(&mut self.transmits)
    }

    fn take_events(&mut self) -> Vec<(Duration, Event)> {
        std::mem::take(&mut self.events)
    }

    fn times(transmits: &[(Duration, Transmit)]) -> Vec<Duration> {
        transmits.iter().map(|(t, _)| *t).collect()
    }

    /// The key of the single server transaction the last incoming request created.
    fn new_server_key(&mut self) -> TransactionKey {
        let keys: Vec<_> = self
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Request { key, .. } | Event::Cancel { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        keys.last().cloned().expect("a new server transaction")
    }
}

fn is_terminated(e: &Event, k: &TransactionKey) -> bool {
    matches!(e, Event::Terminated { key } if key == k)
}

// ---------------------------------------------------------------------------------------------
// INVITE client (§17.1.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn invite_client_timer_a_doubles_and_timer_b_times_out_at_32s() {
    let mut sim = Sim::new();
    let key = sim.send_request(request("INVITE", "z9hG4bKa"), UDP);
    assert_eq!(key.role(), Role::Client);
    assert_eq!(sim.txs.state(&key), Some(State::Calling));
    sim.run_to_end();

    let transmits = sim.take_transmits();
    let expected: Vec<_> = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        .iter()
        .map(|s| secs(*s))
        .collect();
    assert_eq!(Sim::times(&transmits), expected);
    assert!(transmits
        .iter()
        .all(|(_, t)| method(t) == Some(Method::Invite) && t.destination == peer()));

    let events = sim.take_events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0],
        (
            TIMER_B,
            Event::Timeout {
                key: key.clone(),
                timer: TimeoutTimer::B
            }
        )
    );
    assert!(is_terminated(&events[1].1, &key));
    assert!(sim.txs.is_empty());
    assert_eq!(sim.txs.poll_timeout(), None);
}

#[test]
fn invite_client_provisional_stops_retransmissions() {
    let mut sim = Sim::new();
    let key = sim.send_request(request("INVITE", "z9hG4bKb"), UDP);
    sim.run_until(ms(700)); // one retransmission at 0.5 s
    sim.receive(response(180, "z9hG4bKb", "INVITE"), UDP);
    assert_eq!(sim.txs.state(&key), Some(State::Proceeding));
    assert!(
        matches!(&sim.events[0].1, Event::Response { key: k, response } if *k == key && response.status == 180)
    );
    // Proceeding arms no timer: nothing more is sent, and timer B no longer applies.
    assert_eq!(sim.txs.poll_timeout(), None);
    sim.run_until(secs(60.0));
    assert_eq!(Sim::times(&sim.transmits), vec![secs(0.0), secs(0.5)]);
    assert_eq!(sim.txs.state(&key), Some(State::Proceeding));

    // A 2xx ends it at once; the TU forwards the 2xx, the ACK is end-to-end.
    sim.receive(response(200, "z9hG4bKb", "INVITE"), UDP);
    assert!(sim.txs.is_empty());
    assert_eq!(sim.transmits.len(), 2, "no ACK for a 2xx");
}

#[test]
fn invite_client_non_2xx_final_acked_with_same_branch_and_to_tag_and_reacked() {
    let mut sim = Sim::new();
    let key = sim.send_request(request("INVITE", "z9hG4bKc"), UDP);
    sim.run_until(ms(100));
    sim.receive(response(486, "z9hG4bKc", "INVITE"), UDP);
    assert_eq!(sim.txs.state(&key), Some(State::Completed));

    let transmits = sim.take_transmits();
    assert_eq!(transmits.len(), 2);
    let SipMessage::Request(ack) = parse(&transmits[1].1) else {
        panic!("an ACK")
    };
    assert_eq!(ack.method.rsip(), Some(Method::Ack));
    assert_eq!(transmits[1].1.destination, peer());
    assert_eq!(ack.uri.to_string(), "sip:bob@example.com");
    assert_eq!(top_branch(&ack.headers), "z9hG4bKc");
    let to = NameAddr::parse(&header(&ack.headers, "To").unwrap()).unwrap();
    assert_eq!(to.tag(), Some("to1"));
    let (seq, cseq_method) = parse_cseq(&header(&ack.headers, "CSeq").unwrap()).unwrap();
    assert_eq!((seq, cseq_method.as_str()), (1, "ACK"));
    assert!(header(&ack.headers, "Route").is_some(), "Route set copied");
    assert!(ack.body.is_empty());

    // The TU sees the final once.
    let events = sim.take_events();
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0].1, Event::Response { response, .. } if response.status == 486));

    // A retransmitted final is absorbed and re-ACKed.
    sim.run_until(secs(2.0));
    sim.receive(response(486, "z9hG4bKc", "INVITE"), UDP);
    let transmits = sim.take_transmits();
    assert_eq!(
        transmits.len(),
        1,
        "only the ACK, no INVITE retransmissions"
    );
    assert_eq!(method(&transmits[0].1), Some(Method::Ack));
    assert!(sim.take_events().is_empty());

    // Timer D (32 s from the first final) cleans it up.
    sim.run_to_end();
    assert_eq!(sim.now, ms(100) + TIMER_D);
    assert!(is_terminated(&sim.events[0].1, &key));
    assert!(sim.txs.is_empty());
}

#[test]
fn invite_client_2xx_terminates_and_retransmitted_2xx_is_stray() {
    let mut sim = Sim::new();
    let key = sim.send_request(request("INVITE", "z9hG4bKd"), UDP);
    sim.receive(response(200, "z9hG4bKd", "INVITE"), UDP);
    let events = sim.take_events();
    assert!(matches!(&events[0].1, Event::Response { key: k, .. } if *k == key));
    assert!(is_terminated(&events[1].1, &key));
    assert!(sim.txs.is_empty());

    sim.receive(response(200, "z9hG4bKd", "INVITE"), UDP);
    let events = sim.take_events();
    assert!(
        matches!(&events[..], [(_, Event::StrayResponse { source, transport: Transport::Udp, response })]
        if *source == peer() && response.status == 200)
    );
}

#[test]
fn stray_response_is_reported_for_stateless_forwarding() {
    let mut sim = Sim::new();
    sim.receive(response(180, "z9hG4bKnobody", "INVITE"), UDP);
    assert!(matches!(
        &sim.events[..],
        [(_, Event::StrayResponse { .. })]
    ));
    // Same branch, other method: still no match (§17.1.3 matches the CSeq method too).
    let _ = sim.send_request(request("INVITE", "z9hG4bKe"), UDP);
    sim.take_events();
    sim.receive(response(200, "z9hG4bKe", "OPTIONS"), UDP);
    assert!(matches!(
        &sim.events[..],
        [(_, Event::StrayResponse { .. })]
    ));
    // The driver may forward it through the same queue.
    sim.txs
        .send_stateless(peer(), UDP, response(200, "z9hG4bKe", "OPTIONS").into());
    assert_eq!(status(&sim.txs.poll_transmit().unwrap()), Some(200));
}

// ---------------------------------------------------------------------------------------------
// Non-INVITE client (§17.1.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn non_invite_client_timer_e_caps_at_t2_and_timer_f_at_32s() {
    let mut sim = Sim::new();
    let key = sim.send_request(request("OPTIONS", "z9hG4bKf"), UDP);
    assert_eq!(sim.txs.state(&key), Some(State::Trying));
    sim.run_to_end();
    let expected: Vec<_> = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        .iter()
        .map(|s| secs(*s))
        .collect();
    assert_eq!(Sim::times(&sim.transmits), expected);
    assert_eq!(
        sim.events[0],
        (
            TIMER_F,
            Event::Timeout {
                key: key.clone(),
                timer: TimeoutTimer::F
            }
        )
    );
    assert!(is_terminated(&sim.events[1].1, &key));
    assert!(sim.txs.is_empty());
}

#[test]
fn non_invite_client_proceeding_retransmits_every_t2_then_timer_k() {
    let mut sim = Sim::new();
    let key = sim.send_request(request("REGISTER", "z9hG4bKg"), UDP);
    sim.run_until(ms(600)); // retransmission at 0.5; next due at 1.5
    sim.receive(response(100, "z9hG4bKg", "REGISTER"), UDP);
    assert_eq!(sim.txs.state(&key), Some(State::Proceeding));
    sim.run_until(secs(10.0));
    // The pending E fires at 1.5, then every T2.
    assert_eq!(
        Sim::times(&sim.transmits),
        vec![secs(0.0), secs(0.5), secs(1.5), secs(5.5), secs(9.5)]
    );
    sim.receive(response(200, "z9hG4bKg", "REGISTER"), UDP);
    assert_eq!(sim.txs.state(&key), Some(State::Completed));
    // Retransmitted finals are absorbed.
    sim.receive(response(200, "z9hG4bKg", "REGISTER"), UDP);
    let finals = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Response { response, .. } if response.status == 200))
        .count();
    assert_eq!(finals, 1);
    sim.run_to_end();
    assert_eq!(sim.now, secs(10.0) + T4, "timer K");
    assert_eq!(sim.transmits.len(), 5, "no retransmission in Completed");
    assert!(sim.txs.is_empty());
}

// ---------------------------------------------------------------------------------------------
// INVITE server (§17.2.1, RFC 6026)
// ---------------------------------------------------------------------------------------------

#[test]
fn invite_server_sends_100_trying_after_200ms_if_tu_silent() {
    let mut sim = Sim::new();
    sim.receive(request("INVITE", "z9hG4bKh"), UDP);
    let key = sim.new_server_key();
    assert_eq!(key.role(), Role::Server);
    assert_eq!(key.sent_by(), Some("192.0.2.1:5060"));
    assert!(sim.transmits.is_empty());
    assert_eq!(sim.txs.poll_timeout(), Some(ms(200)));
    sim.run_until(secs(1.0));
    assert_eq!(sim.transmits.len(), 1);
    assert_eq!(sim.transmits[0].0, ms(200));
    let SipMessage::Response(trying) = parse(&sim.transmits[0].1) else {
        panic!("a response")
    };
    assert_eq!(trying.status, 100);
    assert_eq!(sim.transmits[0].1.destination, peer());
    assert_eq!(top_branch(&trying.headers), "z9hG4bKh");
    // A retransmitted INVITE re-sends the last provisional; the TU hears nothing new.
    sim.take_events();
    sim.receive(request("INVITE", "z9hG4bKh"), UDP);
    assert_eq!(sim.transmits.len(), 2);
    assert_eq!(status(&sim.transmits[1].1), Some(100));
    assert!(sim.events.is_empty());
}

#[test]
fn invite_server_tu_provisional_suppresses_auto_trying_and_is_resent() {
    let mut sim = Sim::new();
    sim.receive(request("INVITE", "z9hG4bKi"), UDP);
    let key = sim.new_server_key();
    sim.run_until(ms(50));
    sim.respond(&key, response(180, "z9hG4bKi", "INVITE"));
    sim.run_until(secs(5.0));
    assert_eq!(sim.transmits.len(), 1, "no 100 after the TU's 180");
    sim.receive(request("INVITE", "z9hG4bKi"), UDP);
    sim.receive(request("INVITE", "z9hG4bKi"), UDP);
    let codes: Vec<_> = sim.transmits.iter().map(|(_, t)| status(t)).collect();
    assert_eq!(codes, vec![Some(180); 3]);
    let requests = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Request { .. }))
        .count();
    assert_eq!(requests, 1, "retransmissions absorbed");
}

#[test]
fn invite_server_retransmission_before_200ms_triggers_100_at_once() {
    let mut sim = Sim::new();
    sim.receive(request("INVITE", "z9hG4bKj"), UDP);
    sim.run_until(ms(100));
    sim.receive(request("INVITE", "z9hG4bKj"), UDP);
    assert_eq!(Sim::times(&sim.transmits), vec![ms(100)]);
    sim.run_until(secs(1.0));
    assert_eq!(sim.transmits.len(), 1, "the 100 is not sent twice");
}

#[test]
fn trying_policy_immediate_and_never() {
    let mut sim = Sim::with(Config {
        trying: TryingPolicy::Immediate,
        ..Config::default()
    });
    sim.receive(request("INVITE", "z9hG4bKk"), UDP);
    assert_eq!(Sim::times(&sim.transmits), vec![Duration::ZERO]);
    assert_eq!(status(&sim.transmits[0].1), Some(100));

    let mut sim = Sim::with(Config {
        trying: TryingPolicy::Never,
        ..Config::default()
    });
    sim.receive(request("INVITE", "z9hG4bKk"), UDP);
    sim.receive(request("INVITE", "z9hG4bKk"), UDP);
    sim.run_until(secs(10.0));
    assert!(sim.transmits.is_empty());
}

#[test]
fn invite_server_timer_g_retransmits_final_and_timer_h_times_out() {
    let mut sim = Sim::new();
    sim.receive(request("INVITE", "z9hG4bKl"), UDP);
    let key = sim.new_server_key();
    sim.run_until(ms(100));
    sim.respond(&key, response(486, "z9hG4bKl", "INVITE"));
    assert_eq!(sim.txs.state(&key), Some(State::Completed));
    sim.take_events();
    sim.run_to_end();
    let expected: Vec<_> = [0.1, 0.6, 1.6, 3.6, 7.6, 11.6, 15.6, 19.6, 23.6, 27.6, 31.6]
        .iter()
        .map(|s| secs(*s))
        .collect();
    let times = Sim::times(&sim.transmits);
    assert_eq!(times.len(), expected.len(), "{times:?}");
    for (got, want) in times.iter().zip(&expected) {
        assert!(got.abs_diff(*want) < ms(1), "{times:?}");
    }
    assert!(sim.transmits.iter().all(|(_, t)| status(t) == Some(486)));
    assert_eq!(
        sim.events[0],
        (
            ms(100) + TIMER_H,
            Event::Timeout {
                key: key.clone(),
                timer: TimeoutTimer::H
            }
        )
    );
    assert!(is_terminated(&sim.events[1].1, &key));
    assert!(sim.txs.is_empty());
}

#[test]
fn invite_server_ack_for_non_2xx_absorbed_confirmed_then_timer_i() {
    let mut sim = Sim::new();
    sim.receive(request("INVITE", "z9hG4bKm"), UDP);
    let key = sim.new_server_key();
    sim.respond(&key, response(486, "z9hG4bKm", "INVITE"));
    sim.run_until(secs(1.0)); // one G retransmission at 0.5
    sim.take_events();
    sim.receive(ack("z9hG4bKm"), UDP);
    assert_eq!(sim.txs.state(&key), Some(State::Confirmed));
    assert!(sim.events.is_empty(), "the ACK is absorbed");
    // Retransmitted ACKs and INVITEs are absorbed in Confirmed.
    sim.receive(ack("z9hG4bKm"), UDP);
    sim.receive(request("INVITE", "z9hG4bKm"), UDP);
    assert!(sim.events.is_empty());
    sim.run_to_end();
    assert_eq!(sim.now, secs(1.0) + T4, "timer I");
    assert_eq!(sim.transmits.len(), 2, "486 and one retransmission");
    assert!(matches!(&sim.events[..], [(_, Event::Terminated { .. })]));
    assert!(sim.txs.is_empty());
}

#[test]
fn invite_server_2xx_accepted_absorbs_retransmissions_rfc6026() {
    let mut sim = Sim::new();
    sim.receive(request("INVITE", "z9hG4bKn"), UDP);
    let key = sim.new_server_key();
    sim.respond(&key, response(200, "z9hG4bKn", "INVITE"));
    assert_eq!(sim.txs.state(&key), Some(State::Accepted));
    sim.take_events();
    // The INVITE retransmission is absorbed (no second Request, no 2xx retransmission).
    sim.receive(request("INVITE", "z9hG4bKn"), UDP);
    assert!(sim.events.is_empty());
    assert_eq!(sim.transmits.len(), 1);
    // The TU's own 2xx retransmission goes out; a non-2xx is refused.
    sim.respond(&key, response(200, "z9hG4bKn", "INVITE"));
    assert_eq!(sim.transmits.len(), 2);
    assert!(matches!(
        sim.txs
            .send_response(sim.now, &key, response(486, "z9hG4bKn", "INVITE")),
        Err(Error::InvalidState {
            state: State::Accepted,
            status: 486,
            ..
        })
    ));
    // The 2xx ACK has its own branch: no match, handed to the TU to forward.
    sim.receive(ack("z9hG4bKother"), UDP);
    assert!(matches!(
        &sim.events[..],
        [(_, Event::Ack { key: None, .. })]
    ));
    sim.take_events();
    // An ACK reusing the INVITE's branch matches Accepted and goes to the TU too.
    sim.receive(ack("z9hG4bKn"), UDP);
    assert!(matches!(&sim.events[..], [(_, Event::Ack { key: Some(k), .. })] if *k == key));
    sim.take_events();
    sim.run_to_end();
    assert_eq!(sim.now, TIMER_L);
    assert!(matches!(&sim.events[..], [(_, Event::Terminated { .. })]));
    assert!(sim.txs.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Non-INVITE server (§17.2.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn non_invite_server_resends_last_response_then_timer_j() {
    let mut sim = Sim::new();
    sim.receive(request("OPTIONS", "z9hG4bKo"), UDP);
    let key = sim.new_server_key();
    assert_eq!(sim.txs.state(&key), Some(State::Trying));
    // Trying absorbs retransmissions silently.
    sim.receive(request("OPTIONS", "z9hG4bKo"), UDP);
    assert!(sim.transmits.is_empty());
    sim.respond(&key, response(100, "z9hG4bKo", "OPTIONS"));
    sim.receive(request("OPTIONS", "z9hG4bKo"), UDP);
    sim.run_until(secs(1.0));
    sim.respond(&key, response(200, "z9hG4bKo", "OPTIONS"));
    sim.receive(request("OPTIONS", "z9hG4bKo"), UDP);
    let codes: Vec<_> = sim.transmits.iter().map(|(_, t)| status(t)).collect();
    assert_eq!(codes, vec![Some(100), Some(100), Some(200), Some(200)]);
    assert!(sim
        .txs
        .send_response(sim.now, &key, response(500, "z9hG4bKo", "OPTIONS"))
        .is_err());
    sim.run_to_end();
    assert_eq!(sim.now, secs(1.0) + Duration::from_secs(32), "timer J");
    assert!(sim.txs.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Reliable transports
// ---------------------------------------------------------------------------------------------

#[test]
fn reliable_transport_never_retransmits_and_zero_timers_terminate_at_once() {
    let mut sim = Sim::new();
    // INVITE client: no timer A, timer B still applies.
    let invite = sim.send_request(request_on("INVITE", "z9hG4bKp1", "TCP"), TCP);
    // Non-INVITE client: no timer E; K = 0.
    let options = sim.send_request(request_on("OPTIONS", "z9hG4bKp2", "TCP"), TCP);
    sim.receive(response(200, "z9hG4bKp2", "OPTIONS"), TCP);
    assert_eq!(sim.txs.state(&options), None, "K = 0: gone at once");
    // INVITE client non-2xx: D = 0.
    let invite2 = sim.send_request(request_on("INVITE", "z9hG4bKp3", "TCP"), TCP);
    sim.receive(response(486, "z9hG4bKp3", "INVITE"), TCP);
    assert_eq!(sim.txs.state(&invite2), None, "D = 0: gone at once");
    // INVITE server non-2xx: no timer G; I = 0.
    sim.receive(request_on("INVITE", "z9hG4bKp4", "TCP"), TCP);
    let server = sim.new_server_key();
    sim.respond(&server, response(486, "z9hG4bKp4", "INVITE"));
    sim.run_until(secs(10.0));
    sim.receive(ack("z9hG4bKp4"), TCP);
    assert_eq!(sim.txs.state(&server), None, "I = 0: gone at once");
    // Non-INVITE server: J = 0.
    sim.receive(request_on("BYE", "z9hG4bKp5", "TCP"), TCP);
    let bye = sim.new_server_key();
    sim.respond(&bye, response(200, "z9hG4bKp5", "BYE"));
    assert_eq!(sim.txs.state(&bye), None, "J = 0: gone at once");

    sim.run_to_end();
    // Every message went out once: INVITE, OPTIONS, INVITE, ACK, 486, 200 (the TU answered
    // before the 100 Trying delay).
    let transmits = sim.take_transmits();
    assert_eq!(transmits.len(), 6, "{:?}", Sim::times(&transmits));
    assert!(transmits.iter().all(|(_, t)| t.transport == TCP));
    assert!(sim.events.iter().any(|(t, e)| *t == TIMER_B
        && matches!(e, Event::Timeout { key, timer: TimeoutTimer::B } if *key == invite)));
    assert!(sim.txs.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Matching (§17.1.3, §17.2.3) and CANCEL
// ---------------------------------------------------------------------------------------------

#[test]
fn cancel_is_its_own_server_transaction_and_names_the_invite() {
    let mut sim = Sim::new();
    sim.receive(request("INVITE", "z9hG4bKq"), UDP);
    let invite = sim.new_server_key();
    sim.receive(request("CANCEL", "z9hG4bKq"), UDP);
    let cancel = sim.new_server_key();
    assert_ne!(cancel, invite);
    assert_eq!(cancel.method().as_str(), "CANCEL");
    assert_eq!(cancel.branch(), invite.branch());
    assert!(
        matches!(sim.events.last(), Some((_, Event::Cancel { invite: Some(k), .. })) if *k == invite)
    );
    assert_eq!(sim.txs.len(), 2);

    sim.respond(&cancel, response(200, "z9hG4bKq", "CANCEL"));
    sim.respond(&invite, response(487, "z9hG4bKq", "INVITE"));
    sim.receive(ack("z9hG4bKq"), UDP);
    assert_eq!(sim.txs.state(&invite), Some(State::Confirmed));

    // A CANCEL for nothing: the TU answers 481.
    sim.receive(request("CANCEL", "z9hG4bKunknown"), UDP);
    assert!(matches!(
        sim.events.last(),
        Some((_, Event::Cancel { invite: None, .. }))
    ));
    let lone = sim.new_server_key();
    sim.respond(&lone, response(481, "z9hG4bKunknown", "CANCEL"));

    sim.run_to_end();
    assert!(sim.txs.is_empty());
}

#[test]
fn client_cancel_and_invite_share_a_branch_but_not_a_key() {
    let mut sim = Sim::new();
    let invite = sim.send_request(request("INVITE", "z9hG4bKr"), UDP);
    sim.receive(response(180, "z9hG4bKr", "INVITE"), UDP);
    let cancel = sim.send_request(request("CANCEL", "z9hG4bKr"), UDP);
    assert_ne!(invite, cancel);
    sim.take_events();
    sim.receive(response(200, "z9hG4bKr", "CANCEL"), UDP);
    assert!(matches!(&sim.events[0].1, Event::Response { key, .. } if *key == cancel));
    sim.receive(response(487, "z9hG4bKr", "INVITE"), UDP);
    assert!(sim
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::Response { key, .. } if *key == invite)));
    sim.run_to_end();
    assert!(sim.txs.is_empty());
}

#[test]
fn same_branch_from_another_sent_by_is_another_server_transaction() {
    let mut sim = Sim::new();
    sim.receive(request("OPTIONS", "z9hG4bKs"), UDP);
    let other = request_text("OPTIONS", "z9hG4bKs", "OPTIONS", "UDP")
        .replace("192.0.2.1:5060", "198.51.100.7:5060");
    sim.receive(request_from(&other), UDP);
    let requests = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Request { .. }))
        .count();
    assert_eq!(requests, 2);
    assert_eq!(sim.txs.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Errors, transport errors, memory
// ---------------------------------------------------------------------------------------------

#[test]
fn rfc2543_and_misuse_are_typed_errors() {
    let mut txs = Transactions::default();
    let old = request("INVITE", "1234");
    assert_eq!(
        txs.handle_incoming(Duration::ZERO, peer(), UDP, old.clone().into()),
        Err(Error::Rfc2543("1234".into()))
    );
    assert_eq!(
        txs.send_request(Duration::ZERO, peer(), UDP, old),
        Err(Error::Rfc2543("1234".into()))
    );
    assert_eq!(
        txs.send_request(Duration::ZERO, peer(), UDP, ack("z9hG4bKt")),
        Err(Error::AckTransaction)
    );
    // The message layer refuses to parse this; a TU could still build it.
    let mut mismatched = request("OPTIONS", "z9hG4bKt");
    mismatched.method = sluice_sip::message::Method::new("INVITE").unwrap();
    assert!(matches!(
        txs.handle_incoming(Duration::ZERO, peer(), UDP, mismatched.into()),
        Err(Error::CSeqMethodMismatch { .. })
    ));
    let key = txs
        .send_request(Duration::ZERO, peer(), UDP, request("INVITE", "z9hG4bKt"))
        .unwrap();
    assert!(matches!(
        txs.send_request(Duration::ZERO, peer(), UDP, request("INVITE", "z9hG4bKt")),
        Err(Error::DuplicateTransaction(_))
    ));
    assert!(matches!(
        txs.send_response(Duration::ZERO, &key, response(200, "z9hG4bKt", "INVITE")),
        Err(Error::NotServer(_))
    ));
    let mut no_via = request("OPTIONS", "z9hG4bKu");
    no_via
        .headers
        .retain(|h| !matches!(h, rsip::Header::Via(_)));
    assert_eq!(
        txs.handle_incoming(Duration::ZERO, peer(), UDP, no_via.into()),
        Err(Error::MissingHeader("Via"))
    );
    assert_eq!(txs.len(), 1);
}

#[test]
fn transport_error_informs_tu_and_terminates() {
    let mut sim = Sim::new();
    let key = sim.send_request(request("INVITE", "z9hG4bKv"), UDP);
    sim.txs.handle_transport_error(sim.now, &key).unwrap();
    sim.drain();
    assert!(matches!(&sim.events[0].1, Event::TransportError { key: k } if *k == key));
    assert!(is_terminated(&sim.events[1].1, &key));
    assert!(sim.txs.is_empty());
    assert_eq!(sim.txs.poll_timeout(), None);
    assert!(matches!(
        sim.txs.handle_transport_error(sim.now, &key),
        Err(Error::UnknownTransaction(_))
    ));
}

#[test]
fn tu_terminates_a_proceeding_invite_and_later_responses_are_stray() {
    let mut sim = Sim::new();
    let key = sim.send_request(request("INVITE", "z9hG4bKgiveup"), UDP);
    sim.receive(response(180, "z9hG4bKgiveup", "INVITE"), UDP);
    sim.take_events();
    sim.take_transmits();
    sim.txs.terminate(&key).unwrap();
    sim.drain();
    let events = sim.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(is_terminated(&events[0].1, &key));
    assert!(sim.txs.is_empty());
    sim.receive(response(487, "z9hG4bKgiveup", "INVITE"), UDP);
    assert!(matches!(
        &sim.take_events()[..],
        [(_, Event::StrayResponse { .. })]
    ));
    assert!(
        sim.take_transmits().is_empty(),
        "no ACK without a transaction"
    );
    assert!(matches!(
        sim.txs.terminate(&key),
        Err(Error::UnknownTransaction(_))
    ));
}

#[test]
fn many_transactions_all_removed_at_the_end() {
    let mut sim = Sim::new();
    for i in 0..50 {
        let b = format!("z9hG4bKmany{i}");
        match i % 5 {
            0 => {
                sim.send_request(request("INVITE", &b), UDP);
            }
            1 => {
                sim.send_request(request("OPTIONS", &b), UDP);
                sim.receive(response(200, &b, "OPTIONS"), UDP);
            }
            2 => {
                sim.receive(request("INVITE", &b), UDP);
                let k = sim.new_server_key();
                sim.respond(&k, response(486, &b, "INVITE"));
            }
            3 => {
                sim.receive(request("INVITE", &b), UDP);
                let k = sim.new_server_key();
                sim.respond(&k, response(200, &b, "INVITE"));
            }
            _ => {
                sim.receive(request("MESSAGE", &b), UDP);
                let k = sim.new_server_key();
                sim.respond(&k, response(200, &b, "MESSAGE"));
            }
        }
        sim.run_until(sim.now + ms(37));
    }
    assert_eq!(sim.txs.len(), 50);
    sim.run_to_end();
    assert!(sim.txs.is_empty());
    assert_eq!(sim.txs.poll_timeout(), None);
    let terminated = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Terminated { .. }))
        .count();
    assert_eq!(terminated, 50);
    // Virtual time: the whole run took no wall-clock sleeping, and ended within 64·T1 + T4.
    assert!(sim.now < Duration::from_secs(60));
}
