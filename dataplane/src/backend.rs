//! The interface every forwarding path implements: XDP in the kernel, AF_XDP workers in
//! userspace, and plain sockets. The control plane, the end-to-end tests and the benchmark speak
//! only this, so the same tests run against each path.

use std::net::SocketAddrV4;

use crate::{CounterSnapshot, DataplaneError, StreamCounters, StreamId, StreamRule};

/// The forwarding paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The XDP program forwards in the driver (XDP_TX / XDP_REDIRECT).
    Xdp,
    /// The XDP program hands the relay's packets to AF_XDP sockets; pinned workers forward them.
    AfXdp,
    /// Plain UDP sockets with recvmmsg/sendmmsg: no privileges, runs anywhere.
    Sockets,
}

impl BackendKind {
    /// `xdp`, `afxdp` or `sockets`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Xdp => "xdp",
            BackendKind::AfXdp => "afxdp",
            BackendKind::Sockets => "sockets",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "xdp" => Ok(BackendKind::Xdp),
            "afxdp" => Ok(BackendKind::AfXdp),
            "sockets" => Ok(BackendKind::Sockets),
            other => Err(format!("unknown backend `{other}` (xdp, afxdp, sockets)")),
        }
    }
}

/// One forwarding path: stream rules in, counters out.
///
/// Counters are since the stream was installed. `counters` uses the XDP program's counter names
/// for every path; a path counts what applies to it (sockets never see a malformed header) and
/// counts its forwarded packets as [`Counter::Tx`](crate::Counter::Tx).
pub trait Forwarder: Send {
    /// Which path this is.
    fn kind(&self) -> BackendKind;
    /// Installs one direction of a stream.
    fn install(&mut self, rule: &StreamRule) -> Result<StreamId, DataplaneError>;
    /// Replaces an installed stream's rule, keeping its counters.
    fn update(&mut self, id: StreamId, rule: &StreamRule) -> Result<(), DataplaneError>;
    /// Removes a stream and returns its final counters.
    fn remove(&mut self, id: StreamId) -> Result<StreamCounters, DataplaneError>;
    /// A stream's packets, bytes and last-seen time since it was installed.
    fn stream_counters(&self, id: StreamId) -> Result<StreamCounters, DataplaneError>;
    /// The source a latching leg learned from its first packet, once it has.
    fn latched_peer(&self, id: StreamId) -> Result<Option<SocketAddrV4>, DataplaneError>;
    /// Verdict and drop counters since the path started.
    fn counters(&self) -> Result<CounterSnapshot, DataplaneError>;
}

impl Forwarder for crate::Dataplane {
    fn kind(&self) -> BackendKind {
        BackendKind::Xdp
    }

    fn install(&mut self, rule: &StreamRule) -> Result<StreamId, DataplaneError> {
        crate::Dataplane::install(self, rule)
    }

    fn update(&mut self, id: StreamId, rule: &StreamRule) -> Result<(), DataplaneError> {
        crate::Dataplane::update(self, id, rule)
    }

    fn remove(&mut self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        crate::Dataplane::remove(self, id)
    }

    fn stream_counters(&self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        crate::Dataplane::stream_counters(self, id)
    }

    fn latched_peer(&self, id: StreamId) -> Result<Option<SocketAddrV4>, DataplaneError> {
        crate::Dataplane::latched_peer(self, id)
    }

    fn counters(&self) -> Result<CounterSnapshot, DataplaneError> {
        crate::Dataplane::counters(self)
    }
}

/// Which path to start: one of the three, or `Auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// XDP when the program attaches natively to every relay interface, sockets otherwise.
    #[default]
    Auto,
    /// Exactly this path, or an error.
    Only(BackendKind),
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            other => other
                .parse()
                .map(BackendChoice::Only)
                .map_err(|e: String| format!("{e}, or auto")),
        }
    }
}

/// Everything the three paths need to start.
#[derive(Clone, Debug, Default)]
pub struct ForwarderConfig {
    /// Interfaces the relay serves (XDP and AF_XDP attach to them; sockets need none).
    pub ifaces: Vec<String>,
    pub xdp: crate::DataplaneConfig,
    pub afxdp: crate::AfXdpConfig,
    pub sockets: crate::SocketRelayConfig,
}

/// A started path, and why it was chosen.
pub struct StartedForwarder {
    pub forwarder: Box<dyn Forwarder>,
    pub kind: BackendKind,
    /// One sentence for the log and the operator: which path, and why.
    pub reason: String,
}

/// Starts the chosen path. Call it from a thread in the relay's network namespace: interfaces
/// resolve there, and the socket path binds there.
pub fn start_forwarder(
    choice: BackendChoice,
    config: &ForwarderConfig,
) -> Result<StartedForwarder, DataplaneError> {
    let started = |forwarder: Box<dyn Forwarder>, kind: BackendKind, reason: String| {
        tracing::info!(backend = kind.name(), %reason, "forwarding path started");
        Ok(StartedForwarder {
            forwarder,
            kind,
            reason,
        })
    };
    match choice {
        BackendChoice::Only(BackendKind::Sockets) => started(
            Box::new(crate::SocketRelay::start(config.sockets.clone())?),
            BackendKind::Sockets,
            "sockets, as configured".into(),
        ),
        BackendChoice::Only(kind) => {
            let dataplane = attach_natively(config)?;
            match kind {
                BackendKind::AfXdp => {
                    let mut afxdp = config.afxdp.clone();
                    // Workers go to the cores the host's plan gives their queues.
                    if afxdp.cores.is_empty() {
                        afxdp.cores = crate::afxdp::planned_cores(&config.ifaces);
                    }
                    started(
                        Box::new(crate::AfXdpRelay::start(dataplane, afxdp)?),
                        kind,
                        "AF_XDP, as configured".into(),
                    )
                }
                _ => started(Box::new(dataplane), kind, "XDP, as configured".into()),
            }
        }
        BackendChoice::Auto => match attach_natively(config) {
            Ok(dataplane) => started(
                Box::new(dataplane),
                BackendKind::Xdp,
                format!("XDP: attached natively to {}", config.ifaces.join(", ")),
            ),
            Err(why) => started(
                Box::new(crate::SocketRelay::start(config.sockets.clone())?),
                BackendKind::Sockets,
                format!("sockets: XDP is not possible here ({why})"),
            ),
        },
    }
}

fn attach_natively(config: &ForwarderConfig) -> Result<crate::Dataplane, DataplaneError> {
    if config.ifaces.is_empty() {
        return Err(DataplaneError::InvalidConfig(
            "the XDP paths need at least one relay interface".into(),
        ));
    }
    // The kernel refuses to route the relay's output through an interface without IPv4
    // forwarding: every stream would be dropped (`drop_fwd_disabled`). Say so before attaching.
    for iface in &config.ifaces {
        let key = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
        if std::fs::read_to_string(&key).is_ok_and(|v| v.trim() == "0") {
            return Err(DataplaneError::InvalidConfig(format!(
                "IPv4 forwarding is off on {iface}, so XDP would drop every stream leaving it: \
                 sysctl -w net.ipv4.conf.{iface}.forwarding=1 (sluice hw apply sets it)"
            )));
        }
    }
    let mut dataplane = crate::Dataplane::load(&config.xdp)?;
    for iface in &config.ifaces {
        dataplane.attach(iface, crate::AttachMode::Native)?;
    }
    Ok(dataplane)
}
