//! End to end through the XDP relay: a caller and a callee in their own namespaces exchange UDP
//! through the relay namespace, over real veth pairs, in both topologies. The receivers check the
//! rewritten addresses and the payload, and the relay's counters must equal what was received.

use std::net::{SocketAddrV4, UdpSocket};
use std::time::Duration;

use sluice_dataplane::testbed::{Testbed, TopologyKind};
use sluice_dataplane::{
    bidirectional, AttachMode, AttachedMode, Counter, DataplaneConfig, Leg, Peer, StreamRule,
};

const PACKETS: usize = 300;
const CALLER_PORT: u16 = 4000;
const CALLEE_PORT: u16 = 5000;

fn privileged() -> bool {
    match sluice_dataplane::netns::can_create_netns() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => panic!("CI must run this test: {why}"),
        Err(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
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

fn relay_call(kind: TopologyKind, caller_behind_nat: bool, strict: bool) {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(kind, "e2e").expect("testbed");
    let config = DataplaneConfig {
        relay_ports: 30000..=30999,
        max_streams: 256,
    };
    let (mut dataplane, modes) = bed.start_relay(&config, AttachMode::Native).expect("relay");
    assert!(
        modes.iter().all(|m| *m == AttachedMode::Native),
        "veth supports native XDP"
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
        strict,
    );
    let forward = dataplane.install(&a_to_b).expect("install a->b");
    let backward = dataplane.install(&b_to_a).expect("install b->a");
    let before = dataplane.counters().expect("counters");

    let caller_socket = bind(bed.caller(), caller);
    let callee_socket = bind(bed.callee(), callee);
    if caller_behind_nat {
        // Until the caller speaks, the relay does not know where to send the callee's media.
        callee_socket.send_to(b"too early", relay_b).expect("send");
        assert!(
            caller_socket.recv_from(&mut [0u8; 64]).is_err(),
            "nothing reaches the caller yet"
        );
        assert_eq!(dataplane.latched_peer(forward).expect("rule"), None);
    }
    let explain = |e: String| panic!("{e}; relay counters: {:?}", dataplane.counters());
    let forward_bytes =
        exchange(&caller_socket, relay_a, &callee_socket, relay_b, 1).unwrap_or_else(explain);
    let backward_bytes =
        exchange(&callee_socket, relay_b, &caller_socket, relay_a, 2).unwrap_or_else(explain);

    let f = dataplane.stream_counters(forward).expect("counters");
    let b = dataplane.stream_counters(backward).expect("counters");
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
        assert_eq!(dataplane.latched_peer(forward).expect("rule"), Some(caller));
    }

    let delta = dataplane.counters().expect("counters").since(&before);
    let forwarded =
        delta.get(Counter::Tx) + delta.get(Counter::Redirect) + delta.get(Counter::PassNoNeigh);
    assert_eq!(
        forwarded,
        2 * PACKETS as u64,
        "every packet forwarded once: {delta:?}"
    );
    let in_kernel = match kind {
        TopologyKind::TwoArm => delta.get(Counter::Redirect),
        TopologyKind::OneArm => delta.get(Counter::Tx),
    };
    // The first packet each way may go through the stack while the neighbour is resolved.
    assert!(
        in_kernel >= 2 * PACKETS as u64 - 4,
        "forwarded in XDP: {delta:?}"
    );
    let expected_pending = u64::from(caller_behind_nat);
    assert_eq!(
        delta.get(Counter::DropDstPending),
        expected_pending,
        "{delta:?}"
    );
    assert_eq!(delta.get(Counter::Latched), expected_pending, "{delta:?}");

    if strict && caller_behind_nat {
        // Another host in the caller's network tries to inject media into the call.
        let intruder = bind(
            bed.caller(),
            SocketAddrV4::new(bed.caller_addr(), CALLER_PORT + 2),
        );
        let drops_before = dataplane.counters().expect("counters");
        intruder.send_to(b"injected", relay_a).expect("send");
        assert!(
            callee_socket.recv_from(&mut [0u8; 64]).is_err(),
            "strict source must drop it"
        );
        let drops = dataplane.counters().expect("counters").since(&drops_before);
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

    let final_counters = dataplane.remove(forward).expect("remove");
    assert_eq!(final_counters.packets, PACKETS as u64);
    caller_socket
        .send_to(b"after the call", relay_a)
        .expect("send");
    assert!(
        callee_socket.recv_from(&mut [0u8; 64]).is_err(),
        "a removed stream is not relayed"
    );
    drop(dataplane);
}

#[test]
fn two_arm_redirects_between_interfaces() {
    relay_call(TopologyKind::TwoArm, false, false);
}

#[test]
fn one_arm_transmits_on_the_same_interface() {
    relay_call(TopologyKind::OneArm, false, false);
}

#[test]
fn two_arm_latches_a_caller_behind_nat() {
    relay_call(TopologyKind::TwoArm, true, true);
}

#[test]
fn one_arm_latches_a_caller_behind_nat() {
    relay_call(TopologyKind::OneArm, true, false);
}

#[test]
fn fixed_rule_without_reverse_is_one_way() {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(TopologyKind::TwoArm, "oneway").expect("testbed");
    let config = DataplaneConfig {
        relay_ports: 30000..=30999,
        max_streams: 16,
    };
    let (mut dataplane, _) = bed.start_relay(&config, AttachMode::Auto).expect("relay");
    let callee = SocketAddrV4::new(bed.callee_addr(), CALLEE_PORT);
    let relay_a = SocketAddrV4::new(bed.relay_caller_addr(), 30100);
    let relay_b = SocketAddrV4::new(bed.relay_callee_addr(), 30102);
    let id = dataplane
        .install(&StreamRule::fixed(relay_a, relay_b, callee))
        .expect("install");
    let caller_socket = bind(
        bed.caller(),
        SocketAddrV4::new(bed.caller_addr(), CALLER_PORT),
    );
    let callee_socket = bind(bed.callee(), callee);
    let bytes = exchange(&caller_socket, relay_a, &callee_socket, relay_b, 3)
        .unwrap_or_else(|e| panic!("{e}; relay counters: {:?}", dataplane.counters()));
    let counters = dataplane.stream_counters(id).expect("counters");
    assert_eq!((counters.packets, counters.bytes), (PACKETS as u64, bytes));

    // The reverse direction has no rule: a relay port with no rule on a relay address is dropped.
    let before = dataplane.counters().expect("counters");
    callee_socket.send_to(b"no rule", relay_b).expect("send");
    assert!(caller_socket.recv_from(&mut [0u8; 64]).is_err());
    let delta = dataplane.counters().expect("counters").since(&before);
    assert_eq!(delta.get(Counter::DropUnknownPort), 1, "{delta:?}");
}
