/* SPDX-License-Identifier: GPL-2.0 OR GPL-3.0-or-later */
/* relay_maps.h: the maps of the relay program, one comment each. BPF side only. */
#ifndef SLUICE_RELAY_MAPS_H
#define SLUICE_RELAY_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "relay_abi.h"

/* Stream rules, keyed by where a packet arrives on the relay. Written by the control plane;
 * the program writes only the latch fields and the taught destination. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sluice_flow_key);
	__type(value, struct sluice_flow_rule);
	__uint(max_entries, SLUICE_MAX_FLOWS);
} flows SEC(".maps");

/* Per-stream packets, bytes and last-seen time, per CPU, indexed by flow_rule.stats_slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sluice_stream_stats);
	__uint(max_entries, SLUICE_MAX_FLOWS);
} stream_stats SEC(".maps");

/* Verdict and drop-reason counters, per CPU, indexed by enum sluice_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SLUICE_CNT_MAX);
} counters SEC(".maps");

/* The relay port range. One entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sluice_config);
	__uint(max_entries, 1);
} config SEC(".maps");

/* The relay's own IPv4 addresses (network order): a miss in `flows` to one of them is an unknown
 * port and is dropped; to any other address it is not ours and passes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, SLUICE_MAX_LOCAL_ADDRS);
} local_addrs SEC(".maps");

/* AF_XDP sockets for streams forwarded in userspace, by interface slot and receive queue:
 * key = xsk_slots[ingress ifindex] * SLUICE_MAX_QUEUES + rx_queue_index. A socket is bound to one
 * (interface, queue), and the kernel refuses a redirect into a socket bound elsewhere. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, SLUICE_MAX_XSKS);
} xsks SEC(".maps");

/* Slot (< SLUICE_MAX_IFACES) of each interface that has AF_XDP sockets, keyed by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, SLUICE_MAX_IFACES);
} xsk_slots SEC(".maps");

/* Interfaces the relay may redirect to, keyed by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(max_entries, SLUICE_MAX_IFACES);
} tx_ports SEC(".maps");

#endif
