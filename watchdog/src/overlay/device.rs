//! Which link is the cluster's VXLAN device: the one rule the detectors and repair share.

use super::Expected;
use crate::model::net::{Link, Snapshot};

/// The cluster's VXLAN device: the link with the cluster's VNI, Flannel's name for it
/// (`flannel.<VNI>`) preferred. Another name is taken only for an IPv4 device (the
/// desired state is IPv4): dual-stack Flannel's `flannel-v6.<VNI>` has the same VNI and is
/// never taken for a missing `flannel.<VNI>`.
pub fn vxlan_device<'a>(net: &'a Snapshot, expected: &Expected) -> Option<&'a Link> {
    let has_vni = |link: &&Link| link.vxlan.as_ref().is_some_and(|v| v.vni == expected.vni);
    let ipv4 = |link: &&Link| {
        !link.name.starts_with("flannel-v6")
            && link
                .vxlan
                .as_ref()
                .and_then(|v| v.local)
                .is_none_or(|local| local.is_ipv4())
    };
    net.link_by_name(&expected.device)
        .filter(has_vni)
        .or_else(|| net.links().filter(ipv4).find(has_vni))
}
