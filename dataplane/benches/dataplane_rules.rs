//! The control plane's hot paths around the XDP relay: encoding a stream rule for the `flows`
//! map, and summing a stream's per-CPU counters. Neither needs privileges.
//!
//! `cargo bench -p sluice-dataplane --bench dataplane_rules`

use std::hint::black_box;
use std::net::SocketAddrV4;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_dataplane::{bidirectional, sum_stream_stats, Leg, Peer, StreamRule};
use sluice_ebpf::abi::StreamStats;

fn rules(c: &mut Criterion) {
    let sa = |s: &str| s.parse::<SocketAddrV4>().expect("address");
    let fixed = StreamRule::fixed(
        sa("203.0.113.1:30000"),
        sa("198.51.100.1:30002"),
        sa("198.51.100.7:4000"),
    );
    let [latching, _] = bidirectional(
        Leg {
            relay: sa("203.0.113.1:30004"),
            peer: Peer::Latch(None),
        },
        Leg {
            relay: sa("198.51.100.1:30006"),
            peer: Peer::Known(sa("198.51.100.7:4002")),
        },
        true,
    );
    c.bench_function("dataplane_rule_encode_fixed", |b| {
        b.iter(|| black_box(&fixed).encode(black_box(7), black_box(3)))
    });
    c.bench_function("dataplane_rule_encode_latching", |b| {
        b.iter(|| black_box(&latching).encode(black_box(7), black_box(3)))
    });
    let a = Leg {
        relay: sa("203.0.113.1:30004"),
        peer: Peer::Latch(None),
    };
    let b_leg = Leg {
        relay: sa("198.51.100.1:30006"),
        peer: Peer::Known(sa("198.51.100.7:4002")),
    };
    c.bench_function("dataplane_bidirectional_pair", |b| {
        b.iter(|| bidirectional(black_box(a), black_box(b_leg), false))
    });
}

fn counters(c: &mut Criterion) {
    // The reference box has 16 logical CPUs; a big box 64.
    for cpus in [2usize, 16, 64] {
        let values: Vec<StreamStats> = (0..cpus as u64)
            .map(|i| StreamStats {
                packets: i * 1000,
                bytes: i * 172_000,
                last_seen_ns: i * 7,
            })
            .collect();
        c.bench_function(&format!("dataplane_sum_stream_stats_{cpus}_cpus"), |b| {
            b.iter(|| sum_stream_stats(black_box(&values)))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2));
    targets = rules, counters
}
criterion_main!(benches);
