/* SPDX-License-Identifier: GPL-2.0 OR GPL-3.0-or-later */
/*
 * relay_abi.h: the one ABI between the XDP relay program and its Rust loader.
 *
 * Everything the kernel side and userspace both read or write is declared here and nowhere else:
 * map keys and values, flags, counter indices and drop reasons. The Rust mirror lives in
 * `ebpf/src/abi.rs`; `ebpf/tests/layout.rs` compiles this header on the host, prints every size,
 * offset and enum value, and fails if the Rust side disagrees. Change both together.
 *
 * Byte order: addresses and ports are stored in network byte order (as they appear on the wire),
 * so the fast path compares and copies them without swapping. Counters are host order.
 */
#ifndef SLUICE_RELAY_ABI_H
#define SLUICE_RELAY_ABI_H

#ifdef __BPF__
#include <linux/types.h>
#else
#include <stdint.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
#endif

/* Default capacities; the loader may resize the maps before loading. */
#define SLUICE_MAX_FLOWS 65536
#define SLUICE_MAX_IFACES 64
#define SLUICE_MAX_LOCAL_ADDRS 256
#define SLUICE_MAX_QUEUES 64
/* Entries of the `xsks` map: an AF_XDP socket is bound to one queue of one interface, so the map is
 * keyed by interface slot (`xsk_slots`) and queue: slot * SLUICE_MAX_QUEUES + rx_queue_index. */
#define SLUICE_MAX_XSKS (SLUICE_MAX_IFACES * SLUICE_MAX_QUEUES)

/* TTL given to every packet the relay sends: it re-originates the stream, it does not route it. */
#define SLUICE_RELAY_TTL 64

/* Key of the `flows` map: where a packet arrived on the relay. */
struct sluice_flow_key {
	__u32 local_addr; /* relay IPv4 address, network order */
	__u16 local_port; /* relay UDP port, network order */
	__u16 _pad;       /* must be zero */
};

/* flow_rule.flags */
enum sluice_rule_flags {
	/* Learn the sending peer's address from the first packet (symmetric RTP, RFC 4961). */
	SLUICE_RULE_LATCH = 1u << 0,
	/* Drop packets whose source differs from peer_addr:peer_port (once known), counted. */
	SLUICE_RULE_STRICT_SOURCE = 1u << 1,
	/* The destination is not known yet: the opposite leg's latch will teach it. */
	SLUICE_RULE_DST_PENDING = 1u << 2,
	/* Forward in userspace: after the source checks and the route lookup, hand the packet,
	 * unchanged, to the AF_XDP socket of its receive queue, with a struct sluice_xsk_meta
	 * in front of it. The worker rewrites, counts and transmits it. */
	SLUICE_RULE_USERSPACE = 1u << 3,
};

/*
 * Metadata in front of a packet handed to AF_XDP (bpf_xdp_adjust_meta): the next hop the kernel's
 * route lookup found, so the worker needs no neighbour table of its own.
 */
struct sluice_xsk_meta {
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u32 egress_ifindex;
};

/* flow_rule.latch_state */
enum sluice_latch_state {
	SLUICE_LATCH_WAITING = 0,
	SLUICE_LATCH_LEARNED = 1,
};

/*
 * Value of the `flows` map: what to do with a packet that arrived at the key.
 *
 * The packet leaves from new_src_addr:new_src_port (the relay's address on the other leg) towards
 * new_dst_addr:new_dst_port (the peer). peer_addr:peer_port is the source expected on this leg: given
 * by the control plane, or learned by the program when SLUICE_RULE_LATCH is set. On learning, the
 * program also writes the learned address as the destination of the rule at teach_key (the reverse
 * direction) and clears its SLUICE_RULE_DST_PENDING flag. The route towards the peer is looked up
 * as the relay's own output through egress_ifindex, the interface that owns the new source
 * address, as for a socket bound to that address and that device (SO_BINDTODEVICE): a peer
 * reachable only through another interface has no route from this leg.
 */
struct sluice_flow_rule {
	__u32 new_src_addr;   /* network order */
	__u32 new_dst_addr;   /* network order */
	__u16 new_src_port;   /* network order */
	__u16 new_dst_port;   /* network order */
	__u32 flags;          /* enum sluice_rule_flags */
	__u32 peer_addr;      /* network order; expected or learned source */
	__u16 peer_port;      /* network order */
	__u16 _pad0;
	__u32 latch_state;    /* enum sluice_latch_state; written by the program */
	__u32 stats_slot;     /* index into `stream_stats` */
	__u32 egress_ifindex; /* interface that owns new_src_addr; 0 = the ingress interface */
	struct sluice_flow_key teach_key; /* reverse rule to teach on latch; local_addr 0 = none */
};

/* Value of the per-CPU `stream_stats` array, indexed by flow_rule.stats_slot. Never reset. */
struct sluice_stream_stats {
	__u64 packets;
	__u64 bytes;        /* UDP payload bytes (RTP header and payload) */
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet: CLOCK_MONOTONIC */
};

/* Value of the one-entry `config` array. */
struct sluice_config {
	__u16 port_min; /* host order: first relay port */
	__u16 port_max; /* host order: last relay port; 0 = no relay ports (everything passes) */
	__u32 _pad;
};

/*
 * Indices of the per-CPU `counters` array (__u64 each). Every packet the program sees bumps exactly
 * one verdict counter (all but SLUICE_CNT_LATCHED, which counts events), so their sum is the number
 * of packets seen. The drop reasons come first: index < SLUICE_CNT_DROP_MAX_REASON is a drop.
 *
 * When adding one: append before SLUICE_CNT_MAX, mirror it in ebpf/src/abi.rs (Counter), give it a
 * name in Counter::name, and the layout test will remind you of anything missed.
 */
enum sluice_counter {
	SLUICE_CNT_DROP_MALFORMED = 0,       /* truncated or inconsistent Ethernet/IPv4/UDP header */
	SLUICE_CNT_DROP_FRAGMENT = 1,        /* first IPv4 fragment towards a relay port */
	SLUICE_CNT_DROP_UNKNOWN_PORT = 2,    /* relay address and port range, but no rule */
	SLUICE_CNT_DROP_SOURCE_MISMATCH = 3, /* strict source: the packet's source is not the peer */
	SLUICE_CNT_DROP_NO_ROUTE = 4,        /* bpf_fib_lookup found no usable route */
	SLUICE_CNT_DROP_DST_PENDING = 5,     /* destination not learned yet (peer behind NAT silent) */
	SLUICE_CNT_DROP_NO_TX_PORT = 6,      /* egress interface not in `tx_ports` */
	SLUICE_CNT_DROP_TOO_BIG = 7,         /* larger than the egress MTU */
	SLUICE_CNT_DROP_FWD_DISABLED = 8,    /* IPv4 forwarding is off on the egress interface */
	SLUICE_CNT_DROP_NO_XSK = 9,          /* a userspace stream, but no AF_XDP socket on the queue */
	/* AF_XDP receive ring full or no free frame: counted by the sockets (XDP_STATISTICS), not
	 * by the program, and reported with its counters by the AF_XDP path. */
	SLUICE_CNT_DROP_XSK_RING = 10,
	SLUICE_CNT_DROP_MAX_REASON = 11,     /* number of drop reasons */

	SLUICE_CNT_TX = 11,                  /* forwarded with XDP_TX (same interface) */
	SLUICE_CNT_REDIRECT = 12,            /* forwarded with XDP_REDIRECT (another interface) */
	SLUICE_CNT_PASS_NOT_RELAY = 13,      /* not UDP to a relay port: left to the network stack */
	SLUICE_CNT_PASS_NO_NEIGH = 14,       /* rewritten, next hop unresolved: the stack forwards it */
	SLUICE_CNT_USERSPACE = 15,           /* handed to an AF_XDP socket */
	SLUICE_CNT_LATCHED = 16,             /* a leg learned its peer (event count, not a verdict) */
	SLUICE_CNT_MAX = 17,
};

/*
 * The benchmark's traffic generator (bpf/trafficgen.bpf.c), not part of the relay: it is run with
 * BPF_PROG_TEST_RUN in live-frames mode on a template frame and stamps each copy as packet `next`
 * of the run: stream next % streams, sequence next / streams, sent to UDP port
 * base_port + port_step * stream. It paces itself: a frame goes out only when packet `next` is
 * due (start_ns + next / pps seconds) and min_gap_ns after the previous one; other runs return
 * XDP_DROP, which costs the kernel a page recycle. One-entry ARRAY map `gen`.
 */
#define SLUICE_GEN_HEADERS 48 /* 42 used: Ethernet 14, IPv4 20, UDP 8 */

struct sluice_gen {
	__u32 streams;     /* >= 1 */
	__u16 base_port;   /* host order */
	__u16 port_step;
	__u64 next;        /* packets stamped so far; advanced by the program */
	__u64 total;       /* packets to send in all */
	__u64 start_ns;    /* CLOCK_MONOTONIC time of packet 0 */
	__u64 pps;         /* aggregate packets per second */
	__u64 min_gap_ns;  /* spacing while catching up, so a backlog does not leave as one burst */
	__u64 last_ns;     /* time of the last frame sent; written by the program */
	/* Ethernet, IPv4 and UDP headers of every frame. The kernel recycles live-frame pages
	 * without resetting them, and the relay rewrites what it forwards in place, so the program
	 * writes these on every run. */
	__u8 headers[SLUICE_GEN_HEADERS];
};

_Static_assert(sizeof(struct sluice_gen) == 56 + SLUICE_GEN_HEADERS, "generator state size");
_Static_assert(sizeof(struct sluice_xsk_meta) == 16, "AF_XDP metadata is 16 bytes");
_Static_assert(sizeof(struct sluice_flow_key) == 8, "flow key is 8 bytes");
_Static_assert(sizeof(struct sluice_flow_rule) == 44, "flow rule is 44 bytes");
_Static_assert(sizeof(struct sluice_stream_stats) == 24, "stream stats are 24 bytes");
_Static_assert(sizeof(struct sluice_config) == 8, "config is 8 bytes");

/* The program names, as the loader looks them up. */
#define SLUICE_PROG_RELAY "sluice_relay"
#define SLUICE_PROG_PASS "sluice_pass"
#define SLUICE_PROG_TRAFFICGEN "sluice_trafficgen"

#endif /* SLUICE_RELAY_ABI_H */
