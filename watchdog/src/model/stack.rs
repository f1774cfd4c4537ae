//! What the kernel's own configuration says about a drop its reason names, as plain data:
//! the nftables ruleset with its counters (`NETFILTER_DROP`), the reverse-path filter
//! settings (`IP_RPFILTER`), the devices' checksum offloads (`*_CSUM`). The stack source
//! reads them only while such drops of this node's traffic are seen (what to read is a
//! [`StackRequest`] the pipeline names, like a probe request); the detectors read them
//! from the sample.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
    time::Instant,
};

/// What the pipeline asks the stack source to read before the next cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackRequest {
    /// The nftables ruleset (netfilter drops of this node's traffic are seen).
    pub netfilter: bool,
    /// `net.ipv4.conf.{all,default,<dev>}.rp_filter` for these devices (reverse-path drops
    /// were seen on them), by interface name.
    pub rp_filter: BTreeSet<String>,
    /// The offload features of these devices (checksum drops were seen on them), by
    /// interface name.
    pub offloads: BTreeSet<String>,
}

impl StackRequest {
    /// Everything: `watchdog check` reads it all at the start and the end of its window.
    pub fn everything(devices: impl IntoIterator<Item = String>) -> Self {
        let devices: BTreeSet<String> = devices.into_iter().collect();
        Self {
            netfilter: true,
            rp_filter: devices.clone(),
            offloads: devices,
        }
    }

    /// True when nothing is asked for.
    pub fn is_empty(&self) -> bool {
        !self.netfilter && self.rp_filter.is_empty() && self.offloads.is_empty()
    }
}

/// The stack's configuration as last read; `None` where it was not asked for (or reading
/// it is off). Cheap to clone: a reading is shared by every sample that carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stack {
    /// The nftables ruleset: the first reading since netfilter drops were asked about (the
    /// baseline its counters moved from) and the latest.
    pub netfilter: Option<NetfilterReadings>,
    /// Reverse-path filter settings.
    pub rp_filter: Option<Arc<RpFilter>>,
    /// Offload features by interface name.
    pub offloads: Option<Arc<BTreeMap<String, Offloads>>>,
}

/// Two readings of the ruleset: what the counters moved between them is what the drops
/// of that time went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetfilterReadings {
    /// The first reading since the drops were asked about.
    pub baseline: Arc<Netfilter>,
    /// The latest reading (the baseline itself until a second one).
    pub latest: Arc<Netfilter>,
}

/// One reading of the netfilter configuration of the daemon's network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netfilter {
    /// When it was read.
    pub at: Instant,
    /// The nftables tables (iptables-nft's included), or why they could not be read.
    pub tables: Result<Vec<Table>, String>,
    /// iptables-legacy tables that exist (`/proc/net/ip_tables_names`,
    /// `ip6_tables_names`): their rules are not read.
    pub legacy: Vec<String>,
}

/// The address family of an nftables table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `ip`: IPv4 (iptables).
    Ip,
    /// `ip6`: IPv6 (ip6tables).
    Ip6,
    /// `inet`: both.
    Inet,
    /// `arp`.
    Arp,
    /// `bridge`: bridged frames.
    Bridge,
    /// `netdev`: one device's ingress/egress.
    Netdev,
    /// Another value.
    Other(u8),
}

impl Family {
    /// From `nfgenmsg.nfgen_family` (NFPROTO_*).
    pub fn from_nfproto(value: u8) -> Self {
        match value {
            2 => Family::Ip,
            10 => Family::Ip6,
            1 => Family::Inet,
            3 => Family::Arp,
            7 => Family::Bridge,
            5 => Family::Netdev,
            other => Family::Other(other),
        }
    }

    /// Whether this family's chains see IPv4 (`v6` false) or IPv6 packets at the IP hooks.
    pub fn sees(&self, v6: bool) -> bool {
        matches!(
            (self, v6),
            (Family::Inet, _) | (Family::Ip, false) | (Family::Ip6, true)
        )
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Family::Ip => f.write_str("ip"),
            Family::Ip6 => f.write_str("ip6"),
            Family::Inet => f.write_str("inet"),
            Family::Arp => f.write_str("arp"),
            Family::Bridge => f.write_str("bridge"),
            Family::Netdev => f.write_str("netdev"),
            Family::Other(value) => write!(f, "family {value}"),
        }
    }
}

/// An nftables table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Its family.
    pub family: Family,
    /// Its name (`filter` for iptables-nft's).
    pub name: String,
    /// Its chains, in the kernel's order.
    pub chains: Vec<Chain>,
}

impl Table {
    /// `ip filter`.
    pub fn id(&self) -> String {
        format!("{} {}", self.family, self.name)
    }
}

/// A netfilter hook (where in the stack a base chain sees packets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// Arriving, before the routing decision.
    Prerouting,
    /// Arriving for this host.
    Input,
    /// Routed through this host (pod traffic on a node).
    Forward,
    /// Sent by this host.
    Output,
    /// Leaving, after the routing decision.
    Postrouting,
    /// A device's ingress (`netdev`/`inet`).
    Ingress,
    /// A device's egress (`netdev`).
    Egress,
}

impl Hook {
    /// From `NFTA_HOOK_HOOKNUM` in a table of `family`.
    pub fn from_hooknum(family: Family, value: u32) -> Option<Self> {
        match (family, value) {
            (Family::Netdev, 0) => Some(Hook::Ingress),
            (Family::Netdev, 1) => Some(Hook::Egress),
            (Family::Arp, _) => None,
            (_, 0) => Some(Hook::Prerouting),
            (_, 1) => Some(Hook::Input),
            (_, 2) => Some(Hook::Forward),
            (_, 3) => Some(Hook::Output),
            (_, 4) => Some(Hook::Postrouting),
            (_, 5) => Some(Hook::Ingress),
            _ => None,
        }
    }

    /// `forward`, as nft names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

/// A packet or byte counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// What a base chain hooks into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseChain {
    /// The hook.
    pub hook: Hook,
    /// Its priority there (lower runs first).
    pub priority: i32,
    /// What happens to a packet no rule decided: true for drop.
    pub policy_drop: bool,
    /// Its type: `filter`, `nat`, `route`.
    pub kind: String,
}

/// An nftables chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Its name (`FORWARD` for iptables-nft's).
    pub name: String,
    /// Set for a base chain.
    pub base: Option<BaseChain>,
    /// A base chain's counter: the packets its policy decided (iptables-nft sets one on
    /// every base chain; plain nft chains have none).
    pub counter: Option<Counter>,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// What a rule decides when it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `reject` (an ICMP error or TCP reset is sent; the packet is dropped).
    Reject,
    /// `jump <chain>`.
    Jump(String),
    /// `goto <chain>`.
    Goto(String),
    /// `return`.
    Return,
    /// `queue` to userspace.
    Queue,
}

impl Verdict {
    /// Whether the packet is dropped.
    pub fn drops(&self) -> bool {
        matches!(self, Verdict::Drop | Verdict::Reject)
    }
}

/// An nftables rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Its handle (`nft -a list chain …` shows it).
    pub handle: u64,
    /// Its counter expression's value, if it has one (iptables-nft rules always do).
    pub counter: Option<Counter>,
    /// Its final verdict, if any.
    pub verdict: Option<Verdict>,
    /// The rule in nft-like words, e.g. `ip saddr 10.244.1.0/24 counter drop`.
    pub text: String,
    /// Its comment, if any.
    pub comment: Option<String>,
}

/// The reverse-path filter settings of the daemon's namespace
/// (`net.ipv4.conf.<name>.rp_filter`: 0 off, 1 strict, 2 loose).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpFilter {
    /// By configuration name: `all`, `default` and each interface.
    pub values: BTreeMap<String, u8>,
}

impl RpFilter {
    /// The mode the kernel applies on `dev`: the larger of `all` and the device's own.
    pub fn effective(&self, dev: &str) -> Option<u8> {
        let all = self.values.get("all").copied().unwrap_or(0);
        let own = self.values.get(dev).copied()?;
        Some(all.max(own))
    }
}

/// Offload features of one device, as `ethtool -k` names them (`rx-checksum`,
/// `tx-checksum-ip-generic`, …), on or off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offloads {
    /// The checksum features, or why they could not be read.
    pub features: Result<BTreeMap<String, bool>, String>,
}
