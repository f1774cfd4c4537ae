//! IP prefixes and the bit arithmetic behind them.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// An IP prefix: an address and a prefix length. The address is kept as given (an
/// interface address keeps its host bits); comparisons with [`Prefix::contains`] mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length: 0–32 for IPv4, 0–128 for IPv6.
    pub len: u8,
}

/// Why a prefix could not be parsed or built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    /// The address part is not an IP address.
    #[error("`{0}` is not an IP address; write a prefix like 10.244.3.0/24 or fd00::/64")]
    Address(String),
    /// The length is not a number or too long for the family.
    #[error("prefix length `{0}` is invalid; use 0–32 for IPv4 and 0–128 for IPv6")]
    Length(String),
}

impl Prefix {
    /// A prefix, checking the length against the address family.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        if len > max_len(&addr) {
            return Err(PrefixError::Length(len.to_string()));
        }
        Ok(Self { addr, len })
    }

    /// The host prefix (/32 or /128) of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: max_len(&addr),
        }
    }

    /// The default prefix (0.0.0.0/0 or ::/0) of `addr`'s family.
    pub fn default_for(addr: &IpAddr) -> Self {
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Self { addr, len: 0 }
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The prefix with its host bits cleared (10.0.0.1/24 → 10.0.0.0/24).
    pub fn network(&self) -> Self {
        let bits = bits(&self.addr) & mask(self.len, max_len(&self.addr));
        Self {
            addr: from_bits(bits, self.addr.is_ipv4()),
            len: self.len,
        }
    }

    /// True if `ip` (same family) lies inside the prefix.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let m = mask(self.len, max_len(ip));
        bits(ip) & m == bits(&self.addr) & m
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// Parses `10.244.3.0/24`, `fd00::/64`, or a bare address as a host prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| PrefixError::Address(addr.to_owned()))?;
        match len {
            None => Ok(Self::host(addr)),
            Some(len) => {
                let len: u8 = len
                    .trim()
                    .parse()
                    .map_err(|_| PrefixError::Length(len.to_owned()))?;
                Self::new(addr, len)
            }
        }
    }
}

pub(super) fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub(super) fn bits(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

pub(super) fn from_bits(bits: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// The network mask of `len` bits in an address of `width` bits, as an integer.
pub(super) fn mask(len: u8, width: u8) -> u128 {
    let full = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    full & !full.checked_shr(u32::from(len.min(width))).unwrap_or(0)
}

/// True for an IPv6 link-local unicast address (fe80::/10).
pub fn is_link_local_v6(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.is_unicast_link_local())
}
