//! The Grafana dashboard (`deploy/grafana/watchdog.json`): its structure checked offline,
//! its ConfigMap kept identical, its links resolved, and every panel's query run against a
//! real Prometheus that scraped the daemon on the lab through a fault and a heal.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use serde_json::Value;
use watchdog::findings::Kind;
use watchdog_tests::{
    Daemon, NetNs, TempDir,
    lab::{
        Lab, MISSING_GATEWAY, RETIRED_VTEP, TCP_PORT, VXLAN_DEV, nodes::write_node_list, pod_ip,
        underlay_ip, vtep_mac,
    },
    poll_until,
    prometheus::Prometheus,
    repo::{
        dashboard_configmap, dashboard_json, render_dashboard_configmap, resolve_repository_url,
        root,
    },
    require_root,
};

/// Grafana's own variables the queries may use.
const BUILTINS: &[&str] = &["__rate_interval"];
/// The value the test gives `$__rate_interval` (Prometheus scrapes every second; Grafana
/// uses at least four scrape intervals).
const RATE_INTERVAL: &str = "4s";

fn dashboard() -> Value {
    let text = std::fs::read_to_string(dashboard_json()).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", dashboard_json().display()))
}

/// Every panel, rows and the panels inside collapsed rows included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// One query of one panel.
#[derive(Debug)]
struct Query {
    panel: String,
    id: u64,
    ref_id: String,
    expr: String,
}

impl Query {
    fn name(&self) -> String {
        format!(
            "panel {:?} (id {}) target {}",
            self.panel, self.id, self.ref_id
        )
    }

    /// The expression as Grafana sends it with `node` = `node`.
    fn substituted(&self, node: &str) -> String {
        self.expr
            .replace("$__rate_interval", RATE_INTERVAL)
            .replace("${node}", node)
            .replace("$node", node)
    }
}

fn queries(dashboard: &Value) -> Vec<Query> {
    all_panels(dashboard)
        .into_iter()
        .filter(|panel| panel["type"] != "row")
        .flat_map(|panel| {
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |target| Query {
                    panel: panel["title"].as_str().unwrap_or_default().to_owned(),
                    id: panel["id"].as_u64().unwrap_or_default(),
                    ref_id: target["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                })
        })
        .collect()
}

fn variables(dashboard: &Value) -> BTreeMap<String, &Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name").to_owned(), v))
        .collect()
}

/// `$name` and `${name}` references in a text.
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || (braced && *c == '.'))
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// `(metric, label matchers)` for each selector of a `watchdog_*` metric or `up`.
fn selectors(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            if name.starts_with("watchdog_") || name == "up" {
                let matchers = if bytes.get(i) == Some(&b'{') {
                    let end = expr[i..].find('}').map_or(expr.len(), |e| i + e);
                    expr[i + 1..end].to_owned()
                } else {
                    String::new()
                };
                out.push((name.to_owned(), matchers));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Metric names docs/metrics.md documents (its table and text).
fn documented_metrics() -> BTreeSet<String> {
    let page = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    page.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| {
            let name: String = code
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            name.starts_with("watchdog_").then_some(name)
        })
        .collect()
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard = dashboard();
    let mut problems: Vec<String> = Vec::new();
    for key in [
        "uid",
        "title",
        "schemaVersion",
        "time",
        "templating",
        "panels",
    ] {
        if dashboard[key].is_null() {
            problems.push(format!("no `{key}`"));
        }
    }
    if !dashboard["id"].is_null() {
        problems.push("a fixed `id` (provisioned dashboards must not carry one)".into());
    }
    // Variables: a Prometheus data source and a node selector fed by a metric every
    // watchdog exports, with the label the ServiceMonitor and the rules use.
    let variables = variables(&dashboard);
    let datasource = variables
        .get("datasource")
        .expect("a `datasource` variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let node = variables.get("node").expect("a `node` variable");
    assert_eq!(node["type"], "query");
    assert_eq!(node["datasource"]["uid"], "${datasource}");
    assert_eq!(
        node["query"]["query"],
        "label_values(watchdog_build_info, node)"
    );
    assert_eq!(node["definition"], node["query"]["query"]);
    assert_eq!(node["multi"], true);
    assert_eq!(node["includeAll"], true);
    assert_eq!(node["allValue"], ".*", "`All` must be a regex for node=~");

    let documented = documented_metrics();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for panel in all_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let name = format!("panel {title:?}");
        match panel["id"].as_u64() {
            Some(id) if ids.insert(id) => {}
            Some(id) => problems.push(format!("{name}: id {id} used twice")),
            None => problems.push(format!("{name}: no numeric id")),
        }
        if title.is_empty() {
            problems.push(format!("panel id {}: no title", panel["id"]));
        }
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap_or(0));
        if w == 0 || h == 0 || x + w > 24 {
            problems.push(format!("{name}: gridPos {grid} outside the 24-column grid"));
        }
        for (other, [ox, oy, ow, oh]) in &boxes {
            if x < ox + ow && ox < &(x + w) && y < oy + oh && oy < &(y + h) {
                problems.push(format!("{name} overlaps {other}"));
            }
        }
        boxes.push((name.clone(), [x, y, w, h]));
        if panel["type"] == "row" {
            continue;
        }
        if panel["description"].as_str().unwrap_or_default().is_empty() {
            problems.push(format!("{name}: no description"));
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("{name}: datasource is not ${{datasource}}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{name}: no targets"));
        }
        let mut refs = BTreeSet::new();
        for target in &targets {
            let ref_id = target["refId"].as_str().unwrap_or_default();
            if ref_id.is_empty() || !refs.insert(ref_id.to_owned()) {
                problems.push(format!("{name}: refId {ref_id:?} missing or repeated"));
            }
            if target["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "{name} {ref_id}: datasource is not ${{datasource}}"
                ));
            }
            let expr = target["expr"].as_str().unwrap_or_default();
            if expr.is_empty() {
                problems.push(format!("{name} {ref_id}: no expr"));
            }
            for variable in references(expr) {
                if !variables.contains_key(&variable) && !BUILTINS.contains(&variable.as_str()) {
                    problems.push(format!("{name} {ref_id}: unknown variable ${variable}"));
                }
            }
            let found = selectors(expr);
            if found.is_empty() {
                problems.push(format!("{name} {ref_id}: reads no watchdog metric"));
            }
            for (metric, matchers) in found {
                if !matchers.contains("node=~\"$node\"") {
                    problems.push(format!(
                        "{name} {ref_id}: {metric} is not filtered by node=~\"$node\""
                    ));
                }
                if metric != "up" && !documented.contains(&metric) {
                    problems.push(format!(
                        "{name} {ref_id}: {metric} is not a metric docs/metrics.md documents"
                    ));
                }
            }
        }
        // Overrides by query must name one of the panel's queries.
        for override_ in panel["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if override_["matcher"]["id"] == "byFrameRefID" {
                let ref_id = override_["matcher"]["options"].as_str().unwrap_or_default();
                if !refs.contains(ref_id) {
                    problems.push(format!("{name}: override for unknown query {ref_id}"));
                }
            }
        }
    }
    // What the dashboard is for: each of these is read by some panel.
    let exprs: Vec<String> = queries(&dashboard).into_iter().map(|q| q.expr).collect();
    for needed in [
        "watchdog_findings",
        "watchdog_ghost_route_info",
        "watchdog_peer_node_reachable",
        "watchdog_peer_packets_total{node=~\"$node\", direction=\"tx\"}",
        "watchdog_peer_packets_total{node=~\"$node\", direction=\"rx\"}",
        "watchdog_kernel_drops_total",
        "watchdog_kernel_drop_destinations_total",
        "watchdog_tcp_connects_total",
        "watchdog_tcp_syn_retransmits_total",
        "watchdog_probe_up",
        "watchdog_kernel_drops_skipped_total",
        "watchdog_peer_map_events_total",
        "watchdog_map_read_errors_total",
        "watchdog_mirror_resyncs_total",
        "watchdog_alerts_sent_total",
        "watchdog_alerts_failed_total",
        "watchdog_alerts_dropped_total",
        "watchdog_process_cpu_seconds_total",
        "watchdog_process_resident_memory_bytes",
    ] {
        if !exprs.iter().any(|e| e.contains(needed)) {
            problems.push(format!("no panel reads {needed}"));
        }
    }
    // Silent peers are highlighted: a query of peers sent to and not answering, drawn red.
    let silent = all_panels(&dashboard).into_iter().any(|panel| {
        panel["targets"].as_array().into_iter().flatten().any(|t| {
            let expr = t["expr"].as_str().unwrap_or_default();
            let highlighted = panel["fieldConfig"]["overrides"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| {
                    o["matcher"]["options"] == t["refId"]
                        && o["properties"].to_string().contains("\"red\"")
                });
            expr.contains("direction=\"tx\"") && expr.contains("unless") && highlighted
        })
    });
    if !silent {
        problems.push("no panel highlights silent peers in red".into());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses each query (as a recording rule) exactly as Prometheus would.
    let dashboard = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries(&dashboard).iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&query.substituted("node-0")).unwrap()
        ));
    }
    let dir = TempDir::new("watchdog-dashboard");
    let path = dir.path().join("queries.yml");
    std::fs::write(&path, &rules).unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool (cargo xtask setup installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}\n{rules}");
    // promtool really rejects a broken query.
    std::fs::write(
        &path,
        "groups:\n  - name: d\n    rules:\n      - record: x\n        expr: sum by (node (up)\n",
    )
    .unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn the_dashboard_configmap_is_generated_from_the_json() {
    let json = std::fs::read_to_string(dashboard_json()).unwrap();
    let configmap = std::fs::read_to_string(dashboard_configmap()).unwrap();
    assert!(
        configmap == render_dashboard_configmap(&json),
        "{} is not the ConfigMap of {}: run `cargo xtask dashboard`",
        dashboard_configmap().display(),
        dashboard_json().display()
    );
    // Read back as Kubernetes will: the label Grafana's sidecar selects, the JSON intact.
    let doc = serde_saphyr::from_str::<serde_json::Value>(&configmap).unwrap();
    assert_eq!(doc["kind"], "ConfigMap");
    assert_eq!(doc["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(doc["data"]["watchdog.json"].as_str(), Some(json.as_str()));
    let kustomization =
        std::fs::read_to_string(root().join("deploy/kustomize/base/kustomization.yaml")).unwrap();
    assert!(
        kustomization.contains("  - grafana-dashboard.yaml\n"),
        "{kustomization}"
    );
}

#[test]
fn the_dashboard_links_resolve_to_runbooks() {
    let dashboard = dashboard();
    let mut urls: Vec<String> = dashboard["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["url"].as_str().map(str::to_owned))
        .collect();
    // Data links anywhere in a panel's field config.
    fn collect(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let (Some(Value::String(url)), Some(_)) = (map.get("url"), map.get("title")) {
                    out.push(url.clone());
                }
                map.values().for_each(|v| collect(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    for panel in all_panels(&dashboard) {
        collect(&panel["fieldConfig"], &mut urls);
    }
    assert!(urls.len() >= 3, "{urls:?}");
    let mut broken = Vec::new();
    for url in urls {
        let kind_templates = ["${__value.text}", "${__field.labels.kind}"];
        let expanded: Vec<String> = if kind_templates.iter().any(|t| url.contains(t)) {
            Kind::ALL
                .iter()
                .map(|kind| {
                    kind_templates
                        .iter()
                        .fold(url.clone(), |u, t| u.replace(t, kind.as_str()))
                })
                .collect()
        } else {
            vec![url]
        };
        for url in expanded {
            if let Err(why) = resolve_repository_url(&url) {
                broken.push(why);
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// An HTTP receiver for the webhook sink, answering 200 to everything; counts requests.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(ns: &NetNs) -> Self {
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (requests, stop) = (requests.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if answer(stream).is_some() {
                                requests.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
        });
        Self {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads one request (headers, then Content-Length bytes) and answers 200.
fn answer(mut stream: TcpStream) -> Option<()> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                break;
            }
        }
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A thread repeating `f` in a namespace until dropped.
struct Repeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Repeat {
    fn start(ns: &NetNs, f: impl Fn() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let path = ns.path();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                watchdog_tests::run_in(&path, move || {
                    while !stop.load(Ordering::Relaxed) {
                        f();
                    }
                })
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Repeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The series of a result: `(labels, values)`.
fn series(result: &[Value]) -> Vec<(BTreeMap<String, String>, Vec<f64>)> {
    result
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let values = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&s["value"]).filter(|v| !v.is_null()))
                .filter_map(|point| point[1].as_str()?.parse().ok())
                .collect();
            (labels, values)
        })
        .collect()
}

#[test]
fn every_panel_query_returns_series_through_a_fault_and_a_heal() {
    if !require_root("every_panel_query_returns_series_through_a_fault_and_a_heal") {
        return;
    }
    let dashboard = dashboard();
    let queries = queries(&dashboard);
    let lab = Lab::new(3);
    let node = lab.node(0).ns();
    let receiver = Receiver::start(node);
    // The lab's Nodes as desired state: the daemon probes node 1 and node 2 through the
    // overlay (the cluster panels).
    let dir = TempDir::new("watchdog-dashboard");
    let nodes_file = dir.path().join("nodes.json");
    write_node_list(&nodes_file, &lab.node_list());
    let mut daemon = Daemon::start(
        node,
        &format!(
            "poll_interval = \"250ms\"\n[detect]\nwindow = \"3s\"\n\
             [[alerts.sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{}/hook\"\n\
             [desired]\nsource = \"file\"\npath = \"{}\"\nnode_name = \"node-0\"\n\
             [cluster]\ninterval = \"1s\"\n",
            receiver.addr,
            nodes_file.display()
        ),
    );
    daemon.wait_ready();
    let prometheus = Prometheus::start(
        node,
        &Prometheus::scrape_config("watchdog", "127.0.0.1:9477", "node: node-0", &[]),
        &[],
    );
    prometheus.wait_scraped("watchdog");
    let start = SystemTime::now();
    // The node variable lists the node.
    let values = prometheus
        .api("/api/v1/label/node/values?match%5B%5D=watchdog_build_info")
        .expect("label values");
    assert_eq!(values["data"], serde_json::json!(["node-0"]), "{values}");

    // Healthy traffic, then the fault: a ghost VTEP (node 2's FDB entry repointed at a
    // retired address), a route via a gateway that does not exist with traffic on it, and
    // TCP connects to the pod behind the ghost VTEP.
    let _healthy = lab.udp_stream(0, 1, 20);
    let _victim = lab.udp_stream(0, 2, 20);
    lab.repoint_fdb(0, 2, RETIRED_VTEP);
    lab.route_via_missing_gateway(0, "10.55.0.0/24", MISSING_GATEWAY);
    let stale_route = Repeat::start(lab.node(0).pod_ns(), || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let _ = socket.send_to(b"stale", "10.55.0.5:9");
        std::thread::sleep(Duration::from_millis(50));
    });
    let connects = Repeat::start(node, || {
        let target = SocketAddr::from((pod_ip(2), TCP_PORT));
        let _ = TcpStream::connect_timeout(&target, Duration::from_millis(1500));
    });
    let findings_expr = "sum by (kind) (watchdog_findings{node=\"node-0\"})";
    let active = |kind: &str| {
        prometheus.query(findings_expr).is_some_and(|result| {
            series(&result)
                .iter()
                .any(|(labels, values)| labels["kind"] == kind && values.iter().any(|v| *v > 0.0))
        })
    };
    let empty_panels = |end: SystemTime| -> Vec<String> {
        queries
            .iter()
            .filter(|q| {
                prometheus
                    .query_range(&q.substituted("node-0"), start, end, Duration::from_secs(1))
                    .is_none_or(|result| result.is_empty())
            })
            .map(|q| format!("{}: {}", q.name(), q.substituted("node-0")))
            .collect()
    };
    poll_until(Duration::from_secs(60), "the fault in Prometheus", || {
        (active("stale_fdb") && active("ghost_gateway")).then_some(())
    });
    // Panels whose data needs a few more scrapes (rates over two samples) get them; after
    // the deadline, the ones still empty are listed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let empty = empty_panels(SystemTime::now());
        if empty.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "panel queries that returned nothing during the fault:\n{}\n{}",
            empty.join("\n"),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The webhook sink delivered the firing alerts (the delivery panel has something to show).
    poll_until(
        Duration::from_secs(30),
        "the webhook to receive alerts",
        || (receiver.requests.load(Ordering::Relaxed) > 0).then_some(()),
    );

    // Heal: the FDB entry back at node 2, the ghost neighbour and the stale route gone.
    drop(stale_route);
    drop(connects);
    node.bridge(&[
        "fdb",
        "replace",
        &vtep_mac(2),
        "dev",
        VXLAN_DEV,
        "dst",
        &underlay_ip(2).to_string(),
        "self",
        "permanent",
    ]);
    lab.ip_in(
        0,
        &["neigh", "del", &RETIRED_VTEP.to_string(), "dev", "eth0"],
    );
    lab.ip_in(0, &["route", "del", "10.55.0.0/24"]);
    poll_until(
        Duration::from_secs(90),
        "every finding to clear in Prometheus",
        || {
            let result = prometheus.query("sum(watchdog_findings{node=\"node-0\"})")?;
            (series(&result).first()?.1 == [0.0]).then_some(())
        },
    );
    let end = SystemTime::now();

    // Every panel query, over the whole scenario, returns series.
    let empty = empty_panels(end);
    assert!(
        empty.is_empty(),
        "panel queries that returned nothing over the fault and the heal:\n{}\n{}",
        empty.join("\n"),
        daemon.log()
    );
    // And they show the fault where it belongs.
    let by_title = |title: &str, ref_id: &str| -> Vec<(BTreeMap<String, String>, Vec<f64>)> {
        let query = queries
            .iter()
            .find(|q| q.panel == title && q.ref_id == ref_id)
            .unwrap_or_else(|| panic!("no panel {title:?} {ref_id}"));
        let result = prometheus
            .query_range(
                &query.substituted("node-0"),
                start,
                end,
                Duration::from_secs(1),
            )
            .expect("query");
        series(&result)
    };
    let has = |rows: &[(BTreeMap<String, String>, Vec<f64>)], key: &str, value: &str| {
        rows.iter().any(|(labels, values)| {
            labels.get(key).map(String::as_str) == Some(value) && values.iter().any(|v| *v > 0.0)
        })
    };
    let findings = by_title("Findings by kind and node", "A");
    for kind in ["stale_fdb", "ghost_gateway"] {
        assert!(
            has(&findings, "kind", kind),
            "{kind} not drawn: {findings:?}"
        );
    }
    let retired = RETIRED_VTEP.to_string();
    let silent = by_title("Packets out vs back per peer", "C");
    assert!(
        has(&silent, "peer", &retired),
        "{retired} not highlighted: {silent:?}"
    );
    let silent = by_title("Silent peers (packets out, none back, 5m)", "A");
    assert!(
        has(&silent, "peer", &retired),
        "{retired} not listed: {silent:?}"
    );
    // Node 2, behind the ghost VTEP, is the Node node-0 cannot reach; node 1 it reaches.
    let verdict = by_title("Cluster verdict: Nodes the others cannot reach", "A");
    assert!(has(&verdict, "peer_node", "node-2"), "{verdict:?}");
    assert!(!has(&verdict, "peer_node", "node-1"), "{verdict:?}");
    let drops = by_title("Kernel drops by reason", "A");
    assert!(has(&drops, "reason", "NEIGH_FAILED"), "{drops:?}");
    let routes = by_title("Routes named by active findings", "A");
    assert!(
        has(&routes, "gateway", &MISSING_GATEWAY.to_string()),
        "{routes:?}"
    );
    let failing = by_title("Failing TCP destinations", "A");
    assert!(has(&failing, "peer", &pod_ip(2).to_string()), "{failing:?}");
    let outcomes = by_title("TCP connects by outcome", "A");
    assert!(has(&outcomes, "outcome", "failed"), "{outcomes:?}");
    let delivered = by_title("Alert delivery", "A");
    assert!(has(&delivered, "state", "firing"), "{delivered:?}");
    // Healed: the findings panel draws nothing now.
    let q = queries
        .iter()
        .find(|q| q.panel == "Findings by kind and node")
        .unwrap();
    let now = prometheus.query(&q.substituted("node-0")).expect("query");
    assert!(
        now.is_empty(),
        "{} still shows {now:?} after the heal",
        q.name()
    );
}
