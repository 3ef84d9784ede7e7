//! The Rust mirror of `include/relay_abi.h`. See that header for the meaning of every field;
//! `tests/layout.rs` keeps the two in step.
//!
//! Addresses and ports are in network byte order, as on the wire: use the constructors and
//! accessors here rather than touching the raw fields.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Default capacity of the `flows` and `stream_stats` maps.
pub const MAX_FLOWS: u32 = 65536;
/// Capacity of the `tx_ports` device map.
pub const MAX_IFACES: u32 = 64;
/// Capacity of the `local_addrs` map.
pub const MAX_LOCAL_ADDRS: u32 = 256;
/// Capacity of the `xsks` map: receive queues per interface that AF_XDP can serve.
pub const MAX_QUEUES: u32 = 64;
/// Capacity of the `xsks` map: key = interface slot (`xsk_slots`) * [`MAX_QUEUES`] + queue.
pub const MAX_XSKS: u32 = MAX_IFACES * MAX_QUEUES;
/// TTL of every packet the relay sends.
pub const RELAY_TTL: u8 = 64;

/// `flow_rule.flags`: learn the peer from its first packet (symmetric RTP, RFC 4961).
pub const RULE_LATCH: u32 = 1 << 0;
/// `flow_rule.flags`: drop packets from any source but the peer.
pub const RULE_STRICT_SOURCE: u32 = 1 << 1;
/// `flow_rule.flags`: the destination will be taught by the reverse leg's latch.
pub const RULE_DST_PENDING: u32 = 1 << 2;
/// `flow_rule.flags`: forward in userspace through AF_XDP.
pub const RULE_USERSPACE: u32 = 1 << 3;

/// In front of a packet handed to AF_XDP: the next hop the kernel found (`struct sluice_xsk_meta`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskMeta {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub egress_ifindex: u32,
}

/// `flow_rule.latch_state`: waiting for the first packet.
pub const LATCH_WAITING: u32 = 0;
/// `flow_rule.latch_state`: the peer is known.
pub const LATCH_LEARNED: u32 = 1;

/// Key of the `flows` map: where a packet arrives on the relay.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub local_addr: u32,
    pub local_port: u16,
    pub _pad: u16,
}

impl FlowKey {
    /// The key of packets arriving at `local`.
    pub fn new(local: SocketAddrV4) -> Self {
        Self {
            local_addr: addr_to_wire(*local.ip()),
            local_port: local.port().to_be(),
            _pad: 0,
        }
    }

    /// The relay address and port this key stands for.
    pub fn socket_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            addr_from_wire(self.local_addr),
            u16::from_be(self.local_port),
        )
    }
}

/// Value of the `flows` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRule {
    pub new_src_addr: u32,
    pub new_dst_addr: u32,
    pub new_src_port: u16,
    pub new_dst_port: u16,
    pub flags: u32,
    pub peer_addr: u32,
    pub peer_port: u16,
    pub _pad0: u16,
    pub latch_state: u32,
    pub stats_slot: u32,
    pub egress_ifindex: u32,
    pub teach_key: FlowKey,
}

impl FlowRule {
    /// The source the relay sends from.
    pub fn new_source(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            addr_from_wire(self.new_src_addr),
            u16::from_be(self.new_src_port),
        )
    }

    /// The destination the relay sends to (meaningless while `RULE_DST_PENDING` is set).
    pub fn new_destination(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            addr_from_wire(self.new_dst_addr),
            u16::from_be(self.new_dst_port),
        )
    }

    /// The expected or learned source of this leg, if any.
    pub fn peer(&self) -> Option<SocketAddrV4> {
        (self.peer_addr != 0 || self.peer_port != 0).then(|| {
            SocketAddrV4::new(addr_from_wire(self.peer_addr), u16::from_be(self.peer_port))
        })
    }
}

/// Value of the per-CPU `stream_stats` array. Never reset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub packets: u64,
    /// UDP payload bytes.
    pub bytes: u64,
    /// `CLOCK_MONOTONIC` nanoseconds of the last packet; 0 = none yet.
    pub last_seen_ns: u64,
}

/// Value of the one-entry `config` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// First relay port, host order.
    pub port_min: u16,
    /// Last relay port, host order; 0 = no relay ports.
    pub port_max: u16,
    pub _pad: u32,
}

/// Size of `sluice_gen.headers`.
pub const GEN_HEADERS: usize = 48;

/// The benchmark generator's configuration and progress (`struct sluice_gen`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gen {
    /// Number of streams; packet n belongs to stream n % streams.
    pub streams: u32,
    /// UDP port of stream 0, host order.
    pub base_port: u16,
    /// Port distance between consecutive streams.
    pub port_step: u16,
    /// Packets stamped so far.
    pub next: u64,
    /// Packets to send in all.
    pub total: u64,
    /// `CLOCK_MONOTONIC` time packet 0 is due.
    pub start_ns: u64,
    /// Aggregate packets per second.
    pub pps: u64,
    /// Least spacing between frames while catching up.
    pub min_gap_ns: u64,
    /// Time of the last frame sent (written by the program).
    pub last_ns: u64,
    /// Ethernet, IPv4 and UDP headers written into every frame (42 bytes used).
    pub headers: [u8; GEN_HEADERS],
}

impl Default for Gen {
    fn default() -> Self {
        Self {
            streams: 0,
            base_port: 0,
            port_step: 0,
            next: 0,
            total: 0,
            start_ns: 0,
            pps: 0,
            min_gap_ns: 0,
            last_ns: 0,
            headers: [0; GEN_HEADERS],
        }
    }
}

// SAFETY: all five are `repr(C)` plain integers with explicit padding fields, so every byte pattern
// is a valid value and there are no implicit padding bytes.
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowRule {}
unsafe impl aya::Pod for StreamStats {}
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for Gen {}
unsafe impl aya::Pod for XskMeta {}

/// Indices of the per-CPU `counters` array (`enum sluice_counter`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    DropMalformed = 0,
    DropFragment = 1,
    DropUnknownPort = 2,
    DropSourceMismatch = 3,
    DropNoRoute = 4,
    DropDstPending = 5,
    DropNoTxPort = 6,
    DropTooBig = 7,
    DropFwdDisabled = 8,
    DropNoXsk = 9,
    DropXskRing = 10,
    Tx = 11,
    Redirect = 12,
    PassNotRelay = 13,
    PassNoNeigh = 14,
    Userspace = 15,
    Latched = 16,
}

/// Number of drop reasons: counters below this index are drops.
pub const DROP_MAX_REASON: u32 = 11;
/// Number of counters.
pub const COUNTER_MAX: u32 = 17;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_MAX as usize] = [
        Counter::DropMalformed,
        Counter::DropFragment,
        Counter::DropUnknownPort,
        Counter::DropSourceMismatch,
        Counter::DropNoRoute,
        Counter::DropDstPending,
        Counter::DropNoTxPort,
        Counter::DropTooBig,
        Counter::DropFwdDisabled,
        Counter::DropNoXsk,
        Counter::DropXskRing,
        Counter::Tx,
        Counter::Redirect,
        Counter::PassNotRelay,
        Counter::PassNoNeigh,
        Counter::Userspace,
        Counter::Latched,
    ];

    /// The stable name used in logs, metrics and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Counter::DropMalformed => "drop_malformed",
            Counter::DropFragment => "drop_fragment",
            Counter::DropUnknownPort => "drop_unknown_port",
            Counter::DropSourceMismatch => "drop_source_mismatch",
            Counter::DropNoRoute => "drop_no_route",
            Counter::DropDstPending => "drop_dst_pending",
            Counter::DropNoTxPort => "drop_no_tx_port",
            Counter::DropTooBig => "drop_too_big",
            Counter::DropFwdDisabled => "drop_fwd_disabled",
            Counter::DropNoXsk => "drop_no_xsk",
            Counter::DropXskRing => "drop_xsk_ring",
            Counter::Tx => "tx",
            Counter::Redirect => "redirect",
            Counter::PassNotRelay => "pass_not_relay",
            Counter::PassNoNeigh => "pass_no_neigh",
            Counter::Userspace => "userspace",
            Counter::Latched => "latched",
        }
    }

    /// True for the drop reasons.
    pub fn is_drop(self) -> bool {
        (self as u32) < DROP_MAX_REASON
    }

    /// The index in the `counters` map.
    pub fn index(self) -> u32 {
        self as u32
    }
}

/// An IPv4 address as the ABI stores it: the four octets in wire order, read as a native `u32`.
pub fn addr_to_wire(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// The inverse of [`addr_to_wire`].
pub fn addr_from_wire(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_key_round_trips_addresses_and_ports() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 30_000);
        let key = FlowKey::new(addr);
        assert_eq!(key.socket_addr(), addr);
        // Network order: the first octet comes first in memory.
        assert_eq!(key.local_addr.to_ne_bytes(), [192, 0, 2, 10]);
        assert_eq!(key.local_port.to_ne_bytes(), 30_000u16.to_be_bytes());
    }

    #[test]
    fn counters_are_numbered_in_order() {
        for (i, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(counter.index() as usize, i);
            assert_eq!(counter.is_drop(), (i as u32) < DROP_MAX_REASON);
        }
    }
}
