//! Alert configuration (`[alerts]`, `[[alerts.sinks]]`) and its resolution at start-up:
//! URLs and HMAC keys may come from files or environment variables and never appear in
//! logs, errors, `Debug` output or metrics labels.

use std::{fmt, path::PathBuf, time::Duration};

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
            sinks: Vec::new(),
        }
    }
}

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
    /// Timeout of one request (connect to last byte of the answer).
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

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_queue() -> usize {
    64
}
fn default_max_retries() -> u32 {
    5
}
fn default_backoff() -> Duration {
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
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// A secret value (URL with a token, HMAC key): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for use (never for printing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
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

/// A sink's endpoint: the full URL is secret, the redacted form is what is shown.
#[derive(Clone)]
pub struct Endpoint {
    /// The parsed URL (may hold a token).
    pub uri: hyper::Uri,
    /// Host and port to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `http://host/…`, for logs and errors.
    pub redacted: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.redacted)
    }
}

/// A sink ready to use: URL and secret read, checked.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    /// The sink's name.
    pub name: String,
    /// What it speaks.
    pub kind: SinkType,
    /// Where it posts (for Alertmanager, `<url>/api/v2/alerts`).
    pub endpoint: Endpoint,
    /// HMAC-SHA256 key (webhook).
    pub secret: Option<Secret>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Queue capacity.
    pub queue: usize,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First retry delay.
    pub backoff: Duration,
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

fn error(field: impl Into<String>, problem: impl Into<String>) -> AlertsConfigError {
    AlertsConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

impl AlertsConfig {
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

    /// Reads every sink's URL and secret (files, environment) and checks them: the start-up
    /// check of `watchdog run` and `watchdog alert test`.
    pub fn resolve(&self) -> Result<Vec<SinkSpec>, AlertsConfigError> {
        self.validate()?;
        self.sinks
            .iter()
            .enumerate()
            .map(|(i, sink)| resolve_sink(i, sink))
            .collect()
    }
}

fn resolve_sink(i: usize, sink: &SinkConfig) -> Result<SinkSpec, AlertsConfigError> {
    let field = |key: &str| format!("alerts.sinks[{i}].{key}");
    let (url_field, url) = if let Some(url) = &sink.url {
        (field("url"), url.clone())
    } else if let Some(path) = &sink.url_file {
        (
            field("url_file"),
            read_secret_file(&field("url_file"), path)?,
        )
    } else if let Some(var) = &sink.url_env {
        (field("url_env"), read_secret_env(&field("url_env"), var)?)
    } else {
        unreachable!("validate checks one URL source is set")
    };
    let mut endpoint = parse_url(&url_field, &url)?;
    if sink.kind == SinkType::Alertmanager {
        let base = url.trim_end_matches('/');
        endpoint = parse_url(&url_field, &format!("{base}/api/v2/alerts"))?;
    }
    let secret = if let Some(path) = &sink.secret_file {
        Some(read_secret_file(&field("secret_file"), path)?)
    } else if let Some(var) = &sink.secret_env {
        Some(read_secret_env(&field("secret_env"), var)?)
    } else {
        None
    };
    Ok(SinkSpec {
        name: sink.name.clone(),
        kind: sink.kind,
        endpoint,
        secret: secret.map(Secret),
        timeout: sink.timeout,
        queue: sink.queue,
        max_retries: sink.max_retries,
        backoff: sink.backoff,
    })
}

fn read_secret_file(field: &str, path: &std::path::Path) -> Result<String, AlertsConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        error(
            field,
            format!(
                "cannot read {}: {err}; create the file or fix the path",
                path.display()
            ),
        )
    })?;
    let value = text.trim().to_owned();
    if value.is_empty() {
        return Err(error(field, format!("{} is empty", path.display())));
    }
    Ok(value)
}

fn read_secret_env(field: &str, var: &str) -> Result<String, AlertsConfigError> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        Ok(_) => Err(error(field, format!("environment variable {var} is empty"))),
        Err(_) => Err(error(
            field,
            format!("environment variable {var} is not set; set it or use a file"),
        )),
    }
}

/// Parses an http(s) URL; errors show it redacted.
pub fn parse_url(field: &str, url: &str) -> Result<Endpoint, AlertsConfigError> {
    let shown = redact(url);
    let not_http = || error(field, format!("`{shown}` is not an http(s) URL"));
    let uri: hyper::Uri = url.trim().parse().map_err(|_| not_http())?;
    let port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => {
            return Err(error(
                field,
                format!(
                    "`{shown}`: https is not supported by this build (no TLS, to stay small); \
                     use an http:// URL on a trusted network or a local TLS-terminating relay"
                ),
            ));
        }
        _ => return Err(not_http()),
    };
    let authority = uri.authority().ok_or_else(not_http)?;
    let host = authority.host();
    if host.is_empty() {
        return Err(not_http());
    }
    Ok(Endpoint {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: authority.port_u16().unwrap_or(port),
        redacted: shown,
        uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(url: &str) -> SinkConfig {
        SinkConfig {
            name: "hook".into(),
            kind: SinkType::Webhook,
            url: Some(url.into()),
            url_file: None,
            url_env: None,
            secret_file: None,
            secret_env: None,
            timeout: default_timeout(),
            queue: default_queue(),
            max_retries: default_max_retries(),
            backoff: default_backoff(),
        }
    }

    fn config(sinks: Vec<SinkConfig>) -> AlertsConfig {
        AlertsConfig {
            sinks,
            ..AlertsConfig::default()
        }
    }

    #[test]
    fn redaction_keeps_scheme_and_host_only() {
        assert_eq!(
            redact("http://hooks.example:8080/services/T000/B000/XXXXSECRET?token=abc"),
            "http://hooks.example:8080/…"
        );
        assert_eq!(redact("http://user:pw@host/x"), "http://host/…");
        assert_eq!(redact("http://host"), "http://host");
        let config = sink("http://user:pw@host/services/SECRETTOKEN");
        let debug = format!("{config:?} {:?}", Secret("hmac-key".into()));
        assert!(!debug.contains("SECRETTOKEN"), "{debug}");
        assert!(!debug.contains("pw"), "{debug}");
        assert!(!debug.contains("hmac-key"), "{debug}");
        assert!(debug.contains("http://host/…"), "{debug}");
        let spec = config_resolve(vec![config]).unwrap();
        let debug = format!("{spec:?}");
        assert!(!debug.contains("SECRETTOKEN"), "{debug}");
    }

    fn config_resolve(sinks: Vec<SinkConfig>) -> Result<Vec<SinkSpec>, AlertsConfigError> {
        config(sinks).resolve()
    }

    #[test]
    fn bad_url_names_the_field_and_hides_the_token() {
        let mut second = sink("htp://x/SECRET");
        second.name = "two".into();
        let err = config_resolve(vec![sink("http://ok/"), second])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "alerts.sinks[1].url: `htp://x/…` is not an http(s) URL"
        );
        let err = config_resolve(vec![sink("https://hooks.slack.com/services/T/B/SECRET")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("https is not supported"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn missing_secret_file_names_the_file() {
        let mut hook = sink("http://127.0.0.1:1/");
        hook.secret_file = Some("/nonexistent/hmac.key".into());
        let err = config_resolve(vec![hook]).unwrap_err().to_string();
        assert!(
            err.starts_with("alerts.sinks[0].secret_file: cannot read /nonexistent/hmac.key"),
            "{err}"
        );
    }

    #[test]
    fn url_sources_and_names_are_checked() {
        let mut both = sink("http://a/");
        both.url_env = Some("X".into());
        let err = config_resolve(vec![both]).unwrap_err().to_string();
        assert!(err.contains("exactly one of `url`"), "{err}");
        let err = config_resolve(vec![sink("http://a/"), sink("http://b/")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("names two sinks"), "{err}");
        let mut am = sink("http://127.0.0.1:9093/");
        am.kind = SinkType::Alertmanager;
        let spec = config_resolve(vec![am]).unwrap();
        assert_eq!(spec[0].endpoint.uri.path(), "/api/v2/alerts");
        assert_eq!(spec[0].endpoint.port, 9093);
    }
}
