//! Delivery: a bounded queue per sink (the oldest message is dropped when full), one task
//! per sink posting with a per-request timeout and retrying with exponential backoff and
//! jitter. Detection only ever calls [`Queue::push`], which never waits.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::config::{Endpoint, SinkSpec, SinkType};

/// A bounded FIFO; pushing into a full queue drops the oldest entry.
#[derive(Debug)]
pub struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    ready: tokio::sync::Notify,
}

impl<T> Queue<T> {
    /// An empty queue holding at most `capacity` (≥ 1) entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Adds `item` without waiting; returns the entry dropped to make room, if any.
    pub fn push(&self, item: T) -> Option<T> {
        let dropped = {
            let mut items = self.items.lock().expect("queue lock");
            let dropped = if items.len() >= self.capacity {
                items.pop_front()
            } else {
                None
            };
            items.push_back(item);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// Takes the oldest entry, if any.
    pub fn try_pop(&self) -> Option<T> {
        self.items.lock().expect("queue lock").pop_front()
    }

    /// Waits for an entry.
    pub async fn pop(&self) -> T {
        loop {
            if let Some(item) = self.try_pop() {
                return item;
            }
            self.ready.notified().await;
        }
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.items.lock().expect("queue lock").len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Longest delay between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The delay before retry `retry` (0-based): `base × 2^retry`, at most [`MAX_BACKOFF`],
/// then scaled into [50 %, 100 %] of that by `jitter` ∈ [0, 1) so sinks that failed
/// together do not retry in lockstep.
pub fn backoff(base: Duration, retry: u32, jitter: f64) -> Duration {
    let full = base
        .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A small xorshift generator for jitter (no cryptographic use).
#[derive(Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and `salt`.
    pub fn new(salt: u64) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self((nanos ^ salt.rotate_left(32)) | 1)
    }

    /// A value in [0, 1).
    pub fn sample(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    /// Worth retrying: connection error, timeout, 5xx, 429.
    Transient(String),
    /// Not worth retrying: another 4xx (the request itself is wrong).
    Permanent(String),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Transient(why) | AttemptError::Permanent(why) => f.write_str(why),
        }
    }
}

/// Posts `body` once, over TLS for `https://`; the timeout covers connect, TLS handshake,
/// request and answer. Errors never contain the URL (TLS errors may name the host).
pub async fn post(
    endpoint: &Endpoint,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
    timeout: Duration,
) -> Result<StatusCode, AttemptError> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|err| AttemptError::Transient(format!("connect: {err}")))?;
        let _ = stream.set_nodelay(true);
        match &endpoint.tls {
            None => exchange(stream, endpoint, body, headers).await,
            Some(tls) => {
                let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|err| AttemptError::Transient(format!("TLS: {err}")))?;
                exchange(stream, endpoint, body, headers).await
            }
        }
    };
    let status = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| AttemptError::Transient(format!("no answer within {timeout:?}")))??;
    if status.is_success() {
        Ok(status)
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(AttemptError::Transient(format!("HTTP {status}")))
    } else {
        Err(AttemptError::Permanent(format!("HTTP {status}")))
    }
}

/// One HTTP/1.1 request and its answer over a connected (plain or TLS) stream.
async fn exchange<S>(
    stream: S,
    endpoint: &Endpoint,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
) -> Result<StatusCode, AttemptError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| AttemptError::Transient(format!("handshake: {err}")))?;
        let connection = tokio::spawn(connection);
        let path = endpoint
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let authority = endpoint
            .uri
            .authority()
            .map(|a| a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h))
            .unwrap_or_default()
            .to_owned();
        let mut request = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("watchdog/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| AttemptError::Permanent(format!("request: {err}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| AttemptError::Transient(format!("request: {err}")))?;
        let status = response.status();
        // Read the answer so the connection ends cleanly; its content is not needed.
        let _ = response.into_body().collect().await;
        drop(sender);
        connection.abort();
        Ok(status)
    }
}

/// The outcome of delivering one message (after retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Attempts made (1 = first try worked).
    pub attempts: u32,
    /// `Err(last error)` when given up.
    pub result: Result<(), String>,
}

/// Delivers a batch to one sink: renders (again for each attempt, so times are fresh),
/// posts, retries transient failures up to `max_retries` times with backoff.
pub async fn deliver(
    spec: &SinkSpec,
    ctx: &super::ContextOwned,
    alerts: &[super::event::Alert],
    jitter: &mut Jitter,
) -> Delivery {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let now = SystemTime::now();
        let ctx = ctx.at(now);
        let body = match spec.kind {
            SinkType::Webhook => super::webhook::body(&ctx, alerts),
            SinkType::Alertmanager => super::alertmanager::body(&ctx, alerts),
            SinkType::Slack => super::slack::body(&ctx, alerts),
        };
        let mut headers = Vec::new();
        if let Some(secret) = &spec.secret {
            headers.push((
                super::webhook::SIGNATURE_HEADER,
                super::webhook::signature(secret.expose().as_bytes(), &body),
            ));
        }
        match post(&spec.endpoint, body, &headers, spec.timeout).await {
            Ok(_) => {
                return Delivery {
                    attempts,
                    result: Ok(()),
                };
            }
            Err(AttemptError::Transient(why)) if attempts <= spec.max_retries => {
                let delay = backoff(spec.backoff, attempts - 1, jitter.sample());
                tracing::debug!(
                    sink = spec.name,
                    attempt = attempts,
                    "alert delivery to {} failed ({why}); retrying in {delay:?}",
                    spec.endpoint.redacted
                );
                tokio::time::sleep(delay).await;
            }
            Err(err) => {
                return Delivery {
                    attempts,
                    result: Err(err.to_string()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest() {
        let queue = Queue::new(2);
        assert_eq!(queue.push(1), None);
        assert_eq!(queue.push(2), None);
        assert_eq!(queue.push(3), Some(1));
        assert_eq!(queue.push(4), Some(2));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.try_pop(), Some(3));
        assert_eq!(queue.try_pop(), Some(4));
        assert!(queue.is_empty());
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(base, 0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(base, 3, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(base, 40, 1.0), MAX_BACKOFF);
        let mut jitter = Jitter::new(7);
        let mut seen = Vec::new();
        for retry in 0..8 {
            let delay = backoff(base, retry, jitter.sample());
            let full = (base * 2u32.pow(retry)).min(MAX_BACKOFF);
            assert!(delay >= full / 2 && delay <= full, "{retry}: {delay:?}");
            seen.push(delay.as_nanos() * 1000 / full.as_nanos());
        }
        // Jitter actually varies.
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 3, "{seen:?}");
    }

    #[test]
    fn pop_waits_for_a_push() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let queue = std::sync::Arc::new(Queue::new(4));
        let waiter = runtime.spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        runtime.block_on(async {
            tokio::task::yield_now().await;
            queue.push("x");
        });
        assert_eq!(runtime.block_on(waiter).unwrap(), "x");
    }
}
