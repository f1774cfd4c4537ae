//! The overlay against the cluster's desired state (Kubernetes Nodes read the way Flannel
//! reads them), in words: `overlay_drift` (the kernel is not what the Nodes say: each
//! drift of the `overlay` room's comparison that lasted `desired.grace`) and
//! `stale_annotation` (the Nodes say something wrong). Both run only while the desired
//! state is known.
//!
//! Subjects name the kernel object in `ip`/`bridge` terms as the other kinds do; the
//! evidence names the Node (`node`), what the kernel has (`kernel`), what it should be
//! (`expected`), and for annotations the command that fixes it (`fix`). The other kinds
//! get their `node` evidence from [`name_nodes`].

mod annotation;
mod naming;

#[cfg(test)]
mod tests;

pub use self::{
    annotation::stale_annotation,
    naming::{name_nodes, node_of},
};
use super::Inputs;
use crate::{
    findings::{Candidate, Kind, Severity},
    model::{
        desired::{ANNOTATION_PREFIX, Node, PodSubnet},
        net::{Neighbour, Object, format_mac},
    },
    overlay::{About, Comparison, DeviceDrift, Drift, Observed, Owner, RemoteObjects},
};

/// Both overlay detectors on what the comparison `observed` found: an `overlay_drift` for
/// each drift that lasted the grace, and the `stale_annotation`s.
pub fn detect(inputs: &Inputs<'_>, observed: &Observed) -> Vec<Candidate> {
    let comparison = &observed.comparison;
    let mut candidates: Vec<Candidate> = observed
        .lasted()
        .map(|drift| overlay_drift(inputs, comparison, drift))
        .collect();
    candidates.extend(stale_annotation(
        inputs,
        &observed.model,
        &comparison.doubts,
    ));
    candidates
}

/// One drift as an `overlay_drift` finding: critical for this node's device and a
/// member's objects, a warning for a leftover.
pub fn overlay_drift(inputs: &Inputs<'_>, comparison: &Comparison, drift: &Drift) -> Candidate {
    let severity = if drift.is_leftover() {
        Severity::Warning
    } else {
        Severity::Critical
    };
    let (problem, kernel, expected) = match &drift.about {
        About::Device(what) => device(comparison, what),
        About::Member(remote) => member(inputs, comparison.dev(), remote, drift),
        About::Leftover(owner) => leftover(inputs, comparison.dev(), owner, drift),
    };
    let mut candidate = Candidate::new(Kind::OverlayDrift, drift.subject.clone(), severity)
        .with("node", drift.node.as_deref().unwrap_or("none"))
        .with("problem", problem)
        .with("kernel", kernel)
        .with("expected", expected);
    if let Some(Object::Route(route)) = &drift.kernel {
        candidate.routes.push(inputs.route_ref(route));
    }
    candidate
}

/// (problem, kernel, expected) for this node's device.
fn device(comparison: &Comparison, what: &DeviceDrift) -> (String, String, String) {
    let expected = &comparison.expected;
    let dev = comparison.dev();
    let local = expected
        .local
        .as_ref()
        .expect("a device drift is found only for a member");
    let vni = expected.vni;
    match what {
        DeviceDrift::Missing => (
            format!(
                "no VXLAN device with VNI {vni}: no traffic reaches the {} other nodes' pods",
                expected.remotes.len()
            ),
            "missing".into(),
            format!(
                "dev {dev} type vxlan id {vni} local {} address {}",
                local.public_ip, local.mac
            ),
        ),
        DeviceDrift::Down => (
            format!("{dev} is down"),
            "state DOWN".into(),
            "state UP".into(),
        ),
        DeviceDrift::Mac(mac) => {
            let actual = or_none(*mac);
            (
                format!(
                    "{dev}'s MAC is not this node's VtepMAC: the other nodes send to {}",
                    local.mac
                ),
                format!("link/ether {actual}"),
                format!("link/ether {}", local.mac),
            )
        }
        DeviceDrift::Local(ip) => {
            let actual = or_none(*ip);
            let public = local.public_ip;
            (
                format!(
                    "{dev} sends from {actual} but this node's {ANNOTATION_PREFIX}/public-ip is \
                     {public}: the other nodes send to {public}"
                ),
                format!("vxlan id {vni} local {actual}"),
                format!("vxlan id {vni} local {public}"),
            )
        }
    }
}

/// `value` as text, `none` when there is none.
fn or_none(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// `neigh 10.244.2.0 dev flannel.1 lladdr 02:fa:… PERMANENT` (no `lladdr` unresolved).
fn neighbour_text(neighbour: &Neighbour, dev: &str) -> String {
    match neighbour.mac {
        Some(mac) => format!(
            "neigh {} dev {dev} lladdr {} {}",
            neighbour.ip,
            format_mac(&mac),
            neighbour.state
        ),
        None => format!("neigh {} dev {dev} {}", neighbour.ip, neighbour.state),
    }
}

/// (problem, kernel, expected) for one of a member's objects.
fn member(
    inputs: &Inputs<'_>,
    dev: &str,
    remote: &RemoteObjects,
    drift: &Drift,
) -> (String, String, String) {
    let node = &remote.node;
    match (&drift.expected, &drift.kernel) {
        (Some(Object::Fdb(_)), None) => (
            format!("no FDB entry for {node}'s VtepMAC: its pods are unreachable"),
            "missing".into(),
            remote.fdb(dev),
        ),
        (Some(Object::Fdb(_)), Some(Object::Fdb(entry))) => {
            let dst = or_none(entry.dst);
            (
                format!(
                    "{node}'s VXLAN packets go to {dst}, not its {ANNOTATION_PREFIX}/public-ip {}",
                    remote.public_ip
                ),
                format!("fdb {} dev {dev} dst {dst}", remote.mac),
                remote.fdb(dev),
            )
        }
        (Some(Object::Neighbour(_)), None) => (
            format!(
                "no neighbour entry for {node}'s gateway {}: packets to {} wait for ARP that \
                 never comes",
                remote.gateway(),
                remote.subnet
            ),
            "missing".into(),
            remote.neighbour(dev),
        ),
        (Some(Object::Neighbour(_)), Some(Object::Neighbour(neighbour))) => (
            format!(
                "{node}'s gateway {} does not resolve to its VtepMAC {}",
                remote.gateway(),
                remote.mac
            ),
            neighbour_text(neighbour, dev),
            remote.neighbour(dev),
        ),
        (Some(Object::Route(_)), None) => (
            format!("no route to {node}'s pod subnet {}", remote.subnet),
            "missing".into(),
            remote.route(dev),
        ),
        (_, kernel) => {
            let shown = match kernel {
                Some(Object::Route(route)) => inputs.describe(route),
                _ => "?".into(),
            };
            (
                format!(
                    "{node}'s pod subnet {} is routed elsewhere, not through {dev}",
                    remote.subnet
                ),
                format!("route {shown}"),
                remote.route(dev),
            )
        }
    }
}

/// `<what>: <node> is no longer among the Nodes …`, for what a departed Node left.
fn gone(node: &Node, what: String) -> String {
    format!(
        "{what}: {} is no longer among the Nodes (it left while this watchdog watched), and \
         Flannel removes a Node's FDB entry, neighbour and route only when it sees the \
         deletion",
        node.name
    )
}

/// (problem, kernel, expected) for an object no Node accounts for.
fn leftover(
    inputs: &Inputs<'_>,
    dev: &str,
    owner: &Owner,
    drift: &Drift,
) -> (String, String, String) {
    let (problem, kernel) = match &drift.kernel {
        Some(Object::Fdb(entry)) => {
            let mac = format_mac(&entry.mac);
            let dst = or_none(entry.dst);
            let problem = match owner {
                Owner::Departed(node) => {
                    gone(node, format!("no Node has VtepMAC {mac}, {}'s", node.name))
                }
                Owner::OldVtepOf(node) => format!(
                    "no Node has VtepMAC {mac}; {dst} is {node}'s public-ip (an entry for its \
                     old VTEP MAC, which Flannel never removes)"
                ),
                Owner::Nobody => format!("no Node has VtepMAC {mac}"),
            };
            (problem, format!("fdb {mac} dev {dev} dst {dst}"))
        }
        Some(Object::Neighbour(neighbour)) => {
            let what = format!("no Node's pod subnet has the gateway {}", neighbour.ip);
            let problem = match owner {
                Owner::Departed(node) => gone(node, format!("{what}, {}'s", node.name)),
                _ => what,
            };
            let kernel = format!(
                "neigh {} dev {dev} lladdr {} PERMANENT",
                neighbour.ip,
                neighbour
                    .mac
                    .map_or_else(|| "none".into(), |m| format_mac(&m))
            );
            (problem, kernel)
        }
        Some(Object::Route(route)) => {
            let subnet = PodSubnet::of_prefix(&route.dst)
                .map_or_else(|| route.dst.to_string(), |s| s.to_string());
            let what = format!("no Node has the pod subnet {subnet}: the route leads nowhere");
            let problem = match owner {
                Owner::Departed(node) => gone(node, format!("{what} ({} had it)", node.name)),
                _ => what,
            };
            (problem, format!("route {}", inputs.describe(route)))
        }
        None => (String::new(), "missing".into()),
    };
    (problem, kernel, "none".into())
}
