//! The planner: a [`Host`] and a [`Profile`] in, a [`CorePlan`] out. Pure: it reads nothing and
//! never fails. What it cannot do well it does anyway and says so in `warnings` (something an
//! operator should fix or accept) or `notes` (a decision or fallback worth knowing).
//!
//! Placement rules, in order:
//!
//! 1. The control plane and SIP take the profile's physical core(s) of its node (node 0), with
//!    their hyperthreads if asked; no worker ever runs there unless the host has nothing else.
//! 2. Each port's queue count is the profile's maximum, never more than the port has now (sysfs
//!    does not show the hardware's maximum), and, with `fit_queues_to_cores`, lowered so that the
//!    ports of a NUMA node share that node's free physical cores evenly.
//! 3. One worker per (port, queue), pinned to a free physical core on the port's node; failing
//!    that a free hyperthread on the node, then a free physical core on another node, then a free
//!    hyperthread there, then the least-loaded CPU that is not the control plane's, then the
//!    control plane's. Every step after the first is a warning.
//! 4. Each queue's IRQ goes to its worker's CPU: native XDP runs in the NAPI poll of the CPU that
//!    took the interrupt, and an AF_XDP worker then finds its frames in that CPU's cache.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::cpulist::format_cpulist;
use crate::host::Host;
use crate::profile::{Ports, Profile};

/// Where a worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Worker {
    /// The port.
    pub iface: String,
    /// The queue (combined channel) number.
    pub queue: u32,
    /// The CPU the worker thread and the queue's IRQ are pinned to.
    pub core: usize,
    /// The NUMA node of that CPU.
    pub numa_node: u32,
    /// How good the placement is.
    pub placement: Placement,
}

/// How good a worker's placement is, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// A physical core of its own, on the NIC's node.
    OwnCore,
    /// A hyperthread of a core another worker or the OS also uses, on the NIC's node.
    Sibling,
    /// A physical core of its own on another node: every packet crosses the interconnect.
    OtherNode,
    /// A hyperthread on another node.
    OtherNodeSibling,
    /// A CPU shared with another worker.
    Shared,
    /// The control plane's CPU (a host with one CPU).
    SharedWithControl,
}

/// One media port as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortPlan {
    /// The interface.
    pub iface: String,
    /// Its driver.
    pub driver: Option<String>,
    /// Its NUMA node as the kernel reports it (`None`: unknown).
    pub numa_node: Option<u32>,
    /// The node the plan places its workers on.
    pub planned_node: u32,
    /// Queues it has now.
    pub current_queues: u32,
    /// Queues the plan gives it (`ethtool -L <if> combined N`).
    pub queues: u32,
    /// Link speed, Mb/s.
    pub speed_mbps: Option<u32>,
    /// Native XDP likely (heuristic).
    pub native_xdp_likely: bool,
    /// Zero-copy AF_XDP likely (heuristic).
    pub zero_copy_likely: bool,
    /// Why we think so.
    pub xdp_basis: String,
}

/// The memory budget and what the plan spends of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryPlan {
    /// MemTotal.
    pub total_bytes: u64,
    /// Kept for the OS: max(profile minimum, profile share of the total), at most the total.
    pub os_reserve_bytes: u64,
    /// What the plan may use: total minus the OS reserve.
    pub budget_bytes: u64,
    /// What the plan uses: the sum of the parts below.
    pub planned_bytes: u64,
    /// Sessions the maps are sized for (the profile's target, or fewer if memory is short).
    pub sessions: u64,
    /// Entries of the `flows` hash map, and slots of `stream_stats`: sessions x flows per
    /// session, rounded up to a power of two (the kernel rounds the hash's buckets anyway).
    pub flow_entries: u64,
    /// `flows` hash map.
    pub flow_map_bytes: u64,
    /// `stream_stats` per-CPU array (value x possible CPUs x entries).
    pub stream_stats_bytes: u64,
    /// UMEM frames per AF_XDP worker (FILL + COMPLETION ring sizes).
    pub umem_frames_per_worker: u64,
    /// UMEM of all workers.
    pub umem_bytes: u64,
    /// Control-plane per-session state.
    pub session_state_bytes: u64,
    /// Control-plane fixed cost.
    pub control_plane_base_bytes: u64,
    /// The most sessions whose cost fits the budget.
    pub max_sessions_by_memory: u64,
}

/// What the links can carry with the profile's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// Packets/s all media ports with a known speed can receive at line rate.
    pub line_rate_pps: u64,
    /// Sessions (two stream directions) at line rate.
    pub line_rate_sessions: u64,
}

/// One IRQ to pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IrqAffinity {
    /// The port.
    pub iface: String,
    /// Its queue.
    pub queue: u32,
    /// The IRQ number (as read when planning; `sluice hw apply` re-reads them after changing the
    /// queue counts, which renumbers them).
    pub irq: u32,
    /// The CPU.
    pub cpu: usize,
}

/// Ring sizes for one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RingSizes {
    /// The port.
    pub iface: String,
    /// Receive ring.
    pub rx: u32,
    /// Transmit ring.
    pub tx: u32,
}

/// One sysctl, expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysctlSetting {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// Why.
    pub why: String,
}

/// AF_XDP socket ring sizes for every worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XskRings {
    /// RX ring.
    pub rx: u32,
    /// TX ring.
    pub tx: u32,
    /// FILL ring.
    pub fill: u32,
    /// COMPLETION ring.
    pub completion: u32,
}

/// The tuning to apply to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tuning {
    /// Combined channels per port.
    pub channels: BTreeMap<String, u32>,
    /// NIC ring sizes.
    pub rings: Vec<RingSizes>,
    /// IRQ affinity of each planned queue.
    pub irq_affinity: Vec<IrqAffinity>,
    /// AF_XDP rings (set by the dataplane when it creates its sockets).
    pub xsk_rings: XskRings,
    /// Sysctls.
    pub sysctls: Vec<SysctlSetting>,
}

/// A short description of the host the plan is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSummary {
    /// Online logical CPUs.
    pub cpus: usize,
    /// Physical cores.
    pub physical_cores: usize,
    /// NUMA nodes.
    pub numa_nodes: usize,
    /// Possible CPUs (per-CPU maps are sized by this).
    pub possible_cpus: usize,
    /// Kernel release.
    pub kernel_release: Option<String>,
}

/// The plan: which CPU does what, how big the maps and UMEM are, and the tuning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorePlan {
    /// The profile's name.
    pub profile: String,
    /// The host.
    pub host: HostSummary,
    /// One worker per (port, queue).
    pub workers: Vec<Worker>,
    /// CPUs of the control plane and SIP.
    pub control_cores: Vec<usize>,
    /// CPUs left to the OS: neither a worker's nor the control plane's.
    pub os_cores: Vec<usize>,
    /// The media ports.
    pub ports: Vec<PortPlan>,
    /// Memory.
    pub memory: MemoryPlan,
    /// Line-rate capacity.
    pub capacity: Capacity,
    /// Tuning.
    pub tuning: Tuning,
    /// Things to fix or accept.
    pub warnings: Vec<String>,
    /// Decisions and fallbacks worth knowing.
    pub notes: Vec<String>,
}

impl CorePlan {
    /// The CPU the worker for `iface`'s `queue` is pinned to.
    pub fn worker_core(&self, iface: &str, queue: u32) -> Option<usize> {
        worker_core(self, iface, queue)
    }

    /// The workers of one port, by queue.
    pub fn workers_of<'a>(&'a self, iface: &'a str) -> impl Iterator<Item = &'a Worker> + 'a {
        self.workers.iter().filter(move |w| w.iface == iface)
    }

    /// The plan as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The CPU the AF_XDP worker for `iface`'s `queue` should be pinned to, if the plan has one.
pub fn worker_core(plan: &CorePlan, iface: &str, queue: u32) -> Option<usize> {
    plan.workers
        .iter()
        .find(|w| w.iface == iface && w.queue == queue)
        .map(|w| w.core)
}

/// A physical core: its online CPUs (the first is the one workers take) and its node.
struct PhysCore {
    cpus: Vec<usize>,
    node: u32,
}

/// Turns a host and a profile into a plan. Never fails; see the module doc for the rules.
pub fn plan(host: &Host, profile: &Profile) -> CorePlan {
    let mut warnings = Vec::new();
    let mut notes = host.notes.clone();

    let node_of = |cpu: usize| host.cpu(cpu).map_or(0, |c| c.node);
    let cores: Vec<PhysCore> = host
        .physical_cores()
        .into_iter()
        .map(|cpus| PhysCore {
            node: node_of(cpus[0]),
            cpus,
        })
        .collect();
    let nodes_with_cpus: Vec<u32> = host
        .nodes
        .iter()
        .filter(|n| !n.cpus.is_empty())
        .map(|n| n.id)
        .collect();
    let first_node = nodes_with_cpus.first().copied().unwrap_or(0);

    // --- Control plane -------------------------------------------------------------------------
    let control_node = if nodes_with_cpus.contains(&profile.control.node) {
        profile.control.node
    } else {
        warnings.push(format!(
            "control plane: node {} has no online CPU; using node {first_node}",
            profile.control.node
        ));
        first_node
    };
    // Leave at least one physical core for the workers when the host has more than one.
    let wanted = profile.control.physical_cores as usize;
    let allowed = wanted.min(cores.len().saturating_sub(1)).max(1);
    let control_phys: Vec<usize> = cores
        .iter()
        .enumerate()
        .filter(|(_, c)| c.node == control_node)
        .map(|(i, _)| i)
        .take(allowed)
        .collect();
    if control_phys.len() < wanted {
        warnings.push(format!(
            "control plane: {} physical core(s) instead of the profile's {wanted}, to leave the workers at least one",
            control_phys.len()
        ));
    }
    let mut control_cores: Vec<usize> = control_phys
        .iter()
        .flat_map(|&i| {
            let c = &cores[i].cpus;
            if profile.control.include_siblings {
                c.clone()
            } else {
                vec![c[0]]
            }
        })
        .collect();
    control_cores.sort_unstable();

    // --- Ports ---------------------------------------------------------------------------------
    let selected: Vec<&crate::host::Nic> = match &profile.ports {
        Ports::Keyword(_) => host.nics.iter().collect(),
        Ports::Named(names) => names
            .iter()
            .filter_map(|name| {
                let nic = host.nic(name);
                if nic.is_none() {
                    warnings.push(format!(
                        "port {name}: not a physical port of this host (physical ports: {}); skipped",
                        host.nics.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
                nic
            })
            .collect(),
    };
    if selected.is_empty() {
        warnings.push(
            "no physical NIC port to plan for: no workers; the socket fallback needs none".into(),
        );
    }
    let mut ports: Vec<PortPlan> = Vec::new();
    for nic in &selected {
        let planned_node = match nic.numa_node {
            Some(n) if nodes_with_cpus.contains(&n) => n,
            other => {
                let what = match other {
                    Some(n) => format!("on node {n}, which has no online CPU"),
                    None => "NUMA node unknown (-1)".into(),
                };
                let text = format!(
                    "{}: {what}; placing its workers on node {first_node}",
                    nic.name
                );
                if nodes_with_cpus.len() > 1 {
                    warnings.push(text);
                } else {
                    notes.push(text);
                }
                first_node
            }
        };
        if !nic.xdp.native_likely {
            warnings.push(format!(
                "{}: native XDP unlikely ({}); XDP would run in generic mode, far slower",
                nic.name, nic.xdp.basis
            ));
        } else if !nic.xdp.zero_copy_likely {
            notes.push(format!(
                "{}: AF_XDP would run in copy mode ({}); native XDP is the fast path here",
                nic.name, nic.xdp.basis
            ));
        }
        if nic.speed_mbps.is_none() {
            notes.push(format!(
                "{}: link speed unknown (link down, or a virtual NIC that reports none); left out of the line-rate capacity",
                nic.name
            ));
        }
        let current = nic.rx_queues.min(nic.tx_queues).max(1);
        let queues = match profile.max_queues_per_port {
            Some(max) if max > current => {
                notes.push(format!(
                    "{}: {current} queue(s) now, the profile allows {max}; sysfs does not show the hardware's maximum, so the plan keeps {current} (raise it with ethtool -L first)",
                    nic.name
                ));
                current
            }
            Some(max) => max,
            None => current,
        };
        ports.push(PortPlan {
            iface: nic.name.clone(),
            driver: nic.driver.clone(),
            numa_node: nic.numa_node,
            planned_node,
            current_queues: current,
            queues,
            speed_mbps: nic.speed_mbps,
            native_xdp_likely: nic.xdp.native_likely,
            zero_copy_likely: nic.xdp.zero_copy_likely,
            xdp_basis: nic.xdp.basis.clone(),
        });
    }

    // Free physical cores per node, and free hyperthreads.
    let is_control_core = |i: usize| control_phys.contains(&i);
    let free_cores_on = |node: u32| {
        cores
            .iter()
            .enumerate()
            .filter(|(i, c)| c.node == node && !is_control_core(*i))
            .count()
    };
    if profile.fit_queues_to_cores {
        for node in nodes_with_cpus.iter().copied() {
            let on_node = ports.iter().filter(|p| p.planned_node == node).count();
            if on_node == 0 {
                continue;
            }
            let free = free_cores_on(node);
            let share = (free / on_node).max(1) as u32;
            for p in ports.iter_mut().filter(|p| p.planned_node == node) {
                if p.queues > share {
                    notes.push(format!(
                        "{}: {} queue(s) lowered to {share} so that each worker has a physical core of its own on node {node} ({free} free core(s) for {on_node} port(s))",
                        p.iface, p.queues
                    ));
                    p.queues = share;
                }
            }
        }
    }

    // --- Workers -------------------------------------------------------------------------------
    let mut used: BTreeSet<usize> = BTreeSet::new(); // CPUs taken by a worker
    let mut load: BTreeMap<usize, u32> = BTreeMap::new();
    let slots: Vec<(String, u32, u32)> = ports
        .iter()
        .flat_map(|p| (0..p.queues).map(move |q| (p.iface.clone(), q, p.planned_node)))
        .collect();
    let mut assigned: Vec<Option<(usize, Placement)>> = vec![None; slots.len()];
    let control_set: BTreeSet<usize> = control_cores.iter().copied().collect();
    // Candidate CPUs for each pass: (same node?, primaries or hyperthreads).
    let primaries = |same: bool, node: u32| -> Vec<usize> {
        cores
            .iter()
            .enumerate()
            .filter(|(i, c)| !is_control_core(*i) && (c.node == node) == same)
            .map(|(_, c)| c.cpus[0])
            .collect()
    };
    let hyperthreads = |same: bool, node: u32| -> Vec<usize> {
        cores
            .iter()
            .filter(|c| (c.node == node) == same)
            .flat_map(|c| c.cpus.iter().skip(1).copied())
            .filter(|cpu| !control_set.contains(cpu))
            .collect()
    };
    let passes: [(bool, bool, Placement); 4] = [
        (true, true, Placement::OwnCore),
        (true, false, Placement::Sibling),
        (false, true, Placement::OtherNode),
        (false, false, Placement::OtherNodeSibling),
    ];
    for (same, primary, placement) in passes {
        for (slot, (_, _, node)) in slots.iter().enumerate() {
            if assigned[slot].is_some() {
                continue;
            }
            let candidates = if primary {
                primaries(same, *node)
            } else {
                hyperthreads(same, *node)
            };
            if let Some(&cpu) = candidates.iter().find(|c| !used.contains(c)) {
                used.insert(cpu);
                *load.entry(cpu).or_default() += 1;
                assigned[slot] = Some((cpu, placement));
            }
        }
    }
    // Out of free CPUs: share, least-loaded first, the NIC's node first.
    let non_control: Vec<usize> = host
        .cpus
        .iter()
        .map(|c| c.id)
        .filter(|c| !control_set.contains(c))
        .collect();
    for (slot, (_, _, node)) in slots.iter().enumerate() {
        if assigned[slot].is_some() {
            continue;
        }
        let pick = non_control
            .iter()
            .copied()
            .min_by_key(|&c| (load.get(&c).copied().unwrap_or(0), node_of(c) != *node, c));
        let (cpu, placement) = match pick {
            Some(cpu) => (cpu, Placement::Shared),
            None => (
                control_cores.first().copied().unwrap_or(0),
                Placement::SharedWithControl,
            ),
        };
        *load.entry(cpu).or_default() += 1;
        assigned[slot] = Some((cpu, placement));
    }
    let mut workers = Vec::with_capacity(slots.len());
    for ((iface, queue, nic_node), a) in slots.iter().zip(assigned) {
        let (core, placement) = a.unwrap_or((0, Placement::SharedWithControl));
        let numa_node = node_of(core);
        let at = format!("{iface} queue {queue} -> cpu{core}");
        match placement {
            Placement::OwnCore => {}
            Placement::Sibling => warnings.push(format!(
                "{at}: a hyperthread, no free physical core left on node {nic_node}"
            )),
            Placement::OtherNode | Placement::OtherNodeSibling => warnings.push(format!(
                "{at}: on node {numa_node}, not the NIC's node {nic_node}; every packet crosses the interconnect"
            )),
            Placement::Shared => warnings.push(format!(
                "{at}: shared with {} other worker(s) or the OS, no free CPU left",
                load.get(&core).copied().unwrap_or(1).saturating_sub(1)
            )),
            Placement::SharedWithControl => warnings.push(format!(
                "{at}: shares the control plane's CPU, the host has no other"
            )),
        }
        workers.push(Worker {
            iface: iface.clone(),
            queue: *queue,
            core,
            numa_node,
            placement,
        });
    }
    let worker_cpus: BTreeSet<usize> = workers.iter().map(|w| w.core).collect();
    let os_cores: Vec<usize> = host
        .cpus
        .iter()
        .map(|c| c.id)
        .filter(|c| !control_set.contains(c) && !worker_cpus.contains(c))
        .collect();
    if host.cpus.len() <= 2 {
        let workers_on = format_cpulist(&worker_cpus.iter().copied().collect::<Vec<_>>());
        warnings.push(format!(
            "{} CPU(s): workers share cpu {workers_on} with the OS, and the control plane shares cpu {} with it; fine for tests and small loads, not for a carrier's full load",
            host.cpus.len(),
            format_cpulist(&control_cores)
        ));
    } else if os_cores.is_empty() {
        warnings.push(
            "no CPU is left for the OS alone: its interrupts and housekeeping will preempt workers"
                .into(),
        );
    }

    // --- Memory --------------------------------------------------------------------------------
    let m = &profile.memory;
    let total = host.mem_total_bytes;
    let reserve = m
        .os_reserve_min_bytes
        .max((u128::from(total) * u128::from(m.os_reserve_percent) / 100) as u64)
        .min(total);
    let budget = total - reserve;
    let umem_frames = u64::from(profile.rings.xsk_fill) + u64::from(profile.rings.xsk_completion);
    let umem_bytes = (workers.len() as u64)
        .saturating_mul(umem_frames)
        .saturating_mul(m.umem_frame_bytes);
    let cpus = host.possible_cpus.max(host.cpus.len()) as u64;
    let cost = |sessions: u64| -> Cost {
        let flows = sessions.saturating_mul(u64::from(m.flows_per_session));
        let entries = if flows == 0 {
            0
        } else {
            flows.checked_next_power_of_two().unwrap_or(u64::MAX)
        };
        let flow_map = entries.saturating_mul(m.flow_entry_bytes);
        let stats = entries
            .saturating_mul(m.stream_stats_value_bytes.next_multiple_of(8))
            .saturating_mul(cpus);
        let state = sessions.saturating_mul(m.session_bytes);
        let total = flow_map
            .saturating_add(stats)
            .saturating_add(state)
            .saturating_add(umem_bytes)
            .saturating_add(m.control_plane_base_bytes);
        Cost {
            entries,
            flow_map,
            stats,
            state,
            total,
        }
    };
    // The largest session count that fits: the cost is monotonic, so bisect.
    let max_sessions = {
        let (mut lo, mut hi) = (0u64, 1u64 << 32);
        if cost(0).total > budget {
            0
        } else {
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if cost(mid).total <= budget {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            lo
        }
    };
    let fixed = cost(0).total;
    let sessions = if fixed > budget {
        warnings.push(format!(
            "memory: the budget ({} after the OS's {}) does not cover the fixed costs ({}: UMEM and control-plane base); no sessions planned",
            bytes(budget), bytes(reserve), bytes(fixed)
        ));
        0
    } else if m.target_sessions > max_sessions {
        warnings.push(format!(
            "memory: {} sessions do not fit the budget of {}; planned for {max_sessions}",
            m.target_sessions,
            bytes(budget)
        ));
        max_sessions
    } else {
        m.target_sessions
    };
    let c = cost(sessions);
    let memory = MemoryPlan {
        total_bytes: total,
        os_reserve_bytes: reserve,
        budget_bytes: budget,
        planned_bytes: c.total,
        sessions,
        flow_entries: c.entries,
        flow_map_bytes: c.flow_map,
        stream_stats_bytes: c.stats,
        umem_frames_per_worker: umem_frames,
        umem_bytes,
        session_state_bytes: c.state,
        control_plane_base_bytes: m.control_plane_base_bytes,
        max_sessions_by_memory: max_sessions,
    };

    // --- Capacity ------------------------------------------------------------------------------
    let t = &profile.traffic;
    let line_rate_pps: u64 = ports
        .iter()
        .filter_map(|p| p.speed_mbps)
        .map(|mbps| u64::from(mbps) * 1_000_000 / 8 / u64::from(t.wire_bytes_per_packet))
        .sum();
    let line_rate_sessions = line_rate_pps / (2 * u64::from(t.packets_per_second_per_stream));
    if line_rate_sessions > 0 && sessions > line_rate_sessions {
        notes.push(format!(
            "{sessions} sessions planned; the links carry {line_rate_sessions} at line rate with {} packets/s per direction",
            t.packets_per_second_per_stream
        ));
    }

    // --- Tuning --------------------------------------------------------------------------------
    let channels = ports.iter().map(|p| (p.iface.clone(), p.queues)).collect();
    let rings = ports
        .iter()
        .map(|p| RingSizes {
            iface: p.iface.clone(),
            rx: profile.rings.nic_rx,
            tx: profile.rings.nic_tx,
        })
        .collect();
    let mut irq_affinity = Vec::new();
    for p in &ports {
        let Some(nic) = host.nic(&p.iface) else {
            continue;
        };
        if nic.queue_irqs.is_empty() {
            notes.push(format!(
                "{}: /proc/interrupts does not name its queues' IRQs (device vectors: {}); set their smp_affinity_list by hand",
                p.iface,
                if nic.msi_irqs.is_empty() { "none found".to_string() } else {
                    nic.msi_irqs.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
                }
            ));
            continue;
        }
        for w in workers.iter().filter(|w| w.iface == p.iface) {
            for &irq in nic.queue_irqs.get(&w.queue).into_iter().flatten() {
                irq_affinity.push(IrqAffinity {
                    iface: p.iface.clone(),
                    queue: w.queue,
                    irq,
                    cpu: w.core,
                });
            }
        }
    }
    if !irq_affinity.is_empty() {
        notes.push(
            "irqbalance moves IRQs back: stop it (systemctl disable --now irqbalance) or ban these IRQs"
                .into(),
        );
    }
    let sysctls = profile
        .sysctls
        .iter()
        .flat_map(|s| {
            if s.key.contains("{iface}") {
                ports
                    .iter()
                    .map(|p| SysctlSetting {
                        key: s.key.replace("{iface}", &p.iface),
                        value: s.value.clone(),
                        why: s.why.clone(),
                    })
                    .collect::<Vec<_>>()
            } else {
                vec![SysctlSetting {
                    key: s.key.clone(),
                    value: s.value.clone(),
                    why: s.why.clone(),
                }]
            }
        })
        .collect();
    let r = &profile.rings;

    CorePlan {
        profile: profile.name.clone(),
        host: HostSummary {
            cpus: host.cpus.len(),
            physical_cores: cores.len(),
            numa_nodes: host.nodes.len(),
            possible_cpus: host.possible_cpus,
            kernel_release: host.kernel_release.clone(),
        },
        workers,
        control_cores,
        os_cores,
        ports,
        memory,
        capacity: Capacity {
            line_rate_pps,
            line_rate_sessions,
        },
        tuning: Tuning {
            channels,
            rings,
            irq_affinity,
            xsk_rings: XskRings {
                rx: r.xsk_rx,
                tx: r.xsk_tx,
                fill: r.xsk_fill,
                completion: r.xsk_completion,
            },
            sysctls,
        },
        warnings,
        notes,
    }
}

struct Cost {
    entries: u64,
    flow_map: u64,
    stats: u64,
    state: u64,
    total: u64,
}

/// Bytes for a reader: exact, with a binary-prefixed approximation.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if unit == "B" {
        format!("{n} B")
    } else {
        format!("{value:.1} {unit}")
    }
}

impl fmt::Display for CorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.host;
        writeln!(f, "profile   {}", self.profile)?;
        writeln!(
            f,
            "host      {} CPUs, {} physical cores, {} NUMA node(s), kernel {}",
            h.cpus,
            h.physical_cores,
            h.numa_nodes,
            h.kernel_release.as_deref().unwrap_or("unknown")
        )?;
        writeln!(f, "control   cpu {}", format_cpulist(&self.control_cores))?;
        writeln!(
            f,
            "os        cpu {}",
            if self.os_cores.is_empty() {
                "(none)".to_string()
            } else {
                format_cpulist(&self.os_cores)
            }
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10} {:<11} {:>4} {:>6} {:>10}  {:<8} zero-copy AF_XDP",
            "port", "driver", "node", "queues", "speed", "XDP"
        )?;
        for p in &self.ports {
            writeln!(
                f,
                "{:<10} {:<11} {:>4} {:>6} {:>10}  {:<8} {}",
                p.iface,
                p.driver.as_deref().unwrap_or("?"),
                p.numa_node.map_or("?".into(), |n| n.to_string()),
                format!("{}/{}", p.queues, p.current_queues),
                p.speed_mbps.map_or("?".into(), |s| format!("{s} Mb/s")),
                if p.native_xdp_likely {
                    "native"
                } else {
                    "generic"
                },
                if p.zero_copy_likely {
                    "likely"
                } else {
                    "unlikely"
                },
            )?;
        }
        writeln!(
            f,
            "(queues: planned/now; XDP support is a heuristic on driver and kernel version)"
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10} {:>5} {:>5} {:>4}  placement",
            "worker", "queue", "cpu", "node"
        )?;
        for w in &self.workers {
            writeln!(
                f,
                "{:<10} {:>5} {:>5} {:>4}  {}",
                w.iface,
                w.queue,
                w.core,
                w.numa_node,
                serde_json::to_value(w.placement)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )?;
        }
        let m = &self.memory;
        writeln!(f)?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, n: u64, extra: String| {
            writeln!(f, "  {name:<16} {n:>13}  {:>10}  {extra}", bytes(n))
        };
        writeln!(f, "memory")?;
        row(f, "total", m.total_bytes, "MemTotal".into())?;
        row(f, "OS reserve", m.os_reserve_bytes, String::new())?;
        row(f, "budget", m.budget_bytes, "total - OS reserve".into())?;
        row(f, "planned", m.planned_bytes, "the sum of:".into())?;
        row(
            f,
            "  flows map",
            m.flow_map_bytes,
            format!("{} entries", m.flow_entries),
        )?;
        row(
            f,
            "  stream_stats",
            m.stream_stats_bytes,
            format!("{} slots, per CPU", m.flow_entries),
        )?;
        row(
            f,
            "  UMEM",
            m.umem_bytes,
            format!("{} frames per worker", m.umem_frames_per_worker),
        )?;
        row(
            f,
            "  sessions",
            m.session_state_bytes,
            format!("{} sessions", m.sessions),
        )?;
        row(
            f,
            "  control base",
            m.control_plane_base_bytes,
            String::new(),
        )?;
        writeln!(
            f,
            "capacity  {} sessions by memory, {} at line rate ({} packets/s)",
            m.max_sessions_by_memory, self.capacity.line_rate_sessions, self.capacity.line_rate_pps
        )?;
        writeln!(f)?;
        writeln!(f, "tuning")?;
        for (iface, n) in &self.tuning.channels {
            writeln!(f, "  {iface}: {n} combined channel(s)")?;
        }
        for r in &self.tuning.rings {
            writeln!(f, "  {}: rings rx {} tx {}", r.iface, r.rx, r.tx)?;
        }
        for a in &self.tuning.irq_affinity {
            writeln!(
                f,
                "  irq {} ({} queue {}) -> cpu{}",
                a.irq, a.iface, a.queue, a.cpu
            )?;
        }
        let x = &self.tuning.xsk_rings;
        writeln!(
            f,
            "  AF_XDP rings rx {} tx {} fill {} completion {}",
            x.rx, x.tx, x.fill, x.completion
        )?;
        for s in &self.tuning.sysctls {
            writeln!(f, "  {} = {}", s.key, s.value)?;
        }
        for (title, lines) in [("warnings", &self.warnings), ("notes", &self.notes)] {
            if !lines.is_empty() {
                writeln!(f)?;
                writeln!(f, "{title}")?;
                for l in lines {
                    writeln!(f, "  - {l}")?;
                }
            }
        }
        Ok(())
    }
}
