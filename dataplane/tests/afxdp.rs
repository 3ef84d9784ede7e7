//! What the AF_XDP path shows beyond the `Forwarder` interface: one worker per queue, one socket
//! per relay interface, copy mode on veth. Its traffic, latching, strict source, counters and
//! removal are checked with the other two paths in `tests/tests/relay_e2e.rs`.

use sluice_dataplane::testbed::{Testbed, TopologyKind};
use sluice_dataplane::{
    AfXdpConfig, AfXdpRelay, AttachMode, BackendKind, DataplaneConfig, Forwarder, XskMode,
};

fn privileged() -> bool {
    sluice_dataplane::netns::privileged_test(module_path!())
}

fn sockets_and_workers(kind: TopologyKind, tag: &str) {
    if !privileged() {
        return;
    }
    let bed = Testbed::build(kind, tag).expect("testbed");
    let config = DataplaneConfig {
        relay_ports: 30000..=30999,
        max_streams: 256,
    };
    let (dataplane, _) = bed.start_relay(&config, AttachMode::Native).expect("relay");
    let relay = bed
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
}

#[test]
fn two_arm_has_a_socket_per_interface_on_one_worker() {
    sockets_and_workers(TopologyKind::TwoArm, "afx2");
}

#[test]
fn one_arm_has_one_socket() {
    sockets_and_workers(TopologyKind::OneArm, "afx1");
}
