//! Transport: one HTTP/1.1 POST over plain TCP or TLS (rustls, ring provider, the bundled
//! public roots plus a sink's `ca_file`), with a timeout covering everything.

use std::{
    fmt,
    path::Path,
    sync::{Arc, OnceLock},
    time::Duration,
};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::io::{AsyncRead, AsyncWrite};

use super::resolve::Endpoint;
use crate::config::alerts::{AlertsConfigError, error};

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
pub fn default_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| client_config(public_roots())).clone()
}

/// Client settings trusting the public roots and every certificate in the PEM file `path`;
/// returns them and how many certificates the file added.
pub fn client_config_with(
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
