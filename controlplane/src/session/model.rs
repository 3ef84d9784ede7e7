//! What the session manager knows of a call: its two sides, their media, the relay ports it gave
//! each, and the stream rules it installed. Pure data and pure decisions; no I/O.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use sluice_dataplane::{bidirectional, Leg, Peer, StreamId, StreamRule};

/// The two parties of a call: `A` sent the first offer (the `from-tag`), `B` answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// Media direction attribute (RFC 4566 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One media line as a party described it, reduced to what relaying needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDesc {
    /// `audio`, `video`, `image`, ...
    pub kind: String,
    /// `RTP/AVP`, `udptl`, ...
    pub proto: String,
    /// Where the party receives RTP; port 0 = the stream is rejected.
    pub rtp: SocketAddrV4,
    /// Where it receives RTCP (`a=rtcp`, else the RTP port + 1).
    pub rtcp: SocketAddrV4,
    /// RTCP shares the RTP port (`a=rtcp-mux`).
    pub rtcp_mux: bool,
    pub direction: Direction,
}

impl MediaDesc {
    /// Port 0: the answerer rejected the stream (RFC 3264 §6).
    pub fn rejected(&self) -> bool {
        self.rtp.port() == 0
    }

    /// On hold: the party sends nothing, or the old `c=0.0.0.0` (RFC 2543) form.
    pub fn on_hold(&self) -> bool {
        matches!(self.direction, Direction::SendOnly | Direction::Inactive)
            || self.rtp.ip().is_unspecified()
    }
}

/// How the relay learns where a party really is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Symmetry {
    /// Latch when the party looks NATed: a private SDP address, or one that differs from the
    /// address its signalling came from.
    #[default]
    Auto,
    /// Always learn the party's address from its first packet (rtpengine's `symmetric`).
    Symmetric,
    /// Trust the SDP (rtpengine's `asymmetric`).
    Asymmetric,
}

/// One party: its tag, where its signalling came from, and its media.
#[derive(Clone, Debug, Default)]
pub struct Party {
    pub tag: Option<String>,
    pub signalling_source: Option<Ipv4Addr>,
    pub media: Vec<MediaDesc>,
    pub symmetry: Symmetry,
}

impl Party {
    /// Whether the relay should learn this party's address from its packets.
    pub fn latches(&self, media: &MediaDesc) -> bool {
        match self.symmetry {
            Symmetry::Symmetric => true,
            Symmetry::Asymmetric => false,
            Symmetry::Auto => {
                let ip = *media.rtp.ip();
                looks_private(ip)
                    || ip.is_unspecified()
                    || self.signalling_source.is_some_and(|source| source != ip)
            }
        }
    }
}

/// RFC 1918, shared address space (RFC 6598, carrier-grade NAT) and link-local addresses:
/// whoever advertises one is behind NAT as seen from a carrier.
pub fn looks_private(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || ip.is_link_local() || (a == 100 && (64..128).contains(&b))
}

/// A relay interface facing one side: where the rules listen, and what the SDP advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facing {
    pub interface: usize,
    pub addr: Ipv4Addr,
    pub advertised: Ipv4Addr,
}

/// The relay ports of one media line: a pair (RTP even, RTCP odd) on each side's interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPorts {
    /// RTP port facing side A and side B.
    pub rtp: [u16; 2],
}

/// An installed stream rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledStream {
    pub id: StreamId,
    /// The side whose packets this rule carries.
    pub from: Side,
    pub rtcp: bool,
    /// The rule as last installed or updated: an unchanged rule is not rewritten (a rewrite
    /// would reset a learned latch, e.g. on every session-timer re-INVITE).
    pub rule: StreamRule,
}

/// Whether the call is on hold: every media line that both parties keep (not rejected) is on
/// hold in one party's description (`sendonly`, `inactive` or `c=0.0.0.0`), and there is one
/// such line at least. Rejected lines do not count either way.
pub fn call_on_hold(parties: &[Party; 2]) -> bool {
    let mut active = parties[0]
        .media
        .iter()
        .zip(&parties[1].media)
        .filter(|(a, b)| !a.rejected() && !b.rejected())
        .peekable();
    active.peek().is_some() && active.all(|(a, b)| a.on_hold() || b.on_hold())
}

/// What the rules of one media line should be, from both parties' descriptions.
pub fn media_rules(
    facing: &[Facing; 2],
    ports: &MediaPorts,
    parties: &[Party; 2],
    index: usize,
    strict_source: bool,
) -> Vec<(Side, bool, StreamRule)> {
    let (Some(a), Some(b)) = (parties[0].media.get(index), parties[1].media.get(index)) else {
        return Vec::new();
    };
    if a.rejected() || b.rejected() {
        return Vec::new();
    }
    let leg = |side: Side, desc: &MediaDesc, rtcp: bool| {
        let f = &facing[side.index()];
        let port = ports.rtp[side.index()] + u16::from(rtcp);
        let addr = if rtcp { desc.rtcp } else { desc.rtp };
        let peer = if addr.ip().is_unspecified() {
            // A held party's 0.0.0.0 is no destination, whatever the symmetry: send it nothing
            // until its own packets say where it is.
            Peer::Latch(None)
        } else if parties[side.index()].latches(desc) {
            Peer::Latch(Some(addr))
        } else {
            Peer::Known(addr)
        };
        Leg {
            relay: SocketAddrV4::new(f.addr, port),
            peer,
        }
    };
    let mut rules = Vec::new();
    let with_rtcp = !(a.rtcp_mux && b.rtcp_mux);
    for rtcp in [false, true] {
        if rtcp && !with_rtcp {
            break;
        }
        let [from_a, from_b] =
            bidirectional(leg(Side::A, a, rtcp), leg(Side::B, b, rtcp), strict_source);
        rules.push((Side::A, rtcp, from_a));
        rules.push((Side::B, rtcp, from_b));
    }
    rules
}

/// Why a call ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TerminationCause {
    /// A `delete` (the proxy saw a BYE, a CANCEL or a failure).
    Deleted,
    /// No packet in either direction for the media timeout (or the hold timeout).
    MediaTimeout,
    /// The maximum call duration was reached.
    MaxDuration,
    /// An offer that was never answered.
    OfferTimeout,
}

impl TerminationCause {
    pub fn name(&self) -> &'static str {
        match self {
            TerminationCause::Deleted => "deleted",
            TerminationCause::MediaTimeout => "media-timeout",
            TerminationCause::MaxDuration => "max-duration",
            TerminationCause::OfferTimeout => "offer-timeout",
        }
    }
}

/// Timeouts, as rtpengine names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// No packet in either direction (rtpengine `--timeout`, default 60 s).
    pub media: Duration,
    /// No packet while every stream is on hold (`--silent-timeout`, default 3600 s).
    pub hold: Duration,
    /// Longest call (`--final-timeout`); `None` = unlimited.
    pub max_duration: Option<Duration>,
    /// An offer never answered.
    pub offer: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            media: Duration::from_secs(60),
            hold: Duration::from_secs(3600),
            max_duration: None,
            offer: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(addr: &str) -> MediaDesc {
        let rtp: SocketAddrV4 = addr.parse().expect("addr");
        MediaDesc {
            kind: "audio".into(),
            proto: "RTP/AVP".into(),
            rtp,
            rtcp: SocketAddrV4::new(*rtp.ip(), rtp.port() + 1),
            rtcp_mux: false,
            direction: Direction::SendRecv,
        }
    }

    fn facing() -> [Facing; 2] {
        let f = |i: usize, a: [u8; 4]| Facing {
            interface: i,
            addr: a.into(),
            advertised: a.into(),
        };
        [f(0, [203, 0, 113, 1]), f(1, [198, 51, 100, 1])]
    }

    #[test]
    fn private_or_mismatching_addresses_latch() {
        let mut party = Party {
            media: vec![media("192.168.1.10:4000")],
            ..Party::default()
        };
        assert!(party.latches(&party.media[0].clone()));
        party.media[0] = media("203.0.113.50:4000");
        assert!(!party.latches(&party.media[0].clone()));
        party.signalling_source = Some(Ipv4Addr::new(203, 0, 113, 51));
        assert!(
            party.latches(&party.media[0].clone()),
            "SDP differs from the signalling source"
        );
        party.symmetry = Symmetry::Asymmetric;
        assert!(!party.latches(&party.media[0].clone()));
        assert!(
            looks_private(Ipv4Addr::new(100, 64, 0, 1)),
            "carrier-grade NAT"
        );
    }

    #[test]
    fn a_media_line_gives_rtp_and_rtcp_both_ways() {
        let parties = [
            Party {
                media: vec![media("203.0.113.50:4000")],
                ..Party::default()
            },
            Party {
                media: vec![media("198.51.100.60:5000")],
                ..Party::default()
            },
        ];
        let rules = media_rules(
            &facing(),
            &MediaPorts {
                rtp: [30000, 40000],
            },
            &parties,
            0,
            false,
        );
        assert_eq!(rules.len(), 4);
        let (side, rtcp, rule) = &rules[0];
        assert_eq!((*side, *rtcp), (Side::A, false));
        assert_eq!(rule.local, "203.0.113.1:30000".parse().expect("addr"));
        assert_eq!(rule.source, "198.51.100.1:40000".parse().expect("addr"));
        assert_eq!(
            rule.destination,
            Some("198.51.100.60:5000".parse().expect("addr"))
        );
        let (side, rtcp, rule) = &rules[3];
        assert_eq!((*side, *rtcp), (Side::B, true));
        assert_eq!(rule.local, "198.51.100.1:40001".parse().expect("addr"));
        assert_eq!(
            rule.destination,
            Some("203.0.113.50:4001".parse().expect("addr"))
        );
    }

    #[test]
    fn rtcp_mux_and_rejected_streams() {
        let mut a = media("203.0.113.50:4000");
        let mut b = media("198.51.100.60:5000");
        a.rtcp_mux = true;
        b.rtcp_mux = true;
        let parties = [
            Party {
                media: vec![a.clone()],
                ..Party::default()
            },
            Party {
                media: vec![b.clone()],
                ..Party::default()
            },
        ];
        let ports = MediaPorts {
            rtp: [30000, 40000],
        };
        assert_eq!(media_rules(&facing(), &ports, &parties, 0, false).len(), 2);
        b.rtp.set_port(0);
        let parties = [
            Party {
                media: vec![a],
                ..Party::default()
            },
            Party {
                media: vec![b],
                ..Party::default()
            },
        ];
        assert!(media_rules(&facing(), &ports, &parties, 0, false).is_empty());
    }

    #[test]
    fn a_natted_party_is_latched_and_held_parties_wait() {
        let mut held = media("0.0.0.0:4000");
        held.direction = Direction::SendOnly;
        assert!(held.on_hold());
        let parties = [
            Party {
                media: vec![held],
                ..Party::default()
            },
            Party {
                media: vec![media("198.51.100.60:5000")],
                ..Party::default()
            },
        ];
        let rules = media_rules(
            &facing(),
            &MediaPorts {
                rtp: [30000, 40000],
            },
            &parties,
            0,
            true,
        );
        let (_, _, from_a) = &rules[0];
        assert!(from_a.latch, "0.0.0.0 is learned from packets");
        let (_, _, from_b) = &rules[1];
        assert_eq!(from_b.destination, None, "nowhere to send until A speaks");
    }
}
