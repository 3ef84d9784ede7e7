//! Sluice's forwarding plane: it knows packets and streams, not SIP.
//!
//! [`Dataplane`] loads the XDP relay program from `sluice-ebpf`, attaches it to interfaces,
//! installs one [`StreamRule`] per direction of a stream, and reads back per-stream counters, the
//! peers that latching learned, and the program's drop counters. [`netns`] builds the network
//! namespace topologies that the end-to-end tests, the benchmark and the demo run on.

pub mod afxdp;
mod backend;
mod error;
pub mod netns;
mod rules;
pub mod sockets;
pub mod test_run;
pub mod testbed;
mod xdp;

pub use afxdp::{AfXdpConfig, AfXdpRelay, XskMode, XskSocket};
pub use backend::{
    start_forwarder, BackendChoice, BackendKind, Forwarder, ForwarderConfig, StartedForwarder,
};
pub use error::DataplaneError;
pub use rules::{bidirectional, Leg, Peer, StreamId, StreamRule};
pub use sluice_ebpf::abi::Counter;
pub use sockets::{SocketRelay, SocketRelayConfig};
pub use test_run::TestRunOutput;
pub use xdp::{
    iface_with_addr, ifindex, monotonic_now, sum_stream_stats, AttachMode, AttachedMode,
    Attachment, CounterSnapshot, Dataplane, DataplaneConfig, PassProgram, ProgramStats,
    StreamCounters,
};
