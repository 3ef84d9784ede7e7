//! The AF_XDP worker's per-packet work without sockets: `process_batch` on a batch of 64 G.711
//! frames (214 bytes: 172 bytes of RTP) spread over 2000 installed streams. Parsing, lookup,
//! rewrite, incremental checksums and counting; the ring loop around it is not measured.
//!
//! `cargo bench -p sluice-dataplane --bench afxdp_batch` (ns per packet = time / 64).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice_dataplane::afxdp::{
    process_batch, FrameRef, NoKernel, RuleTable, StreamCell, WorkerCounters, WorkerRule, META_LEN,
};
use sluice_dataplane::StreamRule;
use sluice_ebpf::abi::FlowKey;

const STREAMS: u16 = 2000;
const BATCH: usize = 64;
const OFFSET: usize = 256;
const EGRESS: u32 = 3;

fn relay_port(stream: u16) -> u16 {
    30000 + 2 * stream
}

fn table() -> RuleTable {
    let mut table = RuleTable::new(
        vec![2, EGRESS],
        Arc::new(WorkerCounters::default()),
        Box::new(NoKernel),
    );
    for s in 0..STREAMS {
        let rule = StreamRule::fixed(
            SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), relay_port(s)),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), relay_port(s) + 1),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 4000 + s),
        );
        table.upsert(
            FlowKey::new(rule.local),
            WorkerRule::new(&rule, Arc::new(StreamCell::default())),
        );
    }
    table
}

/// One UMEM-like chunk: metadata, then Ethernet/IPv4/UDP/RTP towards stream `s`.
fn frame(s: u16) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    buf[OFFSET - META_LEN..OFFSET - 4].copy_from_slice(&[2, 0, 0, 0, 0, 7, 2, 0, 0, 0, 0, 1]);
    buf[OFFSET - 4..OFFSET].copy_from_slice(&EGRESS.to_ne_bytes());
    let p = &mut buf[OFFSET..];
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut p[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&200u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 63;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[192, 0, 2, 10]);
    ip[16..20].copy_from_slice(&[203, 0, 113, 1]);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut p[34..42];
    udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&relay_port(s).to_be_bytes());
    udp[4..6].copy_from_slice(&180u16.to_be_bytes());
    udp[6..8].copy_from_slice(&0x1234u16.to_be_bytes());
    for (i, b) in p[42..214].iter_mut().enumerate() {
        *b = i as u8;
    }
    buf
}

fn batch(c: &mut Criterion) {
    let mut table = table();
    // Streams spread over the table, as 64 packets from 64 different calls.
    let template: Vec<Vec<u8>> = (0..BATCH as u16)
        .map(|i| frame(i * (STREAMS / BATCH as u16)))
        .collect();
    let mut group = c.benchmark_group("afxdp");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("process_batch_64_g711_2000_streams", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |bufs| {
                let mut frames: Vec<FrameRef<'_>> = bufs
                    .iter_mut()
                    .map(|buf| FrameRef::new(buf, OFFSET, 214))
                    .collect();
                let summary = process_batch(&mut table, &mut frames, black_box(1));
                assert_eq!(summary.forwarded as usize, BATCH);
                black_box(summary)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);
