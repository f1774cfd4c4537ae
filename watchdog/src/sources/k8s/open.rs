//! Which watches are open: a tower layer under the client that counts, per resource path
//! (`/api/v1/nodes`), the watch responses (`GET …?watch=true`) answered `200 OK` whose
//! bodies are still alive. A watch is open from its answer until its stream ends or fails
//! (the body is dropped then), which the watcher itself does not report.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use tokio::sync::watch;

/// Open watch streams per resource path, each a channel its follower can wait on.
#[derive(Clone, Debug, Default)]
pub struct OpenWatches {
    paths: Arc<Mutex<BTreeMap<String, watch::Sender<usize>>>>,
}

impl OpenWatches {
    fn sender(&self, path: &str) -> watch::Sender<usize> {
        self.paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(path.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// The number of open watches on `path`, notified on every change.
    pub fn subscribe(&self, path: &str) -> watch::Receiver<usize> {
        self.sender(path).subscribe()
    }
}

/// Counts one open watch until dropped.
struct Guard(watch::Sender<usize>);

impl Guard {
    fn new(sender: watch::Sender<usize>) -> Self {
        sender.send_modify(|open| *open += 1);
        Self(sender)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open = open.saturating_sub(1));
    }
}

/// The layer: wraps the client's service in [`Track`].
pub struct TrackLayer(OpenWatches);

impl TrackLayer {
    /// A layer counting into `open`.
    pub fn new(open: OpenWatches) -> Self {
        Self(open)
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            open: self.0.clone(),
        }
    }
}

/// The service: passes every request on, and counts a watch answered `200 OK` as open
/// for as long as its body lives.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    open: OpenWatches,
}

/// Whether `request` starts a watch (`GET` with `watch=true` or `watch=1`).
fn is_watch<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
}

impl<S, B, RB> tower::Service<Request<B>> for Track<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<Tracked<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let watch = is_watch(&request).then(|| self.open.sender(request.uri().path()));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let guard = watch
                .filter(|_| response.status() == StatusCode::OK)
                .map(Guard::new);
            Ok(response.map(|body| Tracked {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its watch counted while it lives.
pub struct Tracked<B> {
    body: B,
    _guard: Option<Guard>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_with_watch_true_is_a_watch() {
        let request = |method: Method, uri: &str| {
            Request::builder().method(method).uri(uri).body(()).unwrap()
        };
        assert!(is_watch(&request(
            Method::GET,
            "/api/v1/nodes?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true"
        )));
        assert!(is_watch(&request(Method::GET, "/api/v1/pods?watch=1")));
        assert!(!is_watch(&request(Method::GET, "/api/v1/nodes?&limit=500")));
        assert!(!is_watch(&request(
            Method::GET,
            "/api/v1/nodes?watch=false"
        )));
        assert!(!is_watch(&request(
            Method::POST,
            "/api/v1/nodes?watch=true"
        )));
    }

    #[test]
    fn a_watch_counts_while_its_guard_lives() {
        let open = OpenWatches::default();
        let rx = open.subscribe("/api/v1/nodes");
        let a = Guard::new(open.sender("/api/v1/nodes"));
        let b = Guard::new(open.sender("/api/v1/nodes"));
        assert_eq!(*rx.borrow(), 2);
        drop(a);
        assert_eq!(*rx.borrow(), 1);
        drop(b);
        assert_eq!(*rx.borrow(), 0);
        assert_eq!(*open.subscribe("/api/v1/pods").borrow(), 0);
    }
}
