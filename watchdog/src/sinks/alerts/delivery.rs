//! Delivery of one message to one sink: render (fresh times on every attempt), sign, post,
//! retry transient failures with exponential backoff and jitter.

use std::time::{Duration, SystemTime};

use super::{
    ContextOwned, alertmanager,
    event::Alert,
    resolve::SinkSpec,
    slack,
    transport::{AttemptError, post},
    webhook,
};
use crate::config::alerts::SinkType;

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
    ctx: &ContextOwned,
    alerts: &[Alert],
    jitter: &mut Jitter,
) -> Delivery {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let now = SystemTime::now();
        let ctx = ctx.at(now);
        let body = match spec.kind {
            SinkType::Webhook => webhook::body(&ctx, alerts),
            SinkType::Alertmanager => alertmanager::body(&ctx, alerts),
            SinkType::Slack => slack::body(&ctx, alerts),
        };
        let mut headers = Vec::new();
        if let Some(secret) = &spec.secret {
            headers.push((
                webhook::SIGNATURE_HEADER,
                webhook::signature(secret.expose().as_bytes(), &body),
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
}
