//! Paced RTP load generator.
//!
//! Models N concurrent G.711 call legs: each stream sends one packet every
//! `1 / packets_per_second` (20 ms at the default 50 pps), and stream `i` is
//! offset by `i / N` of that interval so the aggregate load is smooth rather
//! than N packets arriving in one burst every 20 ms, which would measure
//! burst absorption instead of steady-state relay cost.
//!
//! Packets are sent with `sendmmsg` in batches so that the generator's own
//! per-packet syscall cost stays far below the relay's; its CPU time is still
//! measured and reported so the two can be told apart.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use thiserror::Error;

use crate::clock::{monotonic_ns, thread_cpu_ns};
use crate::rtp::{build_packet, PayloadHeader, PACKET_LEN};
use crate::sys::{empty_mmsghdr, sockaddr_in};

/// Largest batch handed to one `sendmmsg` call.
pub const MAX_BATCH: usize = 64;

/// Generator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// How long to send for; the last packet of each stream is due strictly
    /// before this elapses.
    pub duration: Duration,
    /// Packets per second per stream (50 for 20 ms G.711).
    pub packets_per_second: u32,
    /// Pacing granularity: the generator wakes on multiples of this after
    /// start and sends everything that has become due. Zero means "wake
    /// exactly at the next due time".
    pub tick: Duration,
    /// Packets per `sendmmsg` call, 1..=[`MAX_BATCH`].
    pub batch: usize,
    /// Extra time after `duration` to flush a backlog; sending stops at
    /// `duration + grace` whatever is left.
    pub grace: Duration,
    /// A packet built later than this after its due time counts as late.
    pub late_threshold: Duration,
    /// Fraction of late packets above which the generator is saturated.
    pub max_late_fraction: f64,
    /// Fraction of planned packets that must be sent by `duration`,
    /// below which the generator is saturated.
    pub min_sent_fraction: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            packets_per_second: 50,
            tick: Duration::from_millis(1),
            batch: MAX_BATCH,
            grace: Duration::from_millis(250),
            late_threshold: Duration::from_millis(20),
            max_late_fraction: 0.01,
            min_sent_fraction: 0.99,
        }
    }
}

impl GeneratorConfig {
    /// Packets each stream is scheduled to send.
    pub fn packets_per_stream(&self) -> u64 {
        let n = self.duration.as_secs_f64() * f64::from(self.packets_per_second);
        // Ceil, so a 1 s run at 50 pps is exactly 50 packets even if the
        // float product lands a hair below 50.
        (n - 1e-9).ceil().max(0.0) as u64
    }

    /// Interval between two packets of one stream, in nanoseconds.
    fn interval_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.packets_per_second.max(1))
    }

    fn validate(&self) -> Result<(), GeneratorError> {
        if self.packets_per_second == 0 {
            return Err(GeneratorError::InvalidConfig(
                "packets_per_second must be > 0",
            ));
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(GeneratorError::InvalidConfig("batch must be in 1..=64"));
        }
        if !(0.0..=1.0).contains(&self.max_late_fraction)
            || !(0.0..=1.0).contains(&self.min_sent_fraction)
        {
            return Err(GeneratorError::InvalidConfig("fractions must be in 0..=1"));
        }
        Ok(())
    }
}

/// Generator failures. Transient send errors are counted, not returned.
#[derive(Debug, Error)]
pub enum GeneratorError {
    /// A configuration value is out of range.
    #[error("invalid generator config: {0}")]
    InvalidConfig(&'static str),
    /// More streams than the 32-bit stream index can address.
    #[error("too many streams: {0}")]
    TooManyStreams(usize),
}

/// What the generator did.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorReport {
    /// Packets scheduled in total (`streams * packets_per_stream`).
    pub planned: u64,
    /// Packets the kernel accepted.
    pub sent: u64,
    /// Packets accepted before the nominal end (`duration`), excluding grace.
    pub sent_by_deadline: u64,
    /// Accepted packets per stream, indexed like the destination list.
    pub per_stream_sent: Vec<u64>,
    /// Packets dropped because `sendmmsg` reported a hard error for them.
    pub send_errors: u64,
    /// Packets built more than `late_threshold` after their due time.
    pub late: u64,
    /// Worst lateness observed.
    pub max_lateness: Duration,
    /// Wall time from start to the last send.
    pub elapsed: Duration,
    /// Requested aggregate rate, packets per second.
    pub requested_pps: f64,
    /// Achieved aggregate rate over `duration` (sent / duration).
    pub achieved_pps: f64,
    /// The generator could not keep up: too many late packets, or too few
    /// sent by the deadline. Results of a saturated run say more about the
    /// load generator than about the relay.
    pub saturated: bool,
    /// CPU time consumed by the generator thread.
    pub cpu_time: Duration,
}

/// Reusable `sendmmsg` buffers. Pointers into `bufs`, `addrs` and `iovs` are
/// refreshed before every call, so the vectors must never be resized after
/// construction.
struct SendBatch {
    bufs: Vec<[u8; PACKET_LEN]>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Stream index of each queued packet, for per-stream accounting.
    streams: Vec<usize>,
    len: usize,
}

impl SendBatch {
    fn new(cap: usize) -> Self {
        let zero_addr = sockaddr_in(&SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));
        Self {
            bufs: vec![[0u8; PACKET_LEN]; cap],
            addrs: vec![zero_addr; cap],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                cap
            ],
            hdrs: (0..cap).map(|_| empty_mmsghdr()).collect(),
            streams: vec![0; cap],
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    fn push(&mut self, stream: usize, dest: &SocketAddrV4, header: &PayloadHeader) -> bool {
        let Some(buf) = self.bufs.get_mut(self.len) else {
            return false;
        };
        build_packet(header, buf);
        if let Some(a) = self.addrs.get_mut(self.len) {
            *a = sockaddr_in(dest);
        }
        if let Some(s) = self.streams.get_mut(self.len) {
            *s = stream;
        }
        self.len += 1;
        true
    }

    /// Sends everything queued; returns per-packet outcome via the callbacks.
    /// Gives up on what is left once `hard_deadline_ns` passes.
    fn flush(&mut self, fd: i32, hard_deadline_ns: u64, stats: &mut SendStats<'_>) {
        let n = self.len;
        for k in 0..n {
            let (Some(buf), Some(addr), Some(iov), Some(hdr)) = (
                self.bufs.get_mut(k),
                self.addrs.get_mut(k),
                self.iovs.get_mut(k),
                self.hdrs.get_mut(k),
            ) else {
                break;
            };
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = PACKET_LEN;
            hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_in).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        let mut done = 0usize;
        while done < n {
            let remaining = n - done;
            let Some(first) = self.hdrs.get_mut(done) else {
                break;
            };
            // SAFETY: `first` points at `remaining` initialised, contiguous
            // mmsghdr entries whose name/iov pointers reference live buffers
            // owned by `self`, which is not touched during the call.
            let rc = unsafe { libc::sendmmsg(fd, first, remaining as libc::c_uint, 0) };
            if rc > 0 {
                let sent = rc as usize;
                for k in done..done + sent {
                    if let Some(&s) = self.streams.get(k) {
                        stats.record_sent(s);
                    }
                }
                done += sent;
                continue;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    // Queue full: back off briefly rather than dropping, so
                    // a momentarily slow receiver path is not counted as loss.
                    if monotonic_ns() >= hard_deadline_ns {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                _ => {
                    // The first message of the remaining batch failed (e.g.
                    // an ICMP error surfaced on the socket); skip just that one.
                    tracing::debug!(error = %err, "sendmmsg failed; skipping one packet");
                    *stats.send_errors += 1;
                    done += 1;
                }
            }
        }
        self.len = 0;
    }
}

struct SendStats<'a> {
    per_stream: &'a mut [u64],
    sent: &'a mut u64,
    send_errors: &'a mut u64,
}

impl SendStats<'_> {
    fn record_sent(&mut self, stream: usize) {
        if let Some(c) = self.per_stream.get_mut(stream) {
            *c += 1;
        }
        *self.sent += 1;
    }
}

/// Sends `packets_per_stream` packets to each destination (`dests[i]` for
/// stream `i`) from `socket`, on the calling thread.
///
/// The socket should be bound (possibly inside a network namespace) and may
/// be blocking or non-blocking. Always returns by `duration + grace`.
pub fn run_generator(
    socket: &UdpSocket,
    dests: &[SocketAddrV4],
    cfg: &GeneratorConfig,
) -> Result<GeneratorReport, GeneratorError> {
    cfg.validate()?;
    let n_streams = dests.len();
    if u32::try_from(n_streams).is_err() {
        return Err(GeneratorError::TooManyStreams(n_streams));
    }
    let fd = socket.as_raw_fd();
    let per_stream_planned = cfg.packets_per_stream();
    let planned = per_stream_planned.saturating_mul(n_streams as u64);
    let interval = cfg.interval_ns();
    let tick = u64::try_from(cfg.tick.as_nanos()).unwrap_or(u64::MAX);
    let duration_ns = u64::try_from(cfg.duration.as_nanos()).unwrap_or(u64::MAX);
    let grace_ns = u64::try_from(cfg.grace.as_nanos()).unwrap_or(u64::MAX);
    let late_ns = u64::try_from(cfg.late_threshold.as_nanos()).unwrap_or(u64::MAX);

    let mut per_stream_sent = vec![0u64; n_streams];
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    let mut late = 0u64;
    let mut max_late_ns = 0u64;
    let mut sent_by_deadline = 0u64;
    let mut batch = SendBatch::new(cfg.batch);

    let cpu_start = thread_cpu_ns();
    let start = monotonic_ns();
    let deadline = start.saturating_add(duration_ns);
    let hard_deadline = deadline.saturating_add(grace_ns);
    let n = n_streams as u64;

    // Global packet j belongs to round k = j / N and stream i = j % N; its due
    // time start + k*interval + i*interval/N is non-decreasing in j, so the
    // whole schedule is a single counter rather than a priority queue.
    let due_of = |j: u64| -> u64 {
        let k = j / n.max(1);
        let i = j % n.max(1);
        start
            .saturating_add(k.saturating_mul(interval))
            .saturating_add(i.saturating_mul(interval) / n.max(1))
    };

    let mut j = 0u64;
    let mut last_send = start;
    while j < planned {
        let now = monotonic_ns();
        if now >= hard_deadline {
            break;
        }
        let next_due = due_of(j);
        if next_due > now {
            let wake = if tick == 0 {
                next_due
            } else {
                // Round up to the tick grid so wake-ups happen at most once
                // per tick however dense the schedule is.
                let rel = next_due - start;
                start.saturating_add(rel.div_ceil(tick).saturating_mul(tick))
            };
            let wake = wake.min(hard_deadline);
            std::thread::sleep(Duration::from_nanos(wake.saturating_sub(now)));
            continue;
        }
        // Send everything due now, in batches.
        while j < planned {
            let now = monotonic_ns();
            let due = due_of(j);
            if due > now {
                break;
            }
            let lateness = now - due;
            if lateness > late_ns {
                late += 1;
            }
            max_late_ns = max_late_ns.max(lateness);
            let stream = (j % n) as usize;
            let header = PayloadHeader {
                send_ns: now,
                stream: stream as u32,
                seq: j / n,
            };
            if let Some(dest) = dests.get(stream) {
                batch.push(stream, dest, &header);
            }
            j += 1;
            if batch.is_full() {
                let before = sent;
                batch.flush(
                    fd,
                    hard_deadline,
                    &mut SendStats {
                        per_stream: &mut per_stream_sent,
                        sent: &mut sent,
                        send_errors: &mut send_errors,
                    },
                );
                if monotonic_ns() <= deadline {
                    sent_by_deadline += sent - before;
                }
                if monotonic_ns() >= hard_deadline {
                    break;
                }
            }
        }
        let before = sent;
        batch.flush(
            fd,
            hard_deadline,
            &mut SendStats {
                per_stream: &mut per_stream_sent,
                sent: &mut sent,
                send_errors: &mut send_errors,
            },
        );
        last_send = monotonic_ns();
        if last_send <= deadline {
            sent_by_deadline += sent - before;
        }
    }
    let cpu_time = Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu_start));

    let requested_pps = f64::from(cfg.packets_per_second) * n_streams as f64;
    let secs = cfg.duration.as_secs_f64();
    let achieved_pps = if secs > 0.0 { sent as f64 / secs } else { 0.0 };
    let late_fraction = if sent > 0 {
        late as f64 / sent as f64
    } else {
        0.0
    };
    let sent_fraction = if planned > 0 {
        sent_by_deadline as f64 / planned as f64
    } else {
        1.0
    };
    let saturated = late_fraction > cfg.max_late_fraction || sent_fraction < cfg.min_sent_fraction;
    if saturated {
        tracing::warn!(
            late,
            sent_by_deadline,
            planned,
            "load generator fell behind schedule; results are generator-bound"
        );
    }

    Ok(GeneratorReport {
        planned,
        sent,
        sent_by_deadline,
        per_stream_sent,
        send_errors,
        late,
        max_lateness: Duration::from_nanos(max_late_ns),
        elapsed: Duration::from_nanos(last_send.saturating_sub(start)),
        requested_pps,
        achieved_pps,
        saturated,
        cpu_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::parse_packet;
    use std::net::Ipv4Addr;

    #[test]
    fn packets_per_stream_rounding() {
        let cfg = GeneratorConfig {
            duration: Duration::from_secs(1),
            ..GeneratorConfig::default()
        };
        assert_eq!(cfg.packets_per_stream(), 50);
        let cfg = GeneratorConfig {
            duration: Duration::from_millis(30),
            ..GeneratorConfig::default()
        };
        assert_eq!(cfg.packets_per_stream(), 2);
    }

    #[test]
    fn rejects_bad_config() {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let cfg = GeneratorConfig {
            batch: 0,
            ..GeneratorConfig::default()
        };
        assert!(matches!(
            run_generator(&sock, &[], &cfg),
            Err(GeneratorError::InvalidConfig(_))
        ));
    }

    #[test]
    fn empty_destination_list_is_a_noop() {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let cfg = GeneratorConfig {
            duration: Duration::from_millis(50),
            ..GeneratorConfig::default()
        };
        let r = run_generator(&sock, &[], &cfg).expect("run");
        assert_eq!(r.planned, 0);
        assert_eq!(r.sent, 0);
        assert!(!r.saturated);
    }

    #[test]
    fn sends_spread_schedule_to_loopback() {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind rx");
        let Ok(std::net::SocketAddr::V4(rx_addr)) = rx.local_addr() else {
            panic!("rx not v4");
        };
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind tx");
        let cfg = GeneratorConfig {
            duration: Duration::from_millis(100),
            ..GeneratorConfig::default()
        };
        let dests = vec![rx_addr; 4];
        let r = run_generator(&tx, &dests, &cfg).expect("run");
        assert_eq!(r.planned, 20);
        assert_eq!(r.sent, 20);
        assert_eq!(r.per_stream_sent, vec![5; 4]);
        assert!(r.elapsed < Duration::from_millis(150));

        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut order = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..20 {
            let (len, _) = rx.recv_from(&mut buf).expect("recv");
            let p = parse_packet(&buf[..len]).expect("parse");
            assert!(p.intact);
            order.push((p.header.seq, p.header.stream));
        }
        // Streams interleave round by round: the spread schedule sends
        // stream 0..3 of round 0 before any packet of round 1.
        let expected: Vec<_> = (0..5u64)
            .flat_map(|k| (0..4u32).map(move |i| (k, i)))
            .collect();
        assert_eq!(order, expected);
    }
}
