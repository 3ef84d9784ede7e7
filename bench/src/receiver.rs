//! Receiving side: per-stream loss, duplication, reordering, corruption and
//! one-way latency.
//!
//! One socket receives every stream; packets are attributed to streams from
//! the payload rather than from the destination port, so the same receiver
//! works whether the relay fans streams out to many ports or one.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use thiserror::Error;

use crate::clock::{monotonic_ns, thread_cpu_ns};
use crate::rtp::parse_packet;
use crate::sys::{empty_mmsghdr, empty_storage, storage_to_v4};

/// Largest batch handed to one `recvmmsg` call.
pub const MAX_BATCH: usize = 64;
/// Receive buffer per datagram; larger than any test packet so that a relay
/// which grows packets shows up as corruption rather than truncation.
const RECV_BUF_LEN: usize = 2048;
/// Highest latency the histogram tracks (60 s); larger values saturate.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Receiver settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverConfig {
    /// Number of streams; packets claiming a higher index count as unknown.
    pub streams: usize,
    /// Packets each stream is scheduled to send. Sequence numbers at or
    /// above this count as unknown, which also bounds the memory used for
    /// duplicate detection regardless of what arrives on the wire.
    pub packets_per_stream: u64,
    /// Expected source address of each stream (what the relay should send
    /// from), or `None` to skip the check.
    pub expected_sources: Option<Vec<SocketAddrV4>>,
    /// Stop receiving after this long, whatever has arrived.
    pub timeout: Duration,
    /// Once every expected packet has arrived, stop after this long without
    /// traffic (waiting a little catches late duplicates).
    pub quiet_period: Duration,
    /// Packets per `recvmmsg` call, 1..=[`MAX_BATCH`].
    pub batch: usize,
    /// Socket read timeout, which bounds how late a stop is noticed.
    pub poll_interval: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            streams: 0,
            packets_per_stream: 0,
            expected_sources: None,
            timeout: Duration::from_secs(11),
            quiet_period: Duration::from_millis(100),
            batch: MAX_BATCH,
            poll_interval: Duration::from_millis(20),
        }
    }
}

/// Receiver failures.
#[derive(Debug, Error)]
pub enum ReceiverError {
    /// A configuration value is out of range.
    #[error("invalid receiver config: {0}")]
    InvalidConfig(&'static str),
    /// The latency histogram could not be created.
    #[error("histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
    /// A socket call failed in a way that is not a timeout or interruption.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters for one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRx {
    /// Datagrams attributed to this stream, including duplicates and
    /// corrupted ones.
    pub datagrams: u64,
    /// Distinct intact packets (unique sequence numbers).
    pub distinct: u64,
    /// Intact packets whose sequence number had already been received.
    pub duplicated: u64,
    /// Intact first arrivals with a sequence below the highest seen so far.
    pub reordered: u64,
    /// Packets whose measurement header parsed but whose other bytes differ
    /// from what the generator sent.
    pub corrupted: u64,
    /// Packets whose source address differs from the expected one.
    pub source_mismatch: u64,
    highest: Option<u64>,
    seen: Vec<u64>,
}

impl StreamRx {
    /// Marks `seq` as seen; returns `true` if it was new.
    fn mark(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        match self.seen.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Median one-way latency.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest observed latency.
    pub max: u64,
    /// Number of latency samples (first arrivals of intact packets).
    pub samples: u64,
}

impl LatencySummary {
    /// Summarises a microsecond histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            samples: h.len(),
        }
    }
}

/// What the receiver observed.
#[derive(Debug, Clone)]
pub struct ReceiverReport {
    /// Per-stream counters, indexed by stream.
    pub per_stream: Vec<StreamRx>,
    /// Datagrams that could not be attributed to a configured stream.
    pub unknown: u64,
    /// Total datagrams received, attributed or not.
    pub datagrams: u64,
    /// Total UDP payload bytes received.
    pub bytes: u64,
    /// One-way latency of first arrivals of intact packets, microseconds.
    pub latency_us: Histogram<u64>,
    /// CPU time consumed by the receiver thread.
    pub cpu_time: Duration,
    /// Wall time spent receiving.
    pub elapsed: Duration,
}

impl ReceiverReport {
    /// Distinct intact packets over all streams.
    pub fn distinct(&self) -> u64 {
        self.per_stream.iter().map(|s| s.distinct).sum()
    }

    /// Sum of duplicated packets over all streams.
    pub fn duplicated(&self) -> u64 {
        self.per_stream.iter().map(|s| s.duplicated).sum()
    }

    /// Sum of reordered packets over all streams.
    pub fn reordered(&self) -> u64 {
        self.per_stream.iter().map(|s| s.reordered).sum()
    }

    /// Sum of corrupted packets over all streams.
    pub fn corrupted(&self) -> u64 {
        self.per_stream.iter().map(|s| s.corrupted).sum()
    }

    /// Sum of source mismatches over all streams.
    pub fn source_mismatch(&self) -> u64 {
        self.per_stream.iter().map(|s| s.source_mismatch).sum()
    }

    /// Lost packets per stream: sent minus distinct intact received,
    /// using the generator's per-stream sent counts. Streams missing from
    /// either side count as fully lost or not sent respectively.
    pub fn lost_per_stream(&self, per_stream_sent: &[u64]) -> Vec<u64> {
        per_stream_sent
            .iter()
            .enumerate()
            .map(|(i, &sent)| {
                let got = self.per_stream.get(i).map_or(0, |s| s.distinct);
                sent.saturating_sub(got)
            })
            .collect()
    }

    /// Total lost packets; see [`ReceiverReport::lost_per_stream`].
    pub fn lost(&self, per_stream_sent: &[u64]) -> u64 {
        self.lost_per_stream(per_stream_sent).iter().sum()
    }

    /// Latency percentiles.
    pub fn latency_summary(&self) -> LatencySummary {
        LatencySummary::from_histogram(&self.latency_us)
    }
}

struct RecvBatch {
    bufs: Vec<[u8; RECV_BUF_LEN]>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    fn new(cap: usize) -> Self {
        Self {
            bufs: vec![[0u8; RECV_BUF_LEN]; cap],
            addrs: (0..cap).map(|_| empty_storage()).collect(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                cap
            ],
            hdrs: (0..cap).map(|_| empty_mmsghdr()).collect(),
        }
    }

    /// Resets headers (the kernel overwrites name lengths and flags).
    fn arm(&mut self) {
        for (((buf, addr), iov), hdr) in self
            .bufs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .zip(self.iovs.iter_mut())
            .zip(self.hdrs.iter_mut())
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = RECV_BUF_LEN;
            hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
    }
}

struct Tally<'a> {
    cfg: &'a ReceiverConfig,
    per_stream: Vec<StreamRx>,
    unknown: u64,
    datagrams: u64,
    bytes: u64,
    distinct: u64,
    latency: Histogram<u64>,
}

impl Tally<'_> {
    fn account(&mut self, data: &[u8], truncated: bool, src: Option<SocketAddrV4>, now_ns: u64) {
        self.datagrams += 1;
        self.bytes += data.len() as u64;
        let Ok(parsed) = parse_packet(data) else {
            self.unknown += 1;
            return;
        };
        let h = parsed.header;
        let idx = usize::try_from(h.stream).unwrap_or(usize::MAX);
        let in_range = h.seq < self.cfg.packets_per_stream;
        let expected_src = self
            .cfg
            .expected_sources
            .as_ref()
            .and_then(|v| v.get(idx).copied());
        let Some(st) = self.per_stream.get_mut(idx).filter(|_| in_range) else {
            self.unknown += 1;
            return;
        };
        st.datagrams += 1;
        if let Some(exp) = expected_src {
            if src != Some(exp) {
                st.source_mismatch += 1;
            }
        }
        if !parsed.intact || truncated {
            st.corrupted += 1;
            return;
        }
        if !st.mark(h.seq) {
            st.duplicated += 1;
            return;
        }
        st.distinct += 1;
        self.distinct += 1;
        match st.highest {
            Some(hi) if h.seq < hi => st.reordered += 1,
            _ => st.highest = Some(h.seq),
        }
        let lat_us = now_ns.saturating_sub(h.send_ns) / 1_000;
        self.latency.saturating_record(lat_us.min(MAX_LATENCY_US));
    }
}

/// Receives on `socket` until `cfg.timeout` elapses, `stop` is set, or every
/// expected packet has arrived and the socket has been quiet for
/// `cfg.quiet_period`.
///
/// Sets the socket's read timeout to `cfg.poll_interval` (and leaves it so).
pub fn run_receiver(
    socket: &UdpSocket,
    cfg: &ReceiverConfig,
    stop: Option<&AtomicBool>,
) -> Result<ReceiverReport, ReceiverError> {
    if cfg.batch == 0 || cfg.batch > MAX_BATCH {
        return Err(ReceiverError::InvalidConfig("batch must be in 1..=64"));
    }
    if cfg.poll_interval.is_zero() {
        // A zero read timeout means "block forever" to the kernel, which
        // would defeat the deadline.
        return Err(ReceiverError::InvalidConfig("poll_interval must be > 0"));
    }
    // The seen-bitmap needs packets_per_stream/8 bytes per stream; refuse
    // plans that would need more than 1 GiB rather than exhausting memory.
    let bitmap_bytes = (cfg.packets_per_stream / 8).saturating_mul(cfg.streams as u64);
    if bitmap_bytes > 1 << 30 {
        return Err(ReceiverError::InvalidConfig("streams * packets too large"));
    }
    socket.set_read_timeout(Some(cfg.poll_interval))?;
    let fd = socket.as_raw_fd();
    let expected_total = cfg.packets_per_stream.saturating_mul(cfg.streams as u64);

    let mut tally = Tally {
        cfg,
        per_stream: vec![StreamRx::default(); cfg.streams],
        unknown: 0,
        datagrams: 0,
        bytes: 0,
        distinct: 0,
        latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
    };
    let mut batch = RecvBatch::new(cfg.batch);
    let cpu_start = thread_cpu_ns();
    let start = monotonic_ns();
    let deadline = start.saturating_add(u64::try_from(cfg.timeout.as_nanos()).unwrap_or(u64::MAX));
    let quiet_ns = u64::try_from(cfg.quiet_period.as_nanos()).unwrap_or(u64::MAX);
    let mut last_rx = start;

    loop {
        let now = monotonic_ns();
        if now >= deadline || stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        if tally.distinct >= expected_total && now.saturating_sub(last_rx) >= quiet_ns {
            break;
        }
        batch.arm();
        let Some(first) = batch.hdrs.first_mut() else {
            break;
        };
        // SAFETY: `arm` pointed every header at buffers owned by `batch`,
        // which outlives the call; the count matches the vector length.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                first,
                cfg.batch as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                // Asynchronous ICMP errors from earlier sends on a shared
                // socket; not a receive failure.
                Some(libc::ECONNREFUSED) | Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => {
                    continue
                }
                _ => return Err(err.into()),
            }
        }
        let now = monotonic_ns();
        last_rx = now;
        let count = usize::try_from(rc).unwrap_or(0);
        for k in 0..count {
            let (Some(hdr), Some(buf), Some(addr)) =
                (batch.hdrs.get(k), batch.bufs.get(k), batch.addrs.get(k))
            else {
                break;
            };
            let len = (hdr.msg_len as usize).min(RECV_BUF_LEN);
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let src = storage_to_v4(addr, hdr.msg_hdr.msg_namelen);
            tally.account(buf.get(..len).unwrap_or(&[]), truncated, src, now);
        }
    }

    Ok(ReceiverReport {
        per_stream: tally.per_stream,
        unknown: tally.unknown,
        datagrams: tally.datagrams,
        bytes: tally.bytes,
        latency_us: tally.latency,
        cpu_time: Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu_start)),
        elapsed: Duration::from_nanos(monotonic_ns().saturating_sub(start)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{encode, PayloadHeader};
    use std::net::Ipv4Addr;

    fn pkt(stream: u32, seq: u64) -> Vec<u8> {
        encode(&PayloadHeader {
            send_ns: monotonic_ns(),
            stream,
            seq,
        })
        .to_vec()
    }

    #[test]
    fn classifies_dup_reorder_corrupt_unknown_and_source() {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind rx");
        let rx_addr = rx.local_addr().expect("addr");
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind tx");
        let std::net::SocketAddr::V4(tx_addr) = tx.local_addr().expect("addr") else {
            panic!("v4");
        };
        let other = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);

        let mut corrupt = pkt(0, 3);
        corrupt[100] ^= 0xff;
        let sends: Vec<Vec<u8>> = vec![
            pkt(0, 0),
            pkt(0, 2),
            pkt(0, 1), // reordered
            pkt(0, 1), // duplicate
            corrupt,
            pkt(1, 0),
            pkt(5, 0),  // stream out of range
            pkt(1, 99), // seq out of range
            b"not rtp at all".to_vec(),
        ];
        for s in &sends {
            tx.send_to(s, rx_addr).expect("send");
        }
        let cfg = ReceiverConfig {
            streams: 2,
            packets_per_stream: 4,
            expected_sources: Some(vec![tx_addr, other]),
            timeout: Duration::from_millis(300),
            ..ReceiverConfig::default()
        };
        let r = run_receiver(&rx, &cfg, None).expect("run");
        assert_eq!(r.datagrams, 9);
        assert_eq!(r.unknown, 3);
        let s0 = &r.per_stream[0];
        assert_eq!(
            (
                s0.datagrams,
                s0.distinct,
                s0.duplicated,
                s0.reordered,
                s0.corrupted
            ),
            (5, 3, 1, 1, 1)
        );
        assert_eq!(s0.source_mismatch, 0);
        assert_eq!(r.per_stream[1].source_mismatch, 1);
        assert_eq!(r.lost(&[4, 1]), 1);
        assert_eq!(r.latency_summary().samples, 4);
        let total_bytes: u64 = sends.iter().map(|s| s.len() as u64).sum();
        assert_eq!(r.bytes, total_bytes);
    }

    #[test]
    fn stops_early_when_complete_and_quiet() {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind rx");
        let rx_addr = rx.local_addr().expect("addr");
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind tx");
        tx.send_to(&pkt(0, 0), rx_addr).expect("send");
        let cfg = ReceiverConfig {
            streams: 1,
            packets_per_stream: 1,
            timeout: Duration::from_secs(5),
            quiet_period: Duration::from_millis(50),
            ..ReceiverConfig::default()
        };
        let r = run_receiver(&rx, &cfg, None).expect("run");
        assert_eq!(r.distinct(), 1);
        assert!(r.elapsed < Duration::from_secs(1));
    }

    #[test]
    fn honours_stop_flag_and_timeout() {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind rx");
        let stop = AtomicBool::new(true);
        let cfg = ReceiverConfig {
            streams: 1,
            packets_per_stream: 10,
            timeout: Duration::from_secs(5),
            ..ReceiverConfig::default()
        };
        let r = run_receiver(&rx, &cfg, Some(&stop)).expect("run");
        assert!(r.elapsed < Duration::from_millis(100));
        let cfg = ReceiverConfig {
            timeout: Duration::from_millis(80),
            ..cfg
        };
        let r = run_receiver(&rx, &cfg, None).expect("run");
        assert!(r.elapsed < Duration::from_millis(500));
        assert_eq!(r.lost(&[10]), 10);
    }
}
