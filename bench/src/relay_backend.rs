//! The backends of `sluice-bench streams`: the relay under test (`xdp`, `afxdp` or `sockets`) in
//! namespaces built for the run, measured the same way whichever it is.
//!
//! Stream i is one direction of call i: the caller sends to the relay at port `base + 4i`, the
//! relay re-originates it from its callee-side address at port `base + 4i + 2` towards the callee,
//! as it would for a real call. One socket (or the live-frames XDP generator) sends all streams
//! and one socket receives them, so the generator and the receiver each cost one thread, measured
//! apart from the relay. Every backend gets the same one-way [`StreamRule::fixed`] per stream
//! through [`Forwarder::install`], and its per-stream counters are compared with what arrived.
//!
//! The relay's cost per packet is CPU time, not wall time:
//!
//! * `xdp`: the kernel's BPF run-time statistics of the relay program (run time / runs);
//! * `afxdp`: the same statistics for the program's hand-off to the AF_XDP sockets, plus the CPU
//!   time of the `afxdp-q*` worker threads over the packets they forwarded;
//! * `sockets`: the CPU time of the `sluice-sockets` worker thread over the packets it forwarded.
//!
//! Thread CPU time is user plus system time (system calls, and the softirq work the kernel runs
//! in the thread's context). Neither figure includes the kernel's work outside the program and
//! the threads: the copy into the UMEM (AF_XDP copy mode), the redirect into the egress veth
//! (`xdp`), or the receive path up to the socket (`sockets`) when it runs in another context.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sluice_dataplane::testbed::{Testbed, TopologyKind};
use sluice_dataplane::{
    AfXdpConfig, AfXdpRelay, AttachMode, Dataplane, DataplaneConfig, Forwarder, PassProgram,
    SocketRelay, SocketRelayConfig, StreamRule,
};

use crate::cli::{Backend, Generator, Pinning, StreamsArgs, Topology};
use crate::generator::GeneratorConfig;
use crate::report::{RelayCounters, StreamsReport};
use crate::session::{bind_udp, run_session, run_session_with, SessionConfig, SessionError};
use crate::threads::ThreadTimes;
use crate::xdpgen::{FramePath, XdpGenerator};

/// First relay port; each stream takes four (its RTP and RTCP, and the other leg's).
pub(crate) const BASE_PORT: u16 = 20000;
pub(crate) const CALLER_PORT: u16 = 4000;
pub(crate) const CALLEE_PORT: u16 = 5000;
/// Socket buffers: a second of 2000 streams' packets, so a scheduling hiccup loses nothing.
pub(crate) const SOCKET_BUFFER: usize = 64 << 20;
/// The socket relay's buffers per socket: each relay socket carries one stream (50 packets/s),
/// so a few hundred kilobytes hold seconds of it; the sum over 4000 sockets is what matters.
const RELAY_SOCKET_BUFFER: usize = 1 << 20;

/// AF_XDP ring entries: 80 ms of 2000 streams, so a worker that waits for its CPU while the
/// generator catches up at four times the rate overflows no RX ring (the default, 2048, is 20 ms).
const AFXDP_RING: u32 = 8192;
/// UMEM frames per worker (2 KiB each): the fill rings of both interfaces full, plus what is in
/// flight on the RX, TX and completion rings.
const AFXDP_FRAMES: u32 = 4 * AFXDP_RING;

/// Most streams the port plan allows.
pub const MAX_STREAMS: u32 = (u16::MAX - BASE_PORT) as u32 / 4;

/// The relay under test.
enum Relay {
    Xdp(Dataplane),
    AfXdp {
        relay: AfXdpRelay,
        /// The CPUs its workers are pinned to.
        cores: Vec<usize>,
    },
    Sockets {
        relay: SocketRelay,
        /// On the relay's interfaces when the live-frames generator feeds it: a veth delivers
        /// XDP frames only to a peer with an XDP program.
        _pass: Vec<PassProgram>,
    },
}

impl Relay {
    fn forwarder(&self) -> &dyn Forwarder {
        match self {
            Relay::Xdp(d) => d,
            Relay::AfXdp { relay, .. } => relay,
            Relay::Sockets { relay, .. } => relay,
        }
    }

    fn forwarder_mut(&mut self) -> &mut dyn Forwarder {
        match self {
            Relay::Xdp(d) => d,
            Relay::AfXdp { relay, .. } => relay,
            Relay::Sockets { relay, .. } => relay,
        }
    }

    /// The XDP program, whose run time is the kernel's part of the cost.
    fn program(&self) -> Option<&Dataplane> {
        match self {
            Relay::Xdp(d) => Some(d),
            Relay::AfXdp { relay, .. } => Some(relay.dataplane()),
            Relay::Sockets { .. } => None,
        }
    }

    /// CPUs the relay's userspace workers are pinned to.
    fn pinned_cores(&self) -> &[usize] {
        match self {
            Relay::AfXdp { cores, .. } => cores,
            _ => &[],
        }
    }

    /// Name prefix of the threads that forward in userspace.
    fn worker_threads(&self) -> Option<&'static str> {
        match self {
            Relay::Xdp(_) => None,
            Relay::AfXdp { .. } => Some("afxdp-q"),
            Relay::Sockets { .. } => Some("sluice-sockets"),
        }
    }
}

/// Runs one measurement of one backend (not [`Backend::All`]) and returns its report.
pub fn run(args: &StreamsArgs, backend: Backend) -> Result<StreamsReport> {
    if backend == Backend::All {
        bail!("run one backend at a time; `all` is a sequence of runs");
    }
    if backend == Backend::None {
        return crate::external::run(args, crate::external::RelayKind::None);
    }
    if args.streams > MAX_STREAMS {
        bail!(
            "--streams {}: at most {MAX_STREAMS} with one relay address",
            args.streams
        );
    }
    sluice_dataplane::netns::can_create_netns().map_err(|why| {
        anyhow::anyhow!(
            "the {} backend builds network namespaces: {why}",
            backend.as_str()
        )
    })?;
    let kind = match args.topology {
        Topology::TwoArm => TopologyKind::TwoArm,
        Topology::OneArm => TopologyKind::OneArm,
    };
    let bed = Testbed::build(kind, "bench").context("building the namespaces")?;
    let mut relay = start(&bed, args, backend)?;
    let pid = crate::procstat::self_pid();
    let rss_idle = crate::procstat::rss_bytes(pid);
    let setup_started = std::time::Instant::now();

    let callee = SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT);
    let mut dests = Vec::new();
    let mut sources = Vec::new();
    let mut rules = Vec::new();
    for i in 0..args.streams {
        let port = BASE_PORT + (4 * i) as u16;
        let local = SocketAddrV4::new(bed.relay_caller_addr(), port);
        let source = SocketAddrV4::new(bed.relay_callee_addr(), port + 2);
        rules.push(StreamRule::fixed(local, source, callee));
        dests.push(local);
        sources.push(source);
    }
    // The socket relay binds its sockets in the installing thread's namespace.
    let forwarder = relay.forwarder_mut();
    let ids = bed
        .relay()
        .run(|| {
            rules
                .iter()
                .map(|rule| forwarder.install(rule))
                .collect::<Result<Vec<_>, _>>()
        })?
        .context("installing the streams")?;
    let setup_s = setup_started.elapsed().as_secs_f64();

    let caller = SocketAddrV4::new(bed.caller_addr(), CALLER_PORT);
    let tx = bed
        .caller()
        .run(move || bind_udp(caller, SOCKET_BUFFER))??;
    let rx = bed
        .callee()
        .run(move || bind_udp(callee, SOCKET_BUFFER))??;
    warm_up(&bed, &tx, &rx, dests[0])?;

    let forwarder = relay.forwarder();
    let before_prog = relay.program().map(Dataplane::program_stats).transpose()?;
    let threads = relay.worker_threads();
    let before_threads = threads.map(ThreadTimes::read);
    let before_verdicts = forwarder.counters()?;
    let before: Vec<_> = ids
        .iter()
        .map(|id| forwarder.stream_counters(*id))
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
            // The live-frames generator keeps a CPU busy for the whole run: keep it off the CPUs
            // the relay's workers are pinned to.
            let generator_cpu = cpu_outside(relay.pinned_cores());
            if let Some(cpu) = generator_cpu {
                tracing::info!(
                    cpu,
                    "live-frames generator pinned away from the relay's workers"
                );
            }
            run_session_with(dests.len(), &rx, &session, move || {
                // Live frames leave through an interface of the calling thread's namespace.
                caller_ns
                    .run(move || -> Result<_, crate::xdpgen::XdpGenError> {
                        if let Some(cpu) = generator_cpu {
                            pin_current_thread(cpu);
                        }
                        let mut generator = XdpGenerator::load()?;
                        generator.run(ifindex, &path, streams, BASE_PORT, 4, &generator_cfg)
                    })
                    .map_err(|e| SessionError::OtherGenerator(e.to_string()))?
                    .map_err(|e| SessionError::OtherGenerator(e.to_string()))
            })?
        }
    };
    let after_threads = threads.map(ThreadTimes::read);
    let after_prog = relay.program().map(Dataplane::program_stats).transpose()?;
    let verdicts = forwarder.counters()?.since(&before_verdicts);
    tracing::info!(?verdicts, "relay verdicts during the run");

    let mut counters = RelayCounters::default();
    for (id, base) in ids.iter().zip(&before) {
        let now = forwarder.stream_counters(*id)?;
        counters.packets += now.packets - base.packets;
        counters.bytes += now.bytes - base.bytes;
    }
    counters.kernel_ns_per_packet = match (after_prog, before_prog) {
        (Some(after), Some(before)) => after.ns_per_run_since(&before),
        _ => None,
    };
    counters.user_ns_per_packet = match (&after_threads, &before_threads) {
        (Some(after), Some(before)) if counters.packets > 0 && after.threads() > 0 => {
            let cpu = after.since(before);
            tracing::info!(
                threads = after.threads(),
                cpu_s = cpu as f64 / 1e9,
                "relay worker CPU time during the session"
            );
            Some(cpu as f64 / counters.packets as f64)
        }
        _ => None,
    };
    counters.ns_per_packet = match (counters.kernel_ns_per_packet, counters.user_ns_per_packet) {
        (None, None) => None,
        (k, u) => Some(k.unwrap_or(0.0) + u.unwrap_or(0.0)),
    };
    let mut report = StreamsReport::from_outcome(
        backend.as_str(),
        args.topology.as_str(),
        &outcome,
        Some(counters),
    );
    report.generator = args.generator.as_str().to_owned();
    report.relay_drops = Some(verdicts.drops());
    report.setup_s = setup_s;
    let bpf_cpu = match (after_prog, before_prog) {
        (Some(after), Some(before)) => Some(after.run_time_ns.saturating_sub(before.run_time_ns)),
        _ => None,
    };
    let thread_cpu = match (&after_threads, &before_threads) {
        (Some(after), Some(before)) => Some(after.since(before)),
        _ => None,
    };
    report.relay_cpu_s = match (bpf_cpu, thread_cpu) {
        (None, None) => None,
        (b, t) => Some((b.unwrap_or(0) + t.unwrap_or(0)) as f64 / 1e9),
    };
    let (maps, _) = crate::procstat::bpf_map_bytes(pid);
    report.set_memory(
        "bench process",
        rss_idle,
        crate::procstat::rss_bytes(pid),
        maps,
    );
    // The relay (and its sockets and workers) go before the namespaces.
    drop(relay);
    drop(bed);
    Ok(report)
}

/// Starts the backend's relay in the testbed's relay namespace.
fn start(bed: &Testbed, args: &StreamsArgs, backend: Backend) -> Result<Relay> {
    let config = DataplaneConfig {
        relay_ports: BASE_PORT..=BASE_PORT + (4 * args.streams) as u16,
        max_streams: args.streams.max(16),
    };
    match backend {
        Backend::Xdp => {
            let (mut dataplane, modes) = bed
                .start_relay(&config, AttachMode::Native)
                .context("starting the XDP relay")?;
            tracing::info!(?modes, streams = args.streams, "XDP relay attached");
            dataplane.enable_program_stats()?;
            Ok(Relay::Xdp(dataplane))
        }
        Backend::Afxdp => {
            let (mut dataplane, modes) = bed
                .start_relay(&config, AttachMode::Native)
                .context("starting the XDP relay under the AF_XDP workers")?;
            tracing::info!(?modes, streams = args.streams, "XDP relay attached");
            // Before the workers own the dataplane: statistics stay on while it lives.
            dataplane.enable_program_stats()?;
            let afxdp = AfXdpConfig {
                cores: match args.pin {
                    Pinning::Plan => planned_cores(bed),
                    Pinning::None => Vec::new(),
                },
                ring_size: AFXDP_RING,
                frames: AFXDP_FRAMES,
                frame_size: 2048,
                ..AfXdpConfig::default()
            };
            let cores = afxdp.cores.clone();
            let relay = bed
                .relay()
                .run(move || AfXdpRelay::start(dataplane, afxdp))?
                .context("starting the AF_XDP workers")?;
            let modes: Vec<String> = relay
                .mode()
                .iter()
                .map(|s| format!("{} q{} {}", s.iface, s.queue, s.mode.name()))
                .collect();
            let pinned: Vec<String> = (0..relay.workers())
                .map(|q| match cores.get(q).copied().flatten() {
                    Some(core) => format!("afxdp-q{q} on CPU {core}"),
                    None => format!("afxdp-q{q} unpinned"),
                })
                .collect();
            tracing::info!(?modes, ?pinned, "AF_XDP workers started");
            let cores = (0..relay.workers())
                .filter_map(|q| cores.get(q).copied().flatten())
                .collect();
            Ok(Relay::AfXdp { relay, cores })
        }
        Backend::Sockets => {
            raise_fd_limit(u64::from(args.streams) * 2 + 256);
            let config = SocketRelayConfig {
                recv_buffer: RELAY_SOCKET_BUFFER,
                send_buffer: RELAY_SOCKET_BUFFER,
                ..SocketRelayConfig::default()
            };
            let ifaces = bed.relay_ifaces();
            let live_frames = args.generator == Generator::Xdp;
            let (relay, pass) = bed.relay().run(move || -> Result<_> {
                let relay = SocketRelay::start(config)?;
                let mut pass = Vec::new();
                if live_frames {
                    for iface in ifaces {
                        pass.push(PassProgram::attach(iface)?);
                    }
                }
                Ok((relay, pass))
            })??;
            tracing::info!(
                config = ?relay.config(),
                pass_programs = pass.len(),
                "socket relay started"
            );
            Ok(Relay::Sockets { relay, _pass: pass })
        }
        Backend::All | Backend::None => bail!("`{}` is not a relay backend", backend.as_str()),
    }
}

/// The core of each AF_XDP worker (by queue) from this host's core plan: see
/// [`sluice_dataplane::afxdp::planned_cores`].
fn planned_cores(bed: &Testbed) -> Vec<Option<usize>> {
    let ifaces: Vec<String> = bed.relay_ifaces().iter().map(|i| i.to_string()).collect();
    sluice_dataplane::afxdp::planned_cores(&ifaces)
}

/// The first CPU this process may run on that is not in `taken`, when `taken` is not empty.
fn cpu_outside(taken: &[usize]) -> Option<usize> {
    if taken.is_empty() {
        return None;
    }
    // SAFETY: an all-zero cpu_set_t is the empty set; sched_getaffinity fills the one we own.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    (0..libc::CPU_SETSIZE as usize).find(|&cpu| {
        // SAFETY: cpu is below CPU_SETSIZE.
        let allowed = unsafe { libc::CPU_ISSET(cpu, &set) };
        allowed && !taken.contains(&cpu)
    })
}

/// Pins the calling thread to one CPU; logs and carries on if it cannot.
fn pin_current_thread(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu is a CPU this process may run on, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity reads the set we own.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        tracing::warn!(cpu, error = %std::io::Error::last_os_error(), "could not pin the generator");
    }
}

/// Raises this process's open-file limit to at least `wanted` (the socket relay binds two
/// sockets per stream), as far as the hard limit allows, or beyond it as root.
pub(crate) fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur >= wanted {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.max(limit.rlim_cur),
        rlim_max: wanted.max(limit.rlim_max),
    };
    // SAFETY: setrlimit reads one rlimit we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let capped = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) };
        tracing::warn!(
            wanted,
            hard = limit.rlim_max,
            "could not raise the open-file limit; the socket relay may run out of descriptors"
        );
    }
}

/// The caller's interface and the relay interface on the caller's segment.
pub(crate) fn caller_path(bed: &Testbed) -> (&'static str, &'static str) {
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
pub(crate) fn warm_up(
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
