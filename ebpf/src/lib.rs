//! Sluice's XDP relay program and the ABI it shares with userspace.
//!
//! The program itself is C (`bpf/relay.bpf.c`), compiled by clang in `build.rs` and embedded here
//! as [`RELAY_OBJECT`]. [`abi`] mirrors `include/relay_abi.h`, the one header both sides read;
//! `tests/layout.rs` checks that the two agree, field by field, and that the compiled object's maps
//! have the sizes the Rust types expect.

pub mod abi;

/// The compiled ELF object holding the `sluice_relay` and `sluice_pass` XDP programs and their maps.
pub static RELAY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));

/// The benchmark's traffic generator (`bpf/trafficgen.bpf.c`): program `sluice_trafficgen`, map
/// `gen` of one [`Gen`](crate::abi::Gen). Not part of the relay.
pub static TRAFFICGEN_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trafficgen.bpf.o"));

/// Names of the maps in [`RELAY_OBJECT`], as the loader opens them.
pub mod maps {
    /// `HASH`: [`FlowKey`](crate::abi::FlowKey) → [`FlowRule`](crate::abi::FlowRule).
    pub const FLOWS: &str = "flows";
    /// `PERCPU_ARRAY`: stats slot → [`StreamStats`](crate::abi::StreamStats).
    pub const STREAM_STATS: &str = "stream_stats";
    /// `PERCPU_ARRAY`: [`Counter`](crate::abi::Counter) → `u64`.
    pub const COUNTERS: &str = "counters";
    /// `ARRAY` of one [`Config`](crate::abi::Config).
    pub const CONFIG: &str = "config";
    /// `HASH`: relay IPv4 address (network order) → `u32` (unused).
    pub const LOCAL_ADDRS: &str = "local_addrs";
    /// `DEVMAP_HASH`: ifindex → `bpf_devmap_val`.
    pub const TX_PORTS: &str = "tx_ports";
    /// `XSKMAP`: interface slot * [`MAX_QUEUES`](crate::abi::MAX_QUEUES) + receive queue →
    /// AF_XDP socket.
    pub const XSKS: &str = "xsks";
    /// `HASH`: ifindex → the interface's slot in `xsks` (below
    /// [`MAX_IFACES`](crate::abi::MAX_IFACES)).
    pub const XSK_SLOTS: &str = "xsk_slots";
}

/// Names of the programs in [`RELAY_OBJECT`].
pub mod programs {
    /// The relay.
    pub const RELAY: &str = "sluice_relay";
    /// Returns `XDP_PASS`: for the far end of a veth that XDP_TX or XDP_REDIRECT sends into.
    pub const PASS: &str = "sluice_pass";
    /// The benchmark's generator, in [`TRAFFICGEN_OBJECT`](crate::TRAFFICGEN_OBJECT).
    pub const TRAFFICGEN: &str = "sluice_trafficgen";
}
