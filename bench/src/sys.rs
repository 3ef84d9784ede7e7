//! Thin helpers around `sendmmsg`/`recvmmsg` socket addresses.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Converts an IPv4 socket address into the C representation.
pub(crate) fn sockaddr_in(addr: &SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// An all-zero `sockaddr_storage`, used as a receive buffer for source
/// addresses.
pub(crate) fn empty_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes
    // are a valid (AF_UNSPEC) value.
    unsafe { std::mem::zeroed() }
}

/// An all-zero `mmsghdr`.
pub(crate) fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers; all
    // zero bytes (null pointers, zero lengths) is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Decodes a source address filled in by `recvmmsg`.
///
/// IPv4-mapped IPv6 sources are folded to IPv4 because a dual-stack socket
/// reports IPv4 peers that way, and expected sources are IPv4.
pub(crate) fn storage_to_v4(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddrV4> {
    let len = usize::try_from(len).ok()?;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in, the
            // kernel wrote at least that many bytes, and sockaddr_storage is
            // sized and aligned for every address type.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).to_ipv4_mapped()?;
            Some(SocketAddrV4::new(ip, u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_roundtrip() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 40_000);
        let sin = sockaddr_in(&a);
        let mut st = empty_storage();
        // SAFETY: storage is large enough for a sockaddr_in.
        unsafe {
            std::ptr::write(
                (&mut st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                sin,
            );
        }
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(storage_to_v4(&st, len), Some(a));
        assert_eq!(storage_to_v4(&st, 2), None);
    }
}
