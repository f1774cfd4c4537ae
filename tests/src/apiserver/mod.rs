//! A fake Kubernetes API server on loopback, for the desired-state tests. It is the one
//! mock in the test suite: no kube-apiserver can be installed on the test machines. It
//! serves recorded real objects (the NodeList files under
//! `watchdog/tests/fixtures/nodes`) with the parts of the API a reflector relies on:
//!
//! - `GET <path>`: a list with the current `metadata.resourceVersion`;
//! - `GET <path>?watch=true&resourceVersion=N`: a chunked stream of `ADDED`, `MODIFIED`,
//!   `DELETED` events after N (from its history), `BOOKMARK`s when the client asked for
//!   them (`allowWatchBookmarks=true`), and `ERROR` 410 (`Expired`) for a version older
//!   than the history it kept ([`FakeApiServer::compact`]);
//! - a bearer token, plain http or https with a throwaway CA (rcgen);
//! - faults: dropped watch connections ([`FakeApiServer::drop_watches`]), expired watches
//!   ([`FakeApiServer::expire_watches`]), the whole server going away and coming back
//!   ([`FakeApiServer::stop`], [`FakeApiServer::resume`]).
//!
//! [`InNetns`] runs one inside a lab namespace, on its own runtime, for a daemon there.
//!
//! Resources are registered by path (`/api/v1/nodes` from the start), so Pods
//! (`/api/v1/pods`, with a `fieldSelector` applied by the test) and EndpointSlices
//! (`/apis/discovery.k8s.io/v1/endpointslices`) can be served the same way.

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

/// The bearer token the server expects.
pub const TOKEN: &str = "watchdog-test-token";

type Body = UnsyncBoxBody<Bytes, std::io::Error>;
type WatchTx = mpsc::UnboundedSender<Result<Frame<Bytes>, std::io::Error>>;

struct Watcher {
    tx: WatchTx,
    bookmarks: bool,
}

/// One served resource (e.g. Nodes): its objects and the events since `oldest`.
struct Resource {
    list_kind: String,
    objects: BTreeMap<String, Value>,
    /// (resourceVersion, type, object) of every change still remembered.
    history: Vec<(u64, &'static str, Value)>,
    watchers: Vec<Watcher>,
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
        let state = State {
            version: 1,
            oldest: 0,
            resources: BTreeMap::new(),
            requests: Vec::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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
                objects: BTreeMap::new(),
                history: Vec::new(),
                watchers: Vec::new(),
            },
        );
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
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req)) }
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
    /// a new resourceVersion, `ADDED` or `MODIFIED` to every watcher.
    pub fn apply(&self, path: &str, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        let version = state.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let key = key(&object);
        let resource = state.resources.get_mut(path).expect("resource registered");
        let kind = if resource.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        resource.objects.insert(key, object.clone());
        resource.send(kind, &object);
        resource.history.push((version, kind, object));
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
        resource.send("DELETED", &object);
        resource.history.push((version, "DELETED", object));
    }

    /// Adds every Node of a NodeList (`kubectl get nodes -o json|yaml`).
    pub fn load_nodes(&self, list: &Value) {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        for mut item in items {
            item["apiVersion"] = json!("v1");
            item["kind"] = json!("Node");
            self.apply("/api/v1/nodes", item);
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
        for resource in state.resources.values_mut() {
            let kind = resource.list_kind.trim_end_matches("List").to_owned();
            let bookmark = json!({
                "type": "BOOKMARK",
                "object": {"kind": kind, "apiVersion": "v1",
                           "metadata": {"resourceVersion": version.to_string()}}
            });
            resource
                .watchers
                .retain(|w| !w.bookmarks || w.tx.send(Ok(Frame::data(line(&bookmark)))).is_ok());
        }
    }

    /// Forgets the history: a watch from any earlier version gets 410 Gone.
    pub fn compact(&self) {
        let mut state = self.state.lock().unwrap();
        state.oldest = state.version + 1;
        for resource in state.resources.values_mut() {
            resource.history.clear();
        }
    }

    /// Sends `ERROR` 410 on every open watch and ends it (as an apiserver does when the
    /// watch cache moved past the client), after forgetting the history.
    pub fn expire_watches(&self) {
        self.compact();
        let mut state = self.state.lock().unwrap();
        for resource in state.resources.values_mut() {
            for watcher in resource.watchers.drain(..) {
                let _ = watcher.tx.send(Ok(Frame::data(line(&gone()))));
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
    fn send(&mut self, kind: &str, object: &Value) {
        let event = json!({"type": kind, "object": object});
        self.watchers
            .retain(|w| w.tx.send(Ok(Frame::data(line(&event)))).is_ok());
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

fn gone() -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version", "reason": "Expired", "code": 410}})
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(line(&body))
                .map_err(|never: Infallible| match never {})
                .boxed_unsync(),
        )
        .unwrap()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut state = state.lock().unwrap();
    state.requests.push(format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map_or("", |p| p.as_str())
    ));
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let (version, oldest) = (state.version, state.oldest);
    let Some(resource) = state.resources.get_mut(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(version);
        let (tx, rx) = mpsc::unbounded_channel();
        if from + 1 < oldest {
            let _ = tx.send(Ok(Frame::data(line(&gone()))));
        } else {
            for (v, kind, object) in &resource.history {
                if *v > from {
                    let _ = tx.send(Ok(Frame::data(line(
                        &json!({"type": kind, "object": object}),
                    ))));
                }
            }
            resource.watchers.push(Watcher {
                tx,
                bookmarks: query
                    .get("allowWatchBookmarks")
                    .is_some_and(|b| b == "true"),
            });
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
            .unwrap();
    }
    let items: Vec<&Value> = resource.objects.values().collect();
    full(
        StatusCode::OK,
        json!({"kind": resource.list_kind, "apiVersion": "v1",
               "metadata": {"resourceVersion": version.to_string()}, "items": items}),
    )
}
