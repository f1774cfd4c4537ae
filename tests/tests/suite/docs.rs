//! The documentation stays true. Runbooks: every finding kind has one, with the same
//! sections; the index lists them; every link between them resolves; and every shipped
//! alert rule carries a `runbook_url` that resolves to an existing file and heading of this
//! repository. The README and the reference pages (docs/*.md): every configuration key of
//! `watchdog config default`, every metric the daemon registers (and every family of a real
//! scrape) and every finding kind is on its page, none that does not exist is named
//! anywhere, every relative link resolves, and the testing page lists every area.

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

// The reference pages (docs/*.md) and the README: every configuration key, metric and
// finding kind on its page and nowhere stale; every relative link resolving.

/// The README, ARCHITECTURE.md and every page under docs/ (runbooks included).
fn pages() -> Vec<std::path::PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    for dir in ["docs", "docs/runbooks"] {
        let mut found: Vec<_> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
            .collect();
        found.sort();
        pages.extend(found);
    }
    pages
}

fn page(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// A page's name relative to the repository, for messages.
fn shown(path: &std::path::Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every key of `watchdog config default` (`section.key`), with the keys it shows
/// commented out (`# tracefs_path = …`), and the alert sink keys its example names.
fn default_config_keys() -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let mut keys = std::collections::BTreeSet::new();
    let mut sink_keys = std::collections::BTreeSet::new();
    let mut section = String::new();
    let key_of = |line: &str| -> Option<String> {
        let (key, _) = line.split_once(" = ")?;
        (!key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .then(|| key.to_owned())
    };
    for line in watchdog::config::DEFAULT_CONFIG.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some(key) = key_of(line).or_else(|| key_of(line.strip_prefix("# ")?)) {
            keys.insert(if section.is_empty() {
                key
            } else {
                format!("{section}.{key}")
            });
        } else if section == "alerts"
            && let Some(example) = line.strip_prefix("#   ")
            && let Some(key) = key_of(example.strip_prefix("# ").unwrap_or(example))
        {
            sink_keys.insert(key);
        }
    }
    (keys, sink_keys)
}

#[test]
fn every_config_key_is_in_the_configuration_table_and_no_other() {
    let (keys, sink_keys) = default_config_keys();
    assert!(keys.len() >= 60, "{keys:?}");
    assert!(keys.contains("tracefs_path") && keys.contains("repair.protect.devices"));
    let text = page("docs/configuration.md");
    let table = text
        .split("| key | default | meaning |")
        .nth(1)
        .expect("docs/configuration.md has a `| key | default | meaning |` table");
    let documented: std::collections::BTreeSet<String> = table
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(code_spans)
        .collect();
    let missing: Vec<_> = keys.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&keys).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/configuration.md's table against `watchdog config default`: keys missing \
         {missing:?}, keys that do not exist {stale:?}"
    );
    let alerts = page("docs/alerts.md");
    for key in &sink_keys {
        assert!(
            alerts.contains(&format!("{key} = ")),
            "docs/alerts.md's sink example lacks `{key}`"
        );
    }
}

#[test]
fn config_keys_named_on_any_page_exist() {
    let (keys, _) = default_config_keys();
    let sections: std::collections::BTreeSet<&str> = keys
        .iter()
        .filter_map(|key| key.split_once('.'))
        .map(|(s, _)| s)
        .collect();
    let mut stale = Vec::new();
    for path in pages() {
        let text = std::fs::read_to_string(&path).unwrap();
        for span in code_spans(&text) {
            // `pods.source = "kubernetes"`, `alerts.sinks[1].url`, `mtu.interval / 6`
            let first = span.split([' ', '=']).next().unwrap_or_default();
            let mut name = String::new();
            let mut depth = 0;
            for c in first.chars() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    _ if depth == 0 => name.push(c),
                    _ => {}
                }
            }
            let Some((section, _)) = name.split_once('.') else {
                continue;
            };
            let plain = name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
            // `desired.rs`, `mirror.md`: files, not keys
            let file = [".rs", ".md", ".json", ".toml", ".yaml", ".yml"]
                .iter()
                .any(|ext| name.ends_with(ext));
            if !plain || file || !sections.contains(section) {
                continue;
            }
            // A key, or a section's prefix such as `repair.protect`.
            if !keys.contains(&name) && !keys.iter().any(|k| k.starts_with(&format!("{name}."))) {
                stale.push(format!("{}: `{span}`", shown(&path)));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "configuration keys that do not exist:\n{}",
        stale.join("\n")
    );
}

/// Every metric family the daemon registers: the `"watchdog_…"` names in its source
/// (registrations and collectors' descriptors; test assertions left out).
fn registered_metrics() -> std::collections::BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut std::collections::BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for line in text.lines().filter(|line| !line.contains("assert")) {
                    for quoted in line.split('"').skip(1).step_by(2) {
                        if quoted.starts_with("watchdog_")
                            && quoted[9..]
                                .chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                        {
                            out.insert(quoted.to_owned());
                        }
                    }
                }
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    walk(&root().join("watchdog/src/sinks"), &mut names);
    names
}

/// The family of a sample or family name as documented (`…_total` of a counter, `…_info`
/// of an info metric), if the daemon registers it.
fn family_of(name: &str, registered: &std::collections::BTreeSet<String>) -> Option<String> {
    std::iter::once(name)
        .chain(
            ["_total", "_info"]
                .iter()
                .filter_map(|s| name.strip_suffix(s)),
        )
        .find(|candidate| registered.contains(*candidate))
        .map(str::to_owned)
}

/// The metric names of docs/metrics.md's table (its first column).
fn metrics_table() -> Vec<String> {
    let text = page("docs/metrics.md");
    let table = text
        .split("| metric | labels | meaning |")
        .nth(1)
        .expect("docs/metrics.md has a `| metric | labels | meaning |` table");
    table
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(code_spans)
        .collect()
}

#[test]
fn every_registered_metric_is_in_the_metrics_table_and_no_other() {
    let registered = registered_metrics();
    assert!(registered.len() >= 40, "{registered:?}");
    assert!(registered.contains("watchdog_findings"));
    let documented = metrics_table();
    let stale: Vec<&String> = documented
        .iter()
        .filter(|name| family_of(name, &registered).is_none())
        .collect();
    let covered: std::collections::BTreeSet<String> = documented
        .iter()
        .filter_map(|name| family_of(name, &registered))
        .collect();
    let missing: Vec<&String> = registered.difference(&covered).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/metrics.md's table against the metrics the daemon registers: missing \
         {missing:?}, not registered {stale:?}"
    );
}

#[test]
fn metric_names_on_any_page_are_registered() {
    let registered = registered_metrics();
    let mut stale = Vec::new();
    for path in pages() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("watchdog_") {
            if i > 0 && text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let rest = &text[i + name.len()..];
            // `watchdog_tcp_*` (a prefix), `watchdog_tests::…` (the lab crate)
            if name.ends_with('_') || rest.starts_with("::") {
                continue;
            }
            if family_of(&name, &registered).is_none() {
                stale.push(format!("{}: {name}", shown(&path)));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "metrics the daemon does not register:\n{}",
        stale.join("\n")
    );
}

/// A real daemon's scrape: every metric family it declares is in docs/metrics.md.
#[test]
fn every_family_of_a_real_scrape_is_documented() {
    use watchdog_tests::{Daemon, NetNs, require_root};
    if !require_root("every_family_of_a_real_scrape_is_documented") {
        return;
    }
    let registered = registered_metrics();
    let documented: std::collections::BTreeSet<String> = metrics_table()
        .iter()
        .filter_map(|name| family_of(name, &registered))
        .collect();
    let ns = NetNs::new("wd-docs");
    let mut daemon = Daemon::start(&ns, "");
    daemon.wait_ready();
    let scrape = daemon.metrics().0;
    let declared: Vec<&str> = scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(declared.len() >= 20, "{scrape}");
    // OpenMetrics names a counter's family `…_total` and an info's `…_info`.
    let undocumented: Vec<&&str> = declared
        .iter()
        .filter(|family| {
            family_of(family, &registered).is_none_or(|family| !documented.contains(&family))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "families on /metrics that docs/metrics.md does not list: {undocumented:?}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn every_finding_kind_has_its_section_and_readme_row_and_no_other() {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|kind| kind.as_str()).collect();
    let findings = page("docs/findings.md");
    let sections: Vec<&str> = findings
        .lines()
        .filter_map(|line| line.strip_prefix("### `")?.strip_suffix('`'))
        .collect();
    let readme = page("README.md");
    let rows: Vec<&str> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| [`")?.split('`').next())
        .collect();
    let mut problems = Vec::new();
    for kind in &kinds {
        let section = findings
            .split(&format!("### `{kind}`\n"))
            .nth(1)
            .map(|rest| rest.split("\n#").next().unwrap_or_default());
        match section {
            None => problems.push(format!("docs/findings.md: no section ### `{kind}`")),
            Some(text) => {
                for part in [
                    "**Names**",
                    "**Evidence**",
                    &format!("(runbooks/{kind}.md)"),
                ] {
                    if !text.contains(part) {
                        problems.push(format!("docs/findings.md `{kind}`: lacks {part}"));
                    }
                }
            }
        }
        if !readme.contains(&format!("| [`{kind}`](docs/runbooks/{kind}.md) |")) {
            problems.push(format!(
                "README.md: no row for `{kind}` linking its runbook"
            ));
        }
    }
    for stale in sections
        .iter()
        .chain(&rows)
        .filter(|name| !kinds.contains(name))
    {
        problems.push(format!("`{stale}` is not a finding kind"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Resolves `link`, a relative link of the page `page`: a file or folder of this
/// repository and, with `#anchor`, a heading of that file (GitHub's anchors).
fn resolve_relative_link(page: &std::path::Path, link: &str) -> Result<(), String> {
    let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
    let mut target = if file.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().unwrap().to_path_buf()
    };
    for part in std::path::Path::new(file).components() {
        match part {
            std::path::Component::ParentDir => {
                target.pop();
            }
            std::path::Component::Normal(name) => target.push(name),
            _ => return Err(format!("({link}): not a relative path")),
        }
    }
    if !target.starts_with(root()) || !target.exists() {
        return Err(format!("({link}): no such file"));
    }
    if !anchor.is_empty() {
        let anchors = if target.is_file() {
            markdown_anchors(&std::fs::read_to_string(&target).unwrap())
        } else {
            Vec::new()
        };
        if !anchors.iter().any(|a| a == anchor) {
            return Err(format!("({link}): no heading #{anchor}"));
        }
    }
    Ok(())
}

/// Every relative link `[text](target)` of the README, ARCHITECTURE.md and the pages under
/// docs/ names a file or folder of this repository and, with `#anchor`, a heading of it.
#[test]
fn every_relative_link_of_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for path in pages() {
        let text = std::fs::read_to_string(&path).unwrap();
        for link in relative_links(&text) {
            checked += 1;
            if let Err(why) = resolve_relative_link(&path, &link) {
                broken.push(format!("{}: {why}", shown(&path)));
            }
        }
    }
    assert!(checked >= 100, "only {checked} links found");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn a_broken_relative_link_is_caught() {
    assert_eq!(
        relative_links("see [x](docs/a.md#b) and [y](https://e.org) ```\n```sh\n[z](c.md)\n```\n"),
        ["docs/a.md#b"]
    );
    let readme = root().join("README.md");
    let findings = root().join("docs/findings.md");
    for good in [
        "docs/findings.md#watchdog-check",
        "docs/runbooks/",
        "#the-commands",
    ] {
        assert_eq!(resolve_relative_link(&readme, good), Ok(()), "{good}");
    }
    assert_eq!(
        resolve_relative_link(&findings, "../README.md#repair"),
        Ok(())
    );
    for wrong in [
        "docs/finding.md",
        "docs/findings.md#watchdog-checks",
        "findings.md",
        "../../etc/passwd",
        "/etc/passwd",
    ] {
        assert!(
            resolve_relative_link(&readme, wrong).is_err(),
            "{wrong} resolved"
        );
    }
}

#[test]
fn every_area_of_the_suite_is_in_the_testing_page() {
    let main = page("tests/tests/suite/main.rs");
    let testing = page("docs/testing.md");
    let areas: Vec<&str> = main
        .lines()
        .filter_map(|line| line.strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    assert!(areas.len() >= 20, "{areas:?}");
    let listed: Vec<&str> = testing
        .lines()
        .filter_map(|line| Some(line.strip_prefix("| `")?.split_once("::` |")?.0))
        .collect();
    let missing: Vec<_> = areas.iter().filter(|a| !listed.contains(a)).collect();
    let stale: Vec<_> = listed.iter().filter(|a| !areas.contains(a)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/testing.md's areas against tests/tests/suite/main.rs: missing {missing:?}, \
         no such area {stale:?}"
    );
}

/// The README's two commands for a fresh machine come first, and CI runs its test command
/// as written (`.ci/run`).
#[test]
fn the_readmes_fresh_machine_commands_are_what_ci_runs() {
    let readme = page("README.md");
    let block = readme
        .split("## On a fresh machine")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README: a ```sh block under `## On a fresh machine`");
    let commands: Vec<&str> = block
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .collect();
    assert_eq!(commands, ["cargo xtask run", "cargo xtask test"], "{block}");
    let first_section = readme.split("\n## ").nth(1).unwrap_or_default();
    assert!(
        first_section.starts_with("On a fresh machine"),
        "the fresh-machine commands are the README's first section"
    );
    let ci = page(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == commands[1]),
        ".ci/run does not run the README's test command `{}`",
        commands[1]
    );
}
