//! The probe socket: an unprivileged ICMP echo ("ping") socket or a plain UDP socket, both
//! with IP_RECVERR (ICMP errors about our packets are queued on the socket's error queue)
//! and IP_PMTUDISC_PROBE (DF set, the cached path MTU ignored, for sized probes). Neither
//! needs CAP_NET_RAW: a ping socket needs the daemon's group in
//! `net.ipv4.ping_group_range` (per network namespace), a UDP socket nothing.

use std::{
    io, mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use crate::model::probe::Method;

/// A non-blocking probe socket.
#[derive(Debug)]
pub(super) struct ProbeSocket {
    fd: OwnedFd,
    v6: bool,
}

impl AsRawFd for ProbeSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An error the kernel queued about one of our packets (`struct sock_extended_err`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct QueuedError {
    /// The errno it stands for, e.g. ECONNREFUSED for a port unreachable.
    pub errno: i32,
    /// True when an ICMP message said it (else this host's own stack).
    pub icmp: bool,
    /// ICMP type and code.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// The MTU for "fragmentation needed" / "packet too big".
    pub info: u32,
    /// Who sent the ICMP message.
    pub offender: Option<IpAddr>,
    /// Where our packet was going (with its port).
    pub destination: Option<SocketAddr>,
}

impl ProbeSocket {
    /// Opens a socket for `method` and the address family of `v6`.
    pub fn open(method: Method, v6: bool) -> io::Result<Self> {
        let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        let protocol = match (method, v6) {
            (Method::IcmpEcho, false) => libc::IPPROTO_ICMP,
            (Method::IcmpEcho, true) => libc::IPPROTO_ICMPV6,
            (Method::UdpPort, _) => libc::IPPROTO_UDP,
        };
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe {
            libc::socket(
                domain,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let socket = Self {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            v6,
        };
        if v6 {
            socket.set(libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?;
            socket.set(
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            )?;
        } else {
            socket.set(libc::IPPROTO_IP, libc::IP_RECVERR, 1)?;
            socket.set(
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            )?;
        }
        Ok(socket)
    }

    fn set(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        // SAFETY: a valid int option on our fd.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one datagram (for a ping socket: an ICMP header and payload).
    pub fn send_to(&self, packet: &[u8], to: SocketAddr) -> io::Result<()> {
        let (addr, len) = to_sockaddr(to);
        // SAFETY: valid buffer and address for the duration of the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                len,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram; `WouldBlock` when there is none.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Option<SocketAddr>)> {
        // SAFETY: zeroed sockaddr_storage is a valid out-buffer.
        let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: valid buffers for the duration of the call.
        let got = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut addr).cast(),
                &mut len,
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((got as usize, from_sockaddr(&addr)))
    }

    /// Takes one error from the socket's error queue; `None` when it is empty.
    pub fn recv_error(&self) -> io::Result<Option<QueuedError>> {
        let mut data = [0u8; 256];
        // SAFETY: zeroed sockaddr_storage is a valid out-buffer.
        let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        // Room for a sock_extended_err and the offender's address, 8-byte aligned.
        let mut control = [0u64; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain data; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&raw mut name).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control);
        // SAFETY: msg points at valid buffers.
        let got = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) };
        if got < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(err);
        }
        let destination = from_sockaddr(&name);
        let (level, kind) = if self.v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
        } else {
            (libc::IPPROTO_IP, libc::IP_RECVERR)
        };
        // SAFETY: walking the control messages the kernel wrote into `control`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == level && (*cmsg).cmsg_type == kind {
                    let ee = libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>();
                    let err = ee.read_unaligned();
                    let offender = libc::SO_EE_OFFENDER(ee);
                    let offender = from_sockaddr_ptr(offender.cast_const());
                    return Ok(Some(QueuedError {
                        errno: err.ee_errno as i32,
                        icmp: err.ee_origin == libc::SO_EE_ORIGIN_ICMP
                            || err.ee_origin == libc::SO_EE_ORIGIN_ICMP6,
                        icmp_type: err.ee_type,
                        icmp_code: err.ee_code,
                        info: err.ee_info,
                        offender: offender.map(|addr| addr.ip()),
                        destination,
                    }));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        // An error without its description: report what we know.
        Ok(Some(QueuedError {
            errno: 0,
            icmp: false,
            icmp_type: 0,
            icmp_code: 0,
            info: 0,
            offender: None,
            destination,
        }))
    }
}

/// The path MTU the kernel knows for packets to `to` (`IP_MTU`/`IPV6_MTU` of a UDP socket
/// connected there; no packet is sent): the route's device MTU, or less when a
/// "fragmentation needed"/"packet too big" taught it a smaller one (a PMTU exception), or a
/// tunnel device lowered it after such an ICMP about its outer packets.
pub(super) fn route_mtu(to: IpAddr) -> io::Result<u32> {
    let socket = std::net::UdpSocket::bind(match to {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    })?;
    // Any port: connect() only looks the route up.
    socket.connect(SocketAddr::new(to, 9))?;
    let (level, name) = match to {
        IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
        IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
    };
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int option read into a valid int of the given length.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(value).map_err(|_| io::Error::other(format!("IP_MTU {value}")))
}

/// Whether this network namespace lets the daemon open an unprivileged ping socket for
/// the family of `v6` (`net.ipv4.ping_group_range` covers its group).
pub(super) fn ping_socket_allowed(v6: bool) -> Result<(), io::Error> {
    ProbeSocket::open(Method::IcmpEcho, v6).map(drop)
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; the family-specific view is written below.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: a sockaddr_storage is valid to read as any sockaddr of its family.
    unsafe { from_sockaddr_ptr((storage as *const libc::sockaddr_storage).cast()) }
}

/// # Safety
/// `addr` must point at a readable sockaddr of the family it names.
unsafe fn from_sockaddr_ptr(addr: *const libc::sockaddr) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: per the contract, reading the family and the matching struct is valid.
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET => {
                let sin = addr.cast::<libc::sockaddr_in>().read_unaligned();
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = addr.cast::<libc::sockaddr_in6>().read_unaligned();
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    0,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip() {
        for addr in ["10.244.2.0:33434", "[fd00::1]:7"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (storage, _) = to_sockaddr(addr);
            assert_eq!(from_sockaddr(&storage), Some(addr));
        }
    }

    #[test]
    fn the_route_mtu_of_loopback_is_its_device_mtu() {
        let lo = std::fs::read_to_string("/sys/class/net/lo/mtu").unwrap();
        // The route MTU is capped at IP_MAX_MTU (loopback's 65536 reads 65535).
        assert_eq!(
            route_mtu("127.0.0.1".parse().unwrap()).unwrap(),
            lo.trim().parse::<u32>().unwrap().min(65535)
        );
    }
}
