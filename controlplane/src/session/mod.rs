//! Media sessions: the port pool, the offer/answer state of each call, the stream rules that
//! anchor its media on the relay, and the timeouts that end it.

pub mod manager;
pub mod model;
pub mod ports;
pub mod sdp;

pub use manager::{
    CallReport, RelayInterface, SessionConfig, SessionError, SessionManager, Signal, Totals,
};
pub use model::{Symmetry, Timeouts};
pub use sdp::IceAction;

#[cfg(test)]
pub(crate) mod tests;
