//! `stale_annotation`: the Nodes say something wrong, and the command that fixes it.

use std::net::IpAddr;

use super::Inputs;
use crate::{
    findings::{Candidate, Kind, Severity},
    model::desired::{ANNOTATION_PREFIX, Model, Skip, quoted},
    overlay::Doubt,
};

fn annotate_fix(node: &str, key: &str) -> String {
    format!(
        "kubectl annotate node {node} {ANNOTATION_PREFIX}/{key}- (or set the right value), \
         then restart flanneld on {node} (K3s: systemctl restart k3s or k3s-agent; the \
         kube-flannel DaemonSet: delete its pod on {node}) so it writes public-ip again"
    )
}

/// The Nodes say something wrong: a value Flannel cannot use, a `public-ip-overwrite`
/// that differs from `public-ip` (it takes effect at that node's next restart), a
/// `public-ip` that is none of the Node's addresses and silent while its InternalIP
/// answers, and each of the `doubts` (two Nodes with one VtepMAC, overlapping pod
/// subnets). Each gives the command that fixes it.
pub fn stale_annotation(inputs: &Inputs<'_>, model: &Model, doubts: &[Doubt]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for node in model.nodes.values() {
        if let Err(Skip::Invalid(problems)) = &node.vtep {
            let mut candidate = Candidate::new(
                Kind::StaleAnnotation,
                format!("node {}", node.name),
                Severity::Warning,
            )
            .with("node", &node.name);
            for problem in problems {
                candidate = candidate.with("problem", problem);
            }
            out.push(candidate.with(
                "fix",
                format!(
                    "correct the Node (kubectl edit node {}); flanneld on {} rewrites its own \
                     annotations when it restarts",
                    node.name, node.name
                ),
            ));
        }
        let public = node.public_ip.as_deref().map(str::trim);
        if let Some(overwrite) = node.public_ip_overwrite.as_deref().map(str::trim)
            && Some(overwrite) != public
        {
            // An address is short; anything else is quoted, capped.
            let overwrite = quoted(overwrite);
            let public = public.map(quoted);
            out.push(
                Candidate::new(
                    Kind::StaleAnnotation,
                    format!(
                        "node {} annotation {ANNOTATION_PREFIX}/public-ip-overwrite={overwrite}",
                        node.name
                    ),
                    Severity::Warning,
                )
                .with("node", &node.name)
                .with(
                    "problem",
                    format!(
                        "public-ip-overwrite {overwrite} differs from public-ip {}: flanneld on \
                         {} copies it into public-ip at its next start, and every node then \
                         sends {}'s VXLAN traffic to {overwrite}",
                        public.as_deref().unwrap_or("(unset)"),
                        node.name,
                        node.name
                    ),
                )
                .with(
                    "addresses",
                    node.addresses
                        .iter()
                        .map(|a| format!("{} {}", a.kind, a.ip))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
                .with("fix", annotate_fix(&node.name, "public-ip-overwrite")),
            );
        }
    }
    for (node, vtep) in model.members() {
        let ip = IpAddr::V4(vtep.public_ip);
        if node.has_address(ip) {
            continue;
        }
        let Some(internal) = node.address_of("InternalIP") else {
            continue;
        };
        let (sent, back) = traffic(inputs, ip);
        let (_, internal_back) = traffic(inputs, internal);
        if !(inputs.full_window()
            && sent >= inputs.settings.min_packets
            && back == 0
            && internal_back > 0)
        {
            continue;
        }
        out.push(
            Candidate::new(
                Kind::StaleAnnotation,
                format!(
                    "node {} annotation {ANNOTATION_PREFIX}/public-ip={}",
                    node.name, vtep.public_ip
                ),
                Severity::Critical,
            )
            .with("node", &node.name)
            .with(
                "problem",
                format!(
                    "public-ip {} is none of {}'s addresses and silent ({sent} packets sent in \
                     {}, none back) while its InternalIP {internal} answers ({internal_back} \
                     packets back)",
                    vtep.public_ip,
                    node.name,
                    humantime::format_duration(inputs.settings.window)
                ),
            )
            .with("fix", annotate_fix(&node.name, "public-ip-overwrite")),
        );
    }
    for doubt in doubts {
        out.push(match doubt {
            Doubt::SharedMac { mac, nodes } => Candidate::new(
                Kind::StaleAnnotation,
                format!("VtepMAC {mac} on nodes {}", nodes.join(", ")),
                Severity::Critical,
            )
            .with("node", nodes.join(","))
            .with(
                "problem",
                format!(
                    "{} Nodes announce VtepMAC {mac}: every node keeps one FDB entry per MAC, so \
                     only one of them is reachable",
                    nodes.len()
                ),
            )
            .with(
                "fix",
                format!(
                    "restart flanneld on all but one of {} (deleting flannel.<VNI> first) so \
                     each writes a fresh VtepMAC",
                    nodes.join(", ")
                ),
            ),
            Doubt::Overlap { a, b } => Candidate::new(
                Kind::StaleAnnotation,
                format!(
                    "pod subnets {} ({}) and {} ({}) overlap",
                    a.1, a.0, b.1, b.0
                ),
                Severity::Critical,
            )
            .with("node", format!("{},{}", a.0, b.0))
            .with(
                "problem",
                "two Nodes own overlapping pod subnets: Flannel routes the shared addresses \
                 to only one",
            )
            .with(
                "fix",
                format!(
                    "give one of {} and {} a new spec.podCIDR (kubectl delete node and re-join \
                     it)",
                    a.0, b.0
                ),
            ),
            Doubt::SharedPublicIp { ip, nodes } => Candidate::new(
                Kind::StaleAnnotation,
                format!(
                    "{ANNOTATION_PREFIX}/public-ip {ip} on nodes {}",
                    nodes.join(", ")
                ),
                Severity::Critical,
            )
            .with("node", nodes.join(","))
            .with(
                "problem",
                format!(
                    "{} Nodes announce public-ip {ip}: their VXLAN packets all go to one host, \
                     so at most one of them is reachable; repair changes nothing of theirs",
                    nodes.len()
                ),
            )
            .with(
                "fix",
                format!(
                    "find which of {} really has {ip}; on the others set \
                     {ANNOTATION_PREFIX}/public-ip-overwrite to their own address and restart \
                     flanneld there",
                    nodes.join(", ")
                ),
            ),
            Doubt::Unsafe {
                node,
                subnet,
                reason,
            } => Candidate::new(
                Kind::StaleAnnotation,
                format!("node {node} pod subnet {subnet}"),
                Severity::Critical,
            )
            .with("node", node)
            .with(
                "problem",
                format!(
                    "{node}'s pod subnet {subnet} {reason}: it cannot be an overlay route on \
                     this node, so the Node is not believed and repair changes nothing of it"
                ),
            )
            .with(
                "fix",
                format!(
                    "correct {node}'s spec.podCIDR (kubectl delete node {node} and re-join it \
                     with the controller manager's --cluster-cidr giving it a pod subnet)"
                ),
            ),
        });
    }
    out
}

/// Packets to and from `ip` on every interface within the window.
fn traffic(inputs: &Inputs<'_>, ip: IpAddr) -> (u64, u64) {
    let mut sent = 0;
    let mut back = 0;
    for (&(ifindex, addr), now) in &inputs.now.peers {
        if addr != ip {
            continue;
        }
        let (tx0, rx0) = inputs
            .then
            .peers
            .get(&(ifindex, addr))
            .map_or((0, 0), |then| (then.tx_packets, then.rx_packets));
        sent += now.tx_packets.saturating_sub(tx0);
        back += now.rx_packets.saturating_sub(rx0);
    }
    (sent, back)
}
