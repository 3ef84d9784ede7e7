//! Load generation and measurement for Sluice.
//!
//! The pieces here are independent of any relay implementation: a backend
//! only has to provide a sending socket, per-stream destinations and a
//! receiving socket (possibly in different network namespaces), then call
//! [`session::run_session`] and turn the outcome into a
//! [`report::StreamsReport`].
//!
//! - [`rtp`]: 172-byte G.711-shaped RTP packets carrying a send stamp, stream
//!   index and sequence counter, with integrity verification.
//! - [`generator`]: paced `sendmmsg` load at 50 packets/s per stream.
//! - [`receiver`]: `recvmmsg` receiver tracking loss, duplicates, reordering,
//!   corruption, source checks and one-way latency.
//! - [`report`]: the stable JSON/text result.
//! - [`cli`]: `sluice-bench` arguments.

pub mod calls;
pub mod cli;
pub mod clock;
pub mod external;
pub mod generator;
pub mod ng;
pub mod procstat;
pub mod receiver;
pub mod relay_backend;
pub mod report;
pub mod rtp;
pub mod session;
pub mod suite;
pub mod sweep;
mod sys;
pub mod threads;
pub mod xdpgen;

pub use cli::StreamsArgs;
pub use report::StreamsReport;
