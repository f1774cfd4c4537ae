//! The `[alerts]` table and its `[[alerts.sinks]]`, checked without reading files or the
//! environment. URLs and HMAC keys may come from files or environment variables (read by
//! `sinks::alerts` at start-up) and never appear in logs, errors, `Debug` output or
//! metrics labels.

use std::{fmt, path::PathBuf, time::Duration};

use rustls::pki_types::ServerName;
use serde::Deserialize;

/// The `[alerts]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// A finding still firing is re-sent this often (and Alertmanager alerts refreshed).
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Alerts produced within this window go out as one message; `0s` sends each at once.
    #[serde(with = "humantime_serde")]
    pub group_window: Duration,
    /// `generatorURL` of Alertmanager alerts; empty: `http://<listen>/api/v1/findings`.
    pub generator_url: String,
    /// Where the runbooks are (`<base><kind>.md`); empty: [`DEFAULT_RUNBOOK_BASE_URL`].
    pub runbook_base_url: String,
    /// Where alerts go; empty: nowhere.
    pub sinks: Vec<SinkConfig>,
}

impl Default for AlertsConfig {
    /// Must agree with `default.toml` (a test checks it).
    fn default() -> Self {
        Self {
            repeat_interval: Duration::from_secs(3600),
            group_window: Duration::ZERO,
            generator_url: String::new(),
            runbook_base_url: String::new(),
            sinks: Vec::new(),
        }
    }
}

/// The runbooks in the published repository (the workspace's `repository` in Cargo.toml):
/// `alerts.runbook_base_url` when it is empty.
pub const DEFAULT_RUNBOOK_BASE_URL: &str =
    concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/runbooks/");

/// What a sink speaks.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    /// Generic JSON webhook (`watchdog.alert/v1`), optionally HMAC-signed.
    Webhook,
    /// Alertmanager API v2 (`POST /api/v2/alerts`); the URL is Alertmanager's base URL.
    Alertmanager,
    /// Slack-compatible incoming webhook (Slack, Mattermost, Discord's `/slack` endpoint).
    Slack,
}

impl SinkType {
    /// The lowercase name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Webhook => "webhook",
            SinkType::Alertmanager => "alertmanager",
            SinkType::Slack => "slack",
        }
    }
}

/// One `[[alerts.sinks]]` entry.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name, used in metrics labels and `watchdog alert test --sink`.
    pub name: String,
    /// `webhook`, `alertmanager` or `slack`.
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// The URL inline (exactly one of `url`, `url_file`, `url_env`).
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the URL (for URLs with tokens).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// An environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// A file holding the HMAC-SHA256 key (webhook only).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the HMAC-SHA256 key (webhook only).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// PEM file of extra CA certificates trusted for this `https://` sink (a private CA),
    /// on top of the bundled public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Timeout of one request (connect, TLS handshake, to last byte of the answer).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Messages waiting for this sink; when full the oldest is dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Retries after a failed attempt (connection error, timeout, 5xx, 429).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Delay before the first retry; doubles each retry (at most 60s), with jitter.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
}

/// The default of the sink key `timeout`.
pub fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
/// The default of the sink key `queue`.
pub fn default_queue() -> usize {
    64
}
/// The default of the sink key `max_retries`.
pub fn default_max_retries() -> u32 {
    5
}
/// The default of the sink key `backoff`.
pub fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(redact))
            .field("url_file", &self.url_file)
            .field("url_env", &self.url_env)
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// A URL reduced to what may be shown: scheme and host (user info, path, query dropped).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let more = rest.len() > authority.len() || authority.contains('@');
    let tail = if more { "/…" } else { "" };
    if scheme.is_empty() {
        format!("{host}{tail}")
    } else {
        format!("{scheme}://{host}{tail}")
    }
}

/// An alert setting the user has to fix; names the key and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct AlertsConfigError {
    /// e.g. `alerts.sinks[1].url`.
    pub field: String,
    /// What is wrong and what to do (secrets redacted).
    pub problem: String,
}

/// An error about `field`.
pub fn error(field: impl Into<String>, problem: impl Into<String>) -> AlertsConfigError {
    AlertsConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

impl AlertsConfig {
    /// Where the runbooks are, ending in `/`: `alerts.runbook_base_url`, else
    /// [`DEFAULT_RUNBOOK_BASE_URL`]. A kind's runbook is `<base><kind>.md`.
    pub fn runbook_base(&self) -> String {
        let base = self.runbook_base_url.trim();
        if base.is_empty() {
            DEFAULT_RUNBOOK_BASE_URL.to_owned()
        } else if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        }
    }

    /// Checks what can be checked without reading files or the environment.
    pub fn validate(&self) -> Result<(), AlertsConfigError> {
        if self.repeat_interval < Duration::from_secs(1) {
            return Err(error(
                "alerts.repeat_interval",
                format!(
                    "is {:?}; use at least 1s, e.g. \"1h\"",
                    self.repeat_interval
                ),
            ));
        }
        if self.group_window > Duration::from_secs(600) {
            return Err(error(
                "alerts.group_window",
                format!("is {:?}; use 0s (no grouping) to 10m", self.group_window),
            ));
        }
        if !self.generator_url.is_empty() {
            parse_url("alerts.generator_url", &self.generator_url)?;
        }
        if !self.runbook_base_url.is_empty() {
            parse_url("alerts.runbook_base_url", &self.runbook_base_url)?;
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            let field = |key: &str| format!("alerts.sinks[{i}].{key}");
            if sink.name.trim().is_empty()
                || !sink
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(error(
                    field("name"),
                    format!(
                        "`{}` is not a sink name; use letters, digits, `-`, `_` or `.`",
                        sink.name
                    ),
                ));
            }
            if self.sinks[..i].iter().any(|other| other.name == sink.name) {
                return Err(error(
                    field("name"),
                    format!("`{}` names two sinks; names must be unique", sink.name),
                ));
            }
            let sources = [
                sink.url.is_some(),
                sink.url_file.is_some(),
                sink.url_env.is_some(),
            ];
            if sources.iter().filter(|set| **set).count() != 1 {
                return Err(error(
                    field("url"),
                    "set exactly one of `url`, `url_file` (a file holding the URL) or \
                     `url_env` (an environment variable holding it)",
                ));
            }
            if let Some(url) = &sink.url {
                parse_url(&field("url"), url)?;
            }
            if sink.secret_file.is_some() && sink.secret_env.is_some() {
                return Err(error(
                    field("secret_file"),
                    "set `secret_file` or `secret_env`, not both",
                ));
            }
            if sink.kind != SinkType::Webhook
                && (sink.secret_file.is_some() || sink.secret_env.is_some())
            {
                return Err(error(
                    field("secret_file"),
                    format!(
                        "an HMAC secret only applies to `type = \"webhook\"` sinks, not `{}`",
                        sink.kind.as_str()
                    ),
                ));
            }
            if sink.queue == 0 || sink.queue > 100_000 {
                return Err(error(
                    field("queue"),
                    format!("is {}; use 1 to 100000 messages", sink.queue),
                ));
            }
            let timeout = Duration::from_millis(10)..=Duration::from_secs(300);
            if !timeout.contains(&sink.timeout) {
                return Err(error(
                    field("timeout"),
                    format!("is {:?}; use 10ms to 5m, e.g. \"5s\"", sink.timeout),
                ));
            }
            if sink.max_retries > 100 {
                return Err(error(
                    field("max_retries"),
                    format!("is {}; use 0 to 100", sink.max_retries),
                ));
            }
            if sink.backoff.is_zero() || sink.backoff > Duration::from_secs(60) {
                return Err(error(
                    field("backoff"),
                    format!("is {:?}; use 1ms to 60s, e.g. \"1s\"", sink.backoff),
                ));
            }
        }
        Ok(())
    }
}

/// An http(s) URL, parsed and checked: what the sinks connect to. The full URL may hold a
/// token; `redacted` is what is shown.
#[derive(Clone)]
pub struct SinkUrl {
    /// The parsed URL (may hold a token).
    pub uri: hyper::Uri,
    /// The host to connect to (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// For `https://`: the name the certificate must match (the URL host, also sent as SNI).
    pub server_name: Option<ServerName<'static>>,
    /// `http://host/…`, for logs and errors.
    pub redacted: String,
}

impl fmt::Debug for SinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SinkUrl({})", self.redacted)
    }
}

/// Parses an http(s) URL written in the config; errors show it redacted.
pub fn parse_url(field: &str, url: &str) -> Result<SinkUrl, AlertsConfigError> {
    parse(field, url, false)
}

/// Parses an http(s) URL read from a file or the environment (`url_file`, `url_env`):
/// what is there may be another secret put in the wrong place (an HMAC key, a token), so
/// an error never shows any of it, not even redacted.
pub fn parse_secret_url(field: &str, url: &str) -> Result<SinkUrl, AlertsConfigError> {
    parse(field, url, true)
}

fn parse(field: &str, url: &str, secret: bool) -> Result<SinkUrl, AlertsConfigError> {
    let shown = redact(url);
    let not_http = || {
        let problem = if secret {
            format!(
                "the value read ({} characters, not shown: it may be a secret) is not an \
                 http(s) URL; put the sink's full http(s):// URL there",
                url.chars().count()
            )
        } else {
            format!("`{shown}` is not an http(s) URL")
        };
        error(field, problem)
    };
    let uri: hyper::Uri = url.trim().parse().map_err(|_| not_http())?;
    let (port, https) = match uri.scheme_str() {
        Some("http") => (80, false),
        Some("https") => (443, true),
        _ => return Err(not_http()),
    };
    let authority = uri.authority().ok_or_else(not_http)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() {
        return Err(not_http());
    }
    let server_name = if https {
        Some(ServerName::try_from(host.clone()).map_err(|_| {
            error(
                field,
                format!("`{shown}`: the host is not a valid TLS server name"),
            )
        })?)
    } else {
        None
    };
    Ok(SinkUrl {
        host,
        port: authority.port_u16().unwrap_or(port),
        server_name,
        redacted: shown,
        uri,
    })
}
