//! A packet generator that costs the sending core almost nothing: the `sluice_trafficgen` XDP
//! program, run by BPF_PROG_TEST_RUN in live-frames mode, stamps copies of one template frame and
//! transmits them out of the caller's interface. See `ebpf/bpf/trafficgen.bpf.c`.
//!
//! `sendmmsg` through a veth costs the sender microseconds per packet (socket, UDP, IP, neighbour,
//! and the copy veth makes to hand an skb to XDP); that is as much as the relay under test.
//! Here the kernel builds no skb on the way out: the frame goes to the relay's interface as an
//! XDP frame. Stream `i` gets UDP destination port `base_port + port_step * i`, and packets are
//! spread evenly over streams (packet n belongs to stream n % streams), so each stream sees one
//! packet per 20 ms at 50 packets/s.

use std::net::SocketAddrV4;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use aya::maps::{Array, MapData};
use aya::programs::Xdp;
use aya::Ebpf;
use sluice_ebpf::abi::Gen;
use sluice_ebpf::{programs, TRAFFICGEN_OBJECT};
use thiserror::Error;

use crate::clock::{monotonic_ns, thread_cpu_ns};
use crate::generator::{GeneratorConfig, GeneratorReport};
use crate::rtp::PACKET_LEN;

/// Ethernet, IPv4 (no options) and UDP headers.
const HEADERS_LEN: usize = 14 + 20 + 8;

/// Errors of the XDP generator.
#[derive(Debug, Error)]
pub enum XdpGenError {
    #[error("loading the traffic generator program: {0}")]
    Load(String),
    #[error(transparent)]
    Dataplane(#[from] sluice_dataplane::DataplaneError),
    #[error("invalid generator settings: {0}")]
    Invalid(&'static str),
}

/// Where the generated frames go: the Ethernet and IP addresses of the one-hop path from the
/// caller's interface to the relay.
#[derive(Clone, Copy, Debug)]
pub struct FramePath {
    /// The caller's interface MAC.
    pub src_mac: [u8; 6],
    /// The relay's MAC on the caller's segment.
    pub dst_mac: [u8; 6],
    /// The caller's address and UDP source port.
    pub src: SocketAddrV4,
    /// The relay's address; the port is replaced per stream.
    pub dst: SocketAddrV4,
}

/// The loaded generator program.
pub struct XdpGenerator {
    ebpf: Ebpf,
    gen: Array<MapData, Gen>,
}

impl XdpGenerator {
    /// Loads the generator program (not attached anywhere).
    pub fn load() -> Result<Self, XdpGenError> {
        let mut ebpf =
            Ebpf::load(TRAFFICGEN_OBJECT).map_err(|e| XdpGenError::Load(e.to_string()))?;
        let prog: &mut Xdp = ebpf
            .program_mut(programs::TRAFFICGEN)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| XdpGenError::Load("program missing from the object".into()))?;
        prog.load().map_err(|e| XdpGenError::Load(e.to_string()))?;
        let map = ebpf
            .take_map("gen")
            .ok_or_else(|| XdpGenError::Load("map `gen` missing".into()))?;
        let gen = Array::try_from(map).map_err(|e| XdpGenError::Load(e.to_string()))?;
        Ok(Self { ebpf, gen })
    }

    /// Sends `streams` streams at `cfg.packets_per_second` each for `cfg.duration`, out of
    /// `ifindex` (in the calling thread's namespace, which must be the caller's). Returns the
    /// same report as the socket generator.
    pub fn run(
        &mut self,
        ifindex: u32,
        path: &FramePath,
        streams: u32,
        base_port: u16,
        port_step: u16,
        cfg: &GeneratorConfig,
    ) -> Result<GeneratorReport, XdpGenError> {
        if streams == 0 || cfg.packets_per_second == 0 {
            return Err(XdpGenError::Invalid(
                "streams and packets_per_second must be above 0",
            ));
        }
        let rate = u64::from(streams) * u64::from(cfg.packets_per_second);
        let planned = cfg.packets_per_stream() * u64::from(streams);
        let start = monotonic_ns() + 1_000_000;
        let mut gen = Gen {
            streams,
            base_port,
            port_step,
            next: 0,
            total: planned,
            start_ns: start,
            pps: rate,
            // Catching up at four times the rate clears a 20 ms backlog in 5 ms, in frames the
            // relay's queue can take.
            min_gap_ns: 1_000_000_000 / (4 * rate),
            last_ns: 0,
            headers: [0; sluice_ebpf::abi::GEN_HEADERS],
        };
        self.gen
            .set(0, gen, 0)
            .map_err(|e| XdpGenError::Load(format!("writing the generator settings: {e}")))?;
        let prog: &Xdp = self
            .ebpf
            .program(programs::TRAFFICGEN)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| XdpGenError::Load("program missing".into()))?;
        let fd = prog
            .fd()
            .map_err(|e| XdpGenError::Load(e.to_string()))?
            .as_fd()
            .as_raw_fd();
        let frame = template(path);
        gen.headers[..HEADERS_LEN].copy_from_slice(&frame[..HEADERS_LEN]);
        self.gen
            .set(0, gen, 0)
            .map_err(|e| XdpGenError::Load(format!("writing the generator headers: {e}")))?;

        let duration_ns = cfg.duration.as_nanos() as u64;
        let hard_deadline = start + duration_ns + cfg.grace.as_nanos() as u64;
        let late_ns = cfg.late_threshold.as_nanos() as u64;
        let cpu_start = thread_cpu_ns();
        let (mut late, mut max_late_ns, mut sent_by_deadline, mut errors) =
            (0u64, 0u64, 0u64, 0u64);
        // Each test run costs the kernel a page-pool setup and teardown (milliseconds of wall
        // time), so runs are long: the program itself drops the frames that are not yet due.
        let mut iterations: u32 = 1 << 20;
        loop {
            let t0 = monotonic_ns();
            if t0 >= hard_deadline || gen.next >= planned {
                break;
            }
            match sluice_dataplane::test_run::xdp_live_frames(fd, &frame, ifindex, iterations) {
                Ok(()) => {}
                Err(e) => {
                    errors += 1;
                    tracing::warn!(error = %e, "live-frames test run failed");
                    if errors > 3 {
                        return Err(e.into());
                    }
                }
            }
            let t1 = monotonic_ns();
            gen = self
                .gen
                .get(&0, 0)
                .map_err(|e| XdpGenError::Load(format!("reading the generator state: {e}")))?;
            if t1 <= start + duration_ns {
                sent_by_deadline = gen.next;
            }
            // How far behind schedule the generator is now, in packets and in time.
            let due = ((t1.saturating_sub(start)) as u128 * rate as u128 / 1_000_000_000) as u64;
            let backlog = due.min(planned).saturating_sub(gen.next);
            let behind_ns = (backlog as u128 * 1_000_000_000 / rate as u128) as u64;
            max_late_ns = max_late_ns.max(behind_ns);
            if behind_ns > late_ns {
                late += backlog;
            }
            // Aim for runs of about 100 ms.
            let took = (t1 - t0).max(1);
            let scaled = u64::from(iterations) * 100_000_000 / took;
            iterations = scaled.clamp(1 << 14, 1 << 26) as u32;
        }
        if gen.next >= planned && sent_by_deadline < planned {
            sent_by_deadline = planned;
        }
        let cpu = Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu_start));
        let sent = gen.next.min(planned);
        // Packet n went to stream n % streams.
        let per_stream_sent = (0..u64::from(streams))
            .map(|s| sent / u64::from(streams) + u64::from(s < sent % u64::from(streams)))
            .collect();
        let late_fraction = if sent > 0 {
            late as f64 / sent as f64
        } else {
            0.0
        };
        let saturated = late_fraction > cfg.max_late_fraction
            || (sent_by_deadline as f64) < cfg.min_sent_fraction * planned as f64;
        Ok(GeneratorReport {
            planned,
            sent,
            sent_by_deadline,
            per_stream_sent,
            send_errors: 0,
            late,
            max_lateness: Duration::from_nanos(max_late_ns),
            elapsed: Duration::from_nanos(gen.last_ns.saturating_sub(start)),
            requested_pps: rate as f64,
            achieved_pps: sent as f64 / cfg.duration.as_secs_f64(),
            saturated,
            cpu_time: cpu,
        })
    }
}

/// The frame the program stamps: Ethernet, IPv4 (no options, DF), UDP with no checksum, and a
/// 172-byte payload the program fills in.
pub fn template(path: &FramePath) -> Vec<u8> {
    let udp_len = 8 + PACKET_LEN;
    let ip_len = 20 + udp_len;
    let mut frame = Vec::with_capacity(14 + ip_len);
    frame.extend_from_slice(&path.dst_mac);
    frame.extend_from_slice(&path.src_mac);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&path.src.ip().octets());
    ip[16..20].copy_from_slice(&path.dst.ip().octets());
    let checksum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&path.src.port().to_be_bytes());
    frame.extend_from_slice(&path.dst.port().to_be_bytes());
    frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.resize(14 + ip_len, 0);
    frame
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_a_valid_ip_header() {
        let path = FramePath {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "10.77.1.2:4000".parse().expect("addr"),
            dst: "10.77.1.1:20000".parse().expect("addr"),
        };
        let frame = template(&path);
        assert_eq!(frame.len(), 14 + 20 + 8 + PACKET_LEN);
        // A correct header sums to zero, checksum included.
        assert_eq!(ipv4_checksum(&frame[14..34]), 0);
        assert_eq!(&frame[0..6], &path.dst_mac);
        assert_eq!(
            u16::from_be_bytes([frame[38], frame[39]]) as usize,
            8 + PACKET_LEN
        );
    }
}
