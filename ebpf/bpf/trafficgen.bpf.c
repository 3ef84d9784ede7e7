// SPDX-License-Identifier: GPL-2.0
/*
 * trafficgen.bpf.c: the benchmark's RTP generator. Not part of the relay.
 *
 * sluice-bench runs this program with BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES: the kernel
 * hands it copies of one template frame (Ethernet, IPv4 without options, UDP, 172 bytes of RTP) and
 * transmits whatever it returns XDP_TX for. A sendmmsg generator tops out near the rate the relay
 * is asked to carry; this one costs a few hundred nanoseconds a packet, so the relay stays the
 * thing measured.
 *
 * The kernel recycles pages without resetting them, so every field that varies is written on
 * every run. The payload follows bench/src/rtp.rs: send time, stream, sequence, magic, pattern.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "relay_abi.h"

#define RTP_LEN 172
#define RTP_OFFSET (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))
#define PAYLOAD_OFFSET (RTP_OFFSET + 12)
#define PATTERN_START 24
#define PATTERN_WORDS ((160 - PATTERN_START) / 8)

/* The generator's configuration and progress. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sluice_gen);
	__uint(max_entries, 1);
} gen SEC(".maps");

static __always_inline void put_be32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static __always_inline void put_be64(__u8 *p, __u64 v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, v);
}

SEC("xdp")
int sluice_trafficgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct sluice_gen *g = bpf_map_lookup_elem(&gen, &zero);

	if (!g || !g->streams)
		return XDP_DROP;
	if (data + RTP_OFFSET + RTP_LEN > data_end)
		return XDP_DROP;

	__u64 now = bpf_ktime_get_ns();
	__u64 next = g->next;

	if (next >= g->total || now < g->start_ns)
		return XDP_DROP;
	/* (now - start) * pps stays below 2^64 for runs of days at millions of packets/s. */
	if (next >= (now - g->start_ns) * g->pps / 1000000000ull)
		return XDP_DROP;
	if (now - g->last_ns < g->min_gap_ns)
		return XDP_DROP;
	g->last_ns = now;

	__builtin_memcpy(data, g->headers, RTP_OFFSET);

	__u64 n = __sync_fetch_and_add(&g->next, 1);
	__u32 stream = n % g->streams;
	__u64 seq = n / g->streams;
	struct udphdr *udp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
	__u8 *rtp = data + RTP_OFFSET;
	__u8 *payload = data + PAYLOAD_OFFSET;

	udp->dest = bpf_htons(g->base_port + g->port_step * stream);
	/* No UDP checksum (allowed in IPv4): the payload pattern catches corruption instead. */
	udp->check = 0;

	rtp[0] = 0x80;
	rtp[1] = seq == 0 ? 0x80 : 0; /* PCMU; marker at the start of the talkspurt */
	rtp[2] = seq >> 8;
	rtp[3] = seq;
	put_be32(rtp + 4, (__u32)seq * 160);
	put_be32(rtp + 8, (stream ^ 0x534C5543u) * 0x9E3779B1u);

	put_be64(payload, now);
	put_be32(payload + 8, stream);
	put_be64(payload + 12, seq);
	payload[20] = 'S';
	payload[21] = 'L';
	payload[22] = 'C';
	payload[23] = 'B';

	/* Byte i of the payload (from PATTERN_START) is byte i % 8 of the seed, xor i. */
	__u64 seed = ((((__u64)stream) << 32) ^ seq) * 0x9E3779B97F4A7C15ull | 1;
	__u64 index = 0x0706050403020100ull + PATTERN_START * 0x0101010101010101ull;

	for (int w = 0; w < PATTERN_WORDS; w++) {
		__u64 word = seed ^ index;

		__builtin_memcpy(payload + PATTERN_START + 8 * w, &word, 8);
		index += 0x0808080808080808ull;
	}
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
