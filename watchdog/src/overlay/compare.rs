//! The comparison itself: the kernel (the mirror's snapshot) against what the Nodes say
//! this node must have.

use std::net::IpAddr;

use super::{
    About, Departed, DeviceDrift, Doubt, Drift, Expected, Owner, RemoteObjects, doubts, expected,
    vxlan_device,
};
use crate::model::{
    desired::{Mac, Model, PodSubnet},
    net::{FdbEntry, Link, Object, Route, RouteKind, Snapshot, TABLE_MAIN, format_mac},
};

/// One comparison of the kernel with the desired state, for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// What the Nodes say this node must have.
    pub expected: Expected,
    /// The cluster's VXLAN device as the kernel has it ([`vxlan_device`]), if any.
    pub device: Option<Link>,
    /// Every object that differs, in order: the device, then per member (by name) its FDB
    /// entry, neighbour and route, then the leftovers (FDB entries, neighbours, routes).
    /// Empty when this node takes no part.
    pub drifts: Vec<Drift>,
    /// What the Nodes contradict themselves about.
    pub doubts: Vec<Doubt>,
}

impl Comparison {
    /// True when this node is a member of the overlay (a Node of its name with Flannel's
    /// VXLAN annotations): otherwise Flannel does not run here and nothing is compared.
    pub fn takes_part(&self) -> bool {
        self.expected.local.is_some()
    }

    /// The device's name: the kernel's, else the one Flannel would give it.
    pub fn dev(&self) -> &str {
        self.device
            .as_ref()
            .map_or(&self.expected.device, |link| &link.name)
    }

    /// The drift with `subject`, if this comparison has it.
    pub fn drift(&self, subject: &str) -> Option<&Drift> {
        self.drifts.iter().find(|d| d.subject == subject)
    }
}

/// Compares `net` with what `model` says node `own` must have: the VXLAN device (missing,
/// down, another MAC or local address), per other member its FDB entry, neighbour and
/// route (missing or different), and the FDB entries, permanent neighbours and routes on
/// the device that no Node accounts for (named after the Node when it is one that
/// `departed`, or one whose `public-ip` an old-MAC entry points at). Nothing to compare
/// when `own` takes no part.
pub fn compare(net: &Snapshot, model: &Model, own: &str, departed: &Departed) -> Comparison {
    let expected = expected(model, own);
    let device = vxlan_device(net, &expected).cloned();
    let mut comparison = Comparison {
        drifts: Vec::new(),
        doubts: doubts(model),
        device,
        expected,
    };
    let Some(local) = &comparison.expected.local else {
        return comparison;
    };
    let drifts = &mut comparison.drifts;
    let Some(link) = &comparison.device else {
        drifts.push(device_drift(
            own,
            format!("dev {}", comparison.expected.device),
            DeviceDrift::Missing,
        ));
        return comparison;
    };
    let dev = link.name.as_str();
    if !link.admin_up {
        drifts.push(device_drift(own, format!("dev {dev}"), DeviceDrift::Down));
    }
    let mac = link.mac.map(Mac);
    if mac != Some(local.mac) {
        let shown = mac.map_or_else(|| "none".to_owned(), |m| m.to_string());
        drifts.push(device_drift(
            own,
            format!("dev {dev} address {shown}"),
            DeviceDrift::Mac(mac),
        ));
    }
    let local_ip = link.vxlan.as_ref().and_then(|v| v.local);
    if local_ip != Some(IpAddr::V4(local.public_ip)) {
        let shown = local_ip.map_or_else(|| "none".to_owned(), |ip| ip.to_string());
        drifts.push(device_drift(
            own,
            format!("dev {dev} local {shown}"),
            DeviceDrift::Local(local_ip),
        ));
    }
    for remote in &comparison.expected.remotes {
        drifts.extend(member(net, link, remote));
    }
    drifts.extend(leftovers(net, link, model, &comparison.expected, departed));
    comparison
}

fn device_drift(own: &str, subject: String, drift: DeviceDrift) -> Drift {
    Drift {
        subject,
        node: Some(own.to_owned()),
        about: About::Device(drift),
        kernel: None,
        expected: None,
    }
}

/// The `self` FDB entry of `device` for `mac` (no VLAN, no bridge master): a VXLAN device
/// has at most one per unicast MAC.
pub fn fdb_entry<'a>(net: &'a Snapshot, device: &Link, mac: [u8; 6]) -> Option<&'a FdbEntry> {
    net.fdb_with_mac(device.index, &mac)
        .find(|e| e.vlan.is_none() && e.master.is_none())
}

/// The route the kernel uses for `subnet` in the main table: of the routes to it without
/// TOS or source prefix, the one with the lowest metric.
pub fn subnet_route(net: &Snapshot, subnet: PodSubnet) -> Option<&Route> {
    net.routes_to(TABLE_MAIN, &subnet.prefix())
        .filter(|r| r.tos == 0 && r.src.is_none())
        .min_by_key(|r| r.priority)
}

/// True for a route in Flannel's form through `device`: `via <gateway> dev <device>`,
/// one path, unicast (metric and flags aside).
fn flannel_form(route: &Route, device: &Link, gateway: IpAddr) -> bool {
    route.kind == RouteKind::Unicast
        && route.nexthops.is_empty()
        && route.gateway == Some(gateway)
        && route.oif == Some(device.index)
}

fn member(net: &Snapshot, device: &Link, remote: &RemoteObjects) -> Vec<Drift> {
    let dev = device.name.as_str();
    let mut out = Vec::new();
    let drift = |subject: String, kernel: Option<Object>, expected: Object| Drift {
        subject,
        node: Some(remote.node.clone()),
        about: About::Member(remote.clone()),
        kernel,
        expected: Some(expected),
    };
    // FDB: one unicast entry for the VtepMAC, towards public-ip.
    let want = remote.fdb_entry(device);
    match fdb_entry(net, device, remote.mac.0) {
        None => out.push(drift(
            format!(
                "fdb {} dev {dev} dst {} missing",
                remote.mac, remote.public_ip
            ),
            None,
            Object::Fdb(want),
        )),
        Some(entry) if entry.dst != want.dst => {
            let dst = entry
                .dst
                .map_or_else(|| "none".to_owned(), |d| d.to_string());
            out.push(drift(
                format!("fdb {} dev {dev} dst {dst}", remote.mac),
                Some(Object::Fdb(entry.clone())),
                Object::Fdb(want),
            ));
        }
        Some(_) => {}
    }
    // Neighbour: <subnet>.0 → VtepMAC.
    let want = remote.neighbour_entry(device);
    match net.neighbour(device.index, &want.ip) {
        None => out.push(drift(
            format!("neigh {} dev {dev} missing", want.ip),
            None,
            Object::Neighbour(want),
        )),
        Some(neighbour) if neighbour.mac != want.mac => out.push(drift(
            format!("neigh {} dev {dev}", want.ip),
            Some(Object::Neighbour(neighbour.clone())),
            Object::Neighbour(want),
        )),
        Some(_) => {}
    }
    // Route: <subnet> via <subnet>.0 dev flannel.<VNI> onlink.
    let want = remote.route_entry(device);
    match subnet_route(net, remote.subnet) {
        None => out.push(drift(
            format!("{} missing", remote.route(dev)),
            None,
            Object::Route(want),
        )),
        Some(route) if !flannel_form(route, device, IpAddr::V4(remote.gateway())) => {
            out.push(drift(
                format!("route {}", route.display(net)),
                Some(Object::Route(route.clone())),
                Object::Route(want),
            ));
        }
        Some(_) => {}
    }
    out
}

/// FDB entries, permanent neighbours and routes on the device that no Node accounts for.
fn leftovers(
    net: &Snapshot,
    device: &Link,
    model: &Model,
    expected: &Expected,
    departed: &Departed,
) -> Vec<Drift> {
    let dev = device.name.as_str();
    let own_subnet = expected.local.as_ref().map(|l| l.subnet);
    let leftover = |subject: String, owner: Owner, object: Object| Drift {
        subject,
        node: owner.node().map(str::to_owned),
        about: About::Leftover(owner),
        kernel: Some(object),
        expected: None,
    };
    let mut out = Vec::new();
    for entry in net.fdb_of(device.index) {
        let Some(dst) = entry.dst else { continue };
        if !entry.has_unicast_mac()
            || entry.vlan.is_some()
            || entry.master.is_some()
            || model.node_with_mac(Mac(entry.mac)).is_some()
        {
            continue;
        }
        let owner = if let Some(node) = departed.with_mac(Mac(entry.mac)) {
            Owner::Departed(node.clone())
        } else if let IpAddr::V4(v4) = dst
            && let Some(node) = model.node_with_public_ip(v4)
        {
            Owner::OldVtepOf(node.name.clone())
        } else {
            Owner::Nobody
        };
        out.push(leftover(
            format!("fdb {} dev {dev} dst {dst}", format_mac(&entry.mac)),
            owner,
            Object::Fdb(entry.clone()),
        ));
    }
    let accounted = |v4| {
        expected.remotes.iter().any(|r| r.gateway() == v4)
            || own_subnet.is_some_and(|s| s.contains(v4))
    };
    for neighbour in net.neighbours() {
        let IpAddr::V4(v4) = neighbour.ip else {
            continue;
        };
        if neighbour.ifindex != device.index || !neighbour.state.is_permanent() || accounted(v4) {
            continue;
        }
        let owner = departed
            .nodes()
            .rev()
            .find(|n| n.pod_subnet.is_some_and(|s| s.gateway() == v4))
            .map_or(Owner::Nobody, |node| Owner::Departed(node.clone()));
        out.push(leftover(
            format!("neigh {} dev {dev}", neighbour.ip),
            owner,
            Object::Neighbour(neighbour.clone()),
        ));
    }
    for route in net.routes_in_table(TABLE_MAIN) {
        if route.oif != Some(device.index) || route.gateway.is_none() {
            continue;
        }
        let Some(subnet) = PodSubnet::of_prefix(&route.dst) else {
            continue;
        };
        if expected.remote_with_subnet(subnet).is_some()
            || own_subnet.is_some_and(|own| own.overlaps(&subnet))
        {
            continue;
        }
        let owner = departed
            .with_subnet(subnet)
            .map_or(Owner::Nobody, |node| Owner::Departed(node.clone()));
        out.push(leftover(
            format!("route {}", route.display(net)),
            owner,
            Object::Route(route.clone()),
        ));
    }
    out
}
