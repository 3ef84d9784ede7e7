//! `sluice demo --relay-only`: two calls' RTP through the XDP relay, in namespaces built for the
//! occasion, without SIP.
//!
//! The caller and callee each live in a network namespace and reach each other only through the
//! relay namespace. One call's caller is treated as behind NAT: the relay learns its address from
//! its first packet. Each direction sends G.711-sized RTP at 50 packets/s; at the end the relay's
//! per-stream counters are printed beside what the receivers got.

use std::net::{SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_dataplane::netns::NetNs;
use sluice_dataplane::testbed::{Testbed, TopologyKind};
use sluice_dataplane::{
    bidirectional, BackendChoice, DataplaneConfig, ForwarderConfig, Leg, Peer, StreamId,
};

/// What the relay-only demo runs with.
#[derive(Debug)]
pub struct RelayOnlyArgs {
    /// How long each stream sends.
    pub seconds: u64,
    pub topology: TopologyKind,
    pub backend: BackendChoice,
}

const PACKET_INTERVAL: Duration = Duration::from_millis(20);
const RTP_HEADER: usize = 12;
const PCMU_PAYLOAD: usize = 160;

struct Stream {
    call: usize,
    direction: &'static str,
    id: StreamId,
    relay_in: SocketAddrV4,
    relay_out: SocketAddrV4,
    sender: UdpSocket,
    receiver: UdpSocket,
    ssrc: u32,
}

pub fn run(args: &RelayOnlyArgs) -> Result<()> {
    sluice_dataplane::netns::can_create_netns()
        .map_err(|why| anyhow::anyhow!("the demo builds network namespaces: {why}"))?;
    let bed = Testbed::build(args.topology, "demo").context("building the demo namespaces")?;
    let config = ForwarderConfig {
        xdp: DataplaneConfig {
            relay_ports: 30000..=30999,
            max_streams: 64,
        },
        ..ForwarderConfig::default()
    };
    let started = bed
        .start_forwarder(args.backend, config)
        .context("starting the forwarding path")?;
    println!(
        "relay on {} in topology {}: {}",
        bed.relay_ifaces().join(", "),
        args.topology.name(),
        started.reason
    );
    let mut relay = started.forwarder;

    let mut streams = Vec::new();
    for call in 0..2usize {
        let port = |base: u16| base + 4 * call as u16;
        let caller = SocketAddrV4::new(bed.caller_addr(), port(4000));
        let callee = SocketAddrV4::new(bed.callee_addr(), port(5000));
        let relay_a = SocketAddrV4::new(bed.relay_caller_addr(), port(30000));
        let relay_b = SocketAddrV4::new(bed.relay_callee_addr(), port(30002));
        // Call 1's caller is "behind NAT": its signalled address is not trusted, only its packets.
        let caller_peer = if call == 1 {
            Peer::Latch(None)
        } else {
            Peer::Known(caller)
        };
        let [a_to_b, b_to_a] = bidirectional(
            Leg {
                relay: relay_a,
                peer: caller_peer,
            },
            Leg {
                relay: relay_b,
                peer: Peer::Known(callee),
            },
            false,
        );
        // The socket path binds its ports in the relay's namespace.
        let (forward, backward) = bed
            .relay()
            .run(|| -> Result<_> { Ok((relay.install(&a_to_b)?, relay.install(&b_to_a)?)) })??;
        let caller_socket = bind(bed.caller(), caller)?;
        let callee_socket = bind(bed.callee(), callee)?;
        streams.push(Stream {
            call,
            direction: "caller->callee",
            id: forward,
            relay_in: relay_a,
            relay_out: relay_b,
            sender: caller_socket.try_clone()?,
            receiver: callee_socket.try_clone()?,
            ssrc: 0x5100_0000 + 2 * call as u32,
        });
        streams.push(Stream {
            call,
            direction: "callee->caller",
            id: backward,
            relay_in: relay_b,
            relay_out: relay_a,
            sender: callee_socket,
            receiver: caller_socket,
            ssrc: 0x5100_0001 + 2 * call as u32,
        });
    }

    println!(
        "sending G.711 RTP (50 packets/s per stream) for {} s ...",
        args.seconds
    );
    let duration = Duration::from_secs(args.seconds);
    let received: Vec<(u64, u64)> = thread::scope(|scope| {
        let receivers: Vec<_> = streams
            .iter()
            .map(|s| scope.spawn(|| receive(&s.receiver, s.relay_out, duration)))
            .collect();
        // The caller speaks first, as a NATed phone would once it has the answer.
        for s in streams.iter().filter(|s| s.direction == "caller->callee") {
            send_rtp(&s.sender, s.relay_in, s.ssrc, 1);
        }
        thread::sleep(Duration::from_millis(50));
        let senders: Vec<_> = streams
            .iter()
            .map(|s| scope.spawn(|| send_stream(&s.sender, s.relay_in, s.ssrc, duration)))
            .collect();
        for sender in senders {
            let _ = sender.join();
        }
        receivers
            .into_iter()
            .map(|r| r.join().unwrap_or((0, 0)))
            .collect()
    });

    println!();
    println!(
        "{:<5} {:<15} {:<21} {:<21} {:<21} {:>8} {:>9} {:>9}",
        "call",
        "direction",
        "relay in",
        "relay out",
        "latched peer",
        "packets",
        "bytes",
        "received"
    );
    let mut mismatch = false;
    for (s, (got_packets, got_bytes)) in streams.iter().zip(&received) {
        let counters = relay.stream_counters(s.id)?;
        let latched = match relay.latched_peer(s.id)? {
            Some(peer) => peer.to_string(),
            None => "-".into(),
        };
        // The single packet sent before the others is counted by both sides too.
        mismatch |= counters.packets != *got_packets || counters.bytes != *got_bytes;
        println!(
            "{:<5} {:<15} {:<21} {:<21} {:<21} {:>8} {:>9} {:>9}",
            s.call,
            s.direction,
            s.relay_in.to_string(),
            s.relay_out.to_string(),
            latched,
            counters.packets,
            counters.bytes,
            got_packets
        );
    }
    let counters = relay.counters()?;
    println!();
    println!("relay counters ({}):", relay.kind().name());
    for (counter, value) in counters.iter().filter(|(_, v)| *v > 0) {
        println!("  {:<22} {value}", counter.name());
    }
    if mismatch {
        bail!("the relay's counters differ from what the receivers got");
    }
    println!();
    println!("every stream's relay counters equal what its receiver got");
    Ok(())
}

fn bind(ns: &NetNs, addr: SocketAddrV4) -> Result<UdpSocket> {
    let socket = ns
        .run(move || UdpSocket::bind(addr))?
        .with_context(|| format!("binding {addr}"))?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket)
}

fn rtp_packet(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut packet = vec![0u8; RTP_HEADER + PCMU_PAYLOAD];
    packet[0] = 0x80; // version 2
    packet[1] = 0; // PCMU
    packet[2..4].copy_from_slice(&seq.to_be_bytes());
    packet[4..8].copy_from_slice(&(u32::from(seq) * PCMU_PAYLOAD as u32).to_be_bytes());
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
    packet[RTP_HEADER..].fill(0xff); // PCMU silence
    packet
}

fn send_rtp(socket: &UdpSocket, to: SocketAddrV4, ssrc: u32, seq: u16) {
    if let Err(e) = socket.send_to(&rtp_packet(ssrc, seq), to) {
        tracing::warn!(%to, error = %e, "sending RTP");
    }
}

fn send_stream(socket: &UdpSocket, to: SocketAddrV4, ssrc: u32, duration: Duration) {
    let start = Instant::now();
    let packets = (duration.as_millis() / PACKET_INTERVAL.as_millis()) as u16;
    for seq in 2..2 + packets {
        send_rtp(socket, to, ssrc, seq);
        let next = PACKET_INTERVAL * u32::from(seq - 1);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
    }
}

/// Counts packets and UDP payload bytes from `relay_out` until the senders are done and quiet.
fn receive(socket: &UdpSocket, relay_out: SocketAddrV4, duration: Duration) -> (u64, u64) {
    let deadline = Instant::now() + duration + Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    let (mut packets, mut bytes) = (0, 0);
    while Instant::now() < deadline {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from == relay_out.into() {
                packets += 1;
                bytes += n as u64;
            }
        }
    }
    (packets, bytes)
}
