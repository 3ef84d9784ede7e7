//! The ABI header and its Rust mirror agree: sizes, field offsets and constants as a C compiler
//! sees them (from the probe `build.rs` compiled and ran), and the key and value sizes of every map
//! in the compiled object. Needs no privileges.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use sluice_ebpf::abi::{self, Config, Counter, FlowKey, FlowRule, Gen, StreamStats, XskMeta};
use sluice_ebpf::{maps, RELAY_OBJECT};

fn c_layout() -> HashMap<String, i64> {
    include_str!(concat!(env!("OUT_DIR"), "/abi_layout.txt"))
        .lines()
        .map(|line| {
            let mut parts = line.split_whitespace();
            let kind = parts.next().expect("kind");
            let name = parts.next().expect("name");
            let value = parts.next().expect("value").parse().expect("number");
            (format!("{kind} {name}"), value)
        })
        .collect()
}

fn check(layout: &HashMap<String, i64>, entry: &str, rust: usize) {
    let c = layout.get(entry).unwrap_or_else(|| {
        panic!("the ABI probe printed no `{entry}`: add it to tests/abi_probe.c")
    });
    assert_eq!(*c, rust as i64, "{entry}: C says {c}, Rust says {rust}");
}

macro_rules! fields {
    ($layout:expr, $c:literal, $ty:ty, [$($field:ident),*]) => {
        check($layout, concat!("size ", $c), size_of::<$ty>());
        $( check($layout, concat!("offset ", $c, ".", stringify!($field)), offset_of!($ty, $field)); )*
    };
}

#[test]
fn structs_match_the_header() {
    let layout = c_layout();
    fields!(
        &layout,
        "sluice_flow_key",
        FlowKey,
        [local_addr, local_port]
    );
    fields!(
        &layout,
        "sluice_flow_rule",
        FlowRule,
        [
            new_src_addr,
            new_dst_addr,
            new_src_port,
            new_dst_port,
            flags,
            peer_addr,
            peer_port,
            latch_state,
            stats_slot,
            egress_ifindex,
            teach_key
        ]
    );
    fields!(
        &layout,
        "sluice_stream_stats",
        StreamStats,
        [packets, bytes, last_seen_ns]
    );
    fields!(
        &layout,
        "sluice_xsk_meta",
        XskMeta,
        [dst_mac, src_mac, egress_ifindex]
    );
    fields!(&layout, "sluice_config", Config, [port_min, port_max]);
    fields!(
        &layout,
        "sluice_gen",
        Gen,
        [streams, base_port, port_step, next, total, start_ns, pps, min_gap_ns, last_ns, headers]
    );
}

#[test]
fn constants_match_the_header() {
    let layout = c_layout();
    let value = |name: &str, rust: u64| check(&layout, &format!("value {name}"), rust as usize);
    value("SLUICE_MAX_FLOWS", abi::MAX_FLOWS.into());
    value("SLUICE_MAX_IFACES", abi::MAX_IFACES.into());
    value("SLUICE_MAX_LOCAL_ADDRS", abi::MAX_LOCAL_ADDRS.into());
    value("SLUICE_RELAY_TTL", abi::RELAY_TTL.into());
    value("SLUICE_GEN_HEADERS", abi::GEN_HEADERS as u64);
    value("SLUICE_RULE_LATCH", abi::RULE_LATCH.into());
    value("SLUICE_RULE_STRICT_SOURCE", abi::RULE_STRICT_SOURCE.into());
    value("SLUICE_RULE_DST_PENDING", abi::RULE_DST_PENDING.into());
    value("SLUICE_RULE_USERSPACE", abi::RULE_USERSPACE.into());
    value("SLUICE_MAX_QUEUES", abi::MAX_QUEUES.into());
    value("SLUICE_MAX_XSKS", abi::MAX_XSKS.into());
    value("SLUICE_LATCH_WAITING", abi::LATCH_WAITING.into());
    value("SLUICE_LATCH_LEARNED", abi::LATCH_LEARNED.into());
    value("SLUICE_CNT_DROP_MAX_REASON", abi::DROP_MAX_REASON.into());
    value("SLUICE_CNT_MAX", abi::COUNTER_MAX.into());
}

#[test]
fn counters_match_the_header() {
    let layout = c_layout();
    for counter in Counter::ALL {
        let c_name = format!("value SLUICE_CNT_{}", counter.name().to_uppercase());
        check(&layout, &c_name, counter.index() as usize);
    }
    let c_counters = layout
        .keys()
        .filter(|k| k.starts_with("value SLUICE_CNT_"))
        .count();
    // The two non-counter entries are DROP_MAX_REASON and MAX.
    assert_eq!(
        c_counters,
        Counter::ALL.len() + 2,
        "a counter in the header is missing in Rust"
    );
}

#[test]
fn compiled_maps_match_the_rust_types() {
    let object = aya_obj::Object::parse(RELAY_OBJECT).expect("the embedded object parses");
    let map = |name: &str| {
        object
            .maps
            .get(name)
            .unwrap_or_else(|| panic!("map `{name}` is missing from the object"))
    };
    let expect = |name: &str, key: usize, value: usize, entries: u32| {
        let m = map(name);
        assert_eq!(m.key_size() as usize, key, "{name}: key size");
        assert_eq!(m.value_size() as usize, value, "{name}: value size");
        assert_eq!(m.max_entries(), entries, "{name}: max entries");
    };
    expect(
        maps::FLOWS,
        size_of::<FlowKey>(),
        size_of::<FlowRule>(),
        abi::MAX_FLOWS,
    );
    expect(
        maps::STREAM_STATS,
        4,
        size_of::<StreamStats>(),
        abi::MAX_FLOWS,
    );
    expect(maps::COUNTERS, 4, 8, abi::COUNTER_MAX);
    expect(maps::CONFIG, 4, size_of::<Config>(), 1);
    expect(maps::LOCAL_ADDRS, 4, 4, abi::MAX_LOCAL_ADDRS);
    // struct bpf_devmap_val: ifindex and a program fd/id union.
    expect(maps::TX_PORTS, 4, 8, abi::MAX_IFACES);
    expect(maps::XSKS, 4, 4, abi::MAX_XSKS);
    expect(maps::XSK_SLOTS, 4, 4, abi::MAX_IFACES);
    assert_eq!(object.maps.len(), 8, "a map was added without a check here");

    for program in [sluice_ebpf::programs::RELAY, sluice_ebpf::programs::PASS] {
        assert!(
            object.programs.contains_key(program),
            "program `{program}` is missing"
        );
    }
}

#[test]
fn trafficgen_map_matches_the_rust_type() {
    let object = aya_obj::Object::parse(sluice_ebpf::TRAFFICGEN_OBJECT).expect("parses");
    let gen = object.maps.get("gen").expect("map `gen`");
    assert_eq!(gen.key_size(), 4);
    assert_eq!(gen.value_size() as usize, size_of::<Gen>());
    assert_eq!(gen.max_entries(), 1);
    assert!(object
        .programs
        .contains_key(sluice_ebpf::programs::TRAFFICGEN));
}
