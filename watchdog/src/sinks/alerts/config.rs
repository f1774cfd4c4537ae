//! Alert configuration (`[alerts]`, `[[alerts.sinks]]`) and its resolution at start-up:
//! URLs and HMAC keys may come from files or environment variables and never appear in
//! logs, errors, `Debug` output or metrics labels.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};

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
            .field("ca_file", &self.ca_file)
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

/// How an `https://` endpoint is reached: the name its certificate must match (from the
/// URL host, also sent as SNI) and the roots trusted.
#[derive(Clone)]
pub struct Tls {
    /// The URL host as a DNS name or IP address.
    pub server_name: ServerName<'static>,
    /// rustls client settings (ring provider, bundled public roots, extra `ca_file` roots).
    pub config: Arc<rustls::ClientConfig>,
    /// Certificates added from `ca_file` (for `Debug`).
    pub extra_roots: usize,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tls(public roots + {} from ca_file)", self.extra_roots)
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
    /// `Some` for `https://`.
    pub tls: Option<Tls>,
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
    if let Some(path) = &sink.ca_file {
        let Some(tls) = &mut endpoint.tls else {
            return Err(error(
                field("ca_file"),
                format!(
                    "only applies to https:// URLs, not `{}`; remove it or use https",
                    endpoint.redacted
                ),
            ));
        };
        let (config, extra_roots) = client_config_with(&field("ca_file"), path)?;
        tls.config = config;
        tls.extra_roots = extra_roots;
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

/// The bundled public CA roots (webpki-roots: Mozilla's list, no system store needed).
fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The client speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The client settings for sinks without `ca_file`, built once.
fn default_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| client_config(public_roots())).clone()
}

/// Client settings trusting the public roots and every certificate in the PEM file `path`;
/// returns them and how many certificates the file added.
fn client_config_with(
    field: &str,
    path: &Path,
) -> Result<(Arc<rustls::ClientConfig>, usize), AlertsConfigError> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|err| {
        error(
            field,
            format!("cannot read {shown}: {err}; create the file or fix the path"),
        )
    })?;
    let mut roots = public_roots();
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|err| {
            error(
                field,
                format!("{shown} is not a PEM certificate file: {err}"),
            )
        })?;
        roots.add(cert).map_err(|err| {
            error(
                field,
                format!(
                    "{shown}: certificate {} is not usable as a CA: {err}",
                    added + 1
                ),
            )
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(error(
            field,
            format!(
                "{shown} holds no certificate; expected PEM `-----BEGIN CERTIFICATE-----` blocks"
            ),
        ));
    }
    Ok((client_config(roots), added))
}

fn read_secret_file(field: &str, path: &Path) -> Result<String, AlertsConfigError> {
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
    let tls = if https {
        let server_name = ServerName::try_from(host.clone()).map_err(|_| {
            error(
                field,
                format!("`{shown}`: the host is not a valid TLS server name"),
            )
        })?;
        Some(Tls {
            server_name,
            config: default_client_config(),
            extra_roots: 0,
        })
    } else {
        None
    };
    Ok(Endpoint {
        host,
        port: authority.port_u16().unwrap_or(port),
        tls,
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
            ca_file: None,
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
        let err = config_resolve(vec![sink("ftp://hooks.example/SECRET")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "alerts.sinks[0].url: `ftp://hooks.example/…` is not an http(s) URL"
        );
    }

    #[test]
    fn https_urls_verify_the_url_host_with_the_public_roots() {
        let spec = config_resolve(vec![sink("https://hooks.slack.com/services/T/B/SECRET")])
            .unwrap()
            .remove(0);
        assert_eq!(spec.endpoint.port, 443);
        assert_eq!(spec.endpoint.redacted, "https://hooks.slack.com/…");
        let tls = spec.endpoint.tls.as_ref().expect("https has TLS settings");
        assert_eq!(tls.server_name.to_str(), "hooks.slack.com");
        assert_eq!(tls.extra_roots, 0);
        let debug = format!("{spec:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        let spec = config_resolve(vec![sink("https://[::1]:8443/x")])
            .unwrap()
            .remove(0);
        assert_eq!(spec.endpoint.port, 8443);
        let tls = spec.endpoint.tls.unwrap();
        assert!(matches!(tls.server_name, ServerName::IpAddress(_)));
        assert!(
            config_resolve(vec![sink("http://a/")]).unwrap()[0]
                .endpoint
                .tls
                .is_none()
        );
    }

    #[test]
    fn bad_or_missing_ca_file_names_the_field_and_path() {
        let dir = std::env::temp_dir().join(format!("watchdog-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let resolve_with = |url: &str, path: &Path| {
            let mut hook = sink(url);
            hook.ca_file = Some(path.to_owned());
            config_resolve(vec![sink("http://first/"), {
                hook.name = "second".into();
                hook
            }])
        };
        let missing = dir.join("missing.pem");
        let err = resolve_with("https://h/", &missing)
            .unwrap_err()
            .to_string();
        let expected = format!("alerts.sinks[1].ca_file: cannot read {}", missing.display());
        assert!(err.starts_with(&expected), "{err}");

        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let err = resolve_with("https://h/", &garbage)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("alerts.sinks[1].ca_file: {}", garbage.display()))
                && err.contains("holds no certificate"),
            "{err}"
        );

        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = resolve_with("https://h/", &broken).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("alerts.sinks[1].ca_file: {}", broken.display()))
                && err.contains("not a PEM certificate file"),
            "{err}"
        );

        // Valid base64, but not a certificate.
        let not_der = dir.join("not-der.pem");
        std::fs::write(
            &not_der,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = resolve_with("https://h/", &not_der)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("alerts.sinks[1].ca_file: {}", not_der.display()))
                && err.contains("certificate 1 is not usable as a CA"),
            "{err}"
        );

        let err = resolve_with("http://h/SECRET", &missing)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "alerts.sinks[1].ca_file: only applies to https:// URLs, not `http://h/…`; \
             remove it or use https"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
