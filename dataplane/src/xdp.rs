//! The XDP forwarding plane: the relay program in the kernel, driven from here.

use std::collections::HashMap;
use std::ffi::CString;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use aya::maps::{Array, DevMapHash, HashMap as BpfHashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use sluice_ebpf::abi::{self, Config, Counter, FlowKey, FlowRule, StreamStats};
use sluice_ebpf::{maps, programs, RELAY_OBJECT};
use tracing::{info, warn};

use crate::error::attach_cause;
use crate::rules::{StreamId, StreamRule};
use crate::test_run::{self, TestRunOutput};
use crate::DataplaneError;

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode; if the driver refuses, generic mode, with a warning.
    #[default]
    Auto,
    /// Native (driver) mode or an error.
    Native,
    /// Generic (skb) mode: works everywhere, costs an skb per packet.
    Generic,
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl AttachedMode {
    /// `native` or `generic`.
    pub fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        }
    }
}

/// Settings fixed when the program is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// UDP ports the relay owns: packets to a relay address in this range are relayed or dropped.
    pub relay_ports: RangeInclusive<u16>,
    /// Capacity of the stream maps (one slot per direction of a stream).
    pub max_streams: u32,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            relay_ports: 30000..=39999,
            max_streams: abi::MAX_FLOWS,
        }
    }
}

/// One interface the relay is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachedMode,
}

/// A stream's counters since it was installed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Packets relayed.
    pub packets: u64,
    /// UDP payload bytes relayed.
    pub bytes: u64,
    /// `CLOCK_MONOTONIC` time of the last packet; `None` if none yet.
    pub last_seen: Option<Duration>,
}

/// The program's verdict and drop-reason counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    values: [u64; abi::COUNTER_MAX as usize],
}

impl CounterSnapshot {
    /// A snapshot whose counters come from `value` (for paths that count in their own way).
    pub fn from_fn(mut value: impl FnMut(Counter) -> u64) -> Self {
        let mut snapshot = Self::default();
        for counter in Counter::ALL {
            snapshot.values[counter.index() as usize] = value(counter);
        }
        snapshot
    }

    /// One counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter.index() as usize]
    }

    /// Every counter with its value, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }

    /// All drops, whatever the reason.
    pub fn drops(&self) -> u64 {
        self.iter()
            .filter(|(c, _)| c.is_drop())
            .map(|(_, v)| v)
            .sum()
    }

    /// The change from `earlier` to `self` (counters never go back).
    pub fn since(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        let mut values = self.values;
        for (v, e) in values.iter_mut().zip(earlier.values) {
            *v = v.saturating_sub(e);
        }
        CounterSnapshot { values }
    }
}

/// The kernel's accounting of the relay program (only while BPF statistics are enabled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    pub run_time_ns: u64,
    pub run_count: u64,
}

impl ProgramStats {
    /// Average cost per run between two readings.
    pub fn ns_per_run_since(&self, earlier: &ProgramStats) -> Option<f64> {
        let runs = self.run_count.checked_sub(earlier.run_count)?;
        let time = self.run_time_ns.checked_sub(earlier.run_time_ns)?;
        (runs > 0).then(|| time as f64 / runs as f64)
    }
}

struct Installed {
    key: FlowKey,
    baseline: StreamStats,
    userspace: bool,
}

/// The XDP relay: the loaded program, its maps, its attachments and the installed streams.
///
/// Interface names are resolved in the calling thread's network namespace. Dropping the
/// `Dataplane` detaches the program from every interface.
pub struct Dataplane {
    ebpf: Ebpf,
    flows: BpfHashMap<MapData, FlowKey, FlowRule>,
    stream_stats: PerCpuArray<MapData, StreamStats>,
    counters: PerCpuArray<MapData, u64>,
    local_addrs: BpfHashMap<MapData, u32, u32>,
    tx_ports: DevMapHash<MapData>,
    xsks: XskMap<MapData>,
    attachments: Vec<(Attachment, aya::programs::xdp::XdpLinkId)>,
    streams: HashMap<StreamId, Installed>,
    by_key: HashMap<FlowKey, StreamId>,
    free_slots: Vec<u32>,
    max_streams: u32,
    /// The relay's addresses on attached interfaces, and which interface owns each.
    owners: HashMap<Ipv4Addr, u32>,
    stats_fd: Option<OwnedFd>,
}

impl Dataplane {
    /// Loads the relay program and its maps (needs CAP_BPF); attaches nothing yet.
    pub fn load(config: &DataplaneConfig) -> Result<Self, DataplaneError> {
        let (min, max) = (*config.relay_ports.start(), *config.relay_ports.end());
        if min == 0 || max < min {
            return Err(DataplaneError::InvalidConfig(format!(
                "relay_ports {min}..={max}: need 1 <= first <= last"
            )));
        }
        if config.max_streams == 0 {
            return Err(DataplaneError::InvalidConfig(
                "max_streams must be above 0".into(),
            ));
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::FLOWS, config.max_streams)
            .map_max_entries(maps::STREAM_STATS, config.max_streams)
            .load(RELAY_OBJECT)
            .map_err(|e| DataplaneError::Load {
                source: Box::new(e),
            })?;
        let relay: &mut Xdp = program_mut(&mut ebpf, programs::RELAY)?;
        relay.load().map_err(|e| DataplaneError::Load {
            source: Box::new(e),
        })?;

        let flows = take_map(&mut ebpf, maps::FLOWS)?;
        let stream_stats = take_map(&mut ebpf, maps::STREAM_STATS)?;
        let counters = take_map(&mut ebpf, maps::COUNTERS)?;
        let local_addrs = take_map(&mut ebpf, maps::LOCAL_ADDRS)?;
        let tx_ports = take_map(&mut ebpf, maps::TX_PORTS)?;
        let xsks = take_map(&mut ebpf, maps::XSKS)?;
        let mut config_map: Array<MapData, Config> = take_map(&mut ebpf, maps::CONFIG)?;
        config_map
            .set(
                0,
                Config {
                    port_min: min,
                    port_max: max,
                    _pad: 0,
                },
                0,
            )
            .map_err(|e| DataplaneError::map(maps::CONFIG, "setting the relay ports", e))?;

        // Slots are handed out from the front so a small test sees small numbers.
        let free_slots = (0..config.max_streams).rev().collect();
        Ok(Self {
            ebpf,
            flows,
            stream_stats,
            counters,
            local_addrs,
            tx_ports,
            xsks,
            attachments: Vec::new(),
            streams: HashMap::new(),
            by_key: HashMap::new(),
            free_slots,
            max_streams: config.max_streams,
            owners: HashMap::new(),
            stats_fd: None,
        })
    }

    /// Attaches the relay to `iface`, lets it redirect there, and declares the interface's IPv4
    /// addresses as relay addresses (see [`add_local_addr`](Self::add_local_addr)). Returns the
    /// mode it got.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        let ifindex = ifindex(iface)?;
        let relay: &mut Xdp = program_mut(&mut self.ebpf, programs::RELAY)?;
        let attach = |relay: &mut Xdp, xdp_mode: XdpMode, name: &'static str| {
            relay
                .attach_to_if_index(ifindex, xdp_mode)
                .map_err(|e| DataplaneError::Attach {
                    iface: iface.to_owned(),
                    mode: name,
                    cause: attach_cause(&e),
                    source: Box::new(e),
                })
        };
        let (link, attached) = match mode {
            AttachMode::Native => (
                attach(relay, XdpMode::Driver, "native")?,
                AttachedMode::Native,
            ),
            AttachMode::Generic => (
                attach(relay, XdpMode::Skb, "generic")?,
                AttachedMode::Generic,
            ),
            AttachMode::Auto => match attach(relay, XdpMode::Driver, "native") {
                Ok(link) => (link, AttachedMode::Native),
                Err(native) => {
                    warn!(%iface, error = %native, "native XDP refused; falling back to generic mode");
                    (
                        attach(relay, XdpMode::Skb, "generic")?,
                        AttachedMode::Generic,
                    )
                }
            },
        };
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| DataplaneError::map(maps::TX_PORTS, "adding the interface", e))?;
        warn_about_sysctls(iface);
        for addr in ipv4_addrs(iface)? {
            self.add_local_addr(addr)?;
            self.owners.insert(addr, ifindex);
        }
        info!(%iface, ifindex, mode = attached.name(), "XDP relay attached");
        let attachment = Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode: attached,
        };
        self.attachments.push((attachment, link));
        Ok(attached)
    }

    /// Detaches the relay from `iface`.
    pub fn detach(&mut self, iface: &str) -> Result<(), DataplaneError> {
        let Some(pos) = self.attachments.iter().position(|(a, _)| a.iface == iface) else {
            return Err(DataplaneError::UnknownInterface {
                iface: iface.to_owned(),
            });
        };
        let (attachment, link) = self.attachments.remove(pos);
        let relay: &mut Xdp = program_mut(&mut self.ebpf, programs::RELAY)?;
        relay.detach(link).map_err(|e| DataplaneError::Attach {
            iface: iface.to_owned(),
            mode: attachment.mode.name(),
            cause: format!("detaching: {e}"),
            source: Box::new(e),
        })?;
        self.tx_ports
            .remove(attachment.ifindex)
            .map_err(|e| DataplaneError::map(maps::TX_PORTS, "removing the interface", e))?;
        Ok(())
    }

    /// The interfaces the relay is attached to.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attachments.iter().map(|(a, _)| a)
    }

    /// Declares one of the relay's own addresses: a packet to it on a relay port with no rule is
    /// dropped as an unknown port rather than passed to the stack.
    pub fn add_local_addr(&mut self, addr: Ipv4Addr) -> Result<(), DataplaneError> {
        self.local_addrs
            .insert(abi::addr_to_wire(addr), 1, 0)
            .map_err(|e| DataplaneError::map(maps::LOCAL_ADDRS, "adding an address", e))
    }

    /// Installs one direction of a stream, forwarded by the XDP program.
    pub fn install(&mut self, rule: &StreamRule) -> Result<StreamId, DataplaneError> {
        self.install_on(rule, false)
    }

    /// Installs one direction of a stream whose packets the program hands to the AF_XDP socket
    /// of their receive queue (see [`register_xsk_on`](Self::register_xsk_on)), once their source is
    /// accepted and their next hop resolved.
    pub fn install_in_userspace(&mut self, rule: &StreamRule) -> Result<StreamId, DataplaneError> {
        self.install_on(rule, true)
    }

    /// Puts `fd`, an AF_XDP socket, at `key` in the `xsks` map.
    fn register_xsk(&mut self, key: u32, fd: std::os::fd::RawFd) -> Result<(), DataplaneError> {
        self.xsks
            .set(key, fd, 0)
            .map_err(|e| DataplaneError::map(maps::XSKS, "registering an AF_XDP socket", e))
    }

    /// Registers `fd`, an AF_XDP socket bound to queue `queue` of the attached interface
    /// `ifindex`, as where that queue's userspace streams go. The `xsks` map is keyed by
    /// interface slot and queue (`slot * MAX_QUEUES + queue`, the slot from `xsk_slots`), since
    /// the kernel delivers to a socket only what arrives on the queue it is bound to; the slot
    /// is the interface's position among the attachments.
    pub fn register_xsk_on(
        &mut self,
        ifindex: u32,
        queue: u32,
        fd: std::os::fd::RawFd,
    ) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(maps::XSK_SLOTS)
            .ok_or(DataplaneError::Missing {
                kind: "map",
                name: maps::XSK_SLOTS,
            })?;
        let slot = self
            .attachments
            .iter()
            .position(|(a, _)| a.ifindex == ifindex)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p < abi::MAX_IFACES && queue < abi::MAX_QUEUES)
            .ok_or_else(|| {
                DataplaneError::InvalidConfig(format!(
                    "AF_XDP socket on ifindex {ifindex} queue {queue}: the interface is not \
                     attached or the queue is beyond {}",
                    abi::MAX_QUEUES
                ))
            })?;
        let mut slots: BpfHashMap<&mut MapData, u32, u32> = BpfHashMap::try_from(map)
            .map_err(|e| DataplaneError::map(maps::XSK_SLOTS, "opening", e))?;
        slots
            .insert(ifindex, slot, 0)
            .map_err(|e| DataplaneError::map(maps::XSK_SLOTS, "setting an interface slot", e))?;
        self.register_xsk(slot * abi::MAX_QUEUES + queue, fd)
    }

    /// A duplicate of the `flows` map's file descriptor, for readers outside the `Dataplane`
    /// (AF_XDP workers read the destination a latch taught, which only the kernel writes).
    pub fn flows_fd(&self) -> Result<OwnedFd, DataplaneError> {
        use aya::maps::IterableMap;
        self.flows
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| DataplaneError::Syscall {
                call: "dup of the flows map fd",
                source,
            })
    }

    fn install_on(
        &mut self,
        rule: &StreamRule,
        userspace: bool,
    ) -> Result<StreamId, DataplaneError> {
        let key = FlowKey::new(rule.local);
        if self.by_key.contains_key(&key) {
            return Err(DataplaneError::AlreadyInstalled(rule.local));
        }
        let slot = self
            .free_slots
            .pop()
            .ok_or(DataplaneError::Full(self.max_streams))?;
        match self.write_rule(rule, slot, userspace, true) {
            Ok(baseline) => {
                let id = StreamId(slot);
                self.streams.insert(
                    id,
                    Installed {
                        key,
                        baseline,
                        userspace,
                    },
                );
                self.by_key.insert(key, id);
                Ok(id)
            }
            Err(e) => {
                self.free_slots.push(slot);
                Err(e)
            }
        }
    }

    /// Replaces the rule of an installed stream, keeping its counters (a re-INVITE that moves a
    /// peer, or a hold). The relay address may not change. A latching leg starts latching anew.
    pub fn update(&mut self, id: StreamId, rule: &StreamRule) -> Result<(), DataplaneError> {
        let installed = self
            .streams
            .get(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        if installed.key != FlowKey::new(rule.local) {
            return Err(DataplaneError::InvalidRule(format!(
                "stream {id} is at {}, not {}",
                installed.key.socket_addr(),
                rule.local
            )));
        }
        let userspace = installed.userspace;
        self.write_rule(rule, id.0, userspace, false).map(|_| ())
    }

    /// Writes a rule; for a new stream, returns the slot's counters as the baseline to subtract
    /// (counters are never reset, so a reused slot starts from what its last owner left).
    fn write_rule(
        &mut self,
        rule: &StreamRule,
        slot: u32,
        userspace: bool,
        new: bool,
    ) -> Result<StreamStats, DataplaneError> {
        let (key, mut encoded) = rule.encode(slot, self.egress_of(rule))?;
        if userspace {
            encoded.flags |= abi::RULE_USERSPACE;
        }
        let baseline = if new {
            self.read_slot(slot)?
        } else {
            StreamStats::default()
        };
        self.flows
            .insert(key, encoded, 0)
            .map_err(|e| DataplaneError::map(maps::FLOWS, "writing a rule", e))?;
        Ok(baseline)
    }

    fn egress_of(&self, rule: &StreamRule) -> u32 {
        self.owners.get(rule.source.ip()).copied().unwrap_or(0)
    }

    /// Removes a stream and returns its final counters.
    pub fn remove(&mut self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        let counters = self.stream_counters(id)?;
        let installed = self
            .streams
            .remove(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        self.by_key.remove(&installed.key);
        self.flows
            .remove(&installed.key)
            .map_err(|e| DataplaneError::map(maps::FLOWS, "removing a rule", e))?;
        self.free_slots.push(id.0);
        Ok(counters)
    }

    /// The streams installed now.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, SocketAddrV4)> + '_ {
        self.streams
            .iter()
            .map(|(id, s)| (*id, s.key.socket_addr()))
    }

    /// A stream's packets, bytes and last-seen time since it was installed.
    pub fn stream_counters(&self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        let installed = self
            .streams
            .get(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        let now = self.read_slot(id.0)?;
        let base = installed.baseline;
        Ok(StreamCounters {
            packets: now.packets.saturating_sub(base.packets),
            bytes: now.bytes.saturating_sub(base.bytes),
            last_seen: (now.last_seen_ns > base.last_seen_ns)
                .then(|| Duration::from_nanos(now.last_seen_ns)),
        })
    }

    fn read_slot(&self, slot: u32) -> Result<StreamStats, DataplaneError> {
        let per_cpu = self
            .stream_stats
            .get(&slot, 0)
            .map_err(|e| DataplaneError::map(maps::STREAM_STATS, "reading stream counters", e))?;
        Ok(sum_stream_stats(&per_cpu))
    }

    /// The source address a latching leg learned from its first packet, once it has.
    pub fn latched_peer(&self, id: StreamId) -> Result<Option<SocketAddrV4>, DataplaneError> {
        let rule = self.rule(id)?;
        let learned = rule.flags & abi::RULE_LATCH != 0 && rule.latch_state == abi::LATCH_LEARNED;
        Ok(if learned { rule.peer() } else { None })
    }

    /// The rule of a stream as the program sees it now, latch fields included.
    pub fn rule(&self, id: StreamId) -> Result<FlowRule, DataplaneError> {
        let installed = self
            .streams
            .get(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        self.flows
            .get(&installed.key, 0)
            .map_err(|e| DataplaneError::map(maps::FLOWS, "reading a rule", e))
    }

    /// The program's verdict and drop counters, summed over CPUs.
    pub fn counters(&self) -> Result<CounterSnapshot, DataplaneError> {
        let mut snapshot = CounterSnapshot::default();
        for counter in Counter::ALL {
            let per_cpu = self
                .counters
                .get(&counter.index(), 0)
                .map_err(|e| DataplaneError::map(maps::COUNTERS, "reading a counter", e))?;
            snapshot.values[counter.index() as usize] = per_cpu.iter().sum();
        }
        Ok(snapshot)
    }

    /// Turns on the kernel's per-program run-time accounting for as long as this `Dataplane`
    /// lives (it costs two clock reads per packet, so it is off unless measuring).
    pub fn enable_program_stats(&mut self) -> Result<(), DataplaneError> {
        if self.stats_fd.is_none() {
            let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| {
                DataplaneError::Syscall {
                    call: "BPF_ENABLE_STATS",
                    source: e.io_error,
                }
            })?;
            self.stats_fd = Some(fd);
        }
        Ok(())
    }

    /// The kernel's run count and run time of the relay program.
    pub fn program_stats(&self) -> Result<ProgramStats, DataplaneError> {
        let relay: &Xdp = program_ref(&self.ebpf, programs::RELAY)?;
        let info = relay.info().map_err(|e| DataplaneError::Load {
            source: Box::new(e),
        })?;
        Ok(ProgramStats {
            run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            run_count: info.run_count(),
        })
    }

    /// Runs the relay program once on `frame` with BPF_PROG_TEST_RUN, as if it arrived on
    /// `ingress_ifindex` (in this thread's namespace; 0 = loopback, and then the interface needs
    /// the relay attached natively so that its XDP receive queue exists). Counters and latches change as for a real
    /// packet; the frame is not sent anywhere.
    pub fn test_run(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<TestRunOutput, DataplaneError> {
        let relay: &Xdp = program_ref(&self.ebpf, programs::RELAY)?;
        let fd = relay
            .fd()
            .map_err(|e| DataplaneError::Load {
                source: Box::new(e),
            })?
            .as_fd()
            .as_raw_fd();
        test_run::xdp_test_run(fd, frame, ingress_ifindex)
    }
}

/// Sums a stream's per-CPU counters; the last-seen time is the latest of any CPU.
pub fn sum_stream_stats(per_cpu: &[StreamStats]) -> StreamStats {
    per_cpu
        .iter()
        .fold(StreamStats::default(), |acc, s| StreamStats {
            packets: acc.packets + s.packets,
            bytes: acc.bytes + s.bytes,
            last_seen_ns: acc.last_seen_ns.max(s.last_seen_ns),
        })
}

/// The monotonic clock the program stamps `last_seen` with.
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The index of `iface` in the calling thread's network namespace.
pub fn ifindex(iface: &str) -> Result<u32, DataplaneError> {
    let unknown = || DataplaneError::UnknownInterface {
        iface: iface.to_owned(),
    };
    let name = CString::new(iface).map_err(|_| unknown())?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(unknown()),
        index => Ok(index),
    }
}

/// The kernel refuses to route the relay's output through an interface without IPv4 forwarding,
/// and the stack drops the packets the program hands it while a neighbour is unresolved (their
/// source is a local address) unless `accept_local` is on. Neither is fatal, so say it loudly.
fn warn_about_sysctls(iface: &str) {
    let read = |key: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/{key}"))
            .map(|v| v.trim() == "1")
            .unwrap_or(true)
    };
    if !read("forwarding") {
        warn!(
            %iface,
            "IPv4 forwarding is off: streams leaving here are dropped (drop_fwd_disabled); \
             sysctl -w net.ipv4.conf.{iface}.forwarding=1"
        );
    }
    if !read("accept_local") {
        warn!(
            %iface,
            "accept_local is off: packets sent while a neighbour is unresolved are lost; \
             sysctl -w net.ipv4.conf.{iface}.accept_local=1"
        );
    }
}

/// The interface that has `addr`, in the calling thread's network namespace.
pub fn iface_with_addr(addr: Ipv4Addr) -> Result<Option<String>, DataplaneError> {
    Ok(ipv4_ifaddrs()?
        .into_iter()
        .find(|(_, a)| *a == addr)
        .map(|(name, _)| name))
}

/// The IPv4 addresses of `iface` in the calling thread's network namespace.
pub fn ipv4_addrs(iface: &str) -> Result<Vec<Ipv4Addr>, DataplaneError> {
    Ok(ipv4_ifaddrs()?
        .into_iter()
        .filter(|(name, _)| name == iface)
        .map(|(_, a)| a)
        .collect())
}

/// Every (interface, IPv4 address) pair in the calling thread's network namespace.
fn ipv4_ifaddrs() -> Result<Vec<(String, Ipv4Addr)>, DataplaneError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(DataplaneError::Syscall {
            call: "getifaddrs",
            source: std::io::Error::last_os_error(),
        });
    }
    let mut addrs = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        // SAFETY: ifa_addr points at a sockaddr whose family says how to read it.
        let family = unsafe { (*entry.ifa_addr).sa_family };
        if i32::from(family) == libc::AF_INET {
            // SAFETY: an AF_INET sockaddr is a sockaddr_in.
            let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            addrs.push((name.to_string_lossy().into_owned(), addr));
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(addrs)
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, DataplaneError> {
    ebpf.program_mut(name)
        .and_then(|p| <&mut Xdp>::try_from(p).ok())
        .ok_or(DataplaneError::Missing {
            kind: "XDP program",
            name,
        })
}

fn program_ref<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, DataplaneError> {
    ebpf.program(name)
        .and_then(|p| <&Xdp>::try_from(p).ok())
        .ok_or(DataplaneError::Missing {
            kind: "XDP program",
            name,
        })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(|e| DataplaneError::map(name, "opening", e))
}

/// A trivial `XDP_PASS` program for the far end of a veth pair: XDP_TX and XDP_REDIRECT into a
/// veth deliver only when the peer has an XDP program. Detached when dropped.
pub struct PassProgram {
    _ebpf: Ebpf,
}

impl PassProgram {
    /// Attaches to `iface` in the calling thread's namespace, in native mode.
    pub fn attach(iface: &str) -> Result<Self, DataplaneError> {
        let index = ifindex(iface)?;
        // Only the pass program is loaded, so the relay's maps can be tiny.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::FLOWS, 1)
            .map_max_entries(maps::STREAM_STATS, 1)
            .load(RELAY_OBJECT)
            .map_err(|e| DataplaneError::Load {
                source: Box::new(e),
            })?;
        let pass: &mut Xdp = program_mut(&mut ebpf, programs::PASS)?;
        pass.load().map_err(|e| DataplaneError::Load {
            source: Box::new(e),
        })?;
        pass.attach_to_if_index(index, XdpMode::Driver)
            .map_err(|e| DataplaneError::Attach {
                iface: iface.to_owned(),
                mode: "native",
                cause: attach_cause(&e),
                source: Box::new(e),
            })?;
        Ok(Self { _ebpf: ebpf })
    }
}
