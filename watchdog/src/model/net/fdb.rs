//! Bridge forwarding database entries (`bridge fdb`, AF_BRIDGE RTM_NEWNEIGH).

use std::net::IpAddr;

use super::NeighState;

/// A bridge forwarding database entry (`bridge fdb`), on a bridge, a bridge port or a
/// VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The device the entry belongs to (e.g. `flannel.1`).
    pub ifindex: u32,
    /// The MAC address (00:00:00:00:00:00 for a VXLAN default destination).
    pub mac: [u8; 6],
    /// NDA_DST: on a VXLAN device, the remote VTEP.
    pub dst: Option<IpAddr>,
    /// The VLAN on a bridge.
    pub vlan: Option<u16>,
    /// NDA_VNI, when it differs from the device's.
    pub vni: Option<u32>,
    /// NDA_PORT, when it differs from the device's.
    pub port: Option<u16>,
    /// The NUD state (PERMANENT for static entries, REACHABLE/STALE for learned ones).
    pub state: NeighState,
    /// The bridge (NDA_MASTER), for entries on bridge ports.
    pub master: Option<u32>,
}

impl FdbEntry {
    /// The key the entry is stored under. Unicast MACs on a VXLAN device have a single
    /// remote that `bridge fdb replace` changes in place (the kernel then only announces
    /// the new destination), so the destination is part of the key only for the all-zero
    /// and multicast MACs, which may have several (`bridge fdb append`).
    pub(super) fn key(&self) -> FdbKey {
        let multi = self.mac == [0; 6] || self.mac[0] & 1 == 1;
        (
            self.ifindex,
            self.mac,
            self.vlan,
            self.master,
            if multi { self.dst } else { None },
        )
    }
}

/// (device, MAC, VLAN, master — a bridge port's `master` entry and its `self` entry
/// differ — and, for multi-destination MACs, the destination).
pub(super) type FdbKey = (u32, [u8; 6], Option<u16>, Option<u32>, Option<IpAddr>);
