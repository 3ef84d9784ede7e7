//! Sans-IO SIP and SDP for Sluice.
//!
//! This crate is fed bytes and `now` and returns transmits, events and the next timeout; it owns no
//! sockets, does no I/O and reads no clock. Everything here is a pure function of its arguments.
//!
//! - [`sdp`]: lossless SDP parsing and printing, a typed view of the media, and the NAT-traversal
//!   rewrite that points media at the relay.
//!
//! The SIP proxy arrives with its issues.

pub mod auth;
pub mod message;
pub mod proxy;
pub mod registrar;
pub mod sdp;
pub mod transaction;
