//! Relays measured as separate processes, set up the way a SIP proxy sets them up: `sluice
//! relay` (`--setup ng`) and rtpengine (`--against rtpengine`) run in the relay namespace of the
//! same two-arm testbed, and every stream is one call with an ng offer (the caller's SDP) and an
//! answer (the callee's SDP). The baseline `none` runs no relay at all: the relay namespace
//! routes the caller's packets to the callee.
//!
//! The generator and receiver are the same as for the in-process backends. The live-frames
//! generator sends stream `i` to `base + step * i`; when the ports the relay handed out do not
//! form such a progression, the socket generator (`sendmmsg`, one destination per stream) runs
//! instead, and the report's `generator` key says so.
//!
//! The relay's cost per packet is the relay process's CPU time (`/proc/<pid>/stat` utime +
//! stime, all threads) over the packets received, plus, for Sluice's XDP path, the run time of
//! the BPF programs the process holds (kernel statistics, enabled for the run) over their runs.
//! Neither includes the kernel's work outside the process and its programs (softirq receive
//! processing charged elsewhere), for either relay.

use std::fs::File;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sluice_dataplane::testbed::{Testbed, TopologyKind};
use sluice_dataplane::PassProgram;

use crate::cli::{Backend, Generator, StreamsArgs, Topology};
use crate::generator::GeneratorConfig;
use crate::ng::{offer_answer, NgClient};
use crate::procstat::{self, Sample};
use crate::relay_backend::{
    caller_path, raise_fd_limit, warm_up, BASE_PORT, CALLEE_PORT, CALLER_PORT, SOCKET_BUFFER,
};
use crate::report::{RelayCounters, StreamsReport};
use crate::session::{bind_udp, run_session, run_session_with, SessionConfig, SessionError};
use crate::xdpgen::{FramePath, XdpGenerator};

/// Where the relay's ng socket listens, on the relay namespace's loopback.
const NG_ADDR: &str = "127.0.0.1:2223";
/// Sluice's management API, on the same loopback.
const API_ADDR: &str = "127.0.0.1:2225";
/// The relay port range handed to either relay (a call takes an RTP and an RTCP port on each
/// side).
const PORT_MIN: u16 = BASE_PORT;
const PORT_MAX: u16 = 65_000;

/// The last relay port for `streams` calls. rtpengine keeps a port pool per interface and picks
/// free pairs from it in no regular order; a pool exactly `streams` pairs wide makes it use
/// every pair, so the caller-side ports, in order, are `PORT_MIN + 2i`, which the live-frames
/// generator can address. Sluice allocates in order from a wide range.
fn port_max(kind: RelayKind, streams: u32) -> u16 {
    match kind {
        RelayKind::Rtpengine => {
            (u32::from(PORT_MIN) + 2 * streams - 1).min(u32::from(PORT_MAX)) as u16
        }
        _ => PORT_MAX,
    }
}

/// Most calls the port range holds, if each side's ports came from one pool.
pub const MAX_NG_STREAMS: u32 = (PORT_MAX - PORT_MIN) as u32 / 4;

/// The relay measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayKind {
    /// `sluice relay --backend <backend>`.
    Sluice(Backend),
    /// rtpengine, userspace forwarding.
    Rtpengine,
    /// The kernel's IP forwarding, no relay.
    None,
}

impl RelayKind {
    fn name(self) -> &'static str {
        match self {
            RelayKind::Sluice(_) => "sluice",
            RelayKind::Rtpengine => "rtpengine",
            RelayKind::None => "none",
        }
    }
}

/// A relay process in the relay namespace; dropping it stops it (SIGTERM, then SIGKILL).
struct RelayProcess {
    child: Child,
    log: PathBuf,
    what: String,
}

impl RelayProcess {
    fn spawn(bed: &Testbed, what: &str, binary: &Path, args: &[String]) -> Result<Self> {
        let log =
            std::env::temp_dir().join(format!("sluice-bench-{}-{}.log", what, std::process::id()));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        // `ip netns exec` execs the relay in place: the child's PID is the relay's.
        let child = Command::new("ip")
            .args(["netns", "exec", bed.relay().name()])
            .arg(binary)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {what} ({})", binary.display()))?;
        tracing::info!(pid = child.id(), log = %log.display(), "{what} started");
        Ok(Self {
            child,
            log,
            what: what.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails with the log when the process is gone.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log ({}):\n{}",
                self.what,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the PID is our child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(pid, "{} ignored SIGTERM for 5 s; killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sluice` binary: `--sluice-bin`, `$SLUICE_BIN`, or `sluice` next to this binary.
pub fn sluice_binary(args: &StreamsArgs) -> Result<PathBuf> {
    let path = match (&args.sluice_bin, std::env::var_os("SLUICE_BIN")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("this binary has no directory"))?
            .join("sluice"),
    };
    if !path.is_file() {
        bail!(
            "no sluice binary at {} (build it with `cargo build -p sluice` in the same profile, \
             or pass --sluice-bin)",
            path.display()
        );
    }
    Ok(path)
}

/// The `rtpengine` binary, or a clear error when it is not installed.
pub fn rtpengine_binary(args: &StreamsArgs) -> Result<PathBuf> {
    let given = &args.rtpengine_bin;
    let found = if given.components().count() > 1 {
        given.is_file().then(|| given.clone())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(given))
                .find(|p| p.is_file())
        })
    };
    found.ok_or_else(|| {
        anyhow!(
            "--against rtpengine: no `{}` binary; install Debian's rtpengine-daemon \
             (`.ci/setup` does) or pass --rtpengine-bin",
            given.display()
        )
    })
}

fn start_process(bed: &Testbed, args: &StreamsArgs, kind: RelayKind) -> Result<RelayProcess> {
    let caller_if = format!("caller/{}", bed.relay_caller_addr());
    let callee_if = format!("callee/{}", bed.relay_callee_addr());
    match kind {
        RelayKind::Sluice(backend) => {
            let binary = sluice_binary(args)?;
            let args: Vec<String> = [
                "relay",
                "--interface",
                &caller_if,
                "--interface",
                &callee_if,
                "--listen-ng",
                NG_ADDR,
                "--port-min",
                &PORT_MIN.to_string(),
                "--port-max",
                &port_max(kind, args.streams).to_string(),
                "--timeout",
                "600",
                "--api-listen",
                API_ADDR,
                "--backend",
                backend.as_str(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            RelayProcess::spawn(bed, "sluice-relay", &binary, &args)
        }
        RelayKind::Rtpengine => {
            let binary = rtpengine_binary(args)?;
            let args: Vec<String> = vec![
                "--config-file=none".into(),
                "--foreground".into(),
                "--log-stderr".into(),
                "--log-level=4".into(),
                // No kernel forwarding: its module cannot be built here.
                "--table=-1".into(),
                format!("--interface={caller_if}"),
                format!("--interface={callee_if}"),
                format!("--listen-ng={NG_ADDR}"),
                format!("--port-min={PORT_MIN}"),
                format!("--port-max={}", port_max(kind, args.streams)),
                "--timeout=600".into(),
                "--delete-delay=0".into(),
            ];
            RelayProcess::spawn(bed, "rtpengine", &binary, &args)
        }
        RelayKind::None => bail!("no process for the `none` baseline"),
    }
}

/// Where stream `i` goes when the ports are `base + step * i` in stream order.
fn progression(ports: &[u16]) -> Option<(u16, u16)> {
    let base = *ports.first()?;
    if ports.len() == 1 {
        return Some((base, 0));
    }
    let step = ports[1].checked_sub(base).filter(|&s| s > 0)?;
    ports
        .iter()
        .enumerate()
        .all(|(i, &p)| u32::from(base) + u32::from(step) * i as u32 == u32::from(p))
        .then_some((base, step))
}

/// Measures one relay process (or the `none` baseline) with `args.streams` streams.
pub fn run(args: &StreamsArgs, kind: RelayKind) -> Result<StreamsReport> {
    if args.topology != Topology::TwoArm {
        bail!(
            "{} runs on the two-arm topology only (a relay interface per side)",
            kind.name()
        );
    }
    if kind != RelayKind::None && args.streams > MAX_NG_STREAMS {
        bail!(
            "--streams {}: at most {MAX_NG_STREAMS} calls fit the relay port range",
            args.streams
        );
    }
    sluice_dataplane::netns::can_create_netns()
        .map_err(|why| anyhow!("{} builds network namespaces: {why}", kind.name()))?;
    // rtpengine and the socket relay hold a socket per port (four per call); the child inherits
    // the limit.
    raise_fd_limit(u64::from(args.streams) * 4 + 1024);
    let bed = Testbed::build(TopologyKind::TwoArm, "bench").context("building the namespaces")?;
    let caller = SocketAddrV4::new(bed.caller_addr(), CALLER_PORT);
    let callee = SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT);

    // The kernel's run-time statistics of BPF programs, while this lives.
    let _stats = match kind {
        RelayKind::Sluice(_) => Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .map_err(|e| anyhow!("BPF_ENABLE_STATS: {}", e.io_error))?,
        ),
        _ => None,
    };
    let mut process = match kind {
        RelayKind::None => None,
        _ => Some(start_process(&bed, args, kind)?),
    };
    // A veth delivers live XDP frames only to a peer with an XDP program: when the relay does
    // not attach one, a pass program does (its cost is not the relay's, and is not counted).
    let relay_has_xdp = matches!(
        kind,
        RelayKind::Sluice(Backend::Xdp) | RelayKind::Sluice(Backend::Afxdp)
    );
    let mut _pass = Vec::new();
    if args.generator == Generator::Xdp && !relay_has_xdp {
        for iface in bed.relay_ifaces() {
            _pass.push(bed.relay().run(|| PassProgram::attach(iface))??);
        }
    }

    let ng = match &process {
        Some(_) => {
            let server: SocketAddr = NG_ADDR.parse()?;
            let socket = bed.relay().run(|| UdpSocket::bind("127.0.0.1:0"))??;
            let ng = NgClient::new(socket, server);
            let waited = ng.wait_for_pong(Duration::from_secs(20));
            if let Some(p) = process.as_mut() {
                p.check_alive()?;
            }
            waited?;
            Some(ng)
        }
        None => None,
    };
    let pid = process.as_ref().map(RelayProcess::pid);
    // Sluice answers ping before the dataplane is attached everywhere: give it a moment.
    if pid.is_some() {
        std::thread::sleep(Duration::from_millis(300));
    }
    let rss_idle = pid.and_then(procstat::rss_bytes);

    // One call per stream.
    let setup_started = Instant::now();
    let mut streams: Vec<(SocketAddrV4, SocketAddrV4)> = Vec::new(); // (dest, expected source)
    match ng.as_ref() {
        Some(ng) => {
            for i in 0..args.streams {
                let anchors = offer_answer(ng, &format!("bench-{i}"), caller, callee)
                    .with_context(|| format!("setting up call {i} over ng"))?;
                streams.push((anchors.caller_side, anchors.callee_side));
            }
        }
        None => streams.resize(args.streams as usize, (callee, caller)),
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    tracing::info!(
        streams = args.streams,
        setup_s,
        "{} streams set up",
        kind.name()
    );
    // In port order, so that the live-frames generator can address them.
    streams.sort_by_key(|(dest, _)| dest.port());
    let dests: Vec<SocketAddrV4> = streams.iter().map(|s| s.0).collect();
    let sources: Vec<SocketAddrV4> = streams.iter().map(|s| s.1).collect();
    let ports: Vec<u16> = dests.iter().map(SocketAddrV4::port).collect();
    let plan = match kind {
        RelayKind::None => Some((CALLEE_PORT, 0)),
        _ => progression(&ports),
    };
    let generator = match (args.generator, plan) {
        (Generator::Xdp, Some(_)) => Generator::Xdp,
        (Generator::Xdp, None) => {
            tracing::warn!(
                first = ?ports.iter().take(4).collect::<Vec<_>>(),
                "the relay's ports are not an arithmetic progression: the socket generator runs instead"
            );
            Generator::Sockets
        }
        (g, _) => g,
    };

    let tx = bed
        .caller()
        .run(move || bind_udp(caller, SOCKET_BUFFER))??;
    let rx = bed
        .callee()
        .run(move || bind_udp(callee, SOCKET_BUFFER))??;
    warm_up(&bed, &tx, &rx, dests[0])?;

    let session = SessionConfig {
        generator: GeneratorConfig {
            duration: Duration::from_secs(args.duration),
            ..GeneratorConfig::default()
        },
        expected_sources: Some(sources),
        ..SessionConfig::default()
    };
    let before = pid.map(Sample::read);
    let outcome = match generator {
        Generator::Sockets => run_session(&tx, &dests, &rx, &session)?,
        Generator::Xdp => {
            let (base, step) = plan.unwrap_or((BASE_PORT, 4));
            let (caller_iface, relay_iface) = caller_path(&bed);
            let path = FramePath {
                src_mac: bed.caller().mac(caller_iface)?,
                dst_mac: bed.relay().mac(relay_iface)?,
                src: caller,
                dst: dests[0],
            };
            let ifindex = bed.caller().ifindex(caller_iface)?;
            let n = args.streams;
            let generator_cfg = session.generator.clone();
            let caller_ns = bed.caller();
            run_session_with(dests.len(), &rx, &session, move || {
                caller_ns
                    .run(move || -> Result<_, crate::xdpgen::XdpGenError> {
                        let mut generator = XdpGenerator::load()?;
                        generator.run(ifindex, &path, n, base, step, &generator_cfg)
                    })
                    .map_err(|e| SessionError::OtherGenerator(e.to_string()))?
                    .map_err(|e| SessionError::OtherGenerator(e.to_string()))
            })?
        }
    };
    let after = pid.map(Sample::read);
    if let Some(p) = process.as_mut() {
        p.check_alive()?;
    }

    let packets = outcome.receiver.datagrams;
    let counters = match (before, after) {
        (Some(b), Some(a)) => {
            let cpu = a.cpu_ns.saturating_sub(b.cpu_ns);
            let runs = a.bpf_runs.saturating_sub(b.bpf_runs);
            let bpf = a.bpf_run_ns.saturating_sub(b.bpf_run_ns);
            let user = (packets > 0).then(|| cpu as f64 / packets as f64);
            let kernel = (runs > 0).then(|| bpf as f64 / runs as f64);
            Some((
                RelayCounters {
                    packets,
                    bytes: outcome.receiver.bytes,
                    ns_per_packet: match (kernel, user) {
                        (None, None) => None,
                        (k, u) => Some(k.unwrap_or(0.0) + u.unwrap_or(0.0)),
                    },
                    kernel_ns_per_packet: kernel,
                    user_ns_per_packet: user,
                },
                (cpu + bpf) as f64 / 1e9,
            ))
        }
        _ => None,
    };
    let backend = match kind {
        RelayKind::Sluice(b) => b.as_str(),
        RelayKind::Rtpengine => "rtpengine",
        RelayKind::None => "none",
    };
    let mut report = StreamsReport::from_outcome(
        backend,
        args.topology.as_str(),
        &outcome,
        counters.map(|c| c.0),
    );
    // The relay's counters here are what the receiver saw, not the relay's own: not a check.
    report.relay_packets = None;
    report.relay_bytes = None;
    report.counters_match = false;
    report.generator = generator.as_str().to_owned();
    report.relay = kind.name().to_owned();
    report.setup = match kind {
        RelayKind::None => "none",
        _ => "ng",
    }
    .to_owned();
    report.setup_s = setup_s;
    report.relay_cpu_s = counters.map(|c| c.1);
    if let Some(pid) = pid {
        let (maps, _) = procstat::bpf_map_bytes(pid);
        report.set_memory("relay process", rss_idle, procstat::rss_bytes(pid), maps);
    }
    drop(process);
    drop(_pass);
    drop(bed);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_port_progressions() {
        assert_eq!(progression(&[20000, 20004, 20008]), Some((20000, 4)));
        assert_eq!(progression(&[30000]), Some((30000, 0)));
        assert_eq!(progression(&[20000, 20002, 20008]), None);
        assert_eq!(progression(&[20000, 20000]), None);
        assert_eq!(progression(&[]), None);
    }
}
