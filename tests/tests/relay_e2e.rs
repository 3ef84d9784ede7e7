//! End to end through each forwarding path (XDP, AF_XDP, sockets): a caller and a callee in
//! their own namespaces exchange UDP through the relay namespace, over real veth pairs, in both
//! topologies. The receivers check the rewritten addresses and the payload, and the relay's
//! counters must equal what was received.

use std::net::{SocketAddrV4, UdpSocket};
use std::time::Duration;

use sluice_dataplane::netns::NetNs;
use sluice_dataplane::testbed::{Testbed, TopologyKind};
use sluice_dataplane::{
    bidirectional, BackendChoice, BackendKind, Counter, DataplaneConfig, Forwarder,
    ForwarderConfig, Leg, Peer, StreamId, StreamRule,
};

const PACKETS: usize = 300;
const CALLER_PORT: u16 = 4000;
const CALLEE_PORT: u16 = 5000;

fn privileged() -> bool {
    sluice_dataplane::netns::privileged_test(module_path!())
}

/// A forwarding path running in a testbed's relay namespace.
struct Relay<'a> {
    bed: &'a Testbed,
    forwarder: Box<dyn Forwarder>,
}

impl<'a> Relay<'a> {
    fn start(bed: &'a Testbed, kind: BackendKind) -> Self {
        let config = ForwarderConfig {
            xdp: DataplaneConfig {
                relay_ports: 30000..=30999,
                max_streams: 256,
            },
            ..ForwarderConfig::default()
        };
        let started = bed
            .start_forwarder(BackendChoice::Only(kind), config)
            .unwrap_or_else(|e| panic!("starting {}: {e}", kind.name()));
        assert_eq!(started.kind, kind);
        Relay {
            bed,
            forwarder: started.forwarder,
        }
    }

    /// Rules are installed from the relay namespace: the socket path binds there.
    fn install(&mut self, rule: &StreamRule) -> StreamId {
        let forwarder = &mut self.forwarder;
        self.bed
            .relay()
            .run(|| forwarder.install(rule))
            .expect("namespace")
            .expect("install")
    }

    fn counters(&self) -> sluice_dataplane::CounterSnapshot {
        self.forwarder.counters().expect("counters")
    }
}

fn bind(ns: &NetNs, addr: SocketAddrV4) -> UdpSocket {
    let socket = ns
        .run(move || UdpSocket::bind(addr))
        .expect("enter namespace")
        .expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    socket
}

fn payload(direction: u8, i: usize) -> Vec<u8> {
    // 172 bytes like a G.711 RTP packet; the content varies so a corruption would show.
    (0..172)
        .map(|b| (b as u8).wrapping_mul(31) ^ (i as u8) ^ direction)
        .collect()
}

/// Sends `PACKETS` datagrams from `from` to `to` and expects each at `receiver`, from `relay_src`.
/// Returns the UDP payload bytes received.
fn exchange(
    from: &UdpSocket,
    to: SocketAddrV4,
    receiver: &UdpSocket,
    relay_src: SocketAddrV4,
    direction: u8,
) -> Result<u64, String> {
    let mut buf = [0u8; 2048];
    let mut bytes = 0;
    for i in 0..PACKETS {
        let sent = payload(direction, i);
        from.send_to(&sent, to).expect("send");
        let (n, src) = receiver.recv_from(&mut buf).map_err(|e| {
            format!("packet {i} of direction {direction} to {to} never arrived: {e}")
        })?;
        assert_eq!(
            src,
            relay_src.into(),
            "the relay must re-originate the packet"
        );
        assert_eq!(&buf[..n], &sent[..], "payload of packet {i} changed");
        bytes += n as u64;
    }
    Ok(bytes)
}

fn nothing_arrives(socket: &UdpSocket) -> bool {
    socket.recv_from(&mut [0u8; 64]).is_err()
}

fn relay_call(kind: BackendKind, topology: TopologyKind, caller_behind_nat: bool, strict: bool) {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(topology, "e2e").expect("testbed");
    let mut relay = Relay::start(&bed, kind);

    let caller = SocketAddrV4::new(bed.caller_addr(), CALLER_PORT);
    let callee = SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT);
    let relay_a = SocketAddrV4::new(bed.relay_caller_addr(), 30000);
    let relay_b = SocketAddrV4::new(bed.relay_callee_addr(), 30002);
    let caller_peer = if caller_behind_nat {
        Peer::Latch(None)
    } else {
        Peer::Known(caller)
    };
    let [a_to_b, b_to_a] = bidirectional(
        Leg {
            relay: relay_a,
            peer: caller_peer,
        },
        Leg {
            relay: relay_b,
            peer: Peer::Known(callee),
        },
        strict,
    );
    let forward = relay.install(&a_to_b);
    let backward = relay.install(&b_to_a);
    let before = relay.counters();

    let caller_socket = bind(bed.caller(), caller);
    let callee_socket = bind(bed.callee(), callee);
    if caller_behind_nat {
        // Until the caller speaks, the relay does not know where to send the callee's media.
        callee_socket.send_to(b"too early", relay_b).expect("send");
        assert!(
            nothing_arrives(&caller_socket),
            "nothing reaches the caller yet"
        );
        assert_eq!(relay.forwarder.latched_peer(forward).expect("rule"), None);
    }
    let explain = |e: String| {
        panic!(
            "{}: {e}; relay counters: {:?}",
            kind.name(),
            relay.counters()
        )
    };
    let forward_bytes =
        exchange(&caller_socket, relay_a, &callee_socket, relay_b, 1).unwrap_or_else(explain);
    let backward_bytes =
        exchange(&callee_socket, relay_b, &caller_socket, relay_a, 2).unwrap_or_else(explain);

    let f = relay.forwarder.stream_counters(forward).expect("counters");
    let b = relay.forwarder.stream_counters(backward).expect("counters");
    assert_eq!(
        (f.packets, f.bytes),
        (PACKETS as u64, forward_bytes),
        "caller->callee counters"
    );
    assert_eq!(
        (b.packets, b.bytes),
        (PACKETS as u64, backward_bytes),
        "callee->caller counters"
    );
    assert!(f.last_seen.is_some() && b.last_seen.is_some());
    if caller_behind_nat {
        assert_eq!(
            relay.forwarder.latched_peer(forward).expect("rule"),
            Some(caller)
        );
    }

    // Every path counts its forwarded packets; the kernel's first packet each way may go
    // through the stack while the neighbour is resolved. A userspace path counts a packet once
    // its send returned, which can be just after the receiver has it.
    let forwarded_of = |delta: &sluice_dataplane::CounterSnapshot| {
        delta.get(Counter::Tx) + delta.get(Counter::Redirect) + delta.get(Counter::PassNoNeigh)
    };
    let mut delta = relay.counters().since(&before);
    for _ in 0..50 {
        if forwarded_of(&delta) >= 2 * PACKETS as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        delta = relay.counters().since(&before);
    }
    let forwarded = forwarded_of(&delta);
    assert_eq!(
        forwarded,
        2 * PACKETS as u64,
        "every packet forwarded once: {delta:?}"
    );
    match kind {
        BackendKind::Xdp => {
            let in_kernel = match topology {
                TopologyKind::TwoArm => delta.get(Counter::Redirect),
                TopologyKind::OneArm => delta.get(Counter::Tx),
            };
            assert!(
                in_kernel >= 2 * PACKETS as u64 - 4,
                "forwarded in XDP: {delta:?}"
            );
        }
        BackendKind::AfXdp => {
            // What the kernel handed to the workers, the workers sent.
            assert!(
                delta.get(Counter::Userspace) >= 2 * PACKETS as u64 - 4,
                "{delta:?}"
            );
            assert_eq!(
                delta.get(Counter::Userspace),
                delta.get(Counter::Tx),
                "{delta:?}"
            );
            assert_eq!(
                delta.get(Counter::Redirect),
                0,
                "nothing left to XDP: {delta:?}"
            );
        }
        BackendKind::Sockets => assert_eq!(delta.get(Counter::Tx), 2 * PACKETS as u64),
    }
    let expected_pending = u64::from(caller_behind_nat);
    assert_eq!(
        delta.get(Counter::DropDstPending),
        expected_pending,
        "{delta:?}"
    );
    assert_eq!(delta.get(Counter::Latched), expected_pending, "{delta:?}");
    assert_eq!(delta.drops(), expected_pending, "no other drop: {delta:?}");

    if strict && caller_behind_nat {
        // Another host in the caller's network tries to inject media into the call.
        let intruder = bind(
            bed.caller(),
            SocketAddrV4::new(bed.caller_addr(), CALLER_PORT + 2),
        );
        let drops_before = relay.counters();
        intruder.send_to(b"injected", relay_a).expect("send");
        assert!(
            nothing_arrives(&callee_socket),
            "strict source must drop it"
        );
        let drops = relay.counters().since(&drops_before);
        assert_eq!(drops.get(Counter::DropSourceMismatch), 1, "{drops:?}");
    }

    // SIP, ARP and ICMP to the relay still reach its network stack.
    bed.caller()
        .exec(&[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &bed.relay_caller_addr().to_string(),
        ])
        .expect("the relay's own address answers ping");

    let final_counters = relay.forwarder.remove(forward).expect("remove");
    assert_eq!(final_counters.packets, PACKETS as u64);
    let before_gone = relay.counters();
    caller_socket
        .send_to(b"after the call", relay_a)
        .expect("send");
    assert!(
        nothing_arrives(&callee_socket),
        "a removed stream is not relayed"
    );
    if kind != BackendKind::Sockets {
        // The kernel paths drop it as an unknown port (the socket path has closed the socket).
        let gone = relay.counters().since(&before_gone);
        assert_eq!(gone.get(Counter::DropUnknownPort), 1, "{gone:?}");
    }
}

macro_rules! call_tests {
    ($($name:ident: $kind:expr, $topology:expr, $nat:expr, $strict:expr;)*) => {
        $(
            #[test]
            fn $name() {
                relay_call($kind, $topology, $nat, $strict);
            }
        )*
    };
}

call_tests! {
    xdp_two_arm: BackendKind::Xdp, TopologyKind::TwoArm, false, false;
    xdp_one_arm: BackendKind::Xdp, TopologyKind::OneArm, false, false;
    xdp_two_arm_latching_strict: BackendKind::Xdp, TopologyKind::TwoArm, true, true;
    xdp_one_arm_latching: BackendKind::Xdp, TopologyKind::OneArm, true, false;
    afxdp_two_arm: BackendKind::AfXdp, TopologyKind::TwoArm, false, false;
    afxdp_one_arm: BackendKind::AfXdp, TopologyKind::OneArm, false, false;
    afxdp_two_arm_latching_strict: BackendKind::AfXdp, TopologyKind::TwoArm, true, true;
    afxdp_one_arm_latching: BackendKind::AfXdp, TopologyKind::OneArm, true, false;
    sockets_two_arm: BackendKind::Sockets, TopologyKind::TwoArm, false, false;
    sockets_one_arm: BackendKind::Sockets, TopologyKind::OneArm, false, false;
    sockets_two_arm_latching_strict: BackendKind::Sockets, TopologyKind::TwoArm, true, true;
    sockets_one_arm_latching: BackendKind::Sockets, TopologyKind::OneArm, true, false;
}

fn one_way(kind: BackendKind) {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(TopologyKind::TwoArm, "oneway").expect("testbed");
    let mut relay = Relay::start(&bed, kind);
    let callee = SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT);
    let relay_a = SocketAddrV4::new(bed.relay_caller_addr(), 30100);
    let relay_b = SocketAddrV4::new(bed.relay_callee_addr(), 30102);
    let id = relay.install(&StreamRule::fixed(relay_a, relay_b, callee));
    let caller_socket = bind(
        bed.caller(),
        SocketAddrV4::new(bed.caller_addr(), CALLER_PORT),
    );
    let callee_socket = bind(bed.callee(), callee);
    let bytes = exchange(&caller_socket, relay_a, &callee_socket, relay_b, 3)
        .unwrap_or_else(|e| panic!("{e}; relay counters: {:?}", relay.counters()));
    let counters = relay.forwarder.stream_counters(id).expect("counters");
    assert_eq!((counters.packets, counters.bytes), (PACKETS as u64, bytes));

    // The reverse direction has no rule: a relay port with no rule on a relay address is dropped.
    let before = relay.counters();
    callee_socket.send_to(b"no rule", relay_b).expect("send");
    assert!(nothing_arrives(&caller_socket));
    let delta = relay.counters().since(&before);
    assert_eq!(delta.get(Counter::DropUnknownPort), 1, "{delta:?}");
}

#[test]
fn xdp_fixed_rule_without_reverse_is_one_way() {
    one_way(BackendKind::Xdp);
}

#[test]
fn afxdp_fixed_rule_without_reverse_is_one_way() {
    one_way(BackendKind::AfXdp);
}

#[test]
fn sockets_fixed_rule_without_reverse_is_one_way() {
    one_way(BackendKind::Sockets);
}

#[test]
fn auto_picks_xdp_where_it_attaches_natively() {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(TopologyKind::OneArm, "auto").expect("testbed");
    let started = bed
        .start_forwarder(BackendChoice::Auto, ForwarderConfig::default())
        .expect("start");
    assert_eq!(started.kind, BackendKind::Xdp, "{}", started.reason);
    assert!(started.reason.contains("natively"), "{}", started.reason);
}

#[test]
fn auto_falls_back_to_sockets_when_forwarding_is_off() {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(TopologyKind::OneArm, "autofwd").expect("testbed");
    bed.relay()
        .sysctl("net.ipv4.conf.r0.forwarding", "0")
        .expect("sysctl");
    let started = bed
        .start_forwarder(BackendChoice::Auto, ForwarderConfig::default())
        .expect("start");
    assert_eq!(started.kind, BackendKind::Sockets, "{}", started.reason);
    assert!(
        started.reason.contains("forwarding is off on r0"),
        "{}",
        started.reason
    );
    let explicit = bed.start_forwarder(
        BackendChoice::Only(BackendKind::Xdp),
        ForwarderConfig::default(),
    );
    assert!(
        explicit.is_err(),
        "an explicit xdp backend refuses to drop every stream"
    );
}

#[test]
fn auto_falls_back_to_sockets_and_says_why() {
    if !privileged() {
        return;
    }
    // An interface that does not exist cannot take XDP; the sockets need none.
    let bed = Testbed::build(TopologyKind::OneArm, "autofb").expect("testbed");
    let config = ForwarderConfig {
        ifaces: vec!["nosuch0".into()],
        ..ForwarderConfig::default()
    };
    let started = bed
        .relay()
        .run(|| sluice_dataplane::start_forwarder(BackendChoice::Auto, &config))
        .expect("namespace")
        .expect("start");
    assert_eq!(started.kind, BackendKind::Sockets);
    assert!(
        started.reason.contains("nosuch0"),
        "the reason names the cause: {}",
        started.reason
    );
}
