//! Cost of building and verifying one test packet; both run once per packet
//! in the generator and receiver hot loops, so they must stay far below the
//! relay's per-packet cost.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice_bench::rtp::{build_packet, parse_packet, PayloadHeader, PACKET_LEN};

fn bench_rtp(c: &mut Criterion) {
    let mut buf = [0u8; PACKET_LEN];
    let mut seq = 0u64;
    c.bench_function("rtp_build", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let h = PayloadHeader {
                send_ns: seq,
                stream: 7,
                seq,
            };
            build_packet(black_box(&h), &mut buf);
            black_box(&buf);
        })
    });
    c.bench_function("rtp_parse", |b| {
        b.iter(|| black_box(parse_packet(black_box(&buf))))
    });
    c.bench_function("rtp_build_parse", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let h = PayloadHeader {
                send_ns: seq,
                stream: 7,
                seq,
            };
            build_packet(black_box(&h), &mut buf);
            black_box(parse_packet(black_box(&buf)))
        })
    });
}

criterion_group!(benches, bench_rtp);
criterion_main!(benches);
