//! Errors of SDP parsing and rewriting.

use thiserror::Error;

/// Why an SDP body could not be parsed or rewritten.
///
/// Line numbers are 1-based and count lines as the body's line terminators split them.
/// [`SdpError::kind`] tells whose fault it is: a [`SdpErrorKind::Malformed`] body is the peer's
/// (answer `488 Not Acceptable Here`), [`SdpErrorKind::Unsupported`] is a valid body this relay
/// cannot handle yet (also `488`, with a different reason phrase), [`SdpErrorKind::InvalidPlan`] is a
/// bug in whoever built the [`RewritePlan`](crate::sdp::RewritePlan) (answer `500`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is longer than [`MAX_SDP_LEN`](crate::sdp::MAX_SDP_LEN).
    #[error("SDP body is {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Length of the body.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is empty.
    #[error("SDP body is empty")]
    Empty,
    /// The line holds bytes that are not text: invalid UTF-8, a NUL or other control character, or a
    /// carriage return that does not end the line.
    #[error("line {line}: {reason}")]
    InvalidBytes {
        /// Line number.
        line: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// The first line is not `v=0`.
    #[error("line {line}: the first line must be `v=0`")]
    MissingVersion {
        /// Line number (always 1).
        line: usize,
    },
    /// A line is not of the form `x=value` (one letter, then `=`), or an empty line sits between two
    /// SDP lines.
    #[error("line {line}: not an SDP line of the form `x=value`")]
    NotTypeValue {
        /// Line number.
        line: usize,
    },
    /// An `m=` line's port (or port count) is not a number in `0..=65535`.
    #[error("line {line}: m= port `{port}` is not a number in 0..=65535")]
    BadMediaPort {
        /// Line number.
        line: usize,
        /// The port field as written.
        port: String,
    },
    /// A `c=` line (or the address part of `a=rtcp:`) is not `IN IP4 addr` / `IN IP6 addr`.
    #[error("line {line}: bad connection data: {reason}")]
    BadConnection {
        /// Line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// Any other malformed line (`o=` field count, `m=` field count, `a=rtcp:` port, duplicates).
    #[error("line {line}: {reason}")]
    Malformed {
        /// Line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// The body has no `o=` line.
    #[error("SDP has no o= line")]
    MissingOrigin,
    /// A media stream the plan asks to relay uses IPv6.
    #[error("line {line}: IPv6 media is not relayed yet (media #{media})")]
    Ipv6NotRelayed {
        /// Index of the media section (0-based, in `m=` order).
        media: usize,
        /// Line number of the `c=` line that gives the IPv6 address.
        line: usize,
    },
    /// The rewrite plan does not fit the SDP (wrong number of media entries, port 0, ...).
    #[error("rewrite plan does not fit this SDP: {reason}")]
    InvalidPlan {
        /// What was wrong.
        reason: String,
    },
}

/// Whose fault an [`SdpError`] is, to choose the SIP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdpErrorKind {
    /// The peer sent a body that is not valid SDP: answer `488 Not Acceptable Here`.
    Malformed,
    /// Valid SDP that this relay does not handle yet (IPv6 media): answer `488`.
    Unsupported,
    /// The caller's [`RewritePlan`](crate::sdp::RewritePlan) does not fit the SDP: a local bug, `500`.
    InvalidPlan,
}

impl SdpError {
    /// Whose fault this error is.
    pub fn kind(&self) -> SdpErrorKind {
        match self {
            SdpError::Ipv6NotRelayed { .. } => SdpErrorKind::Unsupported,
            SdpError::InvalidPlan { .. } => SdpErrorKind::InvalidPlan,
            _ => SdpErrorKind::Malformed,
        }
    }

    /// The 1-based line number the error is about, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            SdpError::InvalidBytes { line, .. }
            | SdpError::MissingVersion { line }
            | SdpError::NotTypeValue { line }
            | SdpError::BadMediaPort { line, .. }
            | SdpError::BadConnection { line, .. }
            | SdpError::Malformed { line, .. }
            | SdpError::Ipv6NotRelayed { line, .. } => Some(*line),
            SdpError::TooLarge { .. }
            | SdpError::Empty
            | SdpError::MissingOrigin
            | SdpError::InvalidPlan { .. } => None,
        }
    }
}
