//! Network interfaces (RTM_NEWLINK), with VXLAN settings.

use std::net::IpAddr;

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A VXLAN device's configuration (IFLA_INFO_DATA of kind `vxlan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vxlan {
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The local (source) VTEP address, if set.
    pub local: Option<IpAddr>,
    /// The UDP destination port (8472 for Flannel, 4789 IANA).
    pub port: u16,
    /// The underlay device (IFLA_VXLAN_LINK, `dev` in `ip link add … type vxlan`).
    pub underlay: Option<u32>,
    /// Whether the device learns remote MACs from received packets.
    pub learning: bool,
}

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The kind from IFLA_LINKINFO (`vxlan`, `bridge`, `veth`, `wireguard`, …); `None` for
    /// physical devices and loopback.
    pub kind: Option<String>,
    /// Administratively up (IFF_UP).
    pub admin_up: bool,
    /// Operationally up: carrier present (IFF_LOWER_UP) and operstate not down.
    pub oper_up: bool,
    /// The MTU.
    pub mtu: u32,
    /// The master device (bridge, bond, VRF), if enslaved.
    pub master: Option<u32>,
    /// The hardware address, when it is an Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// The VXLAN configuration for kind `vxlan`.
    pub vxlan: Option<Vxlan>,
}

impl Link {
    /// A link named `name` at `index`: up, MTU 1500, no MAC, no kind; a starting point
    /// for building links in tests.
    pub fn named(index: u32, name: &str) -> Self {
        Self {
            index,
            name: name.to_owned(),
            kind: None,
            admin_up: true,
            oper_up: true,
            mtu: 1500,
            master: None,
            mac: None,
            vxlan: None,
        }
    }
}
