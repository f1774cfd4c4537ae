//! What the causes' tests share: a node with pod networks and an overlay, drop flows,
//! samples, and the three detectors and the stack request judged together.

use std::time::{Duration, Instant};

use super::*;
use crate::{
    config::DetectConfig,
    detect::Sample,
    model::{
        net::{Address, Link, Route, Snapshot, Update, Vxlan},
        probe::ProbeBook,
        stack::Stack,
    },
};

pub(super) const OWN: u32 = 4026531840;
pub(super) const POD: u32 = 4026532100;
pub(super) const ETH0: u32 = 2;
pub(super) const FLANNEL: u32 = 3;
pub(super) const CNI0: u32 = 4;

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
    Link {
        index,
        name: name.into(),
        kind: kind.map(str::to_owned),
        admin_up: true,
        oper_up: true,
        mtu: 1500,
        master: None,
        mac: None,
        vxlan: None,
    }
}

/// Node 0 of a Flannel overlay: eth0 192.168.77.10/24, flannel.1, cni0 with the pod
/// subnet 10.244.0.0/24, a route to node 1's pods.
pub(super) fn node() -> Snapshot {
    let mut net = Snapshot::new();
    net.apply(Update::NewLink(link(ETH0, "eth0", None)));
    net.apply(Update::NewLink(Link {
        vxlan: Some(Vxlan {
            vni: 1,
            local: Some(ip("192.168.77.10")),
            port: 8472,
            underlay: Some(ETH0),
            learning: false,
        }),
        ..link(FLANNEL, "flannel.1", Some("vxlan"))
    }));
    net.apply(Update::NewLink(link(CNI0, "cni0", Some("bridge"))));
    for (ifindex, address) in [
        (ETH0, "192.168.77.10/24"),
        (FLANNEL, "10.244.0.0/32"),
        (CNI0, "10.244.0.1/24"),
    ] {
        net.apply(Update::NewAddress(Address {
            ifindex,
            prefix: address.parse().unwrap(),
        }));
    }
    for (dst, oif, gateway) in [
        ("192.168.77.0/24", ETH0, None),
        ("10.244.0.0/24", CNI0, None),
        ("10.244.1.0/24", FLANNEL, Some("10.244.1.0")),
    ] {
        net.apply(Update::NewRoute(Route {
            oif: Some(oif),
            gateway: gateway.map(ip),
            onlink: gateway.is_some(),
            ..Route::unicast(dst.parse().unwrap())
        }));
    }
    net
}

pub(super) fn flow(
    reason: &str,
    netns: u32,
    ifindex: u32,
    src: &str,
    dst: &str,
    udp: u16,
) -> DropFlow {
    DropFlow {
        netns,
        reason: reason.into(),
        ifindex,
        src: ip(src),
        dst: ip(dst),
        protocol: if udp == 0 { 6 } else { 17 },
        dport: udp,
    }
}

/// Samples 10 s apart with `flows` dropped `count` times each in between.
pub(super) fn samples(flows: &[DropFlow], count: u64, stack: Stack) -> (Sample, Sample) {
    let start = Instant::now();
    let then = Sample {
        at: Some(start),
        own_netns: OWN,
        ..Sample::default()
    };
    let mut now = Sample {
        at: Some(start + Duration::from_secs(10)),
        own_netns: OWN,
        stack,
        ..Sample::default()
    };
    for flow in flows {
        now.drop_flows.insert(flow.clone(), count);
    }
    now.client_names.insert(POD, "default/web".into());
    (then, now)
}

pub(super) fn judge(net: &Snapshot, then: &Sample, now: &Sample) -> (Vec<Candidate>, StackRequest) {
    let settings = DetectConfig::default();
    let probes = ProbeBook::default();
    let inputs = Inputs {
        net,
        now,
        then,
        recent: then,
        settings: &settings,
        probes: &probes,
    };
    let mut candidates = firewall_drops(&inputs);
    candidates.extend(rp_filter_drops(&inputs));
    candidates.extend(checksum_drops(&inputs));
    (candidates, stack_request(&inputs))
}
