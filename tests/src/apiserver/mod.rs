//! A fake Kubernetes API server on loopback, for the tests of the Kubernetes sources. It
//! is the one mock in the test suite: no kube-apiserver can be installed on the test
//! machines. It serves recorded real objects (the NodeList, PodList and EndpointSlice
//! files under `watchdog/tests/fixtures`) the way kube-apiserver does, as far as a
//! client relies on it (`tests/tests/desired.rs` checks it against recorded responses,
//! `watchdog/tests/fixtures/apiserver`):
//!
//! - `GET <path>`: a list with the current `metadata.resourceVersion`, only the objects
//!   the `fieldSelector` (the fields the real server supports for the kind, others are
//!   `400 field label not supported`) and `labelSelector` match; `limit` pages of a
//!   consistent snapshot with a `continue` token (`410 Expired` once the snapshot is
//!   compacted away) and `remainingItemCount` when no selector is given;
//!   `resourceVersion=0` is served whole (from the "cache": `limit` ignored);
//! - `GET <path>?watch=true`: without `resourceVersion` (or `0`), synthetic `ADDED` events
//!   of the current objects first; from `resourceVersion=N`, the changes after N (from
//!   its history), `410 Expired` (`too old resource version`) for a version older than
//!   the history kept ([`FakeApiServer::compact`]); `sendInitialEvents=true` (with
//!   `resourceVersionMatch=NotOlderThan` and bookmarks, else `422`) ends the initial
//!   events with a `BOOKMARK` annotated `k8s.io/initial-events-end`; selectors apply to
//!   events (an object that stops matching is `DELETED` for that watch, one that starts
//!   matching `ADDED`); `BOOKMARK`s when asked for (`allowWatchBookmarks=true`);
//! - a bearer token, plain http or https with a throwaway CA (rcgen);
//! - faults: dropped watch connections ([`FakeApiServer::drop_watches`]), expired watches
//!   ([`FakeApiServer::expire_watches`]), the whole server going away and coming back
//!   ([`FakeApiServer::stop`], [`FakeApiServer::resume`]).
//!
//! [`InNetns`] runs one inside a lab namespace, on its own runtime, for a daemon there;
//! [`FakeApiServer::service_account`] writes the files of an in-cluster service account
//! for it.
//!
//! Resources are registered by path (`/api/v1/nodes` from the start), so Pods
//! (`/api/v1/pods`) and EndpointSlices (`/apis/discovery.k8s.io/v1/endpointslices`) are
//! served the same way.

mod pki;
mod select;
mod serve;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use http_body_util::combinators::UnsyncBoxBody;
use hyper::{
    Request,
    body::{Bytes, Frame, Incoming},
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use self::serve::{Answer, gone, handle, key, line};
pub use self::{
    pki::Pki,
    select::{Fields, Labels, decode},
};

/// The bearer token the server expects.
pub const TOKEN: &str = "watchdog-test-token";

type Body = UnsyncBoxBody<Bytes, std::io::Error>;
type WatchTx = mpsc::UnboundedSender<Result<Frame<Bytes>, std::io::Error>>;

struct Watcher {
    tx: WatchTx,
    bookmarks: bool,
    fields: Fields,
    labels: Labels,
}

impl Watcher {
    fn selects(&self, object: &Value) -> bool {
        self.fields.matches(object) && self.labels.matches(object)
    }

    /// Sends one event; false once the client is gone.
    fn send(&self, kind: &str, object: &Value) -> bool {
        self.tx
            .send(Ok(Frame::data(line(
                &json!({"type": kind, "object": object}),
            ))))
            .is_ok()
    }

    /// The event this watch sees for a change from `previous` to `object`, if any.
    fn event_for(
        &self,
        kind: &str,
        object: &Value,
        previous: Option<&Value>,
    ) -> Option<&'static str> {
        let now = self.selects(object);
        let before = previous.is_some_and(|p| self.selects(p));
        match kind {
            "ADDED" => now.then_some("ADDED"),
            "DELETED" => now.then_some("DELETED"),
            _ => match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }
    }
}

/// One change: (resourceVersion, type, object, the object before a `MODIFIED`).
type Change = (u64, &'static str, Value, Option<Value>);

/// One served resource (e.g. Nodes): its objects and the changes since `oldest`.
struct Resource {
    list_kind: String,
    /// The fields a `fieldSelector` may name for this kind.
    fields: &'static [&'static str],
    objects: BTreeMap<String, Value>,
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    /// Snapshots of paged lists by resourceVersion, for their `continue` tokens.
    snapshots: BTreeMap<u64, Vec<(String, Value)>>,
}

impl Resource {
    fn kind(&self) -> &str {
        self.list_kind.trim_end_matches("List")
    }

    fn api_version(&self, path: &str) -> String {
        // /api/v1/nodes → v1; /apis/discovery.k8s.io/v1/endpointslices → discovery.k8s.io/v1
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.first() {
            Some(&"apis") if parts.len() >= 3 => format!("{}/{}", parts[1], parts[2]),
            _ => parts.get(1).copied().unwrap_or("v1").to_owned(),
        }
    }
}

/// The fields kube-apiserver lets a `fieldSelector` name, by list kind (`pkg/registry/…
/// /strategy.go` `…ToSelectableFields`); every kind has `metadata.name` and, namespaced,
/// `metadata.namespace`.
fn selectable_fields(list_kind: &str) -> &'static [&'static str] {
    match list_kind {
        "NodeList" => &["metadata.name", "spec.unschedulable"],
        "PodList" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

struct State {
    version: u64,
    /// Versions below this are gone (410).
    oldest: u64,
    resources: BTreeMap<String, Resource>,
    requests: Vec<String>,
}

/// The fake API server. Runs on the tokio runtime it was started on; dropping it stops
/// it.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    pki: Option<Pki>,
    server: Option<tokio::task::JoinHandle<()>>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl FakeApiServer {
    /// Starts on 127.0.0.1 (a free port), https when `tls`, serving Nodes.
    pub async fn start(tls: bool) -> Self {
        Self::start_on("127.0.0.1:0", tls).await
    }

    /// Starts on `addr` (e.g. `127.0.0.1:0`), https when `tls`, serving Nodes.
    pub async fn start_on(addr: &str, tls: bool) -> Self {
        let state = State {
            version: 1,
            oldest: 0,
            resources: BTreeMap::new(),
            requests: Vec::new(),
        };
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let mut server = Self {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(state)),
            pki: tls.then(Pki::new),
            server: None,
            connections: Arc::default(),
        };
        server.add_resource("/api/v1/nodes", "NodeList");
        server.serve(listener);
        server
    }

    /// Serves another resource at `path` (e.g. `/api/v1/pods`, `PodList`).
    pub fn add_resource(&self, path: &str, list_kind: &str) {
        self.state.lock().unwrap().resources.insert(
            path.to_owned(),
            Resource {
                list_kind: list_kind.to_owned(),
                fields: selectable_fields(list_kind),
                objects: BTreeMap::new(),
                history: Vec::new(),
                watchers: Vec::new(),
                snapshots: BTreeMap::new(),
            },
        );
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` or `http://…`.
    pub fn url(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Writes a kubeconfig for this server (and the CA file for https) into `dir`;
    /// returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let ca = match &self.pki {
            Some(pki) => {
                let path = dir.join("fake-apiserver-ca.pem");
                std::fs::write(&path, &pki.ca_pem).unwrap();
                format!("    certificate-authority: {}\n", path.display())
            }
            None => String::new(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n{ca}\
             users:\n- name: fake\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  \
             context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url()
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes what the kubelet mounts at `/var/run/secrets/kubernetes.io/serviceaccount`
    /// into `dir`: `token`, `ca.crt` (this server's CA; https only) and `namespace`.
    pub fn service_account(&self, dir: &Path) {
        let pki = self.pki.as_ref().expect("in-cluster clients speak https");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
        std::fs::write(dir.join("namespace"), "watchdog").unwrap();
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let acceptor = self.pki.as_ref().map(Pki::acceptor);
        let connections = self.connections.clone();
        self.server = Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let acceptor = acceptor.clone();
                let task = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            let authorization = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let answer = handle(
                                &state,
                                req.method().as_str(),
                                req.uri().path_and_query().map_or("", |p| p.as_str()),
                                authorization.as_deref(),
                            );
                            Ok::<_, Infallible>(answer.response())
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let io = hyper_util::rt::TokioIo::new(tls);
                                let _ = builder.serve_connection(io, service).await;
                            }
                        }
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = builder.serve_connection(io, service).await;
                        }
                    }
                });
                let mut connections = connections.lock().unwrap();
                connections.retain(|t| !t.is_finished());
                connections.push(task);
            }
        }));
    }

    /// The server goes away: the port is closed and every connection cut.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
        for resource in self.state.lock().unwrap().resources.values_mut() {
            resource.watchers.clear();
        }
    }

    /// The server comes back on the same port, with the same objects and history.
    pub async fn resume(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }

    /// Adds or replaces an object (by `metadata.name`, and namespace when set) at `path`:
    /// a new resourceVersion, `ADDED` or `MODIFIED` to every watcher it concerns.
    pub fn apply(&self, path: &str, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        let version = state.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let key = key(&object);
        let resource = state.resources.get_mut(path).expect("resource registered");
        // Stored (and watched) with its kind, as the API serves single objects and events.
        object["kind"] = json!(resource.kind());
        object["apiVersion"] = json!(resource.api_version(path));
        let previous = resource.objects.insert(key, object.clone());
        let kind = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        resource.send(kind, &object, previous.as_ref());
        resource.history.push((version, kind, object, previous));
    }

    /// Deletes an object at `path` by key (`name` or `namespace/name`): `DELETED`.
    pub fn delete(&self, path: &str, key: &str) {
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        let version = state.version;
        let resource = state.resources.get_mut(path).expect("resource registered");
        let Some(mut object) = resource.objects.remove(key) else {
            return;
        };
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        resource.send("DELETED", &object, None);
        resource.history.push((version, "DELETED", object, None));
    }

    /// Adds every Node of a NodeList (`kubectl get nodes -o json|yaml`).
    pub fn load_nodes(&self, list: &Value) {
        self.load("/api/v1/nodes", list);
    }

    /// Adds every item of a List (`kubectl get <kind> -o json`) at `path`, in the kind
    /// the resource serves.
    pub fn load(&self, path: &str, list: &Value) {
        let (kind, version) = {
            let state = self.state.lock().unwrap();
            let resource = &state.resources[path];
            (resource.kind().to_owned(), resource.api_version(path))
        };
        for mut item in list["items"].as_array().cloned().unwrap_or_default() {
            item["apiVersion"] = json!(version);
            item["kind"] = json!(kind);
            self.apply(path, item);
        }
    }

    /// A Node by name, as served.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.state.lock().unwrap().resources["/api/v1/nodes"]
            .objects
            .get(name)
            .cloned()
    }

    /// Sends a `BOOKMARK` with the current version to every watcher that asked for them.
    pub fn bookmark(&self) {
        let mut state = self.state.lock().unwrap();
        let version = state.version;
        let paths: Vec<String> = state.resources.keys().cloned().collect();
        for path in paths {
            let resource = state.resources.get_mut(&path).unwrap();
            let bookmark = json!({
                "type": "BOOKMARK",
                "object": {"kind": resource.kind(), "apiVersion": resource.api_version(&path),
                           "metadata": {"resourceVersion": version.to_string()}}
            });
            resource
                .watchers
                .retain(|w| !w.bookmarks || w.tx.send(Ok(Frame::data(line(&bookmark)))).is_ok());
        }
    }

    /// Forgets the history and the paged lists' snapshots: a watch from any earlier
    /// version, or a `continue` token of an earlier list, gets 410 Gone.
    pub fn compact(&self) {
        let mut state = self.state.lock().unwrap();
        state.oldest = state.version + 1;
        for resource in state.resources.values_mut() {
            resource.history.clear();
            resource.snapshots.clear();
        }
    }

    /// Sends `ERROR` 410 on every open watch and ends it (as an apiserver does when the
    /// watch cache moved past the client), after forgetting the history.
    pub fn expire_watches(&self) {
        self.compact();
        let mut state = self.state.lock().unwrap();
        let version = state.version;
        for resource in state.resources.values_mut() {
            for watcher in resource.watchers.drain(..) {
                let _ = watcher
                    .tx
                    .send(Ok(Frame::data(line(&gone(version, version + 1)))));
            }
        }
    }

    /// Cuts every open watch connection mid-stream (the body ends with an error, the
    /// connection is closed).
    pub fn drop_watches(&self) {
        let mut state = self.state.lock().unwrap();
        for resource in state.resources.values_mut() {
            for watcher in resource.watchers.drain(..) {
                let _ = watcher
                    .tx
                    .send(Err(std::io::Error::other("connection dropped")));
            }
        }
    }

    /// Open watch streams on `path`.
    pub fn watchers(&self, path: &str) -> usize {
        let mut state = self.state.lock().unwrap();
        let resource = state.resources.get_mut(path).expect("resource registered");
        resource.watchers.retain(|w| !w.tx.is_closed());
        resource.watchers.len()
    }

    /// Every request served so far, as `GET <path>?<query>`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many lists (not watches) of `path` were served.
    pub fn lists(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.strip_prefix("GET ")
                    .is_some_and(|r| r.split('?').next() == Some(path) && !r.contains("watch="))
            })
            .count()
    }

    /// Answers `GET <path_and_query>` as it would over the network (authorized), without
    /// one: the status and the JSON documents of the body (a watch's events queued so
    /// far; the watch is then closed).
    pub fn get(&self, path_and_query: &str) -> (u16, Vec<Value>) {
        let answer = handle(
            &self.state,
            "GET",
            path_and_query,
            Some(&format!("Bearer {TOKEN}")),
        );
        match answer {
            Answer::Full(status, body) => (status.as_u16(), vec![body]),
            Answer::Watch(mut rx) => {
                let mut events = Vec::new();
                while let Ok(Ok(frame)) = rx.try_recv() {
                    if let Ok(data) = frame.into_data() {
                        events.push(serde_json::from_slice(&data).unwrap());
                    }
                }
                (200, events)
            }
        }
    }
}

/// A [`FakeApiServer`] listening on 127.0.0.1 inside a network namespace (where a daemon
/// under test runs), served by a runtime of its own, so plain threads (lab tests, benches)
/// can drive it. Dereferences to the server.
pub struct InNetns {
    // Dropped first: the server's tasks stop before their runtime goes.
    server: Option<FakeApiServer>,
    runtime: tokio::runtime::Runtime,
}

impl InNetns {
    /// Starts a server (https when `tls`) inside `ns`.
    pub fn start(ns: &crate::NetNs, tls: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the fake API server");
        // The listener is bound on the calling thread: the one inside `ns`.
        let server = ns.run(|| runtime.block_on(FakeApiServer::start(tls)));
        Self {
            server: Some(server),
            runtime,
        }
    }

    /// The runtime the server runs on.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }
}

impl std::ops::Deref for InNetns {
    type Target = FakeApiServer;

    fn deref(&self) -> &FakeApiServer {
        self.server.as_ref().expect("the server runs until drop")
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        self.server.take();
    }
}
