//! The owned set: the only objects repair ever plans a change to (and, with issue 22,
//! executes, recovers or undoes one on):
//! - FDB entries on the cluster's VXLAN device (`overlay::vxlan_device`) with a unicast
//!   MAC (`self` entries: no VLAN, no master);
//! - IPv4 neighbours on that device;
//! - IPv4 routes in the main table whose destination is exactly another Node's pod
//!   subnet, whatever they go through; and routes in the main table through the device in
//!   Flannel's form (`<subnet> via <subnet's network address>`) for a subnet of the
//!   cluster's prefix length (a Node that left);
//! - and never what [`Guard`] refuses, whatever the Nodes or a journal line say.
//!
//! [`Guard`] is the part that needs no desired state, so the executor, crash recovery and
//! `repair undo` enforce it on every operation they send (a journal line is data, not an
//! order): never a route the kernel made (`proto kernel`, a connected `scope link` route
//! without a gateway, anything outside the main table), a route whose prefix holds an
//! address of this node or overlaps the underlay (the networks of every VXLAN device's
//! lower link and local address), this node's own pod subnet, a prefix wider than
//! `repair.widest_prefix_v4`/`_v6`; nothing on or through a `repair.protect.devices`
//! device, no route overlapping a `repair.protect.prefixes` prefix, no neighbour or FDB
//! destination inside one; FDB entries and neighbours only on a VXLAN device.

use std::{collections::BTreeSet, net::IpAddr};

use super::{object::Object, op::Op};
use crate::{
    config::repair::RepairConfig,
    model::{
        desired::PodSubnet,
        net::{FdbEntry, Link, Neighbour, Prefix, Route, RouteKind, Snapshot, TABLE_MAIN},
    },
    overlay::{Bounds, Expected},
};

/// RTPROT_KERNEL.
const PROTO_KERNEL: u8 = 2;
/// RT_SCOPE_LINK.
const SCOPE_LINK: u8 = 253;

/// The overlay's bounds from `[repair]`: what the comparison and the owned set share.
pub fn bounds(settings: &RepairConfig) -> Bounds {
    Bounds {
        widest_v4: settings.widest_prefix_v4,
    }
}

/// What is never repair's, on one read of the kernel (see the module documentation).
pub struct Guard<'a> {
    settings: &'a RepairConfig,
    net: &'a Snapshot,
    own_subnet: Option<PodSubnet>,
    underlay: Vec<Prefix>,
}

impl<'a> Guard<'a> {
    /// The guard for `net` (a fresh read), with this node's pod subnet when known.
    pub fn new(
        net: &'a Snapshot,
        settings: &'a RepairConfig,
        own_subnet: Option<PodSubnet>,
    ) -> Self {
        let underlay = net
            .links()
            .filter(|link| link.vxlan.is_some())
            .flat_map(|link| crate::overlay::underlay(net, Some(link)))
            .collect();
        Self {
            settings,
            net,
            own_subnet,
            underlay,
        }
    }

    fn device(&self, index: u32) -> Option<String> {
        let Some(link) = self.net.link(index) else {
            return Some(format!("device #{index} does not exist"));
        };
        if self.settings.protect.covers_device(&link.name) {
            return Some(format!("{} is in repair.protect.devices", link.name));
        }
        None
    }

    fn vxlan(&self, index: u32) -> Option<String> {
        self.device(index).or_else(|| {
            let link = self.net.link(index)?;
            link.vxlan
                .is_none()
                .then(|| format!("{} is not a VXLAN device", link.name))
        })
    }

    fn local_address_in(&self, prefix: &Prefix) -> Option<IpAddr> {
        self.net
            .addresses()
            .map(|a| a.prefix.addr)
            .find(|addr| prefix.contains(addr))
    }

    /// Why `route` is never repair's, if it is not.
    pub fn route(&self, route: &Route) -> Option<String> {
        let dst = route.dst.network();
        if route.table != TABLE_MAIN {
            return Some(format!("route {dst} is not in the main table"));
        }
        if route.protocol == PROTO_KERNEL {
            return Some(format!("route {dst} was made by the kernel (proto kernel)"));
        }
        if route.gateway.is_none() && route.nexthops.is_empty() && route.scope >= SCOPE_LINK {
            return Some(format!("route {dst} is a connected route (scope link)"));
        }
        let widest = if dst.is_ipv4() {
            ("repair.widest_prefix_v4", self.settings.widest_prefix_v4)
        } else {
            ("repair.widest_prefix_v6", self.settings.widest_prefix_v6)
        };
        if dst.len < widest.1 {
            return Some(format!(
                "route {dst} is wider than /{} ({})",
                widest.1, widest.0
            ));
        }
        if let Some(addr) = self.local_address_in(&dst) {
            return Some(format!("route {dst} holds {addr}, an address of this node"));
        }
        if let Some(under) = self.underlay.iter().find(|u| overlaps(u, &dst)) {
            return Some(format!("route {dst} overlaps the underlay {under}"));
        }
        if let Some(own) = self.own_subnet
            && overlaps(&own.prefix(), &dst)
        {
            return Some(format!(
                "route {dst} overlaps this node's own pod subnet {own}"
            ));
        }
        if self.settings.protect.covers_prefix(&dst) {
            return Some(format!("route {dst} overlaps repair.protect.prefixes"));
        }
        route.oifs().find_map(|oif| self.device(oif))
    }

    /// Why `entry` is never repair's, if it is not.
    pub fn fdb(&self, entry: &FdbEntry) -> Option<String> {
        if let Some(why) = self.vxlan(entry.ifindex) {
            return Some(why);
        }
        entry
            .dst
            .filter(|d| self.settings.protect.covers_addr(d))
            .map(|d| format!("FDB destination {d} is in repair.protect.prefixes"))
    }

    /// Why `neighbour` is never repair's, if it is not.
    pub fn neighbour(&self, neighbour: &Neighbour) -> Option<String> {
        if let Some(why) = self.vxlan(neighbour.ifindex) {
            return Some(why);
        }
        let ip = neighbour.ip;
        if self.settings.protect.covers_addr(&ip) {
            return Some(format!("neighbour {ip} is in repair.protect.prefixes"));
        }
        if self.net.addresses().any(|a| a.prefix.addr == ip) {
            return Some(format!("neighbour {ip} is an address of this node"));
        }
        if let (Some(own), IpAddr::V4(v4)) = (self.own_subnet, ip)
            && own.contains(v4)
        {
            return Some(format!(
                "neighbour {ip} is in this node's own pod subnet {own}"
            ));
        }
        None
    }

    /// Why `object` is never repair's, if it is not.
    pub fn object(&self, object: &Object) -> Option<String> {
        match object {
            Object::Fdb(f) => self.fdb(f.model()),
            Object::Neighbour(n) => self.neighbour(n.model()),
            Object::Route(r) => self.route(r.model()),
        }
    }

    /// Why `op` may not be sent, if it may not: its object before, after, or as the
    /// kernel has it now (a journal line may claim anything about the before-state) is
    /// never repair's.
    pub fn op(&self, op: &Op) -> Option<String> {
        let like = op.after.as_ref().or(op.before.as_ref())?;
        let now = super::object::current(self.net, like);
        op.before
            .iter()
            .chain(op.after.iter())
            .chain(now.iter())
            .find_map(|object| self.object(object))
            .map(|why| format!("outside the owned set: {why}"))
    }
}

fn overlaps(a: &Prefix, b: &Prefix) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(&b.network().addr) || b.contains(&a.network().addr))
}

/// The owned set for one snapshot and desired state (see the module documentation).
pub struct Owned<'a> {
    device: &'a Link,
    remotes: BTreeSet<PodSubnet>,
    own_subnet: Option<PodSubnet>,
    subnet_lens: BTreeSet<u8>,
    guard: Guard<'a>,
}

impl<'a> Owned<'a> {
    /// The owned set given the device, the expected objects and `[repair]`.
    pub fn new(
        net: &'a Snapshot,
        device: &'a Link,
        expected: &Expected,
        settings: &'a RepairConfig,
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
            guard: Guard::new(net, settings, own_subnet),
        }
    }

    /// What is never repair's on this read.
    pub fn guard(&self) -> &Guard<'a> {
        &self.guard
    }

    /// The prefix lengths of the Nodes' pod subnets.
    pub fn subnet_lens(&self) -> &BTreeSet<u8> {
        &self.subnet_lens
    }

    fn device_ok(&self) -> bool {
        !self.guard.settings.protect.covers_device(&self.device.name)
    }

    /// An FDB entry of the mirror.
    pub fn fdb(&self, entry: &FdbEntry) -> bool {
        self.device_ok()
            && entry.ifindex == self.device.index
            && entry.has_unicast_mac()
            && entry.vlan.is_none()
            && entry.master.is_none()
            && self.guard.fdb(entry).is_none()
    }

    /// A neighbour of the mirror.
    pub fn neighbour(&self, neighbour: &Neighbour) -> bool {
        self.device_ok()
            && neighbour.ifindex == self.device.index
            && neighbour.ip.is_ipv4()
            && self.guard.neighbour(neighbour).is_none()
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
            || self.guard.route(route).is_some()
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
