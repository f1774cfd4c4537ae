//! One resource followed with kube's watcher: its events handed on as [`Update`]s, the
//! watch's health reported from [`super::open`], failures backed off.

use std::{fmt::Debug, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Resource,
    runtime::{
        utils::Backoff as _,
        watcher::{self, DefaultBackoff, Event},
    },
};
use serde::de::DeserializeOwned;

use super::Kube;
use crate::sources::kernel::memory;

/// What a follower reports.
#[derive(Debug)]
pub enum Update<K> {
    /// A full list begins (the first, or again after `410 Gone`): the objects up to
    /// [`Update::ListEnd`] are every object there is.
    ListStart,
    /// One object of the list.
    Listed(K),
    /// The list is complete: whatever was not in it is gone.
    ListEnd,
    /// An object was added or changed.
    Applied(K),
    /// An object was deleted.
    Deleted(K),
    /// The watch is open and current (it opened, or is still open: every few seconds).
    Healthy,
    /// Listing or watching failed (the message says what to fix where it can); retried
    /// with backoff.
    Failed(String),
}

/// How often an open, quiet watch is reported [`Update::Healthy`].
const HEALTHY_EVERY: Duration = Duration::from_secs(5);
/// The server ends a watch after this many seconds; the watcher resumes it.
const WATCH_TIMEOUT_SECS: u32 = 290;

/// Lists, then watches every `K` (matching the field selector `fields`, e.g.
/// `spec.nodeName=pi-1`), `page` objects per list request, forever, reporting to `on`.
pub async fn follow<K>(kube: &Kube, fields: Option<&str>, page: u32, mut on: impl FnMut(Update<K>))
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(kube.client.clone());
    let plural = K::plural(&K::DynamicType::default()).into_owned();
    let mut open = kube.open.subscribe(api.resource_url());
    let mut config = watcher::Config::default()
        .page_size(page)
        .timeout(WATCH_TIMEOUT_SECS);
    if let Some(fields) = fields {
        config = config.fields(fields);
    }
    let mut events = std::pin::pin!(watcher::watcher(api, config));
    let mut backoff = DefaultBackoff::default();
    let mut healthy = tokio::time::interval(HEALTHY_EVERY);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Init)) => on(Update::ListStart),
                Some(Ok(Event::InitApply(object))) => on(Update::Listed(object)),
                Some(Ok(Event::InitDone)) => {
                    backoff.reset();
                    on(Update::ListEnd);
                    // The list's pages (each response body read whole, then parsed) were
                    // freed; glibc would keep their heap: 1000 Nodes left 2.9 MiB of it.
                    memory::release_free_heap();
                }
                Some(Ok(Event::Apply(object))) => on(Update::Applied(object)),
                Some(Ok(Event::Delete(object))) => on(Update::Deleted(object)),
                Some(Err(watcher::Error::WatchError(status))) if status.code == 410 => {
                    // The watcher lists again at once; not a failure.
                    tracing::info!("{plural}: resourceVersion gone (410 {}); listing again", status.message);
                }
                Some(Err(watcher::Error::WatchFailed(err))) => {
                    // A dropped connection: resumed at once from the last resourceVersion.
                    tracing::debug!("{plural}: watch stream ended with an error: {err}");
                }
                Some(Err(err)) => {
                    on(Update::Failed(describe(&err, &plural)));
                    if let Some(wait) = backoff.next() {
                        tokio::time::sleep(wait).await;
                    }
                }
                // The watcher's stream never ends.
                None => return,
            },
            changed = open.changed() => {
                if changed.is_err() {
                    return;
                }
                if *open.borrow_and_update() > 0 {
                    backoff.reset();
                    on(Update::Healthy);
                }
            }
            _ = healthy.tick() => {
                if *open.borrow() > 0 {
                    on(Update::Healthy);
                }
            }
        }
    }
}

/// What failed, with the API's status (`401 Unauthorized: …`) and what to do about a
/// refusal.
fn describe(err: &watcher::Error, plural: &str) -> String {
    let client = |err: &kube::Error| match err {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => {
                    " (the token is not accepted: check desired.kubeconfig or the service account)"
                }
                403 => " (the ClusterRole must allow get, list and watch on this resource)",
                _ => "",
            };
            format!(
                "{} {}: {}{hint}",
                status.code, status.reason, status.message
            )
        }
        other => other.to_string(),
    };
    match err {
        watcher::Error::InitialListFailed(err) => {
            format!("listing {plural} failed: {}", client(err))
        }
        watcher::Error::WatchStartFailed(err) => {
            format!("watching {plural} failed: {}", client(err))
        }
        watcher::Error::WatchFailed(err) => {
            format!("the watch of {plural} failed: {}", client(err))
        }
        watcher::Error::WatchError(status) => format!(
            "the watch of {plural} failed: {} {}: {}",
            status.code, status.reason, status.message
        ),
        watcher::Error::NoResourceVersion => {
            format!("the list of {plural} has no resourceVersion")
        }
    }
}
