//! Runs a generator and a receiver concurrently and collects both reports.
//!
//! Backends (XDP relay, loopback self-test) only differ in which sockets and
//! destinations they hand in; the measurement itself lives here so every
//! backend is measured identically.

use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use thiserror::Error;

use crate::generator::{run_generator, GeneratorConfig, GeneratorError, GeneratorReport};
use crate::receiver::{run_receiver, ReceiverConfig, ReceiverError, ReceiverReport};

/// Session settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Load shape and pacing.
    pub generator: GeneratorConfig,
    /// Expected relay source address per stream, if checked.
    pub expected_sources: Option<Vec<SocketAddrV4>>,
    /// How long the receiver keeps listening after the generator's hard
    /// deadline (`duration + grace`) for packets still in flight.
    pub drain: Duration,
    /// See [`ReceiverConfig::quiet_period`].
    pub quiet_period: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            generator: GeneratorConfig::default(),
            expected_sources: None,
            drain: Duration::from_millis(500),
            quiet_period: Duration::from_millis(100),
        }
    }
}

/// Session failures.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The generator failed.
    #[error("generator: {0}")]
    Generator(#[from] GeneratorError),
    /// The receiver failed.
    #[error("receiver: {0}")]
    Receiver(#[from] ReceiverError),
    /// A generator other than the socket one failed.
    #[error("generator: {0}")]
    OtherGenerator(String),
    /// A worker thread panicked.
    #[error("{0} thread panicked")]
    Panicked(&'static str),
    /// A worker thread could not be spawned.
    #[error("spawning {0} thread: {1}")]
    Spawn(&'static str, std::io::Error),
}

/// Both sides' reports.
#[derive(Debug, Clone)]
pub struct SessionOutcome {
    /// Requested send duration.
    pub duration: Duration,
    /// What was sent.
    pub generator: GeneratorReport,
    /// What arrived.
    pub receiver: ReceiverReport,
}

/// Sends stream `i` from `tx` to `dests[i]` while receiving all streams on
/// `rx`, each on its own thread so the generator's and receiver's CPU times
/// are measured separately. Returns once both are done; bounded by
/// `duration + grace + drain` (plus one receiver poll interval).
pub fn run_session(
    tx: &UdpSocket,
    dests: &[SocketAddrV4],
    rx: &UdpSocket,
    cfg: &SessionConfig,
) -> Result<SessionOutcome, SessionError> {
    run_session_with(dests.len(), rx, cfg, || {
        run_generator(tx, dests, &cfg.generator).map_err(SessionError::from)
    })
}

/// Like [`run_session`], with any generator: `generate` runs on its own thread while the
/// receiver listens on `rx` for `streams` streams shaped by `cfg.generator`.
pub fn run_session_with<G>(
    streams: usize,
    rx: &UdpSocket,
    cfg: &SessionConfig,
    generate: G,
) -> Result<SessionOutcome, SessionError>
where
    G: FnOnce() -> Result<GeneratorReport, SessionError> + Send,
{
    let gen_cfg = &cfg.generator;
    let rx_cfg = ReceiverConfig {
        streams,
        packets_per_stream: gen_cfg.packets_per_stream(),
        expected_sources: cfg.expected_sources.clone(),
        timeout: gen_cfg.duration + gen_cfg.grace + cfg.drain,
        quiet_period: cfg.quiet_period,
        ..ReceiverConfig::default()
    };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let rx_handle = std::thread::Builder::new()
            .name("bench-rx".into())
            .spawn_scoped(s, || run_receiver(rx, &rx_cfg, Some(&stop)))
            .map_err(|e| SessionError::Spawn("receiver", e))?;
        let gen_handle = std::thread::Builder::new()
            .name("bench-gen".into())
            .spawn_scoped(s, generate);
        let gen_result = match gen_handle {
            Ok(h) => h.join().map_err(|_| SessionError::Panicked("generator")),
            Err(e) => Err(SessionError::Spawn("generator", e)),
        };
        // If sending failed there is nothing left to wait for.
        if !matches!(gen_result, Ok(Ok(_))) {
            stop.store(true, Ordering::Relaxed);
        }
        let rx_result = rx_handle
            .join()
            .map_err(|_| SessionError::Panicked("receiver"))?;
        let generator = gen_result??;
        let receiver = rx_result?;
        Ok(SessionOutcome {
            duration: gen_cfg.duration,
            generator,
            receiver,
        })
    })
}

/// Binds an IPv4 UDP socket with enlarged kernel buffers.
///
/// Default socket buffers (~200 KiB) overflow within milliseconds at high
/// stream counts, which would show up as loss that is not the relay's fault.
/// The kernel caps the request at `net.core.{r,w}mem_max` silently.
pub fn bind_udp(addr: SocketAddrV4, buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Failing to grow buffers is not fatal: the run still measures, and any
    // resulting loss is visible in the report.
    // As root, SO_RCVBUFFORCE passes net.core.rmem_max, which is far too small for 100 kpps.
    if force_recv_buffer(&sock, buffer_bytes).is_err() {
        if let Err(e) = sock.set_recv_buffer_size(buffer_bytes) {
            tracing::debug!(error = %e, "could not set SO_RCVBUF");
        }
    }
    if let Err(e) = sock.set_send_buffer_size(buffer_bytes) {
        tracing::debug!(error = %e, "could not set SO_SNDBUF");
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

fn force_recv_buffer(sock: &socket2::Socket, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one c_int from a pointer we own, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StreamsReport;
    use std::net::Ipv4Addr;

    /// Unprivileged end-to-end self-test over loopback: 20 streams, 1 s.
    #[test]
    fn loopback_self_test_20_streams() {
        let rx = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 4 << 20).expect("bind rx");
        let std::net::SocketAddr::V4(rx_addr) = rx.local_addr().expect("addr") else {
            panic!("rx not v4");
        };
        let tx = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 4 << 20).expect("bind tx");
        let std::net::SocketAddr::V4(tx_addr) = tx.local_addr().expect("addr") else {
            panic!("tx not v4");
        };
        let n = 20;
        let cfg = SessionConfig {
            generator: GeneratorConfig {
                duration: Duration::from_secs(1),
                ..GeneratorConfig::default()
            },
            expected_sources: Some(vec![tx_addr; n]),
            ..SessionConfig::default()
        };
        let dests = vec![rx_addr; n];
        let started = std::time::Instant::now();
        let out = run_session(&tx, &dests, &rx, &cfg).expect("session");
        let wall = started.elapsed();
        let report = StreamsReport::from_outcome("loopback", "loopback", &out, None);
        eprintln!("{report}");

        assert_eq!(out.generator.planned, 1000);
        assert_eq!(report.sent, 1000);
        assert_eq!(report.sent, report.received);
        assert_eq!(report.lost, 0);
        assert_eq!(report.corrupted, 0);
        assert_eq!(report.duplicated, 0);
        assert_eq!(report.source_mismatch, 0);
        assert_eq!(report.unknown, 0);
        assert_eq!(report.bytes_received, 1000 * crate::rtp::PACKET_LEN as u64);
        assert_eq!(report.latency_us.samples, 1000);
        assert!(report.latency_us.max >= report.latency_us.p50);
        assert!(out.generator.per_stream_sent.iter().all(|&c| c == 50));
        assert!(!report.counters_match);
        // The receiver stops on completion + quiet period, well before its
        // 1.75 s timeout; the bound is loose so a loaded CI host passes.
        assert!(
            out.receiver.elapsed < Duration::from_millis(1700),
            "{wall:?}"
        );
    }

    /// Heavier loopback run for checking the generator's headroom by hand:
    /// `cargo test -p sluice-bench --release -- --ignored loopback_scale --nocapture`.
    #[test]
    #[ignore = "2 s, 200k packets; manual headroom check"]
    fn loopback_scale_2000_streams() {
        let rx = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 32 << 20).expect("bind rx");
        let std::net::SocketAddr::V4(rx_addr) = rx.local_addr().expect("addr") else {
            panic!("rx not v4");
        };
        let tx = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 32 << 20).expect("bind tx");
        let cfg = SessionConfig {
            generator: GeneratorConfig {
                duration: Duration::from_secs(2),
                ..GeneratorConfig::default()
            },
            ..SessionConfig::default()
        };
        let out = run_session(&tx, &vec![rx_addr; 2000], &rx, &cfg).expect("session");
        let report = StreamsReport::from_outcome("loopback", "loopback", &out, None);
        eprintln!("{report}");
        assert_eq!(report.sent, 200_000);
        assert_eq!(report.corrupted, 0);
    }

    #[test]
    fn counters_match_when_relay_agrees() {
        let rx = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 1 << 20).expect("bind rx");
        let std::net::SocketAddr::V4(rx_addr) = rx.local_addr().expect("addr") else {
            panic!("rx not v4");
        };
        let tx = bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), 1 << 20).expect("bind tx");
        let cfg = SessionConfig {
            generator: GeneratorConfig {
                duration: Duration::from_millis(100),
                ..GeneratorConfig::default()
            },
            ..SessionConfig::default()
        };
        let out = run_session(&tx, &[rx_addr; 3], &rx, &cfg).expect("session");
        let relay = crate::report::RelayCounters {
            packets: out.receiver.datagrams,
            bytes: out.receiver.bytes,
            ns_per_packet: Some(42.0),
            ..Default::default()
        };
        let r = StreamsReport::from_outcome("xdp", "two-arm", &out, Some(relay));
        assert!(r.counters_match);
        assert_eq!(r.relay_ns_per_packet, Some(42.0));
        assert_eq!(r.received, 15);
        let bad = crate::report::RelayCounters {
            packets: relay.packets + 1,
            ..relay
        };
        assert!(!StreamsReport::from_outcome("xdp", "two-arm", &out, Some(bad)).counters_match);
    }
}
