//! Bad-checksum drops (`IP_CSUM`, `UDP_CSUM`, …): the sending peer, the device they
//! arrived on and its checksum offloads.

use std::{collections::BTreeMap, net::IpAddr};

use super::{CHECKSUM, Group, Scope, sustained};
use crate::{
    detect::Inputs,
    findings::{Candidate, Kind, Severity},
};

/// Bad-checksum drops of this node's pod or overlay traffic, per sending peer and the
/// device they arrived on, with the device's checksum offloads.
pub fn checksum_drops(inputs: &Inputs<'_>) -> Vec<Candidate> {
    let scope = Scope::new(inputs);
    let mut groups: BTreeMap<(u32, u32, IpAddr), Group<'_>> = BTreeMap::new();
    for (flow, delta, concerns) in inputs.flow_deltas(&scope, CHECKSUM) {
        groups
            .entry((flow.netns, flow.ifindex, flow.src))
            .or_default()
            .add(flow, delta, concerns);
    }
    let mut candidates = Vec::new();
    for ((netns, ifindex, peer), group) in groups {
        let group = group.sorted();
        if !sustained(inputs, &group) {
            continue;
        }
        let own = scope.own(netns);
        let dev = if own {
            inputs.dev(ifindex)
        } else {
            format!("#{ifindex} in {}", inputs.namespace(netns))
        };
        let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
        for (flow, count) in &group.flows {
            *reasons.entry(flow.reason.as_str()).or_default() += count;
        }
        let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let vxlan = group.concerns.contains("overlay traffic");
        let what = if vxlan {
            "VXLAN packets with a bad outer UDP checksum"
        } else {
            "packets with bad checksums"
        };
        let mut candidate = Candidate::new(
            Kind::ChecksumDrop,
            format!("checksum drops from {peer} dev {dev}"),
            Severity::Critical,
        )
        .with(
            "problem",
            format!("{peer} sends {what}; {dev} drops {}", group.summary()),
        )
        .with("reasons", reasons.join(", "));
        if own {
            for device in offload_devices(inputs, ifindex) {
                let shown = match inputs
                    .now
                    .stack
                    .offloads
                    .as_ref()
                    .and_then(|all| all.get(&device))
                {
                    Some(offloads) => match &offloads.features {
                        Ok(features) => features
                            .iter()
                            .filter(|(name, _)| {
                                *name == "rx-checksum" || name.starts_with("tx-checksum-ip")
                            })
                            .map(|(name, on)| format!("{name} {}", if *on { "on" } else { "off" }))
                            .collect::<Vec<_>>()
                            .join(", "),
                        Err(why) => why.clone(),
                    },
                    None => format!("not read yet: `ethtool -k {device}`"),
                };
                candidate = candidate.with("offloads", format!("{device}: {shown}"));
            }
        }
        let fix = if vxlan {
            format!(
                "on the sender ({peer}): turn off the VXLAN device's checksum offload \
                 (`ethtool -K flannel.1 tx-checksum-ip-generic off`, flannel#1279) and check \
                 its NIC and driver; here `ethtool -k {dev}` shows what this side validates"
            )
        } else {
            format!(
                "on the sender ({peer}): check its NIC, driver and checksum offloads \
                 (`ethtool -k <dev>`; `ethtool -K <dev> tx off` to compare)"
            )
        };
        candidate = candidate.with("fix", fix);
        candidates.push(group.evidence(inputs, candidate));
    }
    candidates
}

/// The devices whose offloads explain checksum drops on `ifindex`: the device itself and,
/// for a VXLAN device, its underlay.
pub(super) fn offload_devices(inputs: &Inputs<'_>, ifindex: u32) -> Vec<String> {
    let Some(link) = inputs.net.link(ifindex) else {
        return Vec::new();
    };
    let mut devices = vec![link.name.clone()];
    if let Some(underlay) = link
        .vxlan
        .as_ref()
        .and_then(|vxlan| vxlan.underlay)
        .and_then(|index| inputs.net.link(index))
    {
        devices.push(underlay.name.clone());
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use std::{collections::BTreeSet, sync::Arc};

    use crate::model::stack::{Offloads, Stack};

    #[test]
    fn bad_vxlan_checksums_name_the_peer_the_device_and_its_offloads() {
        let net = node();
        let dropped = flow(
            "UDP_CSUM",
            OWN,
            ETH0,
            "192.168.77.11",
            "192.168.77.10",
            8472,
        );
        let stack = Stack {
            offloads: Some(Arc::new(
                [(
                    "eth0".to_owned(),
                    Offloads {
                        features: Ok([
                            ("rx-checksum".to_owned(), false),
                            ("tx-checksum-ip-generic".to_owned(), true),
                            ("tx-gso-partial".to_owned(), true),
                        ]
                        .into()),
                    },
                )]
                .into(),
            )),
            ..Stack::default()
        };
        let (then, now) = samples(&[dropped], 12, stack);
        let (candidates, request) = judge(&net, &then, &now);
        assert_eq!(request.offloads, BTreeSet::from(["eth0".to_owned()]));
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        let c = &candidates[0];
        assert_eq!(c.kind, Kind::ChecksumDrop);
        assert_eq!(c.subject, "checksum drops from 192.168.77.11 dev eth0");
        assert_eq!(c.evidence("reasons"), Some("UDP_CSUM 12"));
        assert_eq!(
            c.evidence("offloads"),
            Some("eth0: rx-checksum off, tx-checksum-ip-generic on")
        );
        assert!(
            c.evidence("problem")
                .unwrap()
                .contains("VXLAN packets with a bad outer UDP checksum")
        );
    }
}
