//! Errors of the forwarding plane. Each names what it was doing and on which interface, map or
//! stream, and translates the errno the kernel gives into its usual cause.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddrV4;

use crate::StreamId;

/// An error of the XDP forwarding plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// The embedded object could not be loaded (verifier, missing privileges, old kernel).
    #[error("loading the XDP relay program: {source}")]
    Load {
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The object lacks a program or map the loader expects: the build is inconsistent.
    #[error("the XDP object has no {kind} named `{name}`")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    /// The interface does not exist in this thread's network namespace.
    #[error("interface `{iface}` does not exist in this network namespace")]
    UnknownInterface { iface: String },
    /// Attaching to an interface failed.
    #[error("attaching XDP ({mode}) to `{iface}` failed: {cause}")]
    Attach {
        iface: String,
        mode: &'static str,
        /// The kernel's reason, translated where the errno is ambiguous.
        cause: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// A map operation failed.
    #[error("{operation} in map `{map}`: {source}")]
    Map {
        map: &'static str,
        operation: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The stream id is not installed.
    #[error("stream {0} is not installed")]
    UnknownStream(StreamId),
    /// A rule for that relay address and port already exists.
    #[error("a stream is already installed at {0}")]
    AlreadyInstalled(SocketAddrV4),
    /// Every stream slot is in use.
    #[error("all {0} stream slots are in use")]
    Full(u32),
    /// The rule is inconsistent.
    #[error("invalid stream rule: {0}")]
    InvalidRule(String),
    /// The configuration is inconsistent.
    #[error("invalid dataplane configuration: {0}")]
    InvalidConfig(String),
    /// A raw system call failed.
    #[error("{call} failed: {source}")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    /// An AF_XDP step failed (UMEM, rings, bind, a worker), naming the interface and queue.
    #[error("{what} failed: {source}")]
    AfXdp {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl DataplaneError {
    pub(crate) fn map(
        map: &'static str,
        operation: &'static str,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        DataplaneError::Map {
            map,
            operation,
            source: Box::new(source),
        }
    }
}

/// The errno at the bottom of an error chain, if any.
pub(crate) fn errno_of(error: &(dyn StdError + 'static)) -> Option<i32> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        current = e.source();
    }
    None
}

/// What an attach errno usually means, since the kernel's bare numbers mislead (ERANGE on veth).
pub(crate) fn attach_cause(error: &(dyn StdError + 'static)) -> String {
    let text = error.to_string();
    let hint = match errno_of(error) {
        Some(libc::ERANGE) => {
            "ERANGE: the MTU is too large for native XDP (on veth, the peer's MTU must be at most 3506)"
        }
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP: the driver has no native XDP support",
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            "EBUSY: another XDP program is attached to this interface in another mode"
        }
        Some(libc::EPERM) => "EPERM: attaching XDP needs CAP_NET_ADMIN and CAP_BPF (run as root)",
        Some(libc::ENODEV) => "ENODEV: the interface disappeared",
        Some(libc::EINVAL) => "EINVAL: the kernel refused the mode or program for this interface",
        _ => return text,
    };
    format!("{hint} ({text})")
}
