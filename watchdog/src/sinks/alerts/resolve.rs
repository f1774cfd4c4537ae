//! Resolution at start-up: every sink's URL and secret read (files, environment) and
//! checked, the TLS settings built, before anything is attached.

use std::{fmt, time::Duration};

use crate::config::alerts::{
    AlertsConfig, AlertsConfigError, SinkConfig, SinkType, SinkUrl, error, parse_secret_url,
    parse_url,
};

use super::{
    secrets::{Secret, read_secret_env, read_secret_file},
    transport::{Tls, client_config_with, default_client_config},
};

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

/// Reads every sink's URL and secret (files, environment) and checks them: the start-up
/// check of `watchdog run` and `watchdog alert test`.
pub fn resolve(config: &AlertsConfig) -> Result<Vec<SinkSpec>, AlertsConfigError> {
    config.validate()?;
    config
        .sinks
        .iter()
        .enumerate()
        .map(|(i, sink)| resolve_sink(i, sink))
        .collect()
}

/// Parses an http(s) URL into an endpoint (public roots for `https://`); errors show it
/// redacted.
pub fn endpoint(field: &str, url: &str) -> Result<Endpoint, AlertsConfigError> {
    endpoint_of(parse_url(field, url)?)
}

/// An endpoint from a URL read from a file or the environment: errors show none of it.
fn secret_endpoint(field: &str, url: &str) -> Result<Endpoint, AlertsConfigError> {
    endpoint_of(parse_secret_url(field, url)?)
}

fn endpoint_of(url: SinkUrl) -> Result<Endpoint, AlertsConfigError> {
    let SinkUrl {
        uri,
        host,
        port,
        server_name,
        redacted,
    } = url;
    Ok(Endpoint {
        uri,
        host,
        port,
        tls: server_name.map(|server_name| Tls {
            server_name,
            config: default_client_config(),
            extra_roots: 0,
        }),
        redacted,
    })
}

fn resolve_sink(i: usize, sink: &SinkConfig) -> Result<SinkSpec, AlertsConfigError> {
    let field = |key: &str| format!("alerts.sinks[{i}].{key}");
    let (url_field, url, secret) = if let Some(url) = &sink.url {
        (field("url"), url.clone(), false)
    } else if let Some(path) = &sink.url_file {
        (
            field("url_file"),
            read_secret_file(&field("url_file"), path)?,
            true,
        )
    } else if let Some(var) = &sink.url_env {
        (
            field("url_env"),
            read_secret_env(&field("url_env"), var)?,
            true,
        )
    } else {
        unreachable!("validate checks one URL source is set")
    };
    let parse = if secret { secret_endpoint } else { endpoint };
    let mut target = parse(&url_field, &url)?;
    if sink.kind == SinkType::Alertmanager {
        let base = url.trim_end_matches('/');
        target = parse(&url_field, &format!("{base}/api/v2/alerts"))?;
    }
    if let Some(path) = &sink.ca_file {
        let Some(tls) = &mut target.tls else {
            return Err(error(
                field("ca_file"),
                format!(
                    "only applies to https:// URLs, not `{}`; remove it or use https",
                    target.redacted
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
        endpoint: target,
        secret: secret.map(Secret::new),
        timeout: sink.timeout,
        queue: sink.queue,
        max_retries: sink.max_retries,
        backoff: sink.backoff,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rustls::pki_types::ServerName;

    use super::*;
    use crate::config::alerts::{
        default_backoff, default_max_retries, default_queue, default_timeout, redact,
    };

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
        let debug = format!("{config:?} {:?}", Secret::new("hmac-key".into()));
        assert!(!debug.contains("SECRETTOKEN"), "{debug}");
        assert!(!debug.contains("pw"), "{debug}");
        assert!(!debug.contains("hmac-key"), "{debug}");
        assert!(debug.contains("http://host/…"), "{debug}");
        let spec = config_resolve(vec![config]).unwrap();
        let debug = format!("{spec:?}");
        assert!(!debug.contains("SECRETTOKEN"), "{debug}");
    }

    fn config_resolve(sinks: Vec<SinkConfig>) -> Result<Vec<SinkSpec>, AlertsConfigError> {
        resolve(&config(sinks))
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
    fn a_url_file_or_env_that_is_not_a_url_is_never_shown() {
        let dir = std::env::temp_dir().join(format!("watchdog-url-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secrets = [
            "hmac-0123456789abcdef-SECRET",
            "ftp://user:SECRETPW@hooks.example/SECRET",
            "SECRET://hooks.example",
        ];
        for (n, content) in secrets.into_iter().enumerate() {
            let path = dir.join(format!("url-{n}"));
            std::fs::write(&path, format!("{content}\n")).unwrap();
            let mut from_file = sink("http://unused/");
            from_file.url = None;
            from_file.url_file = Some(path);
            let err = config_resolve(vec![from_file]).unwrap_err().to_string();
            assert!(err.starts_with("alerts.sinks[0].url_file: "), "{err}");
            assert!(err.contains("is not an http(s) URL"), "{err}");
            assert!(!err.contains("SECRET") && !err.contains("hooks"), "{err}");
            // The same through the environment (a name only this test uses).
            let var = format!("WATCHDOG_TEST_URL_ENV_{}_{n}", std::process::id());
            // SAFETY: a variable no other test reads or writes.
            unsafe { std::env::set_var(&var, content) };
            let mut from_env = sink("http://unused/");
            from_env.url = None;
            from_env.url_env = Some(var.clone());
            let err = config_resolve(vec![from_env]).unwrap_err().to_string();
            // SAFETY: as above.
            unsafe { std::env::remove_var(&var) };
            assert!(err.starts_with("alerts.sinks[0].url_env: "), "{err}");
            assert!(!err.contains("SECRET") && !err.contains("hooks"), "{err}");
        }
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
