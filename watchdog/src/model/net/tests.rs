use std::net::Ipv4Addr;

use super::*;

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

fn p(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn link(index: u32, name: &str) -> Link {
    Link::named(index, name)
}

fn via(dst: &str, gateway: &str, oif: u32) -> Route {
    Route {
        gateway: Some(ip(gateway)),
        oif: Some(oif),
        ..Route::unicast(p(dst))
    }
}

fn kind(dst: &str, kind: RouteKind) -> Route {
    Route {
        kind,
        ..Route::unicast(p(dst))
    }
}

fn snapshot(updates: impl IntoIterator<Item = Update>) -> Snapshot {
    let mut s = Snapshot::new();
    for u in updates {
        s.apply(u);
    }
    s
}

#[test]
fn prefix_parse_display_contains() {
    let net = p("10.244.3.0/24");
    assert_eq!(net.to_string(), "10.244.3.0/24");
    assert!(net.contains(&ip("10.244.3.77")));
    assert!(!net.contains(&ip("10.244.4.1")));
    assert!(!net.contains(&ip("::1")));
    assert_eq!(p("10.0.0.1").len, 32);
    assert_eq!(p("fd00::1").len, 128);
    assert_eq!(p("10.0.0.7/8").network(), p("10.0.0.0/8"));
    assert!(p("0.0.0.0/0").contains(&ip("203.0.113.9")));
    assert!(p("::/0").contains(&ip("2001:db8::1")));
    assert!(p("10.1.2.3/32").contains(&ip("10.1.2.3")));
    assert!(!p("10.1.2.3/32").contains(&ip("10.1.2.4")));
    assert!(p("fd00:1::/32").contains(&ip("fd00:1:ffff::9")));
    assert!(p("2001:db8::1/128").contains(&ip("2001:db8::1")));
    assert_eq!(
        "10.0.0.0/33".parse::<Prefix>(),
        Err(PrefixError::Length("33".into()))
    );
    assert!("fd00::/129".parse::<Prefix>().is_err());
    assert!(matches!(
        "nope/3".parse::<Prefix>(),
        Err(PrefixError::Address(_))
    ));
    assert!("10.0.0.0/x".parse::<Prefix>().is_err());
}

#[test]
fn lpm_longest_prefix_wins_default_and_host() {
    let s = snapshot([
        Update::NewRoute(via("0.0.0.0/0", "192.168.1.1", 2)),
        Update::NewRoute(via("10.64.0.0/10", "100.64.0.1", 3)),
        Update::NewRoute(via("10.64.5.0/24", "10.64.5.1", 4)),
        Update::NewRoute(via("10.64.5.9/32", "10.64.5.254", 5)),
    ]);
    assert_eq!(s.lookup(ip("8.8.8.8")).unwrap().dst, p("0.0.0.0/0"));
    assert_eq!(s.lookup(ip("10.100.0.1")).unwrap().dst, p("10.64.0.0/10"));
    assert_eq!(s.lookup(ip("10.64.5.3")).unwrap().dst, p("10.64.5.0/24"));
    assert_eq!(s.lookup(ip("10.64.5.9")).unwrap().dst, p("10.64.5.9/32"));
    assert_eq!(s.lookup(ip("10.64.5.10")).unwrap().oif, Some(4));
    assert!(s.lookup(ip("2001:db8::1")).is_none(), "no IPv6 routes");
    assert_eq!(s.counts().routes, 4);
}

#[test]
fn lpm_without_default_misses() {
    let s = snapshot([Update::NewRoute(via("10.0.0.0/8", "10.0.0.1", 2))]);
    assert!(s.lookup(ip("11.0.0.1")).is_none());
}

#[test]
fn lpm_ipv6_and_metrics() {
    let s = snapshot([
        Update::NewRoute(via("::/0", "fe80::1", 2)),
        Update::NewRoute(Route {
            priority: 100,
            ..via("fd00:10::/64", "fd00::a", 3)
        }),
        Update::NewRoute(Route {
            priority: 50,
            ..via("fd00:10::/64", "fd00::b", 4)
        }),
    ]);
    let route = s.lookup(ip("fd00:10::5")).unwrap();
    assert_eq!(
        (route.priority, route.oif),
        (50, Some(4)),
        "lowest metric wins"
    );
    assert_eq!(s.lookup(ip("2001:db8::1")).unwrap().dst, p("::/0"));
    assert_eq!(s.counts().routes, 3);
    let mut s = s;
    // The kernel's notification describes the whole route.
    s.apply(Update::DelRoute(Route {
        priority: 50,
        ..via("fd00:10::/64", "fd00::b", 4)
    }));
    assert_eq!(s.lookup(ip("fd00:10::5")).unwrap().priority, 100);
    assert_eq!(s.counts().routes, 2);
}

#[test]
fn lpm_reject_kinds_and_tables() {
    let mut table100 = via("10.9.0.0/16", "10.9.0.1", 7);
    table100.table = 100;
    let local = Route {
        table: TABLE_LOCAL,
        kind: RouteKind::Local,
        oif: Some(2),
        ..Route::unicast(p("10.1.0.5/32"))
    };
    let s = snapshot([
        Update::NewRoute(via("0.0.0.0/0", "192.168.1.1", 2)),
        Update::NewRoute(kind("10.66.0.0/16", RouteKind::Blackhole)),
        Update::NewRoute(kind("10.77.0.0/16", RouteKind::Unreachable)),
        Update::NewRoute(kind("10.88.0.0/16", RouteKind::Prohibit)),
        Update::NewRoute(table100),
        Update::NewRoute(local),
    ]);
    assert_eq!(
        s.lookup(ip("10.66.1.1")).unwrap().kind,
        RouteKind::Blackhole
    );
    assert_eq!(
        s.lookup(ip("10.77.1.1")).unwrap().kind,
        RouteKind::Unreachable
    );
    assert_eq!(s.lookup(ip("10.88.1.1")).unwrap().kind, RouteKind::Prohibit);
    // Table 100 is not main.
    assert_eq!(s.lookup(ip("10.9.1.1")).unwrap().dst, p("0.0.0.0/0"));
    assert_eq!(s.lookup_in_table(100, ip("10.9.1.1")).unwrap().oif, Some(7));
    // Local routes are not in main, and lookup() ignores the local kind anyway.
    assert_eq!(s.lookup(ip("10.1.0.5")).unwrap().dst, p("0.0.0.0/0"));
    assert_eq!(s.routes_in_table(100).count(), 1);
    assert_eq!(s.routes().count(), 6);
    // Default rules: local first.
    match s.lookup_with_rules(ip("10.1.0.5"), None) {
        Some(Resolution::Route { route, rule: None }) => assert_eq!(route.kind, RouteKind::Local),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rules_in_priority_order_with_selectors_and_actions() {
    let mut t100 = via("10.9.0.0/16", "10.9.0.1", 7);
    t100.table = 100;
    let mut t200_default = via("0.0.0.0/0", "172.16.0.1", 8);
    t200_default.table = 200;
    let mut throw = kind("10.9.9.0/24", RouteKind::Throw);
    throw.table = 100;
    let rule_from = Rule {
        src: Some(p("10.5.0.0/16")),
        ..Rule::to_table(AF_INET, 100, 200)
    };
    let rule_to = Rule {
        dst: Some(p("10.9.0.0/16")),
        ..Rule::to_table(AF_INET, 200, 100)
    };
    let rule_reject = Rule {
        action: RuleAction::Unreachable,
        dst: Some(p("10.99.0.0/16")),
        ..Rule::to_table(AF_INET, 300, 0)
    };
    let rule_fwmark = Rule {
        fwmark: Some(0x1),
        ..Rule::to_table(AF_INET, 50, 200)
    };
    let rule_oif = Rule {
        oif: Some("wg0".into()),
        ..Rule::to_table(AF_INET, 51, 200)
    };
    let s = snapshot([
        Update::NewRoute(via("0.0.0.0/0", "192.168.1.1", 2)),
        Update::NewRoute(t100),
        Update::NewRoute(t200_default),
        Update::NewRoute(throw),
        // Inserted out of order on purpose.
        Update::NewRule(Rule::to_table(AF_INET, 32766, TABLE_MAIN)),
        Update::NewRule(rule_reject.clone()),
        Update::NewRule(rule_to.clone()),
        Update::NewRule(rule_from.clone()),
        Update::NewRule(Rule::to_table(AF_INET, 0, TABLE_LOCAL)),
        Update::NewRule(rule_fwmark),
        Update::NewRule(rule_oif),
        Update::NewRule(Rule::to_table(AF_INET6, 0, TABLE_LOCAL)),
    ]);
    let priorities: Vec<u32> = s.rules().map(|r| r.priority).collect();
    assert_eq!(priorities, [0, 0, 50, 51, 100, 200, 300, 32766]);

    let route_of = |dst: &str, src: Option<&str>| match s.lookup_with_rules(ip(dst), src.map(ip)) {
        Some(Resolution::Route { route, rule }) => (route.clone(), rule.map(|r| r.priority)),
        other => panic!("{dst}: {other:?}"),
    };
    // Source selector: from 10.5/16 uses table 200's default.
    let (route, rule) = route_of("8.8.8.8", Some("10.5.1.1"));
    assert_eq!((route.table, rule), (200, Some(100)));
    // No source: the from-rule does not match; main's default.
    let (route, rule) = route_of("8.8.8.8", None);
    assert_eq!((route.table, rule), (TABLE_MAIN, Some(32766)));
    // Destination selector: table 100.
    let (route, rule) = route_of("10.9.1.1", None);
    assert_eq!((route.table, rule), (100, Some(200)));
    // Throw in table 100 continues to later rules: main.
    let (route, rule) = route_of("10.9.9.9", None);
    assert_eq!((route.table, rule), (TABLE_MAIN, Some(32766)));
    // Rule action.
    assert_eq!(
        s.lookup_with_rules(ip("10.99.0.1"), None),
        Some(Resolution::Rejected { rule: &rule_reject })
    );
    // No IPv6 route at all.
    assert_eq!(s.lookup_with_rules(ip("fd00::1"), None), None);
}

#[test]
fn suppress_prefixlength_and_goto() {
    let mut wg_default = via("0.0.0.0/0", "10.0.0.1", 9);
    wg_default.table = 51820;
    let s = snapshot([
        Update::NewRoute(via("0.0.0.0/0", "192.168.1.1", 2)),
        Update::NewRoute(via("192.168.1.0/24", "192.168.1.254", 2)),
        Update::NewRoute(wg_default),
        // wg-quick: main without its default route, then the tunnel table.
        Update::NewRule(Rule {
            suppress_prefixlen: Some(0),
            ..Rule::to_table(AF_INET, 32764, TABLE_MAIN)
        }),
        Update::NewRule(Rule::to_table(AF_INET, 32765, 51820)),
        Update::NewRule(Rule::to_table(AF_INET, 32766, TABLE_MAIN)),
    ]);
    let table = |s: &Snapshot, dst: &str| match s.lookup_with_rules(ip(dst), None) {
        Some(Resolution::Route { route, .. }) => route.table,
        other => panic!("{other:?}"),
    };
    assert_eq!(table(&s, "192.168.1.20"), TABLE_MAIN);
    assert_eq!(table(&s, "8.8.8.8"), 51820);

    let mut s = s;
    s.apply(Update::NewRule(Rule {
        action: RuleAction::Goto,
        goto: Some(32766),
        ..Rule::to_table(AF_INET, 10, 0)
    }));
    assert_eq!(
        table(&s, "8.8.8.8"),
        TABLE_MAIN,
        "goto skips 32764 and 32765"
    );
}

#[test]
fn neigh_state_words_and_predicates() {
    assert_eq!(NeighState::REACHABLE.to_string(), "REACHABLE");
    assert_eq!(NeighState::FAILED.to_string(), "FAILED");
    assert_eq!(NeighState::PERMANENT.to_string(), "PERMANENT");
    assert_eq!(NeighState::NOARP.to_string(), "NOARP");
    assert_eq!(NeighState(0).to_string(), "NONE");
    assert_eq!(NeighState(0x24).to_string(), "STALE FAILED");
    assert_eq!(NeighState(0x100).to_string(), "0x100");
    assert!(NeighState::FAILED.is_failed());
    assert!(NeighState::INCOMPLETE.is_incomplete());
    assert!(NeighState::PERMANENT.is_permanent());
    for state in [
        NeighState::REACHABLE,
        NeighState::STALE,
        NeighState::DELAY,
        NeighState::PROBE,
    ] {
        assert!(state.is_reachable_or_stale(), "{state}");
        assert!(!state.is_failed());
    }
    assert!(!NeighState::FAILED.is_reachable_or_stale());
}

#[test]
fn route_display_names_devices() {
    let s = snapshot([Update::NewLink(link(5, "flannel.1"))]);
    let route = Route {
        onlink: true,
        ..via("10.244.3.0/24", "10.244.3.0", 5)
    };
    assert_eq!(
        route.display(&s).to_string(),
        "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink table main"
    );
    assert_eq!(
        route.to_string(),
        "10.244.3.0/24 via 10.244.3.0 dev #5 onlink table main"
    );
    let mut blackhole = kind("10.66.0.0/16", RouteKind::Blackhole);
    blackhole.table = 100;
    blackhole.priority = 7;
    assert_eq!(
        blackhole.to_string(),
        "blackhole 10.66.0.0/16 metric 7 table 100"
    );
    assert_eq!(
        via("0.0.0.0/0", "192.168.1.1", 5).display(&s).to_string(),
        "default via 192.168.1.1 dev flannel.1 table main"
    );
}

#[test]
fn apply_replaces_by_kernel_key() {
    let mut s = snapshot([Update::NewRoute(via("10.1.0.0/16", "10.0.0.1", 2))]);
    // Same (table, dst, tos, metric): a replace, whatever the type.
    s.apply(Update::NewRoute(kind("10.1.0.0/16", RouteKind::Blackhole)));
    assert_eq!(s.counts().routes, 1);
    assert_eq!(s.lookup(ip("10.1.2.3")).unwrap().kind, RouteKind::Blackhole);
    // Another table is another route.
    let mut other = via("10.1.0.0/16", "10.0.0.1", 2);
    other.table = 7;
    s.apply(Update::NewRoute(other.clone()));
    assert_eq!(s.counts().routes, 2);
    s.apply(Update::DelRoute(other));
    assert_eq!(s.counts().routes, 1);
    // Deleting something absent is harmless.
    s.apply(Update::DelRoute(via("10.2.0.0/16", "10.0.0.1", 2)));
    assert_eq!(s.counts().routes, 1);
}

#[test]
fn link_down_and_delete_flush_like_the_kernel() {
    let mut s = snapshot([
        Update::NewLink(link(2, "eth0")),
        Update::NewLink(link(3, "vx0")),
        Update::NewAddress(Address {
            ifindex: 3,
            prefix: p("10.244.0.1/24"),
        }),
        Update::NewRoute(via("10.244.3.0/24", "10.244.3.0", 3)),
        Update::NewRoute(via("0.0.0.0/0", "192.168.1.1", 2)),
        Update::NewRoute(via("fd00::/64", "fd00::1", 3)),
        Update::NewRoute(Route {
            table: TABLE_LOCAL,
            kind: RouteKind::Local,
            oif: Some(3),
            ..Route::unicast(p("10.244.0.1/32"))
        }),
        Update::NewRoute(Route {
            nexthops: vec![
                NextHop::new(Some(ip("10.0.0.1")), Some(2)),
                NextHop::new(Some(ip("10.0.0.2")), Some(3)),
            ],
            ..Route::unicast(p("10.50.0.0/16"))
        }),
        Update::NewNeighbour(Neighbour {
            ifindex: 3,
            ip: ip("10.244.3.0"),
            mac: Some([2, 0, 0, 0, 0, 1]),
            state: NeighState::PERMANENT,
        }),
        Update::NewFdb(FdbEntry {
            ifindex: 3,
            mac: [2, 0, 0, 0, 0, 1],
            dst: Some(ip("192.168.1.30")),
            vlan: None,
            vni: None,
            port: None,
            state: NeighState::PERMANENT,
            master: None,
        }),
    ]);
    assert_eq!(s.link_by_name("vx0").unwrap().index, 3);
    // Down: IPv4 routes only via vx0 go, the multipath route stays; neighbours go.
    s.apply(Update::NewLink(Link {
        admin_up: false,
        ..link(3, "vx0")
    }));
    assert!(s.lookup(ip("10.244.3.7")).unwrap().dst.len == 0);
    assert!(s.lookup(ip("10.50.0.1")).is_some());
    assert!(
        s.lookup(ip("fd00::5")).is_some(),
        "IPv6 deletions are announced"
    );
    assert_eq!(
        s.routes_in_table(TABLE_LOCAL).count(),
        1,
        "local routes stay"
    );
    assert_eq!(s.neighbours().count(), 0);
    assert_eq!(s.fdb().count(), 1);
    assert_eq!(s.addresses().count(), 1);
    // Delete: everything on it goes.
    s.apply(Update::DelLink(3));
    assert!(s.link(3).is_none());
    assert!(s.link_by_name("vx0").is_none());
    assert_eq!(s.fdb().count(), 0);
    assert_eq!(s.addresses().count(), 0);
    assert!(s.lookup(ip("fd00::5")).is_none());
    assert_eq!(s.routes_in_table(TABLE_LOCAL).count(), 0);
    assert_eq!(
        s.counts().routes,
        1,
        "the default remains; a multipath route with a path through a deleted device goes"
    );
}

#[test]
fn rename_updates_name_index() {
    let mut s = snapshot([Update::NewLink(link(4, "eth1"))]);
    s.apply(Update::NewLink(link(4, "lan0")));
    assert!(s.link_by_name("eth1").is_none());
    assert_eq!(s.link_by_name("lan0").unwrap().index, 4);
    assert_eq!(s.links().count(), 1);
}

#[test]
fn address_removal_flushes_routes_with_that_source() {
    let mut s = snapshot([
        Update::NewAddress(Address {
            ifindex: 2,
            prefix: p("10.0.0.5/24"),
        }),
        Update::NewRoute(Route {
            prefsrc: Some(ip("10.0.0.5")),
            ..via("10.8.0.0/16", "10.0.0.1", 2)
        }),
    ]);
    s.apply(Update::DelAddress(Address {
        ifindex: 2,
        prefix: p("10.0.0.5/24"),
    }));
    assert_eq!(s.counts().routes, 0);
    assert_eq!(s.counts().addresses, 0);
}

fn fdb(mac: [u8; 6], dst: &str) -> FdbEntry {
    FdbEntry {
        ifindex: 3,
        mac,
        dst: Some(ip(dst)),
        vlan: None,
        vni: None,
        port: None,
        state: NeighState::PERMANENT,
        master: None,
    }
}

#[test]
fn fdb_keys_follow_vxlan_semantics() {
    let zero = [0; 6];
    let unicast = [0x02, 0x42, 0, 0, 0, 9];
    let mut s = snapshot([
        Update::NewFdb(fdb(zero, "192.168.1.10")),
        Update::NewFdb(fdb(zero, "192.168.1.11")),
        Update::NewFdb(fdb(unicast, "192.168.1.10")),
    ]);
    assert_eq!(
        s.fdb_of(3).count(),
        3,
        "appended default destinations are distinct"
    );
    // `bridge fdb replace` of a unicast MAC announces only the new destination.
    s.apply(Update::NewFdb(fdb(unicast, "10.67.0.5")));
    let dsts: Vec<_> = s
        .fdb_of(3)
        .filter(|e| e.mac == unicast)
        .map(|e| e.dst)
        .collect();
    assert_eq!(dsts, [Some(ip("10.67.0.5"))]);
    s.apply(Update::DelFdb(fdb(zero, "192.168.1.11")));
    assert_eq!(s.fdb_of(3).count(), 2);
    assert_eq!(s.fdb_of(4).count(), 0);
    // A bridge port's `master` entry and `self` entry for one MAC are both kept.
    let mut master = fdb(unicast, "192.168.1.10");
    master.ifindex = 4;
    master.dst = None;
    master.master = Some(9);
    let mut own = master.clone();
    own.master = None;
    s.apply(Update::NewFdb(master));
    s.apply(Update::NewFdb(own));
    assert_eq!(s.fdb_of(4).count(), 2);
    // The bridge going away takes its entries for the port, unannounced; the port's
    // own entry stays.
    s.apply(Update::DelLink(9));
    assert_eq!(s.fdb_of(4).map(|e| e.master).collect::<Vec<_>>(), [None]);
}

/// A bridge holds one entry per MAC and VLAN. When a learned MAC shows up behind another
/// port the kernel moves the entry and announces only the new port (RTM_NEWNEIGH, no
/// RTM_DELNEIGH for the old one): the old port's entry goes with it.
#[test]
fn a_bridge_entry_moved_to_another_port_leaves_the_old_one() {
    let learned = |port: u32, vlan: Option<u16>| FdbEntry {
        ifindex: port,
        mac: [0xe2, 0xff, 0x85, 0x73, 0x4a, 0xe7],
        dst: None,
        vlan,
        vni: None,
        port: None,
        state: NeighState::REACHABLE,
        master: Some(9),
    };
    let own = FdbEntry {
        master: None,
        state: NeighState::PERMANENT,
        ..learned(4, None)
    };
    let mut s = snapshot([
        Update::NewFdb(learned(4, None)),
        Update::NewFdb(learned(4, Some(10))),
        Update::NewFdb(own.clone()),
    ]);
    s.apply(Update::NewFdb(learned(5, None)));
    let entries = |s: &Snapshot| {
        s.fdb()
            .map(|e| (e.ifindex, e.vlan, e.master))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        entries(&s),
        [(4, None, None), (4, Some(10), Some(9)), (5, None, Some(9))],
        "moved in VLAN 0 only; the port's own (self) entry is another table"
    );
    // Back again, then deleted where it is.
    s.apply(Update::NewFdb(learned(4, None)));
    assert_eq!(
        entries(&s),
        [(4, None, None), (4, None, Some(9)), (4, Some(10), Some(9))]
    );
    s.apply(Update::DelFdb(learned(4, None)));
    s.apply(Update::NewFdb(learned(5, None)));
    s.apply(Update::DelFdb(learned(4, Some(10))));
    assert_eq!(entries(&s), [(4, None, None), (5, None, Some(9))]);
    // Another bridge's entry for the same MAC is its own.
    s.apply(Update::NewFdb(FdbEntry {
        master: Some(8),
        ..learned(6, None)
    }));
    assert_eq!(s.fdb().count(), 3);
    // After the bridge goes (unannounced), a new bridge with its index starts empty.
    s.apply(Update::DelLink(9));
    s.apply(Update::NewFdb(learned(7, None)));
    assert_eq!(
        entries(&s),
        [(4, None, None), (6, None, Some(8)), (7, None, Some(9))]
    );
    assert_eq!(s.counts().fdb, 3);
}

#[test]
fn a_port_leaving_its_bridge_loses_the_bridge_entries() {
    let mut port = link(4, "p");
    port.master = Some(9);
    let mut s = snapshot([
        Update::NewLink(link(9, "br")),
        Update::NewLink(port.clone()),
    ]);
    let entry = FdbEntry {
        ifindex: 4,
        mac: [2, 0, 0, 0, 0, 1],
        dst: None,
        vlan: None,
        vni: None,
        port: None,
        state: NeighState::PERMANENT,
        master: Some(9),
    };
    s.apply(Update::NewFdb(entry));
    assert_eq!(s.fdb_of(4).count(), 1);
    port.master = None;
    s.apply(Update::NewLink(port));
    assert_eq!(s.fdb_of(4).count(), 0);
}

#[test]
fn neighbours_and_rules_are_idempotent() {
    let n = Neighbour {
        ifindex: 2,
        ip: ip("10.0.0.9"),
        mac: None,
        state: NeighState::INCOMPLETE,
    };
    let mut s = snapshot([
        Update::NewNeighbour(n.clone()),
        Update::NewNeighbour(Neighbour {
            state: NeighState::FAILED,
            ..n.clone()
        }),
        Update::NewRule(Rule::to_table(AF_INET, 5, 100)),
        Update::NewRule(Rule::to_table(AF_INET, 5, 100)),
    ]);
    assert_eq!(s.neighbours().count(), 1);
    assert!(s.neighbour(2, &ip("10.0.0.9")).unwrap().state.is_failed());
    assert_eq!(s.rules().count(), 1);
    s.apply(Update::DelNeighbour(n));
    s.apply(Update::DelRule(Rule::to_table(AF_INET, 5, 100)));
    assert_eq!(s.counts(), ObjectCounts::default());
}

#[test]
fn lpm_scales_to_100k_routes() {
    let mut s = Snapshot::new();
    for i in 0..100_000u32 {
        let addr = Ipv4Addr::from(0x0a00_0000 | (i << 8));
        s.apply(Update::NewRoute(via(
            &format!("{addr}/24"),
            "192.168.0.1",
            2,
        )));
    }
    s.apply(Update::NewRoute(via("0.0.0.0/0", "192.168.0.254", 2)));
    assert_eq!(s.counts().routes, 100_001);
    for i in (0..100_000u32).step_by(997) {
        let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i << 8) | 7));
        assert_eq!(s.lookup(addr).unwrap().dst.len, 24);
    }
    assert_eq!(s.lookup(ip("192.0.2.1")).unwrap().dst.len, 0);
}

/// Older kernels (5.10, 6.1; not 6.18) announce `bridge fdb append … dev vxlan dst X` twice: the VXLAN
/// driver's message with NDA_DST, then rtnetlink's generic one with only the MAC (seen on
/// Debian's 5.10 and 6.1 under qemu). The second must not erase the destination.
#[test]
fn the_generic_fdb_echo_of_older_kernels_keeps_the_vtep() {
    let unicast = [0x02, 0xfa, 0, 0, 0, 0x99];
    let echo = FdbEntry {
        dst: None,
        ..fdb(unicast, "10.55.0.99")
    };
    let s = snapshot([
        Update::NewFdb(fdb(unicast, "10.55.0.99")),
        Update::NewFdb(echo.clone()),
    ]);
    let dsts: Vec<_> = s.fdb_of(3).map(|e| e.dst).collect();
    assert_eq!(dsts, [Some(ip("10.55.0.99"))]);
    // An entry that never had a destination (a bridge port's) is still recorded.
    let s = snapshot([Update::NewFdb(echo)]);
    assert_eq!(s.fdb_of(3).count(), 1);
}

fn dev_route(dst: &str, oif: u32) -> Route {
    Route {
        oif: Some(oif),
        scope: 253,
        protocol: 2,
        ..Route::unicast(p(dst))
    }
}

fn add(route: Route) -> Update {
    Update::AddRoute {
        route,
        append: true,
    }
}

fn devices(s: &Snapshot, dst: &str) -> Vec<Option<u32>> {
    s.routes_to(TABLE_MAIN, &p(dst)).map(|r| r.oif).collect()
}

#[test]
fn one_prefix_on_two_devices_is_two_routes_and_the_survivor_stays() {
    // `ip addr add 10.1.0.1/24 dev d1; ip addr add 10.1.0.2/24 dev d2`: two connected
    // routes with the same key, told apart by their device.
    let mut s = snapshot([
        Update::NewLink(link(2, "d1")),
        Update::NewLink(link(3, "d2")),
        add(dev_route("10.1.0.0/24", 2)),
        add(dev_route("10.1.0.0/24", 3)),
        add(dev_route("fe80::/64", 2)),
        add(dev_route("fe80::/64", 3)),
    ]);
    assert_eq!(s.counts().routes, 4);
    assert_eq!(devices(&s, "10.1.0.0/24"), [Some(2), Some(3)]);
    // The deletion names its device: the other route stays.
    s.apply(Update::DelRoute(dev_route("10.1.0.0/24", 2)));
    assert_eq!(devices(&s, "10.1.0.0/24"), [Some(3)]);
    s.apply(Update::DelRoute(dev_route("fe80::/64", 3)));
    assert_eq!(devices(&s, "fe80::/64"), [Some(2)]);
    // One device going down (or away) takes only its own routes.
    s.apply(add(dev_route("10.1.0.0/24", 2)));
    s.apply(Update::NewLink(Link {
        admin_up: false,
        ..link(3, "d2")
    }));
    assert_eq!(devices(&s, "10.1.0.0/24"), [Some(2)]);
    s.apply(Update::DelLink(2));
    assert_eq!(s.counts().routes, 0);
}

#[test]
fn append_prepend_replace_and_delete_follow_the_kernel_order() {
    let mut s = snapshot([add(dev_route("10.9.0.0/24", 2))]);
    s.apply(add(dev_route("10.9.0.0/24", 3)));
    s.apply(Update::AddRoute {
        route: via("10.9.0.0/24", "10.1.0.5", 2),
        append: false,
    });
    assert_eq!(devices(&s, "10.9.0.0/24"), [Some(2), Some(2), Some(3)]);
    assert_eq!(
        s.lookup(ip("10.9.0.1")).unwrap().gateway,
        Some(ip("10.1.0.5")),
        "the first route of the key wins"
    );
    // The same route again (a notification that raced the dump) changes nothing.
    s.apply(add(dev_route("10.9.0.0/24", 3)));
    assert_eq!(s.counts().routes, 3);
    // Replace takes the first one's place.
    s.apply(Update::NewRoute(dev_route("10.9.0.0/24", 4)));
    assert_eq!(devices(&s, "10.9.0.0/24"), [Some(4), Some(2), Some(3)]);
    // Another metric is another key.
    s.apply(add(Route {
        priority: 10,
        ..dev_route("10.9.0.0/24", 5)
    }));
    assert_eq!(s.routes_to(TABLE_MAIN, &p("10.9.0.0/24")).count(), 4);
    assert_eq!(
        s.route(TABLE_MAIN, &p("10.9.0.0/24"), 10).unwrap().oif,
        Some(5)
    );
    s.apply(Update::DelRoute(dev_route("10.9.0.0/24", 2)));
    assert_eq!(devices(&s, "10.9.0.0/24"), [Some(4), Some(3), Some(5)]);
    // A deletion that matches nothing (a different gateway) removes nothing.
    s.apply(Update::DelRoute(via("10.9.0.0/24", "10.1.0.6", 4)));
    assert_eq!(s.counts().routes, 3);
}

#[test]
fn ipv6_ecmp_siblings_merge_and_split_like_the_kernel() {
    let gw = |n: u8, oif: u32| Route {
        priority: 1024,
        ..via("fd0a::/64", &format!("fd01::{n}"), oif)
    };
    let mut s = snapshot([add(gw(5, 2))]);
    // `ip -6 route append … via fd01::6 dev d2`: the kernel links a sibling and reports
    // the group; a single-path notification of a sibling merges the same way.
    s.apply(add(gw(6, 3)));
    let routes: Vec<&Route> = s.routes_to(TABLE_MAIN, &p("fd0a::/64")).collect();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].nexthops.len(), 2);
    assert_eq!((routes[0].gateway, routes[0].oif), (None, None));
    // A device route of the same metric is not a sibling.
    s.apply(add(Route {
        priority: 1024,
        ..dev_route("fd0a::/64", 4)
    }));
    assert_eq!(s.routes_to(TABLE_MAIN, &p("fd0a::/64")).count(), 2);
    // Deleting one sibling leaves a single-path route, as the kernel then dumps it.
    s.apply(Update::DelRoute(gw(5, 2)));
    let first = s
        .routes_to(TABLE_MAIN, &p("fd0a::/64"))
        .next()
        .unwrap()
        .clone();
    assert!(first.nexthops.is_empty());
    assert_eq!((first.gateway, first.oif), (Some(ip("fd01::6")), Some(3)));
    // Replace with a gateway route replaces the ECMP kind, not the device route.
    s.apply(Update::NewRoute(gw(7, 2)));
    let all: Vec<(Option<IpAddr>, Option<u32>)> = s
        .routes_to(TABLE_MAIN, &p("fd0a::/64"))
        .map(|r| (r.gateway, r.oif))
        .collect();
    assert_eq!(all, [(Some(ip("fd01::7")), Some(2)), (None, Some(4))]);
    // A whole group deleted in one notification.
    s.apply(add(gw(8, 3)));
    let group = s
        .routes_to(TABLE_MAIN, &p("fd0a::/64"))
        .next()
        .unwrap()
        .clone();
    assert_eq!(group.nexthops.len(), 2);
    s.apply(Update::DelRoute(group));
    assert_eq!(s.routes_to(TABLE_MAIN, &p("fd0a::/64")).count(), 1);
}

#[test]
fn ipv6_source_specific_routes_are_their_own_routes() {
    let from = Route {
        src: Some(p("fd01::/64")),
        ..dev_route("fd0b::/64", 2)
    };
    let mut s = snapshot([add(from.clone()), add(dev_route("fd0b::/64", 2))]);
    assert_eq!(s.counts().routes, 2);
    assert_eq!(
        from.display(&s).to_string(),
        "fd0b::/64 from fd01::/64 dev #2 table main"
    );
    assert!(s.lookup(ip("fd0b::1")).unwrap().src.is_none());
    s.apply(Update::DelRoute(dev_route("fd0b::/64", 2)));
    assert_eq!(s.counts().routes, 1);
    assert_eq!(
        s.lookup(ip("fd0b::1")),
        None,
        "a `from` route needs its source"
    );
}

#[test]
fn multipath_paths_die_with_their_device_and_come_back() {
    let multipath = |dst: &str| Route {
        nexthops: vec![
            NextHop::new(Some(ip("10.1.0.5")), Some(2)),
            NextHop::new(Some(ip("10.2.0.5")), Some(3)),
        ],
        ..Route::unicast(p(dst))
    };
    let down = |index: u32, up: bool| {
        Update::NewLink(Link {
            admin_up: up,
            ..link(index, "d")
        })
    };
    let mut s = snapshot([
        Update::NewLink(link(2, "d1")),
        Update::NewLink(link(3, "d2")),
        add(multipath("10.52.0.0/24")),
    ]);
    s.apply(down(2, false));
    let route = s.lookup(ip("10.52.0.1")).expect("one path left").clone();
    assert_eq!(
        route.nexthops.iter().map(|h| h.dead).collect::<Vec<_>>(),
        [true, false]
    );
    s.apply(down(2, true));
    assert!(
        s.lookup(ip("10.52.0.1"))
            .unwrap()
            .nexthops
            .iter()
            .all(|h| !h.dead)
    );
    s.apply(down(2, false));
    s.apply(down(3, false));
    assert_eq!(s.lookup(ip("10.52.0.1")), None, "every path dead: flushed");
}

#[test]
fn the_last_ipv4_address_takes_the_device_routes_and_a_source_only_main() {
    let address = |ifindex: u32, prefix: &str| Address {
        ifindex,
        prefix: p(prefix),
    };
    let mut in_100 = dev_route("10.50.0.0/24", 2);
    in_100.table = 100;
    let mut src_100 = dev_route("10.53.0.0/24", 3);
    src_100.table = 100;
    src_100.prefsrc = Some(ip("10.1.0.1"));
    let mut s = snapshot([
        Update::NewLink(link(2, "d1")),
        Update::NewLink(link(3, "d2")),
        Update::NewAddress(address(2, "10.1.0.1/24")),
        Update::NewAddress(address(3, "10.2.0.1/24")),
        add(in_100),
        add(src_100.clone()),
        add(Route {
            prefsrc: Some(ip("10.1.0.1")),
            ..dev_route("10.55.0.0/24", 3)
        }),
        add(Route {
            table: TABLE_LOCAL,
            kind: RouteKind::Local,
            ..dev_route("10.1.0.9/32", 2)
        }),
    ]);
    s.apply(Update::DelAddress(address(2, "10.1.0.1/24")));
    let left: Vec<String> = s.routes().map(|r| r.to_string()).collect();
    assert_eq!(left, [src_100.to_string()], "{left:?}");
}
