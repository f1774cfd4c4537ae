//! Runbooks: every finding kind has one, with the same sections; the index lists them; every
//! link between them resolves; and every shipped alert rule carries a `runbook_url` that
//! resolves to an existing file and heading of this repository.

use serde_json::Value;
use watchdog::findings::Kind;
use watchdog_tests::repo::{BLOB_BASE, markdown_anchors, resolve_repository_url, root, runbook};

/// The sections every runbook has, in this order.
const SECTIONS: [&str; 5] = [
    "What it means",
    "Confirm by hand",
    "Likely causes",
    "Fix",
    "When it resolves",
];

#[test]
fn every_finding_kind_has_a_runbook_with_the_usual_sections() {
    let mut problems = Vec::new();
    for kind in Kind::ALL {
        let kind = kind.as_str();
        let path = runbook(kind);
        let Ok(text) = std::fs::read_to_string(&path) else {
            problems.push(format!("{kind}: no {}", path.display()));
            continue;
        };
        if text.lines().next() != Some(&format!("# {kind}")) {
            problems.push(format!("{kind}: the first line is not `# {kind}`"));
        }
        let headings: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("## "))
            .collect();
        if headings != SECTIONS {
            problems.push(format!(
                "{kind}: sections {headings:?}, expected {SECTIONS:?}"
            ));
        }
        if !text.contains("```sh") {
            problems.push(format!("{kind}: no commands to confirm it by hand"));
        }
    }
    assert!(
        problems.is_empty(),
        "runbooks missing or incomplete (docs/runbooks/README.md says what each needs):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_runbook_index_lists_every_kind_and_every_page() {
    let dir = root().join("docs/runbooks");
    let index = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for kind in Kind::ALL {
        let link = format!("[`{0}`]({0}.md)", kind.as_str());
        assert!(index.contains(&link), "the index lacks {link}");
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "README.md" {
            assert!(
                index.contains(&format!("]({name}")),
                "the index does not link {name}"
            );
        }
    }
}

/// Relative links `[text](target)` in a Markdown text (outside code blocks).
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        for (i, _) in line.match_indices("](") {
            let rest = &line[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if !target.contains("://") {
                links.push(target.to_owned());
            }
        }
    }
    links
}

#[test]
fn links_between_runbooks_resolve() {
    let dir = root().join("docs/runbooks");
    let mut broken = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for link in relative_links(&text) {
            checked += 1;
            let url = format!("{BLOB_BASE}docs/runbooks/{link}");
            let url = if link.starts_with('#') {
                format!(
                    "{BLOB_BASE}docs/runbooks/{}{link}",
                    path.file_name().unwrap().to_str().unwrap()
                )
            } else {
                url
            };
            if let Err(why) = resolve_repository_url(&url) {
                broken.push(format!("{}: {why}", path.display()));
            }
        }
    }
    assert!(checked >= 20, "only {checked} links found");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn anchors_follow_githubs_rule() {
    let anchors = markdown_anchors(
        "# Alerts on the watchdog\n```sh\n# not a heading\n```\n## WatchdogProbeDown\n\
         ## What it means\n## What it means\n## `stale_fdb`: a ghost (VTEP)\n",
    );
    assert_eq!(
        anchors,
        [
            "alerts-on-the-watchdog",
            "watchdogprobedown",
            "what-it-means",
            "what-it-means-1",
            "stale_fdb-a-ghost-vtep"
        ]
    );
}

fn documents(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

/// Every rule of the shipped rule groups: (alert, runbook_url, expr).
fn rules(groups: &Value) -> Vec<(String, Option<String>, String)> {
    groups
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").iter())
        // Recording rules alert nobody.
        .filter(|rule| rule.get("record").is_none())
        .map(|rule| {
            (
                rule["alert"].as_str().expect("alert").to_owned(),
                rule["annotations"]["runbook_url"]
                    .as_str()
                    .map(str::to_owned),
                rule["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_alert_rule_links_a_runbook_that_exists() {
    let rules_file = documents(&root().join("deploy/prometheus/rules.yml"));
    let prometheus_rule = documents(&root().join("deploy/kustomize/base/prometheusrule.yaml"));
    let shipped = [
        (
            "deploy/prometheus/rules.yml",
            rules(&rules_file[0]["groups"]),
        ),
        (
            "deploy/kustomize/base/prometheusrule.yaml",
            rules(&prometheus_rule[0]["spec"]["groups"]),
        ),
    ];
    let mut broken = Vec::new();
    for (file, rules) in &shipped {
        assert!(rules.len() >= 7, "{file}: {rules:?}");
        for (alert, url, expr) in rules {
            let Some(url) = url else {
                broken.push(format!("{file}: {alert} has no runbook_url"));
                continue;
            };
            // A per-kind rule's URL names the kind label: it must resolve for every kind,
            // and the expression must keep `kind` in its result.
            let urls: Vec<String> = if url.contains("{{ $labels.kind }}") {
                if !expr.contains("by (node, kind") {
                    broken.push(format!(
                        "{file}: {alert} templates the kind but its expr drops the label"
                    ));
                }
                Kind::ALL
                    .iter()
                    .map(|kind| url.replace("{{ $labels.kind }}", kind.as_str()))
                    .collect()
            } else {
                vec![url.clone()]
            };
            for url in urls {
                if url.contains("{{") {
                    broken.push(format!("{file}: {alert}: unexpanded template in {url}"));
                } else if let Err(why) = resolve_repository_url(&url) {
                    broken.push(format!("{file}: {alert}: {why}"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn a_wrong_runbook_url_is_caught() {
    assert!(resolve_repository_url(&format!("{BLOB_BASE}docs/runbooks/stale_fdb.md")).is_ok());
    for wrong in [
        format!("{BLOB_BASE}docs/runbooks/stale_fbd.md"),
        format!("{BLOB_BASE}docs/runbooks/watchdog.md#watchdogprobe-down"),
        format!("{BLOB_BASE}../Cargo.toml"),
        "https://example.com/docs/runbooks/stale_fdb.md".to_owned(),
    ] {
        assert!(resolve_repository_url(&wrong).is_err(), "{wrong} resolved");
    }
}

/// One alert of every kind in every state the sinks send (firing, resolved, repair,
/// rollback) and the test alert.
fn every_alert() -> Vec<watchdog::sinks::alerts::Alert> {
    use std::time::{Duration, SystemTime};
    use watchdog::{
        findings::{Candidate, Finding, Severity},
        repair::event::{RepairEvent, RepairOutcome, RepairReport},
        sinks::alerts::Alert,
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut alerts = vec![Alert::test("node-a", at)];
    for kind in Kind::ALL {
        let finding = Finding {
            candidate: Candidate::new(kind, "subject", Severity::Critical).with("e", 1),
            first_seen: at,
            last_seen: at,
        };
        let report = RepairReport {
            kind,
            subject: "subject".into(),
            action: "ip route del 10.0.0.0/24".into(),
            outcome: RepairOutcome::Applied,
            evidence: vec![],
            at,
        };
        alerts.push(Alert::firing(&finding, false));
        alerts.push(Alert::resolved(&finding, at));
        alerts.push(Alert::from_event(&RepairEvent::Repair(report.clone())));
        alerts.push(Alert::from_event(&RepairEvent::Rollback(report)));
    }
    alerts
}

#[test]
fn every_sink_payload_links_a_runbook_that_exists() {
    use watchdog::{
        config::AlertsConfig,
        sinks::alerts::{Context, alertmanager, slack, webhook},
    };
    let base = AlertsConfig::default().runbook_base();
    let ctx = Context {
        node: "node-a",
        generator_url: "http://127.0.0.1:9477/api/v1/findings",
        runbook_base: &base,
        repeat_interval: std::time::Duration::from_secs(3600),
        now: std::time::SystemTime::now(),
    };
    let alerts = every_alert();
    let mut urls: Vec<(&str, String)> = Vec::new();
    let hook: serde_json::Value = serde_json::from_slice(&webhook::body(&ctx, &alerts)).unwrap();
    for alert in hook["alerts"].as_array().unwrap() {
        let url = alert["runbook_url"].as_str().expect("webhook runbook_url");
        urls.push(("webhook", url.to_owned()));
    }
    let am: serde_json::Value = serde_json::from_slice(&alertmanager::body(&ctx, &alerts)).unwrap();
    for alert in am.as_array().unwrap() {
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .expect("alertmanager annotations.runbook_url");
        urls.push(("alertmanager", url.to_owned()));
    }
    let chat: serde_json::Value = serde_json::from_slice(&slack::body(&ctx, &alerts)).unwrap();
    for line in chat["text"].as_str().unwrap().lines() {
        if let Some(url) = line.trim().strip_prefix("runbook: ") {
            urls.push(("slack", url.to_owned()));
        }
    }
    for sink in ["webhook", "alertmanager", "slack"] {
        assert_eq!(
            urls.iter().filter(|(s, _)| *s == sink).count(),
            alerts.len(),
            "{sink}: one runbook_url per alert"
        );
    }
    let broken: Vec<String> = urls
        .iter()
        .filter_map(|(sink, url)| {
            resolve_repository_url(url)
                .err()
                .map(|e| format!("{sink}: {e}"))
        })
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    // A repair points at the kind's fix, a test alert at its own section.
    assert!(urls.iter().any(|(_, u)| u.ends_with("/stale_fdb.md#fix")));
    assert!(
        urls.iter()
            .any(|(_, u)| u.ends_with("/watchdog.md#watchdogtest"))
    );
}

/// The `…` spans of a Markdown text, whitespace collapsed.
fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// True when `pattern` occurs in `text`, each `<placeholder>` of the pattern standing for
/// 1 to 60 characters without a backtick.
fn matches_with_placeholders(text: &str, pattern: &str) -> bool {
    let mut pieces: Vec<&str> = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        pieces.push(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    pieces.push(rest);
    fn from(text: &str, pieces: &[&str], first: bool) -> bool {
        let Some((piece, more)) = pieces.split_first() else {
            return true;
        };
        if first {
            return text
                .match_indices(piece)
                .any(|(i, _)| from(&text[i + piece.len()..], more, false));
        }
        // After a placeholder: 1..=60 characters, then the piece.
        let limit: usize = text.chars().take(61).map(char::len_utf8).sum();
        (1..=limit).filter(|i| text.is_char_boundary(*i)).any(|i| {
            !text[..i].contains('`')
                && text[i..].starts_with(piece)
                && (piece.is_empty() || from(&text[i + piece.len()..], more, false))
        })
    }
    from(text, &pieces, true)
}

#[test]
fn every_next_step_quotes_its_runbooks_fix() {
    use watchdog::sinks::text::next_step;
    let mut problems = Vec::new();
    for kind in Kind::ALL {
        let page = std::fs::read_to_string(runbook(kind.as_str())).unwrap();
        let fix = page
            .split("\n## Fix\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("a Fix section");
        let fix = fix.split_whitespace().collect::<Vec<_>>().join(" ");
        let step = next_step(kind);
        let spans = code_spans(step);
        if spans.is_empty() {
            problems.push(format!("{kind:?}: the next step quotes no command"));
        }
        for span in spans {
            if !matches_with_placeholders(&fix, &span) {
                problems.push(format!(
                    "{}: `{span}` is not in the runbook's Fix section",
                    kind.as_str()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn placeholders_match_only_what_they_stand_for() {
    let fix = "run `bridge fdb replace 02:fa:00:00:00:02 dev flannel.1 dst <right address> self permanent`";
    assert!(matches_with_placeholders(
        fix,
        "bridge fdb replace <MAC> dev <dev> dst <right address> self permanent"
    ));
    assert!(matches_with_placeholders(fix, "bridge fdb replace <MAC>"));
    assert!(!matches_with_placeholders(
        fix,
        "bridge fdb append <MAC> dev <dev>"
    ));
    assert!(!matches_with_placeholders(
        fix,
        "bridge fdb replace <MAC> dev <dev> dst <x> self temp"
    ));
    assert!(!matches_with_placeholders(
        "`ip route del`",
        "ip route del <route>"
    ));
}

#[test]
fn check_blocks_link_runbooks_that_exist() {
    use watchdog::{
        config::AlertsConfig,
        findings::{Candidate, Finding, Report, Severity},
        sinks::text::{Style, render},
    };
    let findings = Kind::ALL
        .iter()
        .map(|kind| Finding {
            candidate: Candidate::new(*kind, "subject", Severity::Warning),
            first_seen: std::time::SystemTime::now(),
            last_seen: std::time::SystemTime::now(),
        })
        .collect();
    let style = Style {
        colour: false,
        runbook_base: AlertsConfig::default().runbook_base(),
    };
    let text = render(&Report::new("node-a", findings), &style);
    let urls: Vec<&str> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("runbook"))
        .map(str::trim)
        .collect();
    assert_eq!(urls.len(), Kind::ALL.len(), "{text}");
    for url in urls {
        resolve_repository_url(url).unwrap();
    }
}
