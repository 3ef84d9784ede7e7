//! The host as sysfs and procfs describe it: CPUs with their core, package, siblings and NUMA
//! node; memory; physical NIC ports with driver, queues, speed and likely XDP support; and which
//! IRQ serves which NIC queue.
//!
//! Everything is read relative to a root directory so that tests run on fake trees: with root
//! `DIR`, `DIR/sys/...` and `DIR/proc/...` are read. The fake trees under `hardware/testdata/`
//! mirror real sysfs, symbolic links included (`class/net/<if>` and `device/driver` are links, as
//! on a real host), so the same code path reads both.
//!
//! What is required: `sys/devices/system/cpu/online`, each online CPU's `topology/core_id` and
//! `topology/physical_package_id`, and `MemTotal` in `proc/meminfo`. Without them no plan makes
//! sense, so they are errors naming the file. Everything else (NUMA nodes, siblings, NIC details,
//! interrupts) has a stated fallback, because containers, VMs and old kernels omit parts of it.
//! Content that is present but malformed is always an error: guessing around a corrupt file would
//! produce a plan that silently pins to the wrong cores.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cpulist::parse_cpulist;
use crate::error::HwError;
use crate::xdp::{likely_support, parse_kernel_version, XdpSupport};

/// One online logical CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// The CPU number (`cpuN`).
    pub id: usize,
    /// `topology/core_id`: unique only within a package.
    pub core_id: u32,
    /// `topology/physical_package_id`: the socket.
    pub package: u32,
    /// The NUMA node whose `cpulist` holds this CPU (0 when the kernel has no NUMA nodes).
    pub node: u32,
    /// `topology/thread_siblings_list`: the hyperthreads of this physical core, itself included.
    pub siblings: Vec<usize>,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NumaNode {
    /// The node number (`nodeN`).
    pub id: u32,
    /// Its online CPUs.
    pub cpus: Vec<usize>,
}

/// One physical NIC port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// The interface name.
    pub name: String,
    /// The driver bound to the device (`device/driver` link's target name).
    pub driver: Option<String>,
    /// `device/numa_node` (or its parent bus device's); `None` when the kernel says -1 (unknown),
    /// as every non-NUMA machine and most VMs do.
    pub numa_node: Option<u32>,
    /// Receive queues (`queues/rx-*`).
    pub rx_queues: u32,
    /// Transmit queues (`queues/tx-*`).
    pub tx_queues: u32,
    /// Link speed in Mb/s; `None` when the link is down (the kernel reports -1 or refuses the read).
    pub speed_mbps: Option<u32>,
    /// The MTU.
    pub mtu: Option<u32>,
    /// The MAC address.
    pub address: Option<String>,
    /// Likely native XDP and zero-copy AF_XDP support (a heuristic).
    pub xdp: XdpSupport,
    /// IRQ numbers serving each queue, from `/proc/interrupts` (empty when the driver's IRQ names
    /// do not say which queue they serve).
    pub queue_irqs: BTreeMap<u32, Vec<u32>>,
    /// All MSI/MSI-X vectors of the device (`device/msi_irqs/`), for the reader when
    /// `queue_irqs` is empty.
    pub msi_irqs: Vec<u32>,
}

/// A host: what the planner needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// The root the description was read from (`/` on a real host).
    pub root: PathBuf,
    /// Online CPUs, by number.
    pub cpus: Vec<Cpu>,
    /// Possible CPUs (`cpu/possible`): per-CPU BPF maps allocate a value for each of these, online
    /// or not, so memory sizing uses this count.
    pub possible_cpus: usize,
    /// NUMA nodes with their online CPUs.
    pub nodes: Vec<NumaNode>,
    /// `MemTotal` from `proc/meminfo`, in bytes.
    pub mem_total_bytes: u64,
    /// `proc/sys/kernel/osrelease`, when readable.
    pub kernel_release: Option<String>,
    /// Physical NIC ports, by name.
    pub nics: Vec<Nic>,
    /// Interfaces skipped as virtual (`lo`, bridges, tunnels, ifb...), by name.
    pub skipped_ifaces: Vec<String>,
    /// Fallbacks taken while reading, for the reader.
    pub notes: Vec<String>,
}

/// Reads files relative to a root, and turns absence and malformation into [`HwError`]s that
/// name the full path.
struct Tree {
    root: PathBuf,
    /// The root with links resolved, to tell where `class/net/<if>` really points.
    canonical_root: PathBuf,
}

impl Tree {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The file's content, `None` when it does not exist.
    fn read_opt(&self, rel: &str) -> Result<Option<String>, HwError> {
        let path = self.path(rel);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HwError::Io { path, source }),
        }
    }

    /// The file's content; absence is an error.
    fn read(&self, rel: &str) -> Result<String, HwError> {
        self.read_opt(rel)?.ok_or_else(|| HwError::Missing {
            path: self.path(rel),
        })
    }

    /// The file's content, `None` when absent *or unreadable*: sysfs answers EINVAL to reads of
    /// `speed` on a down link, and such files are optional anyway.
    fn read_lenient(&self, rel: &str) -> Option<String> {
        std::fs::read(self.path(rel))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn malformed(&self, rel: &str, reason: impl Into<String>) -> HwError {
        HwError::Malformed {
            path: self.path(rel),
            reason: reason.into(),
        }
    }

    fn cpulist(&self, rel: &str) -> Result<Vec<usize>, HwError> {
        let text = self.read(rel)?;
        parse_cpulist(&text).map_err(|e| self.malformed(rel, e.to_string()))
    }

    fn number<T: std::str::FromStr>(&self, rel: &str, text: &str) -> Result<T, HwError> {
        text.trim()
            .parse()
            .map_err(|_| self.malformed(rel, format!("not a number: {:?}", text.trim())))
    }

    /// Names of the entries of a directory, sorted; empty when it does not exist.
    fn list(&self, rel: &str) -> Result<Vec<String>, HwError> {
        let path = self.path(rel);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(HwError::Io { path, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| HwError::Io {
                path: path.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

/// Sorts names like `cpu10` after `cpu9`.
fn numeric_suffix(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.parse().ok()
}

impl Host {
    /// Describes this machine (reads `/sys` and `/proc`).
    pub fn read() -> Result<Host, HwError> {
        Host::read_from(Path::new("/"))
    }

    /// Describes the host whose sysfs and procfs are at `root/sys` and `root/proc`.
    pub fn read_from(root: &Path) -> Result<Host, HwError> {
        let canonical_root = std::fs::canonicalize(root).map_err(|source| HwError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let tree = Tree {
            root: root.to_path_buf(),
            canonical_root,
        };
        let mut notes = Vec::new();

        const CPU: &str = "sys/devices/system/cpu";
        let online = tree.cpulist(&format!("{CPU}/online"))?;
        if online.is_empty() {
            return Err(tree.malformed(&format!("{CPU}/online"), "no CPU is online"));
        }
        let possible = match tree.read_opt(&format!("{CPU}/possible"))? {
            Some(_) => tree.cpulist(&format!("{CPU}/possible"))?.len(),
            None => {
                notes.push(format!(
                    "{CPU}/possible missing: assuming the online CPUs are all the possible ones"
                ));
                online.len()
            }
        };

        // NUMA nodes: absent on kernels built without NUMA; then everything is node 0.
        let mut nodes = Vec::new();
        for name in tree.list("sys/devices/system/node")? {
            let Some(id) = numeric_suffix(&name, "node") else {
                continue;
            };
            let mut cpus = tree.cpulist(&format!("sys/devices/system/node/{name}/cpulist"))?;
            cpus.retain(|c| online.contains(c));
            nodes.push(NumaNode { id, cpus });
        }
        nodes.sort_by_key(|n| n.id);
        if nodes.is_empty() {
            notes.push("no NUMA nodes in sysfs: treating the host as one node, node 0".into());
            nodes.push(NumaNode {
                id: 0,
                cpus: online.clone(),
            });
        }

        let mut cpus = Vec::with_capacity(online.len());
        for &id in &online {
            let topo = format!("{CPU}/cpu{id}/topology");
            let core_rel = format!("{topo}/core_id");
            let core_id = tree.number(&core_rel, &tree.read(&core_rel)?)?;
            let pkg_rel = format!("{topo}/physical_package_id");
            // Some VMs report -1 for the package; that is "one package" for our purposes.
            let package: i64 = tree.number(&pkg_rel, &tree.read(&pkg_rel)?)?;
            let package = u32::try_from(package.max(0))
                .map_err(|_| tree.malformed(&pkg_rel, format!("out of range: {package}")))?;
            let sib_rel = format!("{topo}/thread_siblings_list");
            let siblings = match tree.read_opt(&sib_rel)? {
                Some(_) => tree.cpulist(&sib_rel)?,
                None => {
                    notes.push(format!("{sib_rel} missing: cpu{id} has no known siblings"));
                    vec![id]
                }
            };
            let node = match nodes.iter().find(|n| n.cpus.contains(&id)) {
                Some(n) => n.id,
                None => {
                    notes.push(format!("cpu{id} is in no node's cpulist: assuming node 0"));
                    0
                }
            };
            cpus.push(Cpu {
                id,
                core_id,
                package,
                node,
                siblings,
            });
        }

        let mem_total_bytes = read_mem_total(&tree)?;
        let kernel_release = tree
            .read_opt("proc/sys/kernel/osrelease")?
            .map(|s| s.trim().to_owned());
        let kernel = kernel_release.as_deref().and_then(parse_kernel_version);
        let interrupts = tree.read_opt("proc/interrupts")?.unwrap_or_default();

        let mut nics = Vec::new();
        let mut skipped_ifaces = Vec::new();
        for name in tree.list("sys/class/net")? {
            match read_nic(&tree, &name, kernel, &interrupts)? {
                Some(nic) => nics.push(nic),
                None => skipped_ifaces.push(name),
            }
        }

        Ok(Host {
            root: root.to_path_buf(),
            cpus,
            possible_cpus: possible,
            nodes,
            mem_total_bytes,
            kernel_release,
            nics,
            skipped_ifaces,
            notes,
        })
    }

    /// The CPU with number `id`.
    pub fn cpu(&self, id: usize) -> Option<&Cpu> {
        self.cpus.iter().find(|c| c.id == id)
    }

    /// The NIC port named `name`.
    pub fn nic(&self, name: &str) -> Option<&Nic> {
        self.nics.iter().find(|n| n.name == name)
    }

    /// Physical cores as lists of their online hyperthreads, ordered by their first CPU. Two CPUs
    /// are one physical core when they share package and `core_id` (the `core_id` alone repeats
    /// across sockets).
    pub fn physical_cores(&self) -> Vec<Vec<usize>> {
        let mut cores: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
        for cpu in &self.cpus {
            cores
                .entry((cpu.package, cpu.core_id))
                .or_default()
                .push(cpu.id);
        }
        let mut cores: Vec<Vec<usize>> = cores.into_values().collect();
        cores.sort_by_key(|c| c[0]);
        cores
    }
}

fn read_mem_total(tree: &Tree) -> Result<u64, HwError> {
    const REL: &str = "proc/meminfo";
    let text = tree.read(REL)?;
    let line = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .ok_or_else(|| tree.malformed(REL, "no MemTotal line"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| tree.malformed(REL, format!("MemTotal not a number: {line:?}")))?;
    match fields.next() {
        Some("kB") => value
            .checked_mul(1024)
            .ok_or_else(|| tree.malformed(REL, format!("MemTotal out of range: {line:?}"))),
        other => Err(tree.malformed(
            REL,
            format!("MemTotal unit {other:?}, expected \"kB\": {line:?}"),
        )),
    }
}

/// Reads one interface; `None` when it is virtual.
fn read_nic(
    tree: &Tree,
    name: &str,
    kernel: Option<crate::xdp::KernelVersion>,
    interrupts: &str,
) -> Result<Option<Nic>, HwError> {
    let base = format!("sys/class/net/{name}");
    // A physical port has a `device` link; lo, bridges, bonds, veth, tunnels and ifb live under
    // /sys/devices/virtual and have none. Checking both also catches odd virtual drivers that
    // grow a device link.
    let canonical = std::fs::canonicalize(tree.path(&base)).ok();
    let under_virtual = canonical.as_ref().is_some_and(|p| {
        let rel = p.strip_prefix(&tree.canonical_root).unwrap_or(p);
        rel.starts_with("sys/devices/virtual")
    });
    let device = tree.path(&format!("{base}/device"));
    if name == "lo" || under_virtual || std::fs::symlink_metadata(&device).is_err() {
        return Ok(None);
    }
    let device_dir = std::fs::canonicalize(&device).map_err(|source| HwError::Io {
        path: device.clone(),
        source,
    })?;

    // The driver: the last component of the `device/driver` link.
    let driver = std::fs::read_link(device.join("driver"))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));

    // NUMA node: on the device, or for a virtio NIC on its parent PCI function.
    let mut numa_node = None;
    for dir in [Some(device_dir.as_path()), device_dir.parent()]
        .into_iter()
        .flatten()
    {
        let file = dir.join("numa_node");
        if let Ok(text) = std::fs::read_to_string(&file) {
            let n: i64 = text.trim().parse().map_err(|_| HwError::Malformed {
                path: file.clone(),
                reason: format!("not a number: {:?}", text.trim()),
            })?;
            numa_node = u32::try_from(n).ok(); // -1: unknown
            break;
        }
    }

    let queues = tree.list(&format!("{base}/queues"))?;
    let count = |prefix: &str| {
        queues
            .iter()
            .filter(|q| numeric_suffix(q, prefix).is_some())
            .count() as u32
    };
    let (rx_queues, tx_queues) = (count("rx-"), count("tx-"));

    let speed_rel = format!("{base}/speed");
    let speed_mbps = match tree.read_lenient(&speed_rel) {
        Some(text) => {
            let v: i64 = tree.number(&speed_rel, &text)?;
            u32::try_from(v).ok().filter(|&v| v > 0)
        }
        None => None,
    };
    let mtu_rel = format!("{base}/mtu");
    let mtu = match tree.read_lenient(&mtu_rel) {
        Some(text) => Some(tree.number(&mtu_rel, &text)?),
        None => None,
    };
    let address = tree
        .read_lenient(&format!("{base}/address"))
        .map(|s| s.trim().to_owned());

    let mut msi_irqs = Vec::new();
    for dir in [Some(device_dir.as_path()), device_dir.parent()]
        .into_iter()
        .flatten()
    {
        if let Ok(entries) = std::fs::read_dir(dir.join("msi_irqs")) {
            msi_irqs = entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            msi_irqs.sort_unstable();
            break;
        }
    }
    let device_name = device_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let queue_irqs = queue_irqs(interrupts, name, &device_name);

    Ok(Some(Nic {
        name: name.to_owned(),
        xdp: likely_support(driver.as_deref(), kernel),
        driver,
        numa_node,
        rx_queues,
        tx_queues,
        speed_mbps,
        mtu,
        address,
        queue_irqs,
        msi_irqs,
    }))
}

/// Which IRQs serve which queue of `iface`, from `/proc/interrupts`. Drivers name their vectors
/// differently, and only some names say the queue:
///
/// - igb, ixgbe, igc: `eth0-TxRx-0` (or `eth0-rx-0` / `eth0-tx-0` when not combined);
/// - i40e, ice: `i40e-eth0-TxRx-0`, `ice-eth0-TxRx-0`;
/// - virtio_net: `virtio2-input.0` / `virtio2-output.0`, named after the virtio device;
/// - mlx5: `mlx5_comp0@pci:0000:03:00.0`, named after the PCI function.
///
/// Names that match none of these are left out; the plan then says to set those by hand.
pub fn queue_irqs(interrupts: &str, iface: &str, device: &str) -> BTreeMap<u32, Vec<u32>> {
    let mut map: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for line in interrupts.lines() {
        let Some((irq, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = irq.trim().parse::<u32>() else {
            continue; // NMI, LOC and the other per-CPU rows
        };
        for token in rest.split_whitespace() {
            let token = token.trim_end_matches(',');
            if let Some(queue) = queue_of(token, iface, device) {
                let irqs = map.entry(queue).or_default();
                if !irqs.contains(&irq) {
                    irqs.push(irq);
                }
            }
        }
    }
    map
}

fn queue_of(token: &str, iface: &str, device: &str) -> Option<u32> {
    for sep in ["-TxRx-", "-rx-", "-tx-"] {
        if let Some((prefix, q)) = token.rsplit_once(sep) {
            if prefix == iface || prefix.ends_with(&format!("-{iface}")) {
                return q.parse().ok();
            }
        }
    }
    if !device.is_empty() {
        for sep in ["-input.", "-output."] {
            if let Some((prefix, q)) = token.rsplit_once(sep) {
                if prefix == device {
                    return q.parse().ok();
                }
            }
        }
        if let Some(rest) = token.strip_prefix("mlx5_comp") {
            if let Some((q, pci)) = rest.split_once("@pci:") {
                if pci == device {
                    return q.parse().ok();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irq_names() {
        let text = "\
           CPU0       CPU1
 38:          0       1928 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:       1371          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 40:          0          0 IR-PCI-MSI 1048576-edge      eth0
 41:          1          0 IR-PCI-MSI 1048577-edge      eth0-TxRx-0
 42:          1          0 IR-PCI-MSI 1048578-edge      eth0-TxRx-1
 43:          1          0 IR-PCI-MSI 1048579-edge      i40e-eth10-TxRx-1
 44:          1          0 IR-PCI-MSI 1048580-edge      mlx5_comp3@pci:0000:03:00.0
NMI:          0          0   Non-maskable interrupts
";
        let eth0 = queue_irqs(text, "eth0", "0000:01:00.0");
        assert_eq!(eth0.get(&0), Some(&vec![41]));
        assert_eq!(eth0.get(&1), Some(&vec![42]));
        assert_eq!(eth0.len(), 2);
        let virtio = queue_irqs(text, "ens3", "virtio2");
        assert_eq!(virtio.get(&0), Some(&vec![38, 39]));
        assert_eq!(virtio.len(), 1);
        assert_eq!(queue_irqs(text, "eth10", "x").get(&1), Some(&vec![43]));
        assert_eq!(
            queue_irqs(text, "p1", "0000:03:00.0").get(&3),
            Some(&vec![44])
        );
        assert!(queue_irqs("garbage\n: :\n99999999999: x-TxRx-y", "x", "").is_empty());
    }
}
