//! Observing the lab: FDB, neighbours, routes and interface counters, as the kernel's own
//! tools print them.

use std::{collections::BTreeSet, net::Ipv4Addr};

use super::{Lab, VXLAN_DEV, netns::ip_tool};
use crate::NetNs;
use crate::ip;

impl Lab {
    // ---------------------------------------------------------------- inspection

    /// `flannel.1`'s FDB on node `i` (`bridge fdb show dev flannel.1`).
    pub fn fdb(&self, i: usize) -> Vec<FdbEntry> {
        ip_tool(
            "bridge",
            Some(&self.node(i).ns),
            &["fdb", "show", "dev", VXLAN_DEV],
        )
        .lines()
        .filter_map(FdbEntry::parse)
        .collect()
    }

    /// The state (`PERMANENT`, `REACHABLE`, `INCOMPLETE`, `FAILED`, …) of the neighbour
    /// `addr` on `dev` in node `i`, if there is an entry.
    pub fn neighbour_state(&self, i: usize, dev: &str, addr: Ipv4Addr) -> Option<String> {
        let text = ip_tool(
            "ip",
            Some(&self.node(i).ns),
            &["neigh", "show", &addr.to_string(), "dev", dev],
        );
        text.lines()
            .find_map(|line| line.split_whitespace().last().map(str::to_owned))
    }

    /// Node `i`'s IPv4 main routing table (`ip route show`).
    pub fn routes(&self, i: usize) -> String {
        ip_tool("ip", Some(&self.node(i).ns), &["route", "show"])
    }

    /// Packet counters of `dev` in node `i` (`ip -s -j link show dev <dev>`).
    pub fn link_stats(&self, i: usize, dev: &str) -> LinkStats {
        let text = ip_tool(
            "ip",
            Some(&self.node(i).ns),
            &["-s", "-j", "link", "show", "dev", dev],
        );
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("ip -s -j link show dev {dev}: {e}: {text}"));
        let stats = &json[0]["stats64"];
        let count = |dir: &str, key: &str| {
            stats[dir][key]
                .as_u64()
                .unwrap_or_else(|| panic!("no stats64.{dir}.{key} for {dev}: {text}"))
        };
        LinkStats {
            rx_packets: count("rx", "packets"),
            rx_dropped: count("rx", "dropped"),
            tx_packets: count("tx", "packets"),
            tx_dropped: count("tx", "dropped"),
            tx_errors: count("tx", "errors"),
        }
    }

    /// Runs `ip args…` inside node `i`'s namespace, panicking on failure.
    pub fn ip_in(&self, i: usize, args: &[&str]) {
        let mut full = vec!["-n", self.node(i).ns.name()];
        full.extend_from_slice(args);
        ip(&full);
    }
}

/// One `flannel.1` FDB entry as `bridge fdb show` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The remote VTEP's MAC.
    pub mac: String,
    /// The underlay address the entry sends to.
    pub dst: Option<Ipv4Addr>,
    /// The remaining words, e.g. `self permanent`.
    pub flags: String,
}

impl FdbEntry {
    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let mac = words.next()?.to_owned();
        let mut dst = None;
        let mut flags = Vec::new();
        while let Some(word) = words.next() {
            match word {
                "dst" => dst = words.next().and_then(|a| a.parse().ok()),
                "dev" => {
                    words.next();
                }
                other => flags.push(other),
            }
        }
        Some(Self {
            mac,
            dst,
            flags: flags.join(" "),
        })
    }
}

/// Interface packet counters, see [`Lab::link_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets dropped on transmit (e.g. `flannel.1` with no FDB entry).
    pub tx_dropped: u64,
    /// Transmit errors (e.g. no route to the remote VTEP).
    pub tx_errors: u64,
}

/// The configuration `ns` holds, one labelled line each: every table's routes (both
/// families, with details), the rules, the permanent and static neighbours and the FDB
/// entries that are configuration (not learned). Learned FDB entries and dynamic
/// neighbours come and go with traffic and are left out. Two equal dumps mean nothing
/// was configured differently (what repair must leave untouched is compared this way).
pub fn config_dump(ns: &NetNs) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for (label, tool, args) in [
        (
            "route4",
            "ip",
            &["-d", "-4", "route", "show", "table", "all"][..],
        ),
        (
            "route6",
            "ip",
            &["-d", "-6", "route", "show", "table", "all"][..],
        ),
        ("rule4", "ip", &["-4", "rule", "show"][..]),
        ("rule6", "ip", &["-6", "rule", "show"][..]),
        ("neigh", "ip", &["neigh", "show"][..]),
        ("fdb", "bridge", &["fdb", "show"][..]),
    ] {
        for line in ip_tool(tool, Some(ns), args).lines() {
            let configured = match label {
                "neigh" => line.contains("PERMANENT") || line.contains("NOARP"),
                "fdb" => {
                    line.contains("permanent") || line.contains("static") || line.contains(" dst ")
                }
                _ => true,
            };
            if configured {
                lines.insert(format!("{label}: {}", line.trim_end()));
            }
        }
    }
    lines
}
