/* SPDX-License-Identifier: GPL-2.0 OR GPL-3.0-or-later */
/*
 * parsing.h: bounded parsing of Ethernet (one 802.1Q/802.1ad tag), IPv4 and UDP. BPF side only.
 * Every header is checked against data_end before it is read; the verifier insists, and so do we.
 */
#ifndef SLUICE_PARSING_H
#define SLUICE_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

#define IPV4_MF 0x2000
#define IPV4_OFFSET_MASK 0x1fff

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

enum parse_result {
	PARSE_OK = 0,          /* IPv4/UDP, headers consistent */
	PARSE_NOT_OURS,        /* not IPv4, not UDP, a later fragment: the stack's business */
	PARSE_MALFORMED,       /* truncated or inconsistent headers */
	PARSE_FIRST_FRAGMENT,  /* a first fragment; udp is valid, the datagram is incomplete */
};

/* What the fast path needs, parsed once. */
struct packet {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 udp_payload_len;
};

static __always_inline enum parse_result parse_packet(void *data, void *data_end, struct packet *p)
{
	struct ethhdr *eth = data;
	__u16 proto;
	void *cursor;

	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	p->eth = eth;
	proto = eth->h_proto;
	cursor = eth + 1;

	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = cursor;

		if ((void *)(vlan + 1) > data_end)
			return PARSE_MALFORMED;
		proto = vlan->encapsulated_proto;
		cursor = vlan + 1;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_OURS;

	struct iphdr *ip = cursor;

	if ((void *)(ip + 1) > data_end)
		return PARSE_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;

	__u32 ihl_bytes = ip->ihl * 4;
	__u32 tot_len = bpf_ntohs(ip->tot_len);

	if (cursor + ihl_bytes > data_end)
		return PARSE_MALFORMED;
	if (tot_len < ihl_bytes || cursor + tot_len > data_end)
		return PARSE_MALFORMED;
	p->ip = ip;

	if (ip->protocol != IPPROTO_UDP)
		return PARSE_NOT_OURS;

	__u16 frag = bpf_ntohs(ip->frag_off);

	/* A later fragment carries no UDP header, so nothing tells whose it is. */
	if (frag & IPV4_OFFSET_MASK)
		return PARSE_NOT_OURS;

	struct udphdr *udp = cursor + ihl_bytes;

	if ((void *)(udp + 1) > data_end)
		return PARSE_MALFORMED;
	p->udp = udp;
	if (frag & IPV4_MF)
		return PARSE_FIRST_FRAGMENT;

	__u32 udp_len = bpf_ntohs(udp->len);

	if (udp_len < sizeof(*udp) || udp_len > tot_len - ihl_bytes)
		return PARSE_MALFORMED;
	p->udp_payload_len = udp_len - sizeof(*udp);
	return PARSE_OK;
}

#endif
