//! The owned set: the only objects repair ever plans a change to (and, with issue 22,
//! executes, recovers or undoes one on):
//! - FDB entries on the cluster's VXLAN device (`overlay::vxlan_device`) with a unicast
//!   MAC (`self` entries: no VLAN, no master);
//! - IPv4 neighbours on that device;
//! - IPv4 routes in the main table whose destination is exactly another Node's pod
//!   subnet, whatever they go through; and routes in the main table through the device in
//!   Flannel's form (`<subnet> via <subnet's network address>`) for a subnet of the
//!   cluster's prefix length (a Node that left);
//! - never this node's own pod subnet, nothing on or through a `repair.protect.devices`
//!   device, no route overlapping a `repair.protect.prefixes` prefix, no neighbour or FDB
//!   destination inside one.

use std::{collections::BTreeSet, net::IpAddr};

use super::object::Object;
use crate::{
    config::repair::Protect,
    model::{
        desired::PodSubnet,
        net::{FdbEntry, Link, Neighbour, Route, RouteKind, Snapshot, TABLE_MAIN},
    },
    overlay::Expected,
};

/// The owned set for one snapshot and desired state (see the module documentation).
pub struct Owned<'a> {
    device: &'a Link,
    remotes: BTreeSet<PodSubnet>,
    own_subnet: Option<PodSubnet>,
    subnet_lens: BTreeSet<u8>,
    protect: &'a Protect,
    net: &'a Snapshot,
}

impl<'a> Owned<'a> {
    /// The owned set given the device, the expected objects and `[repair.protect]`.
    pub fn new(
        net: &'a Snapshot,
        device: &'a Link,
        expected: &Expected,
        protect: &'a Protect,
    ) -> Self {
        let remotes: BTreeSet<PodSubnet> = expected.remotes.iter().map(|r| r.subnet).collect();
        let own_subnet = expected.local.as_ref().map(|l| l.subnet);
        let subnet_lens = remotes
            .iter()
            .chain(own_subnet.iter())
            .map(|s| s.len)
            .collect();
        Self {
            device,
            remotes,
            own_subnet,
            subnet_lens,
            protect,
            net,
        }
    }

    /// The prefix lengths of the Nodes' pod subnets.
    pub fn subnet_lens(&self) -> &BTreeSet<u8> {
        &self.subnet_lens
    }

    fn device_ok(&self) -> bool {
        !self.protect.covers_device(&self.device.name)
    }

    fn dev_protected(&self, index: u32) -> bool {
        self.net
            .link(index)
            .is_some_and(|link| self.protect.covers_device(&link.name))
    }

    /// An FDB entry of the mirror.
    pub fn fdb(&self, entry: &FdbEntry) -> bool {
        self.device_ok()
            && entry.ifindex == self.device.index
            && entry.has_unicast_mac()
            && entry.vlan.is_none()
            && entry.master.is_none()
            && !entry.dst.is_some_and(|d| self.protect.covers_addr(&d))
    }

    /// A neighbour of the mirror.
    pub fn neighbour(&self, neighbour: &Neighbour) -> bool {
        self.device_ok()
            && neighbour.ifindex == self.device.index
            && neighbour.ip.is_ipv4()
            && !self.protect.covers_addr(&neighbour.ip)
            && !self
                .own_subnet
                .is_some_and(|own| matches!(neighbour.ip, IpAddr::V4(v4) if own.contains(v4)))
    }

    /// A route of the mirror.
    pub fn route(&self, route: &Route) -> bool {
        if route.table != TABLE_MAIN || !route.dst.is_ipv4() || route.tos != 0 {
            return false;
        }
        let Some(subnet) = PodSubnet::of_prefix(&route.dst) else {
            return false;
        };
        if self.own_subnet.is_some_and(|own| own.overlaps(&subnet))
            || self.protect.covers_prefix(&route.dst)
            || route.oifs().any(|oif| self.dev_protected(oif))
        {
            return false;
        }
        if self.remotes.contains(&subnet) {
            // To another Node's pod subnet, whatever it goes through (no protected device:
            // checked above).
            return true;
        }
        // Flannel's form for a Node that left: `<subnet> via <network> dev <vxlan>`.
        self.device_ok()
            && route.kind == RouteKind::Unicast
            && route.nexthops.is_empty()
            && route.oif == Some(self.device.index)
            && route.gateway == Some(IpAddr::V4(subnet.network))
            && self.subnet_lens.contains(&subnet.len)
    }

    /// An object (from a plan or the journal) against this owned set.
    pub fn object(&self, object: &Object) -> bool {
        match object {
            Object::Fdb(f) => self.fdb(f),
            Object::Neighbour(n) => self.neighbour(n),
            Object::Route(r) => self.route(r),
        }
    }
}
