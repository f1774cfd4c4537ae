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

mod select;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Frame, Incoming},
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use self::select::{Fields, Labels, decode};

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

/// TLS material when serving https.
pub struct Pki {
    /// The CA certificate the client must trust (PEM).
    pub ca_pem: String,
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Pki {
    /// A throwaway CA and a server certificate for `localhost` and 127.0.0.1.
    pub fn new() -> Self {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "fake kube-apiserver CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let server =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap()
                .signed_by(&key, &*ca)
                .unwrap();
        Self {
            ca_pem: ca.pem(),
            server_cert: server.der().clone(),
            server_key: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert.clone()], self.server_key.clone_key())
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
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

impl Resource {
    /// Sends a change to every watcher it concerns (dropping those that are gone).
    fn send(&mut self, kind: &str, object: &Value, previous: Option<&Value>) {
        self.watchers
            .retain(|w| match w.event_for(kind, object, previous) {
                Some(event) => w.send(event, object),
                None => !w.tx.is_closed(),
            });
    }
}

fn key(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

fn line(value: &Value) -> Bytes {
    let mut text = serde_json::to_vec(value).unwrap();
    text.push(b'\n');
    Bytes::from(text)
}

/// The `ERROR` event of a watch from `asked`, older than the history (which starts after
/// `oldest`), as kube-apiserver words it.
fn gone(asked: u64, oldest: u64) -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {asked} ({oldest})"),
        "reason": "Expired", "code": 410}})
}

fn status_body(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code.as_u16()})
}

/// An answer: a whole JSON document, or a watch's stream of events.
enum Answer {
    Full(StatusCode, Value),
    Watch(mpsc::UnboundedReceiver<Result<Frame<Bytes>, std::io::Error>>),
}

impl Answer {
    fn status(code: StatusCode, reason: &str, message: &str) -> Self {
        Self::Full(code, status_body(code, reason, message))
    }

    fn response(self) -> Response<Body> {
        match self {
            Answer::Full(status, body) => Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(
                    Full::new(line(&body))
                        .map_err(|never: Infallible| match never {})
                        .boxed_unsync(),
                )
                .unwrap(),
            Answer::Watch(rx) => {
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|frame| (frame, rx))
                });
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
                    .unwrap()
            }
        }
    }
}

/// A continue token as etcd3-backed kube-apiserver writes it: base64url (no padding) of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`.
fn continue_token(version: u64, after: &str) -> String {
    let json = serde_json::to_vec(&json!({"v": "meta.k8s.io/v1", "rv": version,
                                           "start": format!("{after}\u{0}")}))
    .unwrap();
    base64url(&json)
}

/// (resourceVersion, the key to start after) of a continue token, if it is one.
fn parse_continue(token: &str) -> Option<(u64, String)> {
    let value: Value = serde_json::from_slice(&unbase64url(token)?).ok()?;
    let start = value["start"]
        .as_str()?
        .trim_end_matches('\u{0}')
        .to_owned();
    Some((value["rv"].as_u64()?, start))
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(BASE64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn unbase64url(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = BASE64URL.iter().position(|&b| b == c)? as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a \
    consistent list result. You can start a new list without the continue parameter, or use \
    the continue token in this response to retrieve the remainder of the results. \
    Continuing with the provided token results in an inconsistent list - objects that were \
    created, modified, or deleted between the time the first chunk was returned and now may \
    show up in the list.";

fn handle(
    state: &Mutex<State>,
    method: &str,
    path_and_query: &str,
    authorization: Option<&str>,
) -> Answer {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let query: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    let mut state = state.lock().unwrap();
    state.requests.push(format!("{method} {path_and_query}"));
    if authorization != Some(&format!("Bearer {TOKEN}")) {
        return Answer::status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let (version, oldest) = (state.version, state.oldest);
    let Some(resource) = state.resources.get_mut(path) else {
        return Answer::status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let text = |key: &str| query.get(key).map(String::as_str).unwrap_or("");
    let fields = match Fields::parse(text("fieldSelector"), resource.fields) {
        Ok(fields) => fields,
        Err(message) => return Answer::status(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let labels = match Labels::parse(text("labelSelector")) {
        Ok(labels) => labels,
        Err(message) => return Answer::status(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    if matches!(text("watch"), "true" | "1") {
        return watch(resource, path, &query, version, oldest, fields, labels);
    }
    list(resource, path, &query, version, fields, labels)
}

fn watch(
    resource: &mut Resource,
    path: &str,
    query: &BTreeMap<String, String>,
    version: u64,
    oldest: u64,
    fields: Fields,
    labels: Labels,
) -> Answer {
    let text = |key: &str| query.get(key).map(String::as_str).unwrap_or("");
    let bookmarks = text("allowWatchBookmarks") == "true";
    let initial = text("sendInitialEvents") == "true";
    if initial && (text("resourceVersionMatch") != "NotOlderThan" || !bookmarks) {
        return Answer::status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
             sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and \
             allowWatchBookmarks to true",
        );
    }
    if !initial && !text("resourceVersionMatch").is_empty() {
        return Answer::status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
             resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        );
    }
    let watcher = Watcher {
        tx: mpsc::unbounded_channel().0,
        bookmarks,
        fields,
        labels,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = Watcher { tx, ..watcher };
    let from = text("resourceVersion");
    if from.is_empty() || from == "0" || initial {
        // The current state as synthetic ADDED events, then what follows.
        for object in resource.objects.values().filter(|o| watcher.selects(o)) {
            watcher.send("ADDED", object);
        }
        if initial {
            let _ = watcher.tx.send(Ok(Frame::data(line(&json!({
                "type": "BOOKMARK",
                "object": {"kind": resource.kind(), "apiVersion": resource.api_version(path),
                           "metadata": {"resourceVersion": version.to_string(),
                                        "annotations": {"k8s.io/initial-events-end": "true"}}}
            })))));
        }
    } else {
        let Ok(from) = from.parse::<u64>() else {
            return Answer::status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("resourceVersion: Invalid value: \"{from}\": must be an integer"),
            );
        };
        if from + 1 < oldest {
            let _ = watcher
                .tx
                .send(Ok(Frame::data(line(&gone(from, oldest - 1)))));
            return Answer::Watch(rx);
        }
        for (v, kind, object, previous) in &resource.history {
            if *v > from
                && let Some(event) = watcher.event_for(kind, object, previous.as_ref())
            {
                watcher.send(event, object);
            }
        }
    }
    resource.watchers.push(watcher);
    Answer::Watch(rx)
}

fn list(
    resource: &mut Resource,
    path: &str,
    query: &BTreeMap<String, String>,
    version: u64,
    fields: Fields,
    labels: Labels,
) -> Answer {
    let text = |key: &str| query.get(key).map(String::as_str).unwrap_or("");
    let selects = |object: &Value| fields.matches(object) && labels.matches(object);
    // The objects in key order as of the list's resourceVersion, and where to start.
    let (at, snapshot, after) = match text("continue") {
        "" => (
            version,
            resource
                .objects
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>(),
            None,
        ),
        token => {
            let Some((at, after)) = parse_continue(token) else {
                return Answer::status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "continue key is not valid: illegal base64 data",
                );
            };
            let Some(snapshot) = resource.snapshots.get(&at) else {
                let mut status = status_body(StatusCode::GONE, "Expired", CONTINUE_EXPIRED);
                status["metadata"]["continue"] = json!(continue_token(version, &after));
                return Answer::Full(StatusCode::GONE, status);
            };
            (at, snapshot.clone(), Some(after))
        }
    };
    // resourceVersion=0: served from the watch cache, whole.
    let limit = match text("resourceVersion") {
        "0" => None,
        _ => text("limit").parse::<usize>().ok().filter(|&l| l > 0),
    };
    let selected: Vec<&(String, Value)> = snapshot
        .iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|a| key.as_str() > a.as_str()))
        .filter(|(_, object)| selects(object))
        .collect();
    let page: Vec<&(String, Value)> = match limit {
        Some(limit) => selected.iter().take(limit).copied().collect(),
        None => selected.clone(),
    };
    let mut metadata = json!({"resourceVersion": at.to_string()});
    if page.len() < selected.len() {
        let last = &page.last().expect("a page of at least one").0;
        metadata["continue"] = json!(continue_token(at, last));
        if fields.is_empty() && labels.is_empty() {
            metadata["remainingItemCount"] = json!(selected.len() - page.len());
        }
        resource.snapshots.entry(at).or_insert(snapshot.clone());
    }
    // A list's items carry no kind: the list's says it.
    let items: Vec<Value> = page
        .iter()
        .map(|(_, object)| {
            let mut item = object.clone();
            if let Some(fields) = item.as_object_mut() {
                fields.remove("kind");
                fields.remove("apiVersion");
            }
            item
        })
        .collect();
    Answer::Full(
        StatusCode::OK,
        json!({"kind": resource.list_kind, "apiVersion": resource.api_version(path),
               "metadata": metadata, "items": items}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        for key in [
            "",
            "a",
            "default/web-7f9c5d8b6-x2x7q",
            "kube-system/coredns-5d78c9869d-x",
        ] {
            let token = continue_token(10245, key);
            assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
            assert_eq!(
                parse_continue(&token),
                Some((10245, key.to_owned())),
                "{token}"
            );
        }
    }
}
