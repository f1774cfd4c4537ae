//! Desired-state sources against recorded Node objects: `source = "kubernetes"` against
//! the fake API server (`watchdog_tests::apiserver`, the one mock: no kube-apiserver can
//! be installed here) and `source = "file"` against NodeList files. No root needed.

use std::{
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
    serde_yaml::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
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
