//! Bridge forwarding database entries (`bridge fdb`, AF_BRIDGE RTM_NEWNEIGH).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use super::{NeighState, format_mac};

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
    /// True for a unicast MAC (not all-zero, not multicast): an entry for one remote
    /// host, not a default or flooding destination.
    pub fn has_unicast_mac(&self) -> bool {
        self.mac != [0; 6] && self.mac[0] & 1 == 0
    }

    /// The entry as `bridge fdb add|replace` takes it, on device `dev`:
    /// `02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.11 self permanent`.
    pub fn command(&self, dev: &str) -> String {
        let mut text = format!("{} dev {dev}", format_mac(&self.mac));
        if let Some(dst) = self.dst {
            text.push_str(&format!(" dst {dst}"));
        }
        if let Some(vlan) = self.vlan {
            text.push_str(&format!(" vlan {vlan}"));
        }
        if let Some(vni) = self.vni {
            text.push_str(&format!(" vni {vni}"));
        }
        if let Some(port) = self.port {
            text.push_str(&format!(" port {port}"));
        }
        let word = if self.state.is_permanent() {
            "permanent"
        } else if self.state.0 & NeighState::NOARP.0 != 0 {
            "static"
        } else {
            "dynamic"
        };
        match self.master {
            Some(_) => text.push_str(&format!(" master {word}")),
            None => text.push_str(&format!(" self {word}")),
        }
        text
    }

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

/// (bridge, MAC, VLAN): a bridge's forwarding database holds one entry per MAC and VLAN,
/// on whichever port it was last learned or set.
type BridgeKey = (u32, [u8; 6], Option<u16>);

/// The FDB entries of every device, with the bridges' own rule applied: one entry per
/// bridge, MAC and VLAN.
///
/// When a learned MAC shows up behind another port (a host moved, a loop, two devices
/// with one address) or `bridge fdb replace … master` names another port, the bridge
/// moves its entry and announces only the new port (RTM_NEWNEIGH; it never sends
/// RTM_DELNEIGH for the old one), so the entry of the old port has to go here.
#[derive(Clone, Debug, Default)]
pub(super) struct FdbTable {
    entries: BTreeMap<FdbKey, FdbEntry>,
    /// Where each bridge entry (one with a master) is stored.
    bridged: HashMap<BridgeKey, FdbKey>,
}

impl FdbTable {
    pub(super) fn get(&self, key: &FdbKey) -> Option<&FdbEntry> {
        self.entries.get(key)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &FdbEntry> {
        self.entries.values()
    }

    pub(super) fn of(&self, ifindex: u32) -> impl Iterator<Item = &FdbEntry> {
        self.entries
            .range((ifindex, [0; 6], None, None, None)..)
            .take_while(move |(k, _)| k.0 == ifindex)
            .map(|(_, e)| e)
    }

    pub(super) fn with_mac(&self, ifindex: u32, mac: [u8; 6]) -> impl Iterator<Item = &FdbEntry> {
        self.entries
            .range((ifindex, mac, None, None, None)..)
            .take_while(move |(k, _)| k.0 == ifindex && k.1 == mac)
            .map(|(_, e)| e)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds or changes an entry; a bridge entry replaces the bridge's entry for the same
    /// MAC and VLAN on another port.
    pub(super) fn insert(&mut self, entry: FdbEntry) {
        let key = entry.key();
        if let Some(bridge) = entry.master
            && let Some(old) = self.bridged.insert((bridge, entry.mac, entry.vlan), key)
            && old != key
        {
            self.entries.remove(&old);
        }
        self.entries.insert(key, entry);
    }

    /// Removes the entry stored under `entry`'s key, if any.
    pub(super) fn remove(&mut self, entry: &FdbEntry) {
        let key = entry.key();
        if self.entries.remove(&key).is_some()
            && let Some(bridge) = entry.master
        {
            let at = (bridge, entry.mac, entry.vlan);
            if self.bridged.get(&at) == Some(&key) {
                self.bridged.remove(&at);
            }
        }
    }

    /// Keeps the entries for which `keep` holds.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&FdbKey, &FdbEntry) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|k, e| keep(k, e));
        if self.entries.len() != before {
            let entries = &self.entries;
            self.bridged.retain(|_, key| entries.contains_key(key));
        }
    }
}
