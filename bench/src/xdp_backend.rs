//! The `xdp` backend of `sluice-bench streams`: the XDP relay in namespaces built for the run.
//!
//! Stream i is one direction of call i: the caller sends to the relay at port `base + 4i`, the
//! relay re-originates it from its callee-side address at port `base + 4i + 2` towards the callee,
//! as it would for a real call. One socket sends all streams and one socket receives them, so the
//! generator and the receiver each cost one thread, measured apart from the relay. The relay's own
//! cost per packet comes from the kernel's BPF run-time statistics, not from wall time.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sluice_dataplane::testbed::{Testbed, TopologyKind};
use sluice_dataplane::{AttachMode, DataplaneConfig, StreamRule};

use crate::cli::{Generator, StreamsArgs, Topology};
use crate::generator::GeneratorConfig;
use crate::report::{RelayCounters, StreamsReport};
use crate::session::{bind_udp, run_session, run_session_with, SessionConfig, SessionError};
use crate::xdpgen::{FramePath, XdpGenerator};

/// First relay port; each stream takes four (its RTP and RTCP, and the other leg's).
const BASE_PORT: u16 = 20000;
const CALLER_PORT: u16 = 4000;
const CALLEE_PORT: u16 = 5000;
/// Socket buffers: a second of 2000 streams' packets, so a scheduling hiccup loses nothing.
const SOCKET_BUFFER: usize = 64 << 20;

/// Most streams the port plan allows.
pub const MAX_STREAMS: u32 = (u16::MAX - BASE_PORT) as u32 / 4;

/// Runs one measurement and returns its report.
pub fn run(args: &StreamsArgs) -> Result<StreamsReport> {
    if args.streams > MAX_STREAMS {
        bail!(
            "--streams {}: at most {MAX_STREAMS} with one relay address",
            args.streams
        );
    }
    sluice_dataplane::netns::can_create_netns()
        .map_err(|why| anyhow::anyhow!("the xdp backend builds network namespaces: {why}"))?;
    let kind = match args.topology {
        Topology::TwoArm => TopologyKind::TwoArm,
        Topology::OneArm => TopologyKind::OneArm,
    };
    let bed = Testbed::build(kind, "bench").context("building the namespaces")?;
    let config = DataplaneConfig {
        relay_ports: BASE_PORT..=BASE_PORT + (4 * args.streams) as u16,
        max_streams: args.streams.max(16),
    };
    let (mut dataplane, modes) = bed
        .start_relay(&config, AttachMode::Native)
        .context("starting the XDP relay")?;
    tracing::info!(?modes, streams = args.streams, "relay attached");

    let callee = SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT);
    let mut dests = Vec::new();
    let mut sources = Vec::new();
    let mut ids = Vec::new();
    for i in 0..args.streams {
        let port = BASE_PORT + (4 * i) as u16;
        let local = SocketAddrV4::new(bed.relay_caller_addr(), port);
        let source = SocketAddrV4::new(bed.relay_callee_addr(), port + 2);
        ids.push(dataplane.install(&StreamRule::fixed(local, source, callee))?);
        dests.push(local);
        sources.push(source);
    }

    let caller = SocketAddrV4::new(bed.caller_addr(), CALLER_PORT);
    let tx = bed
        .caller()
        .run(move || bind_udp(caller, SOCKET_BUFFER))??;
    let rx = bed
        .callee()
        .run(move || bind_udp(callee, SOCKET_BUFFER))??;
    warm_up(&bed, &tx, &rx, dests[0])?;

    dataplane.enable_program_stats()?;
    let before_prog = dataplane.program_stats()?;
    let before_verdicts = dataplane.counters()?;
    let before: Vec<_> = ids
        .iter()
        .map(|id| dataplane.stream_counters(*id))
        .collect::<Result<_, _>>()?;
    let session = SessionConfig {
        generator: GeneratorConfig {
            duration: Duration::from_secs(args.duration),
            ..GeneratorConfig::default()
        },
        expected_sources: Some(sources),
        ..SessionConfig::default()
    };
    let outcome = match args.generator {
        Generator::Sockets => run_session(&tx, &dests, &rx, &session)?,
        Generator::Xdp => {
            let (caller_iface, relay_iface) = caller_path(&bed);
            let path = FramePath {
                src_mac: bed.caller().mac(caller_iface)?,
                dst_mac: bed.relay().mac(relay_iface)?,
                src: caller,
                dst: dests[0],
            };
            let ifindex = bed.caller().ifindex(caller_iface)?;
            let streams = args.streams;
            let generator_cfg = session.generator.clone();
            let caller_ns = bed.caller();
            run_session_with(dests.len(), &rx, &session, move || {
                // Live frames leave through an interface of the calling thread's namespace.
                caller_ns
                    .run(move || -> Result<_, crate::xdpgen::XdpGenError> {
                        let mut generator = XdpGenerator::load()?;
                        generator.run(ifindex, &path, streams, BASE_PORT, 4, &generator_cfg)
                    })
                    .map_err(|e| SessionError::OtherGenerator(e.to_string()))?
                    .map_err(|e| SessionError::OtherGenerator(e.to_string()))
            })?
        }
    };
    let after_prog = dataplane.program_stats()?;
    let verdicts = dataplane.counters()?.since(&before_verdicts);
    tracing::info!(?verdicts, "relay verdicts during the run");

    let mut relay = RelayCounters::default();
    for (id, base) in ids.iter().zip(&before) {
        let now = dataplane.stream_counters(*id)?;
        relay.packets += now.packets - base.packets;
        relay.bytes += now.bytes - base.bytes;
    }
    relay.ns_per_packet = after_prog.ns_per_run_since(&before_prog);
    let mut report =
        StreamsReport::from_outcome("xdp", args.topology.as_str(), &outcome, Some(relay));
    report.generator = args.generator.as_str().to_owned();
    report.relay_drops = Some(verdicts.drops());
    Ok(report)
}

/// The caller's interface and the relay interface on the caller's segment.
fn caller_path(bed: &Testbed) -> (&'static str, &'static str) {
    match bed.kind() {
        TopologyKind::TwoArm => (
            sluice_dataplane::netns::TwoArm::CALLER_IFACE,
            sluice_dataplane::netns::TwoArm::RELAY_CALLER_IFACE,
        ),
        TopologyKind::OneArm => (
            sluice_dataplane::netns::OneArm::CALLER_IFACE,
            sluice_dataplane::netns::OneArm::RELAY_IFACE,
        ),
    }
}

/// One packet through the relay before measuring, so the neighbour entries exist and the first
/// measured packets are not the ones the stack forwards while it resolves them.
fn warm_up(
    bed: &Testbed,
    tx: &std::net::UdpSocket,
    rx: &std::net::UdpSocket,
    first: SocketAddrV4,
) -> Result<()> {
    rx.set_read_timeout(Some(Duration::from_secs(2)))?;
    tx.send_to(b"warm-up", first)?;
    let mut buf = [0u8; 64];
    let got = rx.recv_from(&mut buf);
    rx.set_read_timeout(None)?;
    if let Err(e) = got {
        bail!(
            "the warm-up packet did not cross the relay in {} ({e})",
            bed.kind().name()
        );
    }
    Ok(())
}
