//! How the fake answers a request: lists (selectors, pages, continue tokens), watches
//! (initial events, history, 410), the Status of an error.

use std::{collections::BTreeMap, convert::Infallible, sync::Mutex};

use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{
    Response, StatusCode,
    body::{Bytes, Frame},
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Body, Fields, Labels, Resource, State, TOKEN, Watcher, decode};

impl Resource {
    /// Sends a change to every watcher it concerns (dropping those that are gone).
    pub(super) fn send(&mut self, kind: &str, object: &Value, previous: Option<&Value>) {
        self.watchers
            .retain(|w| match w.event_for(kind, object, previous) {
                Some(event) => w.send(event, object),
                None => !w.tx.is_closed(),
            });
    }
}

pub(super) fn key(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

pub(super) fn line(value: &Value) -> Bytes {
    let mut text = serde_json::to_vec(value).unwrap();
    text.push(b'\n');
    Bytes::from(text)
}

/// The `ERROR` event of a watch from `asked`, older than the history (which starts after
/// `oldest`), as kube-apiserver words it.
pub(super) fn gone(asked: u64, oldest: u64) -> Value {
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
pub(super) enum Answer {
    Full(StatusCode, Value),
    Watch(mpsc::UnboundedReceiver<Result<Frame<Bytes>, std::io::Error>>),
}

impl Answer {
    fn status(code: StatusCode, reason: &str, message: &str) -> Self {
        Self::Full(code, status_body(code, reason, message))
    }

    pub(super) fn response(self) -> Response<Body> {
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

pub(super) fn handle(
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
