//! Profiles: what an operator decides about a class of box (which ports, how many queues, what to
//! keep for the OS, what memory each stream costs, which rings and sysctls), as TOML. The
//! built-in ones are compiled in with `include_str!`, so `--profile NAME` works from any directory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::HwError;

/// The built-in profiles: name and TOML text.
const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../profiles/default.toml")),
    (
        "reference-2s-4port",
        include_str!("../profiles/reference-2s-4port.toml"),
    ),
];

/// The names of the built-in profiles.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(name, _)| *name).collect()
}

/// Which NIC ports carry media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ports {
    /// `"all-physical"`: every physical port the host has (the only keyword).
    Keyword(String),
    /// These ports, by name.
    Named(Vec<String>),
}

/// The control plane's and SIP's cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The NUMA node to take them from.
    pub node: u32,
    /// How many physical cores, taken from the lowest-numbered on that node.
    pub physical_cores: u32,
    /// Keep the cores' hyperthread siblings for the control plane too, so no worker shares a
    /// physical core with it.
    pub include_siblings: bool,
}

/// Memory costs and reserves, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// The OS keeps at least this much.
    pub os_reserve_min_bytes: u64,
    /// ... and at least this share of MemTotal, in percent.
    pub os_reserve_percent: u32,
    /// The control plane's fixed cost (binary, SIP buffers, CDR spool, API).
    pub control_plane_base_bytes: u64,
    /// The control plane's cost per session (dialog, SDP, session state).
    pub session_bytes: u64,
    /// Flow rules per session: RTP and RTCP, each direction.
    pub flows_per_session: u32,
    /// One entry of the `flows` hash map, kernel overhead included.
    pub flow_entry_bytes: u64,
    /// One CPU's value in the per-CPU `stream_stats` array (one slot per flow).
    pub stream_stats_value_bytes: u64,
    /// One UMEM frame of an AF_XDP socket.
    pub umem_frame_bytes: u64,
    /// Sessions to size the maps for; reduced, with a warning, when memory does not allow it.
    pub target_sessions: u64,
}

/// Ring sizes, in descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rings {
    /// NIC receive ring (`ethtool -G rx`).
    pub nic_rx: u32,
    /// NIC transmit ring (`ethtool -G tx`).
    pub nic_tx: u32,
    /// AF_XDP RX ring.
    pub xsk_rx: u32,
    /// AF_XDP TX ring.
    pub xsk_tx: u32,
    /// AF_XDP FILL ring.
    pub xsk_fill: u32,
    /// AF_XDP COMPLETION ring.
    pub xsk_completion: u32,
}

/// The traffic the box is sized for, to state the line-rate capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Packets per second of one stream direction (50 for 20 ms packetisation).
    pub packets_per_second_per_stream: u32,
    /// Bytes one packet occupies on the wire, preamble and inter-frame gap included.
    pub wire_bytes_per_packet: u32,
}

/// One sysctl to set. `{iface}` in the key is expanded once per media port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sysctl {
    /// The dotted key, e.g. `net.ipv4.ip_forward`.
    pub key: String,
    /// The value.
    pub value: String,
    /// Why, printed beside the command.
    pub why: String,
}

/// A profile. See `hardware/profiles/*.toml` for the fields' meaning in context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// One paragraph for the reader.
    pub description: String,
    /// Which ports carry media.
    pub ports: Ports,
    /// The most queues (combined channels) per port; absent: as many as the port has now.
    pub max_queues_per_port: Option<u32>,
    /// Lower a port's queue count until every worker of its NUMA node has a physical core of its
    /// own, rather than doubling workers up on hyperthreads or crossing nodes.
    pub fit_queues_to_cores: bool,
    /// The control plane's cores.
    pub control: Control,
    /// Memory costs and reserves.
    pub memory: Memory,
    /// Ring sizes.
    pub rings: Rings,
    /// Traffic assumptions.
    pub traffic: Traffic,
    /// Sysctls to apply.
    #[serde(default, rename = "sysctl")]
    pub sysctls: Vec<Sysctl>,
}

impl Profile {
    /// The built-in profile `name`.
    pub fn builtin(name: &str) -> Result<Profile, HwError> {
        let (_, text) =
            BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| HwError::UnknownProfile {
                    name: name.to_owned(),
                    known: builtin_names().join(", "),
                })?;
        Profile::from_toml(name, text)
    }

    /// Reads a profile from a TOML file.
    pub fn from_file(path: &Path) -> Result<Profile, HwError> {
        let text = std::fs::read_to_string(path).map_err(|source| HwError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::from_toml(&path.display().to_string(), &text)
    }

    /// Parses and checks a profile; `origin` names it in errors.
    pub fn from_toml(origin: &str, text: &str) -> Result<Profile, HwError> {
        let err = |reason: String| HwError::Profile {
            name: origin.to_owned(),
            reason,
        };
        let profile: Profile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        profile.check().map_err(err)?;
        Ok(profile)
    }

    fn check(&self) -> Result<(), String> {
        if let Ports::Keyword(k) = &self.ports {
            if k != "all-physical" {
                return Err(format!(
                    "ports = {k:?}: expected \"all-physical\" or a list of names"
                ));
            }
        }
        if self.max_queues_per_port == Some(0) {
            return Err("max_queues_per_port must be at least 1".into());
        }
        if self.control.physical_cores == 0 {
            return Err("control.physical_cores must be at least 1".into());
        }
        let m = &self.memory;
        if m.os_reserve_percent > 90 {
            return Err("memory.os_reserve_percent above 90 leaves nothing to plan".into());
        }
        if m.flows_per_session == 0 || m.flow_entry_bytes == 0 || m.umem_frame_bytes == 0 {
            return Err(
                "memory: flows_per_session, flow_entry_bytes and umem_frame_bytes must be non-zero"
                    .into(),
            );
        }
        let r = &self.rings;
        // AF_XDP rings must be powers of two (the kernel refuses others); NIC rings need not be,
        // but every driver we know rounds or refuses, so ask for the same.
        for (name, size) in [
            ("nic_rx", r.nic_rx),
            ("nic_tx", r.nic_tx),
            ("xsk_rx", r.xsk_rx),
            ("xsk_tx", r.xsk_tx),
            ("xsk_fill", r.xsk_fill),
            ("xsk_completion", r.xsk_completion),
        ] {
            if !size.is_power_of_two() {
                return Err(format!("rings.{name} = {size}: must be a power of two"));
            }
        }
        let t = &self.traffic;
        if t.packets_per_second_per_stream == 0 || t.wire_bytes_per_packet == 0 {
            return Err("traffic: rates must be non-zero".into());
        }
        for s in &self.sysctls {
            if s.key.is_empty() || s.key.contains(['/', ' ', '=']) || s.value.contains(['\n', '\0'])
            {
                return Err(format!("sysctl {:?} = {:?}: not a sysctl", s.key, s.value));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for name in builtin_names() {
            let p = Profile::builtin(name).unwrap();
            assert_eq!(p.name, name);
        }
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let e = Profile::builtin("nope").unwrap_err().to_string();
        assert!(e.contains("reference-2s-4port"), "{e}");
    }

    #[test]
    fn bad_profiles_are_refused_with_a_reason() {
        let text = include_str!("../profiles/reference-2s-4port.toml");
        let bad = text.replace("xsk_fill = 2048", "xsk_fill = 2000");
        let e = Profile::from_toml("x", &bad).unwrap_err().to_string();
        assert!(e.contains("xsk_fill") && e.contains("power of two"), "{e}");
        let bad = text.replace("ports = \"all-physical\"", "ports = \"most\"");
        assert!(Profile::from_toml("x", &bad).is_err());
        assert!(Profile::from_toml("x", "name = 3").is_err());
    }
}
