//! End to end through the AF_XDP path: the XDP program hands userspace streams to AF_XDP
//! sockets, the workers rewrite and transmit them. A caller and a callee in their own namespaces
//! exchange UDP over real veth pairs, in both topologies; the receivers check the rewritten
//! source and the payload, and the relay's counters must equal what was received.

use std::net::{SocketAddrV4, UdpSocket};
use std::time::Duration;

use sluice_dataplane::testbed::{Testbed, TopologyKind};
use sluice_dataplane::{
    bidirectional, AfXdpConfig, AfXdpRelay, AttachMode, BackendKind, Counter, DataplaneConfig,
    Forwarder, Leg, Peer, XskMode,
};

const PACKETS: usize = 300;
const CALLER_PORT: u16 = 4000;
const CALLEE_PORT: u16 = 5000;

fn privileged() -> bool {
    sluice_dataplane::netns::privileged_test(module_path!())
}

fn bind(ns: &sluice_dataplane::netns::NetNs, addr: SocketAddrV4) -> UdpSocket {
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
    (0..172)
        .map(|b| (b as u8).wrapping_mul(31) ^ (i as u8) ^ direction)
        .collect()
}

/// Sends `PACKETS` datagrams and expects each at `receiver`, from `relay_src`, intact. Returns
/// the UDP payload bytes received.
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

fn relay_call(kind: TopologyKind, tag: &str, caller_behind_nat: bool) {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(kind, tag).expect("testbed");
    let config = DataplaneConfig {
        relay_ports: 30000..=30999,
        max_streams: 256,
    };
    let (dataplane, _) = bed.start_relay(&config, AttachMode::Native).expect("relay");
    let mut relay = bed
        .relay()
        .run(move || AfXdpRelay::start(dataplane, AfXdpConfig::default()))
        .expect("enter the relay namespace")
        .expect("AF_XDP workers start");
    assert_eq!(relay.kind(), BackendKind::AfXdp);
    assert_eq!(relay.workers(), 1, "veth has one queue");
    assert_eq!(
        relay.mode().len(),
        bed.relay_ifaces().len(),
        "a socket per interface"
    );
    assert!(
        relay
            .mode()
            .iter()
            .all(|s| s.mode == XskMode::Copy && s.queue == 0),
        "veth has no zero-copy: {:?}",
        relay.mode()
    );

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
        true,
    );
    let forward = relay.install(&a_to_b).expect("install a->b");
    let backward = relay.install(&b_to_a).expect("install b->a");
    let before = relay.counters().expect("counters");

    let caller_socket = bind(bed.caller(), caller);
    let callee_socket = bind(bed.callee(), callee);
    if caller_behind_nat {
        callee_socket.send_to(b"too early", relay_b).expect("send");
        assert!(
            caller_socket.recv_from(&mut [0u8; 64]).is_err(),
            "nothing reaches the caller yet"
        );
        assert_eq!(relay.latched_peer(forward).expect("rule"), None);
    }
    let explain = |e: String| -> u64 {
        panic!(
            "{e}; relay counters: {:?}; sockets: {:?}",
            relay.counters(),
            relay.mode()
        )
    };
    let forward_bytes =
        exchange(&caller_socket, relay_a, &callee_socket, relay_b, 1).unwrap_or_else(explain);
    let backward_bytes =
        exchange(&callee_socket, relay_b, &caller_socket, relay_a, 2).unwrap_or_else(explain);

    let f = relay.stream_counters(forward).expect("counters");
    let b = relay.stream_counters(backward).expect("counters");
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
        assert_eq!(relay.latched_peer(forward).expect("rule"), Some(caller));
    }

    let delta = relay.counters().expect("counters").since(&before);
    let handed_over = delta.get(Counter::Userspace);
    let in_workers = delta.get(Counter::Tx);
    assert_eq!(
        in_workers + delta.get(Counter::PassNoNeigh),
        2 * PACKETS as u64,
        "every packet forwarded once: {delta:?}"
    );
    assert_eq!(
        handed_over, in_workers,
        "the workers forward all they get: {delta:?}"
    );
    // The first packet each way may go through the stack while the neighbour is resolved.
    assert!(
        handed_over >= 2 * PACKETS as u64 - 4,
        "forwarded in userspace: {delta:?}"
    );
    assert_eq!(delta.get(Counter::Redirect), 0, "{delta:?}");
    let expected_pending = u64::from(caller_behind_nat);
    assert_eq!(
        delta.get(Counter::DropDstPending),
        expected_pending,
        "{delta:?}"
    );
    assert_eq!(delta.get(Counter::Latched), expected_pending, "{delta:?}");
    assert_eq!(delta.drops(), expected_pending, "{delta:?}");

    if caller_behind_nat {
        // Strict source: an intruder in the caller's network is dropped by the kernel.
        let intruder = bind(
            bed.caller(),
            SocketAddrV4::new(bed.caller_addr(), CALLER_PORT + 2),
        );
        let drops_before = relay.counters().expect("counters");
        intruder.send_to(b"injected", relay_a).expect("send");
        assert!(callee_socket.recv_from(&mut [0u8; 64]).is_err());
        let drops = relay.counters().expect("counters").since(&drops_before);
        assert_eq!(drops.get(Counter::DropSourceMismatch), 1, "{drops:?}");
    }

    let final_forward = relay.remove(forward).expect("remove");
    assert_eq!(final_forward.packets, PACKETS as u64);
    // After removal the port is unknown: the kernel drops it, the workers see nothing.
    let before_gone = relay.counters().expect("counters");
    caller_socket.send_to(b"gone", relay_a).expect("send");
    assert!(callee_socket.recv_from(&mut [0u8; 64]).is_err());
    let gone = relay.counters().expect("counters").since(&before_gone);
    assert_eq!(gone.get(Counter::DropUnknownPort), 1, "{gone:?}");
    relay.remove(backward).expect("remove");
    drop(relay);
}

#[test]
fn two_arm_known_peers() {
    relay_call(TopologyKind::TwoArm, "afx2k", false);
}

#[test]
fn two_arm_caller_behind_nat() {
    relay_call(TopologyKind::TwoArm, "afx2n", true);
}

#[test]
fn one_arm_known_peers() {
    relay_call(TopologyKind::OneArm, "afx1k", false);
}

#[test]
fn one_arm_caller_behind_nat() {
    relay_call(TopologyKind::OneArm, "afx1n", true);
}
