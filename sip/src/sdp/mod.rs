//! SDP (RFC 8866, formerly RFC 4566): a lossless parser and printer, a typed view of what a media
//! relay needs, and the NAT-traversal [`rewrite`].
//!
//! # Lossless
//!
//! [`Sdp::parse`] keeps every line's original text (trailing whitespace included), the line order
//! and each line's terminator (CRLF, or a bare LF, or none on a last line), so
//! `Sdp::parse(b)?.to_bytes() == b` for every accepted `b`. [`rewrite`] replaces only the lines it
//! has to (`o=`, `c=`, `m=`, `a=rtcp:`, the ICE attributes) and leaves every other byte alone.
//!
//! # Leniency
//!
//! Accepted because real phones send it: trailing spaces and tabs after a value, a missing final
//! line terminator, trailing empty lines, a mix of CRLF and LF, any line type letter (`k=`, `z=`,
//! `r=`, `u=`, `e=`, `p=`, `i=`, `b=`, ... are kept as text), out-of-order lines, attributes with and
//! without values, `m=` lines without formats, a missing `s=` or `t=`. Rejected with an
//! [`SdpError`] naming the line: a body over [`MAX_SDP_LEN`], a first line that is not `v=0`, a line
//! that is not `x=value`, an empty line between SDP lines, invalid UTF-8 or control characters
//! (a bare CR that does not end a line counts as one), a missing `o=`, an `m=` line with a
//! non-numeric port, a `c=` line with an unknown network or address type, an unparsable
//! `a=rtcp:`. No input makes the parser panic.

mod error;
mod parse;
mod rewrite;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

pub use error::{SdpError, SdpErrorKind};
pub use rewrite::{rewrite, HoldAddress, IceAction, MediaRewrite, RewritePlan};

/// Largest SDP body [`Sdp::parse`] accepts, in bytes (64 KiB).
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// A line terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineEnding {
    /// `\r\n`, as RFC 8866 asks.
    CrLf,
    /// A bare `\n`, as some stacks send.
    Lf,
}

impl LineEnding {
    /// The terminator's bytes.
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnding::CrLf => "\r\n",
            LineEnding::Lf => "\n",
        }
    }
}

/// How one stored line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eol {
    CrLf,
    Lf,
    /// The last line of a body without a final terminator.
    None,
}

impl Eol {
    fn as_str(self) -> &'static str {
        match self {
            Eol::CrLf => "\r\n",
            Eol::Lf => "\n",
            Eol::None => "",
        }
    }
}

/// One line exactly as received, without its terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) text: String,
    pub(crate) eol: Eol,
}

/// The address type of a `c=` or `a=rtcp:` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrType {
    /// `IP4`.
    Ip4,
    /// `IP6`.
    Ip6,
}

impl AddrType {
    /// The token as written in SDP.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrType::Ip4 => "IP4",
            AddrType::Ip6 => "IP6",
        }
    }
}

/// The address of a `c=` line: a literal IP address or a domain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A literal address of the family the address type names.
    Ip(IpAddr),
    /// A fully qualified domain name (allowed by RFC 8866, rare in SIP).
    Fqdn(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Fqdn(name) => f.write_str(name),
        }
    }
}

/// Connection data: the value of a `c=` line, or the address part of `a=rtcp:` (RFC 3605). The
/// network type is always `IN`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Connection {
    /// `IP4` or `IP6`.
    pub addr_type: AddrType,
    /// The address.
    pub address: Address,
    /// A multicast `/ttl[/count]` (IP4) or `/count` (IP6) suffix, without its first `/`.
    pub suffix: Option<String>,
}

impl Connection {
    /// `IN IP4 addr`, with no suffix.
    pub fn ipv4(addr: Ipv4Addr) -> Connection {
        Connection {
            addr_type: AddrType::Ip4,
            address: Address::Ip(IpAddr::V4(addr)),
            suffix: None,
        }
    }

    /// The literal IP address, if the address is not a domain name.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.address {
            Address::Ip(ip) => Some(ip),
            Address::Fqdn(_) => None,
        }
    }

    /// Whether this is `IN IP4 0.0.0.0`, the RFC 2543 way of putting a stream on hold.
    pub fn is_hold(&self) -> bool {
        self.addr_type == AddrType::Ip4 && self.ip() == Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// Whether the address type is `IP6`.
    pub fn is_ipv6(&self) -> bool {
        self.addr_type == AddrType::Ip6
    }
}

impl fmt::Display for Connection {
    /// `IN IP4 addr[/suffix]`, as it follows `c=`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IN {} {}", self.addr_type.as_str(), self.address)?;
        if let Some(suffix) = &self.suffix {
            write!(f, "/{suffix}")?;
        }
        Ok(())
    }
}

/// The session-level `o=` line. The fields are kept as written (RFC 8866 makes the IDs numeric, but
/// phones are lax, so they are not checked).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `<username>` (often `-`).
    pub username: String,
    /// `<sess-id>`.
    pub session_id: String,
    /// `<sess-version>`.
    pub session_version: String,
    /// `<nettype>` (`IN`).
    pub nettype: String,
    /// `<addrtype>` (`IP4`, `IP6`).
    pub addrtype: String,
    /// `<unicast-address>`.
    pub address: String,
}

impl Origin {
    /// The session version as a number, if it is one.
    pub fn session_version_u64(&self) -> Option<u64> {
        if self.session_version.bytes().all(|b| b.is_ascii_digit()) {
            self.session_version.parse().ok()
        } else {
            None
        }
    }
}

/// The `<media>` field of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `audio`.
    Audio,
    /// `video`.
    Video,
    /// `image` (T.38 fax).
    Image,
    /// `application`.
    Application,
    /// Anything else (`text`, `message`, ...), as written.
    Other(String),
}

impl MediaKind {
    fn parse(token: &str) -> MediaKind {
        match token {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            "image" => MediaKind::Image,
            "application" => MediaKind::Application,
            other => MediaKind::Other(other.to_owned()),
        }
    }

    /// The token as written.
    pub fn as_str(&self) -> &str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Image => "image",
            MediaKind::Application => "application",
            MediaKind::Other(s) => s,
        }
    }
}

/// The `<proto>` field of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Proto {
    /// `RTP/AVP`.
    RtpAvp,
    /// `RTP/AVPF`.
    RtpAvpf,
    /// `RTP/SAVP` (SRTP, keys in `a=crypto`).
    RtpSavp,
    /// `RTP/SAVPF`.
    RtpSavpf,
    /// `UDP/TLS/RTP/SAVP` (DTLS-SRTP).
    UdpTlsRtpSavp,
    /// `UDP/TLS/RTP/SAVPF` (DTLS-SRTP, WebRTC).
    UdpTlsRtpSavpf,
    /// `udptl` (T.38).
    Udptl,
    /// Anything else, as written.
    Other(String),
}

impl Proto {
    fn parse(token: &str) -> Proto {
        match token {
            "RTP/AVP" => Proto::RtpAvp,
            "RTP/AVPF" => Proto::RtpAvpf,
            "RTP/SAVP" => Proto::RtpSavp,
            "RTP/SAVPF" => Proto::RtpSavpf,
            "UDP/TLS/RTP/SAVP" => Proto::UdpTlsRtpSavp,
            "UDP/TLS/RTP/SAVPF" => Proto::UdpTlsRtpSavpf,
            "udptl" => Proto::Udptl,
            other => Proto::Other(other.to_owned()),
        }
    }

    /// The token as written.
    pub fn as_str(&self) -> &str {
        match self {
            Proto::RtpAvp => "RTP/AVP",
            Proto::RtpAvpf => "RTP/AVPF",
            Proto::RtpSavp => "RTP/SAVP",
            Proto::RtpSavpf => "RTP/SAVPF",
            Proto::UdpTlsRtpSavp => "UDP/TLS/RTP/SAVP",
            Proto::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
            Proto::Udptl => "udptl",
            Proto::Other(s) => s,
        }
    }
}

/// A stream direction attribute (RFC 3264).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv`, the default.
    SendRecv,
    /// `a=sendonly` (the usual hold).
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// One `a=` line: `a=name` (a property attribute) or `a=name:value`. Trailing whitespace is not part
/// of the name or value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    /// The attribute name.
    pub name: String,
    /// The value after the first `:`, if there is a `:`.
    pub value: Option<String>,
}

/// `a=rtcp:` (RFC 3605): the RTCP port and, optionally, address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rtcp {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when given (else the media's connection address applies).
    pub connection: Option<Connection>,
}

/// Which ICE (RFC 8839) attributes a section carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IceAttributes {
    /// Number of `a=candidate` lines.
    pub candidates: usize,
    /// `a=ice-ufrag` is present.
    pub ufrag: bool,
    /// `a=ice-pwd` is present.
    pub pwd: bool,
    /// `a=ice-options` is present.
    pub options: bool,
    /// `a=end-of-candidates` is present.
    pub end_of_candidates: bool,
    /// `a=remote-candidates` is present.
    pub remote_candidates: bool,
    /// `a=ice-lite` is present (session level).
    pub lite: bool,
}

impl IceAttributes {
    /// Whether any ICE attribute is present.
    pub fn any(&self) -> bool {
        self.candidates > 0
            || self.ufrag
            || self.pwd
            || self.options
            || self.end_of_candidates
            || self.remote_candidates
            || self.lite
    }
}

/// The attribute names [`IceAction::Remove`] removes: the six the relay's brief names plus
/// `ice-lite`, `ice-mismatch` and `ice-pacing`, which make no sense without the others.
pub const ICE_ATTRIBUTES: &[&str] = &[
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "end-of-candidates",
    "remote-candidates",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
];

/// One media section: an `m=` line and the lines after it up to the next `m=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    kind: MediaKind,
    port: u16,
    port_count: Option<u16>,
    proto: Proto,
    formats: Vec<String>,
    connections: Vec<Connection>,
    effective_connection: Option<Connection>,
    attributes: Vec<Attribute>,
    rtcp: Option<Rtcp>,
    rtcp_mux: bool,
    explicit_direction: Option<Direction>,
    direction: Direction,
    ice: IceAttributes,
    crypto: usize,
    /// 1-based line number of the `m=` line.
    line: usize,
    /// Index of the `m=` line in `Sdp::lines`, and one past the section's last line.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// 1-based line number of the `c=` line the effective connection comes from.
    pub(crate) effective_connection_line: Option<usize>,
}

impl MediaSection {
    /// The media type.
    pub fn kind(&self) -> &MediaKind {
        &self.kind
    }

    /// The `m=` port; 0 means the stream is rejected or disabled.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `/count` after the port (`m=audio 49170/2 ...`), if any.
    pub fn port_count(&self) -> Option<u16> {
        self.port_count
    }

    /// Whether the port is 0 (a rejected or disabled stream).
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// The transport protocol.
    pub fn proto(&self) -> &Proto {
        &self.proto
    }

    /// The format list (payload types for RTP, `t38` for udptl), as written.
    pub fn formats(&self) -> &[String] {
        &self.formats
    }

    /// The first media-level `c=` line, if any.
    pub fn connection(&self) -> Option<&Connection> {
        self.connections.first()
    }

    /// All media-level `c=` lines (more than one only for layered multicast).
    pub fn connections(&self) -> &[Connection] {
        &self.connections
    }

    /// Where this media goes: the first media-level `c=`, else the session-level `c=`.
    pub fn effective_connection(&self) -> Option<&Connection> {
        self.effective_connection.as_ref()
    }

    /// Whether the media is on hold the RFC 2543 way (effective connection `0.0.0.0`).
    pub fn is_hold_address(&self) -> bool {
        self.effective_connection
            .as_ref()
            .is_some_and(Connection::is_hold)
    }

    /// All media-level attributes, in order.
    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }

    /// The first media-level attribute with this name.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// `a=rtcp:` (RFC 3605), if present.
    pub fn rtcp(&self) -> Option<&Rtcp> {
        self.rtcp.as_ref()
    }

    /// Whether `a=rtcp-mux` (RFC 5761) is present.
    pub fn rtcp_mux(&self) -> bool {
        self.rtcp_mux
    }

    /// The effective direction: the media's own attribute, else the session's, else `sendrecv`.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The media's own direction attribute, if it has one.
    pub fn explicit_direction(&self) -> Option<Direction> {
        self.explicit_direction
    }

    /// The media-level ICE attributes.
    pub fn ice(&self) -> &IceAttributes {
        &self.ice
    }

    /// Whether `a=crypto` (SDES-SRTP, RFC 4568) is present.
    pub fn has_crypto(&self) -> bool {
        self.crypto > 0
    }

    /// The 1-based line number of the `m=` line.
    pub fn line(&self) -> usize {
        self.line
    }
}

/// A parsed SDP body: its lines as received plus a typed view of them.
///
/// Two `Sdp`s are equal when their bytes are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    lines: Vec<Line>,
    ending: LineEnding,
    origin: Origin,
    origin_line: usize,
    session_connection: Option<Connection>,
    session_connection_line: Option<usize>,
    session_attributes: Vec<Attribute>,
    session_direction: Option<Direction>,
    session_ice: IceAttributes,
    media: Vec<MediaSection>,
}

impl Sdp {
    /// Parses an SDP body. Never panics; see the [module docs](self) for what is accepted.
    pub fn parse(input: &[u8]) -> Result<Sdp, SdpError> {
        let lines = parse::split_lines(input)?;
        parse::build(lines)
    }

    /// The body as bytes: exactly the parsed input when nothing was rewritten.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = self
            .lines
            .iter()
            .map(|l| l.text.len() + l.eol.as_str().len())
            .sum();
        let mut out = Vec::with_capacity(len);
        for line in &self.lines {
            out.extend_from_slice(line.text.as_bytes());
            out.extend_from_slice(line.eol.as_str().as_bytes());
        }
        out
    }

    /// The lines' text, without terminators.
    pub fn lines(&self) -> impl Iterator<Item = &str> + '_ {
        self.lines.iter().map(|l| l.text.as_str())
    }

    /// The terminator style lines inserted by [`rewrite`] get: the first line's.
    pub fn line_ending(&self) -> LineEnding {
        self.ending
    }

    /// The `o=` line.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The 1-based line number of the `o=` line.
    pub fn origin_line(&self) -> usize {
        self.origin_line
    }

    /// The session-level `c=` line, if any.
    pub fn session_connection(&self) -> Option<&Connection> {
        self.session_connection.as_ref()
    }

    /// The session-level attributes, in order.
    pub fn session_attributes(&self) -> &[Attribute] {
        &self.session_attributes
    }

    /// The session-level direction attribute, if any (the default for every media).
    pub fn session_direction(&self) -> Option<Direction> {
        self.session_direction
    }

    /// The session-level ICE attributes.
    pub fn session_ice(&self) -> &IceAttributes {
        &self.session_ice
    }

    /// Whether any ICE attribute is present, at session or media level.
    pub fn has_ice(&self) -> bool {
        self.session_ice.any() || self.media.iter().any(|m| m.ice.any())
    }

    /// The media sections, in `m=` order.
    pub fn media(&self) -> &[MediaSection] {
        &self.media
    }
}
