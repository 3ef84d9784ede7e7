//! Network-namespace test topologies.
//!
//! End-to-end tests, the benchmark tool and the demo all need the same thing:
//! a few isolated network stacks wired together with veth pairs, so that the
//! XDP relay can be exercised without touching the host's interfaces. This
//! module builds those with the `ip` and `ethtool` binaries (iproute2 is far
//! less code to trust than a hand-rolled netlink client) and tears them down
//! with RAII guards.
//!
//! Everything here needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN). Use
//! [`can_create_netns`] to decide whether a test can run.
//!
//! ```no_run
//! use sluice_dataplane::netns::TwoArm;
//!
//! let topo = TwoArm::build("demo")?;
//! let r0 = topo.relay().ifindex(TwoArm::RELAY_CALLER_IFACE)?;
//! let out = topo.caller().exec(&["ping", "-c1", "-W2", "10.77.2.2"])?;
//! # let _ = (r0, out);
//! # Ok::<(), sluice_dataplane::netns::NetnsError>(())
//! ```

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

/// Where `ip netns add` bind-mounts named namespaces.
const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Longest interface name the kernel accepts (IFNAMSIZ minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// Distinguishes namespaces created by concurrent tests in one process.
static NS_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Everything that can go wrong while building or using a topology.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A helper binary could not be started at all (missing, not executable).
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The full command line.
        cmd: String,
        /// Why the process could not be started.
        #[source]
        source: io::Error,
    },
    /// A helper binary ran but exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The full command line (it names the namespace).
        cmd: String,
        /// The exit status.
        status: ExitStatus,
        /// Trimmed standard error of the command.
        stderr: String,
    },
    /// The namespace handle under `/var/run/netns` could not be opened.
    #[error("cannot open namespace {ns} ({path}): {source}")]
    Open {
        /// Namespace name.
        ns: String,
        /// Path that was opened.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `setns(2)` into the namespace failed.
    #[error("setns into namespace {ns} failed: {source}")]
    Setns {
        /// Namespace name.
        ns: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A worker thread for the namespace could not be created.
    #[error("cannot start a thread for namespace {ns}: {source}")]
    Thread {
        /// Namespace name.
        ns: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The closure run inside the namespace panicked.
    #[error("closure running in namespace {ns} panicked: {message}")]
    Panicked {
        /// Namespace name.
        ns: String,
        /// The panic payload, if it was a string.
        message: String,
    },
    /// Writing a sysctl inside the namespace failed.
    #[error("sysctl {key} in namespace {ns}: {source}")]
    Sysctl {
        /// Namespace name.
        ns: String,
        /// The dotted sysctl key.
        key: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Querying an interface inside the namespace failed.
    #[error("interface {iface} in namespace {ns}: {source}")]
    Interface {
        /// Namespace name.
        ns: String,
        /// Interface name.
        iface: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A namespace, interface or sysctl name was rejected before use.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// Renders a command line for error messages and logs.
fn display_cmd(program: &str, args: &[&str]) -> String {
    let mut s = String::from(program);
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs a host command, returning its stdout or a typed error carrying stderr.
fn run_cmd(program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let cmd = display_cmd(program, args);
    tracing::debug!(%cmd, "netns: running");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Namespace names become path components under /var/run/netns and
/// arguments to `ip`, so keep them to a boring character set.
fn validate_ns_hint(hint: &str) -> Result<(), NetnsError> {
    let bad = |reason| {
        Err(NetnsError::InvalidName {
            name: hint.to_string(),
            reason,
        })
    };
    if hint.is_empty() {
        return bad("namespace hint is empty");
    }
    if hint.len() > 200 {
        return bad("namespace hint is too long");
    }
    if !hint
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad("namespace hint may only contain [A-Za-z0-9_-]");
    }
    Ok(())
}

/// The kernel silently refuses (EINVAL) names over IFNAMSIZ; catch it early
/// with a message that says which name was wrong.
fn validate_ifname(name: &str) -> Result<(), NetnsError> {
    let bad = |reason| {
        Err(NetnsError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("interface name is empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad("interface name longer than 15 bytes");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return bad("interface name contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

/// Maps a dotted key to /proc/sys, refusing anything that could escape it.
fn sysctl_path(key: &str) -> Result<PathBuf, NetnsError> {
    if key.is_empty() || key.contains("..") || key.contains('/') || key.starts_with('.') {
        return Err(NetnsError::InvalidName {
            name: key.to_string(),
            reason: "sysctl key must be dotted, e.g. net.ipv4.ip_forward",
        });
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

/// Extracts a readable message from a thread's panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Switches the *current thread* into the namespace behind `file`.
fn enter(ns: &str, file: &File) -> Result<(), NetnsError> {
    // SAFETY: setns only reads the fd, which `file` keeps open for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Setns {
            ns: ns.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A named network namespace that is deleted when the guard is dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a fresh namespace named `<hint>-<pid>-<n>` and brings `lo` up.
    ///
    /// The pid and a process-wide counter make names unique across parallel
    /// tests and concurrent test binaries. `hint` may contain only
    /// `[A-Za-z0-9_-]`.
    pub fn create(name_hint: &str) -> Result<NetNs, NetnsError> {
        validate_ns_hint(name_hint)?;
        let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{name_hint}-{}-{n}", std::process::id());
        run_cmd("ip", &["netns", "add", &name])?;
        // Guard exists from here on so a failure below still deletes it.
        let ns = NetNs { name };
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        tracing::debug!(ns = %ns.name, "netns: created");
        Ok(ns)
    }

    /// The namespace name as understood by `ip netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount, usable with `setns(2)`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    fn open(&self) -> Result<File, NetnsError> {
        let path = self.path();
        File::open(&path).map_err(|source| NetnsError::Open {
            ns: self.name.clone(),
            path,
            source,
        })
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and waits
    /// for it.
    ///
    /// `setns` is per-thread, so the caller's thread never changes namespace;
    /// sockets created inside `f` belong to this namespace and keep working
    /// after `f` returns. A panic inside `f` is reported as
    /// [`NetnsError::Panicked`].
    pub fn run<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = self.open()?;
        let ns = self.name.as_str();
        thread::scope(|s| {
            let handle = thread::Builder::new()
                .name(format!("netns-{ns}"))
                .spawn_scoped(s, move || {
                    enter(ns, &file)?;
                    drop(file);
                    Ok(f())
                })
                .map_err(|source| NetnsError::Thread {
                    ns: ns.to_string(),
                    source,
                })?;
            match handle.join() {
                Ok(res) => res,
                Err(payload) => Err(NetnsError::Panicked {
                    ns: ns.to_string(),
                    message: panic_message(payload.as_ref()),
                }),
            }
        })
    }

    /// Like [`run`](Self::run) but returns as soon as the thread has entered
    /// the namespace, for long-running work such as a receiver that must run
    /// while the test sends.
    ///
    /// Entering the namespace is confirmed before returning, so a returned
    /// handle always runs `f` inside it. The namespace stays alive while the
    /// thread runs even if this guard is dropped (only its name disappears).
    pub fn spawn<F, R>(&self, f: F) -> Result<NsJoinHandle<R>, NetnsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = self.open()?;
        let ns = self.name.clone();
        let (tx, rx) = mpsc::sync_channel::<Result<(), NetnsError>>(1);
        let handle = thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn(move || {
                let entered = enter(&ns, &file);
                drop(file);
                let ok = entered.is_ok();
                // The receiver only vanishes if spawn() itself went away;
                // nothing useful to do then.
                let _ = tx.send(entered);
                ok.then(f)
            })
            .map_err(|source| NetnsError::Thread {
                ns: self.name.clone(),
                source,
            })?;
        let handle = NsJoinHandle {
            ns: self.name.clone(),
            handle,
        };
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            // Sender dropped without a message: the thread died before
            // reporting; join() turns that into a typed error.
            Err(_) => {
                let ns = self.name.clone();
                match handle.join() {
                    Err(e) => Err(e),
                    Ok(_) => Err(NetnsError::Panicked {
                        ns,
                        message: "thread exited before entering the namespace".into(),
                    }),
                }
            }
        }
    }

    /// Runs a command inside the namespace (`ip netns exec <name> ...`) and
    /// returns its stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut full: Vec<&str> = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// Runs `ip -n <name> <args>`; cheaper than `exec` because iproute2
    /// switches namespace itself without remounting /sys.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut full: Vec<&str> = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// Sets a sysctl such as `net.ipv4.ip_forward` inside the namespace.
    ///
    /// Written through /proc/sys from a thread inside the namespace, because
    /// /proc/sys/net resolves against the writing thread's namespace and this
    /// avoids depending on procps' `sysctl` binary.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let path = sysctl_path(key)?;
        let value = value.to_string();
        self.run(move || std::fs::write(&path, value.as_bytes()))?
            .map_err(|source| NetnsError::Sysctl {
                ns: self.name.clone(),
                key: key.to_string(),
                source,
            })
    }

    /// Reads a sysctl inside the namespace (trimmed).
    pub fn sysctl_get(&self, key: &str) -> Result<String, NetnsError> {
        let path = sysctl_path(key)?;
        self.run(move || std::fs::read_to_string(&path))?
            .map(|s| s.trim().to_string())
            .map_err(|source| NetnsError::Sysctl {
                ns: self.name.clone(),
                key: key.to_string(),
                source,
            })
    }

    /// Adds an IPv4 address in CIDR notation (e.g. `10.77.1.1/24`).
    pub fn addr_add(&self, iface: &str, cidr: &str) -> Result<(), NetnsError> {
        validate_ifname(iface)?;
        self.ip(&["addr", "add", cidr, "dev", iface]).map(drop)
    }

    /// Sets the MTU and brings the interface up.
    pub fn link_up(&self, iface: &str, mtu: u32) -> Result<(), NetnsError> {
        validate_ifname(iface)?;
        let mtu = mtu.to_string();
        self.ip(&["link", "set", "dev", iface, "mtu", &mtu, "up"])
            .map(drop)
    }

    /// Replaces the default route with one via `gateway`.
    pub fn default_route(&self, gateway: Ipv4Addr) -> Result<(), NetnsError> {
        let gw = gateway.to_string();
        self.ip(&["route", "replace", "default", "via", &gw])
            .map(drop)
    }

    /// Adds (or replaces) a route to `dst` (CIDR) via `gateway`.
    pub fn route(&self, dst: &str, gateway: Ipv4Addr) -> Result<(), NetnsError> {
        let gw = gateway.to_string();
        self.ip(&["route", "replace", dst, "via", &gw]).map(drop)
    }

    /// Turns TX checksum offload off (`ethtool -K <iface> tx off`).
    ///
    /// A veth sender with TX checksumming hands CHECKSUM_PARTIAL packets to
    /// the peer; an XDP program rewriting addresses/ports then leaves a
    /// checksum that nobody completes, and receivers drop the packet.
    pub fn tx_checksum_off(&self, iface: &str) -> Result<(), NetnsError> {
        validate_ifname(iface)?;
        self.exec(&["ethtool", "-K", iface, "tx", "off"]).map(drop)
    }

    /// Creates a bridge, with forwarding delay 0 so ports forward at once,
    /// and brings it up.
    pub fn add_bridge(&self, name: &str) -> Result<(), NetnsError> {
        validate_ifname(name)?;
        self.ip(&[
            "link",
            "add",
            "name",
            name,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        self.ip(&["link", "set", "dev", name, "up"]).map(drop)
    }

    /// Enslaves `iface` to `bridge` and brings it up.
    pub fn enslave(&self, iface: &str, bridge: &str) -> Result<(), NetnsError> {
        validate_ifname(iface)?;
        validate_ifname(bridge)?;
        self.ip(&["link", "set", "dev", iface, "master", bridge, "up"])
            .map(drop)
    }

    /// Interface index of `iface` as seen inside this namespace.
    pub fn ifindex(&self, iface: &str) -> Result<u32, NetnsError> {
        validate_ifname(iface)?;
        let name = iface.to_string();
        self.run(move || {
            iface_ioctl(&name, libc::SIOCGIFINDEX)
                // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
                .map(|req| unsafe { req.ifr_ifru.ifru_ifindex } as u32)
        })?
        .map_err(|source| self.iface_err(iface, source))
    }

    /// MAC address of `iface` as seen inside this namespace.
    pub fn mac(&self, iface: &str) -> Result<[u8; 6], NetnsError> {
        validate_ifname(iface)?;
        let name = iface.to_string();
        self.run(move || {
            iface_ioctl(&name, libc::SIOCGIFHWADDR).map(|req| {
                // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
                let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
                let mut mac = [0u8; 6];
                for (dst, src) in mac.iter_mut().zip(sa.sa_data.iter()) {
                    *dst = *src as u8;
                }
                mac
            })
        })?
        .map_err(|source| self.iface_err(iface, source))
    }

    fn iface_err(&self, iface: &str, source: io::Error) -> NetnsError {
        NetnsError::Interface {
            ns: self.name.clone(),
            iface: iface.to_string(),
            source,
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace also destroys every veth end inside it, and
        // the peers with them, so interfaces need no separate cleanup.
        match run_cmd("ip", &["netns", "del", &self.name]) {
            Ok(_) => tracing::debug!(ns = %self.name, "netns: deleted"),
            Err(e) => tracing::warn!(ns = %self.name, error = %e, "netns: delete failed"),
        }
    }
}

/// Handle to a thread started by [`NetNs::spawn`].
#[derive(Debug)]
pub struct NsJoinHandle<R> {
    ns: String,
    handle: JoinHandle<Option<R>>,
}

impl<R> NsJoinHandle<R> {
    /// Waits for the thread; a panic in the closure becomes
    /// [`NetnsError::Panicked`].
    pub fn join(self) -> Result<R, NetnsError> {
        match self.handle.join() {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(NetnsError::Panicked {
                ns: self.ns,
                message: "thread could not enter the namespace".into(),
            }),
            Err(payload) => Err(NetnsError::Panicked {
                ns: self.ns,
                message: panic_message(payload.as_ref()),
            }),
        }
    }

    /// Whether the thread has finished (so `join` will not block).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Performs an interface ioctl on a socket of the calling thread's namespace.
fn iface_ioctl(iface: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    // SAFETY: plain socket creation; the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a properly sized ifreq with a NUL-terminated name
    // (validated to at most 15 bytes, the rest zeroed).
    let rc = unsafe { libc::ioctl(fd, request as _, &mut req as *mut libc::ifreq) };
    let err = io::Error::last_os_error();
    // SAFETY: fd came from socket() above and is not used afterwards.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    Ok(req)
}

/// Creates a veth pair with `a_name` inside `a` and `b_name` inside `b`.
///
/// Both ends are created directly in their target namespaces, so the names
/// only need to be unique there, never on the host. Neither end is brought
/// up or addressed.
pub fn veth_pair(a: &NetNs, a_name: &str, b: &NetNs, b_name: &str) -> Result<(), NetnsError> {
    validate_ifname(a_name)?;
    validate_ifname(b_name)?;
    run_cmd(
        "ip",
        &[
            "link", "add", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name,
            "netns", &b.name,
        ],
    )
    .map(drop)
}

/// Creates a veth pair and configures both ends: address (if any), MTU 1500,
/// up, TX checksum offload off.
fn wire(
    a: &NetNs,
    a_name: &str,
    a_cidr: Option<&str>,
    b: &NetNs,
    b_name: &str,
    b_cidr: Option<&str>,
) -> Result<(), NetnsError> {
    veth_pair(a, a_name, b, b_name)?;
    for (ns, name, cidr) in [(a, a_name, a_cidr), (b, b_name, b_cidr)] {
        if let Some(cidr) = cidr {
            ns.addr_add(name, cidr)?;
        }
        ns.tx_checksum_off(name)?;
        ns.link_up(name, 1500)?;
    }
    Ok(())
}

/// Relay sysctls: forwarding on, and no reverse-path or local-source
/// filtering, because the relay sees packets whose source it rewrote itself
/// or that arrive on the "wrong" arm.
fn relay_sysctls(relay: &NetNs, ifaces: &[&str]) -> Result<(), NetnsError> {
    relay.sysctl("net.ipv4.ip_forward", "1")?;
    for iface in std::iter::once("all").chain(ifaces.iter().copied()) {
        relay.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0")?;
        relay.sysctl(&format!("net.ipv4.conf.{iface}.accept_local"), "1")?;
    }
    Ok(())
}

/// Routed topology: caller and callee on separate subnets that only meet
/// through the relay.
///
/// ```text
/// [caller] c0 10.77.1.2 ──── r0 10.77.1.1 [relay] r1 10.77.2.1 ──── e0 10.77.2.2 [callee]
/// ```
#[derive(Debug)]
pub struct TwoArm {
    // Field order is drop order: reverse of creation.
    callee: NetNs,
    relay: NetNs,
    caller: NetNs,
}

impl TwoArm {
    /// Caller-side interface in the caller namespace.
    pub const CALLER_IFACE: &'static str = "c0";
    /// Relay interface facing the caller.
    pub const RELAY_CALLER_IFACE: &'static str = "r0";
    /// Relay interface facing the callee.
    pub const RELAY_CALLEE_IFACE: &'static str = "r1";
    /// Callee-side interface in the callee namespace.
    pub const CALLEE_IFACE: &'static str = "e0";
    /// Address of `c0`.
    pub const CALLER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
    /// Address of `r0`.
    pub const RELAY_CALLER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
    /// Address of `r1`.
    pub const RELAY_CALLEE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
    /// Address of `e0`.
    pub const CALLEE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);
    /// Prefix length of both subnets.
    pub const PREFIX_LEN: u8 = 24;

    /// Builds the topology; namespaces are named `<tag>-caller-…`,
    /// `<tag>-relay-…`, `<tag>-callee-…`. On error everything created so far
    /// is removed.
    pub fn build(tag: &str) -> Result<TwoArm, NetnsError> {
        let caller = NetNs::create(&format!("{tag}-caller"))?;
        let relay = NetNs::create(&format!("{tag}-relay"))?;
        let callee = NetNs::create(&format!("{tag}-callee"))?;
        wire(
            &caller,
            Self::CALLER_IFACE,
            Some("10.77.1.2/24"),
            &relay,
            Self::RELAY_CALLER_IFACE,
            Some("10.77.1.1/24"),
        )?;
        wire(
            &relay,
            Self::RELAY_CALLEE_IFACE,
            Some("10.77.2.1/24"),
            &callee,
            Self::CALLEE_IFACE,
            Some("10.77.2.2/24"),
        )?;
        caller.default_route(Self::RELAY_CALLER_ADDR)?;
        callee.default_route(Self::RELAY_CALLEE_ADDR)?;
        relay_sysctls(
            &relay,
            &[Self::RELAY_CALLER_IFACE, Self::RELAY_CALLEE_IFACE],
        )?;
        Ok(TwoArm {
            callee,
            relay,
            caller,
        })
    }

    /// The caller namespace.
    pub fn caller(&self) -> &NetNs {
        &self.caller
    }

    /// The relay namespace (where the XDP program goes, on `r0`/`r1`).
    pub fn relay(&self) -> &NetNs {
        &self.relay
    }

    /// The callee namespace.
    pub fn callee(&self) -> &NetNs {
        &self.callee
    }

    /// Veth peers of the relay's interfaces. XDP_TX/XDP_REDIRECT into a veth
    /// only delivers if the peer has an XDP program, so the caller of this
    /// API must attach a trivial XDP_PASS program to each of these.
    pub fn far_ends(&self) -> Vec<(&NetNs, &'static str)> {
        vec![
            (&self.caller, Self::CALLER_IFACE),
            (&self.callee, Self::CALLEE_IFACE),
        ]
    }
}

/// Single-subnet topology: caller, relay and callee hang off one bridge in a
/// separate switch namespace, and the relay answers on one arm.
///
/// ```text
/// [caller] c0 10.77.0.2 ── sc0 ┐
/// [relay]  r0 10.77.0.1 ── sr0 ┼ br0 [switch]
/// [callee] e0 10.77.0.3 ── se0 ┘
/// ```
#[derive(Debug)]
pub struct OneArm {
    // Field order is drop order: reverse of creation.
    switch: NetNs,
    callee: NetNs,
    relay: NetNs,
    caller: NetNs,
}

impl OneArm {
    /// Interface in the caller namespace.
    pub const CALLER_IFACE: &'static str = "c0";
    /// The relay's only interface.
    pub const RELAY_IFACE: &'static str = "r0";
    /// Interface in the callee namespace.
    pub const CALLEE_IFACE: &'static str = "e0";
    /// Bridge in the switch namespace.
    pub const BRIDGE: &'static str = "br0";
    /// Switch-side peer of `c0`.
    pub const SWITCH_CALLER_PORT: &'static str = "sc0";
    /// Switch-side peer of `r0`; needs an XDP program for the relay's XDP_TX.
    pub const SWITCH_RELAY_PORT: &'static str = "sr0";
    /// Switch-side peer of `e0`.
    pub const SWITCH_CALLEE_PORT: &'static str = "se0";
    /// Address of `c0`.
    pub const CALLER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    /// Address of `r0`.
    pub const RELAY_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    /// Address of `e0`.
    pub const CALLEE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
    /// Prefix length of the subnet.
    pub const PREFIX_LEN: u8 = 24;

    /// Builds the topology; namespaces are named `<tag>-caller-…`,
    /// `<tag>-relay-…`, `<tag>-callee-…`, `<tag>-switch-…`. On error
    /// everything created so far is removed.
    pub fn build(tag: &str) -> Result<OneArm, NetnsError> {
        let caller = NetNs::create(&format!("{tag}-caller"))?;
        let relay = NetNs::create(&format!("{tag}-relay"))?;
        let callee = NetNs::create(&format!("{tag}-callee"))?;
        let switch = NetNs::create(&format!("{tag}-switch"))?;
        switch.add_bridge(Self::BRIDGE)?;
        for (ns, iface, cidr, port) in [
            (
                &caller,
                Self::CALLER_IFACE,
                "10.77.0.2/24",
                Self::SWITCH_CALLER_PORT,
            ),
            (
                &relay,
                Self::RELAY_IFACE,
                "10.77.0.1/24",
                Self::SWITCH_RELAY_PORT,
            ),
            (
                &callee,
                Self::CALLEE_IFACE,
                "10.77.0.3/24",
                Self::SWITCH_CALLEE_PORT,
            ),
        ] {
            wire(ns, iface, Some(cidr), &switch, port, None)?;
            switch.enslave(port, Self::BRIDGE)?;
        }
        relay_sysctls(&relay, &[Self::RELAY_IFACE])?;
        Ok(OneArm {
            switch,
            callee,
            relay,
            caller,
        })
    }

    /// The caller namespace.
    pub fn caller(&self) -> &NetNs {
        &self.caller
    }

    /// The relay namespace (XDP program goes on `r0`).
    pub fn relay(&self) -> &NetNs {
        &self.relay
    }

    /// The callee namespace.
    pub fn callee(&self) -> &NetNs {
        &self.callee
    }

    /// The switch namespace holding `br0` and the `s*0` ports.
    pub fn switch(&self) -> &NetNs {
        &self.switch
    }

    /// Switch ports that need a trivial XDP_PASS program: `sr0` so the
    /// relay's XDP_TX on `r0` is delivered, and `sc0`/`se0` so traffic the
    /// relay redirects towards them is not dropped either.
    pub fn far_ends(&self) -> Vec<(&NetNs, &'static str)> {
        vec![
            (&self.switch, Self::SWITCH_RELAY_PORT),
            (&self.switch, Self::SWITCH_CALLER_PORT),
            (&self.switch, Self::SWITCH_CALLEE_PORT),
        ]
    }
}

/// The tool that sets up masquerading in [`NatPair`]'s NAT namespaces: `nft` (Debian package
/// nftables) when it is installed, else `iptables` (package iptables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatTool {
    /// `nft`: a `nat` table with a masquerading postrouting chain.
    Nft,
    /// `iptables -t nat -A POSTROUTING -o w0 -j MASQUERADE`.
    Iptables,
}

impl NatTool {
    /// The installed tool, `nft` first; the error says which package to install.
    pub fn find() -> Result<NatTool, String> {
        if run_cmd("nft", &["--version"]).is_ok() {
            return Ok(NatTool::Nft);
        }
        if run_cmd("iptables", &["--version"]).is_ok() {
            return Ok(NatTool::Iptables);
        }
        Err(
            "neither `nft` nor `iptables` can be run: install the Debian package nftables or \
             iptables (`bash .ci/setup` does)"
                .into(),
        )
    }

    /// `nft` or `iptables`.
    pub fn name(self) -> &'static str {
        match self {
            NatTool::Nft => "nft",
            NatTool::Iptables => "iptables",
        }
    }

    /// Masquerades what `ns` forwards out of `iface`.
    fn masquerade(self, ns: &NetNs, iface: &str) -> Result<(), NetnsError> {
        validate_ifname(iface)?;
        match self {
            NatTool::Nft => {
                ns.exec(&["nft", "add", "table", "ip", "nat"])?;
                ns.exec(&[
                    "nft",
                    "add chain ip nat postrouting { type nat hook postrouting priority 100 ; }",
                ])?;
                ns.exec(&[
                    "nft",
                    "add",
                    "rule",
                    "ip",
                    "nat",
                    "postrouting",
                    "oifname",
                    iface,
                    "masquerade",
                ])
                .map(drop)
            }
            NatTool::Iptables => ns
                .exec(&[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    iface,
                    "-j",
                    "MASQUERADE",
                ])
                .map(drop),
        }
    }
}

/// Two parties, each on a private network behind its own masquerading NAT, and a server between
/// the NATs' public sides (the SIP proxy and relay in `sluice demo`):
///
/// ```text
/// [alice] a0 192.168.1.2 ── n0 192.168.1.1 [nat-a] w0 10.80.1.2 ── s0 10.80.1.1 [server]
/// [bob]   b0 192.168.2.2 ── n0 192.168.2.1 [nat-b] w0 10.80.2.2 ── s1 10.80.2.1 [server]
/// ```
///
/// Each NAT forwards and masquerades what leaves through `w0`, so the server sees alice as
/// 10.80.1.2 and bob as 10.80.2.2, and reaches them only through the NATs' connection tracking
/// (it has no route to the private networks). The server does not forward between `s0` and
/// `s1` by itself (forwarding is on for the XDP program's FIB lookups, but the NATs have routes
/// only to their own side).
#[derive(Debug)]
pub struct NatPair {
    // Field order is drop order: reverse of creation.
    bob: NetNs,
    nat_b: NetNs,
    server: NetNs,
    nat_a: NetNs,
    alice: NetNs,
    tool: NatTool,
}

impl NatPair {
    /// Alice's interface.
    pub const ALICE_IFACE: &'static str = "a0";
    /// Bob's interface.
    pub const BOB_IFACE: &'static str = "b0";
    /// Each NAT's private (inside) interface.
    pub const NAT_INSIDE_IFACE: &'static str = "n0";
    /// Each NAT's public (outside) interface, the masquerading one.
    pub const NAT_OUTSIDE_IFACE: &'static str = "w0";
    /// The server's interface facing alice's NAT.
    pub const SERVER_A_IFACE: &'static str = "s0";
    /// The server's interface facing bob's NAT.
    pub const SERVER_B_IFACE: &'static str = "s1";
    /// Alice's private address.
    pub const ALICE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
    /// Alice's NAT on her network (her default gateway).
    pub const NAT_A_INSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    /// Alice's NAT's public address: what the server sees of her.
    pub const NAT_A_PUBLIC_ADDR: Ipv4Addr = Ipv4Addr::new(10, 80, 1, 2);
    /// The server's address facing alice's NAT.
    pub const SERVER_A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 80, 1, 1);
    /// Bob's private address.
    pub const BOB_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 2);
    /// Bob's NAT on his network (his default gateway).
    pub const NAT_B_INSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 1);
    /// Bob's NAT's public address: what the server sees of him.
    pub const NAT_B_PUBLIC_ADDR: Ipv4Addr = Ipv4Addr::new(10, 80, 2, 2);
    /// The server's address facing bob's NAT.
    pub const SERVER_B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 80, 2, 1);
    /// Prefix length of every segment.
    pub const PREFIX_LEN: u8 = 24;

    /// Builds the topology with the NAT tool found by [`NatTool::find`] (an error naming the
    /// package if there is none); namespaces are named `<tag>-alice-…`, `<tag>-nata-…`,
    /// `<tag>-server-…`, `<tag>-natb-…`, `<tag>-bob-…`. On error everything created so far is
    /// removed.
    pub fn build(tag: &str) -> Result<NatPair, NetnsError> {
        let tool = NatTool::find().map_err(|why| NetnsError::Spawn {
            cmd: "nft --version / iptables --version".into(),
            source: io::Error::new(io::ErrorKind::NotFound, why),
        })?;
        let alice = NetNs::create(&format!("{tag}-alice"))?;
        let nat_a = NetNs::create(&format!("{tag}-nata"))?;
        let server = NetNs::create(&format!("{tag}-server"))?;
        let nat_b = NetNs::create(&format!("{tag}-natb"))?;
        let bob = NetNs::create(&format!("{tag}-bob"))?;
        let pair = NatPair {
            bob,
            nat_b,
            server,
            nat_a,
            alice,
            tool,
        };
        for (
            party,
            party_iface,
            party_cidr,
            nat,
            inside_cidr,
            outside_cidr,
            server_iface,
            server_cidr,
            gateway,
            server_addr,
        ) in [
            (
                &pair.alice,
                Self::ALICE_IFACE,
                "192.168.1.2/24",
                &pair.nat_a,
                "192.168.1.1/24",
                "10.80.1.2/24",
                Self::SERVER_A_IFACE,
                "10.80.1.1/24",
                Self::NAT_A_INSIDE_ADDR,
                Self::SERVER_A_ADDR,
            ),
            (
                &pair.bob,
                Self::BOB_IFACE,
                "192.168.2.2/24",
                &pair.nat_b,
                "192.168.2.1/24",
                "10.80.2.2/24",
                Self::SERVER_B_IFACE,
                "10.80.2.1/24",
                Self::NAT_B_INSIDE_ADDR,
                Self::SERVER_B_ADDR,
            ),
        ] {
            wire(
                party,
                party_iface,
                Some(party_cidr),
                nat,
                Self::NAT_INSIDE_IFACE,
                Some(inside_cidr),
            )?;
            wire(
                nat,
                Self::NAT_OUTSIDE_IFACE,
                Some(outside_cidr),
                &pair.server,
                server_iface,
                Some(server_cidr),
            )?;
            party.default_route(gateway)?;
            nat.default_route(server_addr)?;
            nat.sysctl("net.ipv4.ip_forward", "1")?;
            tool.masquerade(nat, Self::NAT_OUTSIDE_IFACE)?;
        }
        relay_sysctls(&pair.server, &[Self::SERVER_A_IFACE, Self::SERVER_B_IFACE])?;
        Ok(pair)
    }

    /// Alice's namespace (private network).
    pub fn alice(&self) -> &NetNs {
        &self.alice
    }

    /// Alice's NAT.
    pub fn nat_a(&self) -> &NetNs {
        &self.nat_a
    }

    /// The server's namespace, between the NATs.
    pub fn server(&self) -> &NetNs {
        &self.server
    }

    /// Bob's NAT.
    pub fn nat_b(&self) -> &NetNs {
        &self.nat_b
    }

    /// Bob's namespace (private network).
    pub fn bob(&self) -> &NetNs {
        &self.bob
    }

    /// The tool that set up the masquerading.
    pub fn nat_tool(&self) -> NatTool {
        self.tool
    }

    /// Veth peers of the server's interfaces (the NATs' public sides), which need an XDP
    /// program for the server's XDP_REDIRECT into them to be delivered.
    pub fn far_ends(&self) -> Vec<(&NetNs, &'static str)> {
        vec![
            (&self.nat_a, Self::NAT_OUTSIDE_IFACE),
            (&self.nat_b, Self::NAT_OUTSIDE_IFACE),
        ]
    }
}

/// Checks whether this process can build topologies, and says why not.
///
/// Requires root, the `ip` binary (iproute2) and `ethtool`, and actually
/// creates and deletes a throwaway namespace, since containers often allow
/// the first three but not the last.
pub fn can_create_netns() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!("not running as root (euid {euid})"));
    }
    run_cmd("ip", &["-V"]).map_err(|e| format!("iproute2 `ip` unusable: {e}"))?;
    run_cmd("ethtool", &["--version"]).map_err(|e| format!("`ethtool` unusable: {e}"))?;
    let ns = NetNs::create("sluiceprobe").map_err(|e| format!("cannot create a netns: {e}"))?;
    ns.run(|| ())
        .map_err(|e| format!("cannot enter a netns: {e}"))?;
    Ok(())
}

/// For tests that need root and namespaces: `true` when they can run here. When they cannot,
/// it says why and returns `false` (the test skips), except under `CI`, where a test that cannot
/// run must fail rather than pass unseen: it panics. The probe runs once per process.
pub fn privileged_test(test: &str) -> bool {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    match PROBE.get_or_init(can_create_netns) {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test} must run in CI, but cannot: {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// Returns false (skip) only outside CI; in CI a missing capability is a
    /// test failure rather than a silent pass.
    fn netns_available(test: &str) -> bool {
        let why = match can_create_netns() {
            Ok(()) => match run_cmd("ping", &["-V"]) {
                Ok(_) => return true,
                Err(e) => format!("`ping` unusable: {e}"),
            },
            Err(why) => why,
        };
        if std::env::var_os("CI").is_some() {
            panic!("{test}: netns tests cannot run in CI: {why}");
        }
        eprintln!("skipping {test}: {why}");
        false
    }

    fn ping(from: &NetNs, to: Ipv4Addr) {
        let to = to.to_string();
        if let Err(e) = from.exec(&["ping", "-c1", "-W2", &to]) {
            panic!("ping {to} from {} failed: {e}", from.name());
        }
    }

    fn ns_exists(name: &str) -> bool {
        Path::new(NETNS_RUN_DIR).join(name).exists()
    }

    #[test]
    fn rejects_bad_names() {
        assert!(matches!(
            NetNs::create("a/b"),
            Err(NetnsError::InvalidName { .. })
        ));
        assert!(validate_ifname("sixteen-chars-xx").is_err());
        assert!(validate_ifname("fifteen-chars-x").is_ok());
    }

    #[test]
    fn two_arm_forwards_and_cleans_up() {
        if !netns_available("two_arm_forwards_and_cleans_up") {
            return;
        }
        let names: Vec<String>;
        {
            let t = match TwoArm::build("t2arm") {
                Ok(t) => t,
                Err(e) => panic!("build: {e}"),
            };
            names = [t.caller(), t.relay(), t.callee()]
                .iter()
                .map(|n| n.name().to_string())
                .collect();
            assert!(names.iter().all(|n| ns_exists(n)));

            ping(t.caller(), TwoArm::RELAY_CALLER_ADDR);
            ping(t.caller(), TwoArm::CALLEE_ADDR);
            ping(t.callee(), TwoArm::CALLER_ADDR);

            // Without forwarding in the relay the two ends must be cut off,
            // proving there is no path around it.
            assert!(t.relay().sysctl("net.ipv4.ip_forward", "0").is_ok());
            assert!(t
                .caller()
                .exec(&["ping", "-c1", "-W1", "10.77.2.2"])
                .is_err());
            assert!(t.relay().sysctl("net.ipv4.ip_forward", "1").is_ok());
            ping(t.caller(), TwoArm::CALLEE_ADDR);
            // Idempotent: turning an already-off offload off again is fine.
            assert!(t.caller().tx_checksum_off("c0").is_ok());

            assert_eq!(
                t.relay().sysctl_get("net.ipv4.ip_forward").ok().as_deref(),
                Some("1")
            );
            assert_eq!(
                t.relay()
                    .sysctl_get("net.ipv4.conf.r1.rp_filter")
                    .ok()
                    .as_deref(),
                Some("0")
            );
            // Namespaces are independent: the host keeps its own value.
            let c = t.caller().sysctl_get("net.ipv4.ip_forward");
            assert_eq!(c.ok().as_deref(), Some("0"));

            let feats = t
                .caller()
                .exec(&["ethtool", "-k", "c0"])
                .unwrap_or_default();
            assert!(
                feats.contains("tx-checksumming: off"),
                "tx checksum still on: {feats}"
            );

            let idx = t.relay().ifindex("r0");
            assert!(matches!(idx, Ok(i) if i > 1), "{idx:?}");
            let mac = t.relay().mac("r0");
            assert!(matches!(mac, Ok(m) if m != [0; 6]), "{mac:?}");
            assert!(matches!(
                t.relay().ifindex("nope0"),
                Err(NetnsError::Interface { .. })
            ));
            let ends: Vec<_> = t
                .far_ends()
                .iter()
                .map(|(ns, i)| (ns.name().to_string(), *i))
                .collect();
            assert_eq!(
                ends,
                vec![(names[0].clone(), "c0"), (names[2].clone(), "e0")]
            );
        }
        for n in &names {
            assert!(!ns_exists(n), "namespace {n} still exists after drop");
        }
    }

    #[test]
    fn two_arm_udp_through_run_and_spawn() {
        if !netns_available("two_arm_udp_through_run_and_spawn") {
            return;
        }
        let t = match TwoArm::build("t2udp") {
            Ok(t) => t,
            Err(e) => panic!("build: {e}"),
        };
        // Bound inside the callee namespace: the socket stays there even
        // though it is used from the spawned thread only.
        let rx = t.callee().spawn(|| -> io::Result<(usize, Vec<u8>)> {
            let sock = UdpSocket::bind((TwoArm::CALLEE_ADDR, 4000))?;
            sock.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut buf = [0u8; 64];
            let (n, _) = sock.recv_from(&mut buf)?;
            Ok((n, buf[..n].to_vec()))
        });
        let rx = match rx {
            Ok(h) => h,
            Err(e) => panic!("spawn: {e}"),
        };
        let sent = t.caller().run(|| -> io::Result<()> {
            let sock = UdpSocket::bind((TwoArm::CALLER_ADDR, 0))?;
            // The receiver may not have bound yet; resend a few times.
            for _ in 0..20 {
                sock.send_to(b"hello", (TwoArm::CALLEE_ADDR, 4000))?;
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        });
        assert!(matches!(sent, Ok(Ok(()))), "{sent:?}");
        let got = rx.join();
        assert!(matches!(&got, Ok(Ok((5, d))) if d == b"hello"), "{got:?}");
        let panicked = t.caller().run(|| panic!("boom"));
        assert!(
            matches!(&panicked, Err(NetnsError::Panicked { message, .. }) if message == "boom"),
            "{panicked:?}"
        );
    }

    #[test]
    fn one_arm_bridges() {
        if !netns_available("one_arm_bridges") {
            return;
        }
        let names: Vec<String>;
        {
            let t = match OneArm::build("t1arm") {
                Ok(t) => t,
                Err(e) => panic!("build: {e}"),
            };
            names = [t.caller(), t.relay(), t.callee(), t.switch()]
                .iter()
                .map(|n| n.name().to_string())
                .collect();
            ping(t.caller(), OneArm::RELAY_ADDR);
            ping(t.caller(), OneArm::CALLEE_ADDR);
            ping(t.callee(), OneArm::RELAY_ADDR);
            let ends: Vec<_> = t.far_ends().iter().map(|(_, i)| *i).collect();
            assert_eq!(ends, vec!["sr0", "sc0", "se0"]);
            assert!(t.switch().ifindex("sr0").is_ok());
            assert!(t.switch().ifindex(OneArm::BRIDGE).is_ok());
        }
        for n in &names {
            assert!(!ns_exists(n), "namespace {n} still exists after drop");
        }
    }

    #[test]
    fn exec_failure_reports_command_and_stderr() {
        if !netns_available("exec_failure_reports_command_and_stderr") {
            return;
        }
        let ns = match NetNs::create("texec") {
            Ok(ns) => ns,
            Err(e) => panic!("create: {e}"),
        };
        match ns.exec(&["ip", "link", "show", "dev", "doesnotexist0"]) {
            Err(NetnsError::Command { cmd, stderr, .. }) => {
                assert!(cmd.contains(ns.name()), "{cmd}");
                assert!(cmd.contains("doesnotexist0"), "{cmd}");
                assert!(!stderr.is_empty());
            }
            other => panic!("expected Command error, got {other:?}"),
        }
        assert!(ns.exec(&["true"]).is_ok());
    }
    #[test]
    fn nat_pair_masquerades() {
        if !netns_available("nat_pair_masquerades") {
            return;
        }
        if let Err(why) = NatTool::find() {
            if std::env::var_os("CI").is_some() {
                panic!("nat_pair_masquerades: {why}");
            }
            eprintln!("skipping nat_pair_masquerades: {why}");
            return;
        }
        let t = match NatPair::build("tnat") {
            Ok(t) => t,
            Err(e) => panic!("build: {e}"),
        };
        ping(t.alice(), NatPair::SERVER_A_ADDR);
        ping(t.bob(), NatPair::SERVER_B_ADDR);
        // The server sees alice as her NAT's public address, and cannot reach her directly.
        let rx = t.server().spawn(|| -> io::Result<std::net::SocketAddr> {
            let sock = UdpSocket::bind((NatPair::SERVER_A_ADDR, 4000))?;
            sock.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut buf = [0u8; 64];
            let (_, from) = sock.recv_from(&mut buf)?;
            Ok(from)
        });
        let rx = match rx {
            Ok(h) => h,
            Err(e) => panic!("spawn: {e}"),
        };
        let sent = t.alice().run(|| -> io::Result<()> {
            let sock = UdpSocket::bind((NatPair::ALICE_ADDR, 0))?;
            for _ in 0..20 {
                sock.send_to(b"hello", (NatPair::SERVER_A_ADDR, 4000))?;
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        });
        assert!(matches!(sent, Ok(Ok(()))), "{sent:?}");
        let from = rx.join();
        assert!(
            matches!(&from, Ok(Ok(a)) if a.ip() == std::net::IpAddr::V4(NatPair::NAT_A_PUBLIC_ADDR)),
            "{from:?}"
        );
        assert!(t
            .server()
            .exec(&["ping", "-c1", "-W1", "192.168.1.2"])
            .is_err());
    }
}
