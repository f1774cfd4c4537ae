//! The overlay against the cluster's desired state (Kubernetes Nodes read the way Flannel
//! reads them): `overlay_drift` (the kernel is not what the Nodes say) and
//! `stale_annotation` (the Nodes say something wrong). Both are pure and run only while
//! the desired state is known; a drift must persist for `desired.grace` ([`Grace`]) so
//! Flannel's own reprogramming after a Node changes is never flagged.
//!
//! Subjects name the kernel object in `ip`/`bridge` terms as the other kinds do; the
//! evidence names the Node (`node`), what the kernel has (`kernel`), what it should be
//! (`expected`), and for annotations the command that fixes it (`fix`). The other kinds
//! get their `node` evidence from [`name_nodes`].

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use super::Inputs;
use crate::{
    findings::{Candidate, Kind, Severity},
    model::desired::{
        ANNOTATION_PREFIX, Expected, Mac, Model, Node, PodSubnet, RemoteObjects, Skip, State,
        expected,
    },
    model::net::{Link, Prefix, RouteKind, TABLE_MAIN, format_mac},
};

/// Both overlay detectors, when the desired state is known; nothing while it is not.
/// `memory` carries the drifts' grace and the Nodes that left between cycles.
pub fn detect(
    inputs: &Inputs<'_>,
    state: &State,
    own: &str,
    memory: &mut Memory,
    now: Instant,
) -> Vec<Candidate> {
    let State::Known { model, .. } = state else {
        memory.grace.clear();
        return Vec::new();
    };
    memory.departed.update(model);
    let drifts = overlay_drift(inputs, model, own, &memory.departed);
    let mut candidates = memory.grace.filter(now, drifts);
    candidates.extend(stale_annotation(inputs, model));
    candidates
}

/// What the overlay detectors carry from cycle to cycle: since when each drift has been
/// seen ([`Grace`]) and the Nodes that left the desired state ([`Departed`]). Plain data:
/// the pipeline (or `watchdog check`) keeps it.
#[derive(Clone, Debug)]
pub struct Memory {
    grace: Grace,
    departed: Departed,
}

impl Memory {
    /// Drifts must last `grace` before they count.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace: Grace::new(grace),
            departed: Departed::default(),
        }
    }

    /// The Nodes that left the desired state while it was watched.
    pub fn departed(&self) -> &Departed {
        &self.departed
    }
}

/// Remembers since when each drift has been seen, and lets through only those seen
/// without a break for `grace`. Plain data: the pipeline keeps it between cycles.
#[derive(Clone, Debug)]
pub struct Grace {
    grace: Duration,
    since: BTreeMap<(Kind, String), Instant>,
}

impl Grace {
    /// Drifts must last `grace` before they count.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            since: BTreeMap::new(),
        }
    }

    /// The candidates that have been seen in every call for at least `grace` (90% of it,
    /// so the jitter of a poll does not cost a whole cycle); the others are remembered
    /// (and forgotten as soon as a call does not have them).
    pub fn filter(&mut self, now: Instant, candidates: Vec<Candidate>) -> Vec<Candidate> {
        let mut seen = BTreeMap::new();
        let mut out = Vec::new();
        for candidate in candidates {
            let key = (candidate.kind, candidate.subject.clone());
            let since = self.since.get(&key).copied().unwrap_or(now);
            seen.insert(key, since);
            if now.saturating_duration_since(since) * 10 >= self.grace * 9 {
                out.push(candidate);
            }
        }
        self.since = seen;
        out
    }

    /// Forgets everything (the desired state became unknown).
    pub fn clear(&mut self) {
        self.since.clear();
    }
}

/// How many departed Nodes are remembered (the oldest are forgotten first).
const DEPARTED_MAX: usize = 256;

/// Nodes that were in the desired state and are no longer (deleted from the cluster, or
/// from the NodeList file) while this process watched: Flannel removes a Node's objects
/// only when its own watch sees the deletion, so what it leaves behind can still be
/// named after its Node.
#[derive(Clone, Debug, Default)]
pub struct Departed {
    /// The model of the last update (shared with the source, not a copy).
    last: Option<Arc<Model>>,
    /// Newest last.
    nodes: VecDeque<Node>,
}

impl Departed {
    /// Compares `model` with the previous one: Nodes gone from it are remembered, Nodes
    /// back in it forgotten.
    pub fn update(&mut self, model: &Arc<Model>) {
        if let Some(last) = &self.last {
            if Arc::ptr_eq(last, model) {
                return;
            }
            for (name, node) in &last.nodes {
                if !model.nodes.contains_key(name) {
                    self.nodes.retain(|n| n.name != *name);
                    self.nodes.push_back(node.clone());
                }
            }
        }
        self.nodes.retain(|n| !model.nodes.contains_key(&n.name));
        while self.nodes.len() > DEPARTED_MAX {
            self.nodes.pop_front();
        }
        self.last = Some(Arc::clone(model));
    }

    /// The departed Nodes, newest last.
    pub fn nodes(&self) -> impl DoubleEndedIterator<Item = &Node> {
        self.nodes.iter()
    }

    fn with_mac(&self, mac: Mac) -> Option<&Node> {
        self.nodes
            .iter()
            .rev()
            .find(|n| n.vtep.as_ref().is_ok_and(|v| v.mac == mac))
    }

    fn with_subnet(&self, subnet: PodSubnet) -> Option<&Node> {
        self.nodes
            .iter()
            .rev()
            .find(|n| n.pod_subnet == Some(subnet))
    }
}

/// The cluster's VXLAN device: the link with the cluster's VNI, preferring Flannel's
/// name for it.
fn vxlan_device<'a>(inputs: &'a Inputs<'_>, expected: &Expected) -> Option<&'a Link> {
    let mut with_vni = inputs
        .net
        .links()
        .filter(|link| link.vxlan.as_ref().is_some_and(|v| v.vni == expected.vni));
    inputs
        .net
        .link_by_name(&expected.device)
        .filter(|link| link.vxlan.as_ref().is_some_and(|v| v.vni == expected.vni))
        .or_else(|| with_vni.next())
}

fn drift(subject: String, severity: Severity, node: &str, problem: String) -> Candidate {
    Candidate::new(Kind::OverlayDrift, subject, severity)
        .with("node", node)
        .with("problem", problem)
}

/// The kernel ≠ the objects the Nodes imply for node `own` (see
/// [`expected`](crate::model::desired::expected)): the VXLAN device missing, down, with
/// another MAC or local address; per remote node an FDB entry, neighbour or route missing
/// or different; FDB entries, neighbours and routes on the device for a MAC or subnet no
/// Node has (named after the Node when it is one that `departed`). Quiet when `own` does
/// not take part (Flannel does not run here).
pub fn overlay_drift(
    inputs: &Inputs<'_>,
    model: &Model,
    own: &str,
    departed: &Departed,
) -> Vec<Candidate> {
    let expected = expected(model, own);
    let Some(local) = &expected.local else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Some(link) = vxlan_device(inputs, &expected) else {
        out.push(
            drift(
                format!("dev {}", expected.device),
                Severity::Critical,
                own,
                format!(
                    "no VXLAN device with VNI {}: no traffic reaches the {} other nodes' pods",
                    expected.vni,
                    expected.remotes.len()
                ),
            )
            .with("kernel", "missing")
            .with(
                "expected",
                format!(
                    "dev {} type vxlan id {} local {} address {}",
                    expected.device, expected.vni, local.public_ip, local.mac
                ),
            ),
        );
        return out;
    };
    let dev = link.name.as_str();
    if !link.admin_up {
        out.push(
            drift(
                format!("dev {dev}"),
                Severity::Critical,
                own,
                format!("{dev} is down"),
            )
            .with("kernel", "state DOWN")
            .with("expected", "state UP"),
        );
    }
    let mac = link.mac.map(Mac);
    if mac != Some(local.mac) {
        let actual = mac.map_or_else(|| "none".to_owned(), |m| m.to_string());
        out.push(
            drift(
                format!("dev {dev} address {actual}"),
                Severity::Critical,
                own,
                format!(
                    "{dev}'s MAC is not this node's VtepMAC: the other nodes send to {}",
                    local.mac
                ),
            )
            .with("kernel", format!("link/ether {actual}"))
            .with("expected", format!("link/ether {}", local.mac)),
        );
    }
    let local_ip = link.vxlan.as_ref().and_then(|v| v.local);
    if local_ip != Some(IpAddr::V4(local.public_ip)) {
        let actual = local_ip.map_or_else(|| "none".to_owned(), |ip| ip.to_string());
        out.push(
            drift(
                format!("dev {dev} local {actual}"),
                Severity::Critical,
                own,
                format!(
                    "{dev} sends from {actual} but this node's {ANNOTATION_PREFIX}/public-ip is {}: \
                     the other nodes send to {}",
                    local.public_ip, local.public_ip
                ),
            )
            .with("kernel", format!("vxlan id {} local {actual}", expected.vni))
            .with(
                "expected",
                format!("vxlan id {} local {}", expected.vni, local.public_ip),
            ),
        );
    }
    for remote in &expected.remotes {
        out.extend(remote_drift(inputs, link, remote));
    }
    out.extend(orphans(inputs, link, model, &expected, departed));
    out
}

fn remote_drift(inputs: &Inputs<'_>, link: &Link, remote: &RemoteObjects) -> Vec<Candidate> {
    let dev = link.name.as_str();
    let mut out = Vec::new();
    // FDB: one unicast entry for the VtepMAC, towards public-ip.
    let entries: Vec<_> = inputs.net.fdb_with_mac(link.index, &remote.mac.0).collect();
    if entries.is_empty() {
        out.push(
            drift(
                format!(
                    "fdb {} dev {dev} dst {} missing",
                    remote.mac, remote.public_ip
                ),
                Severity::Critical,
                &remote.node,
                format!(
                    "no FDB entry for {}'s VtepMAC: its pods are unreachable",
                    remote.node
                ),
            )
            .with("kernel", "missing")
            .with("expected", remote.fdb(dev)),
        );
    }
    for entry in entries {
        if entry.dst == Some(IpAddr::V4(remote.public_ip)) {
            continue;
        }
        let dst = entry
            .dst
            .map_or_else(|| "none".to_owned(), |d| d.to_string());
        out.push(
            drift(
                format!("fdb {} dev {dev} dst {dst}", remote.mac),
                Severity::Critical,
                &remote.node,
                format!(
                    "{}'s VXLAN packets go to {dst}, not its {ANNOTATION_PREFIX}/public-ip {}",
                    remote.node, remote.public_ip
                ),
            )
            .with("kernel", format!("fdb {} dev {dev} dst {dst}", remote.mac))
            .with("expected", remote.fdb(dev)),
        );
    }
    // Neighbour: <subnet>.0 → VtepMAC.
    let gateway = IpAddr::V4(remote.gateway());
    match inputs.net.neighbour(link.index, &gateway) {
        None => out.push(
            drift(
                format!("neigh {gateway} dev {dev} missing"),
                Severity::Critical,
                &remote.node,
                format!(
                    "no neighbour entry for {}'s gateway {gateway}: packets to {} wait for ARP \
                     that never comes",
                    remote.node, remote.subnet
                ),
            )
            .with("kernel", "missing")
            .with("expected", remote.neighbour(dev)),
        ),
        Some(neighbour) if neighbour.mac != Some(remote.mac.0) => {
            let kernel = match neighbour.mac {
                Some(mac) => format!(
                    "neigh {gateway} dev {dev} lladdr {} {}",
                    format_mac(&mac),
                    neighbour.state
                ),
                None => format!("neigh {gateway} dev {dev} {}", neighbour.state),
            };
            out.push(
                drift(
                    format!("neigh {gateway} dev {dev}"),
                    Severity::Critical,
                    &remote.node,
                    format!(
                        "{}'s gateway {gateway} does not resolve to its VtepMAC {}",
                        remote.node, remote.mac
                    ),
                )
                .with("kernel", kernel)
                .with("expected", remote.neighbour(dev)),
            );
        }
        Some(_) => {}
    }
    // Route: <subnet> via <subnet>.0 dev flannel.<VNI> onlink.
    let prefix = subnet_prefix(remote.subnet);
    let mut routes: Vec<_> = inputs.net.routes_to(TABLE_MAIN, &prefix).collect();
    routes.sort_by_key(|route| route.priority);
    match routes.first() {
        None => out.push(
            drift(
                format!("{} missing", remote.route(dev)),
                Severity::Critical,
                &remote.node,
                format!("no route to {}'s pod subnet {}", remote.node, remote.subnet),
            )
            .with("kernel", "missing")
            .with("expected", remote.route(dev)),
        ),
        Some(route) => {
            let right = route.kind == RouteKind::Unicast
                && route.nexthops.is_empty()
                && route.gateway == Some(gateway)
                && route.oif == Some(link.index);
            if !right {
                let shown = inputs.describe(route);
                let mut candidate = drift(
                    format!("route {shown}"),
                    Severity::Critical,
                    &remote.node,
                    format!(
                        "{}'s pod subnet {} is routed elsewhere, not through {dev}",
                        remote.node, remote.subnet
                    ),
                )
                .with("kernel", format!("route {shown}"))
                .with("expected", remote.route(dev));
                candidate.routes.push(inputs.route_ref(route));
                out.push(candidate);
            }
        }
    }
    out
}

/// FDB entries, permanent neighbours and routes on the device that no Node accounts for.
fn orphans(
    inputs: &Inputs<'_>,
    link: &Link,
    model: &Model,
    expected: &Expected,
    departed: &Departed,
) -> Vec<Candidate> {
    let dev = link.name.as_str();
    let mut out = Vec::new();
    let own_subnet = expected.local.as_ref().map(|l| l.subnet);
    // The Node an orphan belonged to, if it left while watched: (node, problem).
    let gone = |node: &Node, what: String| {
        (
            node.name.clone(),
            format!(
                "{what}: {} is no longer among the Nodes (it left while this watchdog \
                 watched), and Flannel removes a Node's FDB entry, neighbour and route only \
                 when it sees the deletion",
                node.name
            ),
        )
    };
    for entry in inputs.net.fdb_of(link.index) {
        let unicast = entry.mac != [0; 6] && entry.mac[0] & 1 == 0;
        if !unicast || entry.dst.is_none() || model.node_with_mac(Mac(entry.mac)).is_some() {
            continue;
        }
        let dst = entry.dst.expect("filtered on dst");
        let mac = format_mac(&entry.mac);
        let on_public_ip = match dst {
            IpAddr::V4(v4) => model.node_with_public_ip(v4),
            IpAddr::V6(_) => None,
        };
        let (node, problem) = if let Some(node) = departed.with_mac(Mac(entry.mac)) {
            gone(node, format!("no Node has VtepMAC {mac}, {}'s", node.name))
        } else if let Some(node) = on_public_ip {
            (
                node.name.clone(),
                format!(
                    "no Node has VtepMAC {mac}; {dst} is {}'s public-ip (an entry for its old \
                     VTEP MAC, which Flannel never removes)",
                    node.name
                ),
            )
        } else {
            ("none".to_owned(), format!("no Node has VtepMAC {mac}"))
        };
        out.push(
            Candidate::new(
                Kind::OverlayDrift,
                format!("fdb {mac} dev {dev} dst {dst}"),
                Severity::Warning,
            )
            .with("node", node)
            .with("problem", problem)
            .with("kernel", format!("fdb {mac} dev {dev} dst {dst}"))
            .with("expected", "none"),
        );
    }
    let known_gateway = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => {
            expected.remotes.iter().any(|r| r.gateway() == *v4)
                || own_subnet.is_some_and(|s| s.gateway() == *v4)
        }
        IpAddr::V6(_) => true,
    };
    for neighbour in inputs.net.neighbours() {
        if neighbour.ifindex != link.index
            || !neighbour.state.is_permanent()
            || known_gateway(&neighbour.ip)
        {
            continue;
        }
        let kernel = format!(
            "neigh {} dev {dev} lladdr {} PERMANENT",
            neighbour.ip,
            neighbour
                .mac
                .map_or_else(|| "none".into(), |m| format_mac(&m))
        );
        let what = format!("no Node's pod subnet has the gateway {}", neighbour.ip);
        let owner = match neighbour.ip {
            IpAddr::V4(v4) => departed
                .nodes()
                .rev()
                .find(|n| n.pod_subnet.is_some_and(|s| s.gateway() == v4)),
            IpAddr::V6(_) => None,
        };
        let (node, problem) = match owner {
            Some(node) => gone(node, format!("{what}, {}'s", node.name)),
            None => ("none".to_owned(), what),
        };
        out.push(
            Candidate::new(
                Kind::OverlayDrift,
                format!("neigh {} dev {dev}", neighbour.ip),
                Severity::Warning,
            )
            .with("node", node)
            .with("problem", problem)
            .with("kernel", kernel)
            .with("expected", "none"),
        );
    }
    for route in inputs.net.routes_in_table(TABLE_MAIN) {
        if route.oif != Some(link.index) || route.gateway.is_none() || !route.dst.is_ipv4() {
            continue;
        }
        let Some(subnet) = prefix_subnet(&route.dst) else {
            continue;
        };
        if expected.remote_with_subnet(subnet).is_some() || Some(subnet) == own_subnet {
            continue;
        }
        let shown = inputs.describe(route);
        let what = format!("no Node has the pod subnet {subnet}: the route leads nowhere");
        let (node, problem) = match departed.with_subnet(subnet) {
            Some(node) => gone(node, format!("{what} ({} had it)", node.name)),
            None => ("none".to_owned(), what),
        };
        let mut candidate = Candidate::new(
            Kind::OverlayDrift,
            format!("route {shown}"),
            Severity::Warning,
        )
        .with("node", node)
        .with("problem", problem)
        .with("kernel", format!("route {shown}"))
        .with("expected", "none");
        candidate.routes.push(inputs.route_ref(route));
        out.push(candidate);
    }
    out
}

fn subnet_prefix(subnet: PodSubnet) -> Prefix {
    Prefix {
        addr: IpAddr::V4(subnet.network),
        len: subnet.len,
    }
}

fn prefix_subnet(prefix: &Prefix) -> Option<PodSubnet> {
    match prefix.addr {
        IpAddr::V4(v4) => PodSubnet::new(v4, prefix.len),
        IpAddr::V6(_) => None,
    }
}

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
/// answers, two Nodes with one VtepMAC, overlapping pod subnets. Each gives the command
/// that fixes it.
pub fn stale_annotation(inputs: &Inputs<'_>, model: &Model) -> Vec<Candidate> {
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
                        public.unwrap_or("(unset)"),
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
    let mut by_mac: BTreeMap<Mac, Vec<&str>> = BTreeMap::new();
    for (node, vtep) in model.members() {
        by_mac.entry(vtep.mac).or_default().push(&node.name);
    }
    for (mac, nodes) in by_mac.into_iter().filter(|(_, nodes)| nodes.len() > 1) {
        out.push(
            Candidate::new(
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
        );
    }
    let members: Vec<_> = model.members().collect();
    for (i, (a, va)) in members.iter().enumerate() {
        for (b, vb) in &members[i + 1..] {
            if va.subnet.overlaps(&vb.subnet) {
                out.push(
                    Candidate::new(
                        Kind::StaleAnnotation,
                        format!(
                            "pod subnets {} ({}) and {} ({}) overlap",
                            va.subnet, a.name, vb.subnet, b.name
                        ),
                        Severity::Critical,
                    )
                    .with("node", format!("{},{}", a.name, b.name))
                    .with(
                        "problem",
                        "two Nodes own overlapping pod subnets: Flannel routes the shared \
                         addresses to only one",
                    )
                    .with(
                        "fix",
                        format!(
                            "give one of {} and {} a new spec.podCIDR (kubectl delete node and \
                             re-join it)",
                            a.name, b.name
                        ),
                    ),
                );
            }
        }
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

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, time::Duration};

    use super::*;
    use crate::{
        config::detect::DetectConfig as Settings,
        detect::Sample,
        model::counters::PeerSample,
        model::desired::{Node, NodeAddress, Vtep},
        model::net::{Address, FdbEntry, NeighState, Neighbour, Route, Snapshot, Update, Vxlan},
    };

    const ETH0: u32 = 2;
    const FLANNEL: u32 = 3;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mac(j: u8) -> [u8; 6] {
        [0x02, 0xfa, 0, 0, 0, j]
    }

    fn member(j: u8) -> Node {
        let public: Ipv4Addr = format!("192.168.77.{}", 10 + j).parse().unwrap();
        Node {
            name: format!("node-{j}"),
            addresses: vec![NodeAddress {
                kind: "InternalIP".into(),
                ip: IpAddr::V4(public),
            }],
            pod_subnet: PodSubnet::parse(&format!("10.244.{j}.0/24")),
            public_ip: Some(public.to_string()),
            public_ip_overwrite: None,
            vtep: Ok(Vtep {
                subnet: PodSubnet::parse(&format!("10.244.{j}.0/24")).unwrap(),
                vni: Some(1),
                mac: Mac(mac(j)),
                public_ip: public,
            }),
        }
    }

    fn model(nodes: impl IntoIterator<Item = Node>) -> Model {
        Model {
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        }
    }

    fn cluster() -> Model {
        model((0..=2).map(member))
    }

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            kind: None,
            admin_up: true,
            oper_up: true,
            mtu: 1500,
            master: None,
            mac: None,
            vxlan: None,
        }
    }

    fn vxlan_link(vni: u32, name: &str) -> Link {
        vxlan_link_at(FLANNEL, vni, name)
    }

    fn vxlan_link_at(index: u32, vni: u32, name: &str) -> Link {
        Link {
            kind: Some("vxlan".into()),
            mac: Some(mac(0)),
            vxlan: Some(Vxlan {
                vni,
                local: Some(ip("192.168.77.10")),
                port: 8472,
                underlay: Some(ETH0),
                learning: false,
            }),
            mtu: 1450,
            ..link(index, name)
        }
    }

    fn fdb(j: u8, dst: &str) -> FdbEntry {
        FdbEntry {
            ifindex: FLANNEL,
            mac: mac(j),
            dst: Some(ip(dst)),
            vlan: None,
            vni: None,
            port: None,
            state: NeighState::PERMANENT,
            master: None,
        }
    }

    fn flannel_route(j: u8) -> Route {
        Route {
            gateway: Some(ip(&format!("10.244.{j}.0"))),
            oif: Some(FLANNEL),
            onlink: true,
            ..Route::unicast(format!("10.244.{j}.0/24").parse().unwrap())
        }
    }

    fn neighbour(j: u8) -> Neighbour {
        Neighbour {
            ifindex: FLANNEL,
            ip: ip(&format!("10.244.{j}.0")),
            mac: Some(mac(j)),
            state: NeighState::PERMANENT,
        }
    }

    /// node-0 as Flannel programs it for `cluster()`.
    fn node0() -> Snapshot {
        let mut net = Snapshot::new();
        net.apply(Update::NewLink(link(ETH0, "eth0")));
        net.apply(Update::NewLink(vxlan_link(1, "flannel.1")));
        net.apply(Update::NewAddress(Address {
            ifindex: ETH0,
            prefix: "192.168.77.10/24".parse().unwrap(),
        }));
        for j in 1..=2u8 {
            net.apply(Update::NewRoute(flannel_route(j)));
            net.apply(Update::NewNeighbour(neighbour(j)));
            net.apply(Update::NewFdb(fdb(j, &format!("192.168.77.{}", 10 + j))));
        }
        net
    }

    fn run<T>(net: &Snapshot, f: impl FnOnce(&Inputs<'_>) -> T) -> T {
        run_with(net, &Sample::default(), &Sample::default(), f)
    }

    fn run_with<T>(
        net: &Snapshot,
        now: &Sample,
        then: &Sample,
        f: impl FnOnce(&Inputs<'_>) -> T,
    ) -> T {
        let settings = Settings::default();
        f(&Inputs {
            net,
            now,
            then,
            recent: now,
            settings: &settings,
            probes: &crate::model::probe::ProbeBook::default(),
        })
    }

    fn drift(net: &Snapshot, model: &Model) -> Vec<Candidate> {
        run(net, |inputs| {
            overlay_drift(inputs, model, "node-0", &Departed::default())
        })
    }

    fn subjects(candidates: &[Candidate]) -> Vec<&str> {
        candidates.iter().map(|c| c.subject.as_str()).collect()
    }

    #[test]
    fn a_node_as_flannel_programs_it_has_no_drift() {
        assert_eq!(drift(&node0(), &cluster()), vec![]);
        let stale = run(&node0(), |inputs| stale_annotation(inputs, &cluster()));
        assert_eq!(stale, vec![]);
    }

    #[test]
    fn fdb_repointed_names_the_node_and_both_sides() {
        let mut net = node0();
        net.apply(Update::NewFdb(fdb(1, "10.67.0.5")));
        let found = drift(&net, &cluster());
        assert_eq!(
            subjects(&found),
            ["fdb 02:fa:00:00:00:01 dev flannel.1 dst 10.67.0.5"]
        );
        let c = &found[0];
        assert_eq!(c.kind, Kind::OverlayDrift);
        assert_eq!(c.severity, Severity::Critical);
        assert_eq!(c.evidence("node"), Some("node-1"));
        assert_eq!(
            c.evidence("expected"),
            Some("fdb 02:fa:00:00:00:01 dev flannel.1 dst 192.168.77.11 self permanent")
        );
        assert_eq!(
            c.evidence("kernel"),
            Some("fdb 02:fa:00:00:00:01 dev flannel.1 dst 10.67.0.5")
        );
    }

    #[test]
    fn missing_fdb_neighbour_and_route_are_each_named() {
        let mut net = node0();
        net.apply(Update::DelFdb(fdb(2, "192.168.77.12")));
        net.apply(Update::DelNeighbour(neighbour(2)));
        net.apply(Update::DelRoute(flannel_route(2)));
        let found = drift(&net, &cluster());
        assert_eq!(
            subjects(&found),
            [
                "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12 missing",
                "neigh 10.244.2.0 dev flannel.1 missing",
                "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink missing",
            ]
        );
        assert!(found.iter().all(|c| c.evidence("node") == Some("node-2")));
        assert_eq!(
            found[1].evidence("expected"),
            Some("neigh 10.244.2.0 dev flannel.1 lladdr 02:fa:00:00:00:02 nud permanent")
        );
    }

    #[test]
    fn a_route_through_something_else_and_a_wrong_neighbour_mac() {
        let mut net = node0();
        net.apply(Update::NewRoute(Route {
            gateway: Some(ip("192.168.77.98")),
            oif: Some(ETH0),
            ..Route::unicast("10.244.1.0/24".parse().unwrap())
        }));
        net.apply(Update::NewNeighbour(Neighbour {
            mac: Some(mac(9)),
            ..neighbour(2)
        }));
        let found = drift(&net, &cluster());
        assert_eq!(
            subjects(&found),
            [
                "route 10.244.1.0/24 via 192.168.77.98 dev eth0 table main",
                "neigh 10.244.2.0 dev flannel.1",
            ]
        );
        assert_eq!(found[0].evidence("node"), Some("node-1"));
        assert_eq!(found[0].routes.len(), 1);
        assert_eq!(
            found[1].evidence("kernel"),
            Some("neigh 10.244.2.0 dev flannel.1 lladdr 02:fa:00:00:00:09 PERMANENT")
        );
    }

    #[test]
    fn the_device_is_found_by_the_clusters_vni() {
        // VNI 7 in the Nodes: flannel.1 (VNI 1) is not the cluster's device.
        let mut nodes = cluster();
        for node in nodes.nodes.values_mut() {
            node.vtep.as_mut().unwrap().vni = Some(7);
        }
        let found = drift(&node0(), &nodes);
        assert_eq!(subjects(&found), ["dev flannel.7"]);
        assert_eq!(found[0].evidence("kernel"), Some("missing"));
        assert_eq!(found[0].evidence("node"), Some("node-0"));
        // Any name works when the VNI matches: another device with VNI 7 has none of
        // the remote objects (they are on flannel.1).
        let mut net = node0();
        net.apply(Update::NewLink(vxlan_link_at(9, 7, "vxlan-overlay")));
        let found = drift(&net, &nodes);
        assert_eq!(found.len(), 6, "{:?}", subjects(&found));
        assert!(
            found.iter().all(|c| c
                .evidence("expected")
                .unwrap()
                .contains("dev vxlan-overlay")),
            "{:?}",
            subjects(&found)
        );
        // flannel.1 renamed and given VNI 7 in place: everything is where it should be.
        let mut net = node0();
        net.apply(Update::NewLink(vxlan_link(7, "vxlan-overlay")));
        assert_eq!(drift(&net, &nodes), vec![]);
    }

    #[test]
    fn the_local_device_down_with_another_mac_or_local_address() {
        let mut net = node0();
        net.apply(Update::NewLink(Link {
            admin_up: false,
            mac: Some(mac(0x33)),
            vxlan: Some(Vxlan {
                local: Some(ip("10.67.0.10")),
                ..vxlan_link(1, "flannel.1").vxlan.unwrap()
            }),
            ..vxlan_link(1, "flannel.1")
        }));
        let found = drift(&net, &cluster());
        let names = subjects(&found);
        assert!(names.contains(&"dev flannel.1"), "{names:?}");
        assert!(
            names.contains(&"dev flannel.1 address 02:fa:00:00:00:33"),
            "{names:?}"
        );
        assert!(
            names.contains(&"dev flannel.1 local 10.67.0.10"),
            "{names:?}"
        );
        let local: Vec<_> = found
            .iter()
            .filter(|c| c.subject.starts_with("dev "))
            .collect();
        assert_eq!(local.len(), 3, "{names:?}");
        assert!(local.iter().all(|c| c.evidence("node") == Some("node-0")));
        // Down, the kernel flushed the device's routes and neighbours: named per Node.
        assert!(
            names.contains(&"neigh 10.244.1.0 dev flannel.1 missing"),
            "{names:?}"
        );
    }

    #[test]
    fn a_node_removed_leaves_objects_no_node_has() {
        let mut gone = cluster();
        gone.nodes.remove("node-2");
        let found = drift(&node0(), &gone);
        assert_eq!(
            subjects(&found),
            [
                "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12",
                "neigh 10.244.2.0 dev flannel.1",
                "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main",
            ]
        );
        assert!(found.iter().all(|c| c.severity == Severity::Warning));
        // node-2 restarted with a new VtepMAC: the old-MAC entry points at its address.
        let mut restarted = cluster();
        restarted
            .nodes
            .get_mut("node-2")
            .unwrap()
            .vtep
            .as_mut()
            .unwrap()
            .mac = Mac(mac(0x22));
        let found = drift(&node0(), &restarted);
        let orphan = found
            .iter()
            .find(|c| c.subject == "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12")
            .unwrap();
        assert_eq!(orphan.evidence("node"), Some("node-2"));
        assert!(orphan.evidence("problem").unwrap().contains("old VTEP MAC"));
    }

    #[test]
    fn quiet_when_this_node_does_not_take_part() {
        let mut net = node0();
        net.apply(Update::DelLink(FLANNEL));
        assert_eq!(drift(&net, &model([member(1), member(2)])), vec![]);
        assert_eq!(drift(&net, &Model::default()), vec![]);
    }

    #[test]
    fn grace_lets_a_drift_through_only_after_it_lasts() {
        let t0 = Instant::now();
        let mut grace = Grace::new(Duration::from_secs(3));
        let c = || {
            vec![Candidate::new(
                Kind::OverlayDrift,
                "fdb x",
                Severity::Critical,
            )]
        };
        assert!(grace.filter(t0, c()).is_empty());
        assert!(grace.filter(t0 + Duration::from_secs(2), c()).is_empty());
        assert_eq!(
            grace.filter(t0 + Duration::from_millis(2700), c()).len(),
            1,
            "90% of the grace: a poll's jitter does not cost a cycle"
        );
        // A cycle without it starts over.
        assert!(grace.filter(t0 + Duration::from_secs(4), vec![]).is_empty());
        assert!(grace.filter(t0 + Duration::from_secs(5), c()).is_empty());
        assert_eq!(grace.filter(t0 + Duration::from_secs(8), c()).len(), 1);
        assert_eq!(Grace::new(Duration::ZERO).filter(t0, c()).len(), 1);
    }

    #[test]
    fn nothing_fires_while_the_desired_state_is_unknown() {
        let mut net = node0();
        net.apply(Update::DelLink(FLANNEL));
        let mut memory = Memory::new(Duration::ZERO);
        let unknown = State::Unknown {
            reason: "no full list".into(),
        };
        let found = run(&net, |inputs| {
            detect(inputs, &unknown, "node-0", &mut memory, Instant::now())
        });
        assert_eq!(found, vec![]);
        let known = State::Known {
            model: Arc::new(cluster()),
            age: Duration::ZERO,
        };
        let found = run(&net, |inputs| {
            detect(inputs, &known, "node-0", &mut memory, Instant::now())
        });
        assert_eq!(subjects(&found), ["dev flannel.1"]);
    }

    #[test]
    fn what_a_departed_node_leaves_behind_is_named_after_it() {
        let mut memory = Memory::new(Duration::ZERO);
        let t0 = Instant::now();
        let all = State::Known {
            model: Arc::new(cluster()),
            age: Duration::ZERO,
        };
        let found = run(&node0(), |inputs| {
            detect(inputs, &all, "node-0", &mut memory, t0)
        });
        assert_eq!(found, vec![]);
        let mut without = cluster();
        without.nodes.remove("node-2");
        let without = State::Known {
            model: Arc::new(without),
            age: Duration::ZERO,
        };
        let found = run(&node0(), |inputs| {
            detect(inputs, &without, "node-0", &mut memory, t0)
        });
        assert_eq!(
            subjects(&found),
            [
                "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.12",
                "neigh 10.244.2.0 dev flannel.1",
                "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main",
            ]
        );
        for candidate in &found {
            assert_eq!(candidate.evidence("node"), Some("node-2"), "{candidate:?}");
            assert!(
                candidate
                    .evidence("problem")
                    .unwrap()
                    .contains("node-2 is no longer among the Nodes"),
                "{candidate:?}"
            );
        }
        assert_eq!(
            memory
                .departed()
                .nodes()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            ["node-2"]
        );
        // Back in the desired state: forgotten.
        run(&node0(), |inputs| {
            detect(inputs, &all, "node-0", &mut memory, t0)
        });
        assert_eq!(memory.departed().nodes().count(), 0);
    }

    #[test]
    fn other_kinds_gain_the_node_behind_their_addresses() {
        use crate::findings::RouteRef;
        let m = cluster();
        let departed = Departed::default();
        let route = |prefix: &str, gateway: &str| RouteRef {
            prefix: prefix.into(),
            gateway: Some(gateway.into()),
            dev: Some("flannel.1".into()),
            table: "main".into(),
        };
        let mut stale = Candidate::new(
            Kind::StaleFdb,
            "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.99",
            Severity::Critical,
        );
        stale.routes.push(route("10.244.2.0/24", "10.244.2.0"));
        let mut gateway = Candidate::new(
            Kind::GhostGateway,
            "gateway 192.168.77.98 dev eth0",
            Severity::Critical,
        );
        gateway.routes.push(route("10.244.1.0/25", "192.168.77.98"));
        let mut candidates = vec![
            stale,
            Candidate::new(
                Kind::BlackholedDestination,
                "destination 10.244.1.2 dev flannel.1",
                Severity::Critical,
            ),
            Candidate::new(
                Kind::FailingTcpDestination,
                "tcp 10.244.2.7:8080",
                Severity::Critical,
            ),
            Candidate::new(
                Kind::BlackholedDestination,
                "destination 192.168.77.11 dev eth0",
                Severity::Critical,
            ),
            gateway,
            Candidate::new(Kind::VtepCollapse, "dev flannel.1", Severity::Critical),
            Candidate::new(
                Kind::NoRouteDrops,
                "no route to 10.9.9.0/24",
                Severity::Critical,
            ),
            Candidate::new(Kind::OverlayDrift, "dev flannel.1", Severity::Critical)
                .with("node", "node-0"),
        ];
        name_nodes(&mut candidates, &m, &departed);
        let nodes: Vec<Vec<&str>> = candidates
            .iter()
            .map(|c| {
                c.evidence
                    .iter()
                    .filter(|e| e.name == "node")
                    .map(|e| e.value.as_str())
                    .collect()
            })
            .collect();
        assert_eq!(
            nodes,
            [
                vec!["node-2"],
                vec!["node-1"],
                vec!["node-2"],
                vec!["node-1"],
                vec!["node-1"],
                vec![],
                vec![],
                vec!["node-0"],
            ]
        );
        // Two Nodes named by one finding are joined.
        let mut both = vec![Candidate::new(
            Kind::DeadLinkRoute,
            "route 10.244.1.0/24 via 192.168.77.12 dev eth0",
            Severity::Warning,
        )];
        name_nodes(&mut both, &m, &departed);
        assert_eq!(both[0].evidence("node"), Some("node-1,node-2"));
    }

    #[test]
    fn stale_annotations_each_give_the_fix() {
        let mut m = cluster();
        m.nodes.get_mut("node-1").unwrap().public_ip_overwrite = Some("10.67.0.11".into());
        let n2 = m.nodes.get_mut("node-2").unwrap();
        n2.vtep.as_mut().unwrap().mac = Mac(mac(1));
        let mut overlapping = member(3);
        overlapping.vtep.as_mut().unwrap().subnet = PodSubnet::parse("10.244.0.0/16").unwrap();
        m.nodes.insert("node-3".into(), overlapping);
        let mut broken = member(4);
        broken.vtep = Err(Skip::Invalid(vec![
            "flannel.alpha.coreos.com/backend-data `{`: is not valid JSON".into(),
        ]));
        m.nodes.insert("node-4".into(), broken);
        let found = run(&node0(), |inputs| stale_annotation(inputs, &m));
        let names = subjects(&found);
        assert!(
            names.contains(
                &"node node-1 annotation flannel.alpha.coreos.com/public-ip-overwrite=10.67.0.11"
            ),
            "{names:?}"
        );
        assert!(names.contains(&"node node-4"), "{names:?}");
        assert!(
            names.contains(&"VtepMAC 02:fa:00:00:00:01 on nodes node-1, node-2"),
            "{names:?}"
        );
        assert!(
            names
                .contains(&"pod subnets 10.244.0.0/24 (node-0) and 10.244.0.0/16 (node-3) overlap"),
            "{names:?}"
        );
        assert!(
            found
                .iter()
                .all(|c| c.evidence("fix").is_some() && c.evidence("node").is_some())
        );
        let overwrite = &found[names.iter().position(|n| n.contains("overwrite")).unwrap()];
        assert!(overwrite.evidence("fix").unwrap().starts_with(
            "kubectl annotate node node-1 flannel.alpha.coreos.com/public-ip-overwrite-"
        ));
    }

    #[test]
    fn a_dead_public_ip_needs_silence_and_an_answering_internal_ip() {
        let mut m = cluster();
        // node-1 advertises a retired address; its InternalIP is still 192.168.77.11.
        let n1 = m.nodes.get_mut("node-1").unwrap();
        n1.vtep.as_mut().unwrap().public_ip = Ipv4Addr::new(10, 67, 0, 11);
        n1.public_ip = Some("10.67.0.11".into());
        let start = Instant::now();
        let at = |s: u64, peers: &[(&str, u64, u64)]| Sample {
            at: Some(start + Duration::from_secs(s)),
            peers: peers
                .iter()
                .map(|&(addr, tx, rx)| {
                    (
                        (ETH0, ip(addr)),
                        PeerSample {
                            tx_packets: tx,
                            rx_packets: rx,
                            ..PeerSample::default()
                        },
                    )
                })
                .collect(),
            ..Sample::default()
        };
        let then = at(0, &[("10.67.0.11", 10, 0), ("192.168.77.11", 10, 10)]);
        let now = at(10, &[("10.67.0.11", 60, 0), ("192.168.77.11", 20, 20)]);
        let found = run_with(&node0(), &now, &then, |inputs| stale_annotation(inputs, &m));
        assert_eq!(
            subjects(&found),
            ["node node-1 annotation flannel.alpha.coreos.com/public-ip=10.67.0.11"]
        );
        assert_eq!(found[0].severity, Severity::Critical);
        // The InternalIP silent too: the node may just be down; not an annotation problem.
        let now = at(10, &[("10.67.0.11", 60, 0), ("192.168.77.11", 20, 10)]);
        let found = run_with(&node0(), &now, &then, |inputs| stale_annotation(inputs, &m));
        assert_eq!(found, vec![]);
        // Answering public-ip: fine even if it is none of the Node's addresses.
        let now = at(10, &[("10.67.0.11", 60, 5), ("192.168.77.11", 20, 20)]);
        let found = run_with(&node0(), &now, &then, |inputs| stale_annotation(inputs, &m));
        assert_eq!(found, vec![]);
    }

    #[test]
    fn node_of_names_vteps_and_pod_addresses() {
        let m = cluster();
        assert_eq!(node_of(&m, ip("192.168.77.12")), Some("node-2"));
        assert_eq!(node_of(&m, ip("10.244.1.77")), Some("node-1"));
        assert_eq!(node_of(&m, ip("10.9.9.9")), None);
    }
}
