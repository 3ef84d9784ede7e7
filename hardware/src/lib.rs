//! Host description and core plans for Sluice.
//!
//! [`Host::read`] describes a machine from sysfs and procfs: CPUs with their core, package,
//! hyperthread siblings and NUMA node; memory; physical NIC ports with driver, queues, speed,
//! likely native-XDP and zero-copy AF_XDP support, and the IRQ of each queue. [`Host::read_from`]
//! does the same under another root, which is how the fake trees in `hardware/testdata/` are
//! tested.
//!
//! A [`Profile`] (TOML; built-in ones are compiled in) says what the operator wants of a class of
//! box. [`plan()`] turns a host and a profile into a [`CorePlan`]: which CPU serves which NIC queue,
//! which CPUs the control plane and SIP keep, how big the maps and UMEM are within the memory
//! budget, and the tuning to apply (queue counts, rings, IRQ affinity, sysctls). [`tuning`] turns
//! that into commands. The dataplane pins its AF_XDP workers with [`worker_core`].
//!
//! This crate depends on no other crate of Sluice's: it reads files and does arithmetic.

mod cpulist;
mod error;
mod host;
mod plan;
mod profile;
pub mod tuning;
mod xdp;

pub use cpulist::{format_cpulist, parse_cpulist, CpuListError, MAX_CPU};
pub use error::HwError;
pub use host::{queue_irqs, Cpu, Host, Nic, NumaNode};
pub use plan::{
    plan, worker_core, Capacity, CorePlan, HostSummary, IrqAffinity, MemoryPlan, Placement,
    PortPlan, RingSizes, SysctlSetting, Tuning, Worker, XskRings,
};
pub use profile::{builtin_names, Control, Memory, Ports, Profile, Rings, Sysctl, Traffic};
pub use xdp::{likely_support, parse_kernel_version, KernelVersion, XdpSupport};
