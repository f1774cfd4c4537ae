//! Desired-state sources against recorded Node objects: `source = "kubernetes"` against
//! the fake API server (`watchdog_tests::apiserver`, the one mock: no kube-apiserver can
//! be installed here), the fake against recorded API answers, and `source = "file"`
//! against NodeList files. No root needed, but for the daemon on the in-cluster service
//! account.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use watchdog::{
    config::desired::{DesiredConfig, Source},
    model::desired::{Model, State},
    sources::desired::DesiredSource,
};
use watchdog_tests::apiserver::FakeApiServer;

const NODES: &str = "/api/v1/nodes";
const DEADLINE: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../watchdog/tests/fixtures/nodes")
        .join(name)
}

fn node_list(name: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn tempdir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("watchdog-desired-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls the source until `check` accepts its state (with `stale_after`), or panics
/// after the deadline naming `what` and the last state.
async fn until<T>(
    source: &DesiredSource,
    stale_after: Duration,
    what: &str,
    mut check: impl FnMut(&State) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        let snapshot = source.snapshot();
        let state = snapshot.state(Instant::now(), stale_after);
        if let Some(value) = check(&state) {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: still {state:?} after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn known<T>(f: impl Fn(&Model) -> Option<T>) -> impl FnMut(&State) -> Option<T> {
    move |state| state.model().and_then(&f)
}

fn public_ip(model: &Model, node: &str) -> Option<String> {
    model.nodes.get(node)?.public_ip.clone()
}

async fn kube_source(server: &FakeApiServer, dir: &Path) -> DesiredSource {
    let config = DesiredConfig {
        source: Source::Kubernetes,
        kubeconfig: server.kubeconfig(dir),
        ..DesiredConfig::default()
    };
    config.validate().unwrap();
    DesiredSource::start(&config).await.unwrap()
}

const STALE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_follows_updates_and_deletions_over_https() {
    let dir = tempdir("follow");
    let server = FakeApiServer::start(true).await;
    server.load_nodes(&node_list("kubeadm-flannel-list.yaml"));
    let source = kube_source(&server, &dir).await;
    let members = until(
        &source,
        STALE,
        "first list",
        known(|m| (m.nodes.len() == 2).then(|| m.members().count())),
    )
    .await;
    assert_eq!(members, 2);
    poll_watchers(&server, 1).await;

    // A Node's annotation changes: the model follows.
    let mut node = server.node("node01").unwrap();
    node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] = json!("10.67.0.5");
    server.apply(NODES, node);
    until(
        &source,
        STALE,
        "public-ip update",
        known(|m| (public_ip(m, "node01").as_deref() == Some("10.67.0.5")).then_some(())),
    )
    .await;
    // A new Node, then a deletion.
    let mut new = server.node("node01").unwrap();
    new["metadata"]["name"] = json!("node02");
    server.apply(NODES, new);
    until(
        &source,
        STALE,
        "node02 added",
        known(|m| m.nodes.contains_key("node02").then_some(())),
    )
    .await;
    server.delete(NODES, "controlplane");
    until(
        &source,
        STALE,
        "controlplane deleted",
        known(|m| (!m.nodes.contains_key("controlplane") && m.nodes.len() == 2).then_some(())),
    )
    .await;
    // Bookmarks keep it confirmed; a status-only change does not make a new model.
    server.bookmark();
    let before = source.snapshot().model.unwrap();
    let mut heartbeat = server.node("node02").unwrap();
    heartbeat["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    server.apply(NODES, heartbeat);
    let mut marker = server.node("node01").unwrap();
    marker["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] = json!("10.67.0.6");
    server.apply(NODES, marker);
    let after = until(&source, STALE, "marker", |state| {
        let m = state.model()?;
        (public_ip(m, "node01").as_deref() == Some("10.67.0.6")).then(|| m.clone())
    })
    .await;
    assert_eq!(after.nodes["node02"], before.nodes["node02"]);
    assert_eq!(server.lists(NODES), 1, "{:?}", server.requests());
}

async fn poll_watchers(server: &FakeApiServer, n: usize) {
    let start = Instant::now();
    while server.watchers(NODES) < n {
        assert!(
            start.elapsed() < DEADLINE,
            "no watch opened: {:?}",
            server.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_forces_a_new_list_and_a_dropped_connection_resumes() {
    let dir = tempdir("gone");
    let server = FakeApiServer::start(false).await;
    server.load_nodes(&node_list("kubeadm-flannel-list.yaml"));
    let source = kube_source(&server, &dir).await;
    until(
        &source,
        STALE,
        "first list",
        known(|m| (m.nodes.len() == 2).then_some(())),
    )
    .await;
    poll_watchers(&server, 1).await;

    // Dropped mid-stream: the watch resumes from its resourceVersion, no new list, and
    // a change made while it was down is not lost.
    server.drop_watches();
    let mut node = server.node("node01").unwrap();
    node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] = json!("10.1.1.1");
    server.apply(NODES, node);
    until(
        &source,
        STALE,
        "change across a dropped connection",
        known(|m| (public_ip(m, "node01").as_deref() == Some("10.1.1.1")).then_some(())),
    )
    .await;
    assert_eq!(server.lists(NODES), 1, "{:?}", server.requests());

    // 410 Gone on the open watch, and a change in the history it lost: listed again.
    poll_watchers(&server, 1).await;
    server.expire_watches();
    server.delete(NODES, "controlplane");
    until(
        &source,
        STALE,
        "deletion after 410",
        known(|m| (m.nodes.len() == 1).then_some(())),
    )
    .await;
    assert_eq!(server.lists(NODES), 2, "{:?}", server.requests());
    assert!(
        source.snapshot().failing_since.is_none(),
        "a 410 is not a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_while_the_server_stays_away_past_stale_after_then_recovers() {
    let dir = tempdir("away");
    let mut server = FakeApiServer::start(true).await;
    server.load_nodes(&node_list("kubeadm-flannel-list.yaml"));
    let source = kube_source(&server, &dir).await;
    // Unknown until the first full list.
    assert!(matches!(
        DesiredSource::none()
            .snapshot()
            .state(Instant::now(), STALE),
        State::Unknown { .. }
    ));
    let stale = Duration::from_secs(2);
    until(
        &source,
        stale,
        "first list",
        known(|m| (m.nodes.len() == 2).then_some(())),
    )
    .await;
    poll_watchers(&server, 1).await;

    let gone_at = Instant::now();
    server.stop();
    let reason = until(
        &source,
        stale,
        "unknown after stale_after",
        |state| match state {
            State::Unknown { reason } => Some(reason.clone()),
            State::Known { .. } => None,
        },
    )
    .await;
    assert!(gone_at.elapsed() >= stale, "unknown too early");
    assert!(reason.contains("stale_after"), "{reason}");
    // The last model is kept for when it comes back, but is not trusted meanwhile.
    assert!(source.snapshot().model.is_some());

    // Back, with a change made while it was away: known again, and current.
    let mut node = server.node("node01").unwrap();
    node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] = json!("10.2.2.2");
    server.apply(NODES, node);
    server.resume().await;
    until(
        &source,
        stale,
        "recovered",
        known(|m| (public_ip(m, "node01").as_deref() == Some("10.2.2.2")).then_some(())),
    )
    .await;
    assert!(source.snapshot().failing_since.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_that_cannot_work_names_the_key() {
    let dir = tempdir("badconfig");
    let config = DesiredConfig {
        source: Source::Kubernetes,
        kubeconfig: dir.join("missing"),
        ..DesiredConfig::default()
    };
    let err = DesiredSource::start(&config)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("desired.kubeconfig "), "{err}");
    // The server refuses a wrong token: failing, still unknown, never a panic.
    let server = FakeApiServer::start(false).await;
    let path = server.kubeconfig(&dir);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("watchdog-test-token", "wrong");
    std::fs::write(&path, text).unwrap();
    let source = DesiredSource::start(&DesiredConfig {
        kubeconfig: path,
        ..config
    })
    .await
    .unwrap();
    let reason = until(&source, STALE, "401 reported", |state| match state {
        State::Unknown { reason } if reason.contains("401") => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("Unauthorized"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_rereads_changes_and_keeps_the_last_good_list() {
    let dir = tempdir("file");
    let path = dir.join("nodes.yaml");
    std::fs::copy(fixture("kubeadm-flannel-list.yaml"), &path).unwrap();
    let config = DesiredConfig {
        source: Source::File,
        path: path.clone(),
        file_poll: Duration::from_millis(100),
        ..DesiredConfig::default()
    };
    config.validate().unwrap();
    let source = DesiredSource::start(&config).await.unwrap();
    until(
        &source,
        STALE,
        "file read",
        known(|m| (m.nodes.len() == 2).then_some(())),
    )
    .await;

    // JSON replaces YAML in place: re-read.
    std::fs::copy(fixture("k3s-nodelist-api.json"), &path).unwrap();
    until(
        &source,
        STALE,
        "JSON re-read",
        known(|m| {
            m.nodes
                .contains_key("komal-hp-probook-430-g8-notebook-pc")
                .then_some(())
        }),
    )
    .await;

    // Garbage: failing, the last good model kept, unknown after stale_after.
    std::fs::write(&path, "items: [").unwrap();
    let stale = Duration::from_secs(1);
    let reason = until(&source, stale, "bad file", |state| match state {
        State::Unknown { reason } => Some(reason.clone()),
        State::Known { .. } => None,
    })
    .await;
    assert!(reason.contains("not a NodeList"), "{reason}");
    assert_eq!(source.snapshot().model.unwrap().nodes.len(), 1);

    // Fixed: known again.
    std::fs::copy(fixture("kubeadm-flannel-list.yaml"), &path).unwrap();
    until(
        &source,
        stale,
        "fixed",
        known(|m| (m.nodes.len() == 2).then_some(())),
    )
    .await;

    // Too large for max_file_bytes: named.
    let small = DesiredSource::start(&DesiredConfig {
        max_file_bytes: 1024,
        ..config
    })
    .await
    .unwrap();
    let reason = until(&small, stale, "too large", |state| match state {
        State::Unknown { reason } if reason.contains("max_file_bytes") => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("desired.path"), "{reason}");
}

/// `namespace/name` (or `name`) of an object.
fn identity(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// Whether `got` has the shape `want` records: `"$rv"` and `"$token"` stand for any
/// non-empty string (`$rv` inside a string too), objects must have the same keys.
fn same_shape(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::String(w), Value::String(g)) if w == "$rv" || w == "$token" => !g.is_empty(),
        (Value::String(w), Value::String(g)) if w.contains("$rv") => {
            let (head, tail) = w.split_once("$rv").unwrap();
            g.starts_with(head) && g.ends_with(tail) && g.len() > head.len() + tail.len()
        }
        (Value::Object(w), Value::Object(g)) => {
            w.len() == g.len()
                && w.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|gv| same_shape(v, gv)))
        }
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(w, g)| same_shape(w, g))
        }
        _ => want == got,
    }
}

/// The fake API server answers the list and watch requests of the recorded exchanges
/// (`watchdog/tests/fixtures/apiserver`) as kube-apiserver does: selectors, paging with
/// continue tokens and remainingItemCount, the watch cache's `resourceVersion=0`,
/// initial events and their bookmark, 410 after compaction, the errors' Status shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_answers_as_the_recorded_api_server() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../watchdog/tests/fixtures");
    let read = |path: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let recorded = read(&base.join("apiserver/exchanges.json"));
    let server = FakeApiServer::start(false).await;
    server.add_resource("/api/v1/pods", "PodList");
    server.add_resource(
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSliceList",
    );
    let mut lists = BTreeMap::new();
    for (path, file) in recorded["objects"].as_object().unwrap() {
        let list = read(&base.join(file.as_str().unwrap()));
        server.load(path, &list);
        lists.insert(path.clone(), list);
    }
    for copy in recorded["copies"].as_array().unwrap() {
        let path = copy["path"].as_str().unwrap();
        let mut object = lists[path]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| identity(o) == copy["of"])
            .unwrap()
            .clone();
        object["metadata"]["name"] = copy["name"].clone();
        object["metadata"]["uid"] = json!("6c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5");
        object["spec"]["nodeName"] = copy["nodeName"].clone();
        server.apply(path, object);
    }
    let mut answers: Vec<Vec<Value>> = Vec::new();
    for (i, exchange) in recorded["exchanges"].as_array().unwrap().iter().enumerate() {
        if exchange["compact"] == json!(true) {
            server.compact();
        }
        let mut request = exchange["request"].as_str().unwrap().to_owned();
        while let Some(at) = request.find("$continue:") {
            let rest = &request[at + "$continue:".len()..];
            let end = rest.find('&').unwrap_or(rest.len());
            let n: usize = rest[..end].parse().unwrap();
            let token = answers[n][0]["metadata"]["continue"]
                .as_str()
                .unwrap()
                .to_owned();
            request.replace_range(at..at + "$continue:".len() + end, &token);
        }
        let (status, body) = server.get(request.strip_prefix("GET ").unwrap());
        let what = format!("exchange {i}: {request}");
        assert_eq!(
            u64::from(status),
            exchange["status"].as_u64().unwrap(),
            "{what}: {body:#?}"
        );
        if let Some(events) = exchange["events"].as_array() {
            assert_eq!(body.len(), events.len(), "{what}: {body:#?}");
            for (want, got) in events.iter().zip(&body) {
                assert_eq!(got["type"], want["type"], "{what}");
                match &want["object"] {
                    Value::String(name) => {
                        assert_eq!(&identity(&got["object"]), name, "{what}");
                        // Watch events carry the object's kind.
                        assert!(got["object"]["kind"].is_string(), "{what}: {got}");
                        assert!(got["object"]["apiVersion"].is_string(), "{what}: {got}");
                    }
                    object => assert!(same_shape(object, &got["object"]), "{what}: {got}"),
                }
            }
        } else {
            let want = &exchange["response"];
            let got = &body[0];
            match want["items"].as_array() {
                Some(items) => {
                    let names: Vec<String> = got["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(identity)
                        .collect();
                    let wanted: Vec<&str> = items.iter().map(|i| i.as_str().unwrap()).collect();
                    assert_eq!(names, wanted, "{what}");
                    // List items carry no kind: the list's says it.
                    assert!(
                        got["items"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|i| i.get("kind").is_none()),
                        "{what}"
                    );
                    for key in ["kind", "apiVersion", "metadata"] {
                        assert!(
                            same_shape(&want[key], &got[key]),
                            "{what}: {key}: {}",
                            got[key]
                        );
                    }
                }
                // A Status: every recorded field (a 422's message is the server's own).
                None => {
                    for (key, value) in want.as_object().unwrap() {
                        assert!(same_shape(value, &got[key]), "{what}: {key}: {}", got[key]);
                    }
                }
            }
        }
        answers.push(body);
    }
    // Both pages of a list are of one resourceVersion.
    assert_eq!(
        answers[0][0]["metadata"]["resourceVersion"],
        answers[1][0]["metadata"]["resourceVersion"]
    );
}

/// The DaemonSet's path: no kubeconfig, so the daemon takes the in-cluster service account
/// (`KUBERNETES_SERVICE_HOST`/`_PORT`, the token and CA kube reads from the fixed paths
/// under `/var/run/secrets/kubernetes.io/serviceaccount`, which the kubelet mounts). The
/// daemon runs in a private mount namespace with a tmpfs there holding the fake API
/// server's token and CA: the host's paths are not touched. Needs root.
#[test]
fn the_daemon_follows_nodes_through_the_in_cluster_service_account() {
    use std::process::{Command, Stdio};

    use watchdog_tests::{Metrics, NetNs, apiserver::InNetns, daemon_binary, http_get, run_in};
    if !watchdog_tests::require_root(
        "the_daemon_follows_nodes_through_the_in_cluster_service_account",
    ) {
        return;
    }
    let ns = NetNs::new("wd-incluster");
    let server = InNetns::start(&ns, true);
    server.load_nodes(&node_list("kubeadm-flannel-list.yaml"));
    let dir = tempdir("incluster");
    let account = dir.join("serviceaccount");
    server.service_account(&account);
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "poll_interval = \"250ms\"\n[desired]\nsource = \"kubernetes\"\nnode_name = \"node01\"\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    // In the daemon's own mount namespace only: a tmpfs on /run (where /var/run points)
    // with the service account's files, then the daemon.
    let script = "set -e\n\
        run=$(readlink -f /var/run)\n\
        mount -t tmpfs -o size=1m,mode=0755 watchdog-incluster \"$run\"\n\
        mkdir -p \"$run/secrets/kubernetes.io/serviceaccount\"\n\
        cp \"$1/token\" \"$1/ca.crt\" \"$1/namespace\" \"$run/secrets/kubernetes.io/serviceaccount/\"\n\
        shift\n\
        exec \"$@\"\n";
    let mut daemon = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", script, "sh"])
        .arg(&account)
        .arg(daemon_binary())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", server.addr().port().to_string())
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the daemon");
    let daemon_log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let start = Instant::now();
    let metrics = loop {
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("the daemon exited ({status}):\n{}", daemon_log());
        }
        let scrape = run_in(&ns.path(), || {
            http_get("127.0.0.1:9477".parse().unwrap(), "/metrics")
        });
        if let Some((200, body)) = scrape {
            let metrics = Metrics(body);
            if metrics.value("watchdog_desired_up", &[("source", "kubernetes")]) == Some(1.0) {
                break metrics;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the desired state is not known through the service account after {DEADLINE:?}:\n{}",
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(metrics.value("watchdog_desired_nodes", &[]), Some(2.0));
    // Every request carried the service account's token (the server answers 401 to any
    // other) and went to the address the environment named.
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/nodes?") && r.contains("watch=true")),
        "{requests:#?}"
    );
    assert!(
        daemon_log().contains("desired state: source=kubernetes (in-cluster service account)"),
        "{}",
        daemon_log()
    );
    // SAFETY: kill(2) on the daemon we started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success(), "{}", daemon_log());
}
