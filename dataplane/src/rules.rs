//! Stream rules as the control plane states them, and their encoding into the ABI.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use sluice_ebpf::abi::{self, FlowKey, FlowRule};

use crate::DataplaneError;

/// Identifies an installed stream: its slot in the per-stream counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One direction of a relayed stream: packets arriving at `local` leave from `source` to
/// `destination`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRule {
    /// Where the stream's packets arrive on the relay.
    pub local: SocketAddrV4,
    /// Where the relay sends them from: its address and port on the other leg.
    pub source: SocketAddrV4,
    /// Where the relay sends them. `None` until the reverse leg's latch teaches it.
    pub destination: Option<SocketAddrV4>,
    /// The sender's address as signalled; with `latch`, only a first guess.
    pub expected_peer: Option<SocketAddrV4>,
    /// Learn the sender from its first packet (symmetric RTP, RFC 4961).
    pub latch: bool,
    /// The `local` address of the reverse rule, whose destination the latch sets.
    pub teach: Option<SocketAddrV4>,
    /// Drop packets from any source but the (expected or learned) peer.
    pub strict_source: bool,
}

impl StreamRule {
    /// A rule with every address known and no latching.
    pub fn fixed(local: SocketAddrV4, source: SocketAddrV4, destination: SocketAddrV4) -> Self {
        Self {
            local,
            source,
            destination: Some(destination),
            expected_peer: None,
            latch: false,
            teach: None,
            strict_source: false,
        }
    }

    /// Checks the rule and encodes it for the `flows` map. `egress_ifindex` is the interface that
    /// owns `source` (0: the one the packet arrived on).
    pub fn encode(
        &self,
        stats_slot: u32,
        egress_ifindex: u32,
    ) -> Result<(FlowKey, FlowRule), DataplaneError> {
        let invalid = |why: &str| Err(DataplaneError::InvalidRule(format!("{why} ({self:?})")));
        if self.local.port() == 0 || self.source.port() == 0 {
            return invalid("relay ports must not be 0");
        }
        if self.local.ip().is_unspecified() || self.source.ip().is_unspecified() {
            return invalid("relay addresses must be set");
        }
        if self.teach.is_some() && !self.latch {
            return invalid("only a latching rule can teach its reverse");
        }
        if self.strict_source && !self.latch && self.expected_peer.is_none() {
            return invalid("strict source needs an expected peer or latching");
        }
        let mut flags = 0;
        if self.latch {
            flags |= abi::RULE_LATCH;
        }
        if self.strict_source {
            flags |= abi::RULE_STRICT_SOURCE;
        }
        let destination = match self.destination {
            Some(d) => d,
            None => {
                flags |= abi::RULE_DST_PENDING;
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)
            }
        };
        let peer = self
            .expected_peer
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let rule = FlowRule {
            new_src_addr: abi::addr_to_wire(*self.source.ip()),
            new_dst_addr: abi::addr_to_wire(*destination.ip()),
            new_src_port: self.source.port().to_be(),
            new_dst_port: destination.port().to_be(),
            flags,
            // A latching leg starts with no peer: strict source applies once it is learned.
            peer_addr: if self.latch {
                0
            } else {
                abi::addr_to_wire(*peer.ip())
            },
            peer_port: if self.latch { 0 } else { peer.port().to_be() },
            _pad0: 0,
            latch_state: abi::LATCH_WAITING,
            stats_slot,
            egress_ifindex,
            teach_key: self.teach.map(FlowKey::new).unwrap_or_default(),
        };
        Ok((FlowKey::new(self.local), rule))
    }
}

/// How the relay knows the address of one party.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The signalled address is where the party sends from and listens.
    Known(SocketAddrV4),
    /// The party may be behind NAT: learn it from its first packet. The signalled address, if
    /// any, is used as the destination until then.
    Latch(Option<SocketAddrV4>),
}

/// One side of a relayed stream: the relay's address and port facing the party, and the party.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg {
    /// The relay's address and port that this party sends to and receives from.
    pub relay: SocketAddrV4,
    /// The party.
    pub peer: Peer,
}

/// The two rules that relay a stream both ways between legs `a` and `b`: the first carries what
/// `a` sends to `b`, the second what `b` sends to `a`.
pub fn bidirectional(a: Leg, b: Leg, strict_source: bool) -> [StreamRule; 2] {
    let one_way = |from: Leg, to: Leg| StreamRule {
        local: from.relay,
        source: to.relay,
        destination: match to.peer {
            Peer::Known(addr) => Some(addr),
            Peer::Latch(first_guess) => first_guess,
        },
        expected_peer: match from.peer {
            Peer::Known(addr) => Some(addr),
            Peer::Latch(first_guess) => first_guess,
        },
        latch: matches!(from.peer, Peer::Latch(_)),
        teach: matches!(from.peer, Peer::Latch(_)).then_some(to.relay),
        strict_source,
    };
    [one_way(a, b), one_way(b, a)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("test address")
    }

    #[test]
    fn fixed_rule_encodes_network_order() {
        let rule = StreamRule::fixed(
            sa("10.0.0.1:30000"),
            sa("10.0.1.1:30002"),
            sa("10.0.1.2:4000"),
        );
        let (key, encoded) = rule.encode(7, 0).expect("valid");
        assert_eq!(key.socket_addr(), sa("10.0.0.1:30000"));
        assert_eq!(encoded.new_source(), sa("10.0.1.1:30002"));
        assert_eq!(encoded.new_destination(), sa("10.0.1.2:4000"));
        assert_eq!(encoded.stats_slot, 7);
        assert_eq!(encoded.flags, 0);
        assert_eq!(encoded.peer(), None);
    }

    #[test]
    fn latching_pair_teaches_the_reverse_rule() {
        let a = Leg {
            relay: sa("10.0.0.1:30000"),
            peer: Peer::Latch(None),
        };
        let b = Leg {
            relay: sa("10.0.1.1:30002"),
            peer: Peer::Known(sa("10.0.1.2:4000")),
        };
        let [a_to_b, b_to_a] = bidirectional(a, b, true);
        assert!(a_to_b.latch);
        assert_eq!(a_to_b.teach, Some(b.relay));
        assert_eq!(a_to_b.destination, Some(sa("10.0.1.2:4000")));
        assert!(!b_to_a.latch);
        assert_eq!(b_to_a.destination, None);
        assert_eq!(b_to_a.expected_peer, Some(sa("10.0.1.2:4000")));

        let (_, enc) = b_to_a.encode(1, 0).expect("valid");
        assert_eq!(enc.flags & abi::RULE_DST_PENDING, abi::RULE_DST_PENDING);
        let (_, enc) = a_to_b.encode(0, 0).expect("valid");
        assert_eq!(enc.teach_key, FlowKey::new(b.relay));
        assert_eq!(enc.flags, abi::RULE_LATCH | abi::RULE_STRICT_SOURCE);
    }

    #[test]
    fn inconsistent_rules_are_refused() {
        let mut rule = StreamRule::fixed(
            sa("10.0.0.1:30000"),
            sa("10.0.1.1:30002"),
            sa("10.0.1.2:4000"),
        );
        rule.strict_source = true;
        assert!(rule.encode(0, 0).is_err(), "strict without a peer");
        rule.strict_source = false;
        rule.teach = Some(sa("10.0.1.1:30002"));
        assert!(rule.encode(0, 0).is_err(), "teach without latch");
        let zero = StreamRule::fixed(sa("10.0.0.1:0"), sa("10.0.1.1:30002"), sa("10.0.1.2:4000"));
        assert!(zero.encode(0, 0).is_err(), "port 0");
    }
}
