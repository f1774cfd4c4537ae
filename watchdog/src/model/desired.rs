//! What the cluster says the overlay must be: Kubernetes Nodes read the way Flannel reads
//! them (plain data, no Kubernetes types), and whether that picture is known and how old
//! it is. The kernel objects it implies for one node are `overlay::expected`'s.
//!
//! Flannel's rules (flannel-io/flannel `pkg/subnet/kube/kube.go` `nodeToLease`,
//! `pkg/backend/vxlan`): a Node takes part only with the annotation
//! `flannel.alpha.coreos.com/kube-subnet-manager: "true"` and `backend-type: vxlan`; its
//! subnet is the first IPv4 entry of `spec.podCIDRs` (`spec.podCIDR` when the list is
//! empty); its tunnel address is `public-ip` (never `public-ip-overwrite`, which flanneld
//! copies into `public-ip` only when that node's own flanneld starts); `backend-data` is
//! JSON `{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}`. For every other node flanneld programs,
//! on the device `flannel.<VNI>`: neighbour `<subnet>.0 lladdr <VtepMAC> nud permanent`,
//! FDB `<VtepMAC> dst <public-ip> self permanent`, route `<subnet> via <subnet>.0 onlink`.
//!
//! This module imports nothing of the crate but `model::net`'s [`Prefix`].

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use super::net::Prefix;

/// The annotation prefix Flannel uses by default (`--kube-annotation-prefix`).
pub const ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com";
/// Flannel's VNI when the backend configuration names none.
pub const DEFAULT_VNI: u32 = 1;

/// The most characters of an invalid value a problem quotes (Flannel's valid values are
/// under 100; a value is kept up to the source's cap of 1024 to be judged, but a finding's
/// evidence, alerts and log lines need only enough of it to recognise it).
pub const MAX_QUOTED: usize = 256;

/// `raw` as a problem quotes it: at most [`MAX_QUOTED`] characters, then how many there
/// were. (Control characters were removed when the object was read.)
pub fn quoted(raw: &str) -> String {
    let count = raw.chars().count();
    if count <= MAX_QUOTED {
        return raw.to_owned();
    }
    let head: String = raw.chars().take(MAX_QUOTED).collect();
    format!("{head}… ({count} characters)")
}

/// An IPv4 pod subnet (`10.244.3.0/24`), kept with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodSubnet {
    /// The network address (`10.244.3.0`): also Flannel's gateway for the subnet.
    pub network: Ipv4Addr,
    /// The prefix length.
    pub len: u8,
}

impl PodSubnet {
    /// The subnet of `addr/len` with host bits cleared; `None` for a length over 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Some(Self {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }

    /// Parses `10.244.3.0/24` (IPv4 only).
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, len) = text.trim().split_once('/')?;
        Self::new(addr.parse().ok()?, len.parse().ok()?)
    }

    /// True if `addr` lies inside the subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        Self::new(addr, self.len).is_some_and(|s| s.network == self.network)
    }

    /// True if the two subnets share any address.
    pub fn overlaps(&self, other: &PodSubnet) -> bool {
        let shorter = self.len.min(other.len);
        Self::new(self.network, shorter) == Self::new(other.network, shorter)
    }

    /// Flannel's next hop for the subnet: its network address (`10.244.3.0`).
    pub fn gateway(&self) -> Ipv4Addr {
        self.network
    }

    /// The subnet as a route's destination.
    pub fn prefix(&self) -> Prefix {
        Prefix {
            addr: IpAddr::V4(self.network),
            len: self.len,
        }
    }

    /// The pod subnet a route's destination is: an IPv4 prefix without host bits (the
    /// kernel has no other routes); `None` for IPv6 or a prefix with host bits, so a
    /// subnet and its prefix convert both ways without loss.
    pub fn of_prefix(prefix: &Prefix) -> Option<Self> {
        match prefix.addr {
            IpAddr::V4(v4) => Self::new(v4, prefix.len).filter(|s| s.network == v4),
            IpAddr::V6(_) => None,
        }
    }
}

impl fmt::Display for PodSubnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// A MAC address as `ip`/`bridge` print it (`12:c6:65:89:b4:e3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `12:c6:65:89:b4:e3` (also `-` separated, any case), as Go's
    /// `net.ParseMAC` does for 48-bit addresses.
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        Some(Self(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// One entry of a Node's `status.addresses` that is an IP address (host names are
/// dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, …
    pub kind: String,
    /// The address.
    pub ip: IpAddr,
}

/// A Node that takes part in the VXLAN overlay: everything Flannel needs for its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vtep {
    /// The pod subnet (first IPv4 entry of `spec.podCIDRs`).
    pub subnet: PodSubnet,
    /// The VNI from `backend-data`; `None` when the annotation has none (Flannel before
    /// VNIs were written, e.g. `{"VtepMAC":"…"}`).
    pub vni: Option<u32>,
    /// The VTEP MAC from `backend-data`.
    pub mac: Mac,
    /// `public-ip`: where the other nodes send this node's VXLAN packets.
    pub public_ip: Ipv4Addr,
}

/// Why a Node does not take part in the overlay (or only partly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// No `kube-subnet-manager: "true"`: Flannel ignores the Node.
    NotManaged,
    /// Another backend (`host-gw`, `wireguard`, `extension`, …): no VXLAN objects.
    OtherBackend(String),
    /// A VXLAN Node with only IPv6 annotations (`backend-v6-data`, `public-ipv6`): its
    /// `flannel-v6.<VNI>` objects are not checked.
    Ipv6Only,
    /// Flannel would reject the Node: a value it cannot use. The text names the field,
    /// the value and what is wrong.
    Invalid(Vec<String>),
}

/// A Kubernetes Node as the overlay sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// IP addresses from `status.addresses`.
    pub addresses: Vec<NodeAddress>,
    /// The first IPv4 pod subnet, whether or not the Node takes part.
    pub pod_subnet: Option<PodSubnet>,
    /// The raw `public-ip` annotation, if set.
    pub public_ip: Option<String>,
    /// The raw `public-ip-overwrite` annotation, if set and not empty.
    pub public_ip_overwrite: Option<String>,
    /// What the overlay needs, when the Node takes part.
    pub vtep: Result<Vtep, Skip>,
}

impl Node {
    /// True when the Node takes part in the VXLAN overlay.
    pub fn takes_part(&self) -> bool {
        self.vtep.is_ok()
    }

    /// The first address of `kind` (`InternalIP`, `ExternalIP`).
    pub fn address_of(&self, kind: &str) -> Option<IpAddr> {
        self.addresses.iter().find(|a| a.kind == kind).map(|a| a.ip)
    }

    /// True when `ip` is one of `status.addresses`.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|a| a.ip == ip)
    }
}

/// Every Node the source knows, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// The Nodes, by name.
    pub nodes: BTreeMap<String, Node>,
}

impl Model {
    /// The Nodes that take part in the overlay, with their VTEP.
    pub fn members(&self) -> impl Iterator<Item = (&Node, &Vtep)> {
        self.nodes
            .values()
            .filter_map(|node| node.vtep.as_ref().ok().map(|vtep| (node, vtep)))
    }

    /// The cluster's VNI: the one this node wrote, else the most common one among the
    /// members, else Flannel's default (1). Flannel uses one VNI for the whole cluster
    /// (its `net-conf.json`).
    pub fn vni(&self, own: &str) -> u32 {
        if let Some(Ok(Vtep { vni: Some(vni), .. })) = self.nodes.get(own).map(|n| &n.vtep) {
            return *vni;
        }
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for (_, vtep) in self.members() {
            if let Some(vni) = vtep.vni {
                *counts.entry(vni).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|&(vni, count)| (count, std::cmp::Reverse(vni)))
            .map_or(DEFAULT_VNI, |(vni, _)| vni)
    }

    /// The member whose VTEP MAC is `mac`, if any.
    pub fn node_with_mac(&self, mac: Mac) -> Option<&Node> {
        self.members()
            .find(|(_, vtep)| vtep.mac == mac)
            .map(|(node, _)| node)
    }

    /// The member whose pod subnet contains `addr`, if any.
    pub fn node_with_pod_address(&self, addr: Ipv4Addr) -> Option<&Node> {
        self.members()
            .find(|(_, vtep)| vtep.subnet.contains(addr))
            .map(|(node, _)| node)
    }

    /// The member whose `public-ip` is `addr`, if any.
    pub fn node_with_public_ip(&self, addr: Ipv4Addr) -> Option<&Node> {
        self.members()
            .find(|(_, vtep)| vtep.public_ip == addr)
            .map(|(node, _)| node)
    }
}

/// What a desired-state source has, as of its last update. The pipeline asks
/// [`Snapshot::state`] each cycle; staleness is a pure function of it and the time.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Where it comes from, for logs and the feature report (`kubernetes`, `file
    /// /etc/watchdog/nodes.yaml`, `none`).
    pub source: String,
    /// The model after the last full list (and the watch events since), if any.
    pub model: Option<Arc<Model>>,
    /// When the model was last known to be current: the last list, watch event, or check
    /// that the watch (or the file) is still fine.
    pub confirmed_at: Option<Instant>,
    /// Since when the source has been failing (watch down, file unreadable), if it is.
    pub failing_since: Option<Instant>,
    /// The last failure, for the reason of an unknown state.
    pub error: Option<String>,
    /// Failures since the source started (a failed list or watch, an unreadable or
    /// invalid file), for `watchdog_desired_errors_total`.
    pub errors: u64,
}

impl Snapshot {
    /// No model yet from `source`.
    pub fn waiting(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            model: None,
            confirmed_at: None,
            failing_since: None,
            error: None,
            errors: 0,
        }
    }

    /// Known (with the model and its age) or unknown (with the reason): unknown until
    /// the first full list, and again once the source has failed for `stale_after`.
    pub fn state(&self, now: Instant, stale_after: Duration) -> State {
        let Some(model) = &self.model else {
            return State::Unknown {
                reason: match &self.error {
                    Some(error) => format!("no full list of Nodes yet ({error})"),
                    None => "no full list of Nodes yet".to_owned(),
                },
            };
        };
        if let Some(since) = self.failing_since {
            let failing = now.saturating_duration_since(since);
            if failing >= stale_after {
                return State::Unknown {
                    reason: format!(
                        "{} has failed for {}s (desired.stale_after {}s): {}",
                        self.source,
                        failing.as_secs(),
                        stale_after.as_secs(),
                        self.error.as_deref().unwrap_or("unknown error")
                    ),
                };
            }
        }
        State::Known {
            model: Arc::clone(model),
            age: self
                .confirmed_at
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
        }
    }
}

/// Whether the desired state can be trusted right now: plain data, handed to the
/// detectors each cycle and returned with the cycle's result (for repair).
#[derive(Clone, Debug)]
pub enum State {
    /// Nothing may be concluded from it (no detector fires, repair must not act).
    Unknown {
        /// Why, for logs and the feature report.
        reason: String,
    },
    /// The model, and how long since it was last confirmed current.
    Known {
        /// The Nodes (shared with the source: no copy).
        model: Arc<Model>,
        /// Since the last confirmation.
        age: Duration,
    },
}

impl State {
    /// The model when known.
    pub fn model(&self) -> Option<&Model> {
        match self {
            State::Known { model, .. } => Some(model),
            State::Unknown { .. } => None,
        }
    }

    /// True when known.
    pub fn is_known(&self) -> bool {
        matches!(self, State::Known { .. })
    }

    /// Node `node`'s pod subnet, when the state is known and says it.
    pub fn pod_subnet_of(&self, node: &str) -> Option<PodSubnet> {
        self.model()?.nodes.get(node)?.pod_subnet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, subnet: &str, mac: &str, ip: &str, vni: Option<u32>) -> Node {
        Node {
            name: name.into(),
            addresses: vec![NodeAddress {
                kind: "InternalIP".into(),
                ip: ip.parse().unwrap(),
            }],
            pod_subnet: PodSubnet::parse(subnet),
            public_ip: Some(ip.into()),
            public_ip_overwrite: None,
            vtep: Ok(Vtep {
                subnet: PodSubnet::parse(subnet).unwrap(),
                vni,
                mac: Mac::parse(mac).unwrap(),
                public_ip: ip.parse().unwrap(),
            }),
        }
    }

    fn model(nodes: Vec<Node>) -> Model {
        Model {
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        }
    }

    #[test]
    fn subnets_clear_host_bits_and_overlap() {
        let a = PodSubnet::parse("10.244.3.7/24").unwrap();
        assert_eq!(a.to_string(), "10.244.3.0/24");
        assert_eq!(a.gateway(), Ipv4Addr::new(10, 244, 3, 0));
        assert!(a.contains(Ipv4Addr::new(10, 244, 3, 200)));
        assert!(!a.contains(Ipv4Addr::new(10, 244, 4, 1)));
        assert!(a.overlaps(&PodSubnet::parse("10.244.0.0/16").unwrap()));
        assert!(!a.overlaps(&PodSubnet::parse("10.244.4.0/24").unwrap()));
        assert_eq!(PodSubnet::parse("fd00::/64"), None);
        assert_eq!(PodSubnet::parse("10.0.0.0/33"), None);
        assert_eq!(PodSubnet::parse("0.0.0.0/0").unwrap().len, 0);
    }

    #[test]
    fn a_subnet_and_its_prefix_convert_both_ways_and_host_bits_are_no_subnet() {
        let subnet = PodSubnet::parse("10.244.3.0/24").unwrap();
        assert_eq!(subnet.prefix().to_string(), "10.244.3.0/24");
        assert_eq!(PodSubnet::of_prefix(&subnet.prefix()), Some(subnet));
        for other in ["10.244.3.7/24", "fd00::/64"] {
            assert_eq!(
                PodSubnet::of_prefix(&other.parse().unwrap()),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn macs_parse_like_go() {
        let mac = Mac::parse("12:C6:65:89:b4:e3").unwrap();
        assert_eq!(mac.to_string(), "12:c6:65:89:b4:e3");
        assert_eq!(Mac::parse("12-c6-65-89-b4-e3"), Some(mac));
        assert_eq!(Mac::parse("12:c6:65:89:b4"), None);
        assert_eq!(Mac::parse("12:c6:65:89:b4:zz"), None);
        assert_eq!(Mac::parse("1:c6:65:89:b4:e3"), None);
    }

    #[test]
    fn vni_defaults_to_one_and_follows_the_majority() {
        assert_eq!(model(vec![]).vni("x"), DEFAULT_VNI);
        let m = model(vec![
            member(
                "a",
                "10.42.0.0/24",
                "02:00:00:00:00:0a",
                "192.168.1.10",
                None,
            ),
            member(
                "b",
                "10.42.1.0/24",
                "02:00:00:00:00:0b",
                "192.168.1.11",
                Some(7),
            ),
            member(
                "c",
                "10.42.2.0/24",
                "02:00:00:00:00:0c",
                "192.168.1.12",
                Some(7),
            ),
            member(
                "d",
                "10.42.3.0/24",
                "02:00:00:00:00:0d",
                "192.168.1.13",
                Some(3),
            ),
        ]);
        assert_eq!(m.vni("a"), 7);
        assert_eq!(m.vni("d"), 3);
    }

    #[test]
    fn unknown_until_listed_and_after_failing_for_stale_after() {
        let t0 = Instant::now();
        let stale = Duration::from_secs(60);
        let mut snap = Snapshot::waiting("kubernetes");
        assert!(matches!(snap.state(t0, stale), State::Unknown { .. }));
        snap.model = Some(Arc::new(Model::default()));
        snap.confirmed_at = Some(t0);
        match snap.state(t0 + Duration::from_secs(5), stale) {
            State::Known { age, .. } => assert_eq!(age, Duration::from_secs(5)),
            other => panic!("{other:?}"),
        }
        snap.failing_since = Some(t0 + Duration::from_secs(10));
        snap.error = Some("connection refused".into());
        assert!(
            snap.state(t0 + Duration::from_secs(69), stale)
                .model()
                .is_some()
        );
        match snap.state(t0 + Duration::from_secs(70), stale) {
            State::Unknown { reason } => {
                assert!(reason.contains("connection refused"), "{reason}");
                assert!(reason.contains("stale_after"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
