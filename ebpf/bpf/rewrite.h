/* SPDX-License-Identifier: GPL-2.0 OR GPL-3.0-or-later */
/*
 * rewrite.h: address and port rewriting with incremental checksum updates (RFC 1624). BPF side only.
 *
 * One's-complement sums do not care about byte order as long as old and new words are taken the
 * same way, so the 16-bit words are used as they sit in the packet.
 */
#ifndef SLUICE_REWRITE_H
#define SLUICE_REWRITE_H

#include <linux/ip.h>
#include <linux/udp.h>
#include "parsing.h"

static __always_inline __u32 csum_add16(__u32 sum, __u16 old, __u16 new)
{
	/* HC' = ~(~HC + ~m + m'): accumulate ~m + m' and fold at the end. */
	return sum + (__u16)~old + new;
}

static __always_inline __u32 csum_add32(__u32 sum, __u32 old, __u32 new)
{
	sum = csum_add16(sum, old & 0xffff, new & 0xffff);
	return csum_add16(sum, old >> 16, new >> 16);
}

static __always_inline __u16 csum_apply(__u16 check, __u32 delta)
{
	__u32 sum = (__u16)~check + delta;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/*
 * Re-originate the datagram from new_saddr:new_sport to new_daddr:new_dport with a fresh TTL.
 * The relay terminates the stream and sends it anew, so the TTL the peer chose is not carried on.
 */
static __always_inline void rewrite_udp4(struct packet *p, __u32 new_saddr, __u32 new_daddr,
					 __u16 new_sport, __u16 new_dport)
{
	struct iphdr *ip = p->ip;
	struct udphdr *udp = p->udp;
	__u32 addr_delta = 0;
	__u32 ip_delta;
	__u16 old_ttl_proto = *(__u16 *)&ip->ttl;
	__u16 new_ttl_proto;

	addr_delta = csum_add32(addr_delta, ip->saddr, new_saddr);
	addr_delta = csum_add32(addr_delta, ip->daddr, new_daddr);

	ip->ttl = SLUICE_RELAY_TTL;
	new_ttl_proto = *(__u16 *)&ip->ttl;
	ip_delta = csum_add16(addr_delta, old_ttl_proto, new_ttl_proto);
	ip->check = csum_apply(ip->check, ip_delta);
	ip->saddr = new_saddr;
	ip->daddr = new_daddr;

	/* A zero UDP checksum means "none" (RFC 768) and must stay zero; a computed zero is sent as
	 * all ones. */
	if (udp->check) {
		__u32 udp_delta = addr_delta;

		udp_delta = csum_add16(udp_delta, udp->source, new_sport);
		udp_delta = csum_add16(udp_delta, udp->dest, new_dport);
		udp->check = csum_apply(udp->check, udp_delta);
		if (!udp->check)
			udp->check = 0xffff;
	}
	udp->source = new_sport;
	udp->dest = new_dport;
}

#endif
