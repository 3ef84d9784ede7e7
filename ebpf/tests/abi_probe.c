/* Prints the layout of relay_abi.h as seen by a C compiler; build.rs runs it, tests/layout.rs reads it. */
#include <stddef.h>
#include <stdio.h>
#include "relay_abi.h"

#define SIZE(type) printf("size %s %zu\n", #type, sizeof(struct type))
#define FIELD(type, field) printf("offset %s.%s %zu\n", #type, #field, offsetof(struct type, field))
#define VALUE(name) printf("value %s %lld\n", #name, (long long)(name))

int main(void)
{
	SIZE(sluice_flow_key);
	FIELD(sluice_flow_key, local_addr);
	FIELD(sluice_flow_key, local_port);

	SIZE(sluice_flow_rule);
	FIELD(sluice_flow_rule, new_src_addr);
	FIELD(sluice_flow_rule, new_dst_addr);
	FIELD(sluice_flow_rule, new_src_port);
	FIELD(sluice_flow_rule, new_dst_port);
	FIELD(sluice_flow_rule, flags);
	FIELD(sluice_flow_rule, peer_addr);
	FIELD(sluice_flow_rule, peer_port);
	FIELD(sluice_flow_rule, latch_state);
	FIELD(sluice_flow_rule, stats_slot);
	FIELD(sluice_flow_rule, egress_ifindex);
	FIELD(sluice_flow_rule, teach_key);

	SIZE(sluice_stream_stats);
	FIELD(sluice_stream_stats, packets);
	FIELD(sluice_stream_stats, bytes);
	FIELD(sluice_stream_stats, last_seen_ns);

	SIZE(sluice_xsk_meta);
	FIELD(sluice_xsk_meta, dst_mac);
	FIELD(sluice_xsk_meta, src_mac);
	FIELD(sluice_xsk_meta, egress_ifindex);

	SIZE(sluice_config);
	FIELD(sluice_config, port_min);
	FIELD(sluice_config, port_max);

	SIZE(sluice_gen);
	FIELD(sluice_gen, streams);
	FIELD(sluice_gen, base_port);
	FIELD(sluice_gen, port_step);
	FIELD(sluice_gen, next);
	FIELD(sluice_gen, total);
	FIELD(sluice_gen, start_ns);
	FIELD(sluice_gen, pps);
	FIELD(sluice_gen, min_gap_ns);
	FIELD(sluice_gen, last_ns);
	FIELD(sluice_gen, headers);
	VALUE(SLUICE_GEN_HEADERS);

	VALUE(SLUICE_MAX_FLOWS);
	VALUE(SLUICE_MAX_IFACES);
	VALUE(SLUICE_MAX_LOCAL_ADDRS);
	VALUE(SLUICE_RELAY_TTL);
	VALUE(SLUICE_RULE_LATCH);
	VALUE(SLUICE_RULE_STRICT_SOURCE);
	VALUE(SLUICE_RULE_DST_PENDING);
	VALUE(SLUICE_LATCH_WAITING);
	VALUE(SLUICE_LATCH_LEARNED);
	VALUE(SLUICE_CNT_DROP_MALFORMED);
	VALUE(SLUICE_CNT_DROP_FRAGMENT);
	VALUE(SLUICE_CNT_DROP_UNKNOWN_PORT);
	VALUE(SLUICE_CNT_DROP_SOURCE_MISMATCH);
	VALUE(SLUICE_CNT_DROP_NO_ROUTE);
	VALUE(SLUICE_CNT_DROP_DST_PENDING);
	VALUE(SLUICE_CNT_DROP_NO_TX_PORT);
	VALUE(SLUICE_CNT_DROP_TOO_BIG);
	VALUE(SLUICE_CNT_DROP_FWD_DISABLED);
	VALUE(SLUICE_CNT_DROP_NO_XSK);
	VALUE(SLUICE_CNT_DROP_XSK_RING);
	VALUE(SLUICE_CNT_USERSPACE);
	VALUE(SLUICE_RULE_USERSPACE);
	VALUE(SLUICE_MAX_QUEUES);
	VALUE(SLUICE_MAX_XSKS);
	VALUE(SLUICE_CNT_DROP_MAX_REASON);
	VALUE(SLUICE_CNT_TX);
	VALUE(SLUICE_CNT_REDIRECT);
	VALUE(SLUICE_CNT_PASS_NOT_RELAY);
	VALUE(SLUICE_CNT_PASS_NO_NEIGH);
	VALUE(SLUICE_CNT_LATCHED);
	VALUE(SLUICE_CNT_MAX);
	return 0;
}
