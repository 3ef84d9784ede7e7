//! The media relay as the proxy sees it: a synchronous trait the composing layer implements
//! (over the session manager), fed every SDP that crosses the proxy.

use std::net::IpAddr;

use thiserror::Error;

/// Which side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The side that sent the initial INVITE.
    Caller,
    /// The side that answered it.
    Callee,
}

impl Leg {
    /// The other side.
    pub fn other(self) -> Self {
        match self {
            Self::Caller => Self::Callee,
            Self::Callee => Self::Caller,
        }
    }
}

/// Names the call (and, once known, the callee's branch) an SDP belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRef {
    /// The Call-ID.
    pub call_id: String,
    /// The caller's From tag.
    pub from_tag: String,
    /// The callee's To tag, once a response carries one (forked early media has one per branch).
    pub to_tag: Option<String>,
}

/// Why the relay refused an SDP.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The SDP does not parse or offers nothing we can relay: answer `488 Not Acceptable Here`.
    #[error("unacceptable SDP: {0}")]
    BadSdp(String),
    /// The relay has no capacity (no ports, no session slots): answer `503 Service Unavailable`.
    #[error("media relay unavailable: {0}")]
    Unavailable(String),
}

impl MediaError {
    /// The status to answer a request whose SDP was refused with.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Self::BadSdp(_) => (488, "Not Acceptable Here"),
            Self::Unavailable(_) => (503, "Service Unavailable"),
        }
    }
}

/// The media relay. Every SDP offer and answer crossing the proxy goes through it (INVITE,
/// re-INVITE, UPDATE, 18x and 2xx with SDP, ACK with an answer), and the proxy forwards the SDP it
/// returns, which points media at the relay.
pub trait MediaRelay {
    /// An SDP offer from `source` (the sender's signalling IP, a hint for NATed `c=` lines), to be
    /// sent toward `toward`. Returns the rewritten SDP.
    fn offer(
        &mut self,
        call: &CallRef,
        sdp: &[u8],
        source: IpAddr,
        toward: Leg,
    ) -> Result<Vec<u8>, MediaError>;

    /// An SDP answer from `source`, to be sent toward `toward`. Returns the rewritten SDP.
    fn answer(
        &mut self,
        call: &CallRef,
        sdp: &[u8],
        source: IpAddr,
        toward: Leg,
    ) -> Result<Vec<u8>, MediaError>;

    /// The call is over (or never got going): release its media.
    fn delete(&mut self, call_id: &str);
}
