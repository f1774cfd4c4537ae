//! ARP/NDP neighbours (RTM_NEWNEIGH) and their NUD states.

use std::{fmt, net::IpAddr};

use super::format_mac;

/// A neighbour (ARP/NDP) or FDB entry state: the NUD_* bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NeighState(pub u16);

impl NeighState {
    /// NUD_INCOMPLETE: resolution in progress.
    pub const INCOMPLETE: Self = Self(0x01);
    /// NUD_REACHABLE: confirmed recently.
    pub const REACHABLE: Self = Self(0x02);
    /// NUD_STALE: valid but unconfirmed.
    pub const STALE: Self = Self(0x04);
    /// NUD_DELAY: waiting before probing.
    pub const DELAY: Self = Self(0x08);
    /// NUD_PROBE: probing.
    pub const PROBE: Self = Self(0x10);
    /// NUD_FAILED: resolution failed.
    pub const FAILED: Self = Self(0x20);
    /// NUD_NOARP: no resolution needed.
    pub const NOARP: Self = Self(0x40);
    /// NUD_PERMANENT: static entry.
    pub const PERMANENT: Self = Self(0x80);

    const NAMES: [(u16, &'static str); 8] = [
        (0x01, "INCOMPLETE"),
        (0x02, "REACHABLE"),
        (0x04, "STALE"),
        (0x08, "DELAY"),
        (0x10, "PROBE"),
        (0x20, "FAILED"),
        (0x40, "NOARP"),
        (0x80, "PERMANENT"),
    ];

    fn has(&self, bit: Self) -> bool {
        self.0 & bit.0 != 0
    }

    /// Resolution failed (NUD_FAILED).
    pub fn is_failed(&self) -> bool {
        self.has(Self::FAILED)
    }

    /// Resolution in progress, no answer yet (NUD_INCOMPLETE).
    pub fn is_incomplete(&self) -> bool {
        self.has(Self::INCOMPLETE)
    }

    /// A static entry (NUD_PERMANENT).
    pub fn is_permanent(&self) -> bool {
        self.has(Self::PERMANENT)
    }

    /// The word `ip neigh` takes after `nud`: `permanent`, `noarp`, `stale`, `reachable`,
    /// `failed`, `incomplete`, else `none`.
    pub fn nud_word(&self) -> &'static str {
        if self.is_permanent() {
            "permanent"
        } else if self.has(Self::NOARP) {
            "noarp"
        } else if self.has(Self::STALE) {
            "stale"
        } else if self.has(Self::REACHABLE) {
            "reachable"
        } else if self.is_failed() {
            "failed"
        } else if self.is_incomplete() {
            "incomplete"
        } else {
            "none"
        }
    }

    /// A usable learned entry: REACHABLE, STALE, DELAY or PROBE.
    pub fn is_reachable_or_stale(&self) -> bool {
        self.0 & (Self::REACHABLE.0 | Self::STALE.0 | Self::DELAY.0 | Self::PROBE.0) != 0
    }
}

impl fmt::Display for NeighState {
    /// The words `ip neigh` prints, space-separated; `NONE` for no bits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("NONE");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.0 & !0xff;
        if unknown != 0 {
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

/// An ARP (IPv4) or NDP (IPv6) neighbour entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The interface.
    pub ifindex: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its link-layer address, once resolved.
    pub mac: Option<[u8; 6]>,
    /// The NUD state.
    pub state: NeighState,
}

impl Neighbour {
    /// No link-layer address and neither permanent nor noarp: an entry the kernel is still
    /// (or failed) resolving. The kernel creates, fails and forgets such entries by itself
    /// while traffic tries to resolve an address.
    pub fn is_unresolved(&self) -> bool {
        self.mac.is_none() && self.state.0 & (NeighState::PERMANENT.0 | NeighState::NOARP.0) == 0
    }

    /// The neighbour as `ip neigh add|replace` takes it, on device `dev`:
    /// `10.244.1.0 lladdr 02:fa:00:00:00:01 dev flannel.1 nud permanent`.
    pub fn command(&self, dev: &str) -> String {
        let mut text = self.ip.to_string();
        if let Some(mac) = self.mac {
            text.push_str(&format!(" lladdr {}", format_mac(&mac)));
        }
        text.push_str(&format!(" dev {dev} nud {}", self.state.nud_word()));
        text
    }
}
