//! Host description and core plans for Sluice: CPUs, NUMA nodes, NIC ports and queues, read from
//! sysfs, and the planner that turns a profile into a core plan. It arrives with its issue; this
//! skeleton keeps the workspace's shape.
