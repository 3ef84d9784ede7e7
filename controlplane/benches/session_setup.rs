//! One call set up end to end in memory: an SDP offer and its answer through the
//! `SessionManager` (parse, describe, port allocation, SDP rewrite, four stream rules installed),
//! then the call deleted so its ports go back to the pool for the next iteration. The forwarder
//! is a fake that keeps rules in a map, so the relay's own cost is not in the figure.
//!
//! `controlplane` is a binary crate, so the session module is compiled into this bench by path;
//! it needs only `sluice_dataplane`, `sluice_sip` and the crate's own dependencies.
//!
//! `cargo bench -p sluice --bench session_setup` (criterion reports the time per call).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_dataplane::{
    BackendKind, CounterSnapshot, DataplaneError, Forwarder, StreamCounters, StreamId, StreamRule,
};

// The bench uses a slice of the module. Under `cargo check`/`clippy --all-targets` the bench is
// built with `cfg(test)` but no test harness, so the module's `#[test]` functions vanish and
// their imports go unused.
#[allow(dead_code, unused_imports)]
#[path = "../src/session/mod.rs"]
mod session;

use session::{RelayInterface, SessionConfig, SessionManager, Signal, Timeouts};

/// A forwarder that keeps the rules it is given and forwards nothing.
#[derive(Default)]
struct FakeForwarder {
    rules: HashMap<StreamId, StreamRule>,
    next: u32,
}

impl Forwarder for FakeForwarder {
    fn kind(&self) -> BackendKind {
        BackendKind::Sockets
    }

    fn install(&mut self, rule: &StreamRule) -> Result<StreamId, DataplaneError> {
        let id = StreamId(self.next);
        self.next = self.next.wrapping_add(1);
        self.rules.insert(id, *rule);
        Ok(id)
    }

    fn update(&mut self, id: StreamId, rule: &StreamRule) -> Result<(), DataplaneError> {
        let old = self
            .rules
            .get_mut(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        *old = *rule;
        Ok(())
    }

    fn remove(&mut self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        self.rules
            .remove(&id)
            .map(|_| StreamCounters::default())
            .ok_or(DataplaneError::UnknownStream(id))
    }

    fn stream_counters(&self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        self.rules
            .get(&id)
            .map(|_| StreamCounters::default())
            .ok_or(DataplaneError::UnknownStream(id))
    }

    fn latched_peer(&self, id: StreamId) -> Result<Option<SocketAddrV4>, DataplaneError> {
        self.rules
            .get(&id)
            .map(|_| None)
            .ok_or(DataplaneError::UnknownStream(id))
    }

    fn counters(&self) -> Result<CounterSnapshot, DataplaneError> {
        Ok(CounterSnapshot::default())
    }
}

fn audio_sdp(addr: &str, port: u16) -> Vec<u8> {
    format!(
        "v=0\r\n\
o=- 2890844526 2890844526 IN IP4 {addr}\r\n\
s=-\r\n\
c=IN IP4 {addr}\r\n\
t=0 0\r\n\
m=audio {port} RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n"
    )
    .into_bytes()
}

fn manager() -> SessionManager {
    let config = SessionConfig {
        interfaces: vec![RelayInterface {
            name: "pub".into(),
            addr: Ipv4Addr::new(203, 0, 113, 1),
            advertised: Ipv4Addr::new(203, 0, 113, 100),
            ports: 30000..=30099,
        }],
        timeouts: Timeouts::default(),
    };
    SessionManager::new(config, Box::<FakeForwarder>::default()).expect("manager")
}

/// Offer, answer, delete: one whole call through the manager.
fn call(m: &mut SessionManager, offer: &Signal, answer: &Signal) -> usize {
    let now = Duration::from_secs(1);
    let offered = m.offer(now, offer).expect("offer");
    let answered = m.answer(now, answer).expect("answer");
    m.delete(now, &offer.call_id).expect("delete");
    offered.len() + answered.len()
}

fn session_setup(c: &mut Criterion) {
    let offer = Signal {
        call_id: "a84b4c76e66710@pc33.example.net".into(),
        from_tag: "1928301774".into(),
        sdp: audio_sdp("198.51.100.10", 49170),
        ..Signal::default()
    };
    let answer = Signal {
        to_tag: Some("a6c85cf".into()),
        sdp: audio_sdp("192.0.2.20", 40000),
        ..offer.clone()
    };
    let mut m = manager();
    // Once outside the measurement: the call sets up, installs its rules and leaves nothing.
    call(&mut m, &offer, &answer);
    assert_eq!(m.ports_in_use(), 0, "the deleted call freed its ports");

    let mut group = c.benchmark_group("session_setup");
    group.bench_function("offer_answer_delete_audio", |b| {
        b.iter(|| call(&mut m, black_box(&offer), black_box(&answer)))
    });
    group.finish();
}

fn config() -> Criterion {
    // Short, so `cargo test --all-targets` (one pass per bench) and CI stay fast; pass
    // `--measurement-time` for steadier figures.
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = session_setup
}
criterion_main!(benches);
