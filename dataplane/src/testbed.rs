//! A relay between a caller and a callee in network namespaces, ready to carry streams: the
//! topology from [`netns`](crate::netns), the pass programs its far ends need, and the relay
//! program attached. The end-to-end tests, `sluice demo` and `sluice-bench` all start here.

use std::net::Ipv4Addr;

use crate::netns::{NatPair, NetNs, NetnsError, OneArm, TwoArm};
use crate::{
    start_forwarder, AttachMode, AttachedMode, BackendChoice, Dataplane, DataplaneConfig,
    DataplaneError, ForwarderConfig, PassProgram, StartedForwarder,
};

/// The shape of the test network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyKind {
    /// Caller and callee on separate relay interfaces: the relay forwards with XDP_REDIRECT.
    TwoArm,
    /// Caller, callee and relay on one bridged segment: the relay forwards with XDP_TX.
    OneArm,
}

impl TopologyKind {
    /// `two-arm` or `one-arm`.
    pub fn name(self) -> &'static str {
        match self {
            TopologyKind::TwoArm => "two-arm",
            TopologyKind::OneArm => "one-arm",
        }
    }
}

impl std::str::FromStr for TopologyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "two-arm" => Ok(TopologyKind::TwoArm),
            "one-arm" => Ok(TopologyKind::OneArm),
            other => Err(format!("unknown topology `{other}` (two-arm, one-arm)")),
        }
    }
}

/// An error while building a testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

enum Topology {
    TwoArm(TwoArm),
    OneArm(OneArm),
}

/// A caller, a relay and a callee, each in its own namespace.
pub struct Testbed {
    // Detached before the namespaces go away.
    _pass: Vec<PassProgram>,
    topology: Topology,
}

impl Testbed {
    /// Builds the namespaces and attaches the pass programs the far ends need.
    pub fn build(kind: TopologyKind, tag: &str) -> Result<Self, TestbedError> {
        let topology = match kind {
            TopologyKind::TwoArm => Topology::TwoArm(TwoArm::build(tag)?),
            TopologyKind::OneArm => Topology::OneArm(OneArm::build(tag)?),
        };
        let far_ends = match &topology {
            Topology::TwoArm(t) => t.far_ends(),
            Topology::OneArm(t) => t.far_ends(),
        };
        let mut pass = Vec::new();
        for (ns, iface) in far_ends {
            pass.push(ns.run(|| PassProgram::attach(iface))??);
        }
        Ok(Self {
            _pass: pass,
            topology,
        })
    }

    /// The topology's kind.
    pub fn kind(&self) -> TopologyKind {
        match self.topology {
            Topology::TwoArm(_) => TopologyKind::TwoArm,
            Topology::OneArm(_) => TopologyKind::OneArm,
        }
    }

    /// The caller's namespace.
    pub fn caller(&self) -> &NetNs {
        match &self.topology {
            Topology::TwoArm(t) => t.caller(),
            Topology::OneArm(t) => t.caller(),
        }
    }

    /// The relay's namespace.
    pub fn relay(&self) -> &NetNs {
        match &self.topology {
            Topology::TwoArm(t) => t.relay(),
            Topology::OneArm(t) => t.relay(),
        }
    }

    /// The callee's namespace.
    pub fn callee(&self) -> &NetNs {
        match &self.topology {
            Topology::TwoArm(t) => t.callee(),
            Topology::OneArm(t) => t.callee(),
        }
    }

    /// The caller's address.
    pub fn caller_addr(&self) -> Ipv4Addr {
        match self.topology {
            Topology::TwoArm(_) => TwoArm::CALLER_ADDR,
            Topology::OneArm(_) => OneArm::CALLER_ADDR,
        }
    }

    /// The callee's address.
    pub fn callee_addr(&self) -> Ipv4Addr {
        match self.topology {
            Topology::TwoArm(_) => TwoArm::CALLEE_ADDR,
            Topology::OneArm(_) => OneArm::CALLEE_ADDR,
        }
    }

    /// The relay's address facing the caller.
    pub fn relay_caller_addr(&self) -> Ipv4Addr {
        match self.topology {
            Topology::TwoArm(_) => TwoArm::RELAY_CALLER_ADDR,
            Topology::OneArm(_) => OneArm::RELAY_ADDR,
        }
    }

    /// The relay's address facing the callee.
    pub fn relay_callee_addr(&self) -> Ipv4Addr {
        match self.topology {
            Topology::TwoArm(_) => TwoArm::RELAY_CALLEE_ADDR,
            Topology::OneArm(_) => OneArm::RELAY_ADDR,
        }
    }

    /// The relay's interfaces.
    pub fn relay_ifaces(&self) -> &'static [&'static str] {
        match self.topology {
            Topology::TwoArm(_) => &[TwoArm::RELAY_CALLER_IFACE, TwoArm::RELAY_CALLEE_IFACE],
            Topology::OneArm(_) => &[OneArm::RELAY_IFACE],
        }
    }

    /// Moves the NAPI polling of the far ends' veths (where relayed frames arrive) to kernel
    /// threads, so delivering to the receiving endpoint's stack no longer runs inside the
    /// sending thread's system call and the scheduler can put it on another core, as a real NIC
    /// on another host would. Call it once the relay is attached.
    pub fn threaded_napi(&self) -> Result<(), TestbedError> {
        for (ns, iface) in self.far_ends() {
            ns.exec(&[
                "sh",
                "-c",
                &format!("echo 1 > /sys/class/net/{iface}/threaded"),
            ])?;
        }
        Ok(())
    }

    fn far_ends(&self) -> Vec<(&NetNs, &'static str)> {
        match &self.topology {
            Topology::TwoArm(t) => t.far_ends(),
            Topology::OneArm(t) => t.far_ends(),
        }
    }

    /// Loads the relay program in the relay namespace, attaches it to every relay interface
    /// and declares the relay's addresses. Returns the dataplane and the modes it got.
    pub fn start_relay(
        &self,
        config: &DataplaneConfig,
        mode: AttachMode,
    ) -> Result<(Dataplane, Vec<AttachedMode>), TestbedError> {
        let ifaces = self.relay_ifaces();
        let addrs = [self.relay_caller_addr(), self.relay_callee_addr()];
        let started = self.relay().run(|| -> Result<_, DataplaneError> {
            let mut dataplane = Dataplane::load(config)?;
            let mut modes = Vec::new();
            for iface in ifaces {
                modes.push(dataplane.attach(iface, mode)?);
            }
            for addr in addrs {
                dataplane.add_local_addr(addr)?;
            }
            Ok((dataplane, modes))
        })??;
        Ok(started)
    }

    /// Starts a forwarding path in the relay namespace on the relay's interfaces: XDP, AF_XDP,
    /// sockets, or the automatic choice. Rules must then be installed from a thread in the relay
    /// namespace too (the socket path binds there): use `bed.relay().run(...)`.
    pub fn start_forwarder(
        &self,
        choice: BackendChoice,
        mut config: ForwarderConfig,
    ) -> Result<StartedForwarder, TestbedError> {
        config.ifaces = self.relay_ifaces().iter().map(|i| i.to_string()).collect();
        Ok(self.relay().run(|| start_forwarder(choice, &config))??)
    }
}

/// [`NatPair`] ready for a relay in its server namespace: the pass programs the NATs' public
/// veths need for the server's XDP_TX / XDP_REDIRECT into them. `sluice demo` starts here.
pub struct NatTestbed {
    // Detached before the namespaces go away.
    _pass: Vec<PassProgram>,
    topology: NatPair,
}

impl NatTestbed {
    /// Builds the namespaces (see [`NatPair::build`]) and attaches the pass programs.
    pub fn build(tag: &str) -> Result<Self, TestbedError> {
        let topology = NatPair::build(tag)?;
        let mut pass = Vec::new();
        for (ns, iface) in topology.far_ends() {
            pass.push(ns.run(|| PassProgram::attach(iface))??);
        }
        Ok(Self {
            _pass: pass,
            topology,
        })
    }

    /// The namespaces and their addresses.
    pub fn topology(&self) -> &NatPair {
        &self.topology
    }
}
