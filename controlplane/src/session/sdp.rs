//! Between the session manager and `sluice_sip::sdp`: what relaying needs from an SDP, and the
//! rewrite that anchors its media on the relay.

use std::net::{Ipv4Addr, SocketAddrV4};

use sluice_sip::sdp::{self as wire, Sdp, SdpErrorKind};

use super::manager::SessionError;
use super::model::{Direction, MediaDesc};

/// A parsed SDP, kept for its rewrite.
pub type Parsed = Sdp;

/// What to do with ICE attributes. Anchoring media on the relay makes the endpoints' own
/// candidates wrong, so they are removed unless asked otherwise (rtpengine's `ICE=remove`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IceAction {
    #[default]
    Remove,
    Keep,
}

/// The rewrite of one SDP: per media line, the relay address and RTP/RTCP ports to advertise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpEdit {
    pub media: Vec<Option<(Ipv4Addr, u16, u16)>>,
    /// Replace the `o=` address too (rtpengine's `replace-origin`).
    pub origin: Option<Ipv4Addr>,
    pub session_connection: Ipv4Addr,
    pub ice: IceAction,
}

fn sdp_error(e: wire::SdpError) -> SessionError {
    match e.kind() {
        SdpErrorKind::Unsupported => SessionError::Unsupported(e.to_string()),
        SdpErrorKind::Malformed => SessionError::BadSdp(e.to_string()),
        _ => SessionError::Invalid(e.to_string()),
    }
}

fn v4(c: &wire::Connection) -> Option<Ipv4Addr> {
    match c.ip() {
        Some(std::net::IpAddr::V4(a)) => Some(a),
        _ => None,
    }
}

/// Parses an SDP and describes each media line for relaying.
pub fn describe(bytes: &[u8]) -> Result<(Parsed, Vec<MediaDesc>), SessionError> {
    let sdp = Sdp::parse(bytes).map_err(sdp_error)?;
    let mut media = Vec::with_capacity(sdp.media().len());
    for (index, m) in sdp.media().iter().enumerate() {
        let addr = match m.effective_connection() {
            // A rejected stream needs no address, whatever its family.
            _ if m.is_rejected() => Ipv4Addr::UNSPECIFIED,
            Some(c) => v4(c).ok_or_else(|| {
                SessionError::Unsupported(format!(
                    "media {index} has an IPv6 or host-name address: IPv6 media is not relayed yet"
                ))
            })?,
            None => {
                return Err(SessionError::BadSdp(format!(
                    "media {index} has no connection address"
                )))
            }
        };
        let rtp = SocketAddrV4::new(addr, m.port());
        let rtcp = match m.rtcp() {
            Some(r) => {
                SocketAddrV4::new(r.connection.as_ref().and_then(v4).unwrap_or(addr), r.port)
            }
            // Without `a=rtcp:`, RTCP is on the next port, also when the party offers rtcp-mux:
            // that is where it falls back to if the other party does not mux (RFC 5761 §5.1.3).
            // When both mux, no RTCP rule is installed and this is not used.
            None => SocketAddrV4::new(addr, m.port().saturating_add(1)),
        };
        media.push(MediaDesc {
            kind: m.kind().as_str().to_owned(),
            proto: m.proto().as_str().to_owned(),
            rtp,
            rtcp,
            rtcp_mux: m.rtcp_mux(),
            direction: match m.direction() {
                wire::Direction::SendRecv => Direction::SendRecv,
                wire::Direction::SendOnly => Direction::SendOnly,
                wire::Direction::RecvOnly => Direction::RecvOnly,
                wire::Direction::Inactive => Direction::Inactive,
            },
        });
    }
    Ok((sdp, media))
}

/// Rewrites a parsed SDP so that its media go through the relay.
pub fn rewrite(sdp: &Parsed, edit: &SdpEdit) -> Result<Vec<u8>, SessionError> {
    let plan = wire::RewritePlan {
        media: sdp
            .media()
            .iter()
            .enumerate()
            .map(|(i, _)| {
                edit.media
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|(addr, rtp_port, rtcp_port)| wire::MediaRewrite {
                        addr,
                        rtp_port,
                        rtcp_port: Some(rtcp_port),
                    })
            })
            .collect(),
        origin: edit.origin,
        session_connection: Some(edit.session_connection),
        ice: match edit.ice {
            IceAction::Remove => wire::IceAction::Remove,
            IceAction::Keep => wire::IceAction::Keep,
        },
        ..wire::RewritePlan::default()
    };
    Ok(wire::rewrite(sdp, &plan).map_err(sdp_error)?.to_bytes())
}
