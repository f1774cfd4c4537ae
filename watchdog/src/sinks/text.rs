//! A findings report as text for people: what `watchdog check` prints.
//!
//! A pure function of the report ([`render`]): the verdict on the first line
//! (`node-a: 2 problems (1 critical)` or `node-a: healthy`), then one short block per
//! finding: what (the kind in words and the subject), the evidence, the routes it names,
//! the next step (one line per kind, the gist of its runbook's *Fix*) and the runbook's URL.
//! Colour (ANSI) only when [`Style::colour`] says so; whoever prints decides (a terminal,
//! `NO_COLOR`). The pieces ([`verdict`], [`block`], [`paint`]) are public so other
//! commands print in the same style.

use std::fmt::Write as _;

use crate::{
    findings::{Finding, Kind, Report, RouteRef, Severity},
    sinks::runbook,
};

/// How to render.
#[derive(Clone, Debug)]
pub struct Style {
    /// ANSI colours and bold.
    pub colour: bool,
    /// Where the runbooks are, ending in `/` ([`crate::config::AlertsConfig::runbook_base`]).
    pub runbook_base: String,
}

/// A text attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    /// Bold.
    Bold,
    /// Bold red: critical.
    Critical,
    /// Bold yellow: warning.
    Warning,
    /// Bold green: healthy.
    Healthy,
    /// Dim: labels.
    Dim,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Paint::Bold => "1",
            Paint::Critical => "1;31",
            Paint::Warning => "1;33",
            Paint::Healthy => "1;32",
            Paint::Dim => "2",
        }
    }
}

/// `text` with `paint` when the style has colour, else `text` as is.
pub fn paint(style: &Style, paint: Paint, text: &str) -> String {
    if style.colour {
        format!("\x1b[{}m{text}\x1b[0m", paint.code())
    } else {
        text.to_owned()
    }
}

/// The whole report: the verdict, then a block per finding, separated by blank lines.
pub fn render(report: &Report, style: &Style) -> String {
    let mut text = verdict(report, style);
    text.push('\n');
    for finding in &report.findings {
        text.push('\n');
        text.push_str(&block(finding, style));
    }
    text
}

/// The first line: `node-a: healthy`, `node-a: 1 problem (1 critical)`,
/// `node-a: 2 problems (none critical)`.
pub fn verdict(report: &Report, style: &Style) -> String {
    let node = clean(&report.node);
    let total = report.findings.len();
    if total == 0 {
        return format!("{node}: {}", paint(style, Paint::Healthy, "healthy"));
    }
    let critical = report
        .findings
        .iter()
        .filter(|f| f.candidate.severity == Severity::Critical)
        .count();
    let problems = if total == 1 {
        "1 problem".to_owned()
    } else {
        format!("{total} problems")
    };
    let (critical, colour) = match critical {
        0 => ("none critical".to_owned(), Paint::Warning),
        n => (format!("{n} critical"), Paint::Critical),
    };
    format!(
        "{node}: {}",
        paint(style, colour, &format!("{problems} ({critical})"))
    )
}

/// Width of the labels in a block (`evidence`, `routes`, `next`, `runbook`).
const LABEL: usize = 9;

/// One finding:
///
/// ```text
/// critical  stale VXLAN FDB entry: fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.99
///   evidence  problem: 41 packets sent to VTEP 192.168.77.99 on eth0 in the last 1s, none back
///   routes    10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main
///   next      fix the remote Node's announced address …
///   runbook   https://…/docs/runbooks/stale_fdb.md
/// ```
pub fn block(finding: &Finding, style: &Style) -> String {
    let candidate = &finding.candidate;
    let severity = match candidate.severity {
        Severity::Critical => paint(style, Paint::Critical, "critical"),
        Severity::Warning => paint(style, Paint::Warning, "warning "),
    };
    let mut text = format!(
        "{severity}  {}: {}\n",
        paint(style, Paint::Bold, words(candidate.kind)),
        clean(&candidate.subject)
    );
    let evidence: Vec<String> = candidate
        .evidence
        .iter()
        .filter(|e| e.name != "route" || e.value == "none")
        .map(|e| format!("{}: {}", clean(&e.name), clean(&e.value)))
        .collect();
    section(&mut text, style, "evidence", &evidence);
    section(&mut text, style, "routes", &routes(finding));
    section(
        &mut text,
        style,
        "next",
        &[next_step(candidate.kind).to_owned()],
    );
    section(
        &mut text,
        style,
        "runbook",
        &[runbook::finding(&style.runbook_base, candidate.kind)],
    );
    text
}

/// `label` then the first line, the others under it; nothing when `lines` is empty.
fn section(text: &mut String, style: &Style, label: &str, lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        let padded = format!("{label:<LABEL$}");
        let _ = writeln!(text, "  {} {line}", paint(style, Paint::Dim, &padded));
    }
}

/// The routes a finding names: the detectors' `route` evidence (the kernel's own words,
/// `onlink` and all), then any [`RouteRef`] none of those describe.
fn routes(finding: &Finding) -> Vec<String> {
    let candidate = &finding.candidate;
    let described: Vec<String> = candidate
        .evidence
        .iter()
        .filter(|e| e.name == "route" && e.value != "none")
        .map(|e| clean(&e.value))
        .collect();
    let mut lines = described.clone();
    for route in &candidate.routes {
        let covered = described
            .iter()
            .any(|d| d.split_whitespace().next() == Some(route.prefix.as_str()));
        if !covered {
            lines.push(clean(&route_text(route)));
        }
    }
    lines
}

/// `10.244.3.0/24 via 10.244.3.0 dev flannel.1 table main`.
pub fn route_text(route: &RouteRef) -> String {
    let mut text = route.prefix.clone();
    if let Some(gateway) = &route.gateway {
        let _ = write!(text, " via {gateway}");
    }
    if let Some(dev) = &route.dev {
        let _ = write!(text, " dev {dev}");
    }
    let _ = write!(text, " table {}", route.table);
    text
}

/// Control characters (an escape sequence in an interface name or an annotation) shown
/// escaped, so what the kernel or the cluster hold can never drive the terminal.
fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The kind in words.
pub fn words(kind: Kind) -> &'static str {
    match kind {
        Kind::GhostGateway => "gateway that never answers",
        Kind::BlackholedDestination => "destination that never answers",
        Kind::StaleFdb => "stale VXLAN FDB entry",
        Kind::VtepCollapse => "VXLAN FDB collapsed",
        Kind::DeadLinkRoute => "route over a dead link",
        Kind::GatewayNotOnLink => "gateway not on the device's subnet",
        Kind::NoRouteDrops => "packets dropped for lack of a route",
        Kind::RejectRouteTraffic => "traffic into a reject route",
        Kind::FailingTcpDestination => "TCP connects failing",
        Kind::GhostEndpoint => "Service endpoint without a pod",
        Kind::OverlayDrift => "overlay differs from the Nodes",
        Kind::StaleAnnotation => "wrong Flannel annotation",
        Kind::MtuBlackHole => "path MTU black hole",
        Kind::RepairRefused => "repair plan refused by its guards",
        Kind::RepairConflict => "another writer undoes the repair",
    }
}

/// The next step for a kind, in one line: the gist of `docs/runbooks/<kind>.md`'s *Fix*
/// (a test checks that every command quoted here is in that section).
pub fn next_step(kind: Kind) -> &'static str {
    match kind {
        Kind::GhostGateway => {
            "remove or correct the route where it is configured (`ip route show <prefix>` \
             names its `proto`), then `ip route del <prefix> via <gateway> dev <dev>`"
        }
        Kind::BlackholedDestination => {
            "fix what its route leads to (an FDB entry, a gateway, the endpoint; another \
             finding often names it); for one-way traffic raise `detect.min_packets`"
        }
        Kind::StaleFdb => {
            "fix the remote Node's announced address (a stale `public-ip-overwrite`?) and \
             restart flannel there; to restore traffic at once: \
             `bridge fdb replace <MAC> dev <dev> dst <right address> self permanent`"
        }
        Kind::VtepCollapse => {
            "restart flannel on this node (K3s: `systemctl restart k3s-agent`, or `k3s` on \
             servers): it re-adds every node's FDB entry"
        }
        Kind::DeadLinkRoute => {
            "bring the device back (`ip link set dev <dev> up`, restart the tunnel), or \
             delete the route: `ip route del <route>`"
        }
        Kind::GatewayNotOnLink => {
            "restore the device's address, or \
             `ip route replace <prefix> via <gateway on the device's subnet> dev <dev>`"
        }
        Kind::NoRouteDrops => {
            "start the tunnel, then restart flannel (K3s: `systemctl restart k3s-agent`); \
             meanwhile `ip route add <subnet> via <subnet>.0 dev flannel.1 onlink`"
        }
        Kind::RejectRouteTraffic => {
            "stop the route's owner (`proto` in `ip route show`) from re-adding it, then \
             delete it: `ip route del blackhole <prefix>` or `ip rule del priority <n>`"
        }
        Kind::FailingTcpDestination => {
            "fix the Endpoints or Service that send clients here \
             (`kubectl edit endpoints …`), the workload, or the path another finding names"
        }
        Kind::GhostEndpoint => {
            "remove the address from the Service's endpoints: delete the stale object \
             (`kubectl -n <namespace> delete endpoints <service>` for hand-written ones), \
             or fix the selector or controller that keeps it"
        }
        Kind::OverlayDrift => {
            "fix the Node's annotations if they are wrong, then restart flanneld on this \
             node (K3s: `systemctl restart k3s-agent`)"
        }
        Kind::StaleAnnotation => {
            "`kubectl annotate node <node> flannel.alpha.coreos.com/public-ip-overwrite-` \
             (or set it right), then restart flanneld on that node"
        }
        Kind::MtuBlackHole => {
            "lower the overlay device's MTU to what the path carries (`ip link set dev \
             flannel.1 mtu <N>`; Flannel: the MTU in its config), or raise the path's MTU"
        }
        Kind::RepairRefused => {
            "read the plan (`watchdog repair plan`); if its targets are right, restart \
             flanneld on this node or apply it once with `watchdog repair apply --yes`"
        }
        Kind::RepairConflict => {
            "find the other writer (`ip -ts monitor`) and decide which one is right"
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::findings::Candidate;

    const BASE: &str = "https://github.com/CHANGE-ME/watchdog/blob/main/docs/runbooks/";

    fn style(colour: bool) -> Style {
        Style {
            colour,
            runbook_base: BASE.into(),
        }
    }

    fn report(findings: Vec<Finding>) -> Report {
        Report {
            schema: "watchdog.findings/v1",
            node: "node-a".into(),
            generated_at: SystemTime::UNIX_EPOCH,
            findings,
        }
    }

    fn finding(candidate: Candidate) -> Finding {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Finding {
            candidate,
            first_seen: at,
            last_seen: at,
        }
    }

    /// The lab's ghost VTEP with traffic running, as `watchdog check --window 3s` finds it
    /// in `tests/tests/suite/check.rs` (and the README shows it).
    fn faulty() -> Report {
        let route = RouteRef {
            prefix: "10.244.2.0/24".into(),
            gateway: Some("10.244.2.0".into()),
            dev: Some("flannel.1".into()),
            table: "main".into(),
        };
        let described = "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main";
        let mut silent = Candidate::new(
            Kind::BlackholedDestination,
            "destination 10.244.2.2 dev flannel.1",
            Severity::Critical,
        )
        .with("packets_sent_in_window", 60)
        .with("packets_back_in_window", 0)
        .with("last_reply", "never")
        .with("route", described)
        .with("rule", "priority 32766");
        silent.routes.push(route.clone());
        let mut stale = Candidate::new(
            Kind::StaleFdb,
            "fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.99",
            Severity::Critical,
        )
        .with(
            "problem",
            "60 packets sent to VTEP 192.168.77.99 on eth0 in the last 3s, none back",
        )
        .with("route", described);
        stale.routes.push(route);
        report(vec![finding(silent), finding(stale)])
    }

    /// What `watchdog check` prints for [`faulty`] (the README's example).
    const FAULTY: &str = "\
node-a: 2 problems (2 critical)

critical  destination that never answers: destination 10.244.2.2 dev flannel.1
  evidence  packets_sent_in_window: 60
            packets_back_in_window: 0
            last_reply: never
            rule: priority 32766
  routes    10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main
  next      fix what its route leads to (an FDB entry, a gateway, the endpoint; another finding often names it); for one-way traffic raise `detect.min_packets`
  runbook   https://github.com/CHANGE-ME/watchdog/blob/main/docs/runbooks/blackholed_destination.md

critical  stale VXLAN FDB entry: fdb 02:fa:00:00:00:02 dev flannel.1 dst 192.168.77.99
  evidence  problem: 60 packets sent to VTEP 192.168.77.99 on eth0 in the last 3s, none back
  routes    10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink table main
  next      fix the remote Node's announced address (a stale `public-ip-overwrite`?) and restart flannel there; to restore traffic at once: `bridge fdb replace <MAC> dev <dev> dst <right address> self permanent`
  runbook   https://github.com/CHANGE-ME/watchdog/blob/main/docs/runbooks/stale_fdb.md
";

    /// A warning, for the renderings of severity `warning`.
    fn off_link() -> Finding {
        let mut candidate = Candidate::new(
            Kind::GatewayNotOnLink,
            "route 10.60.0.0/24 via 10.9.9.1 dev eth0 table main",
            Severity::Warning,
        )
        .with("problem", "no address on eth0 covers gateway 10.9.9.1");
        candidate.routes.push(RouteRef {
            prefix: "10.60.0.0/24".into(),
            gateway: Some("10.9.9.1".into()),
            dev: Some("eth0".into()),
            table: "main".into(),
        });
        finding(candidate)
    }

    #[test]
    fn clean_report_snapshot() {
        assert_eq!(render(&report(vec![]), &style(false)), "node-a: healthy\n");
        assert_eq!(
            render(&report(vec![]), &style(true)),
            "node-a: \x1b[1;32mhealthy\x1b[0m\n"
        );
    }

    #[test]
    fn faulty_report_snapshot() {
        let text = render(&faulty(), &style(false));
        assert_eq!(text, FAULTY, "got:\n{text}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn colour_marks_the_verdict_severity_and_labels() {
        let text = render(&faulty(), &style(true));
        assert!(
            text.starts_with("node-a: \x1b[1;31m2 problems (2 critical)\x1b[0m\n"),
            "{text}"
        );
        assert!(
            text.contains("\n\x1b[1;31mcritical\x1b[0m  \x1b[1mstale VXLAN FDB entry\x1b[0m: "),
            "{text}"
        );
        assert!(
            text.contains("  \x1b[2mevidence \x1b[0m problem: "),
            "{text}"
        );
        // Without the escapes it is the plain text.
        let mut plain = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find('\x1b') {
            plain.push_str(&rest[..start]);
            rest = &rest[start..];
            rest = &rest[rest.find('m').unwrap() + 1..];
        }
        plain.push_str(rest);
        assert_eq!(plain, FAULTY);
    }

    #[test]
    fn a_warning_is_yellow_and_its_verdict_says_none_critical() {
        let only_warning = report(vec![off_link()]);
        let text = render(&only_warning, &style(false));
        assert_eq!(
            text,
            "node-a: 1 problem (none critical)\n\n\
             warning   gateway not on the device's subnet: route 10.60.0.0/24 via 10.9.9.1 dev eth0 table main\n\
             \x20 evidence  problem: no address on eth0 covers gateway 10.9.9.1\n\
             \x20 routes    10.60.0.0/24 via 10.9.9.1 dev eth0 table main\n\
             \x20 next      restore the device's address, or \
             `ip route replace <prefix> via <gateway on the device's subnet> dev <dev>`\n\
             \x20 runbook   https://github.com/CHANGE-ME/watchdog/blob/main/docs/runbooks/gateway_not_onlink.md\n"
        );
        let coloured = render(&only_warning, &style(true));
        assert!(
            coloured.starts_with("node-a: \x1b[1;33m1 problem (none critical)\x1b[0m\n"),
            "{coloured}"
        );
        assert!(
            coloured.contains("\n\x1b[1;33mwarning \x1b[0m  "),
            "{coloured}"
        );
    }

    #[test]
    fn several_evidence_and_uncovered_routes_line_up() {
        let mut ghost = Candidate::new(
            Kind::GhostGateway,
            "gateway 192.168.77.98 dev eth0",
            Severity::Critical,
        )
        .with("neighbour_state", "FAILED")
        .with("neigh_drops_in_window", 7)
        .with(
            "route",
            "10.55.0.0/24 via 192.168.77.98 dev eth0 onlink table main",
        );
        for (prefix, table) in [("10.55.0.0/24", "main"), ("10.56.0.0/24", "100")] {
            ghost.routes.push(RouteRef {
                prefix: prefix.into(),
                gateway: Some("192.168.77.98".into()),
                dev: Some("eth0".into()),
                table: table.into(),
            });
        }
        let text = block(&finding(ghost), &style(false));
        assert_eq!(
            text,
            "critical  gateway that never answers: gateway 192.168.77.98 dev eth0\n\
             \x20 evidence  neighbour_state: FAILED\n\
             \x20           neigh_drops_in_window: 7\n\
             \x20 routes    10.55.0.0/24 via 192.168.77.98 dev eth0 onlink table main\n\
             \x20           10.56.0.0/24 via 192.168.77.98 dev eth0 table 100\n\
             \x20 next      remove or correct the route where it is configured \
             (`ip route show <prefix>` names its `proto`), then \
             `ip route del <prefix> via <gateway> dev <dev>`\n\
             \x20 runbook   https://github.com/CHANGE-ME/watchdog/blob/main/docs/runbooks/ghost_gateway.md\n"
        );
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let evil = Candidate::new(
            Kind::DeadLinkRoute,
            "route 10.1.0.0/24 dev e\x1b[2Jvil table main",
            Severity::Warning,
        )
        .with("problem", "device e\x1b[2Jvil is down\nfake line");
        let text = render(&report(vec![finding(evil)]), &style(false));
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("dev e\\u{1b}[2Jvil table main"), "{text}");
        assert!(text.contains("is down\\nfake line"), "{text}");
    }

    #[test]
    fn the_readme_shows_the_faulty_snapshot() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let example = format!("```console\n$ sudo watchdog check --window 3s\n{FAULTY}```\n");
        assert!(
            readme.contains(&example),
            "README.md must show `watchdog check`'s output exactly as rendered:\n{example}"
        );
    }
}
