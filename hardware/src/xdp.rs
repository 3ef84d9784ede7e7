//! Whether a NIC *likely* supports native XDP and zero-copy AF_XDP, from its driver name and the
//! running kernel's version.
//!
//! This is a heuristic and says so in its output. sysfs does not expose XDP capabilities; the
//! authoritative source is the netdev netlink family's `xdp-features` attribute (kernel 6.3 and
//! later, e.g. `ynl --family netdev --dump dev-get`), or simply attaching and seeing whether the
//! kernel refuses. The versions below are our reading of the mainline kernel's history (the
//! release in which the driver's support was merged); distribution kernels backport, and a
//! driver's support can depend on the chip or firmware (e.g. virtio_net needs a capable host).

use serde::Serialize;

/// A kernel version, major and minor.
pub type KernelVersion = (u32, u32);

/// What one driver is known for: the kernel release that gave it native XDP, and the one that gave
/// it zero-copy AF_XDP (`None`: not in mainline, as far as we know).
struct DriverXdp {
    driver: &'static str,
    native_since: KernelVersion,
    zero_copy_since: Option<KernelVersion>,
}

const fn d(driver: &'static str, native: KernelVersion, zc: Option<KernelVersion>) -> DriverXdp {
    DriverXdp {
        driver,
        native_since: native,
        zero_copy_since: zc,
    }
}

/// Drivers known for native XDP, with the release of each capability (see the module doc).
const DRIVERS: &[DriverXdp] = &[
    d("ixgbe", (4, 12), Some((4, 20))),
    d("i40e", (4, 13), Some((4, 19))),
    d("ice", (5, 5), Some((5, 5))),
    // igb (82575/82576/82580/I350/I210): native XDP arrived in 5.10; zero-copy AF_XDP in 6.14.
    d("igb", (5, 10), Some((6, 14))),
    d("igc", (5, 13), Some((5, 14))),
    d("mlx4_en", (4, 8), None),
    d("mlx4_core", (4, 8), None),
    d("mlx5_core", (4, 9), Some((5, 3))),
    d("bnxt_en", (4, 11), None),
    d("nfp", (4, 10), Some((5, 18))),
    d("qede", (4, 10), None),
    d("sfc", (5, 5), None),
    d("ena", (5, 5), None),
    d("dpaa2-eth", (5, 0), Some((6, 2))),
    d("stmmac", (5, 13), Some((5, 13))),
    d("hv_netvsc", (5, 6), None),
    d("gve", (6, 4), Some((6, 4))),
    // virtio_net: zero-copy AF_XDP arrived in 6.11 and also needs the hypervisor's device to
    // support it; on most clouds it falls back to copy mode.
    d("virtio_net", (4, 10), Some((6, 11))),
    d("veth", (4, 19), None),
    d("tun", (4, 14), None),
];

/// The likely XDP capabilities of one port. Heuristic: see the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XdpSupport {
    /// Native (driver-mode) XDP is likely to attach. When false, only generic (skb) XDP is.
    pub native_likely: bool,
    /// An AF_XDP socket is likely to bind with `XDP_ZEROCOPY`; otherwise it runs in copy mode.
    pub zero_copy_likely: bool,
    /// Why we think so, for the reader: the driver and the versions compared.
    pub basis: String,
}

/// Parses "6.1.0-18-amd64" or "6.18.44-fc" into (6, 1) / (6, 18).
pub fn parse_kernel_version(release: &str) -> Option<KernelVersion> {
    let mut parts = release.trim().split(['.', '-', '+', '_']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The likely XDP support of a port whose driver is `driver`, on a kernel `kernel` (unknown: we
/// assume a recent one, and say so).
pub fn likely_support(driver: Option<&str>, kernel: Option<KernelVersion>) -> XdpSupport {
    let Some(driver) = driver else {
        return XdpSupport {
            native_likely: false,
            zero_copy_likely: false,
            basis: "driver unknown: generic XDP only".into(),
        };
    };
    let Some(entry) = DRIVERS.iter().find(|e| e.driver == driver) else {
        return XdpSupport {
            native_likely: false,
            zero_copy_likely: false,
            basis: format!("{driver} is not in our table of native XDP drivers: generic XDP only"),
        };
    };
    let at_least = |since: KernelVersion| kernel.is_none_or(|k| k >= since);
    let v = |(a, b): KernelVersion| format!("{a}.{b}");
    let native = at_least(entry.native_since);
    let zero_copy = native && entry.zero_copy_since.is_some_and(at_least);
    let kernel_text = kernel.map_or("kernel version unknown, assumed recent".into(), |k| {
        format!("kernel {}", v(k))
    });
    let zc_text = match entry.zero_copy_since {
        Some(since) => format!("zero-copy AF_XDP since {}", v(since)),
        None => "no zero-copy AF_XDP in mainline".into(),
    };
    XdpSupport {
        native_likely: native,
        zero_copy_likely: zero_copy,
        basis: format!(
            "{driver}: native XDP since {}, {zc_text}; {kernel_text}",
            v(entry.native_since)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v595\n"), Some((6, 18)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn igb_on_debian_12_is_native_but_copy_mode() {
        let s = likely_support(Some("igb"), Some((6, 1)));
        assert!(s.native_likely);
        assert!(!s.zero_copy_likely);
        let s = likely_support(Some("igb"), Some((6, 14)));
        assert!(s.zero_copy_likely);
        let s = likely_support(Some("igb"), Some((5, 4)));
        assert!(!s.native_likely && !s.zero_copy_likely);
    }

    #[test]
    fn unknown_driver_is_generic_only() {
        let s = likely_support(Some("e1000"), Some((6, 18)));
        assert!(!s.native_likely && !s.zero_copy_likely);
        assert!(s.basis.contains("e1000"));
        assert!(!likely_support(None, None).native_likely);
        assert!(likely_support(Some("veth"), None).native_likely);
    }
}
