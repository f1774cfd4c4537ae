//! Convergence under churn: a seeded random sequence of link, address, route (IPv4 and
//! IPv6, several tables, one prefix on several devices, metrics, TOS, multipath, source
//! prefixes, reject types), rule, neighbour and FDB adds, appends, prepends, replaces
//! and deletes, with devices going up, down and away, in a real namespace. At every
//! checkpoint the long-running mirror must equal a fresh dump (object by object, routes
//! of one key in the kernel's order) and what `ip -j`/`bridge -j` print.
//!
//! `WATCHDOG_CHURN_SEED` replays a seed (a failure prints it), `WATCHDOG_CHURN_STEPS`
//! sets the length (default 600, about 10 s). A replay runs the same commands; what the
//! bridge learns from the devices' own traffic (IPv6 router solicitations, MLD) may
//! differ with timing.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use watchdog::model::net::{Prefix, Route, RouteKind, Snapshot, format_mac};
use watchdog_tests::{NetNs, require_root};

use super::LiveMirror;

/// splitmix64: small, seedable, good enough to pick commands.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Every device name the churn uses: three veth pairs, a bridge, two VXLAN devices.
const DEVICES: [&str; 9] = ["v0", "v0p", "v1", "v1p", "v2", "v2p", "br0", "vx0", "vx1"];
const PORTS: [&str; 6] = ["v0", "v0p", "v1", "v1p", "v2", "v2p"];
/// The ends that may join br0: one of each pair. Both ends of a pair in one bridge make a
/// loop: every broadcast circles forever and each MAC behind it moves between the two
/// ports at line rate, one RTM_NEWNEIGH per move, until the notification socket
/// overruns. That is a broadcast storm, not churn, and nothing can follow it by
/// notifications.
const BRIDGE_PORTS: [&str; 3] = ["v0", "v1p", "v2p"];
const VXLANS: [&str; 2] = ["vx0", "vx1"];
const ADDRESSES_V4: [&str; 6] = [
    "10.0.0.1/24",
    "10.0.0.2/24",
    "10.0.1.1/24",
    "10.1.0.1/16",
    "10.0.0.1/16",
    "10.2.0.1/24",
];
const ADDRESSES_V6: [&str; 4] = ["fd00::1/64", "fd00::2/64", "fd01::1/64", "fd02::1/48"];
const SOURCES_V4: [&str; 3] = ["10.0.0.1", "10.0.1.1", "10.1.0.1"];
const GATEWAYS_V4: [&str; 3] = ["10.0.0.9", "10.0.1.9", "10.1.2.9"];
const GATEWAYS_V6: [&str; 3] = ["fd00::9", "fd01::9", "fd00::8"];
const DESTINATIONS_V4: [&str; 6] = [
    "10.100.0.0/24",
    "10.100.1.0/24",
    "10.100.0.0/16",
    "default",
    "10.100.9.9",
    "10.0.0.0/24",
];
const DESTINATIONS_V6: [&str; 5] = [
    "fd10::/64",
    "fd11::/64",
    "default",
    "fd10::/48",
    "fd00::/64",
];
const TABLES: [&str; 4] = ["", " table 100", " table 200", ""];
const METRICS: [&str; 4] = ["", " metric 10", " metric 20", ""];

/// Picks random commands (many fail: adding what exists, deleting what does not, a
/// device that is gone; that is part of the churn).
struct Churn {
    rng: Rng,
}

impl Churn {
    fn command(&mut self) -> (&'static str, String) {
        let r = &mut self.rng;
        match r.below(100) {
            0..=24 => ("ip", self.route_v4()),
            25..=39 => ("ip", self.route_v6()),
            40..=51 => ("ip", self.address()),
            52..=67 => ("ip", self.link()),
            68..=75 => ("ip", self.rule()),
            76..=86 => ("ip", self.neighbour()),
            _ => ("bridge", self.fdb()),
        }
    }

    fn verb(&mut self) -> &'static str {
        self.rng.pick(&[
            "add", "add", "append", "prepend", "replace", "replace", "del", "del",
        ])
    }

    fn route_v4(&mut self) -> String {
        let verb = self.verb();
        let r = &mut self.rng;
        let dst = r.pick(&DESTINATIONS_V4);
        let table = r.pick(&TABLES);
        if verb == "del" {
            let metric = if r.chance(50) { r.pick(&METRICS) } else { "" };
            let dev = if r.chance(50) {
                format!(" dev {}", r.pick(&DEVICES))
            } else {
                String::new()
            };
            return format!("route del {dst}{table}{metric}{dev}");
        }
        let (x, y) = (r.pick(&DEVICES), r.pick(&DEVICES));
        let (g, h) = (r.pick(&GATEWAYS_V4), r.pick(&GATEWAYS_V4));
        let (kind, paths) = match r.below(10) {
            0..=3 => ("", format!(" dev {x}")),
            4 | 5 => ("", format!(" via {g} dev {x} onlink")),
            6 => (
                "",
                format!(" nexthop via {g} dev {x} onlink nexthop via {h} dev {y} onlink"),
            ),
            7 => ("", format!(" nexthop dev {x} nexthop dev {y}")),
            _ => (
                r.pick(&["blackhole ", "unreachable ", "prohibit ", "throw "]),
                String::new(),
            ),
        };
        let metric = r.pick(&METRICS);
        let src = if r.chance(20) && kind.is_empty() {
            format!(" src {}", r.pick(&SOURCES_V4))
        } else {
            String::new()
        };
        let tos = if r.chance(10) { " tos 0x10" } else { "" };
        format!("route {verb} {kind}{dst}{paths}{table}{metric}{src}{tos}")
    }

    fn route_v6(&mut self) -> String {
        let verb = self.verb();
        let r = &mut self.rng;
        let dst = r.pick(&DESTINATIONS_V6);
        let from = if r.chance(20) && dst != "default" {
            " from fd00::/64"
        } else {
            ""
        };
        let table = r.pick(&TABLES);
        let metric = r.pick(&METRICS);
        let (x, y) = (r.pick(&DEVICES), r.pick(&DEVICES));
        let (g, h) = (r.pick(&GATEWAYS_V6), r.pick(&GATEWAYS_V6));
        if verb == "del" {
            let path = match r.below(3) {
                0 => String::new(),
                1 => format!(" dev {x}"),
                _ => format!(" via {g} dev {x}"),
            };
            return format!("-6 route del {dst}{from}{path}{table}{metric}");
        }
        let (kind, paths) = match r.below(10) {
            0..=3 => ("", format!(" dev {x}")),
            4..=6 => ("", format!(" via {g} dev {x} onlink")),
            7 => (
                "",
                format!(" nexthop via {g} dev {x} onlink nexthop via {h} dev {y} onlink"),
            ),
            _ => (
                r.pick(&["blackhole ", "unreachable ", "prohibit "]),
                String::new(),
            ),
        };
        format!("-6 route {verb} {kind}{dst}{from}{paths}{table}{metric}")
    }

    fn address(&mut self) -> String {
        let r = &mut self.rng;
        let verb = if r.chance(60) { "add" } else { "del" };
        let dev = r.pick(&DEVICES);
        if r.chance(65) {
            format!("addr {verb} {} dev {dev}", r.pick(&ADDRESSES_V4))
        } else {
            format!("addr {verb} {} dev {dev} nodad", r.pick(&ADDRESSES_V6))
        }
    }

    fn link(&mut self) -> String {
        let r = &mut self.rng;
        let dev = r.pick(&DEVICES);
        match r.below(20) {
            0..=6 => format!("link set {dev} up"),
            7..=10 => format!("link set {dev} down"),
            11 | 12 => format!("link del {dev}"),
            13 | 14 => {
                let port = r.pick(&BRIDGE_PORTS);
                if r.chance(70) {
                    format!("link set {port} master br0")
                } else {
                    format!("link set {port} nomaster")
                }
            }
            15 => format!("link set {dev} mtu {}", r.pick(&[1400, 1500])),
            _ => match r.below(3) {
                0 => {
                    let n = r.below(3);
                    format!("link add v{n} type veth peer name v{n}p")
                }
                1 => "link add br0 type bridge".to_owned(),
                _ => {
                    let n = r.below(2);
                    let underlay = if r.chance(50) { " dev v0" } else { "" };
                    format!(
                        "link add vx{n} type vxlan id {} dstport 4789 nolearning{underlay}",
                        100 + n
                    )
                }
            },
        }
    }

    fn rule(&mut self) -> String {
        let r = &mut self.rng;
        let v6 = r.chance(30);
        let verb = if r.chance(60) { "add" } else { "del" };
        let pref = r.pick(&[100, 200, 300, 32000]);
        let selector = if v6 {
            r.pick(&[
                "",
                " from fd05::/64",
                " to fd10::/48",
                " fwmark 0x1",
                " iif v0",
            ])
        } else {
            r.pick(&[
                "",
                " from 10.5.0.0/16",
                " to 10.100.0.0/16",
                " fwmark 0x1",
                " iif v0",
                " ipproto tcp dport 80",
                " not from 10.6.0.0/16",
            ])
        };
        let action = r.pick(&[
            " table 100",
            " table 200",
            " unreachable",
            " blackhole",
            " goto 32001",
        ]);
        let family = if v6 { "-6 " } else { "" };
        format!("{family}rule {verb} pref {pref}{selector}{action}")
    }

    fn neighbour(&mut self) -> String {
        let r = &mut self.rng;
        let ip = r.pick(&[
            "10.0.0.50",
            "10.0.0.51",
            "10.0.1.50",
            "fd00::50",
            "fd00::51",
        ]);
        let dev = r.pick(&DEVICES);
        match r.below(5) {
            0 => format!("neigh del {ip} dev {dev}"),
            n => format!(
                "neigh {} {ip} lladdr 02:00:00:00:00:0{} dev {dev} nud {}",
                if n == 1 { "add" } else { "replace" },
                r.below(4),
                r.pick(&["permanent", "permanent", "noarp", "stale", "reachable"])
            ),
        }
    }

    fn fdb(&mut self) -> String {
        let r = &mut self.rng;
        let vx = r.pick(&VXLANS);
        let dst = r.pick(&["10.0.0.5", "10.0.0.6", "10.0.1.7"]);
        let mac = format!("02:00:00:00:01:0{}", r.below(3));
        match r.below(8) {
            0 | 1 => format!("fdb append 00:00:00:00:00:00 dev {vx} dst {dst}"),
            2 => format!("fdb del 00:00:00:00:00:00 dev {vx} dst {dst}"),
            3 => format!("fdb add {mac} dev {vx} dst {dst} self permanent"),
            4 => format!("fdb replace {mac} dev {vx} dst {dst} self permanent"),
            5 => format!("fdb del {mac} dev {vx}"),
            6 => format!(
                "fdb add 02:00:00:00:02:0{} dev {} master static",
                r.below(3),
                r.pick(&PORTS)
            ),
            _ => format!(
                "fdb del 02:00:00:00:02:0{} dev {} master",
                r.below(3),
                r.pick(&PORTS)
            ),
        }
    }
}

/// Runs `ip -n <ns> …` or `bridge …` in the namespace; the error text on failure.
fn run(ns: &NetNs, tool: &str, command: &str) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    if tool == "bridge" {
        cmd.args(["netns", "exec", ns.name(), "bridge"]);
    } else {
        cmd.args(["-n", ns.name()]);
    }
    let output = cmd
        .args(command.split_whitespace())
        .output()
        .expect("run ip");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// A fresh dump of the namespace.
fn fresh(ns: &NetNs) -> Snapshot {
    ns.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(watchdog::sources::mirror::dump())
            .expect("a fresh dump")
    })
}

/// The snapshot object by object, as comparable text: each kind sorted, the routes of
/// one (table, destination) in the order the snapshot keeps them.
fn objects(s: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(s.links().map(|l| format!("link {l:?}")));
    out.extend(s.addresses().map(|a| format!("address {a:?}")));
    let keys: BTreeSet<(u32, Prefix)> = s.routes().map(|r| (r.table, r.dst)).collect();
    for (table, dst) in keys {
        for (i, route) in s.routes_to(table, &dst).enumerate() {
            out.push(format!("route {table} {dst} #{i} {route:?}"));
        }
    }
    // Each family's rules in order (the kernel keeps one list per family).
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        out.extend(
            s.rules()
                .filter(|r| r.family == family)
                .enumerate()
                .map(|(i, r)| format!("rule {family} #{i} {r:?}")),
        );
    }
    out.extend(s.neighbours().map(|n| format!("neighbour {n:?}")));
    out.extend(s.fdb().map(|f| format!("fdb {f:?}")));
    out
}

fn name(s: &Snapshot, index: Option<u32>) -> String {
    match index {
        None => "-".into(),
        Some(i) => s
            .link(i)
            .map_or_else(|| format!("#{i}"), |l| l.name.clone()),
    }
}

/// What `ip -j`/`bridge -j` would print for the snapshot, reduced to the fields both
/// sides have, one line per object, sorted.
fn as_ip(s: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in s.links() {
        out.push(format!(
            "link {} {} up={} mtu={} master={}",
            l.index,
            l.name,
            l.admin_up,
            l.mtu,
            name(s, l.master)
        ));
    }
    for a in s.addresses() {
        out.push(format!("address {} {}", name(s, Some(a.ifindex)), a.prefix));
    }
    for r in s.routes() {
        out.push(route_line(
            r.table,
            &route_kind(r.kind),
            &r.dst.to_string(),
            &r.src.map_or("-".into(), |p| p.to_string()),
            r.tos,
            r.priority,
            &r.prefsrc.map_or("-".into(), |p| p.to_string()),
            r.onlink,
            path_lines(s, r),
        ));
    }
    for r in s.rules() {
        out.push(format!(
            "rule {} {} {}",
            if r.family == libc::AF_INET as u8 {
                4
            } else {
                6
            },
            r.priority,
            r.table
        ));
    }
    for n in s.neighbours() {
        out.push(format!(
            "neighbour {} {} {} {}",
            name(s, Some(n.ifindex)),
            n.ip,
            n.mac.map_or("-".into(), |m| format_mac(&m)),
            n.state
        ));
    }
    for f in s.fdb() {
        out.push(format!(
            "fdb {} {} {}",
            name(s, Some(f.ifindex)),
            format_mac(&f.mac),
            f.dst.map_or("-".into(), |d| d.to_string())
        ));
    }
    out.sort();
    out
}

fn route_kind(kind: RouteKind) -> String {
    match kind {
        RouteKind::Unicast => "unicast".into(),
        RouteKind::Other(4) => "anycast".into(),
        RouteKind::Other(5) => "multicast".into(),
        RouteKind::Other(n) => format!("type{n}"),
        kind => kind.word().unwrap_or("?").into(),
    }
}

fn path_lines(s: &Snapshot, r: &Route) -> Vec<String> {
    let mut paths: Vec<String> = if r.nexthops.is_empty() {
        vec![format!(
            "{}/{}",
            name(s, r.oif),
            r.gateway.map_or("-".into(), |g| g.to_string())
        )]
    } else {
        r.nexthops
            .iter()
            .map(|h| {
                format!(
                    "{}/{}{}",
                    name(s, h.oif),
                    h.gateway.map_or("-".into(), |g| g.to_string()),
                    if h.dead { "/dead" } else { "" }
                )
            })
            .collect()
    };
    if !r.dst.is_ipv4() {
        paths.sort();
    }
    paths
}

#[allow(clippy::too_many_arguments)]
fn route_line(
    table: u32,
    kind: &str,
    dst: &str,
    src: &str,
    tos: u8,
    metric: u32,
    prefsrc: &str,
    onlink: bool,
    paths: Vec<String>,
) -> String {
    format!(
        "route table={table} {kind} {dst} from={src} tos={tos} metric={metric} src={prefsrc} \
         onlink={onlink} paths={}",
        paths.join(",")
    )
}

/// What the kernel says through `ip -j`/`bridge -j`, in [`as_ip`]'s form.
fn kernel(ns: &NetNs) -> Vec<String> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let mut out: Vec<String> = Vec::new();
    for l in array(ns.ip_json(&["link", "show"])) {
        let up = l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"));
        out.push(format!(
            "link {} {} up={up} mtu={} master={}",
            l["ifindex"],
            text(&l["ifname"]).unwrap_or_default(),
            l["mtu"],
            text(&l["master"]).unwrap_or("-".into())
        ));
    }
    for l in array(ns.ip_json(&["addr", "show"])) {
        let dev = text(&l["ifname"]).unwrap_or_default();
        for a in array(l["addr_info"].clone()) {
            out.push(format!(
                "address {dev} {}/{}",
                text(&a["local"]).unwrap_or_default(),
                a["prefixlen"]
            ));
        }
    }
    let routes = array(ns.ip_json(&["-4", "route", "show", "table", "all"]))
        .into_iter()
        .map(|r| (false, r))
        .chain(
            array(ns.ip_json(&["-6", "route", "show", "table", "all"]))
                .into_iter()
                .map(|r| (true, r)),
        );
    for (v6, r) in routes {
        let table = match r["table"].as_str() {
            None | Some("main") => 254,
            Some("local") => 255,
            Some("default") => 253,
            Some(n) => n.parse().expect("table number"),
        };
        let dst = match r["dst"].as_str().expect("dst") {
            "default" if v6 => "::/0".to_owned(),
            "default" => "0.0.0.0/0".to_owned(),
            d if d.contains('/') => d.to_owned(),
            d if v6 => format!("{d}/128"),
            d => format!("{d}/32"),
        };
        let flags = |v: &serde_json::Value, flag: &str| {
            v["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == flag))
        };
        let path = |v: &serde_json::Value, dead: bool| {
            format!(
                "{}/{}{}",
                text(&v["dev"]).unwrap_or("-".into()),
                text(&v["gateway"]).unwrap_or("-".into()),
                if dead && flags(v, "dead") {
                    "/dead"
                } else {
                    ""
                }
            )
        };
        let mut paths: Vec<String> = match r["nexthops"].as_array() {
            Some(hops) => hops.iter().map(|h| path(h, true)).collect(),
            None => vec![path(&r, false)],
        };
        if v6 {
            paths.sort();
        }
        let tos = r["tos"].as_str().map_or(0, |t| {
            u8::from_str_radix(t.trim_start_matches("0x"), 16).unwrap_or(0)
        });
        out.push(route_line(
            table,
            r["type"].as_str().unwrap_or("unicast"),
            &dst,
            r["from"].as_str().unwrap_or("-"),
            tos,
            u32::try_from(r["metric"].as_u64().unwrap_or(0)).expect("metric"),
            r["prefsrc"].as_str().unwrap_or("-"),
            r["nexthops"].is_null() && flags(&r, "onlink"),
            paths,
        ));
    }
    for (family, args) in [(4, ["-4", "rule", "show"]), (6, ["-6", "rule", "show"])] {
        for r in array(ns.ip_json(&args)) {
            let table = match r["table"].as_str() {
                Some("main") => 254,
                Some("local") => 255,
                Some("default") => 253,
                Some(n) => n.parse().unwrap_or(0),
                None => 0,
            };
            out.push(format!("rule {family} {} {table}", r["priority"]));
        }
    }
    for n in array(ns.ip_json(&["neigh", "show", "nud", "all"])) {
        let ip: Option<std::net::IpAddr> = n["dst"].as_str().and_then(|d| d.parse().ok());
        let lladdr = n["lladdr"].as_str().unwrap_or_default();
        let noarp = n["state"]
            .as_array()
            .is_some_and(|s| s.len() == 1 && s[0] == "NOARP");
        let derived = noarp
            && (ip.is_some_and(|ip| ip.is_unspecified() || ip.is_loopback())
                || lladdr == "00:00:00:00:00:00"
                || lladdr == "ff:ff:ff:ff:ff:ff");
        if ip.is_some_and(|ip| ip.is_multicast()) || derived {
            continue; // created as packets go out, never announced: not mirrored
        }
        let state: Vec<String> = array(n["state"].clone())
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        out.push(format!(
            "neighbour {} {} {} {}",
            text(&n["dev"]).unwrap_or_default(),
            text(&n["dst"]).unwrap_or_default(),
            text(&n["lladdr"]).unwrap_or("-".into()),
            if state.is_empty() {
                "NONE".into()
            } else {
                state.join(" ")
            }
        ));
    }
    let fdb = Command::new("ip")
        .args(["netns", "exec", ns.name(), "bridge", "-j", "fdb", "show"])
        .output()
        .expect("bridge -j fdb show");
    let fdb: serde_json::Value =
        serde_json::from_slice(&fdb.stdout).expect("bridge -j prints JSON");
    for f in array(fdb) {
        let mac = text(&f["mac"]).unwrap_or_default();
        let multicast = u8::from_str_radix(&mac[..2], 16).is_ok_and(|b| b & 1 == 1);
        if multicast && f["dst"].is_null() {
            continue; // a device's address list, not a forwarding entry
        }
        out.push(format!(
            "fdb {} {mac} {}",
            text(&f["ifname"]).unwrap_or_default(),
            text(&f["dst"]).unwrap_or("-".into())
        ));
    }
    out.sort();
    out
}

fn array(v: serde_json::Value) -> Vec<serde_json::Value> {
    match v {
        serde_json::Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// Lines only in `a`, then lines only in `b` (as multisets), for a failure message.
fn diff(what_a: &str, a: &[String], what_b: &str, b: &[String]) -> String {
    let minus = |x: &[String], y: &[String]| {
        let mut rest: Vec<&String> = y.iter().collect();
        x.iter()
            .filter(|line| match rest.iter().position(|r| r == line) {
                Some(i) => {
                    rest.remove(i);
                    false
                }
                None => true,
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut text = String::new();
    for line in minus(a, b) {
        let _ = writeln!(text, "  only in {what_a}: {line}");
    }
    for line in minus(b, a) {
        let _ = writeln!(text, "  only in {what_b}: {line}");
    }
    if text.is_empty() {
        text = format!(
            "  the same objects, in another order:\n  {what_a}: {a:#?}\n  {what_b}: {b:#?}\n"
        );
    }
    text
}

/// Waits until the live mirror equals a fresh dump and `ip -j`; the differences if it
/// does not within the deadline.
fn converged(ns: &NetNs, live: &LiveMirror) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dump = fresh(ns);
        let (mirrored, mirrored_ip) = live.mirror().with_snapshot(|s| (objects(s), as_ip(s)));
        let dumped = objects(&dump);
        let shown = kernel(ns);
        if mirrored == dumped && mirrored_ip == shown {
            return Ok(());
        }
        if Instant::now() > deadline {
            let mut why = String::new();
            if mirrored != dumped {
                why += &diff("the mirror", &mirrored, "a fresh dump", &dumped);
            }
            if mirrored_ip != shown {
                why += &diff("the mirror", &mirrored_ip, "ip -j", &shown);
            }
            return Err(why);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mirror_converges_on_the_kernel_under_random_churn() {
    if !require_root("mirror_converges_on_the_kernel_under_random_churn") {
        return;
    }
    let seed = std::env::var("WATCHDOG_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        });
    let steps: usize = std::env::var("WATCHDOG_CHURN_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    eprintln!("churn seed {seed} ({steps} steps): WATCHDOG_CHURN_SEED={seed} replays it");
    let ns = NetNs::new("wd-churn");
    for (tool, command) in [
        ("ip", "link add v0 type veth peer name v0p"),
        ("ip", "link add br0 type bridge"),
        (
            "ip",
            "link add vx0 type vxlan id 100 dstport 4789 nolearning dev v0",
        ),
        ("ip", "addr add 10.0.0.1/24 dev v0"),
        ("ip", "addr add fd00::1/64 dev v0 nodad"),
        ("ip", "link set v0 up"),
        ("ip", "link set v0p up"),
        ("ip", "link set br0 up"),
        ("ip", "link set vx0 up"),
    ] {
        run(&ns, tool, command).unwrap_or_else(|e| panic!("{command}: {e}"));
    }
    let live = LiveMirror::start(&ns);
    let mut churn = Churn { rng: Rng(seed) };
    let mut log: Vec<String> = Vec::new();
    let mut applied = 0;
    for step in 1..=steps {
        let (tool, command) = churn.command();
        let outcome = run(&ns, tool, &command);
        applied += usize::from(outcome.is_ok());
        log.push(format!(
            "{step:4} {tool} {command}{}",
            outcome.err().map_or(String::new(), |e| format!("   # {e}"))
        ));
        if (step % 50 == 0 || step == steps)
            && let Err(why) = converged(&ns, &live)
        {
            let recent = &log[log.len().saturating_sub(50)..];
            panic!(
                "after step {step}, seed {seed} (replay: WATCHDOG_CHURN_SEED={seed} \
                 WATCHDOG_CHURN_STEPS={step}):\n{why}\nmirror: {:?}, {:?}\nthe last commands:\n{}",
                live.mirror().stats(),
                live.mirror().failure(),
                recent.join("\n")
            );
        }
    }
    let stats = live.mirror().stats();
    eprintln!("{applied} of {steps} commands changed something; {stats:?}");
    // About one command in five changes something (the rest add what exists, delete
    // what does not, or name a device that is gone): enough to churn every kind.
    assert!(applied > steps / 8, "too few commands worked: {applied}");
    assert_eq!(
        stats.resyncs_overrun, 0,
        "converged by notifications, not by a reload"
    );
}
