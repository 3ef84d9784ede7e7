//! Fixture tests of the XDP relay through BPF_PROG_TEST_RUN, katran/cilium style: a table of
//! packets in, the verdict expected, the packet expected out and the exact counter deltas.
//!
//! Every test builds its own network namespace with two veth pairs, so that `bpf_fib_lookup`
//! has real interfaces, routes and neighbours to find:
//!
//! ```text
//!   a0 10.0.1.1/24 <-> a1      neighbour 10.0.1.2 = 02:00:00:00:01:02 (permanent)
//!   b0 10.0.2.1/24 <-> b1      neighbour 10.0.2.2 = 02:00:00:00:02:02 (permanent)
//!   198.51.100.0/24 via 10.0.1.2 dev a0 (a NATed peer), no default route
//! ```
//!
//! The relay is attached natively to a0 and b0 (which registers their XDP receive queues, as a
//! test run with an ingress interface needs) and every frame is run as if it arrived on a0.
//! Frames are built here from scratch, checksums included, and output frames are compared with
//! frames built from scratch the same way, so the program's incremental checksum updates are
//! checked against a full one's-complement sum.

use std::net::{Ipv4Addr, SocketAddrV4};

use sluice_dataplane::netns::{veth_pair, NetNs};
use sluice_dataplane::test_run::action;
use sluice_dataplane::{
    bidirectional, monotonic_now, AttachMode, Counter, CounterSnapshot, Dataplane, DataplaneConfig,
    Leg, Peer, StreamCounters, StreamId, StreamRule, TestRunOutput,
};

// ---------------------------------------------------------------------------------------------
// Topology
// ---------------------------------------------------------------------------------------------

const RELAY_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const RELAY_B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
const PEER_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const PEER_B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const PEER_A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
const PEER_B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
const NATED_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NOT_LOCAL: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IP_MF: u16 = 0x2000;
const IP_DF: u16 = 0x4000;

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

fn netns_available(test: &str) -> bool {
    sluice_dataplane::netns::privileged_test(test)
}

/// The namespace and what the tests need to know about its interfaces.
struct Topology {
    ns: NetNs,
    a0_mac: [u8; 6],
    b0_mac: [u8; 6],
}

fn build_topology(tag: &str) -> Topology {
    let ns = NetNs::create(tag).expect("create namespace");
    // No IPv6 link-local chatter (DAD, router and MLD solicitations) from a1 and b1 into the
    // attached relay: every counter delta below must be the test run's alone.
    for scope in ["all", "default"] {
        ns.sysctl(&format!("net.ipv6.conf.{scope}.disable_ipv6"), "1")
            .expect("IPv6 off");
    }
    for (here, there) in [("a0", "a1"), ("b0", "b1")] {
        veth_pair(&ns, here, &ns, there).expect("veth pair");
    }
    ns.addr_add("a0", "10.0.1.1/24").expect("address on a0");
    ns.addr_add("b0", "10.0.2.1/24").expect("address on b0");
    for iface in ["a0", "a1", "b0", "b1"] {
        ns.link_up(iface, 1500).expect("link up");
    }
    for (addr, mac, dev) in [
        ("10.0.1.2", "02:00:00:00:01:02", "a0"),
        ("10.0.2.2", "02:00:00:00:02:02", "b0"),
    ] {
        ns.ip(&[
            "neigh",
            "add",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .expect("permanent neighbour");
    }
    ns.ip(&[
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "10.0.1.2",
        "dev",
        "a0",
    ])
    .expect("route to the NATed peer");
    // bpf_fib_lookup() answers only for interfaces with IPv4 forwarding on, even for the
    // relay's own output (BPF_FIB_LOOKUP_OUTPUT), as on a real relay host.
    ns.sysctl("net.ipv4.ip_forward", "1")
        .expect("IPv4 forwarding");
    let a0_mac = ns.mac("a0").expect("a0 MAC");
    let b0_mac = ns.mac("b0").expect("b0 MAC");
    Topology { ns, a0_mac, b0_mac }
}

/// The loaded relay inside the namespace, with helpers to run fixtures through it.
struct Relay {
    dp: Dataplane,
    a0: u32,
    b0: u32,
    /// The interface test runs arrive on; a0 unless a test says otherwise.
    ingress: Via,
    a0_mac: [u8; 6],
    b0_mac: [u8; 6],
}

/// Builds the topology, loads and attaches the relay, and runs `test` in the namespace.
fn with_relay(tag: &str, test: impl FnOnce(&mut Relay) + Send) {
    let topo = build_topology(tag);
    let (a0_mac, b0_mac) = (topo.a0_mac, topo.b0_mac);
    let result = topo.ns.run(move || {
        let mut dp = Dataplane::load(&DataplaneConfig {
            relay_ports: 30000..=30999,
            max_streams: 1024,
        })
        .expect("load the relay");
        dp.attach("a0", AttachMode::Native).expect("attach to a0");
        dp.attach("b0", AttachMode::Native).expect("attach to b0");
        dp.add_local_addr(RELAY_A).expect("local address A");
        dp.add_local_addr(RELAY_B).expect("local address B");
        let a0 = sluice_dataplane::ifindex("a0").expect("a0 ifindex");
        let b0 = sluice_dataplane::ifindex("b0").expect("b0 ifindex");
        let mut relay = Relay {
            dp,
            a0,
            b0,
            ingress: Via::A,
            a0_mac,
            b0_mac,
        };
        test(&mut relay);
    });
    if let Err(e) = result {
        panic!("{tag}: {e}");
    }
}

/// Which interface a forwarded packet leaves from, for the expected MACs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    A,
    B,
}

impl Relay {
    fn counters(&self) -> CounterSnapshot {
        self.dp.counters().expect("read counters")
    }

    fn install(&mut self, rule: &StreamRule) -> StreamId {
        self.dp.install(rule).expect("install rule")
    }

    fn stream(&self, id: StreamId) -> StreamCounters {
        self.dp.stream_counters(id).expect("stream counters")
    }

    /// Runs one frame as if it arrived on the ingress interface (a0 by default) and checks the verdict and every counter's delta
    /// (those not listed must not move).
    fn expect(
        &self,
        case: &str,
        frame: &[u8],
        want_action: u32,
        want: &[(Counter, u64)],
    ) -> TestRunOutput {
        let before = self.counters();
        let ingress = match self.ingress {
            Via::A => self.a0,
            Via::B => self.b0,
        };
        let out = self.dp.test_run(frame, ingress).expect("BPF_PROG_TEST_RUN");
        let delta = self.counters().since(&before);
        assert_eq!(
            out.action,
            want_action,
            "{case}: verdict {} instead of {}; counter deltas {:?}",
            action_name(out.action),
            action_name(want_action),
            nonzero(&delta)
        );
        for counter in Counter::ALL {
            let expected = want
                .iter()
                .find(|(c, _)| *c == counter)
                .map_or(0, |(_, n)| *n);
            assert_eq!(
                delta.get(counter),
                expected,
                "{case}: counter {} moved by {} instead of {expected}; all deltas {:?}",
                counter.name(),
                delta.get(counter),
                nonzero(&delta)
            );
        }
        out
    }

    /// A frame that must be forwarded: checks the verdict, the single verdict counter, and the
    /// rewritten frame against one built from scratch.
    fn expect_forward(
        &self,
        case: &str,
        input: &Pkt,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        via: Via,
        extra: &[(Counter, u64)],
    ) -> Vec<u8> {
        let (dmac, smac) = match via {
            Via::A => (PEER_A_MAC, self.a0_mac),
            Via::B => (PEER_B_MAC, self.b0_mac),
        };
        let (act, counter) = if via == self.ingress {
            (action::TX, Counter::Tx)
        } else {
            (action::REDIRECT, Counter::Redirect)
        };
        let mut want = vec![(counter, 1)];
        want.extend_from_slice(extra);
        let out = self.expect(case, &input.build(), act, &want);
        let mut expected = input.clone();
        expected.eth_dst = dmac;
        expected.eth_src = smac;
        expected.ttl = 64;
        expected.src = src;
        expected.dst = dst;
        check_frame(case, &out.frame, &expected);
        out.frame
    }
}

fn action_name(a: u32) -> &'static str {
    match a {
        action::ABORTED => "XDP_ABORTED",
        action::DROP => "XDP_DROP",
        action::PASS => "XDP_PASS",
        action::TX => "XDP_TX",
        action::REDIRECT => "XDP_REDIRECT",
        _ => "unknown",
    }
}

fn nonzero(s: &CounterSnapshot) -> Vec<(&'static str, u64)> {
    s.iter()
        .filter(|(_, v)| *v != 0)
        .map(|(c, v)| (c.name(), v))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// An Ethernet [+ 802.1Q] + IPv4 [+ options] + UDP (or other L4 bytes) frame.
#[derive(Clone, Debug)]
struct Pkt {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    /// (TPID, TCI) of one VLAN tag.
    vlan: Option<(u16, u16)>,
    tos: u8,
    id: u16,
    frag: u16,
    ttl: u8,
    proto: u8,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    /// IPv4 options, a multiple of 4 bytes.
    options: Vec<u8>,
    /// UDP payload; for another protocol, the whole L4 part.
    payload: Vec<u8>,
    /// Compute the UDP checksum (else send 0, "none").
    udp_csum: bool,
    /// Bytes after the IP datagram (Ethernet padding).
    trailer: Vec<u8>,
}

impl Pkt {
    /// A UDP datagram from peer A's segment to the relay's a0.
    fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Self {
        Pkt {
            eth_dst: [0x02, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa],
            eth_src: PEER_A_MAC,
            vlan: None,
            tos: 0xb8, // EF, as RTP usually is
            id: 0x1234,
            frag: IP_DF,
            ttl: 17,
            proto: IPPROTO_UDP,
            src,
            dst,
            options: Vec::new(),
            payload: payload.to_vec(),
            udp_csum: true,
            trailer: Vec::new(),
        }
    }

    fn l3(&self) -> usize {
        if self.vlan.is_some() {
            18
        } else {
            14
        }
    }

    fn ihl_bytes(&self) -> usize {
        assert_eq!(self.options.len() % 4, 0, "options are whole words");
        20 + self.options.len()
    }

    fn l4_len(&self) -> usize {
        if self.proto == IPPROTO_UDP {
            8 + self.payload.len()
        } else {
            self.payload.len()
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(64 + self.payload.len());
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        if let Some((tpid, tci)) = self.vlan {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        let l3 = f.len();
        let ihl = self.ihl_bytes();
        let tot_len = u16::try_from(ihl + self.l4_len()).expect("datagram fits");
        f.push(0x40 | (ihl / 4) as u8);
        f.push(self.tos);
        f.extend_from_slice(&tot_len.to_be_bytes());
        f.extend_from_slice(&self.id.to_be_bytes());
        f.extend_from_slice(&self.frag.to_be_bytes());
        f.push(self.ttl);
        f.push(self.proto);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.src.ip().octets());
        f.extend_from_slice(&self.dst.ip().octets());
        f.extend_from_slice(&self.options);
        let check = ip_checksum(&f[l3..l3 + ihl]);
        f[l3 + 10..l3 + 12].copy_from_slice(&check.to_be_bytes());
        let l4 = f.len();
        if self.proto == IPPROTO_UDP {
            let udp_len = u16::try_from(self.l4_len()).expect("UDP length");
            f.extend_from_slice(&self.src.port().to_be_bytes());
            f.extend_from_slice(&self.dst.port().to_be_bytes());
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&self.payload);
            if self.udp_csum {
                let check = udp_checksum(*self.src.ip(), *self.dst.ip(), &f[l4..]);
                f[l4 + 6..l4 + 8].copy_from_slice(&check.to_be_bytes());
            }
        } else {
            f.extend_from_slice(&self.payload);
        }
        f.extend_from_slice(&self.trailer);
        f
    }
}

/// The one's-complement sum of big-endian 16-bit words (an odd byte is padded with zero),
/// not yet folded.
fn sum16(data: &[u8]) -> u64 {
    data.chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The IPv4 header checksum, computed over a header whose checksum field is zero.
fn ip_checksum(header: &[u8]) -> u16 {
    !fold(sum16(header))
}

/// The folded sum of the UDP pseudo-header and datagram (its checksum field as it is).
fn udp_sum(src: Ipv4Addr, dst: Ipv4Addr, datagram: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    fold(sum16(&pseudo) + sum16(datagram))
}

/// The UDP checksum of a datagram whose checksum field is zero; a computed 0 is sent as 0xffff.
fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, datagram: &[u8]) -> u16 {
    match !udp_sum(src, dst, datagram) {
        0 => 0xffff,
        c => c,
    }
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn ip_at(f: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3])
}

/// Checks an output frame field by field against `expected` (built from scratch), then as a
/// whole, and verifies its checksums independently of `expected`.
fn check_frame(case: &str, out: &[u8], expected: &Pkt) {
    let want = expected.build();
    assert_eq!(out.len(), want.len(), "{case}: frame length");
    assert_eq!(out[0..6], expected.eth_dst, "{case}: Ethernet destination");
    assert_eq!(out[6..12], expected.eth_src, "{case}: Ethernet source");
    let l3 = expected.l3();
    assert_eq!(out[12..l3], want[12..l3], "{case}: VLAN tag / ethertype");
    let ihl = expected.ihl_bytes();
    assert_eq!(usize::from(out[l3] & 0x0f) * 4, ihl, "{case}: IHL");
    assert_eq!(out[l3 + 8], expected.ttl, "{case}: TTL");
    assert_eq!(ip_at(out, l3 + 12), *expected.src.ip(), "{case}: IP source");
    assert_eq!(
        ip_at(out, l3 + 16),
        *expected.dst.ip(),
        "{case}: IP destination"
    );
    assert_eq!(
        out[l3 + 20..l3 + ihl],
        expected.options[..],
        "{case}: IP options"
    );
    assert_eq!(
        fold(sum16(&out[l3..l3 + ihl])),
        0xffff,
        "{case}: IP header checksum does not verify"
    );
    assert_eq!(
        be16(out, l3 + 10),
        be16(&want, l3 + 10),
        "{case}: IP header checksum differs from one computed from scratch"
    );
    assert_eq!(out[l3..l3 + ihl], want[l3..l3 + ihl], "{case}: IP header");
    let l4 = l3 + ihl;
    assert_eq!(
        be16(out, l4),
        expected.src.port(),
        "{case}: UDP source port"
    );
    assert_eq!(
        be16(out, l4 + 2),
        expected.dst.port(),
        "{case}: UDP destination port"
    );
    assert_eq!(
        be16(out, l4 + 4),
        expected.l4_len() as u16,
        "{case}: UDP length"
    );
    let udp_end = l4 + expected.l4_len();
    if expected.udp_csum {
        assert_ne!(be16(out, l4 + 6), 0, "{case}: UDP checksum became zero");
        assert_eq!(
            udp_sum(*expected.src.ip(), *expected.dst.ip(), &out[l4..udp_end]),
            0xffff,
            "{case}: UDP checksum does not verify"
        );
    }
    assert_eq!(
        be16(out, l4 + 6),
        be16(&want, l4 + 6),
        "{case}: UDP checksum differs from one computed from scratch"
    );
    assert_eq!(
        out[l4 + 8..udp_end],
        expected.payload[..],
        "{case}: UDP payload"
    );
    assert_eq!(out, &want[..], "{case}: whole frame");
}

/// Chooses one 16-bit word of `pkt`'s payload (at even payload offset `at`) so that the UDP sum
/// of `pkt` as it will be *sent* folds to 0xffff, i.e. its checksum computes to 0 and goes out
/// as 0xffff.
fn force_all_ones(pkt: &mut Pkt, at: usize) {
    pkt.payload[at] = 0;
    pkt.payload[at + 1] = 0;
    let mut probe = pkt.clone();
    probe.udp_csum = false;
    let frame = probe.build();
    let l4 = probe.l3() + probe.ihl_bytes();
    let s = udp_sum(
        *probe.src.ip(),
        *probe.dst.ip(),
        &frame[l4..l4 + probe.l4_len()],
    );
    pkt.payload[at..at + 2].copy_from_slice(&(!s).to_be_bytes());
}

/// xorshift64*: small, seeded, good enough for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn rtp_payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn rewrite_same_interface_is_tx() {
    if !netns_available("rewrite_same_interface_is_tx") {
        return;
    }
    with_relay("fx-tx", |r| {
        let id = r.install(&StreamRule::fixed(
            sa(RELAY_A, 30000),
            sa(RELAY_A, 30002),
            sa(PEER_A, 5000),
        ));
        let mut input = Pkt::udp(sa(PEER_A, 4000), sa(RELAY_A, 30000), &rtp_payload(172, 1));
        input.eth_dst = r.a0_mac;
        let before = monotonic_now();
        r.expect_forward(
            "same interface",
            &input,
            sa(RELAY_A, 30002),
            sa(PEER_A, 5000),
            Via::A,
            &[],
        );
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (1, 172), "stream counters");
        let seen = s.last_seen.expect("last_seen set");
        assert!(
            seen >= before && seen <= monotonic_now(),
            "last_seen {seen:?}"
        );

        // A second packet of another size adds up.
        let input = Pkt::udp(sa(PEER_A, 4000), sa(RELAY_A, 30000), &rtp_payload(20, 2));
        r.expect_forward(
            "same interface, second packet",
            &input,
            sa(RELAY_A, 30002),
            sa(PEER_A, 5000),
            Via::A,
            &[],
        );
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (2, 192), "stream counters");
    });
}

#[test]
fn rewrite_other_interface_is_redirect() {
    if !netns_available("rewrite_other_interface_is_redirect") {
        return;
    }
    with_relay("fx-redir", |r| {
        let id = r.install(&StreamRule::fixed(
            sa(RELAY_A, 30004),
            sa(RELAY_B, 30006),
            sa(PEER_B, 6000),
        ));
        let input = Pkt::udp(sa(PEER_A, 4000), sa(RELAY_A, 30004), &rtp_payload(160, 3));
        r.expect_forward(
            "other interface",
            &input,
            sa(RELAY_B, 30006),
            sa(PEER_B, 6000),
            Via::B,
            &[],
        );
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (1, 160), "stream counters");
    });
}

#[test]
fn checksums_after_rewrite() {
    if !netns_available("checksums_after_rewrite") {
        return;
    }
    with_relay("fx-csum", |r| {
        let mut rng = Rng(0x5eed_cafe_f00d_0001);
        for case in 0..50u16 {
            let local = sa(RELAY_A, 30100 + case);
            let via = if rng.below(2) == 0 { Via::A } else { Via::B };
            let (src, dst) = match via {
                Via::A => (
                    sa(RELAY_A, 30000 + rng.below(1000) as u16),
                    sa(PEER_A, 1 + rng.below(65535) as u16),
                ),
                Via::B => (
                    sa(RELAY_B, 30000 + rng.below(1000) as u16),
                    sa(PEER_B, 1 + rng.below(65535) as u16),
                ),
            };
            let id = r.install(&StreamRule::fixed(local, src, dst));
            let from = sa(
                Ipv4Addr::from(rng.next() as u32 | 0x0100_0000),
                1 + rng.below(65535) as u16,
            );
            let len = rng.below(301) as usize;
            let mut input = Pkt::udp(from, local, &rng.bytes(len));
            input.ttl = 1 + rng.below(255) as u8;
            input.tos = rng.next() as u8;
            input.id = rng.next() as u16;
            input.frag = if rng.below(2) == 0 { IP_DF } else { 0 };
            input.udp_csum = rng.below(5) != 0;
            let what = format!("checksum case {case} ({input:?})");
            r.expect_forward(&what, &input, src, dst, via, &[]);
            let s = r.stream(id);
            assert_eq!(
                (s.packets, s.bytes),
                (1, len as u64),
                "{what}: stream counters"
            );
        }

        // UDP checksum 0 ("none") stays 0, explicitly.
        let local = sa(RELAY_A, 30200);
        let (src, dst) = (sa(RELAY_A, 30202), sa(PEER_A, 5002));
        r.install(&StreamRule::fixed(local, src, dst));
        let mut input = Pkt::udp(sa(PEER_A, 4002), local, &rtp_payload(64, 9));
        input.udp_csum = false;
        let out = r.expect_forward("zero checksum", &input, src, dst, Via::A, &[]);
        assert_eq!(be16(&out, 14 + 20 + 6), 0, "zero checksum stays zero");

        // The rewritten datagram's checksum computes to 0: it must go out as 0xffff, not 0.
        let mut rewritten = Pkt::udp(src, dst, &rtp_payload(64, 10));
        force_all_ones(&mut rewritten, 10);
        let frame = rewritten.build();
        assert_eq!(
            be16(&frame, 14 + 20 + 6),
            0xffff,
            "constructed all-ones case"
        );
        let mut input = Pkt::udp(sa(PEER_A, 4002), local, &rewritten.payload);
        input.udp_csum = true;
        let out = r.expect_forward(
            "computed zero goes out as 0xffff",
            &input,
            src,
            dst,
            Via::A,
            &[],
        );
        assert_eq!(be16(&out, 14 + 20 + 6), 0xffff, "all-ones checksum");

        // The input's checksum is the all-ones form of zero: the update still verifies.
        let mut input = Pkt::udp(sa(PEER_A, 4002), local, &rtp_payload(64, 11));
        force_all_ones(&mut input, 20);
        assert_eq!(
            be16(&input.build(), 14 + 20 + 6),
            0xffff,
            "constructed input"
        );
        r.expect_forward("input checksum 0xffff", &input, src, dst, Via::A, &[]);
    });
}

#[test]
fn vlan_tagged_frames_keep_their_tag() {
    if !netns_available("vlan_tagged_frames_keep_their_tag") {
        return;
    }
    with_relay("fx-vlan", |r| {
        let local = sa(RELAY_A, 30010);
        let (src, dst) = (sa(RELAY_B, 30012), sa(PEER_B, 6000));
        let id = r.install(&StreamRule::fixed(local, src, dst));
        for (tpid, tci, name) in [
            (ETH_P_8021Q, 0x0064, "802.1Q"),
            (ETH_P_8021AD, 0xe00a, "802.1ad"),
        ] {
            let mut input = Pkt::udp(sa(PEER_A, 4000), local, &rtp_payload(160, 4));
            input.vlan = Some((tpid, tci));
            let out = r.expect_forward(name, &input, src, dst, Via::B, &[]);
            assert_eq!(be16(&out, 12), tpid, "{name}: TPID kept");
            assert_eq!(be16(&out, 14), tci, "{name}: TCI kept");
            assert_eq!(be16(&out, 16), ETH_P_IP, "{name}: inner ethertype kept");
        }
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (2, 320), "stream counters");
    });
}

#[test]
fn ip_options_are_preserved() {
    if !netns_available("ip_options_are_preserved") {
        return;
    }
    with_relay("fx-opts", |r| {
        let local = sa(RELAY_A, 30020);
        let (src, dst) = (sa(RELAY_A, 30022), sa(PEER_A, 5020));
        let id = r.install(&StreamRule::fixed(local, src, dst));
        // Router alert (IHL 6).
        let router_alert = vec![0x94, 0x04, 0x00, 0x00];
        // Record route filling the largest header (IHL 15), with one hop recorded.
        let mut record_route = vec![0x07, 39, 8, 10, 0, 1, 2];
        record_route.resize(40, 0);
        // Timestamp option and NOPs (IHL 8).
        let timestamp = vec![0x01, 0x01, 0x44, 10, 5, 0x00, 0x12, 0x34, 0x56, 0x78, 0, 0];
        for (name, options) in [
            ("router alert", router_alert),
            ("record route", record_route),
            ("timestamp", timestamp),
        ] {
            let mut input = Pkt::udp(sa(PEER_A, 4000), local, &rtp_payload(100, 5));
            input.options = options;
            r.expect_forward(name, &input, src, dst, Via::A, &[]);
            let mut input = input.clone();
            input.udp_csum = false;
            r.expect_forward(
                &format!("{name}, no UDP checksum"),
                &input,
                src,
                dst,
                Via::A,
                &[],
            );
        }
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (6, 600), "stream counters");
    });
}

#[test]
fn malformed_frames_are_dropped() {
    if !netns_available("malformed_frames_are_dropped") {
        return;
    }
    with_relay("fx-malf", |r| {
        let local = sa(RELAY_A, 30030);
        let id = r.install(&StreamRule::fixed(
            local,
            sa(RELAY_A, 30032),
            sa(PEER_A, 5030),
        ));
        let good = Pkt::udp(sa(PEER_A, 4000), local, &rtp_payload(40, 6));
        let frame = good.build();
        let l3 = 14;
        let l4 = l3 + 20;
        let set16 =
            |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_be_bytes());

        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        cases.push(("IPv4 ethertype, no IP header", frame[..14].to_vec()));
        cases.push(("truncated IPv4 header", frame[..l3 + 10].to_vec()));
        cases.push(("IPv4 header one byte short", frame[..l3 + 19].to_vec()));
        let mut f = frame.clone();
        f[l3] = 0x44;
        cases.push(("IHL 4", f));
        let mut f = frame.clone();
        f[l3] = 0x40;
        cases.push(("IHL 0", f));
        let mut short = good.clone();
        short.payload.truncate(4);
        let mut f = short.build();
        f[l3] = 0x4f; // 60-byte header in a 46-byte frame
        cases.push(("IHL past the end", f));
        let mut f = frame.clone();
        set16(&mut f, l3 + 2, (frame.len() - l3 + 1) as u16);
        cases.push(("total length past the end", f));
        let mut f = frame.clone();
        set16(&mut f, l3 + 2, 19);
        cases.push(("total length below IHL*4", f));
        let mut f = frame.clone();
        set16(&mut f, l3 + 2, 0);
        cases.push(("total length 0", f));
        let mut f = frame[..l4 + 4].to_vec();
        set16(&mut f, l3 + 2, 24);
        cases.push(("truncated UDP header", f));
        let mut f = frame.clone();
        set16(&mut f, l4 + 4, 7);
        cases.push(("UDP length 7", f));
        let mut f = frame.clone();
        set16(&mut f, l4 + 4, 0);
        cases.push(("UDP length 0", f));
        let mut f = frame.clone();
        set16(&mut f, l4 + 4, (frame.len() - l4 + 1) as u16);
        cases.push(("UDP length past the IP payload", f));
        // The UDP length fits the frame but not the IP datagram (Ethernet padding follows).
        let mut padded = good.clone();
        padded.trailer = vec![0; 16];
        let mut f = padded.build();
        set16(&mut f, l4 + 4, (8 + 40 + 8) as u16);
        cases.push(("UDP length into the Ethernet padding", f));
        let mut f = frame.clone();
        f[l3] = 0x65;
        cases.push(("IP version 6 in an IPv4 ethertype", f));
        let mut tagged = good.clone();
        tagged.vlan = Some((ETH_P_8021Q, 7));
        cases.push(("truncated VLAN tag", tagged.build()[..16].to_vec()));
        cases.push(("VLAN tag, no IP header", tagged.build()[..18].to_vec()));

        for (name, f) in &cases {
            let out = r.expect(name, f, action::DROP, &[(Counter::DropMalformed, 1)]);
            assert_eq!(&out.frame, f, "{name}: a dropped frame is not rewritten");
        }
        assert_eq!(r.stream(id), StreamCounters::default(), "no stream counted");

        // The well-formed original still forwards; padding after the datagram is fine.
        r.expect_forward(
            "well-formed",
            &good,
            sa(RELAY_A, 30032),
            sa(PEER_A, 5030),
            Via::A,
            &[],
        );
        let mut padded = Pkt::udp(sa(PEER_A, 4000), local, &[0x80, 0x00]);
        padded.trailer = vec![0; 12];
        r.expect_forward(
            "short datagram with Ethernet padding",
            &padded,
            sa(RELAY_A, 30032),
            sa(PEER_A, 5030),
            Via::A,
            &[],
        );
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (2, 42), "stream counters");
    });
}

#[test]
fn fragments() {
    if !netns_available("fragments") {
        return;
    }
    with_relay("fx-frag", |r| {
        let local = sa(RELAY_A, 30040);
        let id = r.install(&StreamRule::fixed(
            local,
            sa(RELAY_A, 30042),
            sa(PEER_A, 5040),
        ));
        let pkt = |dst: SocketAddrV4, frag: u16| {
            let mut p = Pkt::udp(sa(PEER_A, 4000), dst, &rtp_payload(64, 7));
            p.frag = frag;
            p.build()
        };
        let drop = (action::DROP, Counter::DropFragment);
        let pass = (action::PASS, Counter::PassNotRelay);
        let cases = [
            ("first fragment to a relay port", pkt(local, IP_MF), drop),
            (
                "first fragment to an unknown relay port",
                pkt(sa(RELAY_B, 30999), IP_MF),
                drop,
            ),
            (
                "first fragment with DF too",
                pkt(local, IP_MF | IP_DF),
                drop,
            ),
            ("later fragment", pkt(local, IP_MF | 185), pass),
            ("last fragment", pkt(local, 185), pass),
            ("first fragment to SIP", pkt(sa(RELAY_A, 5060), IP_MF), pass),
            (
                "first fragment to a relay port elsewhere",
                pkt(sa(NOT_LOCAL, 30040), IP_MF),
                pass,
            ),
        ];
        for (name, frame, (act, counter)) in &cases {
            let out = r.expect(name, frame, *act, &[(*counter, 1)]);
            assert_eq!(&out.frame, frame, "{name}: frame untouched");
        }
        assert_eq!(r.stream(id), StreamCounters::default(), "no stream counted");
    });
}

#[test]
fn not_relay_traffic_passes_untouched() {
    if !netns_available("not_relay_traffic_passes_untouched") {
        return;
    }
    with_relay("fx-pass", |r| {
        let local = sa(RELAY_A, 30050);
        let id = r.install(&StreamRule::fixed(
            local,
            sa(RELAY_A, 30052),
            sa(PEER_A, 5050),
        ));
        let mut tcp = Pkt::udp(sa(PEER_A, 4000), local, &rng_bytes(1, 40));
        tcp.proto = IPPROTO_TCP;
        tcp.payload[0..4].copy_from_slice(&[0x0f, 0xa0, 0x75, 0x62]); // ports 4000 -> 30050
        let mut icmp = Pkt::udp(
            sa(PEER_A, 0),
            sa(RELAY_A, 0),
            &[8, 0, 0xf7, 0xff, 0, 0, 0, 0],
        );
        icmp.proto = IPPROTO_ICMP;
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&PEER_A_MAC);
        arp.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&PEER_A_MAC);
        arp.extend_from_slice(&PEER_A.octets());
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&RELAY_A.octets());
        let mut ipv6 = Pkt::udp(sa(PEER_A, 4000), local, &[0; 48]).build();
        ipv6[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        ipv6[14] = 0x60;
        let mut vlan_arp = arp.clone();
        vlan_arp.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        let sip = Pkt::udp(
            sa(PEER_A, 5060),
            sa(RELAY_A, 5060),
            b"OPTIONS sip:relay SIP/2.0\r\n\r\n",
        );
        let below = Pkt::udp(sa(PEER_A, 4000), sa(RELAY_A, 29999), &[0; 12]);
        let above = Pkt::udp(sa(PEER_A, 4000), sa(RELAY_A, 31000), &[0; 12]);
        let cases = [
            ("TCP to a relay port", tcp.build()),
            ("ICMP echo", icmp.build()),
            ("ARP", arp),
            ("ARP in a VLAN", vlan_arp),
            ("IPv6", ipv6),
            ("UDP to SIP 5060", sip.build()),
            ("UDP below the relay range", below.build()),
            ("UDP above the relay range", above.build()),
        ];
        for (name, frame) in &cases {
            let out = r.expect(name, frame, action::PASS, &[(Counter::PassNotRelay, 1)]);
            assert_eq!(&out.frame, frame, "{name}: frame untouched");
        }
        assert_eq!(r.stream(id), StreamCounters::default(), "no stream counted");
    });
}

fn rng_bytes(seed: u64, n: usize) -> Vec<u8> {
    Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).bytes(n)
}

#[test]
fn unknown_ports() {
    if !netns_available("unknown_ports") {
        return;
    }
    with_relay("fx-unknown", |r| {
        let cases = [
            (
                "no rule on relay address A",
                sa(RELAY_A, 30500),
                action::DROP,
                Counter::DropUnknownPort,
            ),
            (
                "no rule on relay address B",
                sa(RELAY_B, 30999),
                action::DROP,
                Counter::DropUnknownPort,
            ),
            (
                "first relay port, no rule",
                sa(RELAY_A, 30000),
                action::DROP,
                Counter::DropUnknownPort,
            ),
            (
                "not a relay address",
                sa(NOT_LOCAL, 30500),
                action::PASS,
                Counter::PassNotRelay,
            ),
        ];
        for (name, dst, act, counter) in cases {
            let frame = Pkt::udp(sa(PEER_A, 4000), dst, &rtp_payload(32, 8)).build();
            let out = r.expect(name, &frame, act, &[(counter, 1)]);
            assert_eq!(out.frame, frame, "{name}: frame untouched");
        }
    });
}

#[test]
fn latching() {
    if !netns_available("latching") {
        return;
    }
    with_relay("fx-latch", |r| {
        let leg_a = Leg {
            relay: sa(RELAY_A, 30010),
            peer: Peer::Latch(None),
        };
        let leg_b = Leg {
            relay: sa(RELAY_B, 30012),
            peer: Peer::Known(sa(PEER_B, 6000)),
        };
        let [a_to_b_rule, b_to_a_rule] = bidirectional(leg_a, leg_b, false);
        let a_to_b = r.install(&a_to_b_rule);
        let b_to_a = r.install(&b_to_a_rule);
        assert_eq!(r.dp.latched_peer(a_to_b).expect("latched_peer"), None);

        let from_b = Pkt::udp(sa(PEER_B, 6000), sa(RELAY_B, 30012), &rtp_payload(160, 20));
        let frame = from_b.build();
        let out = r.expect(
            "B before A has spoken",
            &frame,
            action::DROP,
            &[(Counter::DropDstPending, 1)],
        );
        assert_eq!(out.frame, frame, "pending drop leaves the frame alone");
        assert_eq!(r.stream(b_to_a), StreamCounters::default());

        let nated = sa(NATED_A, 40000);
        let from_a = Pkt::udp(nated, sa(RELAY_A, 30010), &rtp_payload(160, 21));
        r.expect_forward(
            "A's first packet latches",
            &from_a,
            sa(RELAY_B, 30012),
            sa(PEER_B, 6000),
            Via::B,
            &[(Counter::Latched, 1)],
        );
        assert_eq!(
            r.dp.latched_peer(a_to_b).expect("latched_peer"),
            Some(nated)
        );
        let taught = r.dp.rule(b_to_a).expect("rule");
        assert_eq!(taught.new_destination(), nated, "reverse rule taught");
        assert_eq!(
            taught.flags & sluice_ebpf::abi::RULE_DST_PENDING,
            0,
            "pending cleared"
        );

        r.expect_forward(
            "B after the latch",
            &from_b,
            sa(RELAY_A, 30010),
            nated,
            Via::A,
            &[],
        );

        // Not strict: another source is relayed, and does not move the latch.
        let other = Pkt::udp(sa(NATED_A, 40002), sa(RELAY_A, 30010), &rtp_payload(80, 22));
        r.expect_forward(
            "A from another source, not strict",
            &other,
            sa(RELAY_B, 30012),
            sa(PEER_B, 6000),
            Via::B,
            &[],
        );
        assert_eq!(
            r.dp.latched_peer(a_to_b).expect("latched_peer"),
            Some(nated)
        );
        assert_eq!(r.dp.rule(b_to_a).expect("rule").new_destination(), nated);
        r.expect_forward(
            "B still goes to the first source",
            &from_b,
            sa(RELAY_A, 30010),
            nated,
            Via::A,
            &[],
        );

        // As B's packets really arrive: on b0, redirected out of a0.
        r.ingress = Via::B;
        r.expect_forward(
            "B arriving on b0",
            &from_b,
            sa(RELAY_A, 30010),
            nated,
            Via::A,
            &[],
        );
        r.ingress = Via::A;

        let a = r.stream(a_to_b);
        let b = r.stream(b_to_a);
        assert_eq!((a.packets, a.bytes), (2, 240), "A->B stream");
        assert_eq!((b.packets, b.bytes), (3, 480), "B->A stream");
    });
}

#[test]
fn strict_source() {
    if !netns_available("strict_source") {
        return;
    }
    with_relay("fx-strict", |r| {
        let leg_a = Leg {
            relay: sa(RELAY_A, 30010),
            peer: Peer::Latch(None),
        };
        let leg_b = Leg {
            relay: sa(RELAY_B, 30012),
            peer: Peer::Known(sa(PEER_B, 6000)),
        };
        let [a_to_b_rule, b_to_a_rule] = bidirectional(leg_a, leg_b, true);
        let a_to_b = r.install(&a_to_b_rule);
        let b_to_a = r.install(&b_to_a_rule);

        let nated = sa(NATED_A, 40000);
        let from_a = Pkt::udp(nated, sa(RELAY_A, 30010), &rtp_payload(160, 30));
        r.expect_forward(
            "first packet latches",
            &from_a,
            sa(RELAY_B, 30012),
            sa(PEER_B, 6000),
            Via::B,
            &[(Counter::Latched, 1)],
        );
        let after_latch = r.stream(a_to_b);
        for (name, from) in [
            ("another port", sa(NATED_A, 40002)),
            ("another address", sa(Ipv4Addr::new(198, 51, 100, 8), 40000)),
        ] {
            let frame = Pkt::udp(from, sa(RELAY_A, 30010), &rtp_payload(160, 31)).build();
            let out = r.expect(
                name,
                &frame,
                action::DROP,
                &[(Counter::DropSourceMismatch, 1)],
            );
            assert_eq!(out.frame, frame, "{name}: frame untouched");
        }
        assert_eq!(r.stream(a_to_b), after_latch, "stream unchanged by drops");
        assert_eq!(
            r.dp.latched_peer(a_to_b).expect("latched_peer"),
            Some(nated)
        );
        r.expect_forward(
            "the latched peer again",
            &from_a,
            sa(RELAY_B, 30012),
            sa(PEER_B, 6000),
            Via::B,
            &[],
        );

        // B's leg is strict with its signalled address.
        let from_b = Pkt::udp(sa(PEER_B, 6000), sa(RELAY_B, 30012), &rtp_payload(50, 32));
        r.expect_forward("B from B", &from_b, sa(RELAY_A, 30010), nated, Via::A, &[]);
        let spoof = Pkt::udp(sa(PEER_B, 6001), sa(RELAY_B, 30012), &rtp_payload(50, 33)).build();
        r.expect(
            "B's port spoofed",
            &spoof,
            action::DROP,
            &[(Counter::DropSourceMismatch, 1)],
        );
        let b = r.stream(b_to_a);
        assert_eq!((b.packets, b.bytes), (1, 50), "B->A stream");

        // A non-latching strict rule with an expected peer.
        let local = sa(RELAY_A, 30020);
        let (src, dst) = (sa(RELAY_A, 30022), sa(PEER_A, 5020));
        let mut rule = StreamRule::fixed(local, src, dst);
        rule.strict_source = true;
        rule.expected_peer = Some(sa(PEER_A, 4020));
        let id = r.install(&rule);
        let stranger = Pkt::udp(sa(PEER_A, 4021), local, &rtp_payload(70, 34)).build();
        r.expect(
            "strict fixed rule, stranger",
            &stranger,
            action::DROP,
            &[(Counter::DropSourceMismatch, 1)],
        );
        assert_eq!(r.stream(id), StreamCounters::default());
        let expected = Pkt::udp(sa(PEER_A, 4020), local, &rtp_payload(70, 35));
        r.expect_forward(
            "strict fixed rule, expected peer",
            &expected,
            src,
            dst,
            Via::A,
            &[],
        );
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (1, 70));
        assert_eq!(
            r.dp.latched_peer(id).expect("latched_peer"),
            None,
            "not latching"
        );
    });
}

#[test]
fn no_neighbour_and_no_route() {
    if !netns_available("no_neighbour_and_no_route") {
        return;
    }
    with_relay("fx-fib", |r| {
        let local = sa(RELAY_A, 30060);
        let src = sa(RELAY_A, 30062);
        let unresolved = sa(Ipv4Addr::new(10, 0, 1, 99), 5060);
        let id = r.install(&StreamRule::fixed(local, src, unresolved));
        let input = Pkt::udp(sa(PEER_A, 4000), local, &rtp_payload(160, 40));
        let out = r.expect(
            "no neighbour",
            &input.build(),
            action::PASS,
            &[(Counter::PassNoNeigh, 1)],
        );
        // Rewritten for the stack to forward; the Ethernet header is left as it came.
        let mut expected = input.clone();
        expected.ttl = 64;
        expected.src = src;
        expected.dst = unresolved;
        check_frame("no neighbour", &out.frame, &expected);
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (1, 160), "counted as relayed");

        let local = sa(RELAY_A, 30064);
        let nowhere = sa(Ipv4Addr::new(203, 0, 113, 5), 5000);
        let id = r.install(&StreamRule::fixed(local, sa(RELAY_A, 30066), nowhere));
        let frame = Pkt::udp(sa(PEER_A, 4000), local, &rtp_payload(160, 41)).build();
        r.expect(
            "no route",
            &frame,
            action::DROP,
            &[(Counter::DropNoRoute, 1)],
        );
        assert_eq!(r.stream(id), StreamCounters::default(), "not counted");

        // Larger than the egress MTU (1500).
        let local = sa(RELAY_A, 30068);
        let id = r.install(&StreamRule::fixed(
            local,
            sa(RELAY_B, 30070),
            sa(PEER_B, 6000),
        ));
        let frame = Pkt::udp(sa(PEER_A, 4000), local, &rtp_payload(1600, 42)).build();
        r.expect("too big", &frame, action::DROP, &[(Counter::DropTooBig, 1)]);
        assert_eq!(r.stream(id), StreamCounters::default(), "not counted");
    });
}

#[test]
fn remove_update_and_slot_reuse() {
    if !netns_available("remove_update_and_slot_reuse") {
        return;
    }
    with_relay("fx-life", |r| {
        let local = sa(RELAY_A, 30080);
        let input = Pkt::udp(sa(PEER_A, 4000), local, &rtp_payload(100, 50));
        let first = StreamRule::fixed(local, sa(RELAY_A, 30082), sa(PEER_A, 5080));
        let id = r.install(&first);
        r.expect_forward(
            "installed",
            &input,
            sa(RELAY_A, 30082),
            sa(PEER_A, 5080),
            Via::A,
            &[],
        );

        // update() moves the destination and keeps the counters.
        let moved = StreamRule::fixed(local, sa(RELAY_B, 30084), sa(PEER_B, 6080));
        r.dp.update(id, &moved).expect("update");
        r.expect_forward(
            "updated",
            &input,
            sa(RELAY_B, 30084),
            sa(PEER_B, 6080),
            Via::B,
            &[],
        );
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (2, 200), "counters survive update");

        // remove() stops forwarding and reports the final counters.
        let last = r.dp.remove(id).expect("remove");
        assert_eq!((last.packets, last.bytes), (2, 200), "final counters");
        assert!(
            r.dp.stream_counters(id).is_err(),
            "removed stream is unknown"
        );
        let frame = input.build();
        r.expect(
            "after remove",
            &frame,
            action::DROP,
            &[(Counter::DropUnknownPort, 1)],
        );

        // The slot is reused by the next stream, whose counters start at zero.
        let other_local = sa(RELAY_A, 30090);
        let reused = r.install(&StreamRule::fixed(
            other_local,
            sa(RELAY_A, 30092),
            sa(PEER_A, 5090),
        ));
        assert_eq!(reused, id, "slot reused");
        assert_eq!(
            r.stream(reused),
            StreamCounters::default(),
            "fresh counters"
        );
        let input = Pkt::udp(sa(PEER_A, 4000), other_local, &rtp_payload(30, 51));
        r.expect_forward(
            "reused slot",
            &input,
            sa(RELAY_A, 30092),
            sa(PEER_A, 5090),
            Via::A,
            &[],
        );
        let s = r.stream(reused);
        assert_eq!(
            (s.packets, s.bytes),
            (1, 30),
            "only the new stream's packet"
        );
        // The old address is still unknown.
        r.expect(
            "old address",
            &frame,
            action::DROP,
            &[(Counter::DropUnknownPort, 1)],
        );
    });
}

#[test]
fn garbage_never_aborts() {
    if !netns_available("garbage_never_aborts") {
        return;
    }
    with_relay("fx-fuzz", |r| {
        let leg_a = Leg {
            relay: sa(RELAY_A, 30000),
            peer: Peer::Latch(None),
        };
        let leg_b = Leg {
            relay: sa(RELAY_B, 30001),
            peer: Peer::Known(sa(PEER_B, 6000)),
        };
        for rule in bidirectional(leg_a, leg_b, false) {
            r.install(&rule);
        }
        let mut rng = Rng(0x0bad_5eed_1234_5678);
        let before = r.counters();
        const RUNS: u64 = 2000;
        let mut verdicts = [0u64; 5];
        for run in 0..RUNS {
            let len = 14 + rng.below(287) as usize;
            let mut f = rng.bytes(len);
            // Steer most frames deep into the parser: IPv4, a plausible header, UDP, a relay
            // address and port, consistent lengths; each step skipped at random.
            let mut steer = |f: &mut Vec<u8>, at: usize, bytes: &[u8]| {
                if f.len() >= at + bytes.len() && rng.below(5) != 0 {
                    f[at..at + bytes.len()].copy_from_slice(bytes);
                }
            };
            if len >= 42 {
                let tot_len = (len - 14) as u16;
                let dst = if len % 2 == 0 { RELAY_A } else { RELAY_B };
                let port = 30000 + (len % 3) as u16;
                steer(&mut f, 12, &ETH_P_IP.to_be_bytes());
                steer(&mut f, 14, &[0x45]);
                steer(&mut f, 16, &tot_len.to_be_bytes());
                steer(&mut f, 20, &[0, 0]);
                steer(&mut f, 23, &[IPPROTO_UDP]);
                steer(&mut f, 30, &dst.octets());
                steer(&mut f, 36, &port.to_be_bytes());
                steer(&mut f, 38, &(tot_len - 20).to_be_bytes());
            }
            let out = r.dp.test_run(&f, r.a0).expect("BPF_PROG_TEST_RUN");
            assert!(
                (action::DROP..=action::REDIRECT).contains(&out.action),
                "run {run}: verdict {} on {f:02x?}",
                out.action
            );
            verdicts[out.action as usize] += 1;
            assert_eq!(out.frame.len(), f.len(), "run {run}: frame length changed");
        }
        let delta = r.counters().since(&before);
        let verdict_sum: u64 = delta
            .iter()
            .filter(|(c, _)| *c != Counter::Latched)
            .map(|(_, v)| v)
            .sum();
        assert_eq!(
            verdict_sum,
            RUNS,
            "one verdict counter per run: {:?}",
            nonzero(&delta)
        );
        assert_eq!(delta.drops(), verdicts[action::DROP as usize], "drops");
        assert_eq!(
            delta.get(Counter::PassNotRelay) + delta.get(Counter::PassNoNeigh),
            verdicts[action::PASS as usize],
            "passes"
        );
        assert_eq!(delta.get(Counter::Tx), verdicts[action::TX as usize], "tx");
        assert_eq!(
            delta.get(Counter::Redirect),
            verdicts[action::REDIRECT as usize],
            "redirects"
        );
        eprintln!("garbage verdicts: {:?}", nonzero(&delta));
    });
}

#[test]
fn forwarding_disabled_is_counted() {
    if !netns_available("forwarding_disabled_is_counted") {
        return;
    }
    with_relay("fx-nofwd", |r| {
        let to_a = sa(RELAY_A, 30100);
        r.install(&StreamRule::fixed(
            to_a,
            sa(RELAY_A, 30102),
            sa(PEER_A, 5100),
        ));
        let to_b = sa(RELAY_A, 30104);
        r.install(&StreamRule::fixed(
            to_b,
            sa(RELAY_B, 30106),
            sa(PEER_B, 6100),
        ));
        std::fs::write("/proc/sys/net/ipv4/conf/a0/forwarding", "0").expect("a0 forwarding off");
        let frame = Pkt::udp(sa(PEER_A, 4000), to_a, &rtp_payload(40, 60)).build();
        r.expect(
            "egress a0, forwarding off on a0",
            &frame,
            action::DROP,
            &[(Counter::DropFwdDisabled, 1)],
        );
        let input = Pkt::udp(sa(PEER_A, 4000), to_b, &rtp_payload(40, 61));
        r.expect_forward(
            "egress b0, ingress a0 forwarding off",
            &input,
            sa(RELAY_B, 30106),
            sa(PEER_B, 6100),
            Via::B,
            &[],
        );
    });
}

#[test]
fn egress_follows_the_source_address() {
    if !netns_available("egress_follows_the_source_address") {
        return;
    }
    with_relay("fx-egress", |r| {
        // Arriving on b0, leaving from a0's address: redirected out of a0.
        let local = sa(RELAY_B, 30110);
        let (src, dst) = (sa(RELAY_A, 30112), sa(PEER_A, 5110));
        let id = r.install(&StreamRule::fixed(local, src, dst));
        r.ingress = Via::B;
        let input = Pkt::udp(sa(PEER_B, 6000), local, &rtp_payload(90, 70));
        r.expect_forward("b0 to a0", &input, src, dst, Via::A, &[]);
        r.ingress = Via::A;

        // The route is looked up as output from the interface owning the source address, so a
        // destination reachable only through the other leg has no route from this source.
        let local = sa(RELAY_A, 30114);
        let cross = r.install(&StreamRule::fixed(
            local,
            sa(RELAY_A, 30116),
            sa(PEER_B, 6110),
        ));
        let frame = Pkt::udp(sa(PEER_A, 4000), local, &rtp_payload(90, 71)).build();
        r.expect(
            "source on a0, destination behind b0",
            &frame,
            action::DROP,
            &[(Counter::DropNoRoute, 1)],
        );
        assert_eq!(r.stream(cross), StreamCounters::default());

        // Once b0 is detached it is no longer a redirect target.
        let local = sa(RELAY_A, 30118);
        let (src, dst) = (sa(RELAY_B, 30120), sa(PEER_B, 6120));
        let to_b = r.install(&StreamRule::fixed(local, src, dst));
        let input = Pkt::udp(sa(PEER_A, 4000), local, &rtp_payload(90, 72));
        r.expect_forward("to b0 while attached", &input, src, dst, Via::B, &[]);
        r.dp.detach("b0").expect("detach b0");
        r.expect(
            "to b0 after detach",
            &input.build(),
            action::DROP,
            &[(Counter::DropNoTxPort, 1)],
        );
        let s = r.stream(to_b);
        assert_eq!((s.packets, s.bytes), (1, 90), "drop not counted");
        let s = r.stream(id);
        assert_eq!((s.packets, s.bytes), (1, 90));
    });
}
