//! The configuration, and the sender's retries, failover, backoff and catching up, against
//! scripted servers on a fake clock.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::io;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use super::attributes::{types, AcctRecord, RecordKind};
use super::packet::{self, AttrType};
use super::sender::{backoff, Clock, Delivery, Link, Pass, Sender};
use super::*;
use crate::cdr::{
    CallInfo, Cdr, CdrStore, DirectionCounters, MediaCounters, Party, SqliteCdrStore,
    TerminationCause,
};

// ---------------------------------------------------------------- configuration

fn section(toml_text: &str) -> RadiusSection {
    toml::from_str(toml_text).expect("valid TOML")
}

#[test]
fn no_section_and_no_option_is_no_radius() {
    assert_eq!(settings(None, &RadiusArgs::default(), None), Ok(None));
    // A secret alone is a mistake, not a silent no.
    let err = settings(
        None,
        &RadiusArgs {
            radius_secret_file: Some("/nonexistent".into()),
            ..RadiusArgs::default()
        },
        None,
    )
    .unwrap_err();
    assert_eq!(err.field, "servers");
}

#[test]
fn a_full_section() {
    let s = settings(
        Some(&section(
            r#"
            servers = ["127.0.0.1:1813", "[::1]:11813", "127.0.0.2"]
            secret = "testing123"
            nas_identifier = "sbc-1"
            nas_ip = "192.0.2.1"
            timeout_ms = 250
            retries = 3
            queue_limit = 10
            interim_interval = 60
            vendor_id = 99
            "#,
        )),
        &RadiusArgs::default(),
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        s.servers,
        [
            "127.0.0.1:1813".parse().unwrap(),
            "[::1]:11813".parse().unwrap(),
            "127.0.0.2:1813".parse().unwrap()
        ]
    );
    assert_eq!(s.secret, Secret(b"testing123".to_vec()));
    assert_eq!(s.nas_identifier.as_deref(), Some("sbc-1"));
    assert_eq!(s.nas_ip, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(s.timeout, Duration::from_millis(250));
    assert_eq!(s.retries, 3);
    assert_eq!(s.queue_limit, 10);
    assert_eq!(s.interim, Some(Duration::from_secs(60)));
    assert_eq!(s.vendor_id, 99);
    let shown = format!("{s:?}");
    assert!(!shown.contains("testing123"), "{shown}");
}

#[test]
fn defaults() {
    let s = settings(
        Some(&section("servers = [\"127.0.0.1\"]\nsecret = \"x\"")),
        &RadiusArgs::default(),
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(s.timeout, DEFAULT_TIMEOUT);
    assert_eq!(s.retries, DEFAULT_RETRIES);
    assert_eq!(s.queue_limit, DEFAULT_QUEUE_LIMIT);
    assert_eq!(s.interim, None);
    assert_eq!(s.vendor_id, 32473);
    assert_eq!(s.nas_identifier, None);
}

#[test]
fn the_secret_comes_from_the_option_then_the_environment_then_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let flag_file = dir.path().join("flag.secret");
    let toml_file = dir.path().join("toml.secret");
    std::fs::write(&flag_file, "from-flag\n").unwrap();
    std::fs::write(&toml_file, "from-toml\r\n").unwrap();
    let file = section(&format!(
        "servers = [\"127.0.0.1\"]\nsecret_file = \"{}\"",
        toml_file.display()
    ));
    let secret = |args: &RadiusArgs, env: Option<&str>| {
        settings(Some(&file), args, env.map(OsString::from))
            .unwrap()
            .unwrap()
            .secret
    };
    let flag = RadiusArgs {
        radius_secret_file: Some(flag_file.clone()),
        ..RadiusArgs::default()
    };
    assert_eq!(
        secret(&flag, Some("from-env")),
        Secret(b"from-flag".to_vec())
    );
    assert_eq!(
        secret(&RadiusArgs::default(), Some("from-env")),
        Secret(b"from-env".to_vec())
    );
    assert_eq!(
        secret(&RadiusArgs::default(), None),
        Secret(b"from-toml".to_vec())
    );
    // --radius alone (no section) with the environment's secret.
    let only_flags = RadiusArgs {
        servers: vec!["127.0.0.1:18130".into()],
        radius_secret_file: None,
    };
    let s = settings(None, &only_flags, Some("e".into()))
        .unwrap()
        .unwrap();
    assert_eq!(s.servers, ["127.0.0.1:18130".parse().unwrap()]);
}

#[test]
fn bad_settings_name_the_field() {
    let err = |text: &str| {
        settings(Some(&section(text)), &RadiusArgs::default(), None)
            .unwrap_err()
            .to_string()
    };
    let cases = [
        ("secret = \"x\"", "radius.servers: no server"),
        (
            "servers = [\"a b\"]\nsecret = \"x\"",
            "radius.servers: `a b` is not HOST[:PORT]",
        ),
        (
            "servers = [\"127.0.0.1:99999\"]\nsecret = \"x\"",
            "radius.servers:",
        ),
        (
            "servers = [\"127.0.0.1\"]",
            "radius.secret: no shared secret",
        ),
        (
            "servers = [\"127.0.0.1\"]\nsecret = \"\"",
            "radius.secret: the shared secret is empty",
        ),
        (
            "servers = [\"127.0.0.1\"]\nsecret = \"x\"\nsecret_file = \"/x\"",
            "radius.secret: give secret or secret_file",
        ),
        (
            "servers = [\"127.0.0.1\"]\nsecret_file = \"/nonexistent/secret\"",
            "radius.secret_file: reading /nonexistent/secret",
        ),
        (
            "servers = [\"127.0.0.1\"]\nsecret = \"x\"\ntimeout_ms = 0",
            "radius.timeout_ms",
        ),
        (
            "servers = [\"127.0.0.1\"]\nsecret = \"x\"\nretries = 6",
            "radius.retries: at most 5",
        ),
        (
            "servers = [\"127.0.0.1\"]\nsecret = \"x\"\nqueue_limit = 0",
            "radius.queue_limit",
        ),
        (
            "servers = [\"127.0.0.1\"]\nsecret = \"x\"\nvendor_id = 0",
            "radius.vendor_id",
        ),
        (
            "servers = [\"127.0.0.1\"]\nsecret = \"x\"\nnas_identifier = \"\"",
            "radius.nas_identifier",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(got.starts_with(want), "{text:?}: {got}");
    }
}

#[test]
fn server_specs() {
    let ok = |s: &str| parse_server(s).unwrap().to_string();
    assert_eq!(ok("127.0.0.1:1812"), "127.0.0.1:1812");
    assert_eq!(ok("127.0.0.1"), "127.0.0.1:1813");
    assert_eq!(ok("::1"), "[::1]:1813");
    assert_eq!(ok("[::1]"), "[::1]:1813");
    assert_eq!(ok("[::1]:99"), "[::1]:99");
    assert_eq!(ok("localhost:1999").rsplit(':').next(), Some("1999"));
    for bad in ["", "host:port", "a:b:c", "[::1", "x/y"] {
        assert!(parse_server(bad).is_err(), "{bad:?}");
    }
}

// ---------------------------------------------------------------- the sender

/// Time that moves only when a scripted server is waited for.
#[derive(Clone)]
struct FakeClock {
    wall: SystemTime,
    base: Instant,
    elapsed: Rc<Cell<Duration>>,
}

impl FakeClock {
    fn new() -> Self {
        Self {
            wall: UNIX_EPOCH + Duration::from_secs(1_717_000_000),
            base: Instant::now(),
            elapsed: Rc::new(Cell::new(Duration::ZERO)),
        }
    }

    fn advance_to(&self, at: Instant) {
        let to = at.saturating_duration_since(self.base);
        if to > self.elapsed.get() {
            self.elapsed.set(to);
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.wall + self.elapsed.get()
    }
    fn instant(&self) -> Instant {
        self.base + self.elapsed.get()
    }
}

/// How a scripted server behaves.
#[derive(Clone, Default)]
struct Script {
    /// Answers, signing with this secret.
    answers_with: Option<Vec<u8>>,
    /// Refuses every datagram (ICMP port unreachable).
    refuses: bool,
    /// Loses this many requests before answering.
    loses: usize,
    /// Answers only this many requests, then none.
    answers_left: Option<usize>,
}

/// A request as a server saw it.
struct Seen {
    server: usize,
    at: Duration,
    packet: Vec<u8>,
}

impl Seen {
    fn value(&self, kind: u8) -> Vec<u8> {
        packet::attributes(&self.packet)
            .unwrap()
            .into_iter()
            .find(|(k, _)| *k == AttrType::Standard(kind))
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    fn int(&self, kind: u8) -> u32 {
        u32::from_be_bytes(self.value(kind).try_into().unwrap())
    }

    fn text(&self, kind: u8) -> String {
        String::from_utf8(self.value(kind)).unwrap()
    }
}

#[derive(Clone)]
struct FakeLink {
    clock: FakeClock,
    scripts: Rc<RefCell<Vec<Script>>>,
    answers: Rc<RefCell<Vec<VecDeque<Vec<u8>>>>>,
    seen: Rc<RefCell<Vec<Seen>>>,
}

impl FakeLink {
    fn new(clock: &FakeClock, scripts: Vec<Script>) -> Self {
        let n = scripts.len();
        Self {
            clock: clock.clone(),
            scripts: Rc::new(RefCell::new(scripts)),
            answers: Rc::new(RefCell::new(vec![VecDeque::new(); n])),
            seen: Rc::new(RefCell::new(Vec::new())),
        }
    }

    fn set(&self, server: usize, script: Script) {
        self.scripts.borrow_mut()[server] = script;
    }
}

fn answer(request: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut out = vec![packet::ACCOUNTING_RESPONSE, request[1], 0, 20];
    let mut md5 = Md5::new();
    md5.update(&out);
    md5.update(&request[4..20]);
    md5.update(secret);
    out.extend_from_slice(&md5.finalize());
    out
}

impl Link for FakeLink {
    fn send(&mut self, server: usize, packet: &[u8]) -> io::Result<()> {
        let mut scripts = self.scripts.borrow_mut();
        let script = &mut scripts[server];
        if script.refuses {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        self.seen.borrow_mut().push(Seen {
            server,
            at: self.clock.elapsed.get(),
            packet: packet.to_vec(),
        });
        if script.loses > 0 {
            script.loses -= 1;
        } else if script.answers_left == Some(0) {
        } else if let Some(secret) = &script.answers_with {
            if let Some(left) = &mut script.answers_left {
                *left -= 1;
            }
            self.answers.borrow_mut()[server].push_back(answer(packet, secret));
        }
        Ok(())
    }

    fn recv(&mut self, server: usize, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        if let Some(a) = self.answers.borrow_mut()[server].pop_front() {
            return Ok(Some(a));
        }
        self.clock.advance_to(deadline);
        Ok(None)
    }

    fn source(&self, _server: usize) -> Option<IpAddr> {
        Some("127.0.0.1".parse().unwrap())
    }
}

const SECRET: &[u8] = b"testing123";

fn up() -> Script {
    Script {
        answers_with: Some(SECRET.to_vec()),
        ..Script::default()
    }
}

fn silent() -> Script {
    Script::default()
}

fn config(servers: usize) -> SenderConfig {
    SenderConfig {
        servers: (0..servers)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1813 + i as u16)))
            .collect(),
        secret: SECRET.to_vec(),
        nas: Nas {
            identifier: "sbc-1".into(),
            ip: None,
            vendor: DEFAULT_VENDOR_ID,
        },
        timeout: Duration::from_secs(1),
        retries: 2,
    }
}

fn call(n: u32) -> CallInfo {
    CallInfo {
        call_id: format!("call-{n}@10.0.0.1"),
        from_uri: format!("sip:caller{n}@example.net"),
        to_uri: "sip:callee@example.com".into(),
        from_tag: format!("ft{n}"),
        to_tag: Some(format!("tt{n}")),
        source_ip: "192.0.2.10".parse().unwrap(),
        billing_party: None,
        user_agents: None,
        canonical_uri: "sip:callee@198.51.100.7".into(),
        sip_method: "INVITE".into(),
        gateway: None,
        carrier: None,
        node: "sluice-1".into(),
    }
}

fn start_record(seq: i64, n: u32, clock: &FakeClock) -> AcctRecord {
    AcctRecord {
        seq,
        kind: RecordKind::Start,
        call: call(n),
        sip_response_code: 200,
        start: Some(clock.now()),
        event: clock.now(),
        cause: None,
        counters: MediaCounters::default(),
    }
}

#[test]
fn a_batch_goes_to_the_first_server_once() {
    let clock = FakeClock::new();
    let link = FakeLink::new(&clock, vec![up(), up()]);
    let mut delivery = Delivery::new(config(2), link.clone(), clock.clone());
    let batch: Vec<_> = (1..=3).map(|n| start_record(n.into(), n, &clock)).collect();
    let out = delivery.deliver(&batch);
    assert_eq!(out.acked, [1, 2, 3]);
    assert!(out.unsendable.is_empty());
    let seen = link.seen.borrow();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.server == 0));
    let ids: HashSet<u8> = seen.iter().map(|s| s.packet[1]).collect();
    assert_eq!(ids.len(), 3, "one identifier per request in flight");
    assert_eq!(seen[0].int(types::ACCT_STATUS_TYPE), 1);
    assert_eq!(seen[0].text(types::ACCT_SESSION_ID), "call-1@10.0.0.1");
    assert_eq!(seen[0].text(types::NAS_IDENTIFIER), "sbc-1");
    assert_eq!(seen[0].value(types::NAS_IP_ADDRESS), [127, 0, 0, 1]);
    assert_eq!(clock.elapsed.get(), Duration::ZERO, "no waiting");
}

#[test]
fn silence_is_retried_with_doubling_timeouts_then_the_next_server_takes_over() {
    let clock = FakeClock::new();
    let link = FakeLink::new(&clock, vec![silent(), up()]);
    let mut delivery = Delivery::new(config(2), link.clone(), clock.clone());
    let batch = [start_record(7, 1, &clock)];
    let out = delivery.deliver(&batch);
    assert_eq!(out.acked, [7]);
    // 1 s, 2 s, 4 s on the silent server, then the other one answers at once.
    assert_eq!(clock.elapsed.get(), Duration::from_secs(7));
    {
        let seen = link.seen.borrow();
        let first: Vec<_> = seen.iter().filter(|s| s.server == 0).collect();
        assert_eq!(
            first.iter().map(|s| s.at.as_secs()).collect::<Vec<_>>(),
            [0, 1, 3]
        );
        // Each retransmission says how long the record has waited, so it is a new request
        // with a new identifier (RFC 5080 §2.2.1).
        assert_eq!(
            first
                .iter()
                .map(|s| s.int(types::ACCT_DELAY_TIME))
                .collect::<Vec<_>>(),
            [0, 1, 3]
        );
        let ids: HashSet<u8> = first.iter().map(|s| s.packet[1]).collect();
        assert_eq!(ids.len(), 3);
        let second: Vec<_> = seen.iter().filter(|s| s.server == 1).collect();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].int(types::ACCT_DELAY_TIME), 7);
    }
    // The server that answered is tried first from now on.
    assert_eq!(delivery.current(), config(2).servers[1]);
    link.seen.borrow_mut().clear();
    delivery.deliver(&[start_record(8, 2, &clock)]);
    assert!(link.seen.borrow().iter().all(|s| s.server == 1));
}

#[test]
fn a_refusing_server_is_left_without_waiting() {
    let clock = FakeClock::new();
    let link = FakeLink::new(
        &clock,
        vec![
            Script {
                refuses: true,
                ..Script::default()
            },
            up(),
        ],
    );
    let mut delivery = Delivery::new(config(2), link.clone(), clock.clone());
    let out = delivery.deliver(&[start_record(1, 1, &clock)]);
    assert_eq!(out.acked, [1]);
    assert_eq!(clock.elapsed.get(), Duration::ZERO);
}

#[test]
fn answers_signed_with_another_secret_acknowledge_nothing() {
    let clock = FakeClock::new();
    let link = FakeLink::new(
        &clock,
        vec![Script {
            answers_with: Some(b"not-the-secret".to_vec()),
            ..Script::default()
        }],
    );
    let mut delivery = Delivery::new(config(1), link.clone(), clock.clone());
    let out = delivery.deliver(&[start_record(1, 1, &clock)]);
    assert!(out.acked.is_empty());
    assert_eq!(link.seen.borrow().len(), 3, "every try was made");
}

#[test]
fn a_lost_request_is_retransmitted() {
    let clock = FakeClock::new();
    let link = FakeLink::new(&clock, vec![Script { loses: 1, ..up() }]);
    let mut delivery = Delivery::new(config(1), link.clone(), clock.clone());
    let out = delivery.deliver(&[start_record(1, 1, &clock), start_record(2, 2, &clock)]);
    assert_eq!(out.acked, [2, 1]);
    let seen = link.seen.borrow();
    // Both sent, the first lost; only it goes again, after the first timeout.
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].text(types::ACCT_SESSION_ID), "call-1@10.0.0.1");
    assert_eq!(seen[2].at, Duration::from_secs(1));
}

#[test]
fn backoff_doubles_to_a_minute() {
    let waits: Vec<u64> = (1..=9).map(|f| backoff(f).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(backoff(1000), Duration::from_secs(60));
}

fn counters(k: u64) -> MediaCounters {
    MediaCounters {
        from_caller: DirectionCounters {
            packets: 50 * k,
            bytes: 8600 * k,
        },
        from_callee: DirectionCounters {
            packets: 49 * k,
            bytes: 8428 * k,
        },
    }
}

#[test]
fn the_outbox_waits_out_an_outage_and_catches_up_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdr.sqlite");
    let mut store = SqliteCdrStore::open(&path).unwrap();
    let outbox = Outbox::open(&path, 1000, None).unwrap();
    let clock = FakeClock::new();
    let link = FakeLink::new(&clock, vec![silent()]);
    let mut sender = Sender::new(
        outbox,
        Delivery::new(config(1), link.clone(), clock.clone()),
    );
    let answered = clock.now() - Duration::from_secs(60);
    for n in 1..=3 {
        store.begin(&call(n), answered).unwrap();
        store
            .finish(&Cdr {
                call: call(n),
                sip_response_code: 200,
                start: Some(answered),
                stop: answered + Duration::from_secs(30),
                cause: TerminationCause::Bye { by: Party::Callee },
                counters: counters(n.into()),
            })
            .unwrap();
    }
    let never = || false;
    assert_eq!(sender.pass(&never), Pass::Failed(Duration::from_secs(1)));
    assert_eq!(sender.pass(&never), Pass::Failed(Duration::from_secs(2)));
    assert_eq!(sender.outbox.len().unwrap(), 6, "nothing lost");
    link.seen.borrow_mut().clear();
    link.set(0, up());
    assert_eq!(sender.pass(&never), Pass::Empty);
    assert_eq!(sender.outbox.len().unwrap(), 0);
    let seen = link.seen.borrow();
    let order: Vec<(String, u32)> = seen
        .iter()
        .map(|s| {
            (
                s.text(types::ACCT_SESSION_ID),
                s.int(types::ACCT_STATUS_TYPE),
            )
        })
        .collect();
    // Each call's Start is acknowledged before its Stop is sent.
    for n in 1..=3 {
        let id = call(n).call_id;
        let start = order.iter().position(|o| *o == (id.clone(), 1)).unwrap();
        let stop = order.iter().position(|o| *o == (id.clone(), 2)).unwrap();
        assert!(start < stop, "{order:?}");
    }
    assert_eq!(order.len(), 6, "each record once: {order:?}");
    let stop = seen
        .iter()
        .find(|s| s.int(types::ACCT_STATUS_TYPE) == 2)
        .unwrap();
    assert_eq!(stop.int(types::ACCT_SESSION_TIME), 30);
    assert_eq!(stop.int(types::ACCT_INPUT_OCTETS), 8600);
    assert_eq!(stop.int(types::ACCT_OUTPUT_PACKETS), 49);
    assert_eq!(stop.int(types::ACCT_TERMINATE_CAUSE), 1);
    // The call ended 30 s before the first pass; the fake clock moved only while waiting for
    // answers (1 + 2 + 4 s in each failed pass).
    assert_eq!(clock.elapsed.get(), Duration::from_secs(14));
    assert_eq!(stop.int(types::ACCT_DELAY_TIME), 30 + 14);
}

#[test]
fn a_stop_request_ends_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdr.sqlite");
    let mut store = SqliteCdrStore::open(&path).unwrap();
    let outbox = Outbox::open(&path, 1000, None).unwrap();
    let clock = FakeClock::new();
    let link = FakeLink::new(&clock, vec![up()]);
    let mut sender = Sender::new(
        outbox,
        Delivery::new(config(1), link.clone(), clock.clone()),
    );
    store.begin(&call(1), clock.now()).unwrap();
    assert_eq!(sender.pass(&|| true), Pass::Stopped);
    assert!(link.seen.borrow().is_empty());
}

#[test]
fn records_the_bound_dropped_are_counted_and_the_rest_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdr.sqlite");
    let mut store = SqliteCdrStore::open(&path).unwrap();
    let outbox = Outbox::open(&path, 3, None).unwrap();
    let clock = FakeClock::new();
    let link = FakeLink::new(&clock, vec![silent()]);
    let mut sender = Sender::new(
        outbox,
        Delivery::new(config(1), link.clone(), clock.clone()),
    );
    let never = || false;
    store.begin(&call(1), clock.now()).unwrap();
    assert!(matches!(sender.pass(&never), Pass::Failed(_)));
    // Four more while the server is down: the outbox keeps the last three.
    for n in 2..=5 {
        store.begin(&call(n), clock.now()).unwrap();
    }
    link.set(0, up());
    link.seen.borrow_mut().clear();
    assert_eq!(sender.pass(&never), Pass::Empty);
    assert_eq!(sender.dropped, 2);
    let sent: Vec<String> = link
        .seen
        .borrow()
        .iter()
        .map(|s| s.text(types::ACCT_SESSION_ID))
        .collect();
    assert_eq!(sent, [call(3).call_id, call(4).call_id, call(5).call_id]);
    // Nothing more is counted as dropped once the outbox flows again.
    store.begin(&call(6), clock.now()).unwrap();
    assert_eq!(sender.pass(&never), Pass::Empty);
    assert_eq!(sender.dropped, 2);
}

#[test]
fn a_batch_sent_in_part_is_not_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdr.sqlite");
    let mut store = SqliteCdrStore::open(&path).unwrap();
    let outbox = Outbox::open(&path, 100, None).unwrap();
    let clock = FakeClock::new();
    // The server answers the first request it sees and then goes silent.
    let link = FakeLink::new(
        &clock,
        vec![Script {
            answers_left: Some(1),
            ..up()
        }],
    );
    let mut sender = Sender::new(
        outbox,
        Delivery::new(config(1), link.clone(), clock.clone()),
    );
    let never = || false;
    for n in 1..=3 {
        store.begin(&call(n), clock.now()).unwrap();
    }
    assert!(matches!(sender.pass(&never), Pass::Failed(_)));
    assert_eq!(sender.outbox.len().unwrap(), 2);
    link.set(0, up());
    assert_eq!(sender.pass(&never), Pass::Empty);
    assert_eq!(sender.outbox.len().unwrap(), 0);
    assert_eq!(sender.dropped, 0);
}
