//! The Nodes behind the findings of every kind: `node` evidence from the addresses,
//! MACs and prefixes a finding names.

use std::net::{IpAddr, SocketAddr};

use crate::{
    findings::Candidate,
    model::desired::{Mac, Model, Node, PodSubnet},
    overlay::Departed,
};

/// The Node a kernel address belongs to: a VTEP (public-ip) or a pod address, for the
/// `node` evidence of the other kinds.
pub fn node_of(model: &Model, addr: IpAddr) -> Option<&str> {
    let IpAddr::V4(v4) = addr else {
        return None;
    };
    model
        .node_with_public_ip(v4)
        .or_else(|| model.node_with_pod_address(v4))
        .map(|node| node.name.as_str())
}

/// The Node `addr` belongs to: its `public-ip` (VTEP), one of its `status.addresses`, or
/// an address in its pod subnet; the Nodes of the model first, then departed ones.
fn owner_of_ip<'a>(model: &'a Model, departed: &'a Departed, addr: IpAddr) -> Option<&'a Node> {
    let nodes = || model.nodes.values().chain(departed.nodes().rev());
    let v4 = match addr {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    };
    nodes()
        .find(|n| v4.is_some() && n.vtep.as_ref().is_ok_and(|v| Some(v.public_ip) == v4))
        .or_else(|| nodes().find(|n| n.has_address(addr)))
        .or_else(|| {
            let v4 = v4?;
            nodes().find(|n| n.pod_subnet.is_some_and(|s| s.contains(v4)))
        })
}

/// The Node whose pod subnet holds all of `prefix` (`10.244.3.0/24`, `10.244.3.0/25`),
/// if one does.
fn owner_of_prefix<'a>(model: &'a Model, departed: &'a Departed, prefix: &str) -> Option<&'a Node> {
    let prefix = PodSubnet::parse(prefix)?;
    model
        .nodes
        .values()
        .chain(departed.nodes().rev())
        .find(|n| {
            n.pod_subnet
                .is_some_and(|s| s.len <= prefix.len && s.contains(prefix.network))
        })
}

/// The Node whose VtepMAC is `mac`.
fn owner_of_mac<'a>(model: &'a Model, departed: &'a Departed, mac: Mac) -> Option<&'a Node> {
    model.node_with_mac(mac).or_else(|| departed.with_mac(mac))
}

/// The Nodes a candidate talks about: every VTEP MAC, address (`10.244.3.2`,
/// `10.244.3.2:8080`) and prefix in its subject, and the prefix and gateway of every route
/// it names, in order, each Node once.
fn nodes_named<'a>(
    candidate: &Candidate,
    model: &'a Model,
    departed: &'a Departed,
) -> Vec<&'a str> {
    let mut names: Vec<&str> = Vec::new();
    let mut add = |node: Option<&'a Node>| {
        if let Some(node) = node
            && !names.contains(&node.name.as_str())
        {
            names.push(&node.name);
        }
    };
    for token in candidate.subject.split_whitespace() {
        let token = token.trim_matches(|c: char| matches!(c, '(' | ')' | ',' | ';' | '[' | ']'));
        if let Some(mac) = Mac::parse(token) {
            add(owner_of_mac(model, departed, mac));
        } else if let Ok(addr) = token.parse::<IpAddr>() {
            add(owner_of_ip(model, departed, addr));
        } else if let Ok(socket) = token.parse::<SocketAddr>() {
            add(owner_of_ip(model, departed, socket.ip()));
        } else if token.contains('/') {
            add(owner_of_prefix(model, departed, token));
        }
    }
    for route in &candidate.routes {
        add(owner_of_prefix(model, departed, &route.prefix));
        if let Some(gateway) = route.gateway.as_deref().and_then(|g| g.parse().ok()) {
            add(owner_of_ip(model, departed, gateway));
        }
    }
    names
}

/// Names the Nodes behind the candidates of every other kind: `node` evidence (Node
/// names joined by `,`) on each candidate that has none yet and whose subject or routes
/// mention a Node's VTEP MAC, VTEP or node address, or pod subnet. Run while the desired
/// state is known, after the detectors.
pub fn name_nodes(candidates: &mut [Candidate], model: &Model, departed: &Departed) {
    for candidate in candidates {
        if candidate.evidence("node").is_some() {
            continue;
        }
        let names = nodes_named(candidate, model, departed);
        if !names.is_empty() {
            let names = names.join(",");
            candidate.evidence.push(crate::findings::Evidence {
                name: "node".to_owned(),
                value: names,
            });
        }
    }
}
