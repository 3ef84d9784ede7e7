// SPDX-License-Identifier: GPL-2.0
/*
 * relay.bpf.c: Sluice's XDP forwarding plane for RTP/RTCP.
 *
 * A UDP datagram to a relay address and port is looked up in `flows`, re-originated from the
 * relay's address on the other leg towards the peer, and sent back out (XDP_TX) or out of another
 * interface (XDP_REDIRECT). Everything else passes to the network stack untouched, so SIP, SSH and
 * ARP keep working on the same interface. Every verdict bumps one counter of enum sluice_counter.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "relay_abi.h"
#include "relay_maps.h"
#include "parsing.h"
#include "rewrite.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Claimed by one CPU while it writes the learned peer; other CPUs neither latch nor enforce. */
#define LATCH_CLAIMED 2

static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &counter);

	if (value)
		*value += 1;
}

static __always_inline int verdict(__u32 counter, int action)
{
	count(counter);
	return action;
}

static __always_inline void count_stream(__u32 slot, __u32 bytes)
{
	struct sluice_stream_stats *stats = bpf_map_lookup_elem(&stream_stats, &slot);

	if (stats) {
		stats->packets += 1;
		stats->bytes += bytes;
		stats->last_seen_ns = bpf_ktime_get_ns();
	}
}

static __always_inline int is_relay_port(__u16 port_be)
{
	__u32 zero = 0;
	struct sluice_config *cfg = bpf_map_lookup_elem(&config, &zero);
	__u16 port = bpf_ntohs(port_be);

	return cfg && cfg->port_max && port >= cfg->port_min && port <= cfg->port_max;
}

static __always_inline int is_local_addr(__u32 addr)
{
	return bpf_map_lookup_elem(&local_addrs, &addr) != NULL;
}

/*
 * Symmetric RTP (RFC 4961): the first packet on a latching leg names the peer. It becomes this
 * leg's expected source and the destination of the reverse rule.
 */
static __always_inline void latch(struct sluice_flow_rule *rule, __u32 saddr, __u16 sport)
{
	if (__sync_val_compare_and_swap(&rule->latch_state, SLUICE_LATCH_WAITING, LATCH_CLAIMED) !=
	    SLUICE_LATCH_WAITING)
		return;
	rule->peer_addr = saddr;
	rule->peer_port = sport;
	if (rule->teach_key.local_addr) {
		struct sluice_flow_rule *reverse = bpf_map_lookup_elem(&flows, &rule->teach_key);

		if (reverse) {
			reverse->new_dst_addr = saddr;
			reverse->new_dst_port = sport;
			/* The destination is complete before the flag says so. */
			__sync_fetch_and_and(&reverse->flags, ~(__u32)SLUICE_RULE_DST_PENDING);
		}
	}
	__sync_lock_test_and_set(&rule->latch_state, SLUICE_LATCH_LEARNED);
	count(SLUICE_CNT_LATCHED);
}

/* Returns nonzero when the packet's source is acceptable for this leg. */
static __always_inline int source_ok(struct sluice_flow_rule *rule, __u32 saddr, __u16 sport)
{
	__u32 flags = rule->flags;

	if (flags & SLUICE_RULE_LATCH) {
		__u32 state = rule->latch_state;

		if (state == SLUICE_LATCH_WAITING) {
			latch(rule, saddr, sport);
			return 1;
		}
		if (state != SLUICE_LATCH_LEARNED)
			return 1;
	}
	if (!(flags & SLUICE_RULE_STRICT_SOURCE) || !rule->peer_addr)
		return 1;
	return rule->peer_addr == saddr && rule->peer_port == sport;
}

/*
 * A userspace stream: the packet goes to the AF_XDP socket of its queue as it arrived, with the
 * next hop in front of it. The worker rewrites, counts and sends it.
 */
static __always_inline int to_userspace(struct xdp_md *ctx, struct bpf_fib_lookup *fib)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 queue = ctx->rx_queue_index;
	__u32 *slot = bpf_map_lookup_elem(&xsk_slots, &ifindex);

	/* A socket serves one queue of one interface: find the slot of this interface's. */
	if (!slot || *slot >= SLUICE_MAX_IFACES || queue >= SLUICE_MAX_QUEUES)
		return verdict(SLUICE_CNT_DROP_NO_XSK, XDP_DROP);
	__u32 key = *slot * SLUICE_MAX_QUEUES + queue;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct sluice_xsk_meta)))
		return verdict(SLUICE_CNT_DROP_NO_XSK, XDP_DROP);

	void *data = (void *)(long)ctx->data;
	struct sluice_xsk_meta *meta = (void *)(long)ctx->data_meta;

	if ((void *)(meta + 1) > data)
		return verdict(SLUICE_CNT_DROP_NO_XSK, XDP_DROP);
	__builtin_memcpy(meta->dst_mac, fib->dmac, ETH_ALEN);
	__builtin_memcpy(meta->src_mac, fib->smac, ETH_ALEN);
	meta->egress_ifindex = fib->ifindex;
	if (bpf_redirect_map(&xsks, key, XDP_DROP) != XDP_REDIRECT)
		return verdict(SLUICE_CNT_DROP_NO_XSK, XDP_DROP);
	return verdict(SLUICE_CNT_USERSPACE, XDP_REDIRECT);
}

/*
 * The route towards a rule's destination, looked up as the relay's own output through the
 * interface that owns the rule's new source. Returns a BPF_FIB_LKUP_RET_* code.
 */
static __always_inline int route(struct xdp_md *ctx, struct bpf_fib_lookup *fib, __u8 tos,
				 __u16 tot_len, __u32 saddr, __u32 daddr, __u32 egress_ifindex)
{
	fib->family = AF_INET;
	fib->tos = tos;
	fib->l4_protocol = IPPROTO_UDP;
	fib->tot_len = tot_len;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = egress_ifindex ? egress_ifindex : ctx->ingress_ifindex;
	/* The relay originates these packets: route them as output through the interface that owns
	 * the new source, not as packets forwarded from the ingress. The kernel still refuses when
	 * IPv4 forwarding is off there, so that is counted apart from a missing route. */
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT);
}

static __always_inline int forward(struct xdp_md *ctx, struct packet *p, __u32 slot,
				   __u32 egress_ifindex)
{
	struct bpf_fib_lookup fib = {};
	int rc = route(ctx, &fib, p->ip->tos, bpf_ntohs(p->ip->tot_len), p->ip->saddr,
		       p->ip->daddr, egress_ifindex);

	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		/* The stack forwards the rewritten packet and resolves the neighbour on the way. */
		count_stream(slot, p->udp_payload_len);
		return verdict(SLUICE_CNT_PASS_NO_NEIGH, XDP_PASS);
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		return verdict(SLUICE_CNT_DROP_TOO_BIG, XDP_DROP);
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		return verdict(SLUICE_CNT_DROP_FWD_DISABLED, XDP_DROP);
	default:
		return verdict(SLUICE_CNT_DROP_NO_ROUTE, XDP_DROP);
	}

	__builtin_memcpy(p->eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, fib.smac, ETH_ALEN);

	if (fib.ifindex == ctx->ingress_ifindex) {
		count_stream(slot, p->udp_payload_len);
		return verdict(SLUICE_CNT_TX, XDP_TX);
	}
	rc = bpf_redirect_map(&tx_ports, fib.ifindex, XDP_DROP);
	if (rc != XDP_REDIRECT)
		return verdict(SLUICE_CNT_DROP_NO_TX_PORT, XDP_DROP);
	count_stream(slot, p->udp_payload_len);
	return verdict(SLUICE_CNT_REDIRECT, XDP_REDIRECT);
}

SEC("xdp")
int sluice_relay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet p = {};

	switch (parse_packet(data, data_end, &p)) {
	case PARSE_OK:
		break;
	case PARSE_NOT_OURS:
		return verdict(SLUICE_CNT_PASS_NOT_RELAY, XDP_PASS);
	case PARSE_FIRST_FRAGMENT:
		/* RTP is never fragmented; a fragmented SIP message to port 5060 still passes. */
		if (is_relay_port(p.udp->dest) && is_local_addr(p.ip->daddr))
			return verdict(SLUICE_CNT_DROP_FRAGMENT, XDP_DROP);
		return verdict(SLUICE_CNT_PASS_NOT_RELAY, XDP_PASS);
	default:
		return verdict(SLUICE_CNT_DROP_MALFORMED, XDP_DROP);
	}

	if (!is_relay_port(p.udp->dest))
		return verdict(SLUICE_CNT_PASS_NOT_RELAY, XDP_PASS);

	struct sluice_flow_key key = {
		.local_addr = p.ip->daddr,
		.local_port = p.udp->dest,
	};
	struct sluice_flow_rule *rule = bpf_map_lookup_elem(&flows, &key);

	if (!rule) {
		if (is_local_addr(p.ip->daddr))
			return verdict(SLUICE_CNT_DROP_UNKNOWN_PORT, XDP_DROP);
		return verdict(SLUICE_CNT_PASS_NOT_RELAY, XDP_PASS);
	}

	if (!source_ok(rule, p.ip->saddr, p.udp->source))
		return verdict(SLUICE_CNT_DROP_SOURCE_MISMATCH, XDP_DROP);
	if (rule->flags & SLUICE_RULE_DST_PENDING)
		return verdict(SLUICE_CNT_DROP_DST_PENDING, XDP_DROP);

	if (rule->flags & SLUICE_RULE_USERSPACE) {
		struct bpf_fib_lookup fib = {};
		int rc = route(ctx, &fib, p.ip->tos, bpf_ntohs(p.ip->tot_len), rule->new_src_addr,
			       rule->new_dst_addr, rule->egress_ifindex);

		/* Anything but a resolved next hop takes the kernel path, counted there. */
		if (rc == BPF_FIB_LKUP_RET_SUCCESS)
			return to_userspace(ctx, &fib);
	}

	rewrite_udp4(&p, rule->new_src_addr, rule->new_dst_addr, rule->new_src_port,
		     rule->new_dst_port);
	return forward(ctx, &p, rule->stats_slot, rule->egress_ifindex);
}

/* For the far ends of veth pairs: XDP_TX and XDP_REDIRECT into a veth need a program on its peer. */
SEC("xdp")
int sluice_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
