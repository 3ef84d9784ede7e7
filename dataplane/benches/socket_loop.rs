//! The socket forwarding path: the per-datagram decision alone, and datagrams end to end over
//! loopback through a `SocketRelay`. Neither needs privileges.
//!
//! `cargo bench -p sluice-dataplane --bench socket_loop`

use std::hint::black_box;
use std::net::{SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_dataplane::sockets::{process, RelayCounters, RuleTable, StreamCells};
use sluice_dataplane::{
    bidirectional, Counter, Forwarder, Leg, Peer, SocketRelay, SocketRelayConfig, StreamRule,
};

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().expect("address")
}

/// `process` on a table of 1000 bidirectional streams: a latched, strict leg (the usual case)
/// and a fixed one.
fn decide(c: &mut Criterion) {
    let mut table = RuleTable::new(Arc::new(RelayCounters::default()));
    for s in 0..1000u16 {
        let port = 20000 + 2 * s;
        let [a_to_b, b_to_a] = bidirectional(
            Leg {
                relay: sa(&format!("203.0.113.1:{port}")),
                peer: Peer::Latch(None),
            },
            Leg {
                relay: sa(&format!("198.51.100.1:{port}")),
                peer: Peer::Known(sa(&format!("198.51.100.7:{port}"))),
            },
            true,
        );
        table
            .insert(&a_to_b, Arc::new(StreamCells::default()))
            .expect("insert");
        table
            .insert(&b_to_a, Arc::new(StreamCells::default()))
            .expect("insert");
    }
    let local = sa("203.0.113.1:20500");
    let caller = sa("192.0.2.10:5000");
    process(&mut table, local, caller, 160, 1);
    let fixed = sa("198.51.100.1:20500");
    let callee = sa("198.51.100.7:20500");

    let mut group = c.benchmark_group("socket_process");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    group.bench_function("latched_strict", |b| {
        b.iter(|| process(&mut table, black_box(local), black_box(caller), 160, 2))
    });
    group.bench_function("known_peer", |b| {
        b.iter(|| process(&mut table, black_box(fixed), black_box(callee), 160, 3))
    });
    group.finish();
}

/// Datagrams caller -> relay -> callee over loopback, a window of them in flight at a time, so
/// nothing is lost to full buffers.
fn loopback(c: &mut Criterion) {
    const PACKETS: u64 = 20_000;
    const WINDOW: u64 = 64;
    let caller = UdpSocket::bind("127.78.0.10:0").expect("bind caller");
    let callee = UdpSocket::bind("127.78.0.11:0").expect("bind callee");
    callee
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let callee_addr = match callee.local_addr().expect("address") {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("IPv6 {other}"),
    };
    let mut relay = SocketRelay::start(SocketRelayConfig::default()).expect("start");
    let rule = StreamRule::fixed(sa("127.78.0.2:20000"), sa("127.78.0.3:20002"), callee_addr);
    relay.install(&rule).expect("install");
    let payload = [0x80u8; 172]; // an RTP header and 20 ms of G.711

    let mut group = c.benchmark_group("socket_loopback");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(PACKETS));
    group.bench_function("relay_20k_datagrams", |b| {
        b.iter_custom(|iters| {
            let mut buf = [0u8; 2048];
            let started = Instant::now();
            for _ in 0..iters {
                let mut sent = 0;
                while sent < PACKETS {
                    let burst = WINDOW.min(PACKETS - sent);
                    for _ in 0..burst {
                        caller.send_to(&payload, rule.local).expect("send");
                    }
                    for _ in 0..burst {
                        callee.recv_from(&mut buf).expect("relayed in time");
                    }
                    sent += burst;
                }
            }
            started.elapsed()
        })
    });
    group.finish();
    let counters = relay.counters().expect("counters");
    assert_eq!(counters.drops(), 0, "{counters:?}");
    assert!(counters.get(Counter::Tx) >= PACKETS);
}

criterion_group!(benches, decide, loopback);
criterion_main!(benches);
