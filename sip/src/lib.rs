//! Sans-IO SIP and SDP for Sluice.
//!
//! This crate is fed bytes and `now` and returns transmits, events and the next timeout; it owns no
//! sockets and reads no clock. The SIP proxy and SDP rewriting arrive with their issues; this skeleton
//! keeps the workspace's shape.
